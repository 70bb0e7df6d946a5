"""The admin API under /v1 and the health endpoints."""
