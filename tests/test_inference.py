"""Decoding sweeps and throughput (experiments/qwen35/inference.py) on the tiny Qwen3.5: scoring, seeding, the
presence penalty, LoRA adapters and full models from fine-tuning runs, warm reuse, and parameter errors."""

from __future__ import annotations

import itertools
import json
import math
import os
from pathlib import Path

import pytest
import torch

from experiments.qwen35 import inference
from experiments.qwen35.data import encode_prompts, exact_match, load_examples
from experiments.qwen35.inference import PresencePenaltyLogitsProcessor, run
from experiments.qwen35.inference_params import resolve_params
from experiments.qwen35.lora import apply_lora
from experiments.qwen35.models import fingerprint, load_model_and_tokenizer, warm_cache
from orchestrator.context import RunContext

BASE_SEED = 5
# 12 questions in batches of 5: the last batch is a short one. Answers of the "arithmetic" task take 9 tokens with EOS.
SMALL = {"n_eval": 12, "batch_size": 5, "seed": BASE_SEED}
NEW_TOKENS = 9
DECODE_METRICS = {"exact_match", "mean_new_tokens", "tokens_per_s", "peak_mem_mb", "load_s", "warm", "fast_kernels"}
TIMINGS = {"tokens_per_s", "peak_mem_mb", "load_s"}


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    yield


@pytest.fixture
def empty_warm_cache():
    warm_cache().clear()
    yield
    warm_cache().clear()


class Run:
    """Runs ``inference.run`` with a context of its own and keeps what the run reported and wrote."""

    def __init__(self, tmp_path: Path, name: str, *, warm_reuse: bool = False):
        self.artifact_dir = tmp_path / name
        self.reports: list[tuple[int, dict[str, float]]] = []
        self.ctx = RunContext(
            study="inference", cell_key=name, seed=0, num_cpus=1, artifact_dir=str(self.artifact_dir),
            warm_reuse=warm_reuse, _sink=lambda step, metrics: self.reports.append((step, metrics)),
        )

    def __call__(self, **params) -> dict[str, float]:
        self.metrics = run(params, self.ctx)
        return self.metrics

    @property
    def records(self) -> list[dict]:
        lines = (self.artifact_dir / inference.PREDICTIONS_FILE).read_text().splitlines()
        return [json.loads(line) for line in lines]

    @property
    def predictions(self) -> list[str]:
        return [record["prediction"] for record in self.records]


def _untimed(metrics: dict[str, float]) -> dict[str, float]:
    return {name: value for name, value in metrics.items() if name not in TIMINGS}


def _greedy_predictions(model: torch.nn.Module, tokenizer, questions: list[str]) -> list[str]:
    """What ``model`` generates greedily for ``questions`` in one left-padded batch, written out independently of
    inference.py: the reference for what a run that loads the same weights must produce."""
    batch = encode_prompts(tokenizer, questions)
    with torch.no_grad():
        output = model.generate(
            **batch, max_new_tokens=NEW_TOKENS, do_sample=False, pad_token_id=tokenizer.pad_token_id,
            eos_token_id=tokenizer.eos_token_id,
        )
    rows = output[:, batch["input_ids"].shape[1]:].tolist()
    # Up to the first EOS: what follows is padding.
    rows = [row[: row.index(tokenizer.eos_token_id)] if tokenizer.eos_token_id in row else row for row in rows]
    return tokenizer.batch_decode(rows, skip_special_tokens=True)


# --- decode ------------------------------------------------------------------------------------------------------


def test_greedy_decode_is_scored_reported_and_deterministic(tmp_path):
    first, second = Run(tmp_path, "first"), Run(tmp_path, "second")
    metrics = first(**SMALL)

    assert set(metrics) == DECODE_METRICS
    assert 0.0 <= metrics["exact_match"] <= 1.0
    assert 1 <= metrics["mean_new_tokens"] <= NEW_TOKENS  # the default budget: the longest answer and EOS
    assert metrics["tokens_per_s"] > 0 and metrics["peak_mem_mb"] > 0 and metrics["warm"] == 0.0
    records = first.records
    questions = [e["question"] for e in load_examples("arithmetic", split="test", limit=12, seed=0)]
    assert [r["question"] for r in records] == questions  # the same questions whatever the run's seed
    assert metrics["exact_match"] == sum(exact_match(r["prediction"], r["reference"]) for r in records) / 12
    assert metrics["mean_new_tokens"] == sum(r["new_tokens"] for r in records) / 12
    assert [step for step, _ in first.reports] == [1, 2, 3]
    assert first.reports[-1][1] == {"exact_match_so_far": metrics["exact_match"]}

    assert _untimed(second(**SMALL)) == _untimed(metrics)
    assert second.predictions == first.predictions


