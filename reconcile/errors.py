"""Domain errors carry what identifies them; `reconcile.app` maps them to HTTP in one place."""

from __future__ import annotations


class DomainError(Exception):
    status_code = 400
    code = "bad_request"

    def __init__(self, message: str, **identifiers: object) -> None:
        super().__init__(message)
        self.message = message
        self.identifiers = identifiers


class NotFound(DomainError):
    status_code = 404
    code = "not_found"


class UnknownSubscription(NotFound):
    def __init__(self, subscription_id: str) -> None:
        super().__init__(f"no subscription {subscription_id}", subscription_id=subscription_id)


class UnknownAccount(NotFound):
    def __init__(self, account_id: str) -> None:
        super().__init__(f"no account {account_id}", account_id=account_id)


class Conflict(DomainError):
    status_code = 409
    code = "conflict"


class Invalid(DomainError):
    """The request is well-formed but asks for something impossible; nothing was changed."""

    status_code = 422
    code = "invalid"


class UnknownReconciliation(NotFound):
    def __init__(self, run_id: str) -> None:
        super().__init__(f"no reconciliation {run_id}", run_id=run_id)


class StoreNotConfigured(Conflict):
    """Reconciliation was asked of a channel whose store API has no credentials here."""

    code = "store_not_configured"

    def __init__(self, channel: str | None) -> None:
        what = f"the {channel} store" if channel else "any store"
        super().__init__(f"no API credentials configured for {what}", channel=channel)
