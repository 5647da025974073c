"""Reparametrisation hints: interactions that the literature explains by a change of coordinates.

Some interactions between hyperparameters are not a property of the problem but of the coordinates they were swept
in. The best learning rate of Adam grows like sqrt(batch size), so a grid over (lr, batch) shows an lr x batch
interaction that a grid over (lr / sqrt(batch), batch) does not. :func:`reparam_hints` finds such pairs among the
factors of a fit, says which coordinates to sweep next time and checks the claim on the runs.

Pairs and rules (``a`` is the factor whose best value moves with ``b``; ``s`` the rule's slope
d(log a*)/d(log b)):

- learning rate x batch size: s = 1/2 for Adam-type optimizers (Malladi et al. 2022), s = 1 for SGD (Goyal et al.
  2017). The optimizer comes from a factor or fixed param named ``optimizer``/``optim``; unknown means Adam.
- weight decay x learning rate: AdamW shrinks the weights by lr * wd per step (Loshchilov & Hutter 2019), so the
  best wd falls like 1/lr: s = -1, new coordinate lr * wd.
- LoRA alpha x rank: the adapter's multiplier is alpha / rank (Hu et al. 2021): s = 1; rsLoRA's alpha / sqrt(rank)
  (Kalajdzievski 2023): s = 1/2. Which one is expected first depends on a ``use_rslora`` factor or fixed param.

When a hint is given: only for a recognised pair whose interaction is in the fit (a two-way term ``a:b``, or the
linear x quadratic ``a:b^2`` / ``a^2:b``) and is significant or carries at least ``min_share`` of the variance beyond
what noise alone would give its columns (omega squared on the ANOVA's sequential sums of squares: (SS - df sigma^2) /
(SS_total + sigma^2); the raw share is also reported). A pair whose ``a:b`` column is not estimable (aliased) gets
a hint that says it cannot be judged.

The check on the data (runs given, 3+ levels of both factors): a quadratic response surface in (x, y) = (log a,
log b), centred, is fitted by OLS with the other factors' main effects (and quadratics) as nuisance columns. With the
Hessian H of the surface, the optimum of a at fixed b moves along the valley x*(y) with slope
s_hat = -H_ab / H_aa. Its interval is Fieller's (exact for a ratio of normal estimates; it is unbounded when the
curvature H_aa is not clearly positive). A rule's slope s is consistent with the data when it lies in that
interval, which is the same as the test that the interaction vanishes in the rule's coordinates u = x - s y,
v = y: with J = d(x, y)/d(u, v), the off-diagonal of J^T H J is H_uv = H_aa s + H_ab.

How much the interaction shrinks is reported as |H_uv / H_uu|, the off-diagonal relative to the curvature along the
swept coordinate: how far the best u moves per unit of log b. In the original coordinates that is |s_hat|; in the
rule's it is |s_hat - s|. (The scale-free |H_uv| / sqrt(H_uu H_vv) is not used: on a valley, where the curvature
along the valley is about zero, it stays near 1 for any slope that is not exactly right.)
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Literal

import numpy as np
import pandas as pd

from orchestrator.analysis.factors import FactorInfo, factor_infos
from orchestrator.analysis.results import EffectsResult
from orchestrator.analysis.scaling_rules import PAIRS, ROLE_NAMES, SCALING_RULES, ScalingRule, formula
from orchestrator.analysis.valley import check_valley as _check

Status = Literal["supported", "approximate", "contradicted", "inconclusive", "unchecked", "not_judged"]


@dataclass(frozen=True)
class Hint:
    """A reparametrisation hint for one pair of factors.

    ``pair`` = (a, b): a's best value moves with b. ``rule`` names the rule the suggestion uses (a key of
    :data:`SCALING_RULES`, or ``"fitted_slope"`` when the data contradict every rule), ``slope`` its d(log a*)/d(log b),
    ``coordinates`` the two factors to sweep instead, as formulas in the user's factor names. ``status``:

    - ``supported``: the data check ran and the rule's slope is inside the valley slope's interval;
    - ``approximate``: every rule's slope is outside it, but one still removes at least :data:`APPROXIMATE` of the
      interaction (the suggestion uses it; a note gives the numbers);
    - ``contradicted``: no rule is inside the interval or removes that much. The suggestion then uses the fitted
      slope (``rule="fitted_slope"``), or, when the interval holds 0 (the best a does not move with b), says that
      no reparametrisation removes this interaction (``rule="none"``, no slope or coordinates);
    - ``inconclusive``: the check ran, but the interval is unbounded (the curvature along a is not clear);
    - ``unchecked``: by name only (no runs, fewer than 3 levels, levels <= 0, no valley ...): ``evidence``
      says why;
    - ``not_judged``: the interaction is not estimable from these runs (aliased).

    ``interaction`` holds the fit's terms of the pair (estimate, adjusted p, significant) and their share of the
    variance; ``evidence`` the data check's numbers or ``reason``. Every number comes from the fit or the runs.
    """

    pair: tuple[str, str]
    roles: tuple[str, str]
    rule: str
    slope: float | None
    coordinates: tuple[str, str] | None
    suggestion: str
    rationale: str
    status: Status
    interaction: dict[str, Any]
    evidence: dict[str, Any]
    notes: tuple[str, ...] = field(default_factory=tuple)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (tuples become lists, NaN and infinities None)."""
        return _json(asdict(self))

    def describe(self) -> str:
        """A few lines for a terminal: the suggestion, the evidence in one line, the notes."""
        a, b = self.pair
        lines = [f"{a} x {b} [{self.status}]: {self.suggestion}"]
        inter = self.interaction
        if inter.get("terms"):
            listed = ", ".join(f"{t['term']} {t['estimate']:+.3g} (p adj. {_p(t['p_adjusted'])})"
                               for t in inter["terms"])
            lines.append(f"  interaction in the fit: {listed}; {inter['percent']:.1f}% of the variance "
                         f"({inter['percent_beyond_noise']:.1f}% beyond noise)")
        lines.append(f"  check: {self.evidence['summary']}")
        lines.append(f"  why: {self.rationale}")
        lines += [f"  note: {note}" for note in self.notes]
        return "\n".join(lines)


