"""GET load from `wrk` (Debian package `wrk`), a C load generator: on two shared cores a Python
client spends as much CPU as the service it measures, and its own queueing shows up as latency.

`wrk_get` cycles each connection through a list of paths for a fixed time and reports what
`wrk` measured: requests per second, p50 and p99 latency, and every non-2xx answer (which stops
the benchmark: a run that loses requests measures nothing).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
from pathlib import Path

_SCRIPT = """
local paths = {}
local next_path = 0
init = function(args)
  for line in io.lines(args[1]) do paths[#paths + 1] = line end
  next_path = math.random(#paths)
end
request = function()
  next_path = next_path % #paths + 1
  return wrk.format(nil, paths[next_path])
end
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '\\n{"requests": %d, "seconds": %f, "errors": %d, "non_2xx": %d, '
    .. '"p50_us": %d, "p99_us": %d}\\n',
    summary.requests, summary.duration / 1e6, e.connect + e.read + e.write + e.timeout,
    e.status, latency:percentile(50), latency:percentile(99)))
end
"""


def available() -> bool:
    return shutil.which("wrk") is not None


def wrk_get(
    url: str, paths: list[str], clients: int, seconds: float,
    headers: dict[str, str] | None = None, threads: int = 1,
) -> dict[str, float]:
    """`clients` keep-alive connections GETting `paths` in turn for `seconds`."""
    with tempfile.TemporaryDirectory() as folder:
        script = Path(folder) / "paths.lua"
        script.write_text(_SCRIPT)
        listing = Path(folder) / "paths.txt"
        listing.write_text("\n".join(paths) + "\n")
        command = ["wrk", f"-t{threads}", f"-c{clients}", f"-d{seconds}s", "--timeout", "10s",
                   "-s", str(script)]
        for name, value in (headers or {}).items():
            command += ["-H", f"{name}: {value}"]
        output = subprocess.run([*command, url, str(listing)], check=True, capture_output=True,
                                text=True).stdout
    result = json.loads(output.strip().splitlines()[-1])
    if result["errors"] or result["non_2xx"]:
        raise RuntimeError(f"wrk saw {result['errors']} errors, {result['non_2xx']} non-2xx")
    return {"per_second": result["requests"] / result["seconds"],
            "p50_ms": result["p50_us"] / 1000, "p99_ms": result["p99_us"] / 1000}
