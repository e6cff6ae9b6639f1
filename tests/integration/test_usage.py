"""Usage records (SPEC §6) and the access log (SPEC §14), through the mounted middleware.

Records are flushed in the background within the interval and on shutdown, and read back
through KeyService.details. Logs and usage are searched for every key value used.
"""

from __future__ import annotations

import asyncio
import io
import logging
import time
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from gateway import GatewayMiddleware, Runtime, load_settings, metrics
from gateway.keys.format import generate_key
from gateway.keys.model import KeyCreate
from gateway.logs import JsonFormatter
from gateway.pipeline.usage import UsageRecorder
from gateway.runtime import key_service


async def ok(request: Request) -> PlainTextResponse:
    return PlainTextResponse("ok")


APP = Starlette(routes=[Route("/{path:path}", ok, methods=["GET", "POST"])])


async def _wait_for(predicate, timeout: float = 5.0, interval: float = 0.02) -> float:
    """Poll `predicate` (async) until true; the seconds it took."""
    started = time.monotonic()
    while not await predicate():
        assert time.monotonic() - started < timeout, "condition not met in time"
        await asyncio.sleep(interval)
    return time.monotonic() - started


async def test_usage_is_flushed_within_the_interval(store_url: str) -> None:
    settings = load_settings(storage={"url": store_url}, usage={"flush_interval": 0.2})
    runtime = Runtime(settings)
    await runtime.start()
    try:
        assert runtime.service is not None
        key, value = await runtime.service.create(
            KeyCreate(name="u", scope="read", sites=["alpha"])
        )
        app = GatewayMiddleware(APP, settings, runtime=runtime)
        transport = httpx.ASGITransport(app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gw") as client:
            headers = {"X-API-Key": value}
            assert (await client.get("/a?secret=1", headers=headers)).status_code == 200
            assert (await client.get("/sites/alpha/b", headers=headers)).status_code == 200
            assert (await client.post("/c", headers=headers)).status_code == 403
            assert (await client.get("/sites/beta/d", headers=headers)).status_code == 403
            await client.get("/x")  # no key: not recorded
            sent = time.monotonic()

        async def recorded() -> bool:
            _, summary = await runtime.service.details(key.id)
            return summary.total_requests == 4

        await _wait_for(recorded)
        assert time.monotonic() - sent < 0.2 + 0.5  # the interval, plus a margin
        _, summary = await runtime.service.details(key.id)
        recent = sorted(summary.recent, key=lambda r: r.at)
        assert [(r.method, r.path, r.status, r.site) for r in recent] == [
            ("GET", "/a", 200, None),
            ("GET", "/sites/alpha/b", 200, "alpha"),
            ("POST", "/c", 403, None),
            ("GET", "/sites/beta/d", 403, "beta"),
        ]
        assert all(r.latency_ms >= 0 for r in recent)
        today = summary.daily[-1]
        assert (today.requests, today.errors) == (4, 2)
        assert (await runtime.service.get(key.id)).last_used_at is not None
    finally:
        await runtime.stop()


async def test_usage_is_flushed_on_shutdown(store_url: str) -> None:
    settings = load_settings(storage={"url": store_url}, usage={"flush_interval": 3600})
    runtime = Runtime(settings)
    await runtime.start()
    assert runtime.service is not None
    key, value = await runtime.service.create(KeyCreate(name="u", scope="read"))
    app = GatewayMiddleware(APP, settings, runtime=runtime)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app), base_url="http://gw"
    ) as client:
        for _ in range(25):
            await client.get("/x", headers={"X-API-Key": value})
    await runtime.stop()  # nothing was flushed yet: the interval is an hour
    async with key_service(settings) as service:
        _, summary = await service.details(key.id)
    assert summary.total_requests == 25


