"""wavesweep dashboard: the Streamlit layout. Start it with ``wavesweep dashboard [--store URL]``.

The store URL comes from $WAVESWEEP_STORE (the command sets it, so a password never shows in the process list),
else ./wavesweep.db. The store is opened read-only (:mod:`dashboard.reader`). Queries are cached for ``TTL``
seconds, and the page refreshes itself every ``TTL`` seconds while a study has runs pending or running. The view
and the study are also query parameters (``?view=Interactions&study=demo``), so a link shows the same page.
"""

from __future__ import annotations

import re

import streamlit as st
from sqlalchemy.exc import SQLAlchemyError

from dashboard import charts, data, effects, timeline
from dashboard.reader import StoreUnreadable, check_schema, open_readonly
from orchestrator.store.engine import mask, resolve_url
from orchestrator.wave_kinds import PROPOSED, is_designed

TTL = 3  # seconds: fresh enough to watch a study run, and one query per TTL however many browsers watch
VIEWS = ("Studies", "Overview", "Runs", "Effects", "Interactions", "Decisions")
SCOPES = {"latest": "latest wave's region", "all": "all runs"}
# A study with proposed waves (a model's batch, a space-filling sample) fits its designed waves' runs only.
DESIGNED_SCOPES = {"latest": "latest designed wave's region", "all": "all designed runs"}


@st.cache_resource(show_spinner=False)
def engine(url: str):
    return open_readonly(url)


@st.cache_data(ttl=TTL, show_spinner=False)
def problem(url: str) -> str | None:
    try:
        check_schema(engine(url))
    except StoreUnreadable as exc:
        return str(exc)
    return None


@st.cache_data(ttl=TTL, show_spinner=False)
def studies(url: str):
    return data.studies(engine(url))


@st.cache_data(ttl=TTL, show_spinner=False)
def study(url: str, name: str):
    return data.load_study(engine(url), name)


@st.cache_data(ttl=TTL, show_spinner=False)
def fitted(url: str, name: str, scope: str):
    return effects.fit(study(url, name), scope)


@st.cache_data(ttl=TTL, show_spinner=False)
def surfaced(url: str, name: str):
    return effects.surface_all(study(url, name))


@st.cache_data(show_spinner=False, max_entries=16)
def decomposed(url: str, name: str, stamp: tuple):
    """The fANOVA of every run: seconds of forests, so cached per state of the study's runs (``stamp``), not for
    TTL seconds; a stopped study's is computed once."""
    return effects.decompose_all(study(url, name))


def _stamp(s: data.Study) -> tuple:
    """What changes when a run is added or ends: the decomposition is recomputed then, and only then."""
    finished = s.runs["finished_at"].max()
    return len(s.runs), int((s.runs["status"] == "COMPLETE").sum()), str(finished)


@st.cache_data(ttl=TTL, show_spinner=False)
def curve(url: str, run_id: int):
    return data.curve(engine(url), run_id)


