"""Turning a study's runs into an analysis input, an analysis into terminal tables (for `wavesweep analyze`), and a
study's waves and lease into what `wavesweep status` prints. :class:`WaveSplit` says which runs are designed and
which proposed, in the words analyze, status and the dashboard share."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

import pandas as pd
from rich.console import Console
from rich.table import Table
from rich.text import Text

from orchestrator.reporting.tables import table
from orchestrator.run_record import metric_key, param_key, records
from orchestrator.wave_kinds import is_designed

if TYPE_CHECKING:
    from orchestrator.analysis import EffectsResult, FanovaResult


def wave_kind(design: str | None) -> str:
    """"designed", or "proposed (model)" / "proposed (space_filling)": what a wave's runs may be used for."""
    return "designed" if is_designed(design) else f"proposed ({design})"


@dataclass(frozen=True)
class WaveSplit:
    """A study's waves split into designs and proposals (:mod:`orchestrator.wave_kinds`), with their run counts.

    The coded effects fit uses the runs of designed waves only: a proposed wave's points (a space-filling sample, a
    model's batch) are no design, and would give the fit's aliasing and intervals a geometry they do not have. The
    variance decomposition uses every run. One place for the words, so analyze, status and the dashboard say the
    same thing."""

    designs: dict[int, str | None]  # wave number -> the design name stored with it, every wave of the study
    runs: dict[int, int]  # wave number -> runs recorded in it

    @property
    def designed(self) -> list[int]:
        return sorted(n for n, d in self.designs.items() if is_designed(d))

    @property
    def proposed(self) -> list[int]:
        return sorted(n for n, d in self.designs.items() if not is_designed(d))

    @property
    def has_proposals(self) -> bool:
        return bool(self.proposed)

    def count(self, waves: Iterable[int]) -> int:
        return sum(self.runs.get(n, 0) for n in waves)

    @property
    def n_designed(self) -> int:
        return self.count(self.designed)

    @property
    def n_proposed(self) -> int:
        return self.count(self.proposed)

    @property
    def n_all(self) -> int:
        return self.count(self.designs)

    def names(self, waves: Iterable[int]) -> list[str]:
        """The design names of ``waves``, each once, in wave order."""
        return list(dict.fromkeys(str(self.designs[n]) for n in sorted(waves)))

    def used(self) -> str:
        """"the 32 runs of designed waves 1-2 (fractional_factorial, fold_over)"."""
        waves = self.designed
        return f"the {self.n_designed} runs of designed {span(waves)} ({', '.join(self.names(waves))})"

    def left_out(self) -> str:
        """"32 runs of proposed waves 3-4 (model) left out: they are not a design"."""
        waves = self.proposed
        return (f"{self.n_proposed} runs of proposed {span(waves)} ({', '.join(self.names(waves))}) left out: "
                "they are not a design")

    def all_runs(self) -> str:
        """"all 64 runs: 32 of designed waves 1-2 (fractional_factorial, fold_over), 32 of proposed waves 3-4
        (model)"."""
        parts = [f"{self.count(waves)} of {kind} {span(waves)} ({', '.join(self.names(waves))})"
                 for kind, waves in (("designed", self.designed), ("proposed", self.proposed)) if waves]
        return f"all {self.n_all} runs: {', '.join(parts)}"

    def to_dict(self, waves: Iterable[int]) -> dict[str, Any]:
        """The runs of ``waves`` (those an estimate used), JSON-ready: runs, waves, designs."""
        waves = sorted(waves)
        return {"runs": self.count(waves), "waves": waves, "designs": self.names(waves)}


def wave_split(designs: Mapping[int, str | None], run_waves: Iterable[int]) -> WaveSplit:
    """The split of a study from ``{wave number: design}`` (every wave) and the wave of each of its runs."""
    counts: dict[int, int] = {}
    for wave in run_waves:
        counts[int(wave)] = counts.get(int(wave), 0) + 1
    return WaveSplit({int(n): d for n, d in designs.items()}, counts)


