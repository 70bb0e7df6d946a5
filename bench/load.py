"""What the ingest benchmarks share: concurrent posting over real HTTP, and percentiles."""

from __future__ import annotations

import statistics
import threading
import time

import httpx


def post_concurrently(
    urls: list[str],
    path: str,
    bodies: list[bytes],
    clients: int,
    headers: dict[str, str] | None = None,
) -> tuple[list[float], float]:
    """POST every body with `clients` threads (spread over `urls`); latencies and wall time.

    Any answer but 200 stops the run: a benchmark that loses input measures nothing.
    """
    latencies: list[float] = []
    lock = threading.Lock()
    failures: list[str] = []

    def run(index: int) -> None:
        mine: list[float] = []
        with httpx.Client(base_url=urls[index % len(urls)], timeout=30,
                          headers={"Content-Type": "application/json", **(headers or {})}
                          ) as client:
            for body in bodies[index::clients]:
                began = time.perf_counter()
                response = client.post(path, content=body)
                mine.append(time.perf_counter() - began)
                if response.status_code != 200:
                    failures.append(f"{response.status_code}: {response.text[:200]}")
                    return
        with lock:
            latencies.extend(mine)

    started = time.perf_counter()
    threads = [threading.Thread(target=run, args=(i,)) for i in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if failures:
        raise RuntimeError(f"unexpected answer {failures[0]}")
    return latencies, time.perf_counter() - started


def percentile(values: list[float], q: int) -> float:
    return statistics.quantiles(values, n=100)[q - 1] if len(values) > 1 else values[0]
