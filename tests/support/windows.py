"""Rates over time as the stores count them: the most events in any sliding window."""

from __future__ import annotations

from collections.abc import Iterable


def most_in_window(times: Iterable[float], window: float) -> int:
    """The most of `times` (seconds) that fall within any span shorter than `window`."""
    ordered = sorted(times)
    best = first = 0
    for last, at in enumerate(ordered):
        while at - ordered[first] >= window:
            first += 1
        best = max(best, last - first + 1)
    return best
