"""Plotly figures for the views, built from the aggregates of :mod:`dashboard.data` and :mod:`dashboard.effects`
(never from raw runs). Every figure has a title and axis labels with units."""

from __future__ import annotations

import math
import re

import numpy as np
import pandas as pd
import plotly.express as px
import plotly.graph_objects as go

STATUS_COLORS = {
    "COMPLETE": "#2ca02c", "RUNNING": "#1f77b4", "PENDING": "#c7c7c7", "FAILED": "#d62728", "DIVERGED": "#ff7f0e",
    "TIMEOUT": "#9467bd", "OOM": "#8c564b", "PRUNED": "#7f7f7f",
}
SIGNIFICANT, INERT = "#d62728", "#7f7f7f"
DESIGNED, BACKFILL = "designed", "backfill"  # timeline: a wave's own cells, and replicates filling idle devices


def _layout(fig: go.Figure, title: str, x: str, y: str, height: int = 420) -> go.Figure:
    fig.update_layout(title=title, xaxis_title=x, yaxis_title=y, height=height,
                      margin={"t": 60, "l": 10, "r": 10, "b": 10},
                      legend={"orientation": "h", "yanchor": "bottom", "y": 1.0, "xanchor": "right", "x": 1})
    return fig


def wave_progress(progress: pd.DataFrame) -> go.Figure:
    """Stacked bars: runs of each wave by status."""
    fig = go.Figure()
    for status, color in STATUS_COLORS.items():
        if status in progress:
            fig.add_bar(x=progress["number"], y=progress[status], name=status, marker_color=color)
    fig.update_layout(barmode="stack")
    fig.update_xaxes(type="category")
    return _layout(fig, "Runs per wave by status", "wave", "runs", height=320)


def timeline(bars: pd.DataFrame, unit: str) -> go.Figure:
    """One lane per GPU (or CPU slot), a bar per run coloured by wave and hatched when it is a backfill run (its
    own legend entry, "<wave>, backfill"); the gaps are idle time."""
    backfill = bars["backfill"].astype(bool)
    frame = bars.assign(wave=bars["wave"].astype(str), run=np.where(backfill, BACKFILL, DESIGNED))
    # Patterns only when there is a backfill run: otherwise every legend entry would read "<wave>, designed".
    hatch = {"pattern_shape": "run", "pattern_shape_map": {DESIGNED: "", BACKFILL: "/"},
             "category_orders": {"run": [DESIGNED, BACKFILL]}} if backfill.any() else {}
    fig = px.timeline(frame, x_start="start", x_end="end", y="lane", color="wave", **hatch,
                      hover_data={"run_id": True, "status": True, "run": True, "seconds": ":.1f"})
    lanes = sorted(frame["lane"].unique(), key=_natural)  # node2 cuda:10 after node2 cuda:9
    fig.update_yaxes(type="category", categoryorder="array", categoryarray=lanes, autorange="reversed")
    what = "GPU timeline: one lane per GPU" if unit == "GPU" else "Run timeline: one lane per CPU slot (no GPU used)"
    what += "; gaps are idle time" + ("; hatched: backfill runs" if backfill.any() else "")
    return _layout(fig, what, "time (UTC)", "lane (host device)",
                   height=max(260, 60 + 28 * len(lanes)))


def _natural(text: str) -> list:
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", text)]


def effects_pareto(effects: pd.DataFrame, t_alpha: float, t_bonferroni: float, alpha: float) -> go.Figure:
    """Pareto chart of standardised effects: |t| per term, largest on top, with the significance lines."""
    frame = effects.sort_values("abs_t")
    colors = [SIGNIFICANT if s else INERT for s in frame["significant"]]
    fig = go.Figure(go.Bar(x=frame["abs_t"], y=frame["term"], orientation="h", marker_color=colors,
                           customdata=np.stack([frame["estimate"], frame["p_adjusted"]], axis=-1),
                           hovertemplate="%{y}: |t| = %{x:.3g}<br>estimate %{customdata[0]:+.4g} (coded units)"
                                         "<br>p adj. %{customdata[1]:.3g}<extra></extra>"))
    for value, dash, label, where in ((t_alpha, "dash", f"alpha {alpha:g}", "top right"),
                                      (t_bonferroni, "dot", "Bonferroni", "bottom right")):
        if math.isfinite(value):
            fig.add_vline(x=value, line_dash=dash, line_color="black", annotation_text=label,
                          annotation_position=where)
    axis = "|t| = |estimate / std. error|"
    # A few huge effects would squash the lines and the small terms against zero: a log axis keeps both readable.
    if math.isfinite(t_alpha) and len(frame) and frame["abs_t"].max() > 20 * t_alpha and frame["abs_t"].min() > 0:
        fig.update_xaxes(type="log")
        axis += " (log scale)"
    fig.update_yaxes(type="category")
    return _layout(fig, "Standardised effects (Pareto)", axis, "term", height=max(300, 80 + 24 * len(frame)))


