"""Loading Qwen3.5 causal LMs for text experiments, and keeping a loaded base model warm between runs.

``load_model_and_tokenizer(model)`` takes a tiny size name (``tiny``, ``tiny-8``, ``small``: built in memory, see
``tiny.py``), a local checkpoint directory, or a hub id such as ``Qwen/Qwen3.5-0.8B`` (also ``-2B``, ``-4B``,
``-9B`` and the ``-Base`` variants), and returns a ``LoadedModel``: a ``Qwen3_5ForCausalLM``, its tokenizer and a
``LoadInfo`` saying what was loaded. How a checkpoint is read (the language model of a released vision-language
checkpoint, the hub cache, random init) is ``checkpoints.py``'s; peak memory and device synchronisation are
``memory.py``'s.

``warm_cache()`` is the process's ``BaseModelCache``: a Ray worker process that runs several cells in a row gets the
base model it already holds instead of loading it again, provided each run proved it left the weights untouched.
"""

from __future__ import annotations

import functools
import hashlib
import os
import time
import warnings
from dataclasses import dataclass

import torch
from transformers import PreTrainedTokenizerBase, Qwen3_5ForCausalLM

from .checkpoints import REPORTED_KEYS, Source, build_random, load_from_hub, load_pretrained, source_of
from .kernels import KERNELS, fused_kernels
from .memory import rss_bytes
from .tiny import build_tiny_model, build_tokenizer

__all__ = [
    "BaseModelCache",
    "LoadInfo",
    "LoadedModel",
    "fingerprint",
    "load_model_and_tokenizer",
    "resolve_dtype",
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
INITS = ("pretrained", "random")


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
    source = source_of(model)
    fast = _check_kernels(device)
    started = time.perf_counter()
    path, from_vl = None, False
    if init == "random" and source != "tiny":
        network, tokenizer = build_random(model, source, torch_dtype, device, seed)
        source = "random"
    elif source == "tiny":
        # The tiny model is built in float32 on the CPU, then cast and moved like any other.
        network = build_tiny_model(model, seed=seed).to(device=device, dtype=torch_dtype)
        tokenizer, path, from_vl = build_tokenizer(), None, False
    elif source == "local":
        path = os.path.abspath(os.path.expanduser(model))
        network, tokenizer, from_vl = load_pretrained(path, torch_dtype, device, {})
    else:
        network, tokenizer, from_vl, path = load_from_hub(model, torch_dtype, device)
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
        self._entry = _Entry(key, loaded, _parameter_digests(loaded.model), rss_bytes())
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
        rss = rss_bytes()
        return rss is None or entry.rss_at_load is None or rss - entry.rss_at_load <= self.max_rss_growth_mb * 2**20


def _cache_key(model: str, device: str, dtype: str | torch.dtype | None, seed: int, init: str) -> tuple:
    source = source_of(model)
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


_WARM_CACHE = BaseModelCache()


def warm_cache() -> BaseModelCache:
    """This process's ``BaseModelCache`` (default settings; set ``enabled``/``max_uses`` on it to change them)."""
    return _WARM_CACHE
