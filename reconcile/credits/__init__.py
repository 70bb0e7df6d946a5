"""The credits ledger: grants from store transactions, debits, adjustments, clawbacks."""
