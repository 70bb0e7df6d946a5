"""Submitted App Store purchases: verify what the app hands us, ask the App Store what is true.

A signed transaction is verified exactly like a notification (the webhook's `AppleVerifier`:
same roots, bundle id, app id, environments). Its facts are stamped with the transaction's
`purchaseDate` (when they were true), so any notification about something later outranks it.
With the App Store Server API configured, a subscription's authoritative status is read too,
as reconciliation reads it, so a stale transaction cannot grant a period that ended.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from functools import partial
from typing import TypeVar

from appstoreserverlibrary.models.JWSTransactionDecodedPayload import (
    JWSTransactionDecodedPayload,
)
from appstoreserverlibrary.receipt_utility import ReceiptUtility

from reconcile.channels.apple_api import AppleApiError, AppStoreApi
from reconcile.channels.apple_normalise import (
    AUTO_RENEWABLE,
    AppleMessage,
    MalformedPayload,
    millis,
    normalise,
)
from reconcile.channels.apple_truth import AppleTruth
from reconcile.outcomes import Normalised
from reconcile.purchases.errors import NotThisAppsPurchase, StoreUnreachable
from reconcile.purchases.service import Verified
from webhooks.apple import AppleRejected, AppleUnavailable, AppleVerifier

# Apple's advice: ask production first, then the sandbox, for an id it does not know.
ENVIRONMENT_ORDER = ("production", "sandbox")
T = TypeVar("T")
REJECTIONS = {
    "INVALID_APP_IDENTIFIER": "the signed transaction is for another app (bundle id or app id)",
    "INVALID_ENVIRONMENT": "the transaction's environment is not accepted here "
                           "(RECONCILE_APPLE_ENVIRONMENTS, and production needs "
                           "RECONCILE_APPLE_APP_APPLE_ID)",
}


class AppleSubmissions:
    def __init__(self, verifier: AppleVerifier | None, api: AppStoreApi | None) -> None:
        self.verifier = verifier
        self.api = api

    def signed_transaction(self, signed: str) -> Verified:
        verifier = self._verifier()
        environment, transaction = _verified(partial(verifier.verify_transaction, signed))
        return self._verified(environment, [transaction])

    def transaction_id(self, transaction_id: str) -> Verified:
        api, verifier = self._api(), self._verifier()
        for environment in self._environments():
            signed = _read(partial(api.transaction_info, environment, transaction_id))
            if signed is None:
                continue
            transaction = _verified(partial(verifier.transaction, environment, signed))
            return self._verified(environment, [transaction])
        raise NotThisAppsPurchase(f"transaction {transaction_id} is unknown at the App Store")

    def app_receipt(self, receipt: str) -> Verified:
        """Only the transaction id is read from the receipt (nothing in it is trusted); the
        customer's signed transaction history from the API is what is verified and stored."""
        api, verifier = self._api(), self._verifier()
        try:
            transaction_id = ReceiptUtility().extract_transaction_id_from_app_receipt(receipt)
        except ValueError as error:
            raise NotThisAppsPurchase("app_receipt is not a base64 App Store receipt") from error
        if not transaction_id:
            raise NotThisAppsPurchase("the receipt holds no in-app purchase")
        for environment in self._environments():
            history = _read(partial(api.transaction_history, environment, transaction_id))
            if not history:
                continue
            transactions = [
                _verified(partial(verifier.transaction, environment, signed))
                for signed in history
            ]
            return self._verified(environment, transactions)
        raise NotThisAppsPurchase(f"transaction {transaction_id} is unknown at the App Store")

    def _verified(
        self, environment: str, transactions: list[JWSTransactionDecodedPayload]
    ) -> Verified:
        outcomes = [normalise(_message(environment, tx)) for tx in transactions]
        originals = dict.fromkeys(
            tx.originalTransactionId for tx in transactions
            if (tx.rawType or AUTO_RENEWABLE) == AUTO_RENEWABLE and tx.originalTransactionId
        )
        if self.api is not None and self.verifier is not None:
            truth = AppleTruth(self.api, self.verifier)
            for original in originals:
                outcomes.append(self._status(truth, environment, original))
        return Verified(environment, tuple(outcomes))

    def _status(self, truth: AppleTruth, environment: str, original: str) -> Normalised:
        """The subscription's status now, from Get All Subscription Statuses."""
        statuses = _read(partial(truth.api.subscription_statuses, environment, original))
        items = [
            item for group in (statuses.data if statuses else None) or []
            for item in group.lastTransactions or [] if item.originalTransactionId == original
        ]
        if not items:
            raise NotThisAppsPurchase(f"subscription {original} is unknown at the App Store")
        message = _verified(partial(truth.message, environment, items[0]))
        return normalise(message)

    def _verifier(self) -> AppleVerifier:
        if self.verifier is None:
            raise NotThisAppsPurchase("Apple purchases are not accepted here "
                                      "(RECONCILE_APPLE_BUNDLE_ID is not set)")
        return self.verifier

    def _api(self) -> AppStoreApi:
        if self.api is None:
            raise NotThisAppsPurchase(
                "this form needs the App Store Server API, which is not configured here "
                "(RECONCILE_APPLE_KEY_ID, _ISSUER_ID, _PRIVATE_KEY_PATH); submit the "
                "signed_transaction instead")
        return self.api

    def _environments(self) -> list[str]:
        accepted = set(self._api().environments) & set(self._verifier().environments)
        return [env for env in ENVIRONMENT_ORDER if env in accepted]


def _message(environment: str, tx: JWSTransactionDecodedPayload) -> AppleMessage:
    """A lone transaction as the normaliser's input, stamped when its facts were true."""
    one_time = (tx.rawType or AUTO_RENEWABLE) != AUTO_RENEWABLE
    when = max(d for d in (tx.purchaseDate, tx.revocationDate, 0) if d is not None)
    return AppleMessage(
        notification_type="ONE_TIME_CHARGE" if one_time else "STATUS",
        subtype=None,
        notification_id=f"submitted:{tx.transactionId}",
        signed_at=millis(when) or datetime.fromtimestamp(0, UTC),
        environment=environment,
        # A subscription transaction proves a paid period; only a status read knows more.
        status=None if one_time else 5 if tx.revocationDate else 1,
        transaction=tx,
        renewal=None,
    )


def _verified(check: Callable[[], T]) -> T:
    """`check()`, with the verifier's verdicts turned into the submission's answers."""
    try:
        return check()
    except AppleRejected as error:
        raise NotThisAppsPurchase(
            REJECTIONS.get(error.status, f"the signed transaction is not authentic: {error.status}")
        ) from error
    except MalformedPayload as error:
        raise NotThisAppsPurchase(f"the signed transaction is not usable: {error}") from error
    except AppleUnavailable as error:
        raise StoreUnreachable("Apple's certificate revocation check is unreachable: "
                               "nothing was stored, try again") from error


def _read(call: Callable[[], T]) -> T | None:
    """An App Store Server API read; None when Apple does not know the id."""
    try:
        return call()
    except AppleApiError as error:
        if error.transient:
            raise StoreUnreachable(f"the App Store could not be reached ({error}): nothing "
                                   "was stored, try again") from error
        if error.status == 404:
            return None
        raise NotThisAppsPurchase(f"the App Store refused the request: {error}") from error
