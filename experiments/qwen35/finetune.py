"""Fine-tuning a Qwen3.5 (LoRA or full) on a data set: the wavesweep ``run(params, ctx)``.

Works the same on a tiny model on CPU (tests, the demo) and on ``Qwen/Qwen3.5-0.8B`` ... ``-9B`` on a GPU.
Deterministic: on one device with one thread count, the same params and seed give bit-identical metrics, except the
timings (``train_tokens_per_s``, ``load_s``) and memory figures.
"""

from __future__ import annotations

import contextlib
import functools
import math
import time
from collections.abc import Iterator
from typing import Any

import torch
from transformers import get_scheduler

from orchestrator.context import Diverged, RunContext

from .data import IGNORE_INDEX, encode_for_training, load_examples
from .device import run_device
from .inference import greedy_exact_match
from .lora import apply_lora, count_wrapped, remove_lora, save_adapter
from .loss import answer_loss
from .memory import PeakMemory, synchronize
from .models import INITS, LoadedModel, load_model_and_tokenizer, warm_cache
from .params import Param, resolve_declared
from .precision import Precision
from .tiny import SIZES

PARAMS = {
    "model": Param("tiny", str, "a tiny size name, a local directory or a hub id (Qwen/Qwen3.5-0.8B ...)"),
    "dtype": Param("auto", str, "compute dtype under autocast; auto: bfloat16 on CUDA and Apple GPUs, float32 on CPU. Full "
                   "fine-tuning keeps float32 master weights, LoRA a base in this dtype"),
    "method": Param("lora", str, "lora | full", choices=("lora", "full")),
    "lora_rank": Param(16, int, "LoRA rank r", low=1),
    "lora_alpha": Param(32.0, float, "LoRA alpha (scale alpha / r)", low=0.0, low_open=True),
    "lora_dropout": Param(0.0, float, "dropout on the LoRA input", low=0.0, high=1.0),
    "lora_targets": Param("all", str, "presets joined by '+': attention, deltanet, mlp, all"),
    "dataset": Param("arithmetic", str, "synthetic task, HF datasets id, local .jsonl or directory"),
    "dataset_config": Param(None, str, "HF datasets config (e.g. main for openai/gsm8k)"),
    "train_split": Param("train", str, "split to train on"),
    "eval_split": Param("test", str, "split to evaluate on"),
    "n_train": Param(512, int, "training examples (a seeded sample)", low=1),
    "n_eval": Param(64, int, "evaluation examples", low=1),
    "chat": Param(None, bool, "chat template; default off for tiny models, on otherwise"),
    "enable_thinking": Param(False, bool, "Qwen3.5 thinking block in the chat template"),
    "max_seq_len": Param(512, int, "tokens per training sequence (the answer is cut first)", low=2),
    "learning_rate": Param(None, float, "peak learning rate; default: 3e-3 for tiny models, else 2e-4 with LoRA and "
                           "1e-5 for full fine-tuning", low=0.0, low_open=True),
    "lr_schedule": Param("cosine", str, "cosine | linear | constant, after warmup",
                         choices=("cosine", "linear", "constant")),
    "warmup_ratio": Param(0.1, float, "fraction of max_steps of linear warmup", low=0.0, high=1.0),
    "weight_decay": Param(0.0, float, "AdamW weight decay on matrices", low=0.0),
    "adam_beta1": Param(0.9, float, "AdamW beta1", low=0.0, high=1.0),
    "adam_beta2": Param(0.999, float, "AdamW beta2", low=0.0, high=1.0),
    "max_grad_norm": Param(1.0, float, "gradient clipping norm", low=0.0, low_open=True),
    "batch_size": Param(16, int, "sequences per micro-batch", low=1),
    "grad_accum": Param(1, int, "micro-batches per optimizer step", low=1),
    "max_steps": Param(60, int, "optimizer steps", low=1),
    "gradient_checkpointing": Param(False, bool, "recompute each layer's activations in the backward pass"),
    "time_budget_s": Param(None, float, "stop training after this many seconds (a fixed-time comparison)",
                           low=0.0, low_open=True),
    "eval_every": Param(None, int, "also evaluate every N steps", low=1),
    "seed": Param(None, int, "default: the run's seed"),
    "init": Param("pretrained", str, "pretrained | random: a released size's architecture with random weights, "
                  "nothing downloaded (a dry run of memory and speed)", choices=INITS),
    "save": Param(True, bool, "save the adapter (LoRA) or the model (full) in the run's artifact directory"),
}

