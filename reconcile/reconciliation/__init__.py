"""Reconciliation: read the stores' truth, report where ours drifted, repair it through ingest.

`sources` is what a channel provides (per-subscription truth, and sweeps such as Apple's
notification history), `drift` compares without touching anything, `runner` streams
subscriptions in checkpointed pages, `job` runs it from the worker, `report` shapes the API.
"""
