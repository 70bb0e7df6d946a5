"""Reconciliation: read the stores' truth, report where ours drifted, repair it through ingest.

`sources` is what a channel provides (per-subscription truth, and sweeps such as Apple's
notification history and Google's voided purchases; the adapters live beside each channel in
`reconcile/channels/*_truth.py`), `drift` compares without touching anything, `repair` turns one
store answer into findings and the same ingest a notification gets, `runs` holds a run's lease
and checkpoint, `runner` streams subscriptions in checkpointed pages, `job` runs it from the
worker, `report` shapes the API and CLI output.
"""
