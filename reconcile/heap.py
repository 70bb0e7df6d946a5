"""Giving the C heap's free pages back to the operating system (glibc; a no-op elsewhere).

glibc's `free` returns memory to the system only from the top of an arena: a page freed below
a chunk still in use stays resident, and a later allocation may land anywhere. A process that
keeps freeing and re-allocating buffers of a few KiB (SQLite's page cache, store answers,
statements) slowly touches more of its arenas, so its resident size creeps with the length of
the work, not its size. `malloc_trim(0)` releases every free page of every arena.
"""

from __future__ import annotations

import ctypes
from collections.abc import Callable


def _c_library() -> ctypes.CDLL | None:
    try:
        return ctypes.CDLL(None)  # the symbols the process already has: its C library's
    except OSError:
        return None


# The process's own C library, for what Python does not expose (also `bench.reconcile`'s
# memory trace); None where it cannot be opened.
C_LIBRARY = _c_library()


def _malloc_trim() -> Callable[[int], int] | None:
    """glibc's `malloc_trim`, or None where the C library has none (musl, macOS)."""
    trim = getattr(C_LIBRARY, "malloc_trim", None)
    if trim is None:
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    trimmed: Callable[[int], int] = trim
    return trimmed


_TRIM = _malloc_trim()


def release_free_memory() -> bool:
    """Return the C heap's free pages to the system: True when some were returned (never where
    the C library cannot). A few milliseconds at most; other threads run meanwhile (ctypes
    releases the interpreter lock for the call)."""
    return _TRIM is not None and _TRIM(0) == 1
