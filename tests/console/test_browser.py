"""The console in a real browser: sign in, search, the account page's dialogs, roles, and a
dry-run reconciliation watched live (the worker is driven by the test)."""

from __future__ import annotations

import re

from playwright.sync_api import Page, expect

from tests.fakes.appstore import FakeAppStore
from tests.support.apple_ca import AppleTestCA
from tests.support.apple_truth import store_has, subscribe
from tests.support.console import PASSWORD, add_console_user
from tests.support.policy import apple_subscription, portal_subscription
from tests.support.server import RunningApp

ACCOUNT = "acct-browser-1"


def sign_in(page: Page, app: RunningApp, name: str) -> None:
    """Open the console, land on the sign-in page, and sign in as `name`."""
    page.goto(f"{app.url}/console")
    expect(page).to_have_url(re.compile(r"/console/login"))
    page.get_by_label("Username").fill(name)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("heading", name="Overview")).to_be_visible()


def confirm(page: Page, button: str, reason: str) -> None:
    """Click an action's button, read the consequence, give the reason and confirm."""
    page.get_by_role("button", name=button).first.click()
    dialog = page.get_by_role("dialog")
    expect(dialog).to_be_visible()
    expect(dialog).to_contain_text("nothing is refunded")
    dialog.get_by_label("Reason").fill(reason)
    dialog.get_by_role("button", name="Confirm").click()


def test_search_open_an_account_and_cancel_through_the_dialog(
    page: Page, app: RunningApp, apple_ca: AppleTestCA
) -> None:
    """An agent finds the account by id, cancels the portal subscription in the dialog, and
    sees its cancellation state change; the timeline shows who did it and why."""
    sub = portal_subscription(app, ACCOUNT, expires_at="2026-12-26T10:00:00Z")
    apple_subscription(app, apple_ca, ACCOUNT)
    add_console_user(app, "bob", "agent")
    sign_in(page, app, "bob")
    page.get_by_label("Search").fill(ACCOUNT)
    page.get_by_label("Search").press("Enter")
    expect(page.get_by_role("heading", name=f"Account {ACCOUNT}")).to_be_visible()
    card = page.locator(f"article#{sub['id']}")
    expect(card.locator(".cancellation")).to_have_text("None")
    card.get_by_role("button", name="Cancel subscription").click()
    dialog = page.get_by_role("dialog")
    expect(dialog).to_contain_text("access continues until 2026-12-26; nothing is refunded.")
    dialog.get_by_label("Reason").fill("customer asked on the phone")
    dialog.get_by_role("button", name="Confirm").click()
    expect(page.get_by_role("status")).to_have_text("The cancellation was recorded.")
    expect(card.locator(".cancellation")).to_contain_text("Cancelled: renewal off")
    expect(card.locator("dt:has-text('Auto-renew') + dd")).to_have_text("Off")
    expect(page.locator(".timeline")).to_contain_text("customer asked on the phone")


def test_the_dialog_works_from_the_keyboard(page: Page, app: RunningApp) -> None:
    """Enter on an action opens the dialog with the focus in its first field; Escape closes it
    and gives the focus back to the button."""
    portal_subscription(app, ACCOUNT)
    add_console_user(app, "alice", "admin")
    sign_in(page, app, "alice")
    page.goto(f"{app.url}/console/accounts/{ACCOUNT}")
    button = page.get_by_role("button", name="Block account")
    button.focus()
    page.keyboard.press("Enter")
    expect(page.get_by_role("dialog")).to_be_visible()
    expect(page.get_by_label("Reason")).to_be_focused()
    page.keyboard.press("Escape")
    expect(page.get_by_role("dialog")).to_be_hidden()
    expect(button).to_be_focused()