def span(waves: Iterable[int]) -> str:
    """"wave 3", "waves 1-2", "waves 1, 3-5": wave numbers in words, consecutive ones as ranges."""
    numbers = sorted(set(waves))
    parts, start = [], None
    for i, n in enumerate(numbers):
        start = n if start is None else start
        if i + 1 == len(numbers) or numbers[i + 1] != n + 1:
            parts.append(str(n) if n == start else f"{start}-{n}")
            start = None
    return ("wave " if len(numbers) == 1 else "waves ") + ", ".join(parts)


def split_line(split: WaveSplit) -> str:
    """The status summary of designed and proposed runs."""
    if not split.has_proposals:
        return f"Runs: {split.n_all}, all in designed waves."
    designed = f"{split.n_designed} in designed {span(split.designed)}" if split.designed else "0 in designed waves"
    return (f"Runs: {designed}, {split.n_proposed} in proposed {span(split.proposed)} "
            f"({', '.join(split.names(split.proposed))}). `wavesweep analyze` fits effects on the designed runs only "
            "(the proposed ones are not a design); --method fanova decomposes all.")


def recorded_spec(db, study: str) -> dict[str, Any]:
    """The spec a study was recorded with; an error naming the studies the store does hold otherwise."""
    from orchestrator.errors import WavesweepError

    spec = db.study_spec(study)
    if spec is None:
        known = ", ".join(db.study_names()) or "none"
        raise WavesweepError(f"study {study!r} is not in {db.display_url} (studies there: {known})")
    return spec


def lease_line(lease: dict[str, Any] | None, now: datetime) -> str:
    """Who drives the study (``Store.lease``): its holder ("host:pid:token") and the lease's times, "expired" once
    its holder stopped renewing it (a driver that died: the next `wavesweep run` takes the study over)."""
    if lease is None:
        return "Driver: no driver holds the study's lease"
    held = f"Driver: {lease['driver']} since {_utc(lease['since'])}, lease until {_utc(lease['until'])}"
    if lease["until"] is not None and lease["until"] < now:
        return f"{held} (expired: that driver stopped renewing it; the next run takes the study over)"
    return held


WAVE_COLUMNS = ("wave", "kind", "why", "runs", "by status", "backfill", "idle", "pruning saved", "deadline passed",
                "finished")


def wave_rows(waves: list[dict[str, Any]], runs: list[dict[str, Any]]) -> list[tuple[str, ...]]:
    """One row of :data:`WAVE_COLUMNS` per wave (``Store.waves``): its kind (designed, or proposed by a model or a
    space-filling sample: :func:`wave_kind`), why, runs by status, backfill runs, the idle device-seconds the driver
    counted ("-" where it did not: waves recorded before it did, or still running), the device-hours its pruned runs
    did not spend (``saved_by_wave``), when the driver stopped waiting for its stragglers, when it finished."""
    counts: dict[int, dict[str, int]] = {}
    backfill: dict[int, int] = {}
    saved = saved_by_wave(runs)
    for run in runs:
        by_status = counts.setdefault(run["wave"], {})
        by_status[run["status"]] = by_status.get(run["status"], 0) + 1
        backfill[run["wave"]] = backfill.get(run["wave"], 0) + bool(run.get("backfill"))
    rows = []
    for wave in waves:
        by_status = counts.get(wave["number"], {})
        rows.append((str(wave["number"]), wave_kind(wave.get("design")), wave["reason"],
                     str(sum(by_status.values())), ", ".join(f"{n} {s}" for s, n in sorted(by_status.items())),
                     str(backfill.get(wave["number"], 0)), _idle(wave),
                     f"{saved[wave['number']] / 3600:.3g} GPU-h" if wave["number"] in saved else "-",
                     _utc(wave["deadline_at"]) if wave.get("deadline_at") else "-",
                     _utc(wave["finished_at"]) if wave["finished_at"] else "-"))
    return rows


