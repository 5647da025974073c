"""Full fine-tuning of a tiny Qwen3.5 on the synthetic arithmetic task: the wavesweep ``run(params, ctx)``.

Deterministic on CPU: with the same thread count, the same params and seed give bit-identical metrics and curves
(``train_tokens_per_s``, a timing, aside).
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from transformers import PreTrainedTokenizerFast, Qwen3_5ForCausalLM, get_cosine_schedule_with_warmup

from orchestrator.context import Diverged, RunContext

from .data import IGNORE_INDEX, encode_for_training, make_arithmetic, parse_final_answer
from .tiny import build_tiny_model, build_tokenizer, fast_kernels_available

DEFAULTS: dict[str, object] = {
    "model": "tiny",
    "task": "arithmetic",
    "learning_rate": 3e-3,
    "batch_size": 16,
    "warmup_ratio": 0.1,
    "weight_decay": 0.0,
    "max_steps": 60,
    "seed": None,  # None: the run's ctx.seed
    "n_train": 512,
    "n_eval": 64,
    "eval_every": None,  # None: evaluate once, after the last step
}
# Task name -> largest operand. "arithmetic" (25 distinct problems) is partly learnt in 60 steps of 16 examples;
# "arithmetic-hard" (100 problems) is learnt only in a few hundred (300 steps: 100%), for studies of longer runs.
TASKS = {"arithmetic": 4, "arithmetic-hard": 9}
INT_PARAMS = ("batch_size", "max_steps", "seed", "n_train", "n_eval", "eval_every")

# Fixed, so that runs differing only in their seed differ in initialisation and data order, and every run of a
# study is scored on the same eval questions.
TRAIN_DATA_SEED, EVAL_DATA_SEED = 0, 1
MAX_GRAD_NORM = 1.0  # the usual fine-tuning clip (transformers.Trainer's default)
EXPLODED_LOSS = 1e4  # far above any loss a working run reaches (ln(vocab) ~ 4.6 at initialisation)
CURVE_POINTS = 50  # about this many train-loss reports per run, whatever max_steps is (every step for short runs)
EVAL_BATCH = 64


def run(params: dict, ctx: RunContext) -> dict[str, float]:
    """Train, then return ``eval_loss``, ``exact_match``, ``train_loss`` (mean over the last report interval),
    ``train_tokens_per_s``, ``trainable_params`` and ``fast_kernels`` (1.0 when the fused DeltaNet kernels import).

    ``params`` override ``DEFAULTS``; a name not in ``DEFAULTS`` raises ``ValueError``.

    Streams ``train_loss`` and ``lr`` every few steps, and ``eval_loss`` every ``eval_every`` steps and at the end.
    Raises ``Diverged`` when the training loss becomes NaN/inf or exceeds ``EXPLODED_LOSS``.
    """
    p = _resolve(params, ctx.seed)
    torch.set_num_threads(ctx.num_cpus)
    device = torch.device(ctx.device)

    tokenizer = build_tokenizer()
    max_operand = TASKS[p["task"]]
    train_examples = make_arithmetic(p["n_train"], TRAIN_DATA_SEED, max_operand)
    train = {name: tensor.to(device) for name, tensor in encode_for_training(tokenizer, train_examples).items()}
    eval_examples = make_arithmetic(p["n_eval"], EVAL_DATA_SEED, max_operand)

    model = build_tiny_model(p["model"], seed=p["seed"], vocab_size=len(tokenizer)).to(device)
    optimizer = torch.optim.AdamW(_param_groups(model, p["weight_decay"]), lr=p["learning_rate"])
    scheduler = get_cosine_schedule_with_warmup(
        optimizer, num_warmup_steps=math.ceil(p["warmup_ratio"] * p["max_steps"]), num_training_steps=p["max_steps"]
    )
    batches = _shuffled_batches(p["n_train"], p["batch_size"], p["seed"])
    report_every = max(1, p["max_steps"] // CURVE_POINTS)

    model.train()
    window: list[float] = []
    train_seconds, train_tokens = 0.0, 0
    for step in range(1, p["max_steps"] + 1):
        started = time.perf_counter()
        rows = next(batches)
        batch = _trimmed({name: tensor[rows] for name, tensor in train.items()})
        loss = model(**batch).loss
        loss_value = loss.item()
        if not math.isfinite(loss_value) or loss_value > EXPLODED_LOSS:
            raise Diverged(f"training loss {loss_value} at step {step}")
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), MAX_GRAD_NORM)
        lr = scheduler.get_last_lr()[0]
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        train_seconds += time.perf_counter() - started
        train_tokens += int(batch["attention_mask"].sum())

        window.append(loss_value)
        if step % report_every == 0 or step == p["max_steps"]:
            train_loss = sum(window) / len(window)
            ctx.report(step, train_loss=train_loss, lr=lr)
            window = []
        if p["eval_every"] and step % p["eval_every"] == 0 and step != p["max_steps"]:
            ctx.report(step, eval_loss=eval_loss(model, tokenizer, eval_examples))
            model.train()

    metrics = {
        "eval_loss": eval_loss(model, tokenizer, eval_examples),
        "exact_match": exact_match(model, tokenizer, eval_examples),
    }
    ctx.report(p["max_steps"], **metrics)
    return {
        **metrics,
        "train_loss": train_loss,
        "train_tokens_per_s": train_tokens / train_seconds,
        "trainable_params": float(sum(param.numel() for param in model.parameters() if param.requires_grad)),
        "fast_kernels": float(fast_kernels_available()),
    }


@torch.no_grad()
def eval_loss(model: Qwen3_5ForCausalLM, tokenizer: PreTrainedTokenizerFast, examples: list[dict[str, str]]) -> float:
    """Mean cross-entropy per answer token over all of ``examples`` (not a mean of per-batch means)."""
    model.eval()
    device = model.device
    total, count = 0.0, 0
    for start in range(0, len(examples), EVAL_BATCH):
        batch = encode_for_training(tokenizer, examples[start : start + EVAL_BATCH])
        logits = model(
            input_ids=batch["input_ids"].to(device), attention_mask=batch["attention_mask"].to(device)
        ).logits
        # Position t predicts token t+1.
        labels = batch["labels"][:, 1:].to(device)
        total += F.cross_entropy(
            logits[:, :-1].flatten(0, 1).float(), labels.flatten(), ignore_index=IGNORE_INDEX, reduction="sum"
        ).item()
        count += int((labels != IGNORE_INDEX).sum())
    return total / count


@torch.no_grad()
def exact_match(model: Qwen3_5ForCausalLM, tokenizer: PreTrainedTokenizerFast, examples: list[dict[str, str]]) -> float:
    """Fraction of ``examples`` whose greedy continuation has the reference's number after ``####``."""
    model.eval()
    # Room for the longest reference answer and its EOS; generation stops earlier at EOS.
    max_new_tokens = 1 + max(len(tokenizer(e["answer"], add_special_tokens=False)["input_ids"]) for e in examples)
    correct = 0
    for start in range(0, len(examples), EVAL_BATCH):
        chunk = examples[start : start + EVAL_BATCH]
        # Left padding so that every prompt ends where generation starts.
        prompts = tokenizer(
            [e["question"] for e in chunk], add_special_tokens=False, padding=True, padding_side="left",
            return_tensors="pt",
        ).to(model.device)
        generated = model.generate(
            **prompts,
            max_new_tokens=max_new_tokens,
            do_sample=False,
            pad_token_id=tokenizer.pad_token_id,
            eos_token_id=tokenizer.eos_token_id,
        )
        completions = tokenizer.batch_decode(generated[:, prompts["input_ids"].shape[1] :], skip_special_tokens=True)
        correct += sum(
            parse_final_answer(completion) == parse_final_answer(e["answer"])
            for completion, e in zip(completions, chunk)
        )
    return correct / len(examples)


