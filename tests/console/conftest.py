"""Fixtures of the console tests: browser-like HTTP clients that are closed afterwards."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import httpx
import pytest

from tests.support.console import add_console_user, sign_in
from tests.support.server import RunningApp


@pytest.fixture
def client_for(app: RunningApp) -> Iterator[Callable[..., httpx.Client]]:
    """`client_for(name, role)`: a client signed in as a new user; `client_for()` one signed in
    as nobody. Every client is closed after the test."""
    made: list[httpx.Client] = []

    def make(name: str | None = None, role: str = "viewer",
             running: RunningApp | None = None) -> httpx.Client:
        target = running or app
        client = httpx.Client(base_url=target.url, timeout=30)
        made.append(client)
        if name is not None:
            add_console_user(target, name, role)
            answer = sign_in(client, name)
            assert answer.status_code == 303, answer.text
        return client

    yield make
    for client in made:
        client.close()