# Peak learning rates when the spec sets none. The tiny models learn their task in 60 steps at 3e-3; for released
# sizes, the values fine-tuning recipes for models of this scale use (PEFT's and TRL's LoRA examples: 1e-4 to
# 2e-4; full fine-tuning of 1-10B models: 1e-5), not the tiny model's, which would blow a real one up.
TINY_LEARNING_RATE = 3e-3
LEARNING_RATE = {"lora": 2e-4, "full": 1e-5}

# Fixed, so that runs differing only in their seed differ in initialisation and data order, and every run of a
# study is scored on the same eval questions.
DATA_SEED = 0
EXPLODED_LOSS = 1e4  # far above any loss a working run reaches (ln(vocab) ~ 12.4 at initialisation for Qwen3.5)
CURVE_POINTS = 50  # train-loss reports per run, whatever max_steps is
EVAL_BATCH = 64


def run(params: dict, ctx: RunContext) -> dict[str, float]:
    """Train, evaluate, save; return ``eval_loss``, ``exact_match``, ``train_loss`` and the cost figures.

    Streams ``train_loss`` and ``lr`` about 50 times per run and ``eval_loss`` at evaluations. Raises
    ``Diverged`` when the training loss becomes NaN/inf or exceeds ``EXPLODED_LOSS``.

    Cost figures: ``train_tokens_per_s`` over the optimizer steps after the first (the first carries CUDA and
    kernel start-up: cuBLAS handles, Triton compilation and autotuning), ``train_peak_mem_mb`` over training and
    ``eval_peak_mem_mb`` over evaluation (``peak_mem_mb`` is training's), ``load_s``.
    """
    p = resolve(params, seed=ctx.seed)
    torch.set_num_threads(ctx.num_cpus)
    on = run_device(ctx)
    device = torch.device(on)
    precision = Precision.of(p["dtype"], on, p["method"])
    chat = p["chat"] if p["chat"] is not None else p["model"] not in SIZES

    # Only LoRA leaves the base weights as they were, so only LoRA runs may share a loaded base model.
    reuse = ctx.warm_reuse and p["method"] == "lora"
    started = time.perf_counter()
    cache = warm_cache()
    load = cache.get if reuse else load_model_and_tokenizer
    loaded = load(p["model"], device=on, dtype=precision.weights, seed=p["seed"], init=p["init"])
    load_s = time.perf_counter() - started
    tokenizer = loaded.tokenizer
    train = load_examples(p["dataset"], split=p["train_split"], limit=p["n_train"], seed=DATA_SEED,
                          config=p["dataset_config"])
    evals = load_examples(p["dataset"], split=p["eval_split"], limit=p["n_eval"], seed=DATA_SEED,
                          config=p["dataset_config"])
    encoded = {k: v.to(device) for k, v in encode_for_training(
        tokenizer, train, chat=chat, enable_thinking=p["enable_thinking"], max_seq_len=p["max_seq_len"]).items()}

    model, wrapped = _trainable(loaded, p)
    try:
        metrics = _train_and_evaluate(model, tokenizer, encoded, evals, p, ctx, chat, precision, on)
        if p["save"] and ctx.artifact_dir:
            if p["method"] == "lora":  # the adapter only
                save_adapter(model, ctx.artifact_dir, vl_checkpoint=loaded.info.from_vl_checkpoint)
            else:
                model.save_pretrained(ctx.artifact_dir)  # the whole model
            tokenizer.save_pretrained(ctx.artifact_dir)
    finally:
        if p["gradient_checkpointing"]:
            model.gradient_checkpointing_disable()
        if p["method"] == "lora":
            remove_lora(model)
            if reuse:
                cache.check_unchanged(loaded)  # raises if the base weights moved: never hand on a changed model
    return {
        **metrics,
        "trainable_params": float(sum(t.numel() for t in model.parameters() if t.requires_grad))
        if p["method"] == "full" else float(wrapped["trainable"]),
        "lora_modules": float(wrapped["modules"]),
        "load_s": load_s,
        "warm": bool(reuse and cache.last_hit),
        "fast_kernels": float(loaded.info.fast_kernels),
    }


