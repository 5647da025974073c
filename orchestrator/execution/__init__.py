"""Running a study: the run loop and what it reports (driver, outcome), placing runs on devices (scheduler, packing,
lease), running them on Ray (executor, ray_tasks, worker), what a run sends back (events), retries and attempts,
costs, artifacts; pruning runs from their curves (pruning, extrapolate).

Nothing is re-exported: import the module that owns a name (``orchestrator.execution.driver.run_study``).
"""
