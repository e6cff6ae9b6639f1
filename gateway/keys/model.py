"""The API key record, its field rules, and the request models that validate changes.

The request models (`KeyCreate`, `KeyEdit`, `KeyRotate`) are the single source of the
field rules: the CLI builds them, the admin API parses bodies with them, and the OpenAPI
document is generated from them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Annotated, Any, Literal, TypeVar, get_args

import limits
from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
)

from gateway.errors import GatewayError, invalid_request

SITE_PATTERN = re.compile(r"[A-Za-z0-9_-]{1,64}")
ALL_SITES = "*"
M = TypeVar("M", bound=BaseModel)
MAX_GRACE_SECONDS = 604_800
MAX_LIMIT_AMOUNT = 1_000_000_000
MAX_LIMIT_WINDOW = 10 * 360 * 86_400  # ten of the `limits` library's 360-day years
_ZERO_WINDOW = re.compile(r"(?:/|\bper)\s*0+\s*[A-Za-z]", re.IGNORECASE)


class AccessLevel(StrEnum):
    """A key's access level (SPEC §3; the JSON field `scope`): read < write < admin."""

    READ = "read"
    WRITE = "write"
    ADMIN = "admin"


# The old name (the JSON field is still `scope`), for code written before the rename.
Scope = AccessLevel
# Its values in order, spelled once: CLI choices, settings, the OpenAPI enum.
ACCESS_LEVELS = tuple(level.value for level in AccessLevel)


class Status(StrEnum):
    ACTIVE = "active"
    REVOKED = "revoked"


LEVEL_RANK = {AccessLevel.READ: 0, AccessLevel.WRITE: 1, AccessLevel.ADMIN: 2}


def utcnow() -> datetime:
    return datetime.now(UTC)


def rfc3339(moment: datetime | None) -> str | None:
    if moment is None:
        return None
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# --- field rules ------------------------------------------------------------------------


def check_name(value: str) -> str:
    if not 1 <= len(value) <= 100:
        raise ValueError("must be 1 to 100 characters")
    if not value.isprintable() or not value.strip():
        raise ValueError("must be printable characters, not only spaces")
    return value


def check_sites(value: list[str]) -> list[str]:
    if not value:
        raise ValueError('must name at least one site, or ["*"] for all sites')
    if ALL_SITES in value:
        if len(set(value)) != 1:
            raise ValueError('"*" means all sites and cannot be combined with site ids')
        return [ALL_SITES]
    seen: list[str] = []
    for site in value:
        if not SITE_PATTERN.fullmatch(site):
            raise ValueError(f"site id {site!r} must match [A-Za-z0-9_-]{{1,64}}")
        if site not in seen:
            seen.append(site)
    return seen


def check_rate_limit(value: str | None) -> str | None:
    if value is None:
        return None
    text = value.strip()
    if not text or len(text) > 200:
        raise ValueError('must be a limit like "100/minute" or "10/second;5000/day"')
    try:
        parsed = limits.parse_many(text)
    except ValueError:
        raise ValueError('must be a limit like "100/minute" or "10/second;5000/day"') from None
    if not parsed or any(item.amount <= 0 for item in parsed):
        raise ValueError("every limit must allow at least one request")
    # `limits` reads "1/0second" as 1/second: refuse it rather than store a misleading text.
    if _ZERO_WINDOW.search(text):
        raise ValueError("a window must be at least 1 unit long")
    # Bounds keep counters and reset times exact in Redis (Lua numbers are doubles).
    if any(item.amount > MAX_LIMIT_AMOUNT for item in parsed):
        raise ValueError(f"a limit allows at most {MAX_LIMIT_AMOUNT} requests")
    if any(item.get_expiry() > MAX_LIMIT_WINDOW for item in parsed):
        raise ValueError("a window is at most 10 years")
    return text


RFC3339 = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt ][0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,9})?"
    r"([Zz]|[+-][0-9]{2}:[0-9]{2})"
)


def check_rfc3339_text(value: Any) -> Any:
    """Only an RFC 3339 timestamp string (or a datetime, from code): not a number or a
    bare date, which the lax datetime parsing would otherwise take."""
    if value is None or isinstance(value, datetime):
        return value
    if not isinstance(value, str) or not RFC3339.fullmatch(value):
        raise ValueError("must be an RFC 3339 timestamp with a timezone, e.g. 2030-01-01T00:00:00Z")
    return value


def check_future(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    try:
        # e.g. 9999-12-31T23:59:59-23:59 is past the last representable UTC moment.
        moment = value.astimezone(UTC)
    except OverflowError:
        raise ValueError("is out of range") from None
    if moment <= utcnow():
        raise ValueError("must be in the future")
    return moment


Name = Annotated[str, AfterValidator(check_name)]
Sites = Annotated[list[str], AfterValidator(check_sites)]
RateLimit = Annotated[str | None, AfterValidator(check_rate_limit)]
ExpiresAt = Annotated[
    AwareDatetime | None, BeforeValidator(check_rfc3339_text), AfterValidator(check_future)
]
AccessLevelName = Literal["read", "write", "admin"]  # ACCESS_LEVELS, as a type
assert get_args(AccessLevelName) == ACCESS_LEVELS


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, populate_by_name=True)


