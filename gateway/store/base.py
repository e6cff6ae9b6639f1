"""The Store protocol every backend implements, and `open_store(url)` that picks one.

A store keeps key records, the digest index (HMAC of each valid value → key id, with an
optional expiry for values in a rotation grace period), usage, audit events and change
events. It holds no rules: `KeyService` decides what a change is and hands the store a
`KeyWrite` to apply atomically (one SQLite transaction / one Redis MULTI).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Generic, Protocol, TypeVar, runtime_checkable

from gateway.keys.model import ApiKey, Status
from gateway.store.presence import GatewayPresence
from gateway.urls import kind_of

T = TypeVar("T")

# A change event that means "forget everything cached" (e.g. after a lost connection).
ALL_KEYS = "*"


class StoreError(Exception):
    """A backend failed (unreachable, timed out); the caller decides fail-soft or 503."""


class KeyNotFound(LookupError):
    """`update_key`: there is no key with this id."""


class BadCursor(ValueError):
    """A paging cursor that no store issued; `field` names the parameter it came in."""

    def __init__(self, field: str) -> None:
        super().__init__(f"the {field} is not a cursor returned by this API")
        self.field = field


class SecretMismatch(Exception):
    """The store was created with another server secret."""


@dataclass(frozen=True, slots=True)
class AuditEvent:
    at: datetime
    action: str  # create, edit, rotate, revoke, delete
    key_id: str
    actor: str  # the admin key's id, or "cli"
    request_id: str | None = None
    changes: dict[str, Any] = field(default_factory=dict)
    seq: int | None = None  # assigned by the store

    def to_storage(self) -> dict[str, Any]:
        return {
            "at": self.at.isoformat(),
            "action": self.action,
            "key_id": self.key_id,
            "actor": self.actor,
            "request_id": self.request_id,
            "changes": self.changes,
        }

    @classmethod
    def from_storage(cls, data: dict[str, Any], seq: int) -> AuditEvent:
        return cls(
            at=datetime.fromisoformat(data["at"]),
            action=data["action"],
            key_id=data["key_id"],
            actor=data["actor"],
            request_id=data.get("request_id"),
            changes=data.get("changes") or {},
            seq=seq,
        )


@dataclass(frozen=True, slots=True)
class UsageRecord:
    key_id: str
    at: datetime
    method: str
    path: str
    status: int
    latency_ms: float
    site: str | None = None
    seq: int | None = None  # assigned by the store

    def to_storage(self) -> dict[str, Any]:
        return {
            "at": self.at.isoformat(),
            "method": self.method,
            "path": self.path,
            "status": self.status,
            "latency_ms": self.latency_ms,
            "site": self.site,
        }

    @classmethod
    def from_storage(cls, key_id: str, data: dict[str, Any], seq: int) -> UsageRecord:
        return cls(
            key_id=key_id,
            at=datetime.fromisoformat(data["at"]),
            method=data["method"],
            path=data["path"],
            status=int(data["status"]),
            latency_ms=float(data["latency_ms"]),
            site=data.get("site"),
            seq=seq,
        )


@dataclass(frozen=True, slots=True)
class DailyUsage:
    date: str  # YYYY-MM-DD, UTC
    requests: int
    errors: int


@dataclass(frozen=True, slots=True)
class UsageSummary:
    total_requests: int
    daily: list[DailyUsage]
    recent: list[UsageRecord]


@dataclass(frozen=True, slots=True)
class KeyWrite:
    """What one key change does to the store, applied atomically.

    `key` is the new record, or None to delete the record, its digests and its usage.
    `new_digest` adds a valid value. With `retire_digests`, every digest the key had
    stops working: at once, or at `grace_until` (never later than an earlier expiry).
    `audit` is written in the same transaction; a change event is always published.
    """

    key: ApiKey | None
    audit: AuditEvent | None
    new_digest: str | None = None
    retire_digests: bool = False
    grace_until: datetime | None = None


@dataclass(frozen=True, slots=True)
class DigestMatch:
    key: ApiKey
    expires_at: datetime | None  # set while the value is in a rotation grace period

    def valid_at(self, now: datetime) -> bool:
        return self.expires_at is None or now < self.expires_at


@dataclass(frozen=True, slots=True)
class Page(Generic[T]):
    data: list[T]
    next_cursor: str | None


# The function KeyService hands to `Store.update_key`: given the current record (as read
# inside the transaction), return what to write, or raise (e.g. the service's own
# GatewayError) to change nothing.
Mutation = Callable[[ApiKey], KeyWrite]


@runtime_checkable
class Store(Protocol):
    url: str
    # The number of the last key change written through this object (0: none yet).
    last_write: int

    async def open(self) -> None: ...
    async def close(self) -> None: ...
    async def ping(self) -> None:
        """Raise StoreError if the backend cannot be reached."""

    async def check_secret(self, fingerprint: str) -> None:
        """Remember the fingerprint on first use; raise SecretMismatch if it differs."""

    # keys
    async def insert_key(self, key: ApiKey, digest: str, audit: AuditEvent) -> None: ...
    async def update_key(self, key_id: str, mutate: Mutation) -> KeyWrite:
        """Read the record, call `mutate`, apply its KeyWrite atomically; retry on races.

        Raises KeyNotFound when there is no such key; whatever `mutate` raises passes
        through with nothing written."""

    async def get_key(self, key_id: str) -> ApiKey | None: ...
    async def list_keys(
        self, status: Status | None, limit: int, cursor: str | None
    ) -> Page[ApiKey]: ...
    async def lookup_digest(self, digest: str) -> DigestMatch | None:
        """The key a value's digest belongs to, and until when that value is valid."""

    # usage
    async def record_usage(self, records: list[UsageRecord]) -> None: ...
    async def usage_summary(self, key_id: str, days: int, recent: int) -> UsageSummary: ...
    async def list_usage(
        self, key_id: str, limit: int, before: str | None
    ) -> Page[UsageRecord]: ...

    # audit
    async def list_audit(
        self, key_id: str | None, limit: int, cursor: str | None
    ) -> Page[AuditEvent]: ...

    # change events
    def add_listener(self, listener: Callable[[str], None]) -> None:
        """Call `listener(key_id)` whenever a key changes (ALL_KEYS: forget everything).

        Changes made through this store object are reported synchronously, before the
        write returns; changes made elsewhere (another process, another replica) as soon
        as the store sees them. Call from a running event loop.

        From then on this store object records in the store the last change its
        listeners have applied (gateway.store.presence), until it is closed."""

    async def live_gateways(self) -> list[GatewayPresence]:
        """The running gateways on this store and the last change each has applied."""

    @property
    def presence_id(self) -> str | None:
        """This object's own record among them (None: not a running gateway's store)."""