def half_normal(points: pd.DataFrame) -> go.Figure:
    """|t| against half-normal quantiles; inert terms follow the line through the origin."""
    colors = [SIGNIFICANT if s else INERT for s in points["significant"]]
    fig = go.Figure(go.Scatter(x=points["quantile"], y=points["abs_t"], mode="markers+text", marker_color=colors,
                               text=[t if s else "" for t, s in zip(points["term"], points["significant"])],
                               textposition="middle left", hovertext=points["term"], name="terms"))
    inert = points[~points["significant"]]
    if len(inert) and inert["quantile"].max() > 0:
        # Slope from the terms not flagged: the line the noise alone would follow.
        slope = float(np.median(inert["abs_t"] / inert["quantile"]))
        top = float(points["quantile"].max())
        fig.add_scatter(x=[0, top], y=[0, slope * top], mode="lines", line={"dash": "dash", "color": "black"},
                        name="noise line")
    return _layout(fig, "Half-normal plot of effects", "half-normal quantile",
                   "|standardised effect| (t)", height=380)


def interaction_plot(means: pd.DataFrame, a: str, b: str, response: str, scale_a: str | None) -> go.Figure:
    """Mean response per level of ``a``, one line per level of ``b``, CI bars: parallel lines = no interaction.
    ``scale_a``: "linear" or "log" for a numeric ``a`` (its axis), None for a categorical one."""
    fig = go.Figure()
    for level, group in means.groupby(b, sort=False):
        x = group[a] if scale_a else group[a].astype(str)
        fig.add_scatter(x=x, y=group["mean"], mode="lines+markers", name=f"{b} = {level}",
                        error_y={"type": "data", "symmetric": False, "array": group["ci_high"] - group["mean"],
                                 "arrayminus": group["mean"] - group["ci_low"]},
                        customdata=group["n"], hovertemplate=f"{a}=%{{x}}<br>mean %{{y:.4g}}<br>n=%{{customdata}}")
    fig.update_xaxes(type=scale_a or "category")
    axis = f"{a} (log scale)" if scale_a == "log" else a
    return _layout(fig, f"Interaction {a} × {b}: mean {response} (95% CI)", axis, f"mean {response}")


def interaction_matrix(matrix: pd.DataFrame, factors: list[str]) -> go.Figure:
    """Every pair of factors coloured by interaction size (|effect|, coded units); * = significant (Holm)."""
    index = {f: i for i, f in enumerate(factors)}
    size = np.full((len(factors), len(factors)), np.nan)
    fig = go.Figure()
    for row in matrix.itertuples():
        text = row.note if math.isnan(row.size) else f"{row.size:.3g}{' *' if row.significant else ''}"
        for i, j in ((index[row.a], index[row.b]), (index[row.b], index[row.a])):
            size[i, j] = row.size
            # Annotations, not the heatmap's own text: a heatmap draws no text on a gap (an aliased pair).
            dark = not math.isnan(row.size) and row.size > 0.6 * np.nanmax(matrix["size"])
            fig.add_annotation(x=factors[j], y=factors[i], text=text, showarrow=False,
                               font={"color": "white" if dark else "black"})
    fig.add_heatmap(z=size, x=factors, y=factors, colorscale="Reds", colorbar={"title": "|effect|"},
                    hoverongaps=False, hovertemplate="%{y} x %{x}: |effect| %{z:.3g}<extra></extra>")
    # Explicit ranges: with every pair aliased the heatmap is all gaps and would not size the grid itself.
    n = len(factors)
    fig.update_xaxes(type="category", categoryorder="array", categoryarray=factors, range=[-0.5, n - 0.5])
    fig.update_yaxes(type="category", categoryorder="array", categoryarray=factors, range=[n - 0.5, -0.5])
    return _layout(fig, "Interactions: |effect| (coded units), * significant", "factor", "factor",
                   height=max(320, 120 + 40 * len(factors)))


def learning_curve(curve: pd.DataFrame, run_id: int) -> go.Figure:
    fig = px.line(curve, x="step", y="value", color="name", markers=True)
    return _layout(fig, f"Learning curves of run {run_id}", "step", "value (as reported)", height=340)


def best_so_far(decisions: pd.DataFrame, metric: str) -> go.Figure:
    """Best cell mean after each wave against the GPU-hours spent so far: what each wave bought (a proposed wave is
    labelled with its kind)."""
    kinds = decisions["kind"] if "kind" in decisions else ["designed"] * len(decisions)
    labels = [f"wave {w}" if k == "designed" else f"wave {w}, {k}" for w, k in zip(decisions["wave"], kinds)]
    fig = go.Figure(go.Scatter(x=decisions["gpu_hours"], y=decisions["best"], mode="lines+markers+text",
                               text=labels, textposition="top center"))
    return _layout(fig, f"Best mean {metric} after each wave", "GPU-hours spent (cumulative)",
                   f"best cell mean {metric}", height=340)


def pareto_front(cells: pd.DataFrame, metric: str, goal: str) -> go.Figure:
    """Quality against cost per configuration; the front joins the cells nothing cheaper beats."""
    fig = go.Figure()
    fig.add_scatter(x=cells["cost_s"], y=cells["mean"], mode="markers", name="configurations",
                    marker={"color": INERT, "size": 7}, hovertext=cells["label"])
    front = cells[cells["front"]]
    fig.add_scatter(x=front["cost_s"], y=front["mean"], mode="lines+markers", name="Pareto front",
                    line={"shape": "hv", "color": SIGNIFICANT}, marker={"size": 9}, hovertext=front["label"])
    better = "lower" if goal == "minimize" else "higher"
    return _layout(fig, "Quality vs cost per configuration", "GPU-seconds per run (mean; wall seconds without a GPU)",
                   f"mean {metric} ({better} is better)")
