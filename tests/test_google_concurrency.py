"""Two workers on one inbox: token chains still end as one subscription each, reads stay few."""

from __future__ import annotations

import threading
from collections.abc import Callable

from reconcile.config import Settings
from reconcile.services import build_services
from reconcile.worker import InboxJob
from tests.conftest import ADMIN_TOKEN
from tests.fakes.play import FakePlay, subscription_purchase
from tests.support.google import Pusher, subscription_notification
from tests.support.oidc import OidcIssuer
from tests.support.server import FakeClock, serve_in_thread

CUSTOMERS = 8


def test_two_workers_build_each_chain_once(
    make_google_settings: Callable[..., Settings], fake_play: FakePlay, clock: FakeClock,
    oidc: OidcIssuer,
) -> None:
    """Upgrades A->B pushed in both orders and drained by two workers give one chain each."""
    first = build_services(make_google_settings(worker_batch_size=5), clock=clock)
    second = build_services(make_google_settings(worker_batch_size=5), clock=clock)
    with serve_in_thread(first, ADMIN_TOKEN) as app:
        pusher = Pusher(app.client, oidc)
        for n in range(CUSTOMERS):
            old, new = f"A{n}", f"B{n}"
            fake_play.subscriptions[old] = subscription_purchase(
                "basic", state="SUBSCRIPTION_STATE_EXPIRED", canceled="replacement",
                account_id=f"acct-{n}", acknowledged=True, now=clock.now)
            fake_play.subscriptions[new] = subscription_purchase(
                "premium", linked_purchase_token=old, account_id=f"acct-{n}",
                acknowledged=True, now=clock.now)
            order = (new, old) if n % 2 else (old, new)
            for token in order:
                pusher.push(subscription_notification(token, 4, clock.now))
                pusher.push(subscription_notification(token, 2, clock.now))
        jobs = [job for services in (first, second) for job in services.jobs
                if isinstance(job, InboxJob)]

        def drain(job: InboxJob) -> None:
            while job.run_once(clock.now):
                pass

        threads = [threading.Thread(target=drain, args=(job,)) for job in jobs]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        clock.advance(hours=2)  # anything that lost a race is retried after its backoff
        app.drain()

        subs = app.client.get("/v1/subscriptions", params={"limit": 100}).json()["items"]
        assert sorted((s["store_id"], sorted(s["store_ids"]), s["product_id"]) for s in subs) == (
            sorted((f"B{n}", [f"A{n}", f"B{n}"], "premium") for n in range(CUSTOMERS)))
        processed = app.client.get("/metrics").text
        assert 'status="pending"' not in processed
        assert 'status="failed"' not in processed
    first.close()
    second.close()
    reads = fake_play.calls_named("subscriptionsv2.get")
    assert len(reads) <= 4 * CUSTOMERS