def test_sampling_is_reproducible_by_seed_and_differs_from_greedy(tmp_path):
    greedy = Run(tmp_path, "greedy")
    greedy(**SMALL)
    sampled = {}
    for name, seed in (("a", 1), ("a_again", 1), ("b", 2)):
        sampled[name] = Run(tmp_path, name)
        sampled[name](**{**SMALL, "base_seed": BASE_SEED, "seed": seed, "temperature": 1.0, "top_k": 20, "top_p": 0.9})

    assert sampled["a"].predictions == sampled["a_again"].predictions
    assert _untimed(sampled["a"].metrics) == _untimed(sampled["a_again"].metrics)
    assert sampled["a"].predictions != sampled["b"].predictions
    differing = sum(g != s for g, s in zip(greedy.predictions, sampled["a"].predictions))
    assert differing >= 3


def test_presence_penalty_subtracts_once_per_generated_token():
    prompt_len = 3
    input_ids = torch.tensor([
        [0, 4, 5, 6, 6, 7],  # generated 6, 6, 7: penalised once each; prompt tokens 4 and 5 are not
        [1, 1, 8, 2, 9, 3],  # another row, its own tokens
    ])
    scores = torch.arange(24, dtype=torch.float32).reshape(2, 12)
    scores[0, 7] = -math.inf  # stays -inf

    penalised = PresencePenaltyLogitsProcessor(1.5, prompt_len)(input_ids, scores.clone())

    expected = scores.clone()
    expected[0, [6, 7]] -= 1.5
    expected[1, [2, 3, 9]] -= 1.5
    assert torch.equal(penalised, expected)
    negative = PresencePenaltyLogitsProcessor(-0.5, prompt_len)(input_ids, scores.clone())
    assert negative[1, 9] == scores[1, 9] + 0.5 and negative[1, 8] == scores[1, 8]


def test_presence_penalty_in_generate_sees_each_rows_generated_tokens_only():
    loaded = load_model_and_tokenizer("tiny", seed=BASE_SEED)
    batch = encode_prompts(loaded.tokenizer, ["1+1=", "What is 3+4?", "0+2="])  # left padded to different lengths
    width = batch["input_ids"].shape[1]
    penalty = PresencePenaltyLogitsProcessor(1e4, width)  # large enough to forbid any repeat
    settings = {"max_new_tokens": 16, "do_sample": False, "pad_token_id": 0, "eos_token_id": None}
    with torch.no_grad():
        plain = loaded.model.generate(**batch, **settings)[:, width:]
        penalised = loaded.model.generate(**batch, **settings, logits_processor=[penalty])[:, width:]
    assert any(len(set(row.tolist())) < len(row) for row in plain)  # the model does repeat itself
    assert all(len(set(row.tolist())) == len(row) for row in penalised)


def test_presence_penalty_param_changes_greedy_predictions(tmp_path):
    plain, penalised = Run(tmp_path, "plain"), Run(tmp_path, "penalised")
    plain(**SMALL)
    penalised(**SMALL, presence_penalty=2.0)
    assert plain.predictions != penalised.predictions


# --- adapters ----------------------------------------------------------------------------------------------------


def _perturb(parameters, seed: int, scale: float) -> None:
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in parameters:
            param.add_(scale * torch.randn(param.shape, generator=generator))


def test_lora_adapter_directory_gives_what_the_in_memory_peft_model_does(tmp_path):
    loaded = load_model_and_tokenizer("tiny", seed=BASE_SEED)
    peft_model = apply_lora(loaded.model, rank=4, alpha=8.0, dropout=0.0, targets="all", seed=0)
    # PEFT initialises lora_B to zero, i.e. an adapter that changes nothing: give every adapter weight a value.
    _perturb((param for name, param in peft_model.named_parameters() if "lora_" in name), seed=1, scale=0.3)
    peft_model.save_pretrained(tmp_path / "adapter")
    peft_model.eval()

    base, adapted = Run(tmp_path, "base"), Run(tmp_path, "adapted")
    base(**{**SMALL, "batch_size": 12})
    adapted(**{**SMALL, "batch_size": 12, "adapter": str(tmp_path / "adapter")})

    questions = [record["question"] for record in adapted.records]
    assert adapted.predictions == _greedy_predictions(peft_model, loaded.tokenizer, questions)
    assert sum(a != b for a, b in zip(adapted.predictions, base.predictions)) >= 3


