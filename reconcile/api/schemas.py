"""Request bodies of the policy endpoints: strict, so a bad request changes nothing (422)."""

from __future__ import annotations

from typing import Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, StrictBool

from reconcile.cancellation import Reason

Note = Field(default=None, max_length=2000)

# Closed words of the query filters (the channels and statuses are reconcile.state's enums).
Environment = Literal["production", "sandbox"]
RequestState = Literal["pending", "sent", "skipped", "failed"]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class CancelBody(Strict):
    reason: Reason
    note: str | None = Note


class ChangePlanBody(Strict):
    product_id: str = Field(min_length=1, max_length=256)


class BlockBody(Strict):
    reason: str = Field(min_length=1, max_length=2000)


class PortOutBody(Strict):
    note: str | None = Note


class ConsentBody(Strict):
    consumption_data: StrictBool


class PortalCreateBody(Strict):
    account_id: str = Field(min_length=1, max_length=128)
    product_id: str = Field(min_length=1, max_length=256)
    expires_at: AwareDatetime
    auto_renew: StrictBool = True
    # The portal's own id for the subscription; one is made up when absent.
    store_id: str | None = Field(default=None, min_length=1, max_length=200)


class PortalPatchBody(Strict):
    account_id: str | None = Field(default=None, min_length=1, max_length=128)
    product_id: str | None = Field(default=None, min_length=1, max_length=256)
    expires_at: AwareDatetime | None = None
    auto_renew: StrictBool | None = None
