"""The dashboard's reads of the store, cached: each query (and the fits made from it) for ``TTL`` seconds, the
engine for the app's life, and the fANOVA per state of a study's runs (it takes seconds). Every view reads through
these, so a page shown in many browsers still makes one query per ``TTL``."""

from __future__ import annotations

import streamlit as st

from dashboard import data, effects
from dashboard.reader import StoreUnreadable, check_schema, open_readonly

TTL = 3  # seconds: fresh enough to watch a study run, and one query per TTL however many browsers watch


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


def stamp(s: data.Study) -> tuple:
    """What changes when a run is added or ends: the decomposition is recomputed then, and only then."""
    finished = s.runs["finished_at"].max()
    return len(s.runs), int((s.runs["status"] == "COMPLETE").sum()), str(finished)


@st.cache_data(ttl=TTL, show_spinner=False)
def curve(url: str, run_id: int):
    return data.curve(engine(url), run_id)
