"""The study spec: YAML -> a frozen, validated :class:`Spec`.

Errors name the field path, the constraint and the value, e.g.
``factors.learning_rate.levels[1]: must be > 0 for scale log; got -0.001``. All problems of a spec are reported at
once so a researcher fixes the file in one pass.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import math
import re
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    StrictStr,
    ValidationError,
)

from orchestrator.artifacts import check_location
from orchestrator.context import declared_params, import_experiment
from orchestrator.errors import SpecError, problems_from_pydantic
from orchestrator.sizing import auto_problems

Level = bool | int | float | str

_NAME = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$"
_EXPERIMENT = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")
# Run params that the orchestrator sets itself; a factor or fixed param of the same name would be ambiguous.
_RESERVED_PARAMS = {"seed"}


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Factor(_Frozen):
    """One hyperparameter that varies: its levels and how to code them."""

    levels: tuple[Any, ...] = Field(description="The values tried; at least 2, no duplicates.")
    scale: Literal["linear", "log"] = Field("linear", description="log: levels are coded in log space (> 0).")
    type: Literal["numeric", "categorical"] | None = Field(
        None, description="Inferred from the levels when omitted: numeric if all are numbers."
    )

    @property
    def kind(self) -> Literal["numeric", "categorical"]:
        if self.type is not None:
            return self.type
        return "numeric" if all(_is_number(v) for v in self.levels) else "categorical"


class Response(_Frozen):
    metric: StrictStr = Field(description="The metric that run() returns and the study optimises.")
    goal: Literal["minimize", "maximize"] = "minimize"


class StrategySettings(_Frozen):
    mode: Literal["auto", "grid", "waves", "greedy"] = Field(
        "auto", description="grid: the full factorial, split into waves; waves: adaptive fractions; greedy: "
                            "one-at-a-time hill-climbing for one GPU; auto: greedy on one slot, else waves "
                            "(grid with a categorical factor of 3+ levels). See orchestrator/strategies/."
    )
    max_waves: StrictInt | None = Field(None, gt=0, description="grid: refuse a plan with more waves; waves: stop "
                                                               "after this many (default 6).")
    max_runs: StrictInt | None = Field(None, gt=0, description="Refuse a plan that needs more runs than this; "
                                                              "adaptive modes stop before a wave that would pass it.")
    max_gpu_hours: float | None = Field(
        None, gt=0, allow_inf_nan=False,
        description="Stop before a wave once the runs have used this many GPU-hours, or when the next wave would "
                    "pass it (mean cost of a finished run x its runs); every mode. A run without a GPU counts its "
                    "wall time (run-hours)."
    )
    patience: StrictInt = Field(
        2, ge=1, description="waves: stop after this many waves that moved the region without improving the best "
                             "cell mean by more than 2 x the noise SD."
    )
    screen: Literal["quarter", "corners"] = Field(
        "quarter", description="waves: where the screening fraction sits. quarter: at 25% and 75% of each range (the "
                               "model of the later waves finds interior optima from there; effects over the inner "
                               "half, so interactions are a quarter of their box-wide size and often not "
                               "significant in 64 runs); corners: at the range's ends (effects and interactions over "
                               "the whole box; the model starts from the boundary and finds interior optima worse). "
                               "Measured trade-off: docs/benchmarks.md."
    )
    runs_per_wave: StrictInt | None = Field(
        None, gt=0, description="Cells per wave; default: the GPUs of the cluster (CPU slots when it has none)."
    )
    backfill: StrictBool = Field(
        True, description="Keep devices busy at a wave's tail instead of waiting for its slowest run: grid: later "
                          "waves' cells start as devices free (longest predicted first); waves: replicates of the "
                          "wave's best cells. false: barrier waves (the next starts when the last run ends)."
    )
    wave_deadline: float | StrictStr | None = Field(
        None, description="Stop waiting for a wave's stragglers: seconds after its first run started, or 'Kx' (K "
                          "times the median run time of its finished runs, once half have finished). The next "
                          "wave is then designed from the finished runs; the stragglers run on and are recorded."
    )

    prune: StrictBool | Literal["all"] = Field(
        True, description="Stop runs whose learning curve (the response metric as ctx.report streams it) is clearly "
                          "worse than their peers' at the same step, and record them PRUNED. true: model-proposed "
                          "runs, backfill replicates and greedy steps; designed cells run to the end (a truncated cell "
                          "would bias the effects fit). all: designed cells too, their final value predicted from "
                          "the curve (analyze marks it). false: no pruning. See orchestrator/execution/pruning.py."
    )
    prune_after: StrictInt | StrictStr = Field(
        "50%", description="The hold-off: no run is pruned before this step; a number of steps, or a share of a "
                           "full run like '50%' (of the longest curve of a finished run)."
    )
    prune_rule: Literal["bound", "halving", "median"] = Field(
        "bound", description="bound: a run stops once even the good end of the 95% prediction interval of its "
                             "final value (from the finished runs' curves) is worse than the best finished run; "
                             "halving: asynchronous successive halving (ASHA), at rungs hold-off x 3^k a run "
                             "continues if it is in the best third of the study's runs at that rung; median: at "
                             "every step after the hold-off, a run stops if it is worse than the median of its "
                             "peers at that step (halving and median by more than the replicate noise). Measured: "
                             "docs/benchmarks.md."
    )

    @property
    def hold_off(self) -> tuple[str, float]:
        """``prune_after`` parsed (the spec's validation refused any it cannot parse): ("steps", n) or ("share", a
        fraction of a full run)."""
        return parse_hold_off(self.prune_after)

    @property
    def deadline(self) -> tuple[str, float] | None:
        """``wave_deadline`` parsed (the spec's validation refused any it cannot parse): ("s", seconds) or ("x",
        a multiple of the median run time); None without a deadline."""
        return None if self.wave_deadline is None else parse_deadline(self.wave_deadline)


class Resources(_Frozen):
    gpus_per_run: Annotated[float, Field(ge=0, allow_inf_nan=False)] | Literal["auto"] = Field(
        1.0, description="Ray num_gpus per run (fractions share a GPU); ignored on a cluster without GPUs. auto: "
                         "per run, from its estimated memory (orchestrator/sizing.py): small models share "
                         "a GPU, large ones get one alone."
    )
    gpu_memory_gb: float = Field(80.0, gt=0, allow_inf_nan=False,
                                 description="Memory of one GPU of the cluster, for gpus_per_run: auto.")
    memory_gb_per_run: float | None = Field(
        None, gt=0, allow_inf_nan=False,
        description="gpus_per_run: auto: the memory a run needs, when the 'model' param's name gives no size."
    )
    memory_method: Literal["lora", "full", "inference"] = Field(
        "lora", description="gpus_per_run: auto: what runs do with the model, unless a 'method' param says."
    )
    cpus_per_run: float = Field(1.0, gt=0, description="Ray num_cpus per run; also the torch threads of a run.")
    warm_reuse: StrictBool = Field(
        True, description="Let a worker process keep a loaded base model for its next run (the experiment decides "
                          "what is safe to keep); false: every run starts in a fresh process."
    )
    max_runs_per_worker: StrictInt = Field(
        8, gt=0, description="With warm_reuse, a worker process exits after this many runs (frees leaked memory)."
    )
    max_retries: StrictInt = Field(
        2, ge=0, description="Retries of a run whose worker died, stopped sending heartbeats or ran out of memory "
                             "(an exception, a divergence or a timeout is not retried). See docs/design.md."
    )
    timeout_s: float | None = Field(
        None, gt=0, allow_inf_nan=False,
        description="Wall-clock limit of one attempt, from its start; past it the run is killed and recorded as "
                    "TIMEOUT (not retried). None: no limit."
    )
    heartbeat_grace_s: float = Field(
        60.0, gt=0, allow_inf_nan=False,
        description="A run whose worker sends no heartbeat for this long (a dead or frozen process that Ray did not "
                    "report) is killed and retried as 'lost'."
    )
    max_curve_points: StrictInt = Field(
        2000, ge=10, description="Curve points stored per run and metric; beyond it the curve is thinned evenly, the "
                                 "last point always kept (orchestrator/execution/curve_cap.py)."
    )


class Spec(_Frozen):
    """A validated study. Build it with :func:`load_spec` or :func:`parse_spec`, not directly."""

    study: StrictStr = Field(pattern=_NAME, description="Unique name of the study in the store.")
    description: StrictStr = ""
    experiment: StrictStr = Field(description="`module:function` implementing run(params, ctx) -> dict of metrics. "
                                              "When its module declares PARAMS (a mapping keyed by param name), "
                                              "factor and fixed names must be among them.")
    fixed: dict[str, Any] = Field(default_factory=dict, description="Params passed unchanged to every run.")
    factors: dict[str, Factor] = Field(description="Params that vary, with their levels.")
    response: Response
    strategy: StrategySettings = StrategySettings()
    resources: Resources = Resources()
    artifacts: StrictStr = Field(
        "wavesweep-artifacts", description="Where run outputs (adapters) go, <artifacts>/<study>/<cell key>: a "
                                           "directory (on a cluster, one every node mounts at this path: checked "
                                           "before launch) or an object-store URI fsspec opens (s3://, gs://, "
                                           "file://)."
    )
    seeds: tuple[StrictInt, ...] | None = Field(None, description="One run per cell and seed; default [0].")
    replicates: StrictInt | None = Field(None, gt=0, description="Shorthand for seeds 0..replicates-1.")

    @property
    def run_seeds(self) -> tuple[int, ...]:
        if self.seeds is not None:
            return self.seeds
        return tuple(range(self.replicates or 1))

    def fingerprint(self) -> str:
        """Hash of what makes two runs of the same cell comparable: a study may gain levels, not change these."""
        core = {"experiment": self.experiment, "fixed": self.fixed, "response": self.response.metric}
        return hashlib.sha256(json.dumps(core, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


# PyYAML implements YAML 1.1, which reads `1e-4` (no dot) as a string. Researchers write learning rates that way,
# so resolve YAML 1.2 floats too (https://github.com/yaml/pyyaml/issues/173).
class _Loader(yaml.SafeLoader):
    pass


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(
        r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
        |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
        |\.[0-9_]+(?:[eE][-+]?[0-9]+)?
        |[-+]?\.(?:inf|Inf|INF)
        |\.(?:nan|NaN|NAN))$""",
        re.VERBOSE,
    ),
    list("-+0123456789."),
)


