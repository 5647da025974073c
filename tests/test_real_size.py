"""Released Qwen3.5 sizes without downloading: bundled configs, counts, init: random, bounded evaluation memory."""

from __future__ import annotations

import gc
import os
import subprocess
import sys
import warnings

import pytest
import torch
from transformers import AutoConfig, Qwen3_5ForCausalLM

from experiments.qwen35 import finetune
from experiments.qwen35.counts import size_counts
from experiments.qwen35.data import encode_for_training, load_examples
from experiments.qwen35.memory import peak_memory_mb, reset_peak_memory
from experiments.qwen35.models import fingerprint, load_model_and_tokenizer
from experiments.qwen35.released import RELEASED, released_config, released_size
from experiments.qwen35.tiny import build_tiny_model

RANK = 16


def independent_counts(c) -> tuple[int, dict[str, int]]:
    """Parameters and LoRA parameters (rank RANK) from the config's numbers alone: the released architecture as the
    Qwen3.5 report describes it, not transformers' modules."""
    hidden, inter, vocab = c.hidden_size, c.intermediate_size, c.vocab_size
    q_out = 2 * c.num_attention_heads * c.head_dim  # the query projection also produces the output gate
    kv_out = c.num_key_value_heads * c.head_dim
    attn_in = c.num_attention_heads * c.head_dim
    key, value = c.linear_num_key_heads * c.linear_key_head_dim, c.linear_num_value_heads * c.linear_value_head_dim
    heads = c.linear_num_value_heads
    full = c.layer_types.count("full_attention")
    linear = c.layer_types.count("linear_attention")
    layers = full + linear
    attention = [(hidden, q_out), (hidden, kv_out), (hidden, kv_out), (attn_in, hidden)]
    deltanet = [(hidden, 2 * key + value), (hidden, value), (hidden, heads), (hidden, heads), (value, hidden)]
    mlp = [(hidden, inter), (hidden, inter), (inter, hidden)]
    params = (
        vocab * hidden * (1 if c.tie_word_embeddings else 2)
        + hidden  # final norm
        + layers * (2 * hidden + sum(i * o for i, o in mlp))
        + full * (sum(i * o for i, o in attention) + 2 * c.head_dim)  # q_norm, k_norm
        + linear * (sum(i * o for i, o in deltanet) + (2 * key + value) * c.linear_conv_kernel_dim
                    + 2 * heads + c.linear_value_head_dim)  # conv1d; dt_bias, A_log; gated norm
    )
    lora = {
        "attention": full * RANK * sum(i + o for i, o in attention),
        "deltanet": linear * RANK * sum(i + o for i, o in deltanet),
        "mlp": layers * RANK * sum(i + o for i, o in mlp),
    }
    return params, {**lora, "all": sum(lora.values())}


@pytest.mark.parametrize("size", list(RELEASED))
def test_counts_per_size_match_the_config_arithmetic(size):
    model = f"Qwen/Qwen3.5-{size}"
    counted = size_counts(model, RANK)
    params, lora = independent_counts(released_config(model))
    assert counted.params == params
    assert counted.lora == lora


def test_released_configs_have_the_qwen35_shape():
    assert released_size("Qwen/Qwen3.5-9B-Base") == "9B" and released_size("qwen/qwen3.5-0.8b") == "0.8B"
    assert released_size("Qwen/Qwen3.5-27B") is None and released_size("meta/llama") is None
    config = released_config("Qwen/Qwen3.5-0.8B")
    assert config.layer_types[:4] == ["linear_attention"] * 3 + ["full_attention"] and len(config.layer_types) == 24
    assert (config.hidden_size, config.vocab_size, config.tie_word_embeddings) == (1024, 248320, True)
    assert released_config("Qwen/Qwen3.5-9B").tie_word_embeddings is False
    with pytest.raises(ValueError, match=r"param 'model': init: random needs a released Qwen3.5 size.*'Qwen/Qwen3.5-27B'"):
        released_config("Qwen/Qwen3.5-27B")


def test_counts_command_prints_every_size():
    done = subprocess.run([sys.executable, "-m", "orchestrator", "models", "--rank", "8"], capture_output=True,
                          text=True, check=False, cwd=os.path.dirname(os.path.dirname(__file__)))
    assert done.returncode == 0, done.stderr
    for size in RELEASED:
        counted = size_counts(f"Qwen/Qwen3.5-{size}", 8)
        block = done.stdout.split(f"Qwen/Qwen3.5-{size}: ")[1].split("Qwen/")[0]
        assert block.startswith(f"{counted.params:,} parameters")
        assert f"LoRA rank 8 trainable: attention {counted.lora['attention']:,};" in block
        assert f"all {counted.lora['all']:,}" in block


