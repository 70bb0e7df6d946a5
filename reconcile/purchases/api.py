"""POST /v1/purchases: the business's backend hands over a purchase made in the app just now.

The answer comes after the purchase is verified with the store, stored through the same path
as notifications and linked to the account: the app may unlock at once.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError
from starlette.concurrency import run_in_threadpool

from reconcile.api.deps import ServicesDep
from reconcile.db import is_conflict, transaction
from reconcile.purchases.apple import AppleSubmissions
from reconcile.purchases.errors import SubmissionError
from reconcile.purchases.google import GoogleSubmissions
from reconcile.purchases.service import Verified, store
from reconcile.services import Services
from reconcile.store_records import ensure_account
from reconcile.views import account_document

router = APIRouter(tags=["purchases"])

AccountId = Annotated[str, Field(min_length=1, max_length=128)]
Signed = Annotated[str, Field(min_length=1, max_length=65_536)]
StoreKey = Annotated[str, Field(min_length=1, max_length=512)]
# Lost races with the worker (the same purchase notified at this moment) are simply rerun.
ATTEMPTS = 5


class _Form(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    account_id: AccountId


class AppleSigned(_Form):
    channel: Literal["apple"]
    signed_transaction: Signed


class AppleTransactionId(_Form):
    channel: Literal["apple"]
    transaction_id: Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[0-9]+$")]


class AppleReceipt(_Form):
    channel: Literal["apple"]
    app_receipt: Annotated[str, Field(min_length=1, max_length=1_048_576)]


class GoogleToken(_Form):
    channel: Literal["google"]
    purchase_token: StoreKey
    product_id: Annotated[str, Field(min_length=1, max_length=256)]
    type: Literal["subscription", "one_time"]


Submission = AppleSigned | AppleTransactionId | AppleReceipt | GoogleToken
FORMS = (AppleSigned, AppleTransactionId, AppleReceipt, GoogleToken)
_SHAPES = TypeAdapter[Submission](Submission)
SHAPES_HELP = (
    'body must be one of {"account_id", "channel": "apple", "signed_transaction"}, '
    '{"account_id", "channel": "apple", "transaction_id"}, '
    '{"account_id", "channel": "apple", "app_receipt"}, '
    '{"account_id", "channel": "google", "purchase_token", "product_id", '
    '"type": "subscription" | "one_time"}'
)


@router.post(
    "/v1/purchases",
    responses={400: {"description": "not one of the shapes"},
               409: {"description": "owned by another account (policy keep)"},
               422: {"description": "not a valid purchase of this app"},
               503: {"description": "the store could not be reached; nothing stored"}},
    # The body is read by hand (a wrong shape is 400, not FastAPI's 422): described here.
    openapi_extra={"requestBody": {"required": True, "content": {"application/json": {
        "schema": {"oneOf": [form.model_json_schema() for form in FORMS]},
    }}}},
)
async def submit_purchase(
    request: Request,
    services: ServicesDep,
) -> JSONResponse:
    """Verify a purchase with its store, store it, link it to the account, answer the view."""
    raw = await request.body()
    try:
        submission = _SHAPES.validate_python(json.loads(raw))
    except (ValueError, RecursionError, ValidationError):  # also JSON, UTF-8, nesting
        return JSONResponse({"detail": SHAPES_HELP}, status_code=400)
    try:
        document = await run_in_threadpool(_submit, services, submission)
    except SubmissionError as error:
        return JSONResponse(error.body(), status_code=error.status)
    return JSONResponse(document)


def _submit(services: Services, submission: Submission) -> dict[str, Any]:
    now = services.clock()
    verified = _verify(services, submission, now)
    transfer = services.settings.transfer_policy == "transfer"
    for attempt in range(1, ATTEMPTS + 1):
        try:
            with transaction(services.sessions) as session:
                # Held until the commit: the session keeps a loaded row only while something
                # refers to it, and the ingest below asks for this account again.
                account = ensure_account(session, submission.account_id, now)
                store(session, verified, account.account_id, transfer=transfer, now=now,
                      catalog=services.catalog)
                document = account_document(session, account.account_id, now,
                                            services.catalog)
            break
        except Exception as error:
            if attempt == ATTEMPTS or not is_conflict(error):
                raise
    # Acknowledgements (Google) wait for the worker: wake it rather than wait for its poll.
    services.new_work.set()
    assert document is not None
    return document


def _verify(services: Services, submission: Submission, now: datetime) -> Verified:
    """The store's verified truth about the submission; nothing is stored yet."""
    if isinstance(submission, GoogleToken):
        settings = services.settings
        google = GoogleSubmissions(
            services.play, settings.google_package_name,
            consumables=[*settings.google_consumable_products, *services.catalog.credit_products],
            test_purchases=settings.google_test_purchases,
        )
        if submission.type == "subscription":
            return google.subscription(submission.purchase_token, submission.product_id, now)
        return google.one_time(submission.purchase_token, submission.product_id, now)
    apple = AppleSubmissions(services.apple, services.apple_api)
    if isinstance(submission, AppleSigned):
        return apple.signed_transaction(submission.signed_transaction)
    if isinstance(submission, AppleTransactionId):
        return apple.transaction_id(submission.transaction_id)
    return apple.app_receipt(submission.app_receipt)
