"""Rebuilding derived state (subscriptions, store ids, their history, purchases, refunds) from
the inbox: `reconcile replay`."""