def test_init_random_builds_the_real_0_8b_without_downloading(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))  # an empty cache: nothing to read, and offline anyway
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        loaded = load_model_and_tokenizer("Qwen/Qwen3.5-0.8B", init="random", seed=0)
    assert any("character tokenizer stands in" in str(w.message) for w in caught)
    assert loaded.info.source == "random" and loaded.info.dtype == "float32"
    assert sum(p.numel() for p in loaded.model.parameters()) == size_counts("Qwen/Qwen3.5-0.8B").params
    ids = loaded.tokenizer("12+30=", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        logits = loaded.model(input_ids=ids).logits
    assert logits.shape == (1, ids.shape[1], 248320) and torch.isfinite(logits).all()


def test_init_random_from_a_local_config_is_seeded(tmp_path):
    build_tiny_model("small").config.save_pretrained(tmp_path)  # config.json only: no weights, no tokenizer
    first = load_model_and_tokenizer(str(tmp_path), init="random", seed=1)
    assert first.info.source == "random"
    assert fingerprint(first.model) == fingerprint(load_model_and_tokenizer(str(tmp_path), init="random", seed=1).model)
    assert fingerprint(first.model) != fingerprint(load_model_and_tokenizer(str(tmp_path), init="random", seed=2).model)
    with pytest.raises(ValueError, match="param 'init' must be one of pretrained, random; got 'zeros'"):
        load_model_and_tokenizer(str(tmp_path), init="zeros")


def test_evaluation_memory_is_bounded_for_the_0_8b_vocabulary():
    """The 0.8B's vocabulary and width (2 of its 24 layers, one of each kind, so the test stays fast), 32
    chat-formatted questions in one evaluation batch. Their full logits in float32 would be ~2.9 GB, twice that with
    the log-softmax; projecting the answer positions a chunk at a time adds at most one chunk's worth (~0.5 GB) to
    what the decoder itself needs."""
    config = released_config("Qwen/Qwen3.5-0.8B")
    config.num_hidden_layers, config.layer_types = 2, ["linear_attention", "full_attention"]
    tokenizer = load_model_and_tokenizer("tiny").tokenizer  # the character tokenizer
    torch.manual_seed(0)
    model = Qwen3_5ForCausalLM(config).eval()
    examples = load_examples("arithmetic", split="test", limit=32, seed=0)
    batch = encode_for_training(tokenizer, examples, chat=True)
    assert len(examples) <= finetune.EVAL_BATCH  # one batch, as eval_loss will make it
    full_logits_mb = batch["input_ids"].numel() * config.vocab_size * 4 / 2**20

    def added_mb(work) -> float:
        gc.collect()
        reset_peak_memory("cpu")
        before = peak_memory_mb("cpu")
        with torch.no_grad():
            work()
        return peak_memory_mb("cpu") - before

    def run_decoder() -> None:
        model.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], use_cache=False)

    added_mb(run_decoder)  # the first call also allocates what later calls reuse
    decoder = added_mb(run_decoder)
    evaluation = added_mb(lambda: finetune.eval_loss(model, tokenizer, examples, chat=True))
    assert full_logits_mb > 2500
    assert evaluation - decoder < 700, (
        f"evaluation added {evaluation:.0f} MB, the decoder alone {decoder:.0f} MB; the batch's full logits alone "
        f"would be {full_logits_mb:.0f} MB")


@pytest.mark.skipif(not os.environ.get("HF_HOME"), reason="checks the bundled configs against a downloaded "
                    "checkpoint's config.json: set HF_HOME to a cache holding Qwen/Qwen3.5-*")
@pytest.mark.parametrize("size", list(RELEASED))
def test_bundled_config_matches_a_downloaded_one(size):
    try:
        real = AutoConfig.from_pretrained(f"Qwen/Qwen3.5-{size}", local_files_only=True)
    except OSError:
        pytest.skip(f"Qwen/Qwen3.5-{size} is not in the cache at HF_HOME")
    text, ours = real.text_config, released_config(f"Qwen/Qwen3.5-{size}")
    for field in ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
                  "num_key_value_heads", "head_dim", "linear_num_key_heads", "linear_num_value_heads",
                  "linear_key_head_dim", "linear_value_head_dim", "linear_conv_kernel_dim", "layer_types"):
        assert getattr(ours, field) == getattr(text, field), field
    assert ours.tie_word_embeddings == real.tie_word_embeddings
