"""Running the real app over real HTTP in tests: uvicorn in a thread, on a free port."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import httpx
import uvicorn

from reconcile.app import create_app
from reconcile.services import Services


class FakeClock:
    """The service's notion of now, moved by the test: time is an input."""

    def __init__(self, now: datetime | None = None) -> None:
        self.now = now or datetime(2026, 11, 1, 12, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> datetime:
        self.now += timedelta(**delta)
        return self.now


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class RunningApp:
    services: Services
    url: str
    client: httpx.Client

    def drain(self) -> int:
        """Run the background jobs until nothing is due (the worker, synchronously)."""
        return self.services.worker().drain()


@contextmanager
def serve_in_thread(services: Services, admin_token: str | None) -> Iterator[RunningApp]:
    """The app under uvicorn in a daemon thread; the worker is driven by the test instead."""
    port = free_port()
    config = uvicorn.Config(create_app(services, run_worker=False), host="127.0.0.1", port=port,
                            log_level="warning", lifespan="on")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("test server did not start")
        time.sleep(0.01)
    url = f"http://127.0.0.1:{port}"
    headers = {"Authorization": f"Bearer {admin_token}"} if admin_token else {}
    with httpx.Client(base_url=url, headers=headers, timeout=30) as client:
        try:
            yield RunningApp(services, url, client)
        finally:
            server.should_exit = True
            thread.join(10)
