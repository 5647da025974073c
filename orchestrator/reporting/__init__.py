"""What the CLI reads and prints: the plan before a study, its progress while it runs, its status, analysis and
export after; the tables they share and the sources of runs from outside the store.

Nothing is re-exported: import the module that owns a name (``orchestrator.reporting.report.wave_split``).
"""
