"""wavesweep dashboard: the Streamlit layout. Start it with ``wavesweep dashboard [--store URL]``.

The store URL comes from $WAVESWEEP_STORE (the command sets it, so a password never shows in the process list),
else ./wavesweep.db. The store is opened read-only (:mod:`dashboard.reader`). Queries are cached for ``TTL``
seconds, and the page refreshes itself every ``TTL`` seconds while a study has runs pending or running. The view
and the study are also query parameters (``?view=Interactions&study=demo``), so a link shows the same page.

This file is Streamlit's entry script: the sidebar, the view and study chosen, the live refresh. The views are
:mod:`dashboard.overview` (Studies, Overview, Runs), :mod:`dashboard.effects_view` (Effects, Interactions) and
:mod:`dashboard.decisions`; they read the store through :mod:`dashboard.cache`.
"""

from __future__ import annotations

import streamlit as st
from sqlalchemy.exc import SQLAlchemyError

from dashboard import effects
from dashboard.cache import TTL, engine, problem, studies, study
from dashboard.decisions import show_decisions
from dashboard.effects_view import show_effects, show_interactions
from dashboard.overview import show_overview, show_runs, show_studies
from dashboard.reader import StoreUnreadable
from orchestrator.store.engine import mask, resolve_url

VIEWS = ("Studies", "Overview", "Runs", "Effects", "Interactions", "Decisions")
SCOPES = {"latest": "latest wave's region", "all": "all runs"}
# A study with proposed waves (a model's batch, a space-filling sample) fits its designed waves' runs only.
DESIGNED_SCOPES = {"latest": "latest designed wave's region", "all": "all designed runs"}

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
