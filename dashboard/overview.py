"""The views of what ran: Studies (a row per study), Overview (a study's waves, best configuration so far, GPU
timeline and idle device-seconds) and Runs (every run, filtered, with a selected run's learning curves)."""

from __future__ import annotations

import streamlit as st

from dashboard import charts, data, timeline
from dashboard.cache import TTL, curve, studies, study
from dashboard.columns import numbers
from orchestrator.run_record import METRIC, param_key


def show_studies(url: str, _name: str | None) -> None:
    table = studies(url)
    st.header("Studies")
    left, middle, right = st.columns(3)
    left.metric("studies", len(table))
    middle.metric("runs", int(table["runs"].sum()))
    right.metric("running", int((table["state"] == "running").sum()))
    st.dataframe(table, hide_index=True, column_config={
        "best": st.column_config.NumberColumn("best run", format="%.4g", help="Best single run of the response"),
        "gpu_hours": st.column_config.NumberColumn("GPU-hours", format="%.3g",
                                                   help="metric.gpu_s summed; wall time for runs without a GPU"),
        "last_update": st.column_config.DatetimeColumn("last update (UTC)"),
    })


def show_overview(url: str, name: str) -> None:
    s = study(url, name)
    st.header(f"Study {name}")
    progress = data.wave_progress(s)
    cells = data.cell_table(s)
    counts = s.runs["status"].value_counts()
    cols = st.columns(5)
    cols[0].metric("runs", len(s.runs))
    cols[1].metric("complete", int(counts.get("COMPLETE", 0)))
    ended_badly = counts.drop(["COMPLETE", "PRUNED", *data.UNFINISHED], errors="ignore")  # pruned is no failure
    cols[2].metric("failed or diverged", int(ended_badly.sum()))
    cols[3].metric("GPU-hours", f"{s.runs['cost_s'].sum() / 3600:.3g}")
    cols[4].metric(f"best mean {s.metric}", f"{cells['mean'].iloc[0]:.4g}" if len(cells) else "-")
    _state_line(s)
    st.plotly_chart(charts.wave_progress(progress), key="progress")
    # The driver's idle figures and deadlines are in the idle table under the timeline, with their estimates.
    shown = (progress.assign(gpu_hours=progress["cost_s"] / 3600, saved_gpu_hours=progress["saved_s"] / 3600,
                             done=progress["done"] * 100)
             .drop(columns=["cost_s", "saved_s", "idle_s", "idle_unit", "capacity", "deadline_at"]))
    st.dataframe(shown, hide_index=True, column_config={
        "done": st.column_config.ProgressColumn("done", format="%.0f%%", min_value=0, max_value=100),
        "backfill": st.column_config.NumberColumn("backfill runs", help=BACKFILL_HELP),
        "gpu_hours": st.column_config.NumberColumn("GPU-hours", format="%.3g"),
        "saved_gpu_hours": st.column_config.NumberColumn("saved by pruning (GPU-h)", format="%.3g", help=SAVED_HELP)})
    if (pruned := int(counts.get("PRUNED", 0))):
        st.caption(f"Pruning stopped {pruned} runs early and saved an estimated "
                   f"{progress['saved_s'].sum() / 3600:.3g} GPU-hours. {SAVED_HELP}")
    st.subheader("Best configuration so far")
    if cells.empty:
        st.info(f"No COMPLETE run has {s.metric!r} yet.")
    else:
        best = cells.iloc[0]
        config = ", ".join(f"{f}={best[f]}" for f in s.factors)
        ci = (f"95% CI [{best['ci_low']:.4g}, {best['ci_high']:.4g}] over {int(best['n'])} seeds" if best["n"] > 1
              else "one seed: no CI")
        st.success(f"{config}: mean {s.metric} = {best['mean']:.4g} ({ci})")
        st.dataframe(cells.head(5), hide_index=True, column_config=numbers(cells))
    _timeline(s)


