"""What can go wrong with a submitted purchase, each with the HTTP answer the contract gives it."""

from __future__ import annotations


class SubmissionError(Exception):
    """A submission that was not stored; `status` and `detail` are the answer."""

    status = 400

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail

    def body(self) -> dict[str, str]:
        return {"detail": self.detail}


class NotThisAppsPurchase(SubmissionError):
    """Forged, tampered, another app's, an environment not accepted, unknown at the store."""

    status = 422


class StoreUnreachable(SubmissionError):
    """The store could not answer now; nothing was stored, so the caller may simply retry."""

    status = 503


class OwnedElsewhere(SubmissionError):
    """The store purchase belongs to another account and the policy keeps it there."""

    status = 409

    def __init__(self, owner: str) -> None:
        super().__init__("this purchase belongs to another account "
                         "(RECONCILE_TRANSFER_POLICY=keep)")
        self.owner = owner

    def body(self) -> dict[str, str]:
        return {"detail": self.detail, "account_id": self.owner}
