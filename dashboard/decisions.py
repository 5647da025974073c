"""The Decisions view: why each wave was run and why the study stopped, each wave marked designed or proposed, with
the best value so far and the Pareto front of cost against the response."""

from __future__ import annotations

import re

import streamlit as st

from dashboard import charts, data
from dashboard.cache import study
from orchestrator.wave_kinds import PROPOSED, is_designed


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
