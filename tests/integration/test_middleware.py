"""The mounted middleware in a real Starlette app (SPEC §2–§5, §8).

Requests go through `httpx.ASGITransport` into Starlette + GatewayMiddleware, against a
real SQLite file and (for everything about keys) a real Redis too.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket

from gateway import GatewayMiddleware, Runtime, load_settings
from gateway.keys.model import KeyCreate, KeyRotate, utcnow
from gateway.keys.service import KeyService

ALL_METHODS = ["GET", "HEAD", "OPTIONS", "POST", "PUT", "PATCH", "DELETE"]
WWW = 'Bearer realm="gateway"'


@dataclass
class Seen:
    calls: list[dict[str, Any]] = field(default_factory=list)


def make_app(seen: Seen) -> Starlette:
    async def echo(request: Request) -> JSONResponse:
        info = {
            "method": request.method,
            "path": request.url.path,
            "key": request.scope.get("gateway.key"),
            "requestId": request.scope.get("gateway.request_id"),
            "clientIp": request.scope.get("gateway.client_ip"),
        }
        seen.calls.append(info)
        if request.url.path == "/boom":
            raise RuntimeError("a bug in the app with a secret trace")
        return JSONResponse(info)

    async def ws(websocket: WebSocket) -> None:
        await websocket.accept()
        await websocket.send_text("hello " + str(websocket.scope.get("gateway.key")))
        await websocket.close()

    return Starlette(
        routes=[
            Route("/{path:path}", echo, methods=[*ALL_METHODS, "TRACE", "PURGE"]),
            WebSocketRoute("/ws", ws),
        ]
    )


class Harness:
    def __init__(self, runtime: Runtime, app: Any, seen: Seen, client: httpx.AsyncClient):
        self.runtime = runtime
        self.app = app
        self.seen = seen
        self.client = client

    @property
    def service(self) -> KeyService:
        assert self.runtime.service is not None
        return self.runtime.service

    async def key(self, scope: str = "read", **fields: Any) -> tuple[str, str]:
        key, value = await self.service.create(KeyCreate(name="test", scope=scope, **fields))
        return key.id, value

    async def get(self, path: str = "/things", value: str | None = None, **kw: Any):
        headers = dict(kw.pop("headers", {}) or {})
        if value is not None:
            headers["X-API-Key"] = value
        return await self.client.request(kw.pop("method", "GET"), path, headers=headers, **kw)


def error_of(response: httpx.Response) -> dict[str, Any]:
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert set(body) == {"error"}
    assert body["error"]["requestId"] == response.headers["x-request-id"]
    return body["error"]


@pytest.fixture
async def make_gateway(store_url: str) -> AsyncIterator:
    runtimes: list[Runtime] = []
    clients: list[httpx.AsyncClient] = []

    async def make(client_addr: tuple[str, int] = ("127.0.0.1", 5000), **sections: Any):
        sections.setdefault("usage", {"flush_interval": 0.1})
        settings = load_settings(storage={"url": store_url}, **sections)
        runtime = Runtime(settings)
        await runtime.start()
        runtimes.append(runtime)
        seen = Seen()
        app = GatewayMiddleware(make_app(seen), settings, runtime=runtime)
        client = httpx.AsyncClient(
            transport=httpx.ASGITransport(app, client=client_addr), base_url="http://gw"
        )
        clients.append(client)
        return Harness(runtime, app, seen, client)

    yield make
    for client in clients:
        await client.aclose()
    for runtime in runtimes:
        await runtime.stop()


# --- SPEC §3 step 2: identify -----------------------------------------------------------


async def test_missing_key_is_401_with_www_authenticate(make_gateway) -> None:
    gw = await make_gateway()
    response = await gw.get()
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == WWW
    assert error_of(response)["code"] == "MISSING_API_KEY"
    assert gw.seen.calls == []


async def test_a_key_in_the_query_string_is_never_read(make_gateway) -> None:
    gw = await make_gateway()
    _, value = await gw.key()
    response = await gw.get(f"/things?api_key={value}&key={value}")
    assert response.status_code == 401
    assert error_of(response)["code"] == "MISSING_API_KEY"


async def test_non_bearer_authorization_is_not_a_key(make_gateway) -> None:
    gw = await make_gateway()
    _, value = await gw.key()
    response = await gw.get(headers={"Authorization": f"Basic {value}"})
    assert error_of(response)["code"] == "MISSING_API_KEY"


@pytest.mark.parametrize(
    "bad",
    [
        "gw_short",
        "nope",
        "gw_" + "A" * 38,  # the right shape, a wrong checksum
        "xx_" + "A" * 38,
    ],
)
async def test_malformed_keys_are_401_without_the_store(make_gateway, bad: str) -> None:
    gw = await make_gateway()
    await gw.service.store.close()  # any store access would now fail with 503
    response = await gw.get(value=bad)
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == WWW
    assert error_of(response)["code"] == "INVALID_API_KEY"


async def test_unknown_well_formed_key_is_401(make_gateway) -> None:
    from gateway.keys.format import generate_key

    gw = await make_gateway()
    response = await gw.get(value=generate_key("gw"))
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == WWW
    assert error_of(response)["code"] == "INVALID_API_KEY"


async def test_valid_key_in_either_header_reaches_the_app(make_gateway) -> None:
    gw = await make_gateway()
    key_id, value = await gw.key("write", sites=["alpha", "beta"])
    for headers in (
        {"Authorization": f"Bearer {value}"},
        {"authorization": f"bearer {value}"},
        {"X-API-Key": value},
        {"Authorization": f"Bearer {value}", "X-API-Key": value},  # same value twice is fine
    ):
        response = await gw.get(headers=headers)
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["key"] == {
            "id": key_id,
            "name": "test",
            "scope": "write",
            "sites": ["alpha", "beta"],
        }
        assert body["requestId"] == response.headers["x-request-id"]
        assert body["clientIp"] == "127.0.0.1"


async def test_two_different_keys_are_400(make_gateway) -> None:
    gw = await make_gateway()
    _, first = await gw.key()
    _, second = await gw.key()
    response = await gw.get(headers={"Authorization": f"Bearer {first}", "X-API-Key": second})
    assert response.status_code == 400
    error = error_of(response)
    assert error["code"] == "INVALID_REQUEST"
    assert set(error["details"]) == {"field", "reason"}
    assert first not in response.text and second not in response.text


async def test_revoked_key_is_401_from_the_very_next_request(make_gateway) -> None:
    gw = await make_gateway()
    key_id, value = await gw.key()
    assert (await gw.get(value=value)).status_code == 200  # now cached
    await gw.service.revoke(key_id)
    response = await gw.get(value=value)
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == WWW
    assert error_of(response)["code"] == "KEY_REVOKED"


async def test_rotated_key_old_value_is_401_new_value_works(make_gateway) -> None:
    gw = await make_gateway()
    key_id, old = await gw.key()
    assert (await gw.get(value=old)).status_code == 200
    _, new = await gw.service.rotate(key_id, KeyRotate())
    assert error_of(await gw.get(value=old))["code"] == "INVALID_API_KEY"
    assert (await gw.get(value=new)).status_code == 200


async def test_expired_key_is_401(make_gateway) -> None:
    gw = await make_gateway()
    _, value = await gw.key(expires_at=utcnow() + timedelta(hours=1))
    assert (await gw.get(value=value)).status_code == 200
    verifier = gw.runtime.verifier
    assert verifier is not None
    verifier.clock = lambda: time.time() + 2 * 3600  # two hours later
    response = await gw.get(value=value)
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == WWW
    assert error_of(response)["code"] == "KEY_EXPIRED"


async def test_edit_applies_from_the_next_request(make_gateway) -> None:
    from gateway.keys.model import KeyEdit

    gw = await make_gateway()
    key_id, value = await gw.key("write")
    assert (await gw.get(value=value, method="POST")).status_code == 200
    await gw.service.edit(key_id, KeyEdit(scope="read"))
    assert (await gw.get(value=value, method="POST")).status_code == 403


# --- SPEC §3 step 3: access level -------------------------------------------------------


@pytest.mark.parametrize("scope", ["read", "write", "admin"])
async def test_scope_matrix(make_gateway, scope: str) -> None:
    gw = await make_gateway(rate_limit={"default": "1000/minute"})
    _, value = await gw.key(scope)
    allowed = {
        "read": {"GET", "HEAD", "OPTIONS"},
        "write": {"GET", "HEAD", "OPTIONS", "POST", "PUT", "PATCH", "DELETE"},
        "admin": {*ALL_METHODS, "PURGE", "TRACE"},
    }[scope]
    for method in [*ALL_METHODS, "PURGE"]:
        response = await gw.get(value=value, method=method)
        if method in allowed:
            assert response.status_code == 200, (scope, method)
            continue
        assert response.status_code == 403, (scope, method)
        if method != "HEAD":
            error = error_of(response)
            assert error["code"] == "INSUFFICIENT_SCOPE"
            assert error["details"]["granted"] == scope
            assert error["details"]["required"] == ("write" if method in ALL_METHODS else "admin")


# --- SPEC §3 step 1: route rules --------------------------------------------------------


ROUTES = [
    {"prefix": "/public", "public": True},
    {"prefix": "/public/private", "scope": "admin"},
    {"prefix": "/admin", "scope": "admin"},
]


async def test_public_route_skips_key_checks(make_gateway) -> None:
    gw = await make_gateway(routes=ROUTES)
    for headers in ({}, {"X-API-Key": "gw_garbage"}):
        response = await gw.get("/public/docs", headers=headers)
        assert response.status_code == 200
        assert response.json()["key"] is None
        assert "ratelimit" not in response.headers
        assert response.headers["x-request-id"]
    assert (await gw.get("/publicity")).status_code == 401  # a segment boundary


async def test_dot_segments_cannot_escape_a_public_route(make_gateway) -> None:
    gw = await make_gateway(routes=ROUTES)
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": "/public/../admin/x",
        "raw_path": b"/public/../admin/x",
        "query_string": b"",
        "headers": [],
        "client": ("127.0.0.1", 1),
        "server": ("gw", 80),
    }
    sent: list[dict] = []

    async def receive() -> dict:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict) -> None:
        sent.append(message)

    await gw.app(scope, receive, send)
    assert sent[0]["status"] == 401


async def test_admin_scope_route(make_gateway) -> None:
    gw = await make_gateway(routes=ROUTES)
    _, write = await gw.key("write")
    _, admin = await gw.key("admin")
    for path in ("/admin/settings", "/public/private/x"):
        response = await gw.get(path, value=write)
        assert response.status_code == 403
        assert error_of(response)["details"] == {"required": "admin", "granted": "write"}
        assert (await gw.get(path, value=admin)).status_code == 200


# --- SPEC §3 step 4: sites --------------------------------------------------------------


async def test_sites_from_header_and_path(make_gateway) -> None:
    gw = await make_gateway()
    _, value = await gw.key(sites=["alpha"])
    _, every = await gw.key(sites=["*"])
    ok = [
        ("/things", {}),
        ("/things", {"X-Site-Id": "alpha"}),
        ("/sites/alpha/things", {}),
        ("/sites/alpha/things", {"X-Site-Id": "alpha"}),
    ]
    for path, headers in ok:
        assert (await gw.get(path, value=value, headers=headers)).status_code == 200
    for path, headers in [("/things", {"X-Site-Id": "beta"}), ("/sites/beta/x", {})]:
        response = await gw.get(path, value=value, headers=headers)
        assert response.status_code == 403
        assert error_of(response)["code"] == "SITE_NOT_ALLOWED"
        assert (await gw.get(path, value=every, headers=headers)).status_code == 200
    conflict = await gw.get("/sites/alpha/x", value=every, headers={"X-Site-Id": "beta"})
    assert conflict.status_code == 400
    assert error_of(conflict)["code"] == "INVALID_REQUEST"
    bad = await gw.get("/things", value=every, headers={"X-Site-Id": "no good"})
    assert bad.status_code == 400


async def test_require_site_makes_a_site_limited_key_name_a_site(make_gateway) -> None:
    gw = await make_gateway(auth={"require_site": True})
    _, limited = await gw.key(sites=["alpha"])
    _, every = await gw.key(sites=["*"])
    response = await gw.get("/things", value=limited)  # names no site
    assert response.status_code == 403
    error = error_of(response)
    assert error["code"] == "SITE_NOT_ALLOWED" and error["details"] == {"site": None}
    assert (await gw.get("/things", value=every)).status_code == 200  # "*": not affected
    assert (await gw.get("/sites/alpha/x", value=limited)).status_code == 200
    assert (await gw.get("/x", value=limited, headers={"X-Site-Id": "alpha"})).status_code == 200
    assert (await gw.get("/sites/beta/x", value=limited)).status_code == 403
    # The default: a request that names no site passes (SPEC §3).
    default = await make_gateway()
    _, limited = await default.key(sites=["alpha"])
    assert (await default.get("/things", value=limited)).status_code == 200


async def test_configured_site_header_and_path(make_gateway) -> None:
    gw = await make_gateway(auth={"site_header": "X-Tenant", "site_path_prefix": "/t/"})
    _, value = await gw.key(sites=["alpha"])
    assert (await gw.get("/t/alpha/x", value=value)).status_code == 200
    assert (await gw.get("/t/beta/x", value=value)).status_code == 403
    assert (await gw.get("/x", value=value, headers={"X-Tenant": "beta"})).status_code == 403
    assert (await gw.get("/x", value=value, headers={"X-Site-Id": "beta"})).status_code == 200


# --- SPEC §3 step 5 / §4: rate limits ---------------------------------------------------


async def test_rate_limit_429_with_headers(make_gateway) -> None:
    gw = await make_gateway(rate_limit={"default": "2/minute"})
    _, value = await gw.key()
    first = await gw.get(value=value)
    assert first.headers["ratelimit-policy"] == '"2/minute";q=2;w=60'
    assert first.headers["ratelimit"].startswith('"2/minute";r=1;t=')
    assert first.headers["x-ratelimit-limit"] == "2"
    assert first.headers["x-ratelimit-remaining"] == "1"
    assert int(first.headers["x-ratelimit-reset"]) > 1_700_000_000
    assert (await gw.get(value=value)).headers["x-ratelimit-remaining"] == "0"
    calls = len(gw.seen.calls)
    limited = await gw.get(value=value)
    assert limited.status_code == 429
    assert len(gw.seen.calls) == calls  # the app never saw it
    error = error_of(limited)
    assert error["code"] == "RATE_LIMITED"
    retry = int(limited.headers["retry-after"])
    assert 1 <= retry <= 61
    assert error["details"] == {"limit": "2/minute", "retryAfter": retry}
    assert limited.headers["ratelimit"] == f'"2/minute";r=0;t={retry}'
    assert limited.headers["ratelimit-policy"] == '"2/minute";q=2;w=60'


async def test_the_keys_own_limits_and_several_limits(make_gateway) -> None:
    gw = await make_gateway(rate_limit={"default": "100/minute"})
    _, value = await gw.key(rate_limit="1/second;3/hour")
    response = await gw.get(value=value)
    assert response.headers["ratelimit-policy"] == '"1/second";q=1;w=1, "3/hour";q=3;w=3600'
    limited = await gw.get(value=value)
    assert limited.status_code == 429
    # the rejected request consumed nothing from the hour limit
    assert '"3/hour";r=2;' in limited.headers["ratelimit"]
    assert error_of(limited)["details"]["limit"] == "1/second"


async def test_errors_before_the_limit_check_carry_no_ratelimit_headers(make_gateway) -> None:
    gw = await make_gateway()
    _, value = await gw.key(sites=["alpha"])
    response = await gw.get("/sites/beta/x", value=value)
    assert response.status_code == 403
    assert "ratelimit" not in response.headers


# --- SPEC §4: failed attempts and client IP ---------------------------------------------


async def test_failed_attempts_throttle_before_any_lookup(make_gateway) -> None:
    from gateway.keys.format import generate_key

    gw = await make_gateway(auth={"failed_attempts_limit": "3/hour"})
    _, value = await gw.key()
    for _ in range(5):  # missing keys do not count
        assert (await gw.get()).status_code == 401
    for bad in ("gw_bad", generate_key("gw"), "gw_" + "B" * 38):
        assert (await gw.get(value=bad)).status_code == 401
    await gw.service.store.close()  # from here on, any lookup would be a 503
    for presented in (generate_key("gw"), value, None):
        response = await gw.get(value=presented)
        assert response.status_code == 429
        error = error_of(response)
        assert error["code"] == "TOO_MANY_FAILED_ATTEMPTS"
        retry = int(response.headers["retry-after"])
        assert retry >= 1 and error["details"]["retryAfter"] == retry
        assert "ratelimit" not in response.headers  # no key quota was touched


async def test_failed_attempts_are_per_client_ip(make_gateway) -> None:
    gw = await make_gateway(auth={"failed_attempts_limit": "2/hour"})
    _, value = await gw.key()
    for _ in range(2):
        await gw.get(value="gw_bad")
    assert (await gw.get(value=value)).status_code == 429
    other = httpx.AsyncClient(
        transport=httpx.ASGITransport(gw.app, client=("10.9.9.9", 1)), base_url="http://gw"
    )
    async with other:
        response = await other.get("/x", headers={"X-API-Key": value})
    assert response.status_code == 200
    # the failed attempts never consumed the real key's quota
    assert response.headers["x-ratelimit-remaining"] == "59"


async def test_x_forwarded_for_from_a_trusted_proxy(make_gateway) -> None:
    gw = await make_gateway(
        client_addr=("10.0.0.5", 4000),
        server={"trusted_proxies": ["10.0.0.0/8"]},
        auth={"failed_attempts_limit": "2/hour"},
    )
    _, value = await gw.key()
    xff = {"X-Forwarded-For": "6.6.6.6, 198.51.100.7, 10.0.0.2"}
    response = await gw.get(value=value, headers=xff)
    assert response.json()["clientIp"] == "198.51.100.7"
    for _ in range(2):
        await gw.get(value="gw_bad", headers=xff)
    assert (await gw.get(value=value, headers=xff)).status_code == 429
    # another client behind the same proxy is not throttled
    other = {"X-Forwarded-For": "198.51.100.8"}
    assert (await gw.get(value=value, headers=other)).status_code == 200


async def test_x_forwarded_for_from_an_untrusted_peer_changes_nothing(make_gateway) -> None:
    gw = await make_gateway(
        client_addr=("203.0.113.50", 4000),
        server={"trusted_proxies": ["10.0.0.0/8"]},
        auth={"failed_attempts_limit": "2/hour"},
    )
    _, value = await gw.key()
    spoof = {"X-Forwarded-For": "1.1.1.1"}
    assert (await gw.get(value=value, headers=spoof)).json()["clientIp"] == "203.0.113.50"
    await gw.get(value="gw_bad", headers={"X-Forwarded-For": "1.1.1.1"})
    await gw.get(value="gw_bad", headers={"X-Forwarded-For": "2.2.2.2"})
    # rotating the spoofed header does not escape the throttle
    assert (await gw.get(value=value, headers={"X-Forwarded-For": "3.3.3.3"})).status_code == 429


# --- SPEC §5: request ids and errors ----------------------------------------------------


async def test_request_ids_kept_or_replaced(make_gateway) -> None:
    gw = await make_gateway()
    _, value = await gw.key()
    kept = await gw.get(value=value, headers={"X-Request-ID": "abc-123_DEF"})
    assert kept.headers["x-request-id"] == "abc-123_DEF"
    assert kept.json()["requestId"] == "abc-123_DEF"
    error = await gw.get(headers={"X-Request-ID": "trace-1"})
    assert error.headers["x-request-id"] == "trace-1"
    assert error_of(error)["requestId"] == "trace-1"
    for bad in ("has space", "x" * 129, "tab\there"):
        response = await gw.get(value=value, headers={"X-Request-ID": bad})
        assert response.headers["x-request-id"] != bad
        assert 1 <= len(response.headers["x-request-id"]) <= 128
    fresh = {(await gw.get(value=value)).headers["x-request-id"] for _ in range(3)}
    assert len(fresh) == 3


async def test_an_app_exception_is_a_500_envelope_without_trace(make_gateway) -> None:
    gw = await make_gateway()
    _, value = await gw.key()

    async def broken(scope, receive, send) -> None:
        raise RuntimeError("a bug in the app with a secret trace")

    app = GatewayMiddleware(broken, gw.runtime.settings, runtime=gw.runtime)
    transport = httpx.ASGITransport(app)
    async with httpx.AsyncClient(transport=transport, base_url="http://gw") as client:
        response = await client.get("/x", headers={"X-API-Key": value})
    assert response.status_code == 500
    error = error_of(response)
    assert error["code"] == "INTERNAL_ERROR"
    assert "Traceback" not in response.text and "secret trace" not in response.text
    # an app that answers its own errors (Starlette does) passes through untouched
    response = await gw.get("/boom", value=value)
    assert response.status_code == 500 and "secret trace" not in response.text


# SQLite only: a closed Redis store drops its cache, so the Redis case stops a real
# redis-server instead (test_redis_outage below).
@pytest.mark.parametrize("store_url", ["sqlite"], indirect=True)
async def test_store_down_for_an_uncached_key_is_503_cached_keys_keep_working(
    make_gateway,
) -> None:
    gw = await make_gateway()
    _, cached = await gw.key()
    _, uncached = await gw.key()
    assert (await gw.get(value=cached)).status_code == 200
    await gw.service.store.close()
    assert (await gw.get(value=cached)).status_code == 200
    response = await gw.get(value=uncached)
    assert response.status_code == 503
    assert error_of(response)["code"] == "SERVICE_UNAVAILABLE"


@pytest.mark.redis
@pytest.mark.parametrize("policy", ["allow", "deny"])
async def test_redis_outage_through_the_middleware(policy: str) -> None:
    import asyncio
    import time

    from gateway.store.base import ALL_KEYS
    from tests.integration.test_ratelimit_redis import RedisProcess

    server = RedisProcess()
    server.start()
    settings = load_settings(storage={"url": server.url}, rate_limit={"on_backend_error": policy})
    runtime = Runtime(settings)
    await runtime.start()
    heard: list[str] = []
    try:
        assert runtime.service is not None
        runtime.service.store.add_listener(heard.append)
        _, cached = await runtime.service.create(KeyCreate(name="c", scope="read"))
        _, uncached = await runtime.service.create(KeyCreate(name="u", scope="read"))
        app = GatewayMiddleware(make_app(Seen()), settings, runtime=runtime)
        transport = httpx.ASGITransport(app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gw") as client:
            # once the change feed listens (its first subscribe empties the cache) ...
            deadline = time.monotonic() + 5
            while ALL_KEYS not in heard:
                assert time.monotonic() < deadline
                await asyncio.sleep(0.01)
            # ... the key gets cached
            assert (await client.get("/x", headers={"X-API-Key": cached})).status_code == 200
            server.stop()
            started = time.monotonic()
            response = await client.get("/x", headers={"X-API-Key": cached})
            if policy == "allow":
                assert response.status_code == 200, response.text  # fail-soft cache, fail-open
                assert "ratelimit" not in response.headers
            else:
                assert response.status_code == 503
                assert error_of(response)["code"] == "SERVICE_UNAVAILABLE"
            response = await client.get("/x", headers={"X-API-Key": uncached})
            assert response.status_code == 503
            assert error_of(response)["code"] == "SERVICE_UNAVAILABLE"
            assert time.monotonic() - started < 5  # never a hang
    finally:
        server.stop()
        await runtime.stop()


async def test_metrics_count_outcomes(make_gateway) -> None:
    from gateway import metrics

    gw = await make_gateway()
    _, value = await gw.key()

    def count(outcome: str, status: str) -> float:
        return (
            metrics.REGISTRY.get_sample_value(
                "gateway_requests_total", {"outcome": outcome, "status": status}
            )
            or 0.0
        )

    allowed, missing = count("allowed", "200"), count("missing_api_key", "401")
    await gw.get(value=value)
    await gw.get()
    assert count("allowed", "200") == allowed + 1
    assert count("missing_api_key", "401") == missing + 1
    text = json.dumps(metrics.REGISTRY.get_sample_value("gateway_request_duration_seconds_count"))
    assert value not in text


# --- SPEC §8: lifespan, websockets, lazy open --------------------------------------------


@pytest.fixture
def sqlite_settings(sqlite_url: str):
    return load_settings(storage={"url": sqlite_url}, usage={"flush_interval": 60})


async def _create_key(settings, **fields: Any) -> tuple[str, str]:
    from gateway.runtime import key_service

    async with key_service(settings) as service:
        key, value = await service.create(KeyCreate(name="t", scope="read", **fields))
    return key.id, value


async def test_lazy_open_without_lifespan(sqlite_settings) -> None:
    _, value = await _create_key(sqlite_settings)
    middleware = GatewayMiddleware(make_app(Seen()), settings=sqlite_settings)
    assert not middleware.runtime.started
    transport = httpx.ASGITransport(middleware)
    async with httpx.AsyncClient(transport=transport, base_url="http://gw") as client:
        import asyncio

        responses = await asyncio.gather(
            *(client.get("/x", headers={"X-API-Key": value}) for _ in range(5))
        )
    assert [r.status_code for r in responses] == [200] * 5
    assert middleware.runtime.started
    await middleware.runtime.stop()


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_lifespan_opens_and_closes_and_websockets_pass_through(sqlite_settings) -> None:
    import asyncio

    from starlette.testclient import TestClient

    from gateway.runtime import key_service

    key_id, value = asyncio.run(_create_key(sqlite_settings))
    app = make_app(Seen())
    app.add_middleware(GatewayMiddleware, settings=sqlite_settings)
    with TestClient(app) as client:
        middleware = app.middleware_stack
        while not isinstance(middleware, GatewayMiddleware):
            middleware = middleware.app
        assert middleware.runtime.started  # opened on startup, before any request
        assert client.get("/x", headers={"X-API-Key": value}).status_code == 200
        assert client.get("/x").status_code == 401
        with client.websocket_connect("/ws") as websocket:
            assert websocket.receive_text() == "hello None"  # no key checks on websockets
    assert not middleware.runtime.started  # closed on shutdown

    async def usage() -> int:
        async with key_service(sqlite_settings) as service:
            _, summary = await service.details(key_id)
            return summary.total_requests

    # flush_interval is 60 s: the record got there because shutdown flushed it
    assert asyncio.run(usage()) == 1


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_startup_failure_is_reported_through_lifespan(sqlite_settings, monkeypatch) -> None:
    from starlette.testclient import TestClient

    app = make_app(Seen())
    app.add_middleware(GatewayMiddleware, settings=sqlite_settings)
    with TestClient(app) as client:
        client.get("/x")  # creates the store with this secret
    monkeypatch.setenv("GATEWAY_SECRET", "another-secret-" + "y" * 40)
    app = make_app(Seen())
    app.add_middleware(GatewayMiddleware, settings=sqlite_settings)
    with pytest.raises(Exception, match="different server secret"), TestClient(app):
        pass
