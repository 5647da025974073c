"""Fine-tuning done right at real sizes, checked on the CPU: mixed precision, the answer-token loss, gradient
accumulation weighted by tokens, timing without start-up, gradient checkpointing."""

from __future__ import annotations

import itertools
import warnings

import pytest
import torch

from experiments.qwen35 import finetune
from experiments.qwen35.data import IGNORE_INDEX, encode_for_training, load_examples
from experiments.qwen35.lora import apply_lora
from experiments.qwen35.loss import answer_loss
from experiments.qwen35.models import load_model_and_tokenizer
from experiments.qwen35.precision import Precision
from orchestrator.context import RunContext


def _ctx(seed: int = 0) -> RunContext:
    return RunContext(study="t", cell_key="c", seed=seed, num_cpus=1)


def _eval_drop(dtype: str) -> float:
    """How much 8 full fine-tuning steps of `small` at lr 1e-5 lower the eval loss, in ``dtype`` compute."""
    precision = Precision.of(dtype, "cpu", "full")
    loaded = load_model_and_tokenizer("small", seed=0, dtype=precision.weights)
    evals = load_examples("arithmetic", split="test", limit=64, seed=finetune.DATA_SEED)
    before = finetune.eval_loss(loaded.model, loaded.tokenizer, evals, precision=precision)
    after = finetune.run({"model": "small", "method": "full", "learning_rate": 1e-5, "max_steps": 8, "dtype": dtype,
                          "save": False}, _ctx())["eval_loss"]
    return before - after


def test_bfloat16_full_fine_tuning_learns_as_float32_does():
    # Stepping bfloat16 weights directly, the drop was 0.018 against float32's 0.116: updates rounded away.
    fp32, bf16 = _eval_drop("float32"), _eval_drop("bfloat16")
    assert fp32 > 0.05
    assert abs(bf16 - fp32) <= 0.15 * fp32, (bf16, fp32)


def test_precision_keeps_master_weights_for_full_and_a_low_precision_base_for_lora():
    full, lora = Precision.of("bfloat16", "cpu", "full"), Precision.of("bfloat16", "cpu", "lora")
    assert (full.weights, full.compute) == (torch.float32, torch.bfloat16)
    assert (lora.weights, lora.compute) == (torch.bfloat16, torch.bfloat16)
    assert Precision.of("auto", "cpu", "full").compute == torch.float32
    assert not full.grad_scaler().is_enabled() and Precision.of("fp16", "cpu", "full").grad_scaler().is_enabled()
    # LoRA: a bf16 base, float32 adapters.
    base = load_model_and_tokenizer("tiny", seed=0, dtype=lora.weights).model
    adapted = apply_lora(base, rank=4, alpha=8.0, dropout=0.0, targets="all", seed=0)
    assert {p.dtype for p in adapted.parameters() if p.requires_grad} == {torch.float32}
    assert {p.dtype for p in adapted.parameters() if not p.requires_grad} == {torch.bfloat16}


def _examples() -> list[dict[str, str]]:
    # Answers of very different lengths: a micro-batch of short answers has few tokens, one of long answers many.
    short = [{"question": f"{i}+1=", "answer": f"{i + 1}"} for i in range(4)]
    long = [{"question": f"{i}*9=", "answer": f"{i} times 9 is {9 * i}\n#### {9 * i}" * 2} for i in range(4)]
    return short + long


def _gradients(model, micro) -> dict[str, torch.Tensor]:
    model.zero_grad(set_to_none=True)
    finetune._train_step(model, micro, Precision.of("float32", "cpu", "full"), torch.amp.GradScaler("cpu",
                                                                                                     enabled=False))
    return {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}


def test_gradient_accumulation_weighs_every_answer_token_the_same():
    loaded = load_model_and_tokenizer("tiny", seed=0)
    model = loaded.model.train()
    batch = encode_for_training(loaded.tokenizer, _examples())
    micro = [finetune._trimmed({k: v[rows] for k, v in batch.items()}) for rows in (slice(0, 4), slice(4, 8))]
    whole = _gradients(model, [batch])
    accumulated = _gradients(model, micro)
    assert whole.keys() == accumulated.keys()
    for name in whole:
        torch.testing.assert_close(accumulated[name], whole[name], rtol=1e-4, atol=1e-6)

    # The rule it replaces, each micro-batch's mean over its own tokens divided by the micro-batch count, gives a
    # different gradient on these data: the assertion above can fail.
    model.zero_grad(set_to_none=True)
    for part in micro:
        summed, tokens = answer_loss(model, part)
        (summed / tokens / len(micro)).backward()
    name = "model.embed_tokens.weight"
    assert not torch.allclose(model.get_parameter(name).grad, whole[name], rtol=1e-2, atol=1e-4)


