"""CPU per request of the App Store client's transport: `keepalive.Origin` against urllib3.

Both send the same GET with the library's three headers over one kept-alive HTTP/1.1
connection to a local server in another process (so only the client's CPU is counted) and read
a 2 KB JSON answer, alternating rounds so that a drift of the machine's speed hits both.

    python -m bench.http_client                 # 3,000 requests a round, 3 rounds each
"""

from __future__ import annotations

import argparse
import http.server
import json
import multiprocessing as mp
import statistics
import time
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any

import urllib3

from reconcile.channels.keepalive import Origin

BODY = json.dumps({"data": [{"signedTransactionInfo": "x" * 2000}]}).encode()
HEADERS = {"Authorization": "Bearer " + "t" * 300, "Accept": "application/json",
           "User-Agent": "app-store-server-library/python/3.1.2"}
PATH = "/inApps/v1/subscriptions/1000000001"


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body go out as two writes

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(BODY)))
        self.end_headers()
        self.wfile.write(BODY)

    def log_message(self, *args: Any) -> None:
        pass


def serve(pipe: Connection) -> None:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    pipe.send(server.server_address[1])
    server.serve_forever()


def cpu_per_request(send: Callable[[], None], count: int) -> float:
    send()  # connect outside the measurement
    started = time.process_time()
    for _ in range(count):
        send()
    return (time.process_time() - started) / count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    parent, child = mp.get_context("spawn").Pipe()
    server = mp.get_context("spawn").Process(target=serve, args=(child,), daemon=True)
    server.start()
    port = parent.recv()
    url = f"http://127.0.0.1:{port}"
    pool = urllib3.PoolManager(maxsize=4, retries=False,
                               timeout=urllib3.Timeout(connect=10.0, read=30.0))
    origin = Origin(url, connect_timeout=10.0, read_timeout=30.0)

    def by_urllib3() -> None:
        assert len(pool.request("GET", url + PATH, headers=HEADERS).data) == len(BODY)

    def by_origin() -> None:
        assert len(origin.request("GET", PATH, HEADERS).body) == len(BODY)

    figures: dict[str, list[float]] = {"urllib3": [], "keepalive.Origin": []}
    for _ in range(args.rounds):
        figures["urllib3"].append(cpu_per_request(by_urllib3, args.requests))
        figures["keepalive.Origin"].append(cpu_per_request(by_origin, args.requests))
    for name, values in figures.items():
        print(f"{name:>17}: {1e6 * statistics.median(values):6.0f} us CPU a request "
              f"(rounds: {', '.join(f'{1e6 * v:.0f}' for v in values)})")
    origin.close()
    server.terminate()


if __name__ == "__main__":
    main()
