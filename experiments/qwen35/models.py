"""Loading Qwen3.5 causal LMs for text experiments, and keeping a loaded base model warm between runs.

``load_model_and_tokenizer(model)`` takes a tiny size name (``tiny``, ``tiny-8``, ``small``: built in memory, see
``tiny.py``), a local checkpoint directory, or a hub id such as ``Qwen/Qwen3.5-0.8B`` (also ``-2B``, ``-4B``,
``-9B`` and the ``-Base`` variants), and returns a ``LoadedModel``: a ``Qwen3_5ForCausalLM``, its tokenizer and a
``LoadInfo`` saying what was loaded.

The released Qwen3.5 checkpoints are vision-language models (``model_type: qwen3_5``, architecture
``Qwen3_5ForConditionalGeneration``; weights ``model.language_model.*``, ``model.visual.*``, ``lm_head.weight``
unless tied, and ``mtp.*`` where present). Text experiments get the language model only: a ``Qwen3_5ForCausalLM``
built from the checkpoint's ``text_config``, into which ``from_pretrained`` loads the ``model.language_model.*``
weights as ``model.*`` (transformers' own ``qwen3_5_text`` key mapping) and ignores ``model.visual.*`` and
``mtp.*``, so no vision tower is ever built. A plain ``Qwen3_5ForCausalLM`` (``qwen3_5_text``) checkpoint loads
the same way.

``warm_cache()`` is the process's ``BaseModelCache``: a Ray worker process that runs several cells in a row gets the
base model it already holds instead of loading it again, provided each run proved it left the weights untouched.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import math
import os
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal

import torch
from huggingface_hub import constants as hub_constants
from huggingface_hub import try_to_load_from_cache
from transformers import (
    AutoConfig,
    AutoTokenizer,
    PreTrainedTokenizerBase,
    Qwen3_5Config,
    Qwen3_5ForCausalLM,
    Qwen3_5TextConfig,
)

from .released import released_config
from .kernels import KERNELS, fused_kernels
from .tiny import SIZES, build_tiny_model, build_tokenizer

__all__ = [
    "BaseModelCache",
    "LoadInfo",
    "LoadedModel",
    "PeakMemory",
    "fingerprint",
    "load_model_and_tokenizer",
    "resolve_dtype",
    "synchronize",
    "warm_cache",
]

DTYPES: dict[str, torch.dtype] = {
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
    "float16": torch.float16,
    "fp16": torch.float16,
    "float32": torch.float32,
    "fp32": torch.float32,
}
SLOW_KERNELS_WARNING = (
    "Qwen3.5 on {device} runs transformers' reference PyTorch implementation of {missing}, because the fused kernels "
    "do not import: slower, and its training memory grows with the sequence (docs/benchmarks.md, real sizes). "
    "Install flash-linear-attention (the delta rule) and causal-conv1d built for this torch and CUDA (the convolution)."
)
NO_TOKENIZER_WARNING = (
    "init: random: no tokenizer for {model} in the Hugging Face cache, so the character tokenizer stands in: "
    "sequences are about 3-4 times as many tokens as with the real one (cap them with max_seq_len). Memory and "
    "speed at a given sequence length are what the real model would show; the data's lengths are not."
)
INITS = ("pretrained", "random")
# Names in the checkpoint-load report that mean a config/weights mismatch; shown up to this many.
REPORTED_KEYS = 5

Source = Literal["tiny", "local", "hub", "random"]


@dataclass(frozen=True)
class LoadInfo:
    source: Source
    # tiny, random: None (built in memory); local: the absolute directory; hub: the cache snapshot directory
    path: str | None
    dtype: str  # "float32", "bfloat16", "float16"
    device: str
    load_s: float  # wall seconds for config, weights and tokenizer
    fast_kernels: int  # how many of kernels.KERNELS run fused on this device (0 to 4; 0 on the CPU)
    from_vl_checkpoint: bool  # the language model of a Qwen3_5ForConditionalGeneration checkpoint


@dataclass(frozen=True)
class LoadedModel:
    model: Qwen3_5ForCausalLM
    tokenizer: PreTrainedTokenizerBase
    info: LoadInfo


def resolve_dtype(dtype: str | torch.dtype | None, device: str) -> torch.dtype:
    """``None``/``"auto"``: bfloat16 on CUDA and MPS, float32 on the CPU; a ``torch.dtype`` as it is; otherwise one
    of ``DTYPES`` (any case)."""
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype is None or (isinstance(dtype, str) and dtype.lower() == "auto"):
        # Apple GPUs compute bfloat16 since macOS 14 (PyTorch's MPS backend); the CPU keeps float32, whose bfloat16
        # kernels are slower there on most processors.
        return torch.bfloat16 if torch.device(device).type in ("cuda", "mps") else torch.float32
    if isinstance(dtype, str) and dtype.lower() in DTYPES:
        return DTYPES[dtype.lower()]
    raise ValueError(f"param 'dtype' must be one of auto, {', '.join(DTYPES)}; got {dtype!r}")


def load_model_and_tokenizer(
    model: str, *, device: str = "cpu", dtype: str | torch.dtype | None = None, seed: int = 0,
    init: str = "pretrained",
) -> LoadedModel:
    """Load ``model`` (a name in ``tiny.SIZES``, a local directory, or a hub id) as a ``Qwen3_5ForCausalLM``.

    The model is on ``device`` in ``resolve_dtype(dtype, device)``, in eval mode (as ``from_pretrained`` returns
    it; call ``model.train()`` to train), every parameter trainable. ``seed`` only matters for tiny names (their
    random initialisation; it seeds torch's global RNG). The tokenizer is the character tokenizer for tiny names and
    ``AutoTokenizer``'s otherwise, with its saved padding side: pass ``padding_side="left"`` per call to generate.

    Hub ids go through the Hugging Face cache (``HF_HOME``/``HF_HUB_CACHE``, read at call time) and download what is
    missing unless ``HF_HUB_OFFLINE``/``TRANSFORMERS_OFFLINE`` is set. Raises ``FileNotFoundError`` for a model that
    is neither a tiny name, an existing directory, nor loadable from the hub or its cache; ``ValueError`` for a
    checkpoint that is not Qwen3.5 or a bad ``dtype``; ``RuntimeError`` when the checkpoint's weights do not match its
    config (missing or unexpected), rather than leaving weights randomly initialised.
    """
    torch_dtype = resolve_dtype(dtype, device)
    if init not in INITS:
        raise ValueError(f"param 'init' must be one of {', '.join(INITS)}; got {init!r}")
    source = _source_of(model)
    fast = _check_kernels(device)
    started = time.perf_counter()
    path, from_vl = None, False
    if init == "random" and source != "tiny":
        network, tokenizer = _build_random(model, source, torch_dtype, device, seed)
        source = "random"
    elif source == "tiny":
        # The tiny model is built in float32 on the CPU, then cast and moved like any other.
        network = build_tiny_model(model, seed=seed).to(device=device, dtype=torch_dtype)
        tokenizer, path, from_vl = build_tokenizer(), None, False
    elif source == "local":
        path = os.path.abspath(os.path.expanduser(model))
        network, tokenizer, from_vl = _load_pretrained(path, torch_dtype, device, {})
    else:
        network, tokenizer, from_vl, path = _load_from_hub(model, torch_dtype, device)
    network.eval()
    info = LoadInfo(
        source=source,
        path=path,
        dtype=str(torch_dtype).removeprefix("torch."),
        device=device,
        load_s=time.perf_counter() - started,
        fast_kernels=fast,
        from_vl_checkpoint=from_vl,
    )
    return LoadedModel(network, tokenizer, info)


def _build_random(
    model: str, source: Source, torch_dtype: torch.dtype, device: str, seed: int
) -> tuple[Qwen3_5ForCausalLM, PreTrainedTokenizerBase]:
    if source == "local":
        path = os.path.abspath(os.path.expanduser(model))
        config, _ = _text_config(AutoConfig.from_pretrained(path), path)
    else:
        config = released_config(model)
    torch.manual_seed(seed)  # also seeds CUDA's generators: the weights are initialised where they will live
    with torch.device(device):
        network = Qwen3_5ForCausalLM._from_config(config, dtype=torch_dtype)
    return network, _available_tokenizer(model, source)


def _available_tokenizer(model: str, source: Source) -> PreTrainedTokenizerBase:
    try:
        if source == "local":
            return AutoTokenizer.from_pretrained(os.path.expanduser(model))
        return AutoTokenizer.from_pretrained(model, cache_dir=_hub_cache_dir(), local_files_only=True)
    except (OSError, ValueError):
        _warn_no_tokenizer(model)
        return build_tokenizer()


@functools.cache
def _warn_no_tokenizer(model: str) -> None:
    warnings.warn(NO_TOKENIZER_WARNING.format(model=model), RuntimeWarning)


def _source_of(model: str) -> Source:
    if model in SIZES:
        return "tiny"
    if os.path.isdir(os.path.expanduser(model)):
        return "local"
    # A hub id is "owner/name"; anything shaped like a path is a directory that is not there.
    if model.startswith(("/", ".", "~")) or model.count("/") > 1:
        raise FileNotFoundError(
            f"model {model!r} is not a directory (nor a tiny size: {', '.join(SIZES)}, nor a hub id like "
            "Qwen/Qwen3.5-0.8B)"
        )
    return "hub"


def _load_pretrained(
    source: str, torch_dtype: torch.dtype, device: str, hub_kwargs: dict
) -> tuple[Qwen3_5ForCausalLM, PreTrainedTokenizerBase, bool]:
    """Language model and tokenizer from a directory or hub id; also whether it came from a VL checkpoint."""
    text_config, from_vl = _text_config(AutoConfig.from_pretrained(source, **hub_kwargs), source)
    network, report = Qwen3_5ForCausalLM.from_pretrained(
        source,
        config=text_config,
        dtype=torch_dtype,
        device_map=device,  # straight onto the device: no second copy of a 9B model in host memory
        output_loading_info=True,
        **hub_kwargs,
    )
    _check_complete(report, source)
    return network, AutoTokenizer.from_pretrained(source, **hub_kwargs), from_vl


def _text_config(config: object, source: str) -> tuple[Qwen3_5TextConfig, bool]:
    if isinstance(config, Qwen3_5TextConfig):
        return config, False
    if isinstance(config, Qwen3_5Config):
        text_config = config.text_config
        # The VL model ties lm_head to the embeddings by its top-level flag; text_config has a flag of its own that a
        # checkpoint need not keep in step. Left at the text flag, a tied checkpoint (no lm_head.weight) would get a
        # randomly initialised lm_head, and transformers' own AutoModelForCausalLM path does exactly that.
        text_config.tie_word_embeddings = config.tie_word_embeddings
        return text_config, True
    raise ValueError(
        f"{source}: model_type {getattr(config, 'model_type', None)!r} is not Qwen3.5 (expected qwen3_5 or "
        "qwen3_5_text)"
    )


def _check_complete(report: dict, source: str) -> None:
    # from_pretrained raises for mis-shaped weights but only logs these; a missing weight would silently stay at its
    # random initialisation.
    problems = [
        f"{len(keys)} {kind} (e.g. {', '.join(map(str, sorted(keys)[:REPORTED_KEYS]))})"
        for kind, keys in (
            ("missing", report["missing_keys"]),
            ("unexpected", report["unexpected_keys"]),
        )
        if keys
    ]
    if problems:
        raise RuntimeError(f"{source}: the weights do not match the text config: {'; '.join(problems)}")


def _load_from_hub(
    model_id: str, torch_dtype: torch.dtype, device: str
) -> tuple[Qwen3_5ForCausalLM, PreTrainedTokenizerBase, bool, str | None]:
    # huggingface_hub reads HF_HOME and HF_HUB_OFFLINE once, at import; reading them here lets a worker (or a test)
    # set them after that, and the explicit arguments override the import-time values everywhere below.
    cache_dir, offline = _hub_cache_dir(), _hub_offline()
    hub_kwargs = {"cache_dir": cache_dir, "local_files_only": offline}
    try:
        network, tokenizer, from_vl = _load_pretrained(model_id, torch_dtype, device, hub_kwargs)
    except OSError as exc:
        first_line = (str(exc).splitlines() or [""])[0]
        reason = "offline mode is on: HF_HUB_OFFLINE" if offline else f"{type(exc).__name__}: {first_line}"
        raise FileNotFoundError(
            f"model {model_id!r} is not (completely) in the Hugging Face cache at {cache_dir} and could not be "
            f"downloaded ({reason}). Pre-download it where there is network, into the cache the workers read "
            f"(HF_HOME or HF_HUB_CACHE): `hf download {model_id}` (`huggingface-cli download {model_id}` with "
            "huggingface_hub < 1.0); or pass a local directory with its config.json, safetensors and tokenizer files."
        ) from exc
    config_file = try_to_load_from_cache(model_id, "config.json", cache_dir=cache_dir)
    return network, tokenizer, from_vl, os.path.dirname(config_file) if isinstance(config_file, str) else None


def _hub_cache_dir() -> str:
    """huggingface_hub's cache directory rule, applied to the environment as it is now."""
    for variable in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):  # the second is the legacy name
        if os.environ.get(variable):
            return os.path.expanduser(os.environ[variable])
    if os.environ.get("HF_HOME"):
        return os.path.join(os.path.expanduser(os.environ["HF_HOME"]), "hub")
    return hub_constants.HF_HUB_CACHE


