"""Store-receipt reconciliation: one subscription state from every sales channel."""
