"""The literature's scaling rules for pairs of fine-tuning hyperparameters: the best ``a`` moves like ``b**slope``.

Data, in one place: the rules, the factor names each role goes by, the pairs they govern, and how a rule's new
coordinates are written. :mod:`~orchestrator.analysis.hints` picks the candidate rules for a pair of factors and
:mod:`~orchestrator.analysis.valley` tests them against the runs.
"""

from __future__ import annotations

from dataclasses import dataclass

_REFS = {
    "malladi": "Malladi et al. 2022, 'On the SDEs and Scaling Rules for Adaptive Gradient Algorithms' (NeurIPS)",
    "goyal": "Goyal et al. 2017, 'Accurate, Large Minibatch SGD: Training ImageNet in 1 Hour'",
    "adamw": "Loshchilov & Hutter 2019, 'Decoupled Weight Decay Regularization' (ICLR)",
    "wang": "Wang & Aitchison 2024, 'How to set AdamW's weight decay as you scale model and dataset size'",
    "lora": "Hu et al. 2021, 'LoRA: Low-Rank Adaptation of Large Language Models'",
    "rslora": "Kalajdzievski 2023, 'A Rank Stabilization Scaling Factor for Fine-Tuning with LoRA'",
}


@dataclass(frozen=True)
class ScalingRule:
    """One literature rule: the best ``a`` moves like ``b**slope`` (``a`` and ``b`` are roles)."""

    name: str
    a: str
    b: str
    slope: float
    label: str  # what the new coordinate is, in words
    rationale: str

    def coords(self, a: str, b: str) -> tuple[str, str]:
        """The coordinates to sweep instead of factors ``a`` and ``b``."""
        return formula(a, b, self.slope), b

    def suggestion(self, a: str, b: str) -> str:
        u, v = self.coords(a, b)
        if self.name == "effective_decay":
            return f"sweep {v} and {u} ({self.label}) instead of {v} and {a} (log scale both)"
        return f"sweep {u} ({self.label}) and {v} instead of {a} and {b} (log scale both)"


SCALING_RULES: dict[str, ScalingRule] = {r.name: r for r in (
    ScalingRule("sqrt_scaling", "lr", "batch", 0.5, "the learning rate per sqrt(batch)",
         "With Adam-type optimizers the learning rate that keeps the training dynamics the same grows like the "
         f"square root of the batch size ({_REFS['malladi']}). Swept as lr / sqrt(batch), the best value stops "
         "moving with the batch size, so the lr x batch interaction shrinks."),
    ScalingRule("linear_scaling", "lr", "batch", 1.0, "the learning rate per example",
         "With SGD the best learning rate grows in proportion to the batch size, up to a critical batch size (the "
         f"linear scaling rule, {_REFS['goyal']}). Swept as lr / batch, the best value stops moving with the batch "
         "size, so the lr x batch interaction shrinks."),
    ScalingRule("effective_decay", "wd", "lr", -1.0, "the effective decay per step",
         f"AdamW's decoupled weight decay multiplies the weights by (1 - lr * wd) every step ({_REFS['adamw']}), so "
         "the decay that acts is lr * wd and its timescale 1 / (lr * wd) is what a good setting holds fixed "
         f"({_REFS['wang']}). Swept on its own, wd's effect depends on lr: that is the interaction. Sweep lr and "
         "lr * wd instead."),
    ScalingRule("lora_scale", "alpha", "rank", 1.0, "the adapter scale",
         f"Standard LoRA multiplies the adapter's update BA by alpha / rank ({_REFS['lora']}), so what alpha does "
         "depends on the rank it is paired with. Swept as the scale alpha / rank, the best value stops moving with "
         "the rank if the scale is what matters."),
    ScalingRule("rslora_scale", "alpha", "rank", 0.5, "the rank-stabilised adapter scale",
         f"rsLoRA ({_REFS['rslora']}) shows that the adapter's multiplier has to shrink like 1 / sqrt(rank), not "
         "1 / rank, for learning to stay stable as the rank grows: alpha / sqrt(rank) is the quantity whose best "
         "value does not move with the rank (it is rsLoRA's multiplier; with standard LoRA's alpha / rank the best "
         "alpha grows like sqrt(rank))."),
)}

# Factor names per role, compared case-insensitively with "-" read as "_".
ROLE_NAMES: dict[str, tuple[str, ...]] = {
    "lr": ("learning_rate", "lr", "learning-rate", "peak_lr", "base_lr", "max_lr"),
    "batch": ("batch_size", "batch", "bs", "global_batch_size", "per_device_train_batch_size", "train_batch_size",
              "effective_batch_size"),
    "wd": ("weight_decay", "wd"),
    "rank": ("lora_rank", "rank", "r", "lora_r"),
    "alpha": ("lora_alpha", "alpha"),
    "optimizer": ("optimizer", "optim", "optimizer_name", "opt"),
    "rslora": ("use_rslora", "rslora"),
}

# Recognised pairs: (a role, b role) and the candidate rules, the expected one first (see _candidates).
PAIRS: tuple[tuple[str, str], ...] = (("lr", "batch"), ("wd", "lr"), ("alpha", "rank"))


def formula(a: str, b: str, slope: float) -> str:
    """``a`` per ``b**slope``, written as a researcher would sweep it."""
    if slope == 0:
        return a
    if slope == 1:
        return f"{a} / {b}"
    if slope == 0.5:
        return f"{a} / sqrt({b})"
    if slope == -1:
        return f"{b} * {a}"
    if slope < 0:
        return f"{a} * {b}^{-slope:g}"
    return f"{a} / {b}^{slope:g}"