def _timeline(s: data.Study) -> None:
    st.subheader("GPU timeline and idle time")
    waves = s.waves["number"].tolist()
    # Thousands of bars are slow to draw in a browser; show the latest wave by default on big studies.
    default = waves if len(s.runs) <= 2000 else waves[-1:]
    chosen = st.multiselect("Waves on the timeline", waves, default=default, key="timeline_waves")
    bars, idle, unit = timeline.timeline(s)
    bars = bars[bars["wave"].isin(chosen)]
    if bars.empty:
        st.info("No run has started yet.")
    else:
        st.plotly_chart(charts.timeline(bars, unit), key="timeline")
    idle = idle[idle["source"].notna()]
    if idle.empty:
        return
    st.caption(IDLE_HELP)
    shown = idle.assign(idle_share=idle["idle_share"] * 100)
    st.dataframe(shown, hide_index=True, key="idle_table", column_config=numbers(shown) | {
        "source": st.column_config.TextColumn("source", help="driver: counted by the driver; run times: estimated "
                                                             "from run times"),
        "capacity": st.column_config.NumberColumn("capacity", format="%g", help="GPUs or CPUs (driver), or lanes"),
        "span_s": st.column_config.NumberColumn("wave span (s)", format="%.4g"),
        "busy_s": st.column_config.NumberColumn("busy device-s", format="%.4g"),
        "idle_s": st.column_config.NumberColumn("idle device-s", format="%.4g", help="in the row's unit"),
        "idle_share": st.column_config.NumberColumn("idle share", format="%.0f%%",
                                                    help="idle / (capacity x wave span)"),
        "deadline_passed": st.column_config.CheckboxColumn("deadline passed"),
        "deadline_at": st.column_config.DatetimeColumn("deadline passed at (UTC)"),
        "backfill": st.column_config.NumberColumn("backfill runs", help=BACKFILL_HELP)})


IDLE_HELP = ("Idle device-seconds per wave (GPU-seconds, or CPU-seconds on a cluster without GPUs). Source "
             "\"driver\": counted by the driver while the wave was the oldest open one, exact also when waves "
             "overlap. Source \"run times\": estimated from run times as lanes x (first start to last end) - busy "
             "lane-seconds, for waves the driver did not count (recorded before it did, or still running); it "
             "overstates idle time when the next wave's runs start before this one ends. Idle share = idle / "
             "(capacity x wave span).")
BACKFILL_HELP = "Runs added to the wave to fill devices idle at its tail: replicates of its best cells."
SAVED_HELP = ("A pruned run's saving is what it used x (a full run's steps / the steps it ran - 1): an estimate that "
              "takes its time per step as constant. What pruned runs did use counts in GPU-hours and budgets.")


def _state_line(s: data.Study) -> None:
    if s.stop_reason:
        st.info(f"Stopped: {s.stop_reason}")
    elif s.live:
        st.info(f"Running: refreshes every {TTL} s.")


def show_runs(url: str, name: str) -> None:
    s = study(url, name)
    st.header(f"Runs of {name}")
    left, right = st.columns(2)
    statuses = left.multiselect("Status", sorted(s.runs["status"].unique()), key="runs_status")
    waves = right.multiselect("Wave", s.waves["number"].tolist(), key="runs_wave")
    levels = {}
    with st.expander("Filter by factor levels"):
        for factor in s.factors:
            values = sorted(s.runs[param_key(factor)].dropna().unique().tolist(), key=str)
            levels[factor] = st.multiselect(factor, values, key=f"runs_level_{factor}")
    runs = data.filter_runs(s.runs, statuses, waves, levels)
    columns = (["run_id", "wave", "status"] + [param_key(f) for f in s.factors] + ["seed", "backfill"]
               + sorted(c for c in runs.columns if c.startswith(METRIC))
               + ["pruned_at", "wall_s", "host", "device", "attempts", "error_kind", "error_message", "started_at",
                  "finished_at"])
    runs = runs.assign(pruned_at=[p["step"] if p else None for p in runs["prune"]])
    st.caption(f"{len(runs)} of {len(s.runs)} runs. Click a column to sort; select a row for its learning curves.")
    event = st.dataframe(runs[columns], hide_index=True, on_select="rerun", selection_mode="single-row",
                         key="runs_table", column_config={
                             "backfill": st.column_config.CheckboxColumn("backfill", help=BACKFILL_HELP),
                             "pruned_at": st.column_config.NumberColumn("pruned at step", format="%d")})
    if runs.empty:
        return
    rows = event.selection.rows if event is not None else []
    picked = runs.iloc[rows[0] if rows else 0]
    run_id = int(picked["run_id"])
    if picked["prune"]:
        st.warning(data.prune_words(picked["prune"], s.metric))
    points = curve(url, run_id)
    if points.empty:
        st.info(f"Run {run_id} reported no learning curve.")
    else:
        st.plotly_chart(charts.learning_curve(points, run_id), key="curve")