def test_full_model_directory_is_loaded_as_the_model_with_the_base_tokenizer(tmp_path):
    loaded = load_model_and_tokenizer("tiny", seed=BASE_SEED)
    _perturb(loaded.model.parameters(), seed=1, scale=0.1)  # a stand-in for full fine-tuning
    directory = tmp_path / "full"
    loaded.model.save_pretrained(directory)  # no tokenizer: a fine-tuning run need not save one
    files = sorted(os.listdir(directory))

    base, full = Run(tmp_path, "base"), Run(tmp_path, "full_run")
    base(**{**SMALL, "batch_size": 12})
    metrics = full(**{**SMALL, "batch_size": 12, "adapter": str(directory)})

    questions = [record["question"] for record in full.records]
    assert full.predictions == _greedy_predictions(loaded.model, loaded.tokenizer, questions)
    assert sum(a != b for a, b in zip(full.predictions, base.predictions)) >= 3
    assert metrics["warm"] == 0.0
    assert sorted(os.listdir(directory)) == files  # the artifacts are read, never written


@pytest.mark.usefixtures("empty_warm_cache")
def test_warm_reuse_gives_the_cold_results_and_leaves_the_base_model_unchanged(tmp_path):
    loaded = load_model_and_tokenizer("tiny", seed=BASE_SEED)
    peft_model = apply_lora(loaded.model, rank=4, alpha=8.0, dropout=0.0, targets="attention+deltanet", seed=0)
    _perturb((param for name, param in peft_model.named_parameters() if "lora_" in name), seed=2, scale=0.3)
    peft_model.save_pretrained(tmp_path / "adapter")
    # Sampling, so that the runs agree only if each seeds its RNG after getting the model (a cold load reseeds it).
    params = {**SMALL, "adapter": str(tmp_path / "adapter"), "temperature": 0.8}

    cold = Run(tmp_path, "cold", warm_reuse=False)
    first, second = Run(tmp_path, "first", warm_reuse=True), Run(tmp_path, "second", warm_reuse=True)
    cold(**params)
    first(**params)
    second(**params)

    assert (cold.metrics["warm"], first.metrics["warm"], second.metrics["warm"]) == (0.0, 0.0, 1.0)
    untimed = {name: value for name, value in _untimed(cold.metrics).items() if name != "warm"}
    for warm_run in (first, second):
        assert {name: warm_run.metrics[name] for name in untimed} == untimed
        assert warm_run.predictions == cold.predictions
    held = warm_cache().get("tiny", seed=BASE_SEED)
    warm_cache().check_unchanged(held)  # the runs unloaded their adapters: nothing added, nothing changed
    assert fingerprint(held.model) == fingerprint(load_model_and_tokenizer("tiny", seed=BASE_SEED).model)


# --- throughput --------------------------------------------------------------------------------------------------


def test_throughput_times_fixed_length_batches(tmp_path, monkeypatch):
    shapes = []
    generate = inference._generate

    def recording(*args, **kwargs):
        new_tokens, seconds = generate(*args, **kwargs)
        shapes.append(tuple(new_tokens.shape))
        return new_tokens, seconds

    monkeypatch.setattr(inference, "_generate", recording)
    metrics = Run(tmp_path, "throughput")(
        mode="throughput", batch_size=3.0, prompt_len=6, max_new_tokens=5, n_batches=4, seed=BASE_SEED
    )

    assert set(metrics) == {
        "tokens_per_s", "latency_p50_s", "latency_p95_s", "peak_mem_mb", "load_s", "warm", "fast_kernels"
    }
    assert 0 < metrics["latency_p50_s"] <= metrics["latency_p95_s"]
    assert metrics["tokens_per_s"] > 0 and metrics["peak_mem_mb"] > 0
    assert shapes == [(3, 5)] * 5  # one warm-up batch, then four; always max_new_tokens, EOS or not


# --- params ------------------------------------------------------------------------------------------------------