def load_spec(path: str | Path, *, check_experiment: bool = True) -> Spec:
    path = Path(path)
    if not path.is_file():
        raise SpecError([("spec", f"file not found: {path}", None)])
    try:
        data = yaml.load(path.read_text(), Loader=_Loader)  # safe: _Loader is a SafeLoader subclass
    except yaml.YAMLError as exc:
        raise SpecError([("spec", f"is not valid YAML ({exc})".replace("\n", " "), None)]) from None
    return parse_spec(data, check_experiment=check_experiment)


def parse_spec(data: Any, *, check_experiment: bool = True) -> Spec:
    if not isinstance(data, dict):
        raise SpecError([("spec", "must be a mapping of top-level keys (study, experiment, factors, ...)", data)])
    try:
        spec = Spec.model_validate(data)
    except ValidationError as exc:
        problems = problems_from_pydantic(exc.errors(), Spec, _UNION_MESSAGES)
        # The constraints between fields are checked too, on the fields that are valid, so that one report lists
        # every problem of the file (not the type errors first and the rest after the user fixed them).
        bad = _bad_fields(exc.errors())
        rest = _without(data, bad)
        if rest is not None:
            problems += [p for p in _check(rest) if not _under(p[0], bad)]
        raise SpecError(problems) from None
    problems = _check(spec)
    if check_experiment and not any(path == "experiment" for path, _, _ in problems):
        try:
            import_experiment(spec.experiment)
        except SpecError as exc:
            problems.extend(exc.problems)
        else:
            problems.extend(_undeclared(spec))
    if problems:
        raise SpecError(problems)
    return spec


