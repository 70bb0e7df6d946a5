"""Screenshots of every console page at 1280 px and 390 px wide, on the bench data set.

    python -m bench.console_data --database-url sqlite:///demo.db --no-time
    python -m scripts.console_screenshots --database-url sqlite:///demo.db --out docs/console

Serves the app on a free port, signs in as alice (admin) in Debian's Chromium, and saves one
PNG per page and width (the visible window; `--full` saves whole pages, for looking closer).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from playwright.sync_api import Page, sync_playwright

from bench.console_data import PASSWORD
from reconcile.config import Settings
from reconcile.services import build_services
from tests.support.browser import chromium_path
from tests.support.server import serve_in_thread

WIDTHS = {"wide": (1280, 900), "narrow": (390, 844)}
ACCOUNT = "acct-000021"  # App Store and Google Play, credits, a failing endpoint
BLOCKED = "acct-000005"
RUN = "rec_demo0000000000000000"
PAGES = [
    ("overview", "/console", None),
    ("search-results", "/console/search?q=r", None),
    ("nothing-found", "/console/search?q=no-such-id", None),
    ("account", f"/console/accounts/{ACCOUNT}", None),
    ("account-ledger", f"/console/accounts/{ACCOUNT}", "ledger"),
    ("account-timeline", f"/console/accounts/{ACCOUNT}", "#tl-h"),
    ("account-blocked", f"/console/accounts/{BLOCKED}", None),
    ("reconciliations", "/console/reconciliations", None),
    ("reconciliation", f"/console/reconciliations/{RUN}", None),
    ("audit", "/console/audit", None),
]
DIALOGS = ["Cancel subscription", "Change plan", "Block account", "Port out", "Record consent",
           "Adjust credits"]


def shoot(page: Page, out: Path, name: str, full: bool) -> None:
    page.screenshot(path=str(out / f"{name}.png"), full_page=full)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--database-url", required=True)
    parser.add_argument("--out", default="docs/console")
    parser.add_argument("--full", action="store_true")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = chromium_path()
    if path is None:
        raise SystemExit("no Chromium found (apt-get install chromium)")
    services = build_services(Settings(_env_file=None, database_url=args.database_url))
    with serve_in_thread(services, None) as running, sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=path,
                                             args=["--no-sandbox", "--disable-gpu"])
        for width_name, (width, height) in WIDTHS.items():
            context = browser.new_context(viewport={"width": width, "height": height})
            page = context.new_page()
            page.goto(f"{running.url}/console/login")
            shoot(page, out, f"login-{width_name}", args.full)
            page.get_by_label("Username").fill("alice")
            page.get_by_label("Password").fill(PASSWORD)
            page.get_by_role("button", name="Sign in").click()
            page.wait_for_url("**/console")
            for name, target, focus in PAGES:
                page.goto(running.url + target)
                if focus == "ledger":
                    page.get_by_text("Ledger: the newest").click()
                    page.locator("details").first.scroll_into_view_if_needed()
                elif focus:
                    page.locator(focus).scroll_into_view_if_needed()
                shoot(page, out, f"{name}-{width_name}", args.full and not focus)
            for button in DIALOGS:
                page.goto(f"{running.url}/console/accounts/{ACCOUNT}")
                page.get_by_role("button", name=button).first.click()
                page.locator("dialog[open]").wait_for()
                slug = button.lower().replace(" ", "-")
                shoot(page, out, f"confirm-{slug}-{width_name}", False)
            context.close()
        browser.close()
    services.close()


if __name__ == "__main__":
    main()
