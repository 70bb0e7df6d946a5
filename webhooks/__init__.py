"""The store-facing edge: verify, decode and durably record store notifications."""
