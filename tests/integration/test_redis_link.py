"""RedisLink against a real redis-server (SPEC §13): load waits instead of failing, a
frozen Redis fails calls within the timeout and then at once, a dead pooled connection is
retried on a fresh one, and the link comes back by itself."""

from __future__ import annotations

import asyncio
import time

import pytest

from gateway.store.redis_link import BackendDown, RedisLink
from tests.redis_process import RedisProcess, own_redis  # noqa: F401 - fixture

pytestmark = pytest.mark.redis


async def test_load_on_a_tiny_pool_waits_and_never_fails(
    own_redis: RedisProcess,  # noqa: F811
) -> None:
    # 8 connections, 2,000 concurrent calls: every call waits its turn, none fails.
    link = RedisLink(own_redis.url, timeout=0.25, max_connections=8)
    try:

        async def call(i: int) -> int:
            async with link.guard() as client:
                return await client.incr("n")

        results = await asyncio.gather(*(call(i) for i in range(2000)))
        assert sorted(results) == list(range(1, 2001))
        assert link.failures == 0 and not link.down
        assert len(link.client.connection_pool._in_use_connections) == 0
    finally:
        await link.close()


async def test_frozen_redis_fails_within_the_timeout_then_at_once(
    own_redis: RedisProcess,  # noqa: F811
) -> None:
    link = RedisLink(own_redis.url, timeout=0.25, max_connections=8)
    try:
        async with link.guard() as client:
            await client.ping()
        own_redis.freeze()
        started = time.monotonic()
        with pytest.raises(TimeoutError):
            async with link.guard() as client:
                await client.ping()
        assert time.monotonic() - started < 0.8
        assert link.down
        started = time.monotonic()
        with pytest.raises(BackendDown):
            async with link.guard() as client:
                await client.ping()
        assert time.monotonic() - started < 0.05
        own_redis.thaw()
        deadline = time.monotonic() + 5
        while link.down:
            assert time.monotonic() < deadline, "the link did not come back"
            await asyncio.sleep(0.05)
        async with link.guard() as client:
            assert await client.ping()
    finally:
        own_redis.thaw()
        await link.close()


async def test_restart_every_pooled_connection_is_replaced_without_a_failure(
    own_redis: RedisProcess,  # noqa: F811
) -> None:
    link = RedisLink(own_redis.url, timeout=0.25, max_connections=16)
    try:

        async def call() -> bool:
            async with link.guard() as client:
                return await client.set("k", "v")

        await asyncio.gather(*(call() for _ in range(64)))  # fill the pool
        own_redis.kill()
        own_redis.start()
        await asyncio.sleep(0.5)  # the watchdog hears the new Redis
        results = await asyncio.gather(*(call() for _ in range(64)))
        assert all(results)
        assert link.failures == 0
    finally:
        await link.close()
