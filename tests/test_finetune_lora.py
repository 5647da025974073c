"""LoRA fine-tuning runs of the tiny Qwen3.5: what is wrapped and trained, saved adapters, warm reuse."""

from __future__ import annotations

import os

import pytest

from experiments.qwen35 import finetune
from experiments.qwen35.models import fingerprint, warm_cache
from orchestrator.context import RunContext

LORA = {"method": "lora", "learning_rate": 1e-2, "max_steps": 12, "n_train": 64, "n_eval": 16, "lora_rank": 4}


def run(params: dict, *, warm_reuse: bool = True, artifact_dir: str = "", seed: int = 0) -> dict[str, float]:
    ctx = RunContext(study="t", cell_key="c", seed=seed, num_cpus=1, artifact_dir=artifact_dir, warm_reuse=warm_reuse)
    return finetune.run(params, ctx)


@pytest.fixture(autouse=True)
def fresh_cache():
    warm_cache().clear()
    yield
    warm_cache().clear()


def test_deltanet_targets_wrap_every_linear_attention_projection_and_train_only_adapters():
    result = run({**LORA, "lora_targets": "deltanet"}, warm_reuse=False)
    # tiny: 3 Gated DeltaNet layers x (in_proj_qkv, in_proj_z, in_proj_a, in_proj_b, out_proj)
    assert result["lora_modules"] == 15
    assert 0 < result["trainable_params"] < 180_000 / 5  # adapters only, a fraction of the model
    assert result["exact_match"] >= 0 and result["eval_loss"] > 0


def test_a_lora_run_leaves_the_cached_base_model_bit_identical():
    first = run(LORA)
    loaded = warm_cache().get("tiny", device="cpu", dtype="auto", seed=0)
    assert warm_cache().last_hit  # the run handed the base model back, checked unchanged
    before = fingerprint(loaded.model)
    warm_cache().check_unchanged(loaded)
    second = run(LORA)
    assert second["warm"] == 1.0 and first["warm"] == 0.0
    assert fingerprint(warm_cache().get("tiny", device="cpu", dtype="auto", seed=0).model) == before


def test_warm_reuse_gives_the_metrics_of_a_cold_run():
    timing = {"train_tokens_per_s", "load_s", "peak_mem_mb", "train_peak_mem_mb", "eval_peak_mem_mb", "warm"}
    cold = run(LORA, warm_reuse=False)
    run({**LORA, "learning_rate": 3e-3}, warm_reuse=True)  # another run primes the cache with the base model
    warm = run(LORA, warm_reuse=True)
    assert warm["warm"] == 1.0
    assert {k: v for k, v in warm.items() if k not in timing} == {k: v for k, v in cold.items() if k not in timing}


def test_the_adapter_is_saved_in_the_artifact_directory(tmp_path):
    run(LORA, artifact_dir=str(tmp_path / "a"))
    files = set(os.listdir(tmp_path / "a"))
    assert {"adapter_config.json", "adapter_model.safetensors"} <= files
    assert "tokenizer.json" in files or "tokenizer_config.json" in files
    run({**LORA, "method": "full"}, artifact_dir=str(tmp_path / "f"))
    assert {"config.json", "model.safetensors"} <= set(os.listdir(tmp_path / "f"))


def test_time_budget_stops_training_early():
    result = run({**LORA, "max_steps": 10_000, "time_budget_s": 1.0})
    assert 1 <= result["steps"] < 10_000


def test_gradient_accumulation_is_close_to_one_big_batch():
    # Two micro-batches of 4 see the same 8 examples as one batch of 8; the losses differ only in how tokens are
    # weighted (a mean per micro-batch), which for answers of near-equal length is a small difference.
    common = {**LORA, "max_steps": 5}
    big = run({**common, "batch_size": 8, "grad_accum": 1}, warm_reuse=False)
    accumulated = run({**common, "batch_size": 4, "grad_accum": 2}, warm_reuse=False)
    small = run({**common, "batch_size": 4, "grad_accum": 1}, warm_reuse=False)
    assert accumulated["eval_loss"] == pytest.approx(big["eval_loss"], rel=1e-2)
    assert abs(accumulated["eval_loss"] - big["eval_loss"]) < abs(small["eval_loss"] - big["eval_loss"])