def resolve(params: dict, *, seed: int) -> dict:
    """``params`` over the declared defaults, checked, with the learning rate defaulted per model and method."""
    p = resolve_declared(params, PARAMS, seed=seed)
    if p["learning_rate"] is None:
        p["learning_rate"] = TINY_LEARNING_RATE if p["model"] in SIZES else LEARNING_RATE[p["method"]]
    return p


def _trainable(loaded: LoadedModel, p: dict) -> tuple[torch.nn.Module, dict[str, int]]:
    if p["method"] == "full":
        model, wrapped = loaded.model, {"trainable": 0, "modules": 0}
    else:
        # PEFT keeps the adapters in float32 over a bfloat16 base (autocast_adapter_dtype): their updates are small.
        model = apply_lora(loaded.model, rank=p["lora_rank"], alpha=p["lora_alpha"], dropout=p["lora_dropout"],
                           targets=p["lora_targets"], seed=p["seed"])
        wrapped = {"trainable": sum(t.numel() for t in model.parameters() if t.requires_grad),
                   "modules": sum(count_wrapped(model).values())}
    if p["gradient_checkpointing"]:
        # Non-reentrant: gradients reach the adapters even though the checkpointed inputs need none.
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    return model, wrapped


def _train_and_evaluate(model, tokenizer, encoded, evals, p, ctx, chat, precision, on: str) -> dict[str, float]:
    if p["method"] == "full":
        torch.manual_seed(p["seed"])  # LoRA seeds in apply_lora; dropout and any sampling draw from here
    optimizer = torch.optim.AdamW(_param_groups(model, p["weight_decay"]), lr=p["learning_rate"],
                                  betas=(p["adam_beta1"], p["adam_beta2"]))
    scheduler = get_scheduler(
        {"constant": "constant_with_warmup"}.get(p["lr_schedule"], p["lr_schedule"]), optimizer,
        num_warmup_steps=math.ceil(p["warmup_ratio"] * p["max_steps"]), num_training_steps=p["max_steps"])
    scaler = precision.grad_scaler()
    batches = _shuffled_batches(len(encoded["input_ids"]), p["batch_size"], p["seed"])
    report_every = max(1, p["max_steps"] // CURVE_POINTS)
    peaks = PeakMemory(on)
    evaluate = functools.partial(eval_loss, model, tokenizer, evals, chat, p["enable_thinking"], precision=precision)

    window: list[float] = []
    train_loss = math.nan
    timed_seconds, timed_tokens, elapsed, steps = 0.0, 0, 0.0, 0
    for step in range(1, p["max_steps"] + 1):
        with peaks.phase("train"):
            model.train()
            synchronize(on)
            t0 = time.perf_counter()
            micro = [_trimmed({name: tensor[next(batches)] for name, tensor in encoded.items()})
                     for _ in range(p["grad_accum"])]
            loss_value = _train_step(model, micro, precision, scaler)
            if not math.isfinite(loss_value) or loss_value > EXPLODED_LOSS:
                raise Diverged(f"training loss {loss_value} at step {step}")
            scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(model.parameters(), p["max_grad_norm"])
            lr = scheduler.get_last_lr()[0]
            scaler.step(optimizer)
            scaler.update()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            synchronize(on)
            seconds = time.perf_counter() - t0
        elapsed += seconds
        steps = step
        if step > 1 or p["max_steps"] == 1:  # the first step is start-up, unless it is the only one
            timed_seconds += seconds
            timed_tokens += sum(int(batch["attention_mask"].sum()) for batch in micro)

        window.append(loss_value)
        out_of_time = p["time_budget_s"] is not None and elapsed >= p["time_budget_s"]
        if step % report_every == 0 or step == p["max_steps"] or out_of_time:
            train_loss = sum(window) / len(window)
            ctx.report(step, train_loss=train_loss, lr=lr)
            window = []
        if p["eval_every"] and step % p["eval_every"] == 0 and step != p["max_steps"] and not out_of_time:
            with peaks.phase("eval"):
                ctx.report(step, eval_loss=evaluate())
        if out_of_time:
            break

    with peaks.phase("eval"):
        metrics = {"eval_loss": evaluate(), "exact_match": score(model, tokenizer, evals, chat, p["enable_thinking"],
                                                                 precision=precision)}
    ctx.report(steps, **metrics)
    return {**metrics, "train_loss": train_loss, "steps": float(steps),
            "train_tokens_per_s": timed_tokens / timed_seconds if timed_seconds > 0 else math.nan,
            "train_peak_mem_mb": peaks.mb["train"], "eval_peak_mem_mb": peaks.mb["eval"],
            "peak_mem_mb": peaks.mb["train"]}


def _train_step(model, micro: list[dict[str, torch.Tensor]], precision: Precision, scaler) -> float:
    """Forward and backward over the micro-batches of one optimizer step; returns the step's mean loss per token.

    Every answer token of the step weighs the same: each micro-batch's summed loss is divided by the step's total
    token count, so ``batch_size: b, grad_accum: k`` computes the gradient of ``batch_size: k*b``. (A mean per
    micro-batch divided by ``k`` would weigh a micro-batch of short answers' tokens more.)
    """
    tokens = sum(int((batch["labels"][:, 1:] != IGNORE_INDEX).sum()) for batch in micro)
    total = 0.0
    for batch in micro:
        with precision.autocast():
            summed, _ = answer_loss(model, batch)
        loss = summed / max(tokens, 1)
        scaler.scale(loss).backward()
        total += loss.item()
    return total


@torch.no_grad()
def eval_loss(model, tokenizer, examples: list[dict[str, str]], chat: bool = False,
              enable_thinking: bool = False, *, precision: Precision | None = None) -> float:
    """Mean cross-entropy per answer token over all of ``examples`` (not a mean of per-batch means).

    Projects answer positions only, a chunk at a time (``loss.answer_loss``): no full-vocabulary logits.
    """
    model.eval()
    total, count = 0.0, 0
    for start in range(0, len(examples), EVAL_BATCH):
        batch = encode_for_training(tokenizer, examples[start:start + EVAL_BATCH], chat=chat,
                                    enable_thinking=enable_thinking)
        with _autocast(precision):
            summed, tokens = answer_loss(model, {k: v.to(model.device) for k, v in batch.items()})
        total += summed.item()
        count += tokens
    return total / count


def _autocast(precision: Precision | None):
    return precision.autocast() if precision is not None else contextlib.nullcontext()


@torch.no_grad()
def score(model, tokenizer, examples: list[dict[str, str]], chat: bool = False,
          enable_thinking: bool = False, *, precision: Precision | None = None) -> float:
    """Exact match of greedy continuations against the references (GSM8K's ``#### N``), as a fraction: the
    inference experiment's greedy decoding (``inference.greedy_exact_match``), so the two agree on one model."""
    model.eval()
    with _autocast(precision):
        return greedy_exact_match(model, tokenizer, examples, chat=chat, enable_thinking=enable_thinking,
                                  batch_size=EVAL_BATCH, device=str(model.device))


def _param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict[str, Any]]:
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
