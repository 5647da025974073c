"""The wavesweep dashboard (`wavesweep dashboard`): Streamlit pages over a store opened read-only.

- :mod:`dashboard.reader`: the read-only engine and the schema check (never creates or migrates anything).
- :mod:`dashboard.data`: SQL queries and per-view aggregates, pure functions returning DataFrames.
- :mod:`dashboard.effects`: effects, interactions and what was fitted (:mod:`orchestrator.analysis`).
- :mod:`dashboard.charts`: Plotly figures built from those aggregates.
- :mod:`dashboard.cache`: the app's cached reads of the store (``TTL`` seconds).
- :mod:`dashboard.overview`, :mod:`dashboard.effects_view`, :mod:`dashboard.decisions`: the views, in Streamlit;
  :mod:`dashboard.columns` the number format their tables share.
- ``app.py``: Streamlit's entry script (sidebar, view choice, live refresh); run it with ``wavesweep dashboard``.

Nothing here imports torch or Ray.
"""
