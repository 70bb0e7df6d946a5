"""Freed C-heap memory goes back to the operating system (glibc's `malloc_trim`)."""

from __future__ import annotations

from pathlib import Path

import pytest

from reconcile import heap

pytestmark = pytest.mark.skipif(heap._TRIM is None, reason="the C library has no malloc_trim")

MIB = 1024 * 1024


def resident() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def test_free_pages_below_a_live_chunk_go_back_to_the_system() -> None:
    """32 MB in 4 KB buffers (C-heap allocations, as SQLite's pages and store answers are),
    all freed but the last: `free` cannot give back pages below a live chunk, trimming does."""
    buffers = [bytes(4000) for _ in range(8000)]
    last = buffers[-1]
    del buffers
    held = resident()
    assert heap.release_free_memory()
    assert resident() < held - 16 * MIB
    assert len(last) == 4000
