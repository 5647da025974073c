"""Where a model name points (a tiny size, a local directory, a hub id) and reading a Qwen3.5 checkpoint from there.

The released Qwen3.5 checkpoints are vision-language models (``model_type: qwen3_5``, architecture
``Qwen3_5ForConditionalGeneration``; weights ``model.language_model.*``, ``model.visual.*``, ``lm_head.weight``
unless tied, and ``mtp.*`` where present). Text experiments get the language model only: a ``Qwen3_5ForCausalLM``
built from the checkpoint's ``text_config``, into which ``from_pretrained`` loads the ``model.language_model.*``
weights as ``model.*`` (transformers' own ``qwen3_5_text`` key mapping) and ignores ``model.visual.*`` and
``mtp.*``, so no vision tower is ever built. A plain ``Qwen3_5ForCausalLM`` (``qwen3_5_text``) checkpoint loads
the same way. ``build_random`` builds a released size (or a local config) at random init instead, downloading nothing.
"""

from __future__ import annotations

import functools
import os
import warnings
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
from .tiny import SIZES, build_tokenizer

NO_TOKENIZER_WARNING = (
    "init: random: no tokenizer for {model} in the Hugging Face cache, so the character tokenizer stands in: "
    "sequences are about 3-4 times as many tokens as with the real one (cap them with max_seq_len). Memory and "
    "speed at a given sequence length are what the real model would show; the data's lengths are not."
)
# Names in the checkpoint-load report that mean a config/weights mismatch; shown up to this many.
REPORTED_KEYS = 5

Source = Literal["tiny", "local", "hub", "random"]


def source_of(model: str) -> Source:
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


def build_random(
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


def load_pretrained(
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


def load_from_hub(
    model_id: str, torch_dtype: torch.dtype, device: str
) -> tuple[Qwen3_5ForCausalLM, PreTrainedTokenizerBase, bool, str | None]:
    # huggingface_hub reads HF_HOME and HF_HUB_OFFLINE once, at import; reading them here lets a worker (or a test)
    # set them after that, and the explicit arguments override the import-time values everywhere below.
    cache_dir, offline = _hub_cache_dir(), _hub_offline()
    hub_kwargs = {"cache_dir": cache_dir, "local_files_only": offline}
    try:
        network, tokenizer, from_vl = load_pretrained(model_id, torch_dtype, device, hub_kwargs)
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