# Stand-ins for required fields that are missing or invalid, so that the other fields can still be checked together.
_STAND_INS = {"study": "x", "experiment": "stand.in:run", "factors": {}, "response": {"metric": "x"}}


def _bad_fields(errors: list[dict[str, Any]]) -> set[str]:
    """The fields that pydantic refused: top-level keys, or ``factors.<name>`` for a factor's own errors."""
    bad = set()
    for err in errors:
        loc = err["loc"]
        bad.add(f"factors.{loc[1]}" if loc[0] == "factors" and len(loc) > 1 else str(loc[0]))
    return bad


def _without(data: dict[str, Any], bad: set[str]) -> Spec | None:
    """``data`` less its ``bad`` fields (stand-ins for required ones), as a Spec; None if that is still invalid."""
    rest = {key: value for key, value in data.items() if key not in bad}
    if isinstance(rest.get("factors"), dict):
        rest["factors"] = {name: f for name, f in rest["factors"].items() if f"factors.{name}" not in bad}
    for key, value in _STAND_INS.items():
        rest.setdefault(key, value)
    try:
        return Spec.model_validate(rest)
    except ValidationError:
        return None


def _under(path: str, fields: set[str]) -> bool:
    """Whether ``path`` is one of ``fields``, inside one, or holds one (``factors`` left empty by a dropped factor)."""
    return any(path == f or path.startswith((f + ".", f + "[")) or f.startswith(path + ".") for f in fields)


def _undeclared(spec: Spec) -> list[tuple[str, str, Any]]:
    """Factor and fixed names the experiment does not declare: a typo would otherwise fail every run on the
    cluster, after Ray started."""
    declared = declared_params(spec.experiment)
    if declared is None:
        return []
    problems = []
    for section, names in (("factors", spec.factors), ("fixed", spec.fixed)):
        for name in names:
            if name in declared or name in _RESERVED_PARAMS:
                continue
            close = difflib.get_close_matches(name, declared, n=1)
            hint = f"did you mean {close[0]!r}?" if close else "its params: " + ", ".join(declared)
            problems.append((f"{section}.{name}", f"is not a param of {spec.experiment} ({hint})", name))
    return problems