def reparam_hints(
    fit: EffectsResult,
    factors: Mapping[str, Any],
    df: pd.DataFrame | None = None,
    *,
    names: Mapping[str, str | None] | None = None,
    fixed: Mapping[str, Any] | None = None,
    goal: Literal["minimize", "maximize"] = "minimize",
    min_share: float = 0.05,
    diverged_value: float | None = None,
) -> list[Hint]:
    """Hints for the recognised pairs whose interaction ``fit`` found (see the module docstring).

    ``factors`` are the factors of the fit (FactorInfo or spec Factors); ``df`` the runs it was fitted on (without
    it the hints are by name only). ``names`` maps a role (``lr``, ``batch``, ``wd``, ``rank``, ``alpha``,
    ``optimizer``, ``rslora``) to a factor or fixed-param name, overriding recognition by name; None switches a
    role off. ``fixed`` are the study's fixed params, where the optimizer and ``use_rslora`` may be set. ``goal``
    is the response's: the valley is of the minimum, or the maximum. ``diverged_value`` as in
    :func:`orchestrator.analysis.fit_effects`, so the check uses the same runs as the fit.
    """
    if goal not in ("minimize", "maximize"):
        raise ValueError(f"goal must be 'minimize' or 'maximize'; got {goal!r}")
    infos = factor_infos(factors)
    fixed = dict(fixed or {})
    roles, role_notes = _roles(infos, fixed, names or {})
    hints = []
    for a_role, b_role in PAIRS:
        a, b = roles.get(a_role), roles.get(b_role)
        if a is None or b is None or a not in infos or b not in infos or a == b:
            continue
        hint = _pair_hint(fit, infos, df, a, b, a_role, b_role, roles, fixed, goal, min_share, diverged_value)
        if hint is not None:
            notes = [n for r, n in role_notes.items() if r in (a_role, b_role)]
            hints.append(replace(hint, notes=(*notes, *hint.notes)))
    return hints


