"""Column formats the dashboard's tables share: four significant digits for every float column."""

from __future__ import annotations

import streamlit as st


def numbers(frame) -> dict:
    """Four significant digits for every float column (p-values of 1e-19 would otherwise print in full)."""
    return {c: st.column_config.NumberColumn(format="%.4g") for c in frame.columns
            if frame[c].dtype.kind == "f"}