def test_answer_loss_is_transformers_loss_without_the_full_logits():
    loaded = load_model_and_tokenizer("tiny", seed=0)
    batch = encode_for_training(loaded.tokenizer, _examples())
    with torch.no_grad():
        summed, tokens = answer_loss(loaded.model, batch)
        reference = loaded.model(**batch).loss
    assert tokens == int((batch["labels"][:, 1:] != IGNORE_INDEX).sum())
    torch.testing.assert_close(summed / tokens, reference, rtol=1e-5, atol=1e-6)


def test_throughput_leaves_out_the_first_step(monkeypatch):
    """A fake clock: every read advances 1 s, and the first optimizer step takes 1000 s more (start-up)."""
    now = itertools.count()
    offset = {"s": 0.0}
    monkeypatch.setattr(finetune.time, "perf_counter", lambda: next(now) + offset["s"])
    step = finetune._train_step
    calls = []

    def slow_first(*args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            offset["s"] += 1000.0
        return step(*args, **kwargs)

    synced = []
    monkeypatch.setattr(finetune, "_train_step", slow_first)
    monkeypatch.setattr(finetune, "synchronize", lambda device: synced.append(device))
    result = finetune.run({"model": "tiny", "method": "full", "max_steps": 4, "n_eval": 4, "batch_size": 4,
                           "save": False}, _ctx())
    # A step is 4 sequences of 13 to 15 tokens ("a+b=" "s\n#### s" EOS) and reads the clock twice, 1 s apart: the
    # 3 timed steps give ~56 tokens/s. With the first step, ~0.2.
    assert 40 < result["train_tokens_per_s"] < 80
    assert len(synced) >= 2 * 4  # before and after every step


def test_gradient_checkpointing_gives_the_same_run():
    params = {"model": "tiny", "method": "lora", "max_steps": 5, "n_eval": 8, "save": False}
    plain = finetune.run(params, _ctx())
    checkpointed = finetune.run({**params, "gradient_checkpointing": True}, _ctx())
    assert checkpointed["train_loss"] == pytest.approx(plain["train_loss"], rel=1e-5)
    assert checkpointed["eval_loss"] == pytest.approx(plain["eval_loss"], rel=1e-5)


def test_learning_rate_defaults_per_model_and_method(tmp_path):
    assert finetune.resolve({"model": "tiny"}, seed=0)["learning_rate"] == 3e-3
    assert finetune.resolve({"model": "Qwen/Qwen3.5-4B"}, seed=0)["learning_rate"] == 2e-4
    assert finetune.resolve({"model": "Qwen/Qwen3.5-4B", "method": "full"}, seed=0)["learning_rate"] == 1e-5
    assert finetune.resolve({"model": str(tmp_path), "learning_rate": 0.01}, seed=0)["learning_rate"] == 0.01


class _Backend:
    def __init__(self, available: bool):
        self.available = available

    def is_available(self) -> bool:
        return self.available


@pytest.mark.parametrize(("cuda", "mps", "expected"), [(True, False, "cuda"), (False, True, "mps"),
                                                       (False, False, "cpu")])
def test_the_device_follows_what_pytorch_sees(monkeypatch, cuda, mps, expected):
    """Selection logic only: this machine has neither GPU, so the CUDA and MPS paths themselves are not run here."""
    from experiments.qwen35 import device

    monkeypatch.setattr(device.torch.cuda, "is_available", lambda: cuda)
    monkeypatch.setattr(device.torch.backends, "mps", _Backend(mps))
    device._warn_unusable.cache_clear()
    granted = RunContext(study="t", cell_key="c", seed=0, gpu_ids=(0,))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert device.run_device(granted) == expected
        assert device.run_device(granted) == expected
        assert device.run_device(_ctx()) == "cpu"  # no GPU granted: the CPU, silently
    messages = [str(w.message) for w in caught]
    if expected == "cpu":
        assert len(messages) == 1 and "Ray granted this run GPU 0, but PyTorch sees neither" in messages[0]
    else:
        assert messages == []
    device._warn_unusable.cache_clear()


def test_a_granted_gpu_that_pytorch_cannot_use_runs_on_the_cpu(monkeypatch):
    """The demo with --gpus 1 on a machine without CUDA: every run failed in a CUDA call; now it trains on the CPU."""
    from experiments.qwen35 import device

    monkeypatch.setattr(device.torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(device.torch.backends, "mps", _Backend(False))
    device._warn_unusable.cache_clear()
    granted = RunContext(study="t", cell_key="c", seed=0, num_cpus=1, gpu_ids=(0,))
    with pytest.warns(RuntimeWarning, match="computes on the CPU"):
        result = finetune.run({"model": "tiny", "max_steps": 2, "n_eval": 4, "save": False}, granted)
    assert result["steps"] == 2
    device._warn_unusable.cache_clear()


def test_auto_dtype_per_device():
    from experiments.qwen35.models import resolve_dtype

    assert [resolve_dtype("auto", d) for d in ("cuda", "mps", "cpu")] == [torch.bfloat16, torch.bfloat16,
                                                                         torch.float32]
