"""Shared helpers for the admin API tests: a real admin app on a real store, in-process."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import httpx
import pytest

from gateway.admin.app import create_admin_app
from gateway.keys import format as key_format
from gateway.keys.model import AccessLevel, ApiKey, KeyCreate, Status, utcnow
from gateway.keys.service import KeyService
from gateway.runtime import Runtime
from gateway.settings import load_settings
from gateway.store.base import AuditEvent, UsageRecord


@dataclass
class Admin:
    """A running admin app, a client signed in with an admin key, and the runtime."""

    client: httpx.AsyncClient
    runtime: Runtime
    key: ApiKey
    secret: str

    @property
    def service(self) -> KeyService:
        assert self.runtime.service is not None
        return self.runtime.service

    def as_key(self, secret: str | None) -> dict[str, str]:
        """Headers that replace the admin key with `secret` (None: no key at all)."""
        return {"X-API-Key": secret} if secret is not None else {}

    async def new_key(self, scope: str = "read", **fields: Any) -> tuple[ApiKey, str]:
        return await self.service.create(KeyCreate(name=f"{scope} key", scope=scope, **fields))

    async def snapshot(self) -> tuple[list[ApiKey], list[AuditEvent]]:
        """Everything the API can change: every key record and every audit event.
        (Not lastUsedAt: the admin API records usage of the keys that call it.)"""
        keys = [k.evolve(last_used_at=None) for k in (await self.service.list(None, 200)).data]
        events = (await self.service.audit(None, 200)).data
        return keys, events

    async def expired_key(self, scope: AccessLevel = AccessLevel.ADMIN) -> tuple[ApiKey, str]:
        """A key whose expiry has passed, written straight to the store (the service
        refuses a past expiresAt, as it should)."""
        now = utcnow()
        value = key_format.generate_key(self.service.prefix)
        key = ApiKey(
            id=key_format.generate_key_id(),
            name="expired",
            scope=scope,
            sites=("*",),
            status=Status.ACTIVE,
            rate_limit=None,
            hint=key_format.hint(value),
            created_at=now - timedelta(days=2),
            updated_at=now - timedelta(days=2),
            expires_at=now - timedelta(days=1),
        )
        audit = AuditEvent(now, "create", key.id, "cli")
        await self.service.store.insert_key(key, self.service.digest(value), audit)
        return key, value

    async def record_usage(self, key_id: str, count: int, start: datetime | None = None) -> None:
        start = start or utcnow() - timedelta(minutes=count)
        records = [
            UsageRecord(
                key_id=key_id,
                at=start + timedelta(seconds=i),
                method="GET",
                path=f"/items/{i}",
                status=200 if i % 5 else 500,
                latency_ms=1.5 + i,
                site=None,
            )
            for i in range(count)
        ]
        await self.service.store.record_usage(records)


@contextlib.asynccontextmanager
async def running_admin(store_url: str, **sections: dict[str, Any]) -> AsyncIterator[Admin]:
    """The admin app on `store_url`, its lifespan running the runtime, and a client
    signed in with a fresh admin key. `sections` override settings."""
    # Tests send many bad keys on purpose: keep the failed-attempt throttle out of the
    # way unless a test sets it.
    sections.setdefault("auth", {"failed_attempts_limit": "100000/minute"})
    runtime = Runtime(load_settings(storage={"url": store_url}, **sections))
    app = create_admin_app(runtime, manage_runtime=True)
    async with app.router.lifespan_context(app):
        assert runtime.service is not None
        key, secret = await runtime.service.create(KeyCreate(name="root", scope="admin"))
        transport = httpx.ASGITransport(app)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://admin.test", headers={"X-API-Key": secret}
        ) as client:
            yield Admin(client, runtime, key, secret)


@pytest.fixture
async def admin(store_url: str) -> AsyncIterator[Admin]:
    """The admin app on `store_url` (both stores)."""
    async with running_admin(store_url) as running:
        yield running


def assert_error(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    """The response is the error envelope with this status and code; its `error`."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert set(body) == {"error"}, body
    error = body["error"]
    assert set(error) == {"code", "message", "details", "requestId"}, error
    assert error["code"] == code, error
    assert error["requestId"] == response.headers["x-request-id"]
    assert "Traceback" not in response.text
    return error