def parse_deadline(value: float | str) -> tuple[str, float] | None:
    """``strategy.wave_deadline`` as ("s", seconds) or ("x", multiple of the median run time); None if invalid."""
    if isinstance(value, str):
        match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*x\s*", value)
        return ("x", float(match.group(1))) if match and float(match.group(1)) > 1 else None
    return ("s", float(value)) if math.isfinite(value) and value > 0 else None


def parse_hold_off(value: int | str) -> tuple[str, float] | None:
    """``strategy.prune_after`` as ("steps", n >= 0) or ("share", 0 < f < 1); None if invalid."""
    if isinstance(value, str):
        match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*%\s*", value)
        return ("share", float(match.group(1)) / 100) if match and 0 < float(match.group(1)) < 100 else None
    return ("steps", float(value)) if value >= 0 else None


_HOLD_OFF = "must be a number of steps (>= 0) or a share of a full run like '25%' (between 0 and 100%)"
_DEADLINE = "must be seconds (> 0) or a multiple of the median run time like '3x' (> 1)"


def _check(spec: Spec) -> list[tuple[str, str, Any]]:
    """Constraints between fields, which pydantic's per-field types cannot express."""
    problems: list[tuple[str, str, Any]] = []
    if not _EXPERIMENT.match(spec.experiment):
        problems.append(("experiment", "must be 'module:function', e.g. 'experiments.qwen35.finetune:run'",
                         spec.experiment))
    if not spec.factors:
        problems.append(("factors", "must name at least one factor", {}))
    deadline = spec.strategy.wave_deadline
    if deadline is not None and parse_deadline(deadline) is None:
        problems.append(("strategy.wave_deadline", _DEADLINE, deadline))
    if parse_hold_off(spec.strategy.prune_after) is None:
        problems.append(("strategy.prune_after", _HOLD_OFF, spec.strategy.prune_after))
    problems.extend(auto_problems(spec))
    if why := check_location(spec.artifacts):
        problems.append(("artifacts", f"must be a directory or a URI fsspec opens: {why}", spec.artifacts))
    for name, factor in spec.factors.items():
        problems.extend(_check_factor(f"factors.{name}", name, factor, spec))
    for name in spec.fixed:
        if name in _RESERVED_PARAMS:
            problems.append((f"fixed.{name}", "is set by the orchestrator; use the top-level 'seeds' list", None))
    if spec.seeds is not None and spec.replicates is not None:
        problems.append(("replicates", "give either 'seeds' or 'replicates', not both", spec.replicates))
    if spec.seeds is not None:
        if not spec.seeds:
            problems.append(("seeds", "must list at least one seed", []))
        seen: set[int] = set()
        for i, seed in enumerate(spec.seeds):
            if seed in seen:
                problems.append((f"seeds[{i}]", "must be unique", seed))
            seen.add(seed)
    return problems


def _check_factor(path: str, name: str, factor: Factor, spec: Spec) -> list[tuple[str, str, Any]]:
    problems: list[tuple[str, str, Any]] = []
    if name in _RESERVED_PARAMS:
        problems.append((path, "is set by the orchestrator; use the top-level 'seeds' list", None))
    if name in spec.fixed:
        problems.append((path, "is also under 'fixed'; a param is either fixed or a factor", None))
    if len(factor.levels) < 2:
        problems.append((f"{path}.levels", "must have at least 2 levels (a single value belongs under 'fixed')",
                         list(factor.levels)))
    kind = factor.kind
    seen: list[Any] = []
    for i, level in enumerate(factor.levels):
        where = f"{path}.levels[{i}]"
        if not isinstance(level, (bool, int, float, str)):
            problems.append((where, "must be a number, a string or a boolean", level))
            continue
        if kind == "numeric" and not _is_number(level):
            problems.append((where, "must be a number for type numeric", level))
            continue
        if _is_number(level) and not math.isfinite(level):
            problems.append((where, "must be finite", level))
            continue
        if factor.scale == "log" and (not _is_number(level) or level <= 0):
            problems.append((where, "must be > 0 for scale log", level))
            continue
        # 8 and 8.0 are the same level; True and 1 are not (bool is a category, not a number).
        if any(level == other and isinstance(level, bool) == isinstance(other, bool) for other in seen):
            problems.append((where, "must be unique within the factor", level))
        seen.append(level)
    if factor.scale == "log" and factor.type == "categorical":
        problems.append((f"{path}.scale", "log scale needs numeric levels", factor.scale))
    return problems


# A value that fits no member of a union field: one problem saying what the field takes (instead of one per member).
_UNION_MESSAGES = {
    "resources.gpus_per_run": "must be a number >= 0 or 'auto'",
    "strategy.wave_deadline": _DEADLINE,
    "strategy.prune": "must be true, false or 'all'",
    "strategy.prune_after": _HOLD_OFF,
}
