"""Store-call budgets shared by every process on one database (token buckets in a table)."""
