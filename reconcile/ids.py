"""Our own identifiers: a short prefix and 16 random bytes, URL-safe."""

import secrets


def new_id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(12)}"