def wave_table(waves: list[dict[str, Any]], runs: list[dict[str, Any]]) -> Table:
    """The waves of :func:`wave_rows` as a table, for a console wide enough to hold it."""
    return table(WAVE_COLUMNS, wave_rows(waves, runs), wrap=("why", "by status", "idle"))


def wave_lines(waves: list[dict[str, Any]], runs: list[dict[str, Any]]) -> list[str]:
    """The waves of :func:`wave_rows` as a few lines each, for a console narrower than their table: squeezed into
    80 columns, the table wrapped every reason into a column a word wide, one word a line."""
    lines = []
    for row in wave_rows(waves, runs):
        cell = dict(zip(WAVE_COLUMNS, row))
        lines.append(f"Wave {cell['wave']}, {cell['kind']}: {cell['runs']} runs ({cell['by status'] or 'none'}), "
                     f"finished {cell['finished']}")
        lines.append(f"  why: {cell['why']}")
        lines.append(f"  backfill {cell['backfill']}; idle {cell['idle']}; pruning saved {cell['pruning saved']}; "
                     f"deadline passed {cell['deadline passed']}")
    return lines


def saved_by_wave(runs: list[dict[str, Any]]) -> dict[int, float]:
    """Wave -> device-seconds its pruned runs did not spend (``run_record.saved_s``), for the waves that have one."""
    saved: dict[int, float] = {}
    for run in records(runs):
        if run.prune is not None:
            saved[run.wave] = saved.get(run.wave, 0.0) + run.saved_s
    return saved


def _idle(wave: dict[str, Any]) -> str:
    if wave.get("idle_s") is None:
        return "-"
    unit = wave["idle_unit"] or "device"
    capacity = wave.get("capacity")
    of = f" of {capacity:g} {unit}{'' if capacity == 1 else 's'}" if capacity is not None else ""
    return f"{wave['idle_s']:.1f} {unit}-s{of}"


def _utc(when: datetime | None) -> str:
    return when.strftime("%Y-%m-%d %H:%M:%S UTC") if when is not None else "-"


def study_frame(runs: list[dict[str, Any]], factors: list[str], metric: str) -> pd.DataFrame:
    """The store's run records as the analysis wants them: one column per factor, the response, the status."""
    frame = pd.DataFrame.from_records(runs)
    column = metric_key(metric)
    if frame.empty:
        return pd.DataFrame(columns=[*factors, metric, "status"])
    if column not in frame:
        frame[column] = float("nan")  # no run has finished with the metric yet: every row counts as missing
    out = frame[[param_key(f) for f in factors] + [column, "status"]]
    return out.rename(columns={param_key(f): f for f in factors} | {column: metric})


def print_effects(console: Console, result: EffectsResult, title: str, detect: float | None = None, *,
                  power: bool = True) -> None:
    """The effects table, its error line, the power line (a two-level design's: ``power=False`` where the runs are
    no such design) and the variance budget."""
    headers = ("term", "estimate", "95% CI", "p", "p adj.", "", "aliased with")
    # The interval as "low to high", 3 digits: at 80 columns its column is the one that wraps, and it wraps at the
    # spaces, each number whole ("[-0.0053" over "01," is what 4 digits and a comma gave in a pipe).
    rows = [(term.term, f"{term.estimate:+.4g}", f"{term.ci_low:+.3g} to {term.ci_high:+.3g}", _p(term.p_value),
             _p(term.p_adjusted), Text("*", style="bold green") if term.significant else "",
             ", ".join(term.aliased_with)) for term in result.terms]
    if not any(term.aliased_with for term in result.terms):
        headers, rows = headers[:-1], [row[:-1] for row in rows]  # an empty column takes room the names need
    console.print(table(headers, rows, title=title, wrap=("95% CI", "aliased with")))
    adjust = {"holm": "Holm", "fdr_bh": "Benjamini-Hochberg", None: "no"}[result.adjust]
    errors = "Lenth's pseudo standard error (no residual df)" if result.method == "lenth" else "OLS residuals"
    console.print(f"* p adjusted ({adjust}) < {result.alpha:g}. Errors from {errors}, {result.error_df:g} df; "
                  f"{result.n_used} of {result.n_runs} runs used; R^2 = {result.r_squared:.3f}.", highlight=False)
    sigma = result.sigma_pure_error if result.sigma_pure_error == result.sigma_pure_error else result.sigma
    if power and result.method == "ols" and sigma > 0 and result.error_df >= 1:
        from orchestrator.analysis import detectable_effect

        smallest = detectable_effect(sigma, result.n_used, result.error_df, alpha=result.alpha)
        console.print(f"Power: with noise SD {sigma:.3g} per run, the smallest coded effect this study detects 80% "
                      f"of the time at alpha {result.alpha:g} is {smallest:.3g} (unadjusted test).", highlight=False)
        if detect is not None:
            console.print(f"To detect a coded effect of {detect:g} 80% of the time: {needed_runs(result, detect)} runs "
                          f"in all ({result.n_used} so far).", highlight=False)
    console.print(table(("source", "share of variance"),
                        [(row.category.replace("_", " "), f"{row.percent:.2f}%") for row in result.budget.rows],
                        title="Variance budget (sums to 100%)"))
    for note in result.notes:
        console.print(f"note: {note}", highlight=False, soft_wrap=True, markup=False)