def _resolve(params: dict, ctx_seed: int) -> dict:
    """``params`` over ``DEFAULTS``, validated, with numbers coerced: YAML and sweeps hand over ``16.0`` for 16 and
    ``"1e-3"`` for 0.001 (PyYAML reads exponents without a dot as strings)."""
    unknown = sorted(set(params) - set(DEFAULTS))
    if unknown:
        raise ValueError(f"unknown param(s) {', '.join(map(repr, unknown))}; valid params: {', '.join(DEFAULTS)}")
    p = {**DEFAULTS, **params}
    if p["seed"] is None:
        p["seed"] = ctx_seed
    for name in INT_PARAMS:
        if p[name] is not None:
            p[name] = _number(name, p[name], integer=True)
    for name in ("learning_rate", "warmup_ratio", "weight_decay"):
        p[name] = _number(name, p[name], integer=False)
    if p["task"] not in TASKS:
        raise ValueError(f"unknown task {p['task']!r}; valid tasks: {', '.join(TASKS)}")
    if not 0.0 <= p["warmup_ratio"] < 1.0:
        raise ValueError(f"param 'warmup_ratio' must be in [0, 1), got {p['warmup_ratio']}")
    if not p["learning_rate"] > 0:
        raise ValueError(f"param 'learning_rate' must be > 0, got {p['learning_rate']}")
    if not p["weight_decay"] >= 0:
        raise ValueError(f"param 'weight_decay' must be >= 0, got {p['weight_decay']}")
    for name in ("batch_size", "max_steps", "n_train", "n_eval", "eval_every"):
        if p[name] is not None and p[name] < 1:
            raise ValueError(f"param {name!r} must be >= 1, got {p[name]}")
    return p


def _number(name: str, value: object, integer: bool) -> float | int:
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise ValueError(f"param {name!r} must be a number, got {value!r}") from None
    if isinstance(value, bool) or not math.isfinite(number):
        raise ValueError(f"param {name!r} must be a finite number, got {value!r}")
    if not integer:
        return number
    # A fractional value is an error in the spec, not something to round silently.
    if not number.is_integer():
        raise ValueError(f"param {name!r} must be an integer, got {value!r}")
    return int(number)


def _param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    # Decay matrices only: pulling norm gains, or DeltaNet's A_log and dt_bias (per-head decay rates), towards zero
    # would change what the layer computes rather than regularise it.
    params = [param for param in model.parameters() if param.requires_grad]
    return [
        {"params": [param for param in params if param.ndim >= 2], "weight_decay": weight_decay},
        {"params": [param for param in params if param.ndim < 2], "weight_decay": 0.0},
    ]


def _shuffled_batches(n: int, batch_size: int, seed: int) -> Iterator[torch.Tensor]:
    """Endless full batches of example indices: epochs of seeded permutations, concatenated."""
    generator = torch.Generator().manual_seed(seed)
    pending = torch.empty(0, dtype=torch.long)
    while True:
        while len(pending) < batch_size:
            pending = torch.cat([pending, torch.randperm(n, generator=generator)])
        yield pending[:batch_size]
        pending = pending[batch_size:]


def _trimmed(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    # Right padding: columns past the batch's longest sequence are padding for every row, so drop them.
    width = int(batch["attention_mask"].sum(dim=1).max())
    return {name: tensor[:, :width] for name, tensor in batch.items()}
