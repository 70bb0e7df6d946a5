"""A virtual clock several processes share through a file: it moves only when one sleeps.

`sleep(s)` moves the shared time to at least the sleeper's own last reading plus `s` (never
back), so processes that wait together wake together, and no test waits for the real clock.
"""

from __future__ import annotations

import fcntl
import struct
from pathlib import Path

_FORMAT = "d"


class SharedClock:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.last = 0.0

    @staticmethod
    def create(path: Path, start: float) -> SharedClock:
        path.write_bytes(struct.pack(_FORMAT, start))
        return SharedClock(path)

    def now(self) -> float:
        with self.path.open("rb") as handle:
            fcntl.flock(handle, fcntl.LOCK_SH)
            (self.last,) = struct.unpack(_FORMAT, handle.read(8))
        return self.last

    def sleep(self, seconds: float) -> None:
        with self.path.open("r+b") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            (shared,) = struct.unpack(_FORMAT, handle.read(8))
            handle.seek(0)
            handle.write(struct.pack(_FORMAT, max(shared, self.last + seconds)))
