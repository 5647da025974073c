"""The released Qwen3.5 dense text configs, as data: real-size models without downloading a checkpoint.

``model: Qwen/Qwen3.5-0.8B`` with ``init: random`` builds the language model from these facts with random weights,
so a sweep can be dry-run at real size (memory, speed) before anything is downloaded, and tests can build the
real shapes (0.8B on the CPU, every size on the meta device).

Where the facts come from (no checkpoint can be downloaded where this was written): copies of the released
``config.json`` files' ``text_config`` in public code (tests, conversion scripts, Megatron argument files of
slime/miles), two or more agreeing sources per value. Two values rest on less: the 2B's ``tie_word_embeddings``
(its Megatron arguments carry no ``--untie-embeddings-and-output-weights``, as the tied 0.8B and 4B do not, and the
untied 9B does) and the 4B's ``mtp_num_hidden_layers`` (one source). Neither changes a text model: the MTP head is
not part of ``Qwen3_5ForCausalLM``. Once a real checkpoint is at hand, ``released_config`` can be checked against
its ``config.json`` (``tests/test_real_size.py`` does, when ``HF_HOME`` holds one).
"""

from __future__ import annotations

from transformers import Qwen3_5TextConfig

# Shared by every released dense size.
_COMMON = {
    "vocab_size": 248320,
    "head_dim": 256,
    "linear_num_key_heads": 16,
    "linear_key_head_dim": 128,
    "linear_value_head_dim": 128,
    "linear_conv_kernel_dim": 4,
    "full_attention_interval": 4,  # three Gated DeltaNet layers, then one gated full-attention layer
    "attn_output_gate": True,
    "rms_norm_eps": 1e-6,
    "max_position_embeddings": 262144,
    "eos_token_id": 248044,
    "rope_parameters": {"rope_type": "default", "rope_theta": 10_000_000, "partial_rotary_factor": 0.25},
}

# Per size: what differs. Keyed by the hub id's size part; the -Base variants share their size's config.
RELEASED: dict[str, dict] = {
    "0.8B": {"hidden_size": 1024, "intermediate_size": 3584, "num_hidden_layers": 24, "num_attention_heads": 8,
             "num_key_value_heads": 2, "linear_num_value_heads": 16, "tie_word_embeddings": True},
    "2B": {"hidden_size": 2048, "intermediate_size": 6144, "num_hidden_layers": 24, "num_attention_heads": 8,
           "num_key_value_heads": 2, "linear_num_value_heads": 16, "tie_word_embeddings": True},
    "4B": {"hidden_size": 2560, "intermediate_size": 9216, "num_hidden_layers": 32, "num_attention_heads": 16,
           "num_key_value_heads": 4, "linear_num_value_heads": 32, "tie_word_embeddings": True},
    "9B": {"hidden_size": 4096, "intermediate_size": 12288, "num_hidden_layers": 32, "num_attention_heads": 16,
           "num_key_value_heads": 4, "linear_num_value_heads": 32, "tie_word_embeddings": False},
}
HUB_PREFIX = "Qwen/Qwen3.5-"


def released_size(model: str) -> str | None:
    """``"0.8B"`` for ``Qwen/Qwen3.5-0.8B`` or ``Qwen/Qwen3.5-0.8B-Base`` (any case); None for anything else."""
    if not model.lower().startswith(HUB_PREFIX.lower()):
        return None
    size = model[len(HUB_PREFIX):].removesuffix("-Base").removesuffix("-base")
    return next((name for name in RELEASED if name.lower() == size.lower()), None)


def released_config(model: str) -> Qwen3_5TextConfig:
    """The text config of released ``model`` (a hub id such as ``Qwen/Qwen3.5-4B``). Raises ValueError otherwise."""
    size = released_size(model)
    if size is None:
        raise ValueError(
            f"param 'model': init: random needs a released Qwen3.5 size ({', '.join(HUB_PREFIX + s for s in RELEASED)}, "
            f"or their -Base variants) or a local directory with a config.json; got {model!r}"
        )
    fields = {**_COMMON, **RELEASED[size]}
    interval = fields["full_attention_interval"]
    fields["layer_types"] = [
        "full_attention" if (i + 1) % interval == 0 else "linear_attention" for i in range(fields["num_hidden_layers"])
    ]
    return Qwen3_5TextConfig(**fields)