# --- views ---------------------------------------------------------------------------------------------------------

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
    cols[2].metric("failed or diverged", int(counts.drop(["COMPLETE", *data.UNFINISHED], errors="ignore").sum()))
    cols[3].metric("GPU-hours", f"{s.runs['cost_s'].sum() / 3600:.3g}")
    cols[4].metric(f"best mean {s.metric}", f"{cells['mean'].iloc[0]:.4g}" if len(cells) else "-")
    _state_line(s)
    st.plotly_chart(charts.wave_progress(progress), key="progress")
    # The driver's idle figures and deadlines are in the idle table under the timeline, with their estimates.
    shown = (progress.assign(gpu_hours=progress["cost_s"] / 3600, done=progress["done"] * 100)
             .drop(columns=["cost_s", "idle_s", "idle_unit", "capacity", "deadline_at"]))
    st.dataframe(shown, hide_index=True, column_config={
        "done": st.column_config.ProgressColumn("done", format="%.0f%%", min_value=0, max_value=100),
        "backfill": st.column_config.NumberColumn("backfill runs", help=BACKFILL_HELP),
        "gpu_hours": st.column_config.NumberColumn("GPU-hours", format="%.3g")})
    st.subheader("Best configuration so far")
    if cells.empty:
        st.info(f"No COMPLETE run has {s.metric!r} yet.")
    else:
        best = cells.iloc[0]
        config = ", ".join(f"{f}={best[f]}" for f in s.factors)
        ci = (f"95% CI [{best['ci_low']:.4g}, {best['ci_high']:.4g}] over {int(best['n'])} seeds" if best["n"] > 1
              else "one seed: no CI")
        st.success(f"{config}: mean {s.metric} = {best['mean']:.4g} ({ci})")
        st.dataframe(cells.head(5), hide_index=True, column_config=_numbers(cells))
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
    st.dataframe(shown, hide_index=True, key="idle_table", column_config=_numbers(shown) | {
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
            values = sorted(s.runs[f"param.{factor}"].dropna().unique().tolist(), key=str)
            levels[factor] = st.multiselect(factor, values, key=f"runs_level_{factor}")
    runs = data.filter_runs(s.runs, statuses, waves, levels)
    columns = (["run_id", "wave", "status"] + [f"param.{f}" for f in s.factors] + ["seed", "backfill"]
               + sorted(c for c in runs.columns if c.startswith("metric."))
               + ["wall_s", "host", "device", "attempts", "error_kind", "error_message", "started_at", "finished_at"])
    st.caption(f"{len(runs)} of {len(s.runs)} runs. Click a column to sort; select a row for its learning curves.")
    event = st.dataframe(runs[columns], hide_index=True, on_select="rerun", selection_mode="single-row",
                         key="runs_table", column_config={
                             "backfill": st.column_config.CheckboxColumn("backfill", help=BACKFILL_HELP)})
    if runs.empty:
        return
    rows = event.selection.rows if event is not None else []
    run_id = int(runs["run_id"].iloc[rows[0] if rows else 0])
    points = curve(url, run_id)
    if points.empty:
        st.info(f"Run {run_id} reported no learning curve.")
    else:
        st.plotly_chart(charts.learning_curve(points, run_id), key="curve")


def _fit_or_warn(url: str, name: str):
    scope = st.session_state.get("scope") or effects.default_scope(study(url, name))
    fit = fitted(url, name, scope)
    st.caption(f"Fitted: {fit.described}.")
    if fit.error:
        st.warning(f"No effects to show: {fit.error}")
        return None
    return fit


def show_effects(url: str, name: str) -> None:
    st.header(f"Effects on {study(url, name).metric} in {name}")
    fit = _fit_or_warn(url, name)
    if fit is not None:
        _effects(fit)
    if study(url, name).split.has_proposals:
        _surface(url, name)
        _decomposition(url, name)


def _surface(url: str, name: str) -> None:
    """The second-order fit of every run: the interactions a saturated screen leaves aliased, from the model's runs."""
    fit = surfaced(url, name)
    st.subheader("Response surface of all runs (second-order OLS)")
    if fit.error:
        st.warning(f"No response surface to show: {fit.error}")
        return
    result = fit.result
    cols = st.columns(3)
    cols[0].metric("runs in the surface fit", f"{result.n_used} of {result.n_runs}")
    cols[1].metric("surface error df", f"{result.error_df:.3g}")
    cols[2].metric("surface R²", f"{result.r_squared:.3f}")
    table = result.to_frame()
    st.dataframe(table, hide_index=True, key="surface_table", column_config=_numbers(table))
    st.caption(f"Fitted: {fit.described}, by OLS on main effects, quadratics and every two-factor interaction. Its "
               "intervals assume that model, and a model's runs crowd near its optimum, so the estimates are most "
               "precise there. The effects above need no such model but see only the designed waves.")


def _decomposition(url: str, name: str) -> None:
    """The fANOVA of every run, proposed waves' included, on demand: the effects above leave those runs out."""
    s = study(url, name)
    split = s.split
    st.subheader("Decomposition of all runs (fANOVA)")
    st.caption(f"The effects above fit the designed waves' runs only; {split.left_out()}. A random-forest "
               f"functional ANOVA is made for points no design placed, so it decomposes {split.all_runs()}.")
    # A toggle, not a button: it stays on across reruns (and the live refresh) without recomputing.
    if not st.toggle("Decompose all runs (takes seconds)", key="fanova"):
        return
    with st.spinner("Fitting the forests (bootstrap and permutations)..."):
        decomposition = decomposed(url, name, _stamp(s))
    if decomposition.error:
        st.warning(f"No decomposition to show: {decomposition.error}")
        return
    result = decomposition.result
    cols = st.columns(3)
    cols[0].metric("runs decomposed", f"{result.n_used} of {result.n_runs}")
    cols[1].metric("main floor", f"{100 * result.floor_main:.1f}%", help="largest main share in permutations")
    cols[2].metric("pair floor", f"{100 * result.floor_pair:.1f}%", help="largest pair share under the null")
    table = result.to_frame()
    percent = ["share", "ci_low", "ci_high", "floor"]
    table[percent] = table[percent] * 100
    st.dataframe(table, hide_index=True, key="fanova_table", column_config=_numbers(table) | {
        c: st.column_config.NumberColumn(c.replace("_", " ") + " (%)", format="%.1f") for c in percent})
    st.caption(f"Decomposed: {decomposition.described} ({result.n_used} usable). Shares of the forest's variance "
               f"({result.n_trees} trees) with {result.n_bootstrap}-refit bootstrap intervals, tested against the "
               f"largest share in {result.n_permutations} permutations; under its floor a term is inconclusive, not "
               f"absent. Higher order and unidentifiable: {100 * result.rest_share:.1f}%. Forest shares are biased "
               "low: read the verdicts, and the shares as a ranking.")
    for note in result.notes:
        st.caption(f"Note: {note}")


def _effects(fit) -> None:
    result = fit.result
    cols = st.columns(4)
    cols[0].metric("runs used", f"{result.n_used} of {result.n_runs}")
    cols[1].metric("error df", f"{result.error_df:.3g}", help="OLS residual df, or Lenth's m/3 when saturated")
    cols[2].metric("noise SD", f"{result.sigma:.3g}")
    cols[3].metric("R²", f"{result.r_squared:.3f}")
    table = effects.standardized(result)
    t_alpha, t_bonferroni = effects.critical_t(result)
    left, right = st.columns(2)
    with left:
        st.plotly_chart(charts.effects_pareto(table, t_alpha, t_bonferroni, result.alpha), key="pareto")
    with right:
        st.plotly_chart(charts.half_normal(effects.half_normal(result)), key="half_normal")
    method = "Lenth's pseudo standard error" if result.method == "lenth" else "OLS residuals"
    st.caption(f"Standardised effect t = estimate / standard error ({method}, {result.error_df:.3g} df). Dashed: "
               f"|t| significant at alpha {result.alpha:g} unadjusted; dotted: Bonferroni over {len(table)} terms. "
               "Red terms are significant after Holm's adjustment, which lies between the two lines.")
    st.dataframe(table, hide_index=True, column_config=_numbers(table))
    st.subheader("ANOVA (sequential sums of squares)")
    anova = effects.anova_frame(result)
    st.dataframe(anova, hide_index=True, column_config=_numbers(anova))
    st.subheader("Aliases")
    aliases = effects.alias_frame(result)
    if aliases.empty:
        st.write("Every term of the model is estimable from these runs.")
    else:
        st.dataframe(aliases, hide_index=True)
    for note in result.notes:
        st.caption(f"Note: {note}")


def show_interactions(url: str, name: str) -> None:
    s = study(url, name)
    st.header(f"Interactions in {name}")
    fit = _fit_or_warn(url, name)
    if fit is None:
        return
    factors = list(fit.factors)
    if len(factors) < 2:
        st.info("An interaction needs two factors that vary among the fitted runs.")
        return
    matrix = effects.interaction_matrix(fit)
    first, second = effects.strongest_pair(matrix)
    left, right = st.columns(2)
    a = left.selectbox("Factor A (x axis)", factors, index=factors.index(first), key="factor_a")
    others = [f for f in factors if f != a]
    b = right.selectbox("Factor B (one line per level)", others,
                        index=others.index(second) if second in others else 0, key="factor_b")
    means = effects.interaction_means(fit, a, b)
    with st.container(key="interaction-plot"):
        info = fit.factors[a]
        st.plotly_chart(charts.interaction_plot(means, a, b, s.metric, info.scale if info.kind == "numeric" else None),
                        key="interaction")
    st.caption("Parallel lines: the effect of A does not depend on B. Crossing or diverging lines: an interaction. "
               "Means average over the other factors; a level pair without usable runs has no point.")
    empty = means[means["n"] == 0]
    if len(empty):
        st.caption("No usable run at: " + "; ".join(f"{a}={x}, {b}={y}" for x, y in zip(empty[a], empty[b])) + ".")
    st.plotly_chart(charts.interaction_matrix(matrix, factors), key="interaction_matrix")
    st.dataframe(matrix, hide_index=True, column_config=_numbers(matrix))


def show_decisions(url: str, name: str) -> None:
    s = study(url, name)
    st.header(f"Decisions in {name}")
    if s.stop_reason:
        when = f" ({s.stopped_at:%Y-%m-%d %H:%M:%S} UTC)" if s.stopped_at else ""
        st.info(f"Stopped{when}: {s.stop_reason}")
    else:
        st.info("Not stopped: the strategy may still propose waves.")
    decided = data.decisions(s)
    mixed = s.split.has_proposals  # otherwise every wave is designed: no badge to tell them apart
    for row in decided.itertuples():
        st.markdown(f"**Wave {row.wave}**{_badge(row.design) if mixed else ''} ({row.design}, {row.runs} runs): "
                    f"{_plain(row.reason)}")
    shown = decided.drop(columns=["reason"] if mixed else ["reason", "kind"])
    st.dataframe(shown, hide_index=True, column_config={
        "kind": st.column_config.TextColumn("kind", help=KIND_HELP),
        "best": st.column_config.NumberColumn(f"best mean {s.metric} so far", format="%.4g"),
        "gpu_hours": st.column_config.NumberColumn("GPU-hours so far", format="%.3g")})
    left, right = st.columns(2)
    with left:
        st.plotly_chart(charts.best_so_far(decided, s.metric), key="best_so_far")
    with right:
        st.plotly_chart(charts.pareto_front(data.pareto_front(s), s.metric, s.goal), key="pareto_front")


KIND_HELP = ("designed: its runs were placed by a design, and the Effects view fits them. Proposed, not a design, "
             "so left out of the effects and in the decomposition of all runs: "
             + "; ".join(f"{name}: {words}" for name, words in PROPOSED.items()) + ".")


# Badge text per proposed design (orchestrator.wave_kinds.PROPOSED has the long words, in the table's help)
BADGES = {"model": "proposed by a model", "space_filling": "proposed: a space-filling sample"}


def _badge(design: str | None) -> str:
    """" :blue-badge[designed]", or " :violet-badge[proposed by a model]"."""
    if is_designed(design):
        return " :blue-badge[designed]"
    return f" :violet-badge[{BADGES.get(design, f'proposed ({design})')}]"


def _plain(text: str) -> str:
    """Text shown as written inside Markdown: a reason such as "x*y up, lr_max 2^3" holds Markdown characters."""
    return re.sub(r"([\\`*_{}\[\]<>()#+\-.!|~$^])", r"\\\1", text)


def _numbers(frame) -> dict:
    """Four significant digits for every float column (p-values of 1e-19 would otherwise print in full)."""
    return {c: st.column_config.NumberColumn(format="%.4g") for c in frame.columns
            if frame[c].dtype.kind == "f"}


SHOW = {"Studies": show_studies, "Overview": show_overview, "Runs": show_runs, "Effects": show_effects,
        "Interactions": show_interactions, "Decisions": show_decisions}


# --- layout --------------------------------------------------------------------------------------------------------

def main() -> None:
    st.set_page_config(page_title="wavesweep", layout="wide")
    url = resolve_url(None)  # $WAVESWEEP_STORE, else ./wavesweep.db
    st.sidebar.title("wavesweep")
    st.sidebar.caption(f"Store: {mask(url)} (read-only)")
    try:
        engine(url)
        trouble = problem(url)
    except StoreUnreadable as exc:
        trouble = str(exc)
    if trouble:
        st.error(trouble)
        return
    table = studies(url)
    if table.empty:
        st.info("No study in this store yet. Run one (wavesweep run SPEC) and it appears here.")
        return
    asked = st.query_params.get("view", "Studies")
    view = st.sidebar.radio("View", VIEWS, index=VIEWS.index(asked) if asked in VIEWS else 0, key="view")
    names = table["study"].tolist()
    asked = st.query_params.get("study")
    name = st.sidebar.selectbox("Study", names, index=names.index(asked) if asked in names else 0, key="study")
    st.query_params.update(view=view, study=name)
    if view in ("Effects", "Interactions"):
        chosen = study(url, name)
        default = effects.default_scope(chosen)
        labels = DESIGNED_SCOPES if chosen.split.has_proposals else SCOPES
        st.sidebar.radio("Fit", list(SCOPES), format_func=labels.get, index=list(SCOPES).index(default),
                         key="scope", help="Adaptive waves move their window: fit the latest wave's region (the "
                                           "default for them) or every run. Runs of proposed waves (a model's "
                                           "batch, a space-filling sample) are never fitted: they are not a design.")
    live = table["state"].isin(["running", "pending"]).any()
    # While a study runs, only the view reruns every TTL seconds (a fragment); widgets keep their state.
    (st.fragment(run_every=TTL)(render) if live else render)(view, url, name)


def render(view: str, url: str, name: str) -> None:
    """The view, or a message (not a traceback) when the database fails under it, e.g. a server restart."""
    try:
        SHOW[view](url, name)
    except SQLAlchemyError as exc:
        st.error(f"cannot read {mask(url)}: {exc.__class__.__name__}: {getattr(exc, 'orig', None) or exc}")


main()
