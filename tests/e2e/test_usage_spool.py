"""Usage is never lost (SPEC §13, issue 8 point 7): records the store cannot take — Redis
down, at shutdown too — wait in `usage.spool_path` and are written when the store is
back, at the latest on the next start."""

from __future__ import annotations

import asyncio
import signal
import time
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import Gateway, Upstream, launch_gateway, wait_for
from tests.e2e.rawhttp import fetch
from tests.redis_process import RedisProcess, persistent_redis  # noqa: F401 - fixture

pytestmark = pytest.mark.redis


def total_requests(gateway: Gateway, key_id: str) -> int:
    async def summary(service: Any) -> int:
        _key, usage = await service.details(key_id)
        return usage.total_requests

    return gateway.run(summary)


async def test_records_made_while_redis_is_down_survive_a_stop_and_a_restart(
    tmp_path: Path,
    upstream: Upstream,
    persistent_redis: RedisProcess,  # noqa: F811
) -> None:
    spool = tmp_path / "usage.spool"
    config = {
        "storage": {"url": persistent_redis.url},
        "usage": {"spool_path": str(spool), "flush_interval": 0.2},
        "rate_limit": {"default": "100000/minute"},
    }
    gateway = launch_gateway(tmp_path / "one", upstream.url, **config)
    try:
        key = gateway.create_key()
        headers = {"X-API-Key": key.value}
        before = await asyncio.gather(*(fetch(gateway.port, "/a", headers) for _ in range(50)))
        assert {a.status for a in before} == {200}
        wait_for(lambda: total_requests(gateway, key.id) == 50, 10, "the first 50 records")

        persistent_redis.kill()
        # The key is cached: requests keep working; their usage cannot be written.
        during = []
        for _ in range(4):
            during += await asyncio.gather(*(fetch(gateway.port, "/b", headers) for _ in range(50)))
        assert {a.status for a in during} == {200}
        assert gateway.proc.stop(signal.SIGTERM) == 0
        assert spool.exists() and spool.stat().st_size > 0
    finally:
        gateway.proc.stop(signal.SIGKILL)

    persistent_redis.start()
    again = launch_gateway(tmp_path / "two", upstream.url, **config)
    try:
        started = time.monotonic()
        wait_for(lambda: total_requests(again, key.id) == 250, 10, "every record")
        assert time.monotonic() - started < 10
        assert not spool.exists() or spool.stat().st_size == 0
        assert total_requests(again, key.id) == 250  # nothing twice either
        assert not list(tmp_path.glob("usage.spool.*"))
    finally:
        again.proc.stop()
