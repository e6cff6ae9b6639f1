"""KeyService: the only code that changes keys (SPEC §1 lifecycle).

The admin API, the CLI and the dashboard all call it, so each rule — delete only after
revoke, rotate kills the old value, revoke is idempotent — and each audit event lives
here once. The store applies each change atomically; the rule is checked on the record
as read inside that same transaction, so concurrent changes cannot slip past it.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from gateway.errors import GatewayError, invalid_request
from gateway.keys import format as key_format
from gateway.keys.model import (
    AccessLevel,
    ApiKey,
    KeyCreate,
    KeyEdit,
    KeyRotate,
    Status,
    rfc3339,
    utcnow,
)
from gateway.settings import ConfigError
from gateway.store.base import (
    AuditEvent,
    BadCursor,
    DailyUsage,
    KeyNotFound,
    KeyWrite,
    Page,
    SecretMismatch,
    Store,
    UsageRecord,
    UsageSummary,
    parse_cursor,
)

KEY_ID_PATTERN = re.compile(r"key_[0-9A-Za-z]{16}")
MAX_PAGE = 200
CLI_ACTOR = "cli"


class _Unchanged(Exception):
    """Raised inside a mutation to end the transaction without writing."""

    def __init__(self, key: ApiKey) -> None:
        self.key = key


def _check_id(key_id: str) -> str:
    if not KEY_ID_PATTERN.fullmatch(key_id):
        raise GatewayError("KEY_NOT_FOUND", details={"id": key_id[:64]})
    return key_id


def bad_cursor(error: BadCursor) -> GatewayError:
    """400 INVALID_REQUEST naming the paging parameter a store could not read."""
    field = error.field
    return GatewayError(
        "INVALID_REQUEST",
        f"The {field} is not valid.",
        {"field": field, "reason": "not a cursor returned by this API"},
    )


def check_cursor(text: str, field: str = "cursor") -> None:
    """400 naming `field` unless `text` is a cursor some store could have issued."""
    try:
        parse_cursor(text, field)
    except BadCursor as error:
        raise bad_cursor(error) from None


def _check_limit(limit: int, field: str = "limit") -> int:
    if not 1 <= limit <= MAX_PAGE:
        raise invalid_request(field, f"must be between 1 and {MAX_PAGE}")
    return limit


def _config_view(key: ApiKey) -> dict[str, Any]:
    """The editable configuration of a key, in its JSON names, for audit changes."""
    return {
        "name": key.name,
        "scope": key.scope.value,
        "sites": list(key.sites),
        "rateLimit": key.rate_limit,
        "expiresAt": rfc3339(key.expires_at),
    }


class KeyService:
    def __init__(
        self,
        store: Store,
        secret: bytes,
        *,
        prefix: str = "gw",
        rotation_days: int = 90,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.store = store
        self.secret = secret
        self.prefix = key_format.validate_prefix(prefix)
        self.rotation_days = rotation_days
        self.clock = clock

    async def check_secret(self) -> None:
        """Refuse (ConfigError, exit 2) a store that was created with another secret."""
        try:
            await self.store.check_secret(key_format.secret_fingerprint(self.secret))
        except SecretMismatch:
            raise ConfigError(
                f"the key store {self.store.url} was created with a different server secret "
                "(GATEWAY_SECRET or the <db>.secret file); every key would be rejected. "
                "Use the original secret."
            ) from None

    def digest(self, value: str) -> str:
        return key_format.key_digest(self.secret, value)

    def _audit(
        self, action: str, key_id: str, actor: str, request_id: str | None, changes: dict
    ) -> AuditEvent:
        return AuditEvent(self.clock(), action, key_id, actor, request_id, changes)

    # --- reading --------------------------------------------------------------------

    async def get(self, key_id: str) -> ApiKey:
        key = await self.store.get_key(_check_id(key_id))
        if key is None:
            raise GatewayError("KEY_NOT_FOUND", details={"id": key_id})
        return key

    async def details(
        self, key_id: str, *, days: int = 30, recent: int = 20
    ) -> tuple[ApiKey, UsageSummary]:
        """The record and its usage: total, one entry per day for `days` days, recent."""
        key = await self.get(key_id)
        summary = await self.store.usage_summary(key.id, days, recent)
        today = self.clock().date()
        counts = {day.date: day for day in summary.daily}
        daily = []
        for offset in range(days - 1, -1, -1):
            date = (today - timedelta(days=offset)).isoformat()
            daily.append(counts.get(date) or DailyUsage(date, 0, 0))
        return key, UsageSummary(summary.total_requests, daily, summary.recent)

    async def list(
        self, status: Status | None = None, limit: int = 50, cursor: str | None = None
    ) -> Page[ApiKey]:
        try:
            return await self.store.list_keys(status, _check_limit(limit), cursor)
        except BadCursor as error:
            raise bad_cursor(error) from None

    async def usage(
        self, key_id: str, limit: int = 50, before: str | None = None
    ) -> Page[UsageRecord]:
        key = await self.get(key_id)
        try:
            return await self.store.list_usage(key.id, _check_limit(limit), before)
        except BadCursor as error:
            raise bad_cursor(error) from None

    async def audit(
        self, key_id: str | None = None, limit: int = 50, cursor: str | None = None
    ) -> Page[AuditEvent]:
        if key_id is not None and not KEY_ID_PATTERN.fullmatch(key_id):
            raise invalid_request("keyId", "must be a key id like key_ followed by 16 characters")
        try:
            return await self.store.list_audit(key_id, _check_limit(limit), cursor)
        except BadCursor as error:
            raise bad_cursor(error) from None

    # --- changing -------------------------------------------------------------------

    async def create(
        self, body: KeyCreate, *, actor: str = CLI_ACTOR, request_id: str | None = None
    ) -> tuple[ApiKey, str]:
        """A new active key and its value (the only time the value is returned)."""
        now = self.clock()
        value = key_format.generate_key(self.prefix)
        key = ApiKey(
            id=key_format.generate_key_id(),
            name=body.name,
            scope=AccessLevel(body.scope),
            sites=tuple(body.sites),
            status=Status.ACTIVE,
            rate_limit=body.rate_limit,
            hint=key_format.hint(value),
            created_at=now,
            updated_at=now,
            expires_at=body.expires_at,
        )
        audit = self._audit("create", key.id, actor, request_id, _config_view(key))
        await self.store.insert_key(key, self.digest(value), audit)
        return key, value

    async def edit(
        self,
        key_id: str,
        body: KeyEdit,
        *,
        actor: str = CLI_ACTOR,
        request_id: str | None = None,
    ) -> ApiKey:
        """Change name, scope, sites, rateLimit, expiresAt; the value stays the same."""
        fields = body.model_fields_set
        for required in ("name", "scope", "sites"):
            if required in fields and getattr(body, required) is None:
                raise invalid_request(required, "cannot be null")
        updates: dict[str, Any] = {}
        if "name" in fields:
            updates["name"] = body.name
        if "scope" in fields:
            updates["scope"] = AccessLevel(body.scope)
        if "sites" in fields:
            updates["sites"] = tuple(body.sites or ())
        if "rate_limit" in fields:
            updates["rate_limit"] = body.rate_limit
        if "expires_at" in fields:
            updates["expires_at"] = body.expires_at

        def mutate(key: ApiKey) -> KeyWrite:
            candidate = key.evolve(**updates)
            before, after = _config_view(key), _config_view(candidate)
            changes = {
                name: {"from": before[name], "to": after[name]}
                for name in before
                if before[name] != after[name]
            }
            if not changes:
                raise _Unchanged(key)
            updated = candidate.evolve(updated_at=self.clock())
            return KeyWrite(updated, self._audit("edit", key.id, actor, request_id, changes))

        return await self._update(key_id, mutate)

    async def rotate(
        self,
        key_id: str,
        body: KeyRotate | None = None,
        *,
        actor: str = CLI_ACTOR,
        request_id: str | None = None,
    ) -> tuple[ApiKey, str]:
        """A new value for the same key; the old one stops now, or after the grace period."""
        grace = (body or KeyRotate()).grace_period_seconds
        value = key_format.generate_key(self.prefix)

        def mutate(key: ApiKey) -> KeyWrite:
            if key.status is Status.REVOKED:
                raise GatewayError(
                    "KEY_REVOKED",
                    "This API key has been revoked and cannot be rotated.",
                    {"id": key.id},
                    status=409,
                )
            now = self.clock()
            updated = key.evolve(hint=key_format.hint(value), rotated_at=now, updated_at=now)
            changes: dict[str, Any] = {"hint": {"from": key.hint, "to": updated.hint}}
            if grace:
                changes["gracePeriodSeconds"] = grace
            return KeyWrite(
                updated,
                self._audit("rotate", key.id, actor, request_id, changes),
                new_digest=self.digest(value),
                retire_digests=True,
                grace_until=now + timedelta(seconds=grace) if grace else None,
            )

        key = await self._update(key_id, mutate)
        return key, value

    async def revoke(
        self, key_id: str, *, actor: str = CLI_ACTOR, request_id: str | None = None
    ) -> ApiKey:
        """Revoke a key; revoking a revoked key returns it unchanged."""

        def mutate(key: ApiKey) -> KeyWrite:
            if key.status is Status.REVOKED:
                raise _Unchanged(key)
            now = self.clock()
            updated = key.evolve(status=Status.REVOKED, revoked_at=now, updated_at=now)
            changes = {"status": {"from": "active", "to": "revoked"}}
            return KeyWrite(updated, self._audit("revoke", key.id, actor, request_id, changes))

        return await self._update(key_id, mutate)

    async def delete(
        self, key_id: str, *, actor: str = CLI_ACTOR, request_id: str | None = None
    ) -> None:
        """Delete a revoked key for good (its usage too; its audit events stay)."""

        def mutate(key: ApiKey) -> KeyWrite:
            if key.status is not Status.REVOKED:
                raise GatewayError(
                    "KEY_NOT_REVOKED",
                    "Only a revoked key can be deleted. Revoke the key first.",
                    {"id": key.id, "status": key.status.value},
                )
            audit = self._audit("delete", key.id, actor, request_id, {"name": key.name})
            return KeyWrite(None, audit)

        await self._write(key_id, mutate)

    async def _update(self, key_id: str, mutate: Callable[[ApiKey], KeyWrite]) -> ApiKey:
        """Apply a mutation that keeps the key; the key as it is afterwards."""
        key = await self._write(key_id, mutate)
        assert key is not None
        return key

    async def _write(self, key_id: str, mutate: Callable[[ApiKey], KeyWrite]) -> ApiKey | None:
        """Apply `mutate` atomically; the key afterwards, or None once deleted."""
        try:
            write = await self.store.update_key(_check_id(key_id), mutate)
        except _Unchanged as unchanged:
            return unchanged.key
        except KeyNotFound:
            raise GatewayError("KEY_NOT_FOUND", details={"id": key_id}) from None
        return write.key
