"""Params that point at an earlier run of the same store: ``store:<study>:best`` or ``store:<study>:<run id>``.

The driver resolves them to that run's artifact directory (e.g. a LoRA adapter) before scheduling, because
workers never read the store. The cell key keeps the reference as written, so a study's cells stay stable.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from orchestrator.errors import WavesweepError

if TYPE_CHECKING:
    from orchestrator.spec import Spec
    from orchestrator.store import Store

PREFIX = "store:"


def references(spec: Spec) -> dict[str, str]:
    """Every reference in the spec (fixed params and factor levels), by where it appears."""
    found = {f"fixed.{k}": v for k, v in spec.fixed.items() if _is_ref(v)}
    for name, factor in spec.factors.items():
        found.update({f"factors.{name}.levels[{i}]": v for i, v in enumerate(factor.levels) if _is_ref(v)})
    return found


def resolve_all(spec: Spec, store: Store) -> dict[str, str]:
    """reference -> artifact directory, for every reference in the spec; fails before anything runs."""
    return {ref: resolve(store, ref, where) for where, ref in references(spec).items()}


def resolve(store: Store, ref: str, where: str = "param") -> str:
    parts = ref[len(PREFIX):].split(":")
    if len(parts) != 2 or not all(parts):
        raise WavesweepError(f"{where}: must be 'store:<study>:best' or 'store:<study>:<run id>'; got {ref!r}")
    study, selector = parts
    if store.study_spec(study) is None:
        raise WavesweepError(f"{where}: study {study!r} is not in {store.display_url}; got {ref!r}")
    path = store.artifact_of(study, selector)
    if path is None:
        what = "no COMPLETE run with artifacts" if selector == "best" else f"no run {selector} with artifacts"
        raise WavesweepError(f"{where}: study {study!r} has {what}; got {ref!r}")
    return path


def substitute(params: dict[str, Any], resolved: dict[str, str]) -> tuple[dict[str, Any], dict[str, str]]:
    """(params with references replaced by paths, {param: path} for the ones replaced)."""
    inputs = {k: resolved[v] for k, v in params.items() if _is_ref(v)}
    return {**params, **inputs}, inputs


def _is_ref(value: Any) -> bool:
    return isinstance(value, str) and value.startswith(PREFIX)
