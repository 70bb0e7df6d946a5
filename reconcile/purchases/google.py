"""Submitted Google Play purchases: read the token's truth from the Play Developer API.

The read is made for our package name, so a token of another app is unknown to Google here;
the product id the app names must be the one Google holds for the token. The purchase is then
normalised exactly as a notification's read would be (`google_normalise`), stamped with the
time of the read, and owes Google the same acknowledgement (or consumption).
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from datetime import datetime
from typing import Any, TypeVar

from reconcile.channels import google_normalise as gn
from reconcile.channels.google_play import PlayClient, PlayPermanentError, PlayUnavailable
from reconcile.purchases.errors import NotThisAppsPurchase, StoreUnreachable
from reconcile.purchases.service import Verified
from reconcile.state import Stamp
from webhooks.google import DeveloperNotification

T = TypeVar("T")


class GoogleSubmissions:
    def __init__(
        self,
        play: PlayClient | None,
        package_name: str | None,
        *,
        consumables: Collection[str] = (),
        test_purchases: bool = True,
    ) -> None:
        self.play = play
        self.package_name = package_name or ""
        self.consumables = frozenset(consumables)
        self.test_purchases = test_purchases

    def subscription(self, token: str, product_id: str, now: datetime) -> Verified:
        play = self._play()
        purchase = _read(lambda: play.get_subscription(token), token)
        held = {item.get("productId") for item in purchase.get("lineItems") or []}
        if product_id not in held:
            raise NotThisAppsPurchase(
                f"the purchase token is for {', '.join(sorted(map(str, held))) or 'no product'}"
                f", not {product_id}")
        self._check_environment(purchase)
        notification = self._notification("subscription", token, product_id, now)
        outcome = _usable(lambda: gn.subscription(notification, purchase, token,
                                                  _stamp(now, token)))
        return Verified(gn.environment(purchase), (outcome,))

    def one_time(self, token: str, product_id: str, now: datetime) -> Verified:
        play = self._play()
        product = _read(lambda: play.get_product(product_id, token), token)
        held = product.get("productId")
        if held is not None and held != product_id:
            raise NotThisAppsPurchase(f"the purchase token is for {held}, not {product_id}")
        self._check_environment(product)
        notification = self._notification("one_time", token, product_id, now)
        outcome = _usable(lambda: gn.one_time(notification, product, token, _stamp(now, token),
                                              self.consumables))
        return Verified(gn.environment(product), (outcome,))

    def _check_environment(self, purchase: dict[str, Any]) -> None:
        if gn.environment(purchase) == "sandbox" and not self.test_purchases:
            raise NotThisAppsPurchase("test purchases (license testers) are not accepted here "
                                      "(RECONCILE_GOOGLE_TEST_PURCHASES=false)")

    def _notification(
        self, kind: str, token: str, product_id: str, now: datetime
    ) -> DeveloperNotification:
        """The submission as the normaliser's input: like a notification that says only
        "look at this token"; what counts is the read."""
        return DeveloperNotification(package_name=self.package_name, event_time=now, kind=kind,
                                     label="PURCHASE_SUBMITTED", purchase_token=token,
                                     sku=product_id if kind == "one_time" else None)

    def _play(self) -> PlayClient:
        if self.play is None:
            raise NotThisAppsPurchase(
                "Google purchases cannot be checked here: the Play Developer API is not "
                "configured (RECONCILE_GOOGLE_PACKAGE_NAME, RECONCILE_GOOGLE_SERVICE_ACCOUNT_FILE)")
        return self.play


def _stamp(now: datetime, token: str) -> Stamp:
    return Stamp(now, f"submitted:{token}")


def _read(call: Callable[[], dict[str, Any]], token: str) -> dict[str, Any]:
    try:
        return call()
    except PlayPermanentError as error:
        # 400, 404, 410: a token Google never issued for this package and product, or gone.
        raise NotThisAppsPurchase(
            f"the purchase token is unknown to Google Play for this app and product "
            f"(Google answered {error.status} {error.reason})") from error
    except PlayUnavailable as error:
        raise StoreUnreachable(f"Google Play could not be reached ({error}): nothing was "
                               "stored, try again") from error


def _usable(normalise: Callable[[], T]) -> T:
    try:
        return normalise()
    except gn.MalformedPurchase as error:
        raise NotThisAppsPurchase(f"Google answered an unusable purchase: {error}") from error
