"""The decision core alone, no framework (gateway/pipeline/core.py; SPEC §2–§6, §14).

A real SQLite file in a temp dir is the store; requests are `RequestHead`s built by hand.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from gateway import metrics
from gateway.errors import GatewayError
from gateway.keys.model import KeyCreate
from gateway.pipeline.core import Decision, DecisionCore, RequestHead, render_error
from gateway.runtime import Runtime
from gateway.settings import Settings, load_settings

PEER = ("203.0.113.7", 50000)


def head(
    path: str = "/items",
    method: str = "GET",
    *,
    key: str | None = None,
    headers: list[tuple[bytes, bytes]] | None = None,
    client: tuple[str, int] | None = PEER,
) -> RequestHead:
    items = [(b"host", b"api.example")]
    if key is not None:
        items.append((b"x-api-key", key.encode()))
    items += headers or []
    return RequestHead(method, path, items, client)


def make_settings(tmp_path: Path, **sections: Any) -> Settings:
    return load_settings(storage={"url": f"sqlite:///{tmp_path / 'gateway.db'}"}, **sections)


@pytest.fixture
async def runtime(tmp_path: Path) -> AsyncIterator[Runtime]:
    rt = Runtime(
        make_settings(
            tmp_path,
            auth={"failed_attempts_limit": "3/hour"},
            routes=[{"prefix": "/public", "public": True}, {"prefix": "/ops", "scope": "admin"}],
            rate_limit={"default": "2/minute", "strategy": "fixed-window"},
            usage={"flush_interval": 3600},
        )
    )
    await rt.start()
    yield rt
    await rt.stop()


async def create(runtime: Runtime, scope: str = "read", **fields: Any) -> tuple[str, str]:
    key, value = await runtime.service.create(KeyCreate(name="k", scope=scope, **fields))
    return key.id, value


def headers_of(pairs: list[tuple[bytes, bytes]]) -> dict[bytes, bytes]:
    return dict(pairs)


async def test_an_allowed_request_carries_the_key_and_its_headers(runtime: Runtime) -> None:
    core = DecisionCore.for_listener(runtime.settings, runtime=runtime)
    key_id, value = await create(runtime, sites=["alpha"])
    decision = await core.decide(
        head("/sites/alpha/x", key=value, headers=[(b"x-request-id", b"req-1")])
    )
    assert decision.allowed and decision.status == 200 and decision.error is None
    assert decision.key is not None and decision.key.id == key_id
    assert decision.site == "alpha" and decision.request_id == "req-1"
    assert decision.client_ip == PEER[0]
    assert decision.view() == {"id": key_id, "name": "k", "scope": "read", "sites": ["alpha"]}
    client = headers_of(decision.client_headers)
    assert client[b"x-request-id"] == b"req-1"
    assert client[b"ratelimit"] == b'"2/minute";r=1;t=60'
    upstream = headers_of(decision.upstream_headers)
    assert upstream[b"x-gateway-key-id"] == key_id.encode()
    assert upstream[b"x-gateway-key-scope"] == b"read"
    assert upstream[b"x-request-id"] == b"req-1"
    assert upstream[b"x-forwarded-for"] == PEER[0].encode()
    assert upstream[b"x-forwarded-proto"] == b"http"
    assert upstream[b"x-forwarded-host"] == b"api.example"


async def test_the_view_is_a_fresh_copy_each_time(runtime: Runtime) -> None:
    core = DecisionCore(runtime.settings, runtime=runtime)
    _, value = await create(runtime, sites=["alpha"])
    first = (await core.decide(head(key=value))).view()
    assert first is not None
    first["sites"].append("mutated")
    second = (await core.decide(head(key=value))).view()
    assert second is not None and second["sites"] == ["alpha"]


async def test_a_spoofed_forwarded_for_from_an_untrusted_peer_changes_nothing(
    tmp_path: Path,
) -> None:
    settings = make_settings(tmp_path, server={"trusted_proxies": ["10.0.0.0/8"]})
    core = DecisionCore(settings)
    spoof = [(b"x-forwarded-for", b"1.1.1.1"), (b"x-forwarded-host", b"evil.example")]
    try:
        untrusted = await core.decide(head("/public", headers=spoof), public=True)
        assert untrusted.client_ip == PEER[0]
        upstream = headers_of(untrusted.upstream_headers)
        assert upstream[b"x-forwarded-for"] == PEER[0].encode()
        assert upstream[b"x-forwarded-host"] == b"api.example"
        trusted = await core.decide(head(headers=spoof, client=("10.1.2.3", 1)), public=True)
        assert trusted.client_ip == "1.1.1.1"
        upstream = headers_of(trusted.upstream_headers)
        assert upstream[b"x-forwarded-for"] == b"1.1.1.1, 10.1.2.3"
        assert upstream[b"x-forwarded-host"] == b"evil.example"
    finally:
        await core.stop()


async def test_a_public_route_needs_no_key_and_opens_nothing(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, routes=[{"prefix": "/public", "public": True}])
    core = DecisionCore(settings)
    decision = await core.decide(head("/public/docs"))
    assert decision.allowed and decision.key is None and decision.view() is None
    assert not core.started  # a public route needs no store
    # `public=False` overrides the rule; the store opens lazily
    decision = await core.decide(head("/public/docs"), public=False)
    assert decision.error is not None and decision.error.code == "MISSING_API_KEY"
    assert core.started
    await core.stop()
    assert not core.started


async def test_missing_key_is_401_with_the_envelope(runtime: Runtime) -> None:
    core = DecisionCore(runtime.settings, runtime=runtime)
    decision = await core.decide(head(headers=[(b"x-request-id", b"abc")]))
    assert not decision.allowed and decision.status == 401
    status, headers, body = core.error_response(decision)
    assert status == 401
    names = [name for name, _ in headers]
    assert len(names) == len(set(names))  # nothing twice
    found = headers_of(headers)
    assert found[b"content-type"] == b"application/json"
    assert found[b"content-length"] == str(len(body)).encode()
    assert found[b"cache-control"] == b"no-store"
    assert found[b"www-authenticate"] == b'Bearer realm="gateway"'
    assert found[b"x-request-id"] == b"abc"
    error = json.loads(body)["error"]
    assert error["code"] == "MISSING_API_KEY" and error["requestId"] == "abc"


@pytest.mark.parametrize(
    ("value", "code"),
    [("gw_not-a-key", "INVALID_API_KEY"), (None, "INVALID_API_KEY")],
    ids=["bad-shape", "bad-checksum"],
)
async def test_failed_attempts_are_throttled_per_ip(
    runtime: Runtime, value: str | None, code: str
) -> None:
    core = DecisionCore(runtime.settings, runtime=runtime)
    _, good = await create(runtime)
    if value is None:  # a well-formed value whose checksum is wrong
        value = good[:-1] + ("A" if good[-1] != "A" else "B")
    for _ in range(3):
        decision = await core.decide(head(key=value))
        assert decision.error is not None and decision.error.code == code
    blocked = await core.decide(head(key=good))  # even a good key, from this IP
    assert blocked.error is not None and blocked.error.code == "TOO_MANY_FAILED_ATTEMPTS"
    assert blocked.key is None
    status, headers, _ = core.error_response(blocked)
    assert status == 429 and int(headers_of(headers)[b"retry-after"]) >= 1
    other = await core.decide(head(key=good, client=("198.51.100.1", 1)))
    assert other.allowed


async def test_missing_keys_are_not_failed_attempts(runtime: Runtime) -> None:
    core = DecisionCore(runtime.settings, runtime=runtime)
    _, good = await create(runtime)
    for _ in range(5):
        assert (await core.decide(head())).status == 401
    assert (await core.decide(head(key=good))).allowed


async def test_admin_listener_has_its_own_counter_and_needs_admin(runtime: Runtime) -> None:
    proxy = DecisionCore.for_listener(runtime.settings, "proxy", runtime=runtime)
    admin = DecisionCore.for_listener(runtime.settings, "admin", runtime=runtime)
    _, read = await create(runtime)
    _, root = await create(runtime, "admin")
    for _ in range(4):
        await proxy.decide(head(key="gw_guess"))
    assert (await proxy.decide(head(key=root))).status == 429
    # proxy traffic does not lock administrators out
    assert (await admin.decide(head("/v1/keys", key=root))).allowed
    denied = await admin.decide(head("/v1/keys", key=read))
    assert denied.status == 403 and denied.error is not None
    assert denied.error.details == {"required": "admin", "granted": "read"}
    assert "admin access level" in denied.error.message
    assert denied.key is not None  # a valid key: its usage is recorded
    assert (await admin.decide(head("/healthz"), public=True)).allowed
    # the admin listener applies no rate limit: far beyond 2/minute
    for _ in range(5):
        assert (await admin.decide(head("/v1/keys", key=root))).allowed


async def test_scope_site_and_route_rules(runtime: Runtime) -> None:
    core = DecisionCore(runtime.settings, runtime=runtime)
    _, read = await create(runtime, sites=["alpha"])
    post = await core.decide(head(method="POST", key=read))
    assert post.status == 403 and post.error is not None
    assert post.error.details == {"required": "write", "granted": "read"}
    ops = await core.decide(head("/ops/x", key=read))
    assert ops.error is not None and ops.error.details["required"] == "admin"
    site = await core.decide(head("/sites/beta/x", key=read))
    assert site.error is not None and site.error.code == "SITE_NOT_ALLOWED"
    assert site.site == "beta" and site.key is not None
    two = await core.decide(head("/sites/alpha/x", key=read, headers=[(b"x-site-id", b"beta")]))
    assert two.status == 400 and two.error is not None and two.error.code == "INVALID_REQUEST"


async def test_rate_limited_is_429_with_headers_once(runtime: Runtime) -> None:
    core = DecisionCore(runtime.settings, runtime=runtime)
    _, value = await create(runtime)
    assert (await core.decide(head(key=value))).allowed
    assert (await core.decide(head(key=value))).allowed
    limited = await core.decide(head(key=value))
    assert limited.status == 429 and limited.error is not None
    assert limited.error.code == "RATE_LIMITED" and limited.key is not None
    _, headers, _ = core.error_response(limited)
    names = [name for name, _ in headers]
    assert len(names) == len(set(names))
    found = headers_of(headers)
    assert found[b"ratelimit"].endswith(b";r=0;t=60") and found[b"retry-after"] == b"60"


async def test_a_later_error_of_the_face_keeps_the_decision_headers(runtime: Runtime) -> None:
    core = DecisionCore(runtime.settings, runtime=runtime)
    _, value = await create(runtime)
    decision = await core.decide(head(key=value))
    status, headers, body = core.error_response(
        decision, error=GatewayError("UPSTREAM_UNAVAILABLE")
    )
    assert status == 502 and b"ratelimit" in headers_of(headers)
    assert json.loads(body)["error"]["requestId"] == decision.request_id
    # a bare error with a request id, for a face that has no decision
    status, headers, body = render_error(GatewayError("REQUEST_TIMEOUT", status=408), "r-9")
    assert status == 408 and headers_of(headers)[b"x-request-id"] == b"r-9"
    assert json.loads(body)["error"]["requestId"] == "r-9"


async def test_an_unexpected_failure_is_a_500_decision(
    runtime: Runtime, caplog: pytest.LogCaptureFixture
) -> None:
    core = DecisionCore(runtime.settings, runtime=runtime)
    _, value = await create(runtime)

    async def broken(presented: str) -> Any:
        raise RuntimeError("a bug")

    runtime.verifier.verify = broken  # type: ignore[method-assign]
    with caplog.at_level(logging.ERROR, "gateway"):
        decision = await core.decide(head(key=value))
    assert decision.status == 500 and decision.error is not None
    assert decision.error.code == "INTERNAL_ERROR"
    assert "a bug" in caplog.text
    assert b"a bug" not in core.error_response(decision)[2]


async def test_a_store_that_cannot_open_is_503(tmp_path: Path) -> None:
    (tmp_path / "dir").mkdir()
    settings = load_settings(storage={"url": f"sqlite:///{tmp_path / 'dir'}"})
    core = DecisionCore(settings)
    decision = await core.decide(head(key="gw_x"))
    assert decision.status == 503 and decision.error is not None
    assert decision.error.code == "SERVICE_UNAVAILABLE"
    assert not core.started


async def test_finish_records_usage_metrics_and_one_access_line(
    runtime: Runtime, caplog: pytest.LogCaptureFixture
) -> None:
    core = DecisionCore(runtime.settings, runtime=runtime)
    key_id, value = await create(runtime, sites=["alpha"])
    allowed = await core.decide(head("/sites/alpha/x", key=value))
    denied = await core.decide(head("/sites/alpha/x", method="DELETE", key=value))
    missing = await core.decide(head("/x"))

    def count(outcome: str, status: str) -> float:
        sample = metrics.REGISTRY.get_sample_value(
            "gateway_requests_total", {"outcome": outcome, "status": status}
        )
        return sample or 0.0

    counted = count("insufficient_scope", "403")
    with caplog.at_level(logging.INFO, "gateway.access"):
        core.finish(allowed, 204)
        core.finish(denied, denied.status)
        core.finish(missing, missing.status)
    await runtime.usage.flush()
    _, summary = await runtime.service.details(key_id)
    recent = [(r.method, r.path, r.status, r.site) for r in reversed(summary.recent)]
    assert recent == [
        ("GET", "/sites/alpha/x", 204, "alpha"),
        ("DELETE", "/sites/alpha/x", 403, None),  # scope is checked before site
    ]
    outcomes = [r.fields["outcome"] for r in caplog.records if hasattr(r, "fields")]
    assert outcomes == ["allowed", "insufficient_scope", "missing_api_key"]
    assert count("insufficient_scope", "403") == counted + 1


def test_decision_is_a_plain_value() -> None:
    decision = Decision(True, 200, None, None, None, "r", "ip", 0.0, [])
    assert decision.view() is None
    assert headers_of(decision.upstream_headers) == {b"x-request-id": b"r"}


async def test_decide_now_decides_without_io_or_gives_way(runtime: Runtime) -> None:
    core = DecisionCore.for_listener(runtime.settings, runtime=runtime)
    _, value = await create(runtime)
    # Not cached yet: a lookup is needed, so no decision — and nothing counted.
    assert core.decide_now(head(key=value)) is None
    first = await core.decide(head(key=value))
    assert first.allowed and headers_of(first.client_headers)[b"ratelimit"].startswith(
        b'"2/minute";r=1;'
    )
    # Cached: decided on the spot, counted once, the same as decide().
    second = core.decide_now(head(key=value))
    assert second is not None and second.allowed
    assert headers_of(second.client_headers)[b"ratelimit"].startswith(b'"2/minute";r=0;')
    limited = core.decide_now(head(key=value))
    assert limited is not None and limited.status == 429 and limited.error is not None
    assert limited.error.code == "RATE_LIMITED"
    missing = core.decide_now(head())
    assert missing is not None and missing.status == 401
    public = core.decide_now(head("/public/x"))
    assert public is not None and public.allowed and public.key is None


async def test_decide_now_before_the_resources_are_open(tmp_path: Path) -> None:
    core = DecisionCore.for_listener(make_settings(tmp_path))
    assert core.decide_now(head(key="gw_whatever")) is None
    decision = await core.decide(head())  # opens them lazily
    assert decision.status == 401
    await core.stop()