def _hub_offline() -> bool:
    flags = (os.environ.get("HF_HUB_OFFLINE"), os.environ.get("TRANSFORMERS_OFFLINE"))
    return hub_constants.HF_HUB_OFFLINE or any(
        (flag or "").strip().lower() in ("1", "on", "yes", "true") for flag in flags
    )


def _check_kernels(device: str) -> int:
    fused = fused_kernels(device)
    missing = tuple(name for name, fast in fused.items() if not fast)
    # On the CPU no fused kernel runs anyway; on a GPU each missing one costs every run speed (and memory).
    if missing and torch.device(device).type == "cuda":
        _warn_slow_kernels(torch.device(device).type, missing)
    return len(KERNELS) - len(missing)


@functools.cache
def _warn_slow_kernels(device: str, missing: tuple[str, ...]) -> None:
    """Once per process: every run in a Ray worker would otherwise repeat it."""
    warnings.warn(SLOW_KERNELS_WARNING.format(device=device, missing=", ".join(missing)), RuntimeWarning)


def fingerprint(model: torch.nn.Module) -> str:
    """A SHA-256 over every parameter's name, dtype, shape, device and bytes: any changed element changes it.

    Costs one pass over the weights: about 2 GB/s on one CPU core, plus the copy off a GPU (~10 s for a 9B model in
    bfloat16).
    """
    digest = hashlib.sha256()
    for name, value in _parameter_digests(model).items():
        digest.update(f"{name}={value}\n".encode())
    return digest.hexdigest()


