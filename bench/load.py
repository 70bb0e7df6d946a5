"""What the ingest benchmarks share: concurrent posting over real HTTP, and percentiles."""

from __future__ import annotations

import http.client
import socket
import statistics
import threading
import time
from urllib.parse import urlsplit

# One request of a run: method, path, body.
Request = tuple[str, str, bytes]


def send_concurrently(
    urls: list[str],
    requests: list[Request],
    clients: int,
    headers: dict[str, str] | None = None,
    expect: int = 200,
) -> tuple[list[float], float]:
    """Send every request with `clients` threads (spread over `urls`); latencies and wall time.

    Each thread keeps one connection open and writes each request in one piece, as most HTTP
    clients do with a small body (`http.client` would send a body over its MSS guess apart from
    the headers); the answer is read with `http.client`. The load generator shares the
    machine's cores with the service, so it should cost little. Any answer but `expect` stops
    the run: a benchmark that loses input measures nothing.
    """
    latencies: list[float] = []
    lock = threading.Lock()
    failures: list[str] = []

    def run(index: int) -> None:
        mine: list[float] = []
        url = urlsplit(urls[index % len(urls)])
        head = "".join(
            f"{name}: {value}\r\n" for name, value in
            {"Host": url.netloc, "Content-Type": "application/json", **(headers or {})}.items()
        )
        connection = socket.create_connection((url.hostname, url.port), timeout=30)
        connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            for method, path, body in requests[index::clients]:
                began = time.perf_counter()
                connection.sendall(
                    f"{method} {path} HTTP/1.1\r\n{head}Content-Length: {len(body)}\r\n\r\n"
                    .encode() + body)
                response = http.client.HTTPResponse(connection)
                response.begin()
                answer = response.read()
                mine.append(time.perf_counter() - began)
                if response.status != expect:
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


def post_concurrently(
    urls: list[str],
    path: str,
    bodies: list[bytes],
    clients: int,
    headers: dict[str, str] | None = None,
) -> tuple[list[float], float]:
    """POST every body to `path` (see `send_concurrently`)."""
    return send_concurrently(urls, [("POST", path, body) for body in bodies], clients, headers)


def get_concurrently(
    url: str, paths: list[str], clients: int, headers: dict[str, str] | None = None
) -> tuple[list[float], float]:
    """GET every path (see `send_concurrently`)."""
    return send_concurrently([url], [("GET", path, b"") for path in paths], clients, headers)


def percentile(values: list[float], q: int) -> float:
    return statistics.quantiles(values, n=100)[q - 1] if len(values) > 1 else values[0]