# --- roles -------------------------------------------------------------------------------------------------------


def _norm(name: str) -> str:
    return name.strip().lower().replace("-", "_")


def _roles(infos: Mapping[str, FactorInfo], fixed: Mapping[str, Any],
           names: Mapping[str, str | None]) -> tuple[dict[str, str], dict[str, str]]:
    """Role -> factor (or fixed param) name, and a note per role where the choice was ambiguous."""
    unknown = set(names) - set(ROLE_NAMES)
    if unknown:
        raise ValueError(f"names: unknown role(s) {sorted(unknown)}; roles are {list(ROLE_NAMES)}")
    known = list(infos) + [k for k in fixed if k not in infos]
    roles: dict[str, str] = {}
    notes: dict[str, str] = {}
    for role, aliases in ROLE_NAMES.items():
        if role in names:
            chosen = names[role]
            if chosen is None:
                continue
            if chosen not in known:
                raise ValueError(f"names: {role} -> {chosen!r}, which is neither a factor nor a fixed param; "
                                 f"factors: {list(infos)}")
            roles[role] = chosen
            continue
        wanted = {_norm(n) for n in aliases}
        # Numeric roles only match factors; optimizer and rslora may also be fixed params.
        pool = known if role in ("optimizer", "rslora") else list(infos)
        matches = [n for n in pool if _norm(n) in wanted]
        if matches:
            roles[role] = matches[0]
            if len(matches) > 1:
                notes[role] = (f"{matches} all look like the {role}; {matches[0]!r} was taken "
                               f"(pass names={{{role!r}: ...}} to choose)")
    return roles, notes


def _value_kind(value: Any) -> str | None:
    """'adaptive', 'sgd' or None (unknown) for an optimizer name."""
    text = str(getattr(value, "value", value)).lower()
    if "sgd" in text or "momentum" in text:
        return "sgd"
    if any(k in text for k in ("adam", "rmsprop", "adafactor", "lion", "lamb", "lars")):
        return "adaptive"
    return None


