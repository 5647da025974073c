"""The views of what the runs say: Effects (the OLS fit of the designed runs, with its Pareto and half-normal plots,
ANOVA and aliases; for a study with proposed waves also the second-order surface and the fANOVA of every run) and
Interactions (a two-factor interaction plot and the matrix of every pair)."""

from __future__ import annotations

import streamlit as st

from dashboard import charts, effects
from dashboard.cache import decomposed, fitted, stamp, study, surfaced
from dashboard.columns import numbers


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
    if (result := _shown(fit, "response surface")) is None:
        return
    _figures(("runs in the surface fit", f"{result.n_used} of {result.n_runs}"),
             ("surface error df", f"{result.error_df:.3g}"), ("surface R²", f"{result.r_squared:.3f}"))
    table = result.to_frame()
    st.dataframe(table, hide_index=True, key="surface_table", column_config=numbers(table))
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
        decomposition = decomposed(url, name, stamp(s))
    if (result := _shown(decomposition, "decomposition")) is None:
        return
    _figures(("runs decomposed", f"{result.n_used} of {result.n_runs}"),
             ("main floor", f"{100 * result.floor_main:.1f}%", "largest main share in permutations"),
             ("pair floor", f"{100 * result.floor_pair:.1f}%", "largest pair share under the null"))
    table = result.to_frame()
    percent = ["share", "ci_low", "ci_high", "floor"]
    table[percent] = table[percent] * 100
    st.dataframe(table, hide_index=True, key="fanova_table", column_config=numbers(table) | {
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
    _figures(("runs used", f"{result.n_used} of {result.n_runs}"),
             ("error df", f"{result.error_df:.3g}", "OLS residual df, or Lenth's m/3 when saturated"),
             ("noise SD", f"{result.sigma:.3g}"), ("R²", f"{result.r_squared:.3f}"))
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
    st.dataframe(table, hide_index=True, column_config=numbers(table))
    st.subheader("ANOVA (sequential sums of squares)")
    anova = effects.anova_frame(result)
    st.dataframe(anova, hide_index=True, column_config=numbers(anova))
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
    st.dataframe(matrix, hide_index=True, column_config=numbers(matrix))


def _shown(outcome, what: str):
    """The result of a cached fit, or None after a warning that says why there is none."""
    if outcome.error:
        st.warning(f"No {what} to show: {outcome.error}")
        return None
    return outcome.result


def _figures(*figures: tuple[str, ...]) -> None:
    """A row of headline figures: (label, value) or (label, value, help)."""
    for column, (label, value, *help_) in zip(st.columns(len(figures)), figures):
        column.metric(label, value, help=help_[0] if help_ else None)
