"""Shared fixtures: one real redis-server per test session, real SQLite files, settings.

Set GATEWAY_REQUIRE_SERVICES=1 (CI does) to make a missing redis-server, Chromium, nginx,
Caddy or Envoy a failure instead of a skip — and, so nothing slips through, any skip at all.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from hypothesis import settings as hypothesis_settings
from pytest_redis import factories

REQUIRE_SERVICES = os.environ.get("GATEWAY_REQUIRE_SERVICES") == "1"

# No per-example deadline: Hypothesis's default 200 ms measures how busy the machine is
# (two cores shared by several test runs), not the code — test_key_format's insert/delete
# property failed that way once while every example was rejected as it should be.
hypothesis_settings.register_profile("gateway", deadline=None)
hypothesis_settings.load_profile("gateway")
TEST_SECRET = "test-secret-" + "x" * 40


def need(tool: str, path: str | None) -> str:
    """The path of `tool`, or skip (fail under GATEWAY_REQUIRE_SERVICES=1) without it."""
    if path:
        return path
    message = f"{tool} is not installed"
    if REQUIRE_SERVICES:
        pytest.fail(message + " (GATEWAY_REQUIRE_SERVICES=1)")
    pytest.skip(message)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """Under GATEWAY_REQUIRE_SERVICES=1 a skipped test is reported as failed (xfail stays)."""
    report = yield
    if REQUIRE_SERVICES and report.skipped and not hasattr(report, "wasxfail"):
        report.outcome = "failed"
        report.longrepr = f"skipped under GATEWAY_REQUIRE_SERVICES=1: {report.longrepr}"
    return report


# One redis-server for the whole session, on a free port, with nothing saved to disk.
redis_proc = factories.redis_proc(
    executable=shutil.which("redis-server") or "/usr/bin/redis-server", port=None
)


@pytest.fixture(scope="session")
def redis_server(request: pytest.FixtureRequest) -> str:
    """The URL of this session's redis-server (db 0); skips/fails when it is missing."""
    need("redis-server", shutil.which("redis-server"))
    proc = request.getfixturevalue("redis_proc")
    return f"redis://{proc.host}:{proc.port}"


@pytest.fixture
def redis_url(redis_server: str) -> Iterator[str]:
    """An empty Redis database for one test (flushed before it)."""
    import redis

    client = redis.Redis.from_url(redis_server + "/0")
    client.flushall()
    client.close()
    yield redis_server + "/0"


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'gateway.db'}"


@pytest.fixture(autouse=True)
def _server_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every test runs with a known GATEWAY_SECRET unless it removes it."""
    monkeypatch.setenv("GATEWAY_SECRET", TEST_SECRET)
    monkeypatch.delenv("GATEWAY_CONFIG", raising=False)


@pytest.fixture(params=["sqlite", "redis"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Each test using it runs once per store: a real SQLite file and a real Redis."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'gateway.db'}"
    return request.getfixturevalue("redis_url")


@pytest.fixture
async def service(store_url: str) -> AsyncIterator:
    from gateway.runtime import key_service
    from gateway.settings import load_settings

    async with key_service(load_settings(storage={"url": store_url})) as svc:
        yield svc


# --- bigger Redis topologies (SPEC §13): started once per session when a test asks ---------


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator:
    """A real 3-master Redis Cluster on free loopback ports (tests/redis_topologies.py)."""
    from tests.redis_topologies import RedisCluster3

    need("redis-server", shutil.which("redis-server"))
    need("redis-cli", shutil.which("redis-cli"))
    cluster = RedisCluster3(tmp_path_factory.mktemp("cluster")).start()
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(scope="session")
def redis_sentinel(tmp_path_factory: pytest.TempPathFactory) -> Iterator:
    """A real master + replica + sentinel (service `gw-master`); tests that fail it over
    start their own with `SentinelSetup`."""
    from tests.redis_topologies import SentinelSetup

    need("redis-server", shutil.which("redis-server"))
    need("redis-cli", shutil.which("redis-cli"))
    setup = SentinelSetup(tmp_path_factory.mktemp("sentinel")).start()
    try:
        yield setup
    finally:
        setup.stop()


@pytest.fixture(params=["cluster", "sentinel"])
def topology_url(request: pytest.FixtureRequest) -> str:
    """An empty redis+cluster:// or redis+sentinel:// store for one test."""
    setup = request.getfixturevalue("redis_" + request.param)
    setup.flush()
    return setup.url