class ChangeFeed:
    """The listeners of one store; both backends report changes through it."""

    def __init__(self) -> None:
        self._listeners: list[Callable[[str], None]] = []

    def add(self, listener: Callable[[str], None]) -> None:
        self._listeners.append(listener)

    def notify(self, key_id: str) -> None:
        for listener in self._listeners:
            try:
                listener(key_id)
            except Exception:
                # A broken listener must neither fail a write that already committed nor
                # stop the feed (and so every other listener) for good.
                logging.getLogger("gateway.store").exception("change listener failed")


@dataclass(frozen=True, slots=True)
class StoreOptions:
    recent_per_key: int = 1000
    daily_retention_days: int = 90
    # How often the SQLite store checks for changes made by another process.
    poll_interval: float = 0.1
    # Every backend call gives up after this many seconds of backend silence (Redis;
    # `storage.timeout`), and holds at most this many pooled connections.
    timeout: float = 0.25
    max_connections: int = 100


def open_store(url: str, options: StoreOptions | None = None) -> Store:
    """The store for `url`: `sqlite:///path.db`, `redis://host:port/db`, `redis+sentinel://`
    or `redis+cluster://` (see store/redis_topology.py). Not yet opened."""
    options = options or StoreOptions()
    kind = kind_of(url)
    if kind == "sqlite":
        from gateway.store.sqlite import SqliteStore

        return SqliteStore(url, options)
    if kind == "redis":
        from gateway.store.redis import RedisStore

        return RedisStore(url, options)
    raise ValueError(f"unsupported storage URL {url!r}: use sqlite:///path.db or redis://")


def parse_cursor(text: str, field: str = "cursor") -> int:
    """A paging cursor (a store sequence number) from its text; BadCursor if it is not one."""
    # ASCII digits only: str.isdigit() also accepts e.g. "²", which int() then refuses.
    if not (text.isascii() and text.isdigit()) or len(text) > 18:
        raise BadCursor(field)
    return int(text)


def page_of(rows: list[tuple[int, T]], limit: int) -> Page[T]:
    """A page from up to `limit + 1` (seq, item) rows, newest first."""
    more = len(rows) > limit
    rows = rows[:limit]
    return Page([item for _, item in rows], str(rows[-1][0]) if more and rows else None)
