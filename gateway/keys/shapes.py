"""The response shapes of the admin API, `gateway keys --json` and the dashboard (SPEC §9).

One source for each body: these models render it (`gateway.keys.render` builds them with
`model_construct`, the values coming from our own records, and dumps them in JSON mode)
and describe it (`gateway.admin.openapi` takes their JSON Schemas). Field order is the
wire order; times are RFC 3339 UTC to the second (`moment`).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, WithJsonSchema

from gateway.errors import STATUS
from gateway.keys.model import AccessLevelName

KEY_ID = r"^key_[0-9A-Za-z]{16}$"


# Times on the wire: "2026-01-31T12:00:00Z" (UTC, to the second). `moment` truncates them
# and pydantic's own serializer writes them: a Python serializer per field made a key
# record ~2x as costly to render as the hand-written dicts, this 1.2-1.5x (bench/render.py).
def moment(value: datetime | None) -> datetime | None:
    """`value` at the wire's precision: UTC, whole seconds (as `keys.model.rfc3339`)."""
    return None if value is None else value.astimezone(UTC).replace(microsecond=0)


# A UTC day, already "YYYY-MM-DD" in the store's summary.
Day = Annotated[str, WithJsonSchema({"type": "string", "format": "date"})]


class _Out(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ApiKeyRecord(_Out):
    """An API key record (never its value)."""

    id: str = Field(pattern=KEY_ID)
    name: str
    scope: AccessLevelName
    sites: list[str]
    status: Literal["active", "revoked"]
    rateLimit: str | None
    hint: str
    createdAt: datetime
    updatedAt: datetime
    lastUsedAt: datetime | None
    expiresAt: datetime | None
    revokedAt: datetime | None
    rotatedAt: datetime | None
    rotationDue: bool
    expired: bool = Field(
        description="`expiresAt` has passed: the key gets 401 KEY_EXPIRED (status stays active)"
    )


class DailyUsage(_Out):
    date: Day
    requests: int = Field(ge=0)
    errors: int = Field(ge=0)


class UsageRecord(_Out):
    at: datetime
    method: str
    path: str
    status: int
    latencyMs: float
    site: str | None


class Usage(_Out):
    totalRequests: int = Field(ge=0)
    daily: list[DailyUsage]
    recent: list[UsageRecord]


class ApiKeyWithUsage(ApiKeyRecord):
    usage: Usage


class KeyResponse(_Out):
    apiKey: ApiKeyRecord


class KeySecretResponse(_Out):
    """The only responses that carry a key value: create and rotate."""

    apiKey: ApiKeyRecord
    secret: str = Field(description="The key value. Shown once; store it now.")


class KeyDetailsResponse(_Out):
    apiKey: ApiKeyWithUsage


class KeyListResponse(_Out):
    data: list[ApiKeyRecord]
    nextCursor: str | None


class UsageListResponse(_Out):
    data: list[UsageRecord]
    nextCursor: str | None


class AuditEvent(_Out):
    id: str | None
    at: datetime
    action: Literal["create", "edit", "rotate", "revoke", "delete"]
    keyId: str
    actor: str = Field(description="The admin key's id, or `cli`.")
    requestId: str | None
    changes: dict[str, Any]


class AuditListResponse(_Out):
    data: list[AuditEvent]
    nextCursor: str | None


class ErrorDetail(_Out):
    code: Literal[tuple(STATUS)]  # type: ignore[valid-type]
    message: str
    details: dict[str, Any]
    requestId: str


# The request path renders this envelope as bytes (`gateway.errors.error_body`, no model on
# the hot path); tests/unit/test_shapes.py holds the two together.
class ErrorResponse(_Out):
    """Every error the gateway produces (SPEC §5)."""

    error: ErrorDetail


class Health(_Out):
    status: Literal["ok"]


class Ready(_Out):
    status: Literal["ready"]
