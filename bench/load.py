"""What the ingest benchmarks share: concurrent posting over real HTTP, and percentiles."""

from __future__ import annotations

import http.client
import statistics
import threading
import time
from urllib.parse import urlsplit


def post_concurrently(
    urls: list[str],
    path: str,
    bodies: list[bytes],
    clients: int,
    headers: dict[str, str] | None = None,
) -> tuple[list[float], float]:
    """POST every body with `clients` threads (spread over `urls`); latencies and wall time.

    Each thread keeps one connection open and uses the standard library's `http.client`: the
    load generator shares the machine's cores with the service, so it should cost little.
    Any answer but 200 stops the run: a benchmark that loses input measures nothing.
    """
    latencies: list[float] = []
    lock = threading.Lock()
    failures: list[str] = []

    def run(index: int) -> None:
        mine: list[float] = []
        url = urlsplit(urls[index % len(urls)])
        connection = http.client.HTTPConnection(url.hostname or "127.0.0.1", url.port, timeout=30)
        sent = {"Content-Type": "application/json", **(headers or {})}
        try:
            for body in bodies[index::clients]:
                began = time.perf_counter()
                connection.request("POST", path, body, sent)
                response = connection.getresponse()
                answer = response.read()
                mine.append(time.perf_counter() - began)
                if response.status != 200:
                    failures.append(f"{response.status}: {answer[:200]!r}")
                    return
        finally:
            connection.close()
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
