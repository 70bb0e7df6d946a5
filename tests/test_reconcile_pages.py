"""A large reconciliation report: counts and a first page inline, the rest paged by cursor."""

from __future__ import annotations

from sqlalchemy import insert

from reconcile.db import transaction
from reconcile.models import Discrepancy, ReconciliationRun
from reconcile.views import encode_cursor
from tests.support.server import FakeClock, RunningApp

KINDS = ("auto_renew", "expires_at", "status")


def plant_run(app: RunningApp, clock: FakeClock, found: int) -> str:
    """A finished run with `found` discrepancies, kinds in turn."""
    with transaction(app.services.sessions) as session:
        session.add(ReconciliationRun(id="rec_big", status="done", dry_run=True, filters={},
                                      checked=found, checkpoint={"total": found},
                                      started_at=clock(), finished_at=clock()))
        session.flush()
        session.execute(insert(Discrepancy), [
            {"run_id": "rec_big", "channel": "apple", "store_id": str(9000 + n),
             "subscription_id": f"sub_{n}", "kind": KINDS[n % 3], "here": "a", "store": "b",
             "repaired": False} for n in range(found)])
    return "rec_big"


def test_a_run_shows_counts_and_its_first_page(app: RunningApp, clock: FakeClock) -> None:
    """GET /v1/reconciliations/{id} answers counts by kind and the first 100 discrepancies,
    with a cursor that the discrepancies list continues from."""
    run_id = plant_run(app, clock, 250)
    report = app.client.get(f"/v1/reconciliations/{run_id}").json()
    assert report["counts"] == {"auto_renew": 84, "expires_at": 83, "status": 83}
    assert [d["store_id"] for d in report["discrepancies"]] == [str(9000 + n) for n in range(100)]
    rest = app.client.get(f"/v1/reconciliations/{run_id}/discrepancies",
                          params={"cursor": report["discrepancies_next_cursor"]}).json()
    assert [d["store_id"] for d in rest["items"]] == [str(9100 + n) for n in range(100)]


def test_discrepancies_list_pages_through_one_kind(app: RunningApp, clock: FakeClock) -> None:
    """Following `next_cursor` lists every discrepancy of a kind once, in the order found."""
    run_id = plant_run(app, clock, 250)
    seen: list[str] = []
    cursor = None
    while True:
        params: dict[str, str | int] = {"kind": "status", "limit": 30}
        if cursor:
            params["cursor"] = cursor
        page = app.client.get(f"/v1/reconciliations/{run_id}/discrepancies", params=params)
        assert page.status_code == 200, page.text
        seen += [d["store_id"] for d in page.json()["items"]]
        assert all(d["kind"] == "status" for d in page.json()["items"])
        cursor = page.json()["next_cursor"]
        if cursor is None:
            break
    assert seen == [str(9000 + n) for n in range(250) if n % 3 == 2]


def test_discrepancies_list_refuses_bad_input(app: RunningApp, clock: FakeClock) -> None:
    """An unknown run is 404, an unknown kind 422, a cursor not ours 400."""
    run_id = plant_run(app, clock, 3)
    client = app.client
    assert client.get("/v1/reconciliations/rec_nope/discrepancies").status_code == 404
    assert client.get(f"/v1/reconciliations/{run_id}/discrepancies",
                      params={"kind": "bogus"}).status_code == 422
    for cursor in ("!!", encode_cursor("-1"), encode_cursor(str(2**64))):
        assert client.get(f"/v1/reconciliations/{run_id}/discrepancies",
                          params={"cursor": cursor}).status_code == 400
    small = client.get(f"/v1/reconciliations/{run_id}").json()
    assert small["discrepancies_next_cursor"] is None
    assert len(small["discrepancies"]) == 3