def _parameter_digests(model: torch.nn.Module) -> dict[str, str]:
    digests = {}
    for name, param in model.named_parameters():  # tied weights once
        data = param.detach()
        digest = hashlib.sha256(f"{data.dtype}|{tuple(data.shape)}|{data.device}".encode())
        digest.update(data.contiguous().reshape(-1).view(torch.uint8).cpu().numpy())
        digests[name] = digest.hexdigest()
    return digests


@dataclass
class _Entry:
    key: tuple
    loaded: LoadedModel
    digests: dict[str, str]  # per parameter, at load: to say which parameters changed
    rss_at_load: int | None
    uses: int = 1
    returned: bool = False  # check_unchanged passed since the last get(): safe to hand out again


class BaseModelCache:
    """Holds one loaded base model per process and hands the same ``LoadedModel`` out again for the same key.

    The key is (model, device, resolved dtype, and the seed for tiny names, whose weights depend on it). One model
    at most: a GPU worker could not hold two base models of the sizes swept, so a get() for another key drops the
    held one first. Meant for runs that leave the base weights untouched (LoRA, inference); a full fine-tune
    should call ``load_model_and_tokenizer`` instead.

    The contract: after a run, call ``check_unchanged(loaded)``. It compares the weights with their fingerprint at
    load and raises ``RuntimeError`` if anything changed. A held model is handed out again only after
    ``check_unchanged`` passed, so a run that crashed (say, with a LoRA adapter still injected) or skipped the check
    costs the next run a fresh load, never a corrupted base model. Recycling, decided at get():

    - ``max_uses``: a model is handed out at most this many times, then loaded afresh (bounds whatever state builds up
      on a long-lived model object);
    - ``max_rss_growth_mb``: the process's resident memory (VmRSS, ``/proc/self/status``; the rule is off where that
      file does not exist) grew by more than this since the load. Dropping the model frees what leaked through it
      (hooks, references to old runs' tensors); a leak elsewhere is not the cache's to fix.

    ``enabled=False``: every get() loads fresh and nothing is held. Not thread-safe: a worker runs one cell at a time.
    """

    def __init__(self, *, enabled: bool = True, max_uses: int = 8, max_rss_growth_mb: float = 4096.0):
        if max_uses < 1:
            raise ValueError(f"max_uses must be >= 1, got {max_uses}")
        self.enabled = enabled
        self.max_uses = max_uses
        self.max_rss_growth_mb = max_rss_growth_mb
        self._entry: _Entry | None = None
        self.last_hit = False  # whether the last get() handed out a held model instead of loading

    def get(
        self, model: str, *, device: str = "cpu", dtype: str | torch.dtype | None = None, seed: int = 0,
        init: str = "pretrained",
    ) -> LoadedModel:
        """The held model for this key if it may be reused, else a fresh ``load_model_and_tokenizer`` (then held).

        A reused model comes back as loaded: eval mode, every parameter trainable (PEFT freezes them), no gradients.
        """
        self.last_hit = False
        if not self.enabled:
            self.clear()
            return load_model_and_tokenizer(model, device=device, dtype=dtype, seed=seed, init=init)
        key = _cache_key(model, device, dtype, seed, init)
        entry = self._entry
        if entry is not None and entry.key == key and self._reusable(entry):
            self.last_hit = True
            entry.uses += 1
            entry.returned = False
            _restore_as_loaded(entry.loaded.model)
            return entry.loaded
        # Drop the held model before loading the next: both may not fit.
        self.clear()
        loaded = load_model_and_tokenizer(model, device=device, dtype=dtype, seed=seed, init=init)
        self._entry = _Entry(key, loaded, _parameter_digests(loaded.model), _rss_bytes())
        return loaded

    def check_unchanged(self, loaded: LoadedModel) -> None:
        """Raise ``RuntimeError`` if the held ``loaded``'s weights differ from their fingerprint at load (the held
        model is then dropped); otherwise mark it reusable. A model the cache does not hold (cache disabled, or
        already dropped) will not be reused, so it is not checked."""
        entry = self._entry
        if entry is None or entry.loaded is not loaded:
            return
        now = _parameter_digests(loaded.model)
        if now == entry.digests:
            entry.returned = True
            return
        self.clear()
        raise RuntimeError(
            f"the base model {entry.key[0]!r} changed while cached: {_describe_changes(entry.digests, now)}. A run "
            "that shares the base model must leave it bit-identical: no merge_and_unload(), call unload() on the "
            "PEFT model before returning, and let no optimizer step the base parameters."
        )

    def clear(self) -> None:
        """Forget the held model (its memory is freed once the callers drop their references too)."""
        self._entry = None

    def _reusable(self, entry: _Entry) -> bool:
        if not entry.returned or entry.uses >= self.max_uses:
            return False
        rss = _rss_bytes()
        return rss is None or entry.rss_at_load is None or rss - entry.rss_at_load <= self.max_rss_growth_mb * 2**20


