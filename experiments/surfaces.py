"""Named response surfaces with a known optimum and known interaction structure, for tests and benchmarks.

A search-quality benchmark needs ground truth: how good the best reachable run is (``optimum``, to measure
regret) and which factors and pairs of factors truly matter (``active_mains``, ``interactions``, to score the
effects a strategy reports by recall and false discovery). Each :class:`~experiments.surface.Surface` (``surface.py``:
what a surface is and what its truth means) carries that truth next to its formula; this module holds the surfaces
themselves, by name in ``SURFACES``, and ``experiments.synthetic`` serves them to the orchestrator as
``fixed: {named_surface: <name>}``.

Every surface here has its optimum on integer values of its integer factors, so the continuous and the integer
optimum agree.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping

from experiments.surface import Box, Surface


def _pairs(*pairs: tuple[str, str]) -> frozenset[frozenset[str]]:
    return frozenset(frozenset(p) for p in pairs)


def _friedman1() -> Surface:
    factors = {f"x{i}": Box(0.0, 1.0) for i in range(1, 11)}

    def formula(p: Mapping[str, float]) -> float:
        return (10.0 * math.sin(math.pi * p["x1"] * p["x2"]) + 20.0 * (p["x3"] - 0.5) ** 2
                + 10.0 * p["x4"] + 5.0 * p["x5"])

    return Surface(
        name="friedman1",
        description=(
            "Friedman (1991, 'Multivariate adaptive regression splines', Ann. Statist. 19(1)) benchmark #1, also "
            "sklearn.datasets.make_friedman1: y = 10 sin(pi x1 x2) + 20 (x3 - 0.5)^2 + 10 x4 + 5 x5, ten factors "
            "x1..x10 in [0, 1], x6..x10 inert; noise N(0, 1) as in the original. Maximized here: the optimum 30 is "
            "reached on the curve x1 x2 = 1/2 with x3 at 0 or 1 and x4 = x5 = 1 (argopt: x1 = 1, x2 = 0.5, x3 = 0). "
            "The only true pair is {x1, x2}. Its interaction is not bilinear: on the corners of the unit square "
            "sin(pi x1 x2) is 0, 0, 0, 0 (sin pi = 0), so a two-level design at the box's ends sees no x1:x2 effect "
            "at all, and inside the box the coupling is mostly linear x quadratic. x3 is a pure quadratic, also "
            "invisible to a two-level design on [0, 1] (equal at both ends)."
        ),
        factors=factors,
        goal="maximize",
        noise_sd=1.0,
        active_mains=frozenset({"x1", "x2", "x3", "x4", "x5"}),
        interactions=_pairs(("x1", "x2")),
        optimum=30.0,
        argopt={"x1": 1.0, "x2": 0.5, "x3": 0.0, "x4": 1.0, "x5": 1.0, **{f"x{i}": 0.5 for i in range(6, 11)}},
        formula=formula,
    )


def _screening() -> Surface:
    factors = {name: Box(-1.0, 1.0) for name in "abcdefg"}

    def formula(p: Mapping[str, float]) -> float:
        return 10.0 + 3.0 * p["a"] - 2.0 * p["b"] + 1.5 * p["c"] + 2.0 * p["a"] * p["b"] - 1.5 * p["c"] * p["d"]

    # The formula is multilinear, so its extremes over the box are at corners: the best of the 2^7 is the optimum.
    corners = [dict(zip(factors, signs)) for signs in itertools.product((-1.0, 1.0), repeat=len(factors))]
    best = min(corners, key=formula)
    argopt = {**best, "e": 0.0, "f": 0.0, "g": 0.0}
    return Surface(
        name="screening",
        description=(
            "A sparse screening problem in 7 factors a..g on [-1, 1] (coded units): y = 10 + 3a - 2b + 1.5c + 2ab "
            "- 1.5cd, e, f, g inert, noise N(0, 0.5^2), minimized. Active mains a, b, c, d; true pairs {a, b} and "
            "{c, d}. d has no main effect at all: averaged over c it is inert, and only the c:d interaction shows it "
            "matters, a trap for a strategy that fixes factors whose main effect is not significant. The formula is "
            "multilinear, so the optimum is at a corner; brute force over the 2^7 corners gives 0 at a = -1, b = +1, "
            "c = -1, d = -1, unique up to the inert e, f, g (the a, b block is -7 only there; the c, d block -3 only "
            "there)."
        ),
        factors=factors,
        goal="minimize",
        noise_sd=0.5,
        active_mains=frozenset("abcd"),
        interactions=_pairs(("a", "b"), ("c", "d")),
        optimum=formula(best),
        argopt=argopt,
        formula=formula,
    )


# llm_finetune constants: the optimum is where every term below is 0 at once (see the description).
_LR_REF, _BATCH_REF = 3e-4, 32.0  # best learning rate at batch 32; it scales like sqrt(batch)
_DECAY_REF = 3e-5  # best effective AdamW decay lr * wd (so wd = 0.1 at lr = 3e-4)
_RANK_REF, _SCALE_REF = 16.0, 2.0  # rank where capacity and overfitting balance; best alpha / rank
_WARMUP_REF = 0.06
_LOSS_FLOOR = 1.2


def _llm_finetune() -> Surface:
    factors = {
        "learning_rate": Box(1e-5, 1e-2, "log"),
        "batch_size": Box(8, 256, "log", integer=True),
        "weight_decay": Box(0.0, 0.2),
        "warmup_ratio": Box(0.0, 0.2),
        "lora_rank": Box(4, 64, "log", integer=True),
        "lora_alpha": Box(4, 128, "log", integer=True),
        "dropout": Box(0.0, 0.2),
    }

    def formula(p: Mapping[str, float]) -> float:
        lr, batch, rank = p["learning_rate"], p["batch_size"], p["lora_rank"]
        valley = 0.06 * (math.log(lr / _LR_REF) - 0.5 * math.log(batch / _BATCH_REF)) ** 2
        batch_term = 0.03 * math.log(batch / _BATCH_REF) ** 2
        decay = 0.03 * math.log((1.0 + lr * p["weight_decay"] / _DECAY_REF) / 2.0) ** 2
        warmup = 0.03 * ((p["warmup_ratio"] - _WARMUP_REF) / _WARMUP_REF) ** 2
        capacity = 0.05 * (_RANK_REF / rank + math.log(rank / _RANK_REF) - 1.0)
        scale = 0.05 * math.log(p["lora_alpha"] / rank / _SCALE_REF) ** 2
        return _LOSS_FLOOR + valley + batch_term + decay + warmup + capacity + scale

    return Surface(
        name="llm_finetune",
        description=(
            "A LoRA fine-tuning eval loss with the structure the literature reports, minimized; noise N(0, 0.02^2), "
            "range 1.2 to about 3.5 over the box. loss = 1.2 "
            "+ 0.06 (ln(lr / 3e-4) - 0.5 ln(batch / 32))^2 [the best learning rate grows like sqrt(batch_size) "
            "(Malladi et al. 2022, square-root scaling for Adam): a valley along ln lr - 0.5 ln batch] "
            "+ 0.03 ln(batch / 32)^2 [small batches are noisy, large ones generalize worse] "
            "+ 0.03 ln((1 + lr wd / 3e-5) / 2)^2 [AdamW's decoupled decay shrinks weights by lr * wd per step "
            "(Loshchilov & Hutter 2019): what matters is the product, best at 3e-5] "
            "+ 0.03 ((warmup_ratio - 0.06) / 0.06)^2 [a little warmup helps, more wastes steps] "
            "+ 0.05 (16 / rank + ln(rank / 16) - 1) [capacity against overfitting, best at rank 16] "
            "+ 0.05 ln(alpha / rank / 2)^2 [LoRA scales its update by alpha / rank (Hu et al. 2021; we use that, "
            "not rsLoRA's alpha / sqrt(rank)); best at alpha = 2 rank]; dropout is inert. Factors: learning_rate "
            "log [1e-5, 1e-2], batch_size log integer [8, 256], weight_decay [0, 0.2], warmup_ratio [0, 0.2], "
            "lora_rank log integer [4, 64], lora_alpha log integer [4, 128], dropout [0, 0.2]. True pairs: "
            "{learning_rate, batch_size}, {learning_rate, weight_decay}, {lora_rank, lora_alpha}; nothing else is "
            "coupled (the alpha / rank scale deliberately does not multiply the learning rate, to keep the truth to "
            "these three). Optimum 1.2, where every term is 0 at once: batch 32, lr 3e-4, wd 0.1, warmup 0.06, "
            "rank 16, alpha 32 (any dropout); scipy L-BFGS-B from 32 starts over the box finds nothing lower "
            "(tests/test_surfaces.py). The optimum sits in the box's interior on integer batch, rank and alpha."
        ),
        factors=factors,
        goal="minimize",
        noise_sd=0.02,
        active_mains=frozenset(set(factors) - {"dropout"}),
        interactions=_pairs(("learning_rate", "batch_size"), ("learning_rate", "weight_decay"),
                            ("lora_rank", "lora_alpha")),
        optimum=_LOSS_FLOOR,
        argopt={"learning_rate": _LR_REF, "batch_size": 32, "weight_decay": _DECAY_REF / _LR_REF,
                "warmup_ratio": _WARMUP_REF, "lora_rank": 16, "lora_alpha": 32, "dropout": 0.1},
        formula=formula,
    )


# hartmann6 constants, as Dixon & Szego (1978) give them (also Surjanovic & Bingham's Virtual Library of Simulation
# Experiments, https://www.sfu.ca/~ssurjano/hart6.html): f(x) = -sum_i alpha_i exp(-sum_j A_ij (x_j - P_ij)^2).
_HARTMANN6_ALPHA = (1.0, 1.2, 3.0, 3.2)
_HARTMANN6_A = (
    (10.0, 3.0, 17.0, 3.5, 1.7, 8.0),
    (0.05, 10.0, 17.0, 0.1, 8.0, 14.0),
    (3.0, 3.5, 1.7, 10.0, 17.0, 8.0),
    (17.0, 8.0, 0.05, 10.0, 0.1, 14.0),
)
_HARTMANN6_P = tuple(tuple(v * 1e-4 for v in row) for row in (
    (1312, 1696, 5569, 124, 8283, 5886),
    (2329, 4135, 8307, 3736, 1004, 9991),
    (2348, 1451, 3522, 2883, 3047, 6650),
    (4047, 8828, 8732, 5743, 1091, 381),
))
# The global minimizer as the literature states it (6 significant digits; f there is -3.322368011391339).
_HARTMANN6_ARGOPT = (0.20169, 0.150011, 0.476874, 0.275332, 0.311652, 0.6573)


def _hartmann6() -> Surface:
    names = [f"x{j}" for j in range(1, 7)]
    factors = {name: Box(0.0, 1.0) for name in names}

    def formula(p: Mapping[str, float]) -> float:
        x = [p[name] for name in names]
        return -sum(alpha * math.exp(-sum(a * (xj - pj) ** 2 for a, xj, pj in zip(a_row, x, p_row)))
                    for alpha, a_row, p_row in zip(_HARTMANN6_ALPHA, _HARTMANN6_A, _HARTMANN6_P))

    argopt = dict(zip(names, _HARTMANN6_ARGOPT))
    return Surface(
        name="hartmann6",
        description=(
            "The 6-D Hartmann function of the Dixon & Szego (1978) global-optimization test set ('The global "
            "optimisation problem: an introduction', in Towards Global Optimisation 2, North-Holland; the family is "
            "Hartman 1973, Naval Res. Logist. Q. 20(3)), the standard Bayesian-optimization benchmark, on its usual "
            "box [0, 1]^6, minimized: f(x) = -sum_{i=1..4} alpha_i exp(-sum_{j=1..6} A_ij (x_j - P_ij)^2) with "
            "alpha = (1.0, 1.2, 3.0, 3.2), A = [[10, 3, 17, 3.5, 1.7, 8], [0.05, 10, 17, 0.1, 8, 14], "
            "[3, 3.5, 1.7, 10, 17, 8], [17, 8, 0.05, 10, 0.1, 14]], P = 1e-4 [[1312, 1696, 5569, 124, 8283, 5886], "
            "[2329, 4135, 8307, 3736, 1004, 9991], [2348, 1451, 3522, 2883, 3047, 6650], "
            "[4047, 8828, 8732, 5743, 1091, 381]] (constants as in Surjanovic & Bingham, Virtual Library of "
            "Simulation Experiments, sfu.ca/~ssurjano/hart6.html). Global minimum -3.32237 at x = (0.20169, "
            "0.150011, 0.476874, 0.275332, 0.311652, 0.6573), in the interior of the box; there are other local "
            "minima (one is -3.2032 at about (0.405, 0.882, 0.846, 0.574, 0.139, 0.039)). Not tuned on by "
            "this project: taken as the literature gives it. Noise N(0, 0.05^2), about 1.5% of the range "
            "(values run from about -3.32 to 0). Every factor is active and every one of the 15 pairs interacts "
            "(each Gaussian bump is a non-separable function of all six coordinates, so every mixed partial is "
            "non-zero almost everywhere): recall is informative here, false discovery trivially 0."
        ),
        factors=factors,
        goal="minimize",
        noise_sd=0.05,
        active_mains=frozenset(names),
        interactions=frozenset(frozenset(p) for p in itertools.combinations(names, 2)),
        optimum=formula(argopt),
        argopt=argopt,
        formula=formula,
    )


# rosenbrock constants: DiceOptim's standardized 4-D Rosenbrock (Picheny, Wagner & Ginsbourger 2013), the mean and
# standard deviation of the raw function over its box [-5, 10]^4, so the surface has mean 0 and SD 1 over [0, 1]^4.
_ROSENBROCK_MEAN, _ROSENBROCK_SD = 382658.057227524, 375264.858362295


def _rosenbrock() -> Surface:
    names = [f"x{j}" for j in range(1, 7)]
    factors = {name: Box(0.0, 1.0) for name in names}

    def formula(p: Mapping[str, float]) -> float:
        xbar = [15.0 * p[name] - 5.0 for name in names[:4]]
        raw = sum(100.0 * (xbar[i + 1] - xbar[i] ** 2) ** 2 + (1.0 - xbar[i]) ** 2 for i in range(3))
        return (raw - _ROSENBROCK_MEAN) / _ROSENBROCK_SD

    argopt = {**{name: 0.4 for name in names[:4]}, "x5": 0.5, "x6": 0.5}
    return Surface(
        name="rosenbrock",
        description=(
            "Rosenbrock's curved valley (Rosenbrock 1960, 'An automatic method for finding the greatest or least "
            "value of a function', Comput. J. 3(3)) in the standardized 4-D form of Picheny, Wagner & Ginsbourger "
            "(2013, 'A benchmark of kriging-based infill criteria for noisy optimization', Struct. Multidisc. Optim. "
            "48; R package DiceOptim, rosenbrock4): with xbar = 15 x - 5 (x in [0, 1] maps to [-5, 10]), "
            "f = (sum_{i=1..3} [100 (xbar_{i+1} - xbar_i^2)^2 + (1 - xbar_i)^2] - 382658.057227524) / "
            "375264.858362295, the raw function's mean and SD over the box, so f has mean 0 and SD 1 there. Two "
            "inert factors x5, x6 in [0, 1] are appended (six factors, as a fine-tuning sweep has knobs that do not "
            "matter). Minimized; noise N(0, 0.01^2), 1% of the surface's SD. It stands for the curved valleys of "
            "fine-tuning (the best learning rate moving with batch size or warmup) without being one of our own "
            "surfaces: the team does not tune on it. The floor of the valley (xbar_{i+1} = xbar_i^2) is flat: it "
            "lies within about 1e-5 of the optimum along its whole length, far below the noise, so what the regret "
            "measures is how close a method gets to the thin valley, not how far along it it crawls. Active mains "
            "x1..x4; true pairs {x1, x2}, {x2, x3}, {x3, x4} (the mixed partial of 100 (xbar_{i+1} - xbar_i^2)^2 is "
            "-400 xbar_i); x1:x3, x1:x4, x2:x4 and every pair with x5 or x6 are false. Global minimum "
            "-382658.057227524 / 375264.858362295 = -1.019701 at x1..x4 = 0.4 (xbar = 1), interior, any x5, x6 "
            "(argopt: 0.5); the only other minimum of the 4-D Rosenbrock, near xbar = (-0.776, 0.613, 0.382, 0.146) "
            "(raw value 3.70), is 1e-5 worse after standardization."
        ),
        factors=factors,
        goal="minimize",
        noise_sd=0.01,
        active_mains=frozenset(names[:4]),
        interactions=_pairs(("x1", "x2"), ("x2", "x3"), ("x3", "x4")),
        optimum=formula(argopt),
        argopt=argopt,
        formula=formula,
    )


def _bowl() -> Surface:
    def formula(p: Mapping[str, float]) -> float:
        return (p["x"] - 1.5) ** 2 + p["y"]

    return Surface(
        name="bowl",
        description=(
            "The small surface of tests/test_waves.py: y = (x - 1.5)^2 + y_factor over x in [0, 2], y in [0, 1], "
            "z in [0, 1] inert; minimized, noise N(0, 0.02^2). The optimum 0 is at x = 1.5 (interior, so a "
            "two-level design sees only a main effect of x; center points reveal the curvature), y = 0. "
            "No interactions."
        ),
        factors={"x": Box(0.0, 2.0), "y": Box(0.0, 1.0), "z": Box(0.0, 1.0)},
        goal="minimize",
        noise_sd=0.02,
        active_mains=frozenset({"x", "y"}),
        interactions=frozenset(),
        optimum=0.0,
        argopt={"x": 1.5, "y": 0.0, "z": 0.5},
        formula=formula,
    )


SURFACES: dict[str, Surface] = {
    s.name: s for s in (_friedman1(), _screening(), _llm_finetune(), _hartmann6(), _rosenbrock(), _bowl())
}


def get_surface(name: str) -> Surface:
    try:
        return SURFACES[name]
    except KeyError:
        raise ValueError(f"unknown surface {name!r}; known surfaces: {', '.join(sorted(SURFACES))}") from None
