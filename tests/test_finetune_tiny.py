"""Real (tiny) Qwen3.5 training through the wavesweep run contract: architecture, learning, determinism, errors."""

from __future__ import annotations

import math

import pytest
import torch

from experiments.qwen35 import finetune
from experiments.qwen35.data import IGNORE_INDEX, encode_for_training, make_arithmetic, parse_final_answer
from experiments.qwen35.models import load_model_and_tokenizer
from experiments.qwen35.tiny import VOCAB, build_tiny_model, build_tokenizer
from orchestrator.context import Diverged, RunContext

# Short runs keep the file fast; 30 steps are enough for the loss to fall well below its initial ln(vocab).
SHORT = {"method": "full", "max_steps": 30, "n_eval": 16}


def _run(params: dict, seed: int = 0) -> tuple[dict[str, float], list[tuple[int, dict[str, float]]]]:
    reports: list[tuple[int, dict[str, float]]] = []
    ctx = RunContext(study="t", cell_key="c", seed=seed, num_cpus=1, _sink=lambda step, m: reports.append((step, m)))
    return finetune.run(params, ctx), reports


@pytest.fixture(scope="module")
def trained():
    """One short run, with the model it built captured before and after training."""
    built = []

    def capturing_load(*args, **kwargs):
        loaded = load_model_and_tokenizer(*args, **kwargs)
        built.append((loaded.model, {name: t.detach().clone() for name, t in loaded.model.named_parameters()}))
        return loaded

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(finetune, "load_model_and_tokenizer", capturing_load)
        result, reports = _run(SHORT)
    (model, initial), = built
    return result, reports, model, initial


def test_tiny_model_has_the_qwen35_layer_pattern_and_modules():
    model = build_tiny_model("tiny")
    assert model.config.layer_types == ["linear_attention"] * 3 + ["full_attention"]
    for layer, layer_type in zip(model.model.layers, model.config.layer_types):
        if layer_type == "linear_attention":
            # Gated DeltaNet, under its real module names
            for name in ("in_proj_qkv", "in_proj_z", "in_proj_a", "in_proj_b", "conv1d", "out_proj", "norm"):
                assert hasattr(layer.linear_attn, name), name
            assert not hasattr(layer, "self_attn")
        else:
            for name in ("q_proj", "k_proj", "v_proj", "o_proj", "q_norm", "k_norm"):
                assert hasattr(layer.self_attn, name), name
            assert not hasattr(layer, "linear_attn")
    assert build_tiny_model("tiny-8").config.layer_types == (["linear_attention"] * 3 + ["full_attention"]) * 2
    assert sum(param.numel() for param in model.parameters()) < 1_000_000


def test_model_init_is_seeded_and_sizes_are_validated():
    first, again, other = (build_tiny_model(seed=seed).state_dict() for seed in (0, 0, 1))
    assert all(torch.equal(first[name], again[name]) for name in first)
    assert not all(torch.equal(first[name], other[name]) for name in first)
    with pytest.raises(ValueError, match="tiny-8"):
        build_tiny_model("huge")


def test_character_tokenizer_round_trips_and_has_fixed_ids():
    tokenizer = build_tokenizer()
    text = "7+8=15\n#### 15 ~{}"
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    assert len(ids) == len(text)
    assert tokenizer.decode(ids) == text
    assert (tokenizer.pad_token_id, tokenizer.eos_token_id) == (VOCAB.index("<pad>"), VOCAB.index("<eos>"))
    assert len(tokenizer) == len(VOCAB)


def test_arithmetic_data_is_deterministic_and_labels_only_the_answer():
    examples = make_arithmetic(8, seed=3)
    assert examples == make_arithmetic(8, seed=3) != make_arithmetic(8, seed=4)
    assert make_arithmetic(4, seed=3) == examples[:4]
    for example in examples:
        a, b = map(int, example["question"].rstrip("=").split("+"))
        assert parse_final_answer(example["answer"]) == a + b
    assert parse_final_answer("12\n####") is None

    tokenizer = build_tokenizer()
    batch = encode_for_training(tokenizer, [{"question": "1+2=", "answer": "3\n#### 3"}, examples[0]])
    first_answer = batch["labels"][0][batch["labels"][0] != IGNORE_INDEX]
    assert tokenizer.decode(first_answer) == "3\n#### 3<eos>"
    assert (batch["labels"][:, :4] == IGNORE_INDEX).all()  # the "a+b=" prompt
    padding = batch["attention_mask"] == 0
    assert (batch["labels"][padding] == IGNORE_INDEX).all()
    assert (batch["input_ids"][padding] == tokenizer.pad_token_id).all()


