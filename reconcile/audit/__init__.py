"""The audit log: who did what to which account, subscription or run, and why."""