async def test_a_failed_flush_is_retried_and_the_buffer_is_bounded(sqlite_url: str) -> None:
    settings = load_settings(storage={"url": sqlite_url})
    async with key_service(settings) as service:
        key, _ = await service.create(KeyCreate(name="u", scope="read"))
        recorder = UsageRecorder(service.store, flush_interval=3600, max_buffer=3)
        dropped = metrics.USAGE_DROPPED._value.get()
        for _ in range(4):
            recorder.record(key.id, "GET", "/x", 200, 1.0, None)
        assert len(recorder) == 3
        assert metrics.USAGE_DROPPED._value.get() == dropped + 1
        await service.store.close()
        assert await recorder.flush() is False  # the store is down: records kept
        assert len(recorder) == 3
        await service.store.open()
        assert await recorder.flush() is True
        _, summary = await service.details(key.id)
        assert summary.total_requests == 3


async def test_no_key_value_in_logs_or_usage(store_url: str) -> None:
    settings = load_settings(
        storage={"url": store_url},
        auth={"failed_attempts_limit": "1000/minute"},
        rate_limit={"default": "3/minute"},
    )
    runtime = Runtime(settings)
    await runtime.start()
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger("gateway")  # everything the gateway logs (not the test client)
    old_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    try:
        assert runtime.service is not None
        key, value = await runtime.service.create(KeyCreate(name="u", scope="read"))
        revoked, revoked_value = await runtime.service.create(KeyCreate(name="r", scope="read"))
        await runtime.service.revoke(revoked.id)
        unknown = generate_key("gw")
        values = [value, revoked_value, unknown, "gw_not_a_key_at_all_but_secret"]
        app = GatewayMiddleware(APP, settings, runtime=runtime)
        transport = httpx.ASGITransport(app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gw") as client:
            for presented in values:
                for _ in range(5):  # includes 429s for the valid key
                    await client.get(f"/p?key={presented}", headers={"X-API-Key": presented})
                    await client.get(
                        f"/q?api_key={presented}",
                        headers={"Authorization": f"Bearer {presented}"},
                    )
            await client.get(f"/z?key={value}")  # only in the query string
            await client.get(
                "/c", headers={"X-API-Key": value, "Authorization": f"Bearer {unknown}"}
            )
        await runtime.stop()
        text = stream.getvalue()
        lines = [line for line in text.splitlines() if '"gateway.access"' in line]
        assert len(lines) == 4 * 10 + 2
        assert any('"outcome":"rate_limited"' in line for line in lines)
        assert any('"outcome":"key_revoked"' in line for line in lines)
        assert any(f'"keyId":"{key.id}"' in line for line in lines)
        async with key_service(settings) as service:
            page = await service.usage(key.id, limit=200)
            usage_text = repr(page.data)
        assert len(page.data) == 10
        for secret in values:
            assert secret not in text
            assert secret not in usage_text
    finally:
        root.removeHandler(handler)
        root.setLevel(old_level)
        await runtime.stop()


@pytest.mark.parametrize("enabled", [True, False])
async def test_access_line_fields(sqlite_url: str, enabled: bool) -> None:
    settings = load_settings(storage={"url": sqlite_url})
    runtime = Runtime(settings)
    await runtime.start()
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    access = logging.getLogger("gateway.access")
    access.addHandler(handler)
    access.setLevel(logging.INFO if enabled else logging.WARNING)
    try:
        assert runtime.service is not None
        key, value = await runtime.service.create(KeyCreate(name="u", scope="read"))
        app = GatewayMiddleware(APP, settings, runtime=runtime)
        transport = httpx.ASGITransport(app, client=("198.51.100.4", 1))
        async with httpx.AsyncClient(transport=transport, base_url="http://gw") as client:
            await client.get("/things?q=1", headers={"X-API-Key": value, "X-Request-ID": "r-1"})
        if not enabled:
            assert stream.getvalue() == ""
            return
        import json

        line: dict[str, Any] = json.loads(stream.getvalue().strip())
        assert line["logger"] == "gateway.access"
        assert line["requestId"] == "r-1"
        assert line["keyId"] == key.id
        assert line["outcome"] == "allowed"
        assert line["status"] == 200
        assert line["latencyMs"] >= 0
        assert line["method"] == "GET"
        assert line["path"] == "/things"
        assert line["clientIp"] == "198.51.100.4"
    finally:
        access.removeHandler(handler)
        access.setLevel(logging.NOTSET)
        await runtime.stop()