def _truthy(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in ("1", "true", "yes", "on")
    return bool(value)


def _setting(name: str, infos: Mapping[str, FactorInfo], fixed: Mapping[str, Any]) -> list[Any]:
    """The values a role's factor takes (its levels), or the fixed param's value."""
    if name in infos:
        return list(infos[name].levels)
    return [fixed[name]]


def _candidates(a_role: str, roles: Mapping[str, str], infos: Mapping[str, FactorInfo],
                fixed: Mapping[str, Any]) -> tuple[list[ScalingRule], list[str]]:
    """The pair's rules, the one expected in this study first, and notes on how it was chosen."""
    notes: list[str] = []
    if a_role == "lr":
        opt = roles.get("optimizer")
        if opt is None:
            notes.append("optimizer unknown (no optimizer factor or fixed param): Adam-type assumed, the usual "
                         "choice for fine-tuning LLMs, so sqrt scaling is expected; with SGD it is linear")
            return [SCALING_RULES["sqrt_scaling"], SCALING_RULES["linear_scaling"]], notes
        values = _setting(opt, infos, fixed)
        kinds = {_value_kind(v) for v in values}
        if kinds == {"sgd"}:
            notes.append(f"{opt} = {values[0] if len(values) == 1 else values}: SGD, so linear scaling is expected")
            return [SCALING_RULES["linear_scaling"], SCALING_RULES["sqrt_scaling"]], notes
        if kinds == {"adaptive"}:
            return [SCALING_RULES["sqrt_scaling"], SCALING_RULES["linear_scaling"]], notes
        if len(values) > 1 and "sgd" in kinds:
            notes.append(f"{opt} is a factor with levels {values}: the rule differs by optimizer (sqrt for Adam-type, "
                         "linear for SGD) and the check pools them; fit each optimizer's runs apart to check each")
        else:
            notes.append(f"{opt} = {values if len(values) > 1 else values[0]} is not a known optimizer: Adam-type "
                         "assumed (sqrt scaling); with SGD it is linear")
        return [SCALING_RULES["sqrt_scaling"], SCALING_RULES["linear_scaling"]], notes
    if a_role == "wd":
        opt = roles.get("optimizer")
        if opt is not None and {_value_kind(v) for v in _setting(opt, infos, fixed)} == {"sgd"}:
            notes.append("with SGD, weight decay is also applied as lr * wd per step, so the rule is the same")
        return [SCALING_RULES["effective_decay"]], notes
    flag = roles.get("rslora")
    if flag is not None and flag in infos:
        notes.append(f"{flag} is a factor: the adapter scale differs by its level (alpha / rank, or alpha / "
                     "sqrt(rank) with rsLoRA) and the check pools them")
        return [SCALING_RULES["lora_scale"], SCALING_RULES["rslora_scale"]], notes
    if flag is not None and _truthy(fixed.get(flag)):
        return [SCALING_RULES["rslora_scale"], SCALING_RULES["lora_scale"]], notes
    return [SCALING_RULES["lora_scale"], SCALING_RULES["rslora_scale"]], notes


# --- the interaction in the fit -------------------------------------------------------------------------------------


def _factors_of(column: str) -> tuple[tuple[str, ...], bool]:
    """The factors of a model column name, and whether it has a quadratic part: "lr:bs^2" -> (lr, bs), True."""
    parts = column.split(":")
    return tuple(p.split("[")[0].removesuffix("^2") for p in parts), any(p.endswith("^2") for p in parts)


def _interaction(fit: EffectsResult, a: str, b: str) -> dict[str, Any]:
    pair = {a, b}
    terms = [t for t in fit.terms if t.order == 2 and set(_factors_of(t.term)[0]) == pair]
    anova_terms = {t.anova_term for t in terms}
    total = sum(row.sum_sq for row in fit.anova.rows)
    rows = [row for row in fit.anova.rows if row.term in anova_terms]
    sum_sq, df = sum(row.sum_sq for row in rows), sum(row.df for row in rows)
    share = sum_sq / total if total > 0 else 0.0
    # Omega squared: the share beyond what noise alone puts in df columns (each column takes about one noise
    # variance of sum of squares), so a small noisy design's 3 interaction columns do not pass for an interaction.
    noise = fit.sigma**2 if math.isfinite(fit.sigma) else 0.0
    beyond = max(sum_sq - df * noise, 0.0) / (total + noise) if total > 0 else 0.0
    dropped = {name: list(combo) for name, combo in fit.not_estimable.items()
               if len(_factors_of(name)[0]) == 2 and set(_factors_of(name)[0]) == pair and not _factors_of(name)[1]}
    return {
        "terms": [{"term": t.term, "estimate": t.estimate, "std_error": t.std_error, "p_value": t.p_value,
                   "p_adjusted": t.p_adjusted, "significant": t.significant, "aliased_with": list(t.aliased_with)}
                  for t in terms],
        "significant": any(t.significant for t in terms),
        "percent": 100.0 * share,
        "percent_beyond_noise": 100.0 * beyond,
        "not_estimable": dropped,
    }


# --- one pair -----------------------------------------------------------------------------------------------------


def _pair_hint(fit: EffectsResult, infos: Mapping[str, FactorInfo], df: pd.DataFrame | None, a: str, b: str,
               a_role: str, b_role: str, roles: Mapping[str, str], fixed: Mapping[str, Any], goal: str,
               min_share: float, diverged_value: float | None) -> Hint | None:
    interaction = _interaction(fit, a, b)
    rules, notes = _candidates(a_role, roles, infos, fixed)
    expected = rules[0]
    notes += _scale_notes(infos, a, b)

    if interaction["not_estimable"]:
        listed = "; ".join(f"{name} = combination of {combo or 'nothing'}"
                           for name, combo in interaction["not_estimable"].items())
        summary = (f"the {a} x {b} interaction is not estimable from these runs ({listed}), so whether "
                   f"{expected.label} would remove it cannot be judged; runs that separate it (a fold-over, or "
                   "the full factorial of the two) would tell")
        return Hint((a, b), (a_role, b_role), expected.name, expected.slope, expected.coords(a, b),
                    f"cannot be judged: {a}:{b} is aliased. If it is there, " + expected.suggestion(a, b),
                    expected.rationale, "not_judged", interaction, {"summary": summary, "reason": "aliased"},
                    tuple(notes))
    present = interaction["significant"] or interaction["percent_beyond_noise"] >= 100.0 * min_share
    if not interaction["terms"] or not present:
        return None
    carried = sorted({x for t in interaction["terms"] for x in t["aliased_with"]})
    if carried:
        notes.append(f"the estimate of the {a} x {b} interaction also carries {carried} (aliased), which may be "
                     "what is there")

    check = _check(fit, infos, df, a, b, rules, goal, diverged_value)
    status, rule, slope = check.pop("status"), expected, expected.slope
    if status == "supported":
        rule = next(r for r in rules if check["rules"][r.name]["consistent"])
        if rule is not expected:
            notes.append(f"the data favour {rule.name.replace('_', ' ')} (slope {rule.slope:g}) over the expected "
                         f"{expected.name.replace('_', ' ')}: its slope {expected.slope:g} is outside the interval")
        others = [r for r in rules if r is not rule and check["rules"][r.name]["consistent"]]
        if others:
            notes.append("the data cannot tell it from " + ", ".join(
                f"{r.name.replace('_', ' ')} (slope {r.slope:g})" for r in others) + ": both slopes are inside "
                "the interval")
        slope = rule.slope
    elif status == "approximate":
        rule = min(rules, key=lambda r: check["rules"][r.name]["ratio"])
        res = check["rules"][rule.name]
        notes.append(f"the valley slope differs from {rule.name.replace('_', ' ')}'s {rule.slope:g} beyond noise, but "
                     f"sweeping {formula(a, b, rule.slope)} still removes {100 * res['shrink']:.0f}% of the "
                     f"interaction (|H_uv/H_uu| {check['interaction_before']['ratio']:.3g} -> {res['ratio']:.3g})")
        slope = rule.slope
    elif status == "contradicted":
        if check["interaction_before"]["consistent"]:
            suggestion = (f"no reparametrisation: the best {a} does not move with {b} (the valley slope's interval "
                          f"holds 0), so the interaction is of another kind (how much {a} matters changes with "
                          f"{b}), which new coordinates do not remove")
            return Hint((a, b), (a_role, b_role), "none", None, None, suggestion, expected.rationale, status,
                        interaction, check, tuple(notes))
        slope = float(f"{check['valley_slope']:.2g}")
        coords = (formula(a, b, slope), b)
        suggestion = (f"sweep {coords[0]} and {b} (log scale) instead of {a} and {b}: the fitted valley slope; "
                      "no rule's slope is inside its interval or removes most of the interaction")
        return Hint((a, b), (a_role, b_role), "fitted_slope", slope, coords, suggestion, expected.rationale,
                    status, interaction, check, tuple(notes))
    return Hint((a, b), (a_role, b_role), rule.name, slope, rule.coords(a, b), rule.suggestion(a, b),
                rule.rationale, status, interaction, check, tuple(notes))


def _scale_notes(infos: Mapping[str, FactorInfo], a: str, b: str) -> list[str]:
    linear = [n for n in (a, b) if infos[n].scale != "log"]
    if not linear:
        return []
    verb = "is" if len(linear) == 1 else "are"
    return [(f"{' and '.join(linear)} {verb} not on a log scale: the rule is multiplicative (a power law), so sweep "
             "both factors on a log scale (scale: log), where it is a straight line and the new coordinates are "
             "evenly spaced")]


# --- small helpers ------------------------------------------------------------------------------------------------


def _p(value: float) -> str:
    return "-" if math.isnan(value) else f"{value:.3g}"


def _json(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json(v) for v in value]
    if isinstance(value, (np.floating, np.integer)):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