def test_numbers_may_come_as_floats_or_strings():
    p = resolve_params({"batch_size": 16.0, "n_eval": "8", "top_k": 5.0, "temperature": "1e-1"}, 3, "cpu")
    assert (p["batch_size"], p["n_eval"], p["top_k"], p["temperature"]) == (16, 8, 5, 0.1)
    assert (p["seed"], p["base_seed"], p["chat"], p["max_new_tokens"]) == (3, 3, False, None)
    assert resolve_params({"model": "Qwen/Qwen3.5-0.8B"}, 0, "cpu")["chat"] is True
    assert resolve_params({"mode": "throughput"}, 0, "cpu")["max_new_tokens"] == 64


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"temprature": 1.0}, r"unknown param\(s\) 'temprature'; valid params: mode, model, dtype, seed, base_seed"),
        ({"mode": "serve"}, r"param 'mode': must be one of decode, throughput; got 'serve'"),
        ({"mode": "throughput", "temperature": 0.5}, r"param\(s\) 'temperature' do not apply to mode 'throughput'"),
        ({"prompt_len": 8}, r"param\(s\) 'prompt_len' do not apply to mode 'decode'"),
        ({"batch_size": 0}, r"param 'batch_size': must be >= 1; got 0"),
        ({"n_eval": 2.5}, r"param 'n_eval': must be an integer; got 2.5"),
        ({"max_new_tokens": "many"}, r"param 'max_new_tokens': must be a finite number; got 'many'"),
        ({"seed": True}, r"param 'seed': must be a finite number; got True"),
        ({"temperature": -0.1}, r"param 'temperature': must be >= 0; got -0.1"),
        ({"top_p": 0}, r"param 'top_p': must be > 0; got 0.0"),
        ({"top_k": -1}, r"param 'top_k': must be >= 0; got -1"),
        ({"presence_penalty": 2.5}, r"param 'presence_penalty': must be <= 2; got 2.5"),
        ({"chat": "yes"}, r"param 'chat': must be true or false; got 'yes'"),
        ({"dtype": "int8"}, r"param 'dtype' must be one of auto, .*; got 'int8'"),
        ({"model": ""}, r"param 'model': must be a non-empty string; got ''"),
        ({"enable_thinking": True}, r"param 'max_new_tokens' must be given with enable_thinking"),
    ],
)
def test_bad_params_are_named(params, message):
    with pytest.raises(ValueError, match=message):
        resolve_params(params, 0, "cpu")


def test_bad_adapters_fail_clearly(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"param 'adapter': .*missing' is not a directory"):
        resolve_params({"adapter": str(tmp_path / "missing")}, 0, "cpu")
    with pytest.raises(FileNotFoundError, match=r"'store:ft:best' is not a directory \(store: references are"):
        resolve_params({"adapter": "store:ft:best"}, 0, "cpu")
    (tmp_path / "adapter").mkdir()
    (tmp_path / "adapter" / "train_log.txt").write_text("")
    with pytest.raises(ValueError, match=r"neither a PEFT adapter \(adapter_config.json\) nor a saved model "
                                         r"\(config.json\); it holds: train_log.txt"):
        resolve_params({"adapter": str(tmp_path / "adapter")}, 0, "cpu")


def test_fine_tuning_scores_what_a_decode_run_of_its_model_scores(tmp_path):
    """One greedy decoding for both: a fine-tuning run's exact_match is what inference gives the model it saved."""
    from experiments.qwen35 import finetune

    trained = tmp_path / "trained"
    ctx = RunContext(study="t", cell_key="ft", seed=BASE_SEED, num_cpus=1, artifact_dir=str(trained))
    tuned = finetune.run({"model": "tiny", "method": "full", "max_steps": 150, "n_eval": 32}, ctx)
    decoded = Run(tmp_path, "decode")(model="tiny", base_seed=BASE_SEED, adapter=str(trained), n_eval=32,
                                      batch_size=finetune.EVAL_BATCH, split="test", temperature=0.0)
    assert tuned["exact_match"] > 0.2  # not 0 against 0: the model answers some questions
    assert decoded["exact_match"] == tuned["exact_match"]


def test_decode_throughput_leaves_out_the_first_batch(tmp_path, monkeypatch):
    """A fake clock: every read advances 1 s, and the first generate call takes 1000 s more (start-up)."""
    now = itertools.count()
    offset = {"s": 0.0}
    monkeypatch.setattr(inference.time, "perf_counter", lambda: next(now) + offset["s"])
    generate, calls = inference._generate, []

    def slow_first(*args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            offset["s"] += 1000.0
        return generate(*args, **kwargs)

    monkeypatch.setattr(inference, "_generate", slow_first)
    run_ = Run(tmp_path, "timed")
    metrics = run_(**{**SMALL, "n_eval": 12, "batch_size": 4})  # 3 batches
    assert len(calls) == 3
    later = sum(record["new_tokens"] for record in run_.records[4:])
    # Each generate reads the clock twice, 1 s apart: the two later batches took 2 s.
    assert metrics["tokens_per_s"] == pytest.approx(later / 2)
