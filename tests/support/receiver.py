"""A real webhook receiver on a loopback port: verifies every delivery with the
`standardwebhooks` package, answers as told per path (2xx, 500, 410, a hang, a delay), and
records what arrived in order."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from standardwebhooks.webhooks import Webhook, WebhookVerificationError


@dataclass
class Received:
    path: str
    event: dict[str, Any]
    headers: dict[str, str]
    verified_with: list[str]  # which of the path's secrets verified it
    answered: int


@dataclass
class Receiver:
    url: str
    secrets: dict[str, list[str]] = field(default_factory=dict)
    # Per path: "ok", "fail" (500), "gone" (410), "hang" (until `release`), or seconds to wait.
    behaviour: dict[str, str | float] = field(default_factory=dict)
    received: list[Received] = field(default_factory=list)
    # (path, webhook-id) of every request as it arrives, before it is answered.
    arrived: list[tuple[str, str]] = field(default_factory=list)
    release: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def at(self, path: str) -> str:
        return f"{self.url}{path}"

    def delivered(self, path: str) -> list[dict[str, Any]]:
        """The events answered 2xx at `path`, in arrival order."""
        with self.lock:
            return [r.event for r in self.received if r.path == path and r.answered < 300]

    def arrivals(self, path: str) -> list[Received]:
        with self.lock:
            return [r for r in self.received if r.path == path]

    def wait_for(self, path: str, count: int, timeout: float = 30.0) -> list[dict[str, Any]]:
        """Poll until `count` events were delivered at `path` (the sender runs on its own)."""
        deadline = time.monotonic() + timeout
        while True:
            found = self.delivered(path)
            if len(found) >= count or time.monotonic() > deadline:
                return found
            time.sleep(0.02)


def _handler(receiver: Receiver) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            """Quiet."""

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("content-length", "0")))
            headers = {k.lower(): v for k, v in self.headers.items()}
            verified = []
            for secret in receiver.secrets.get(self.path, []):
                try:
                    Webhook(secret).verify(body, headers)
                except WebhookVerificationError:
                    continue
                verified.append(secret)
            with receiver.lock:
                receiver.arrived.append((self.path, headers.get("webhook-id", "")))
            mode = receiver.behaviour.get(self.path, "ok")
            if mode == "hang":
                receiver.release.wait(60)
            elif isinstance(mode, float | int):
                time.sleep(float(mode))
            status = {"fail": 500, "gone": 410}.get(str(mode), 200 if verified else 400)
            with receiver.lock:
                receiver.received.append(Received(self.path, json.loads(body), headers,
                                                  verified, status))
            self.send_response(status)
            self.send_header("content-length", "0")
            self.end_headers()

    return Handler


@contextmanager
def running_receiver() -> Iterator[Receiver]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(Receiver("")))
    receiver = Receiver(f"http://127.0.0.1:{server.server_address[1]}")
    server.RequestHandlerClass = _handler(receiver)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield receiver
    finally:
        receiver.release.set()
        server.shutdown()
        server.server_close()
