"""Fixtures of the console tests: HTTP clients with cookies, and a real browser."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import httpx
import pytest
from playwright.sync_api import Browser, Page, sync_playwright

from tests.support.browser import chromium_path, screenshot_path
from tests.support.console import add_console_user, sign_in
from tests.support.server import RunningApp


@pytest.fixture
def client_for() -> Iterator[Callable[..., httpx.Client]]:
    """`client_for(app, name, role)`: a client of `app` signed in as a new user;
    `client_for(app)` one signed in as nobody. Every client is closed after the test."""
    made: list[httpx.Client] = []

    def make(target: RunningApp, name: str | None = None, role: str = "viewer") -> httpx.Client:
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


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """Keep each phase's report on the test item, so fixtures can tell that a test failed."""
    report = yield
    setattr(item, f"report_{report.when}", report)  # type: ignore[attr-defined]
    return report


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """Chromium of the operating system, headless; the browser tests skip where there is none.

    One per module, not per session: Playwright's sync API keeps an event loop running in this
    thread while it is open, which would break later tests that call asyncio.run."""
    path = chromium_path()
    if path is None:
        pytest.skip("BROWSER TESTS SKIPPED: no Chromium found (apt-get install chromium, or set "
                    "RECONCILE_TEST_CHROMIUM)")
    with sync_playwright() as playwright:
        # --no-sandbox: CI runs as root, where Chromium's sandbox refuses to start.
        launched = playwright.chromium.launch(executable_path=path,
                                              args=["--no-sandbox", "--disable-gpu"])
        yield launched
        launched.close()


@pytest.fixture
def page(browser: Browser, request: pytest.FixtureRequest) -> Iterator[Page]:
    """A fresh browser window 1280 px wide; a screenshot is saved when the test fails."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    context.set_default_timeout(10_000)
    opened = context.new_page()
    yield opened
    report = getattr(request.node, "report_call", None)
    if report is not None and report.failed:
        target = screenshot_path(request.node.name)
        opened.screenshot(path=str(target), full_page=True)
        print(f"screenshot of the failure: {target}")
    context.close()
