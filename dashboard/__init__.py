"""The wavesweep dashboard (`wavesweep dashboard`): Streamlit pages over a store opened read-only.

- :mod:`dashboard.reader`: the read-only engine and the schema check (never creates or migrates anything).
- :mod:`dashboard.data`: SQL queries and per-view aggregates, pure functions returning DataFrames.
- :mod:`dashboard.effects`: effects, interactions and what was fitted (:mod:`orchestrator.analysis`).
- :mod:`dashboard.charts`: Plotly figures built from those aggregates.
- ``app.py``: the Streamlit layout; run it with ``wavesweep dashboard``.

Nothing here imports torch or Ray.
"""
