"""Purchases the business's backend submits right after they happen in the app."""
