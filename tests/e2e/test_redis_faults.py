"""Load and faults with a real Redis under real `gateway serve` replicas (SPEC §13, issue 8
points 3-5): load is not a fault, a frozen Redis answers within 1 s, a restarted Redis is
used again within 5 s by a replica that saw no traffic meanwhile."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable

import pytest

from tests.e2e.conftest import Gateway, Upstream
from tests.e2e.rawhttp import Answer, fetch
from tests.redis_process import (  # noqa: F401 - fixtures
    RedisProcess,
    own_redis,
    persistent_redis,
)

pytestmark = pytest.mark.redis


def bearer(value: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {value}"}


def replicas(start_gateway: Callable[..., Gateway], upstream: Upstream, url: str, n: int = 2):
    return [
        start_gateway(upstream.url, storage={"url": url}, keys={"cache_ttl": 60.0})
        for _ in range(n)
    ]


async def wait_ready(gateway: Gateway, value: str) -> None:
    """Until the replica answers the key (the store connection is warm)."""
    deadline = time.monotonic() + 10
    while (await fetch(gateway.port, "/warm", bearer(value))).status != 200:
        assert time.monotonic() < deadline, "replica never admitted the key"
        await asyncio.sleep(0.05)


@pytest.mark.parametrize("strategy", ["sliding-window-counter", "moving-window"])
async def test_1000_concurrent_requests_over_two_replicas_admit_exactly_the_limit(
    start_gateway: Callable[..., Gateway],
    upstream: Upstream,
    own_redis: RedisProcess,  # noqa: F811
    strategy: str,
) -> None:
    gateways = [
        start_gateway(
            upstream.url, storage={"url": own_redis.url}, rate_limit={"strategy": strategy}
        )
        for _ in range(2)
    ]
    key = gateways[0].create_key(rateLimit="10/minute")
    answers: list[Answer] = await asyncio.gather(
        *(fetch(gateways[i % 2].port, f"/load/{i}", bearer(key.value)) for i in range(1000))
    )
    statuses = Counter(answer.status for answer in answers)
    assert statuses == {200: 10, 429: 990}, statuses
    # Every admitted request carried honest RateLimit headers (the limiter was consulted).
    assert all("ratelimit" in a.headers for a in answers if a.status == 200)


async def test_frozen_redis_every_answer_within_one_second(
    start_gateway: Callable[..., Gateway],
    upstream: Upstream,
    own_redis: RedisProcess,  # noqa: F811
) -> None:
    gateway = start_gateway(upstream.url, storage={"url": own_redis.url})
    known = gateway.create_key()
    admin = gateway.create_key(scope="admin")
    never_seen = gateway.create_key()
    await wait_ready(gateway, known.value)
    assert (await fetch(gateway.admin_port, "/v1/keys", bearer(admin.value))).status == 200

    own_redis.freeze()
    try:
        answers = await asyncio.gather(
            fetch(gateway.port, "/x", bearer(never_seen.value)),
            fetch(gateway.port, "/x", bearer(known.value)),
            fetch(gateway.admin_port, "/readyz"),
            fetch(gateway.admin_port, "/v1/keys", bearer(admin.value)),
            fetch(gateway.admin_port, f"/v1/keys/{known.id}", bearer(admin.value)),
        )
        # and again, once the gateway knows Redis is failing
        answers += await asyncio.gather(
            fetch(gateway.port, "/x", bearer(never_seen.value)),
            fetch(gateway.admin_port, "/readyz"),
        )
    finally:
        own_redis.thaw()
    slow = [(a.status, round(a.seconds, 2)) for a in answers if a.seconds > 1.0]
    assert not slow, slow
    never, cached, ready, listing, one, never_again, ready_again = answers
    assert (never.status, never.code) == (503, "SERVICE_UNAVAILABLE")
    assert cached.status == 200  # fail-soft: a cached key works, rate limit fails open
    assert ready.status == 503 and ready_again.status == 503
    assert listing.status == 503 and one.status == 503
    assert never_again.status == 503


async def test_restarted_redis_serves_a_fresh_key_on_an_idle_replica_within_5s(
    start_gateway: Callable[..., Gateway],
    upstream: Upstream,
    persistent_redis: RedisProcess,  # noqa: F811
) -> None:
    busy, idle = replicas(start_gateway, upstream, persistent_redis.url)
    key = busy.create_key(rateLimit="100000/minute")
    fresh = [busy.create_key() for _ in range(21)]  # never used before the restart
    # Fill both replicas' pools: 100 concurrent requests each.
    for gateway in (busy, idle):
        await wait_ready(gateway, key.value)
        await asyncio.gather(*(fetch(gateway.port, "/w", bearer(key.value)) for _ in range(100)))

    persistent_redis.kill()
    persistent_redis.start()  # same data, every pooled connection now dead
    restarted = time.monotonic()

    # The replica that saw no traffic since the restart: its first answer must be good.
    first = await fetch(idle.port, "/fresh", bearer(fresh[0].value))
    assert (first.status, first.code) == (200, None), first.body
    assert time.monotonic() - restarted < 5.0
    # Concurrent never-cached keys on the busy replica: each lookup on a dead pooled
    # connection is retried on a fresh one.
    answers = await asyncio.gather(
        *(fetch(busy.port, "/fresh", bearer(k.value)) for k in fresh[1:])
    )
    assert [a.status for a in answers] == [200] * 20, [(a.status, a.code) for a in answers]