def needed_runs(result: EffectsResult, effect: float) -> int:
    """Runs in all for the same model to detect ``effect`` with 80% power, from the study's noise estimate."""
    from orchestrator.analysis import runs_needed

    sigma = result.sigma_pure_error if result.sigma_pure_error == result.sigma_pure_error else result.sigma
    return runs_needed(effect, sigma, len(result.terms) + 1, alpha=result.alpha)


def print_decomposition(console: Console, result: FanovaResult, title: str) -> None:
    """Variance shares of mains and pairs, strongest first, with their intervals and verdicts."""
    order = sorted(result.terms, key=lambda t: (t.kind != "main", -(t.share if t.share == t.share else -1)))
    rows = []
    for term in order:
        share = "-" if term.share != term.share else f"{100 * term.share:.1f}%"
        ci = "-" if term.ci_low != term.ci_low else f"[{100 * term.ci_low:.1f}%, {100 * term.ci_high:.1f}%]"
        style = "bold green" if term.verdict in ("effect", "interaction") else ""
        rows.append((term.term, share, ci, _p(term.p_value), f"{100 * term.floor:.1f}%", Text(term.verdict, style)))
    console.print(table(("term", "share of variance", "95% CI", "p", "floor", "verdict"), rows, title=title,
                        wrap=("95% CI",)))
    console.print(f"Random-forest functional ANOVA ({result.n_trees} trees) of {result.n_used} of {result.n_runs} "
                  f"runs; intervals from {result.n_bootstrap} bootstrap refits; floors: the largest share in "
                  f"{result.n_permutations} permutations at level {1 - result.alpha:g} (mains: permuted response; "
                  "pairs: permuted residuals of an additive fit). Under its floor a term is inconclusive, not absent. "
                  f"Higher order and unidentifiable: {100 * result.rest_share:.1f}%.", highlight=False, soft_wrap=True)
    for term in order:
        if term.kind == "main" and term.verdict == "inconclusive" and term.note:
            console.print(f"{term.term} inconclusive: {term.note}", highlight=False, soft_wrap=True, markup=False)
    for note in result.notes:
        console.print(f"note: {note}", highlight=False, soft_wrap=True, markup=False)


def print_hints(console: Console, hints: list) -> None:
    """Reparametrisation hints, without the long rationale (it is in the JSON output)."""
    if not hints:
        return
    console.print("Reparametrisation hints", style="bold", highlight=False)
    for hint in hints:
        lines = [line for line in hint.describe().splitlines() if not line.startswith("  why: ")]
        console.print("\n".join(lines), highlight=False, soft_wrap=True, markup=False)


def _p(value: float) -> str:
    return "-" if math.isnan(value) else f"{value:.3g}"