def test_block_and_unblock(page: Page, app: RunningApp) -> None:
    """An admin blocks the account (access ends, the block and its reason show) and unblocks
    it again."""
    portal_subscription(app, ACCOUNT)
    add_console_user(app, "alice", "admin")
    sign_in(page, app, "alice")
    page.goto(f"{app.url}/console/accounts/{ACCOUNT}")
    confirm(page, "Block account", "spam complaints")
    expect(page.get_by_role("heading", name=re.compile("Blocked since"))).to_be_visible()
    expect(page.get_by_text("Reason: spam complaints")).to_be_visible()
    expect(page.get_by_text("No access now", exact=True)).to_be_visible()
    page.get_by_role("button", name="Unblock account").click()
    dialog = page.get_by_role("dialog")
    expect(dialog).to_contain_text("Access returns for any paid period still running")
    dialog.get_by_label("Reason").fill("appeal accepted")
    dialog.get_by_role("button", name="Confirm").click()
    expect(page.get_by_role("button", name="Block account")).to_be_visible()
    expect(page.get_by_role("heading", name=re.compile("Blocked since"))).to_have_count(0)


def test_viewer_sees_no_actions_and_forged_posts_are_refused(
    page: Page, app: RunningApp
) -> None:
    """A viewer's page has no action buttons; a post above the role, or one without the CSRF
    token, answers 403 and leaves the account as it was."""
    portal_subscription(app, ACCOUNT)
    add_console_user(app, "vic", "viewer")
    sign_in(page, app, "vic")
    page.goto(f"{app.url}/console/accounts/{ACCOUNT}")
    expect(page.get_by_role("heading", name=f"Account {ACCOUNT}")).to_be_visible()
    for name in ("Cancel subscription", "Change plan", "Block account", "Port out"):
        expect(page.get_by_role("button", name=name)).to_have_count(0)
    token = page.locator("input[name=csrf_token]").first.input_value()
    above_role = page.request.post(f"{app.url}/console/accounts/{ACCOUNT}/block",
                                   form={"reason": "x", "csrf_token": token})
    assert above_role.status == 403
    forged = page.request.post(f"{app.url}/console/accounts/{ACCOUNT}/block",
                               form={"reason": "x", "csrf_token": "forged"})
    assert forged.status == 403
    assert app.client.get(f"/v1/accounts/{ACCOUNT}").json()["blocked"] is None


def test_dry_run_reconciliation_watched_live_then_repaired(
    page: Page, recon_app: RunningApp, apple_ca: AppleTestCA, fake_appstore: FakeAppStore
) -> None:
    """A dry run started from the console shows its progress, then its discrepancy (renewal
    turned off at the store); "Repair now" repairs it."""
    subscribe(recon_app, apple_ca, "7301", account=ACCOUNT)
    store_has(fake_appstore, "7301", auto_renew=0)
    add_console_user(recon_app, "alice", "admin")
    sign_in(page, recon_app, "alice")
    page.get_by_role("link", name="Reconciliation").click()
    page.get_by_label("Dry run (report only)").check()
    page.get_by_label("Everything").check()
    page.get_by_role("button", name="Start reconciliation").click()
    expect(page.get_by_role("heading", name=re.compile("Dry run"))).to_be_visible()
    expect(page.locator("#run-progress")).to_contain_text("Running")
    recon_app.drain()
    expect(page.locator("#run-progress")).to_contain_text("Done")
    row = page.get_by_role("row", name=re.compile("auto renew"))
    expect(row).to_contain_text("7301")
    expect(row).to_contain_text("No")
    page.get_by_role("link", name=re.compile(r"^auto renew \(1\)")).click()
    expect(page.get_by_role("row")).to_have_count(2)
    page.get_by_role("button", name="Repair now").click()
    expect(page.get_by_role("heading", name=re.compile("Repair"))).to_be_visible()
    recon_app.drain()
    expect(page.locator("#run-progress")).to_contain_text("Done")
    expect(page.get_by_role("row", name=re.compile("auto renew"))).to_contain_text("Yes")