class KeyCreate(_Body):
    """Body of `POST /v1/keys`."""

    name: Name
    scope: AccessLevelName
    sites: Sites = Field(default_factory=lambda: [ALL_SITES])
    rate_limit: RateLimit = Field(default=None, alias="rateLimit")
    # strict=False so that an RFC 3339 string is accepted from JSON.
    expires_at: ExpiresAt = Field(default=None, alias="expiresAt", strict=False)


class KeyEdit(_Body):
    """Body of `PATCH /v1/keys/{id}`: only the fields present change."""

    name: Name | None = None
    scope: AccessLevelName | None = None
    sites: Sites | None = None
    rate_limit: RateLimit = Field(default=None, alias="rateLimit")
    expires_at: ExpiresAt = Field(default=None, alias="expiresAt", strict=False)


class KeyRotate(_Body):
    """Body of `POST /v1/keys/{id}/rotate`."""

    grace_period_seconds: int = Field(
        default=0, ge=0, le=MAX_GRACE_SECONDS, alias="gracePeriodSeconds"
    )


def parse_body(model: type[M], data: Any) -> M:
    """Validate `data` with `model`; the first problem becomes 400 INVALID_REQUEST."""
    if not isinstance(data, dict):
        raise invalid_request("body", "must be a JSON object")
    # JSON bodies use the camelCase names only; the Python names (populate_by_name, for
    # code that builds models) are unknown fields here.
    for name in data:
        info = model.model_fields.get(name)
        if info is not None and info.alias and info.alias != name:
            raise invalid_request(name, "unknown field", f"Unknown field '{name}'.")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise validation_error(exc, model) from None


def validation_error(exc: ValidationError, model: type[BaseModel]) -> GatewayError:
    problem = exc.errors()[0]
    loc = problem.get("loc") or ("body",)
    name = str(loc[0])
    # Report the JSON (camelCase) name of the field.
    info = model.model_fields.get(name)
    if info is not None and info.alias:
        name = info.alias
    if problem.get("type") == "extra_forbidden":
        return invalid_request(name, "unknown field", f"Unknown field '{name}'.")
    reason = str(problem.get("msg", "invalid value"))
    reason = reason.removeprefix("Value error, ")
    return invalid_request(name, reason)


# --- the record -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ApiKey:
    id: str
    name: str
    scope: AccessLevel
    sites: tuple[str, ...]
    status: Status
    rate_limit: str | None
    hint: str
    created_at: datetime
    updated_at: datetime
    last_used_at: datetime | None = None
    expires_at: datetime | None = None
    revoked_at: datetime | None = None
    rotated_at: datetime | None = None

    def evolve(self, **changes: Any) -> ApiKey:
        return replace(self, **changes)

    @property
    def value_created_at(self) -> datetime:
        return self.rotated_at or self.created_at

    def rotation_due(self, rotation_days: int, now: datetime | None = None) -> bool:
        now = now or utcnow()
        return now - self.value_created_at > timedelta(days=rotation_days)

    def expired(self, now: datetime | None = None) -> bool:
        """Whether `expiresAt` has passed (the status stays `active`: SPEC §1)."""
        return self.expires_at is not None and (now or utcnow()) >= self.expires_at

    def allows_site(self, site: str) -> bool:
        return ALL_SITES in self.sites or site in self.sites

    # Storage form: a flat dict of JSON-safe values, used by both stores.
    def to_storage(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "scope": self.scope.value,
            "sites": list(self.sites),
            "status": self.status.value,
            "rate_limit": self.rate_limit,
            "hint": self.hint,
            "created_at": self.created_at.isoformat(),
            "updated_at": self.updated_at.isoformat(),
            "last_used_at": _iso(self.last_used_at),
            "expires_at": _iso(self.expires_at),
            "revoked_at": _iso(self.revoked_at),
            "rotated_at": _iso(self.rotated_at),
        }

    @classmethod
    def from_storage(cls, data: dict[str, Any]) -> ApiKey:
        return cls(
            id=data["id"],
            name=data["name"],
            scope=AccessLevel(data["scope"]),
            sites=tuple(data["sites"]),
            status=Status(data["status"]),
            rate_limit=data.get("rate_limit"),
            hint=data["hint"],
            created_at=datetime.fromisoformat(data["created_at"]),
            updated_at=datetime.fromisoformat(data["updated_at"]),
            last_used_at=_from_iso(data.get("last_used_at")),
            expires_at=_from_iso(data.get("expires_at")),
            revoked_at=_from_iso(data.get("revoked_at")),
            rotated_at=_from_iso(data.get("rotated_at")),
        )


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment is not None else None


def _from_iso(text: str | None) -> datetime | None:
    return datetime.fromisoformat(text) if text else None
