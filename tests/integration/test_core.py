"""The decision core on real backends: SQLite files and a real redis-server (SPEC §3–§6, §13)."""

from __future__ import annotations

import asyncio
import time

import pytest

from gateway.keys.model import KeyCreate
from gateway.pipeline.core import DecisionCore, RequestHead
from gateway.runtime import Runtime
from gateway.settings import load_settings
from gateway.store.base import ALL_KEYS
from tests.integration.test_ratelimit_redis import RedisProcess, own_redis  # noqa: F401


def head(value: str | None, path: str = "/x", method: str = "GET") -> RequestHead:
    headers = [(b"authorization", b"Bearer " + value.encode())] if value else []
    return RequestHead(method, path, headers, ("127.0.0.1", 1234))


async def test_decide_and_finish_on_each_store(store_url: str) -> None:
    settings = load_settings(
        storage={"url": store_url},
        rate_limit={"default": "3/minute", "strategy": "fixed-window"},
        usage={"flush_interval": 3600},
    )
    core = DecisionCore.for_listener(settings)
    resources = await core.start()
    try:
        key, value = await resources.service.create(KeyCreate(name="k", scope="write"))
        statuses = []
        for method in ("GET", "POST", "DELETE", "GET"):
            decision = await core.decide(head(value, method=method))
            statuses.append(decision.status)
            core.finish(decision, 201 if decision.allowed else decision.status)
        assert statuses == [200, 200, 200, 429]  # the limit is counted in the store's backend
        limited = await core.decide(head(value))
        assert limited.error is not None and limited.error.code == "RATE_LIMITED"

        # a revoke reaches the core's cache through the store's change events
        other, other_value = await resources.service.create(KeyCreate(name="o", scope="read"))
        assert (await core.decide(head(other_value))).allowed
        await resources.service.revoke(other.id)
        revoked = await core.decide(head(other_value))
        assert revoked.error is not None and revoked.error.code == "KEY_REVOKED"

        await resources.usage.flush()
        _, summary = await resources.service.details(key.id)
        assert [(r.method, r.status) for r in reversed(summary.recent)] == [
            ("GET", 201),
            ("POST", 201),
            ("DELETE", 201),
            ("GET", 429),
        ]
    finally:
        await core.stop()
    assert not core.started


@pytest.mark.redis
async def test_redis_down_a_cached_key_works_an_unknown_one_is_503(
    own_redis: RedisProcess,  # noqa: F811
) -> None:
    settings = load_settings(
        storage={"url": own_redis.url},
        rate_limit={"on_backend_error": "allow"},
    )
    runtime = Runtime(settings)
    proxy = DecisionCore.for_listener(settings, "proxy", runtime=runtime)
    admin = DecisionCore.for_listener(settings, "admin", runtime=runtime)
    await runtime.start()
    heard: list[str] = []
    runtime.service.store.add_listener(heard.append)
    try:
        # The change feed reports ALL_KEYS once subscribed: cache only after that.
        deadline = time.monotonic() + 5
        while ALL_KEYS not in heard and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        assert ALL_KEYS in heard
        _, known = await runtime.service.create(KeyCreate(name="known", scope="admin"))
        _, unknown = await runtime.service.create(KeyCreate(name="unknown", scope="read"))
        assert (await proxy.decide(head(known))).allowed  # now cached
        own_redis.stop()
        assert (await proxy.decide(head(known))).allowed  # fail-soft, limits fail open
        down = await proxy.decide(head(unknown))
        assert down.status == 503 and down.error is not None
        assert down.error.code == "SERVICE_UNAVAILABLE"
        # the admin listener shares the verifier cache, not the failed-attempt counter
        assert (await admin.decide(head(known, "/v1/keys"))).allowed
        assert (await admin.decide(head(unknown, "/v1/keys"))).status == 503
    finally:
        own_redis.start()
        await proxy.stop()  # shares the runtime: closes nothing
        assert runtime.started
        await runtime.stop()