def _cache_key(model: str, device: str, dtype: str | torch.dtype | None, seed: int, init: str) -> tuple:
    source = _source_of(model)
    name = os.path.abspath(os.path.expanduser(model)) if source == "local" else model
    torch_dtype = resolve_dtype(dtype, device)
    random_weights = source == "tiny" or init == "random"  # weights that depend on the seed
    return (name, device, torch_dtype, init, seed if random_weights else None)


def _restore_as_loaded(model: Qwen3_5ForCausalLM) -> None:
    model.eval()
    for param in model.parameters():
        param.requires_grad_(True)
        param.grad = None


def _describe_changes(before: dict[str, str], after: dict[str, str]) -> str:
    changed = [name for name in before if name in after and before[name] != after[name]]
    added = [name for name in after if name not in before]
    removed = [name for name in before if name not in after]
    return "; ".join(
        f"{len(names)} parameter(s) {kind} (e.g. {', '.join(names[:REPORTED_KEYS])})"
        for kind, names in (("changed", changed), ("added", added), ("removed", removed))
        if names
    )


def _rss_bytes() -> int | None:
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024  # reported in kB
    except OSError:
        pass
    return None


_WARM_CACHE = BaseModelCache()


def warm_cache() -> BaseModelCache:
    """This process's ``BaseModelCache`` (default settings; set ``enabled``/``max_uses`` on it to change them)."""
    return _WARM_CACHE


