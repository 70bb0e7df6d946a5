"""A real browser for the console tests: Playwright driving the operating system's Chromium.

`playwright install` downloads browsers, which this project does not rely on: the suite uses
Debian's `chromium` package (scripts/test.sh installs it when missing) through
`executable_path`. Where no Chromium can be found the browser tests are skipped, loudly.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
ARTIFACTS = Path(os.environ.get("RECONCILE_TEST_ARTIFACTS", "test-artifacts"))


def chromium_path() -> str | None:
    """RECONCILE_TEST_CHROMIUM, else the first Chromium on PATH."""
    configured = os.environ.get("RECONCILE_TEST_CHROMIUM")
    if configured:
        return configured
    for name in CANDIDATES:
        found = shutil.which(name)
        if found:
            return found
    return None


def screenshot_path(test_name: str) -> Path:
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in test_name)
    path = ARTIFACTS / "screenshots" / f"{safe}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    return path