def test_training_learns_reports_and_returns_metrics(trained):
    result, reports, _, _ = trained
    curve = [metrics["train_loss"] for _, metrics in reports if "train_loss" in metrics]
    assert len(curve) == SHORT["max_steps"]
    assert curve[-1] < 0.5 * curve[0]
    assert all("lr" in metrics for _, metrics in reports if "train_loss" in metrics)
    assert reports[-1] == (SHORT["max_steps"], {"eval_loss": result["eval_loss"], "exact_match": result["exact_match"]})

    assert set(result) == {
        "eval_loss", "exact_match", "train_loss", "steps", "train_tokens_per_s", "trainable_params", "lora_modules",
        "load_s", "warm", "peak_mem_mb", "train_peak_mem_mb", "eval_peak_mem_mb", "fast_kernels",
    }
    assert result["steps"] == SHORT["max_steps"] and result["lora_modules"] == 0 and result["warm"] == 0.0
    assert result["peak_mem_mb"] == result["train_peak_mem_mb"] > 0 and result["eval_peak_mem_mb"] > 0
    assert math.isfinite(result["eval_loss"]) and result["eval_loss"] < math.log(len(VOCAB))
    assert 0.0 <= result["exact_match"] <= 1.0
    assert result["train_tokens_per_s"] > 0
    assert result["fast_kernels"] == 0.0  # no fused kernel runs on the CPU


def test_full_fine_tuning_updates_every_parameter(trained):
    result, _, model, initial = trained
    unchanged = [name for name, param in model.named_parameters() if torch.equal(param.detach(), initial[name])]
    assert unchanged == []
    assert result["trainable_params"] == sum(param.numel() for param in model.parameters())


def test_same_seed_gives_identical_metrics_and_another_seed_does_not(trained):
    result, reports, _, _ = trained
    again, reports_again = _run(SHORT)
    timing = {"train_tokens_per_s", "load_s", "peak_mem_mb", "train_peak_mem_mb", "eval_peak_mem_mb"}
    assert {k: v for k, v in again.items() if k not in timing} == {k: v for k, v in result.items() if k not in timing}
    assert reports_again == reports
    other, _ = _run(SHORT, seed=1)
    assert other["eval_loss"] != result["eval_loss"]
    # An explicit seed param takes precedence over the context's.
    assert _run({**SHORT, "seed": 1}, seed=0)[0]["eval_loss"] == other["eval_loss"]


def test_periodic_evaluation_is_reported():
    _, reports = _run({"max_steps": 4, "n_eval": 4, "eval_every": 2})
    assert [step for step, metrics in reports if "eval_loss" in metrics] == [2, 4]


def test_huge_learning_rate_diverges():
    with pytest.raises(Diverged, match="training loss"):
        _run({**SHORT, "learning_rate": 1e4})


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"learning_rat": 1e-3}, "'learning_rat'.*valid params: model, dtype, method, lora_rank"),
        ({"method": "qlora"}, "param 'method': must be one of lora, full; got 'qlora'"),
        ({"batch_size": 2.5}, "param 'batch_size': must be an integer; got 2.5"),
        ({"warmup_ratio": 1.0}, r"param 'warmup_ratio': must be < 1; got 1.0"),
        ({"learning_rate": 0}, r"param 'learning_rate': must be > 0; got 0.0"),
        ({"learning_rate": "fast"}, "param 'learning_rate': must be a finite number; got 'fast'"),
        ({"chat": "yes"}, "param 'chat': must be true or false; got 'yes'"),
        ({"lora_targets": "attention+ffn"}, "param 'lora_targets': unknown preset 'ffn'"),
    ],
)
def test_bad_params_are_rejected_by_name(params, message):
    with pytest.raises(ValueError, match=message):
        _run(params)