class PeakMemory:
    """Peak memory per phase of a run (``train``, ``eval``), in MB: each ``phase(name)`` block restarts the device's
    peak and folds what it reached into its phase's maximum, so phases that alternate are kept apart."""

    def __init__(self, device: str):
        self.device = device
        self.mb: dict[str, float] = {}

    @contextlib.contextmanager
    def phase(self, name: str) -> Iterator[None]:
        reset_peak_memory(self.device)
        try:
            yield
        finally:
            synchronize(self.device)
            peak = peak_memory_mb(self.device)
            self.mb[name] = max(self.mb.get(name, peak), peak)


def synchronize(device: str) -> None:
    """Wait for the device's queued kernels: GPUs run them asynchronously, so a clock read without this stops
    before the GPU has finished."""
    kind = torch.device(device).type
    if kind == "cuda":
        torch.cuda.synchronize(device)
    elif kind == "mps":
        torch.mps.synchronize()


def reset_peak_memory(device: str) -> None:
    """Start a new peak: CUDA's allocator statistics, or on Linux the process's peak resident memory (VmHWM, reset
    through ``/proc/self/clear_refs``; where that cannot be written the peak stays the process's lifetime's)."""
    kind = torch.device(device).type
    if kind == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        return
    if kind == "mps":
        return  # MPS keeps no peak: see peak_memory_mb
    try:
        with open("/proc/self/clear_refs", "w") as clear_refs:
            clear_refs.write("5")  # "5" resets the peak RSS (man 5 proc)
    except OSError:
        pass


def peak_memory_mb(device: str) -> float:
    """CUDA: the most memory tensors held on the device since ``reset_peak_memory`` (weights included).

    MPS: what the Metal driver holds for this process when read (PyTorch keeps no peak for Apple GPUs), so the
    figure of a phase is read at its end. CPU: the process's peak resident memory (VmHWM) since
    ``reset_peak_memory``: everything the process holds, the Python interpreter and libraries included. NaN where
    ``/proc/self/status`` does not exist.
    """
    kind = torch.device(device).type
    if kind == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    if kind == "mps":
        return torch.mps.driver_allocated_memory() / 2**20
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024  # reported in kB
    except OSError:
        pass
    return math.nan
