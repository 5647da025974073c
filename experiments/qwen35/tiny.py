"""A download-free character tokenizer and tiny real Qwen3.5 models.

The model is ``transformers.Qwen3_5ForCausalLM`` itself with a small config: it has the released checkpoints'
layer pattern (three Gated DeltaNet ``linear_attention`` layers, then one gated ``full_attention`` layer), module
names and forward code, so a study exercises the code paths that fine-tuning a real Qwen3.5 would, in seconds.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast, Qwen3_5ForCausalLM, Qwen3_5TextConfig

PAD, EOS, UNK = "<pad>", "<eos>", "<unk>"
# Specials first, then newline and printable ASCII in code-point order: the ids depend on this list alone, so a
# text gets the same ids in every process and on every machine.
VOCAB = [PAD, EOS, UNK, "\n"] + [chr(code) for code in range(32, 127)]

# Qwen3.5's chat template, cut down to single-turn text chat (no tools, images or reasoning_content): ChatML
# turns, then the assistant turn's think block. The generation prompt ends in "<think>\n" (the model reasons
# first: the default), or in the empty block "<think>\n\n</think>\n\n" with enable_thinking=False. A final
# assistant turn is written after the empty block too, so that the generation prompt is a prefix of the
# conversation rendered with its answer: training data is split into prompt and completion on that prefix.
# Plain ASCII, so the character tokenizer spells every marker out.
CHAT_TEMPLATE = r"""
{%- for message in messages %}
    {{- '<|im_start|>' + message.role + '\n' }}
    {%- if message.role == 'assistant' and loop.last %}
        {{- '<think>\n\n</think>\n\n' }}
    {%- endif %}
    {{- message.content + '<|im_end|>\n' }}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|im_start|>assistant\n' }}
    {%- if enable_thinking is defined and enable_thinking is false %}
        {{- '<think>\n\n</think>\n\n' }}
    {%- else %}
        {{- '<think>\n' }}
    {%- endif %}
{%- endif %}
"""

# Qwen3.5 interleaves three linear-attention layers with one full-attention layer.
FULL_ATTENTION_INTERVAL = 4


@dataclass(frozen=True)
class ModelSize:
    num_layers: int
    hidden: int
    intermediate: int
    heads: int  # full-attention query heads; half as many key/value heads (grouped-query, as in Qwen3.5)
    head_dim: int
    linear_key_heads: int  # Gated DeltaNet; twice as many value heads, as in Qwen3.5's default config
    linear_head_dim: int


# Named sizes, so a study can sweep depth (tiny-8) or width (small) by name. One training step of 16 short
# sequences takes ~40 ms (tiny) to ~65 ms (tiny-8, small) on one CPU thread.
SIZES: dict[str, ModelSize] = {
    "tiny": ModelSize(
        num_layers=4, hidden=64, intermediate=128, heads=4, head_dim=16, linear_key_heads=2, linear_head_dim=16
    ),
    "tiny-8": ModelSize(
        num_layers=8, hidden=64, intermediate=128, heads=4, head_dim=16, linear_key_heads=2, linear_head_dim=16
    ),
    "small": ModelSize(
        num_layers=4, hidden=128, intermediate=256, heads=4, head_dim=32, linear_key_heads=2, linear_head_dim=32
    ),
}


def build_tokenizer() -> PreTrainedTokenizerFast:
    """One token per character of ``VOCAB``; anything else maps to ``<unk>``. Pads on the right by default.

    Has ``CHAT_TEMPLATE`` as its chat template, whose markers (``<|im_start|>``...) are spelt out character by
    character rather than being single special tokens as in Qwen3.5's tokenizer.
    """
    vocab = {token: index for index, token in enumerate(VOCAB)}
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token=UNK))
    # Every character, newline included, is its own "word"; Fuse joins them back without inserting spaces.
    tokenizer.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
    tokenizer.decoder = decoders.Fuse()
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, pad_token=PAD, eos_token=EOS, unk_token=UNK, chat_template=CHAT_TEMPLATE
    )


def build_tiny_model(size: str = "tiny", seed: int = 0, vocab_size: int = len(VOCAB)) -> Qwen3_5ForCausalLM:
    """A randomly initialised Qwen3.5 causal LM of a named size; the same ``seed`` gives the same weights.

    Seeds torch's global RNG, which ``transformers`` initialisation draws from.
    """
    if size not in SIZES:
        raise ValueError(f"unknown model size {size!r}; valid sizes: {', '.join(SIZES)}")
    dims = SIZES[size]
    config = Qwen3_5TextConfig(
        vocab_size=vocab_size,
        hidden_size=dims.hidden,
        intermediate_size=dims.intermediate,
        num_hidden_layers=dims.num_layers,
        layer_types=[
            "full_attention" if (index + 1) % FULL_ATTENTION_INTERVAL == 0 else "linear_attention"
            for index in range(dims.num_layers)
        ],
        num_attention_heads=dims.heads,
        num_key_value_heads=dims.heads // 2,
        head_dim=dims.head_dim,
        linear_num_key_heads=dims.linear_key_heads,
        linear_num_value_heads=dims.linear_key_heads * 2,
        linear_key_head_dim=dims.linear_head_dim,
        linear_value_head_dim=dims.linear_head_dim,
        max_position_embeddings=256,
        pad_token_id=VOCAB.index(PAD),
        eos_token_id=VOCAB.index(EOS),
    )
    torch.manual_seed(seed)
    return Qwen3_5ForCausalLM(config)
