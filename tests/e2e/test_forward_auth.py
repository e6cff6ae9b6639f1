"""Forward auth with the real proxies (SPEC §15): nginx, Caddy and Envoy, each run with the
shipped config/ file, ask a real `gateway authz` process about every request to a real
upstream. Every answer the client gets is compared with what `gateway serve` answers for
the same request on the same store: same status, same JSON envelope, same headers.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import time
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import pytest

from tests.e2e.conftest import KEY_VALUES, Gateway, Key, Upstream, wait_for
from tests.e2e.front_proxies import PROXIES, FrontProxy, launch_authz, start_front

pytestmark = pytest.mark.e2e

# Headers of a gateway answer that must reach the client unchanged.
ANSWER_HEADERS = ("content-type", "cache-control", "www-authenticate", "retry-after")
RATELIMIT_HEADERS = ("ratelimit", "ratelimit-policy")
CONFIG: dict[str, Any] = {
    "server": {"trusted_proxies": ["127.0.0.1"]},
    "auth": {"failed_attempts_limit": "10000/minute"},
    "usage": {"flush_interval": 0.05},
    "authz": {"path_prefix": "/authz"},
    "routes": [{"prefix": "/public", "public": True}],
}


@pytest.fixture(scope="module")
def authz(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    gateway = launch_authz(tmp_path_factory.mktemp("authz"), **json.loads(json.dumps(CONFIG)))
    yield gateway
    assert gateway.proc.stop() == 0, gateway.proc.log()
    gateway.assert_no_key_values_logged()


@pytest.fixture(scope="module")
def serve(
    authz: Gateway, upstream: Upstream, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Gateway]:
    """`gateway serve` on the same store: the reference answers."""
    from tests.e2e.conftest import launch_gateway

    config = json.loads(json.dumps(CONFIG))
    config["storage"] = {"url": authz.storage_url}
    gateway = launch_gateway(tmp_path_factory.mktemp("serve"), upstream.url, **config)
    yield gateway
    gateway.proc.stop()
    gateway.assert_no_key_values_logged()


@pytest.fixture(scope="module")
def fronts(
    authz: Gateway, upstream: Upstream, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, FrontProxy]]:
    started: dict[str, FrontProxy] = {}
    yield started  # filled lazily by `front`, so a missing proxy fails only its own tests
    for proxy in started.values():
        proxy.proc.stop()


@pytest.fixture(params=PROXIES)
def front(
    request: pytest.FixtureRequest,
    fronts: dict[str, FrontProxy],
    authz: Gateway,
    upstream: Upstream,
    tmp_path_factory: pytest.TempPathFactory,
) -> FrontProxy:
    name = request.param
    if name not in fronts:
        fronts[name] = start_front(name, tmp_path_factory.mktemp(name), authz.port, upstream.port)
    return fronts[name]


@pytest.fixture(scope="module")
def keys(authz: Gateway) -> dict[str, Key]:
    expires = datetime.now(UTC) + timedelta(seconds=3)
    soon = expires.isoformat().replace("+00:00", "Z")
    made = {"expired": authz.create_key("read", expiresAt=soon)}
    made.update(
        read=authz.create_key("read"),
        write=authz.create_key("write"),
        site_a=authz.create_key("read", sites=["site-a"]),
        revoked=authz.create_key("read"),
    )
    authz.run(lambda service: service.revoke(made["revoked"].id))
    wait_for(lambda: datetime.now(UTC) > expires, 10, "the key to expire")
    return made


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as session:
        yield session


class Answer:
    def __init__(self, status: int, headers: Any, body: bytes) -> None:
        self.status = status
        self.headers = headers
        self.body = body

    def json(self) -> Any:
        return json.loads(self.body)

    def echo_headers(self) -> dict[str, list[str]]:
        """The request headers the upstream saw (it echoes them), by lower-case name."""
        found: dict[str, list[str]] = {}
        for name, value in self.json()["headers"]:
            found.setdefault(name.lower(), []).append(value)
        return found

    def __repr__(self) -> str:
        return f"<{self.status} {dict(self.headers)} {self.body[:300]!r}>"


async def call(
    http: aiohttp.ClientSession,
    base: str,
    path: str,
    *,
    method: str = "GET",
    key: Key | str | None = None,
    header: str = "Authorization",
    headers: dict[str, str] | None = None,
) -> Answer:
    sent = dict(headers or {})
    if key is not None:
        value = key.value if isinstance(key, Key) else key
        KEY_VALUES.add(value)
        sent[header] = f"Bearer {value}" if header == "Authorization" else value
    async with http.request(method, base + path, headers=sent) as response:
        return Answer(response.status, response.headers, await response.read())


def assert_same_answer(got: Answer, expected: Answer) -> None:
    """The proxy's client got what `gateway serve` answers (request ids aside)."""
    assert got.status == expected.status, (got, expected)
    body, reference = got.json(), expected.json()
    assert body["error"]["requestId"] == got.headers["X-Request-ID"], got
    body["error"].pop("requestId")
    reference["error"].pop("requestId")
    assert body == reference, (got, expected)
    for name in ANSWER_HEADERS:
        assert got.headers.get(name) == expected.headers.get(name), (name, got, expected)
    for name in RATELIMIT_HEADERS:
        assert (name in got.headers) == (name in expected.headers), (name, got, expected)


# --- allowed ---------------------------------------------------------------------------


@pytest.mark.parametrize("header", ["Authorization", "X-API-Key"])
async def test_allowed_request_reaches_the_upstream_with_identity_not_key(
    front: FrontProxy,
    keys: dict[str, Key],
    http: aiohttp.ClientSession,
    header: str,
) -> None:
    spoof = {"X-Gateway-Key-Id": "key_spoofspoofspoof", "X-Gateway-Key-Scope": "admin"}
    got = await call(
        http, front.url, "/things/1?x=1", key=keys["read"], header=header, headers=spoof
    )
    assert got.status == 200, got
    echo = got.json()
    assert (echo["method"], echo["path"], echo["query"]) == ("GET", "/things/1", "x=1")
    seen = echo_headers = got.echo_headers()
    assert seen["x-gateway-key-id"] == [keys["read"].id], echo_headers
    assert seen["x-gateway-key-scope"] == ["read"], echo_headers
    assert seen["x-request-id"] == [got.headers["X-Request-ID"]], (echo_headers, got)
    assert "authorization" not in seen and "x-api-key" not in seen, echo_headers
    # The RateLimit headers reach the client.
    assert got.headers["RateLimit-Policy"] == '"60/minute";q=60;w=60', got
    assert got.headers["RateLimit"].startswith('"60/minute";r='), got


async def test_a_client_request_id_is_kept(
    front: FrontProxy, keys: dict[str, Key], http: aiohttp.ClientSession
) -> None:
    got = await call(http, front.url, "/x", key=keys["read"], headers={"X-Request-ID": "abc-1"})
    assert got.status == 200, got
    if front.name == "envoy":
        # Envoy replaces an outside client's X-Request-ID with its own (a UUID) before
        # asking; the gateway keeps the one it is given, so both sides agree.
        assert got.echo_headers()["x-request-id"] == [got.headers["X-Request-ID"]]
    else:
        assert got.headers["X-Request-ID"] == "abc-1", got
        assert got.echo_headers()["x-request-id"] == ["abc-1"]


async def test_public_route_passes_without_key_and_spoofed_identity_is_dropped(
    front: FrontProxy, http: aiohttp.ClientSession
) -> None:
    spoof = {"X-Gateway-Key-Id": "key_spoofspoofspoof", "X-Gateway-Key-Scope": "admin"}
    got = await call(http, front.url, "/public/info", headers=spoof)
    assert got.status == 200, got
    seen = got.echo_headers()
    assert "x-gateway-key-id" not in seen and "x-gateway-key-scope" not in seen, seen


async def test_write_key_may_post(
    front: FrontProxy, keys: dict[str, Key], http: aiohttp.ClientSession
) -> None:
    got = await call(http, front.url, "/items", method="POST", key=keys["write"])
    assert got.status == 200, got
    assert got.json()["method"] == "POST"
    assert got.echo_headers()["x-gateway-key-scope"] == ["write"]


# --- denied: the same answers as gateway serve -------------------------------------------

DENIALS: dict[str, dict[str, Any]] = {
    "missing": {"path": "/x"},
    "malformed": {"path": "/x", "key": "gw_not-a-key"},
    "unknown": {"path": "/x", "key": "unknown"},
    "revoked": {"path": "/x", "key": "revoked"},
    "expired": {"path": "/x", "key": "expired"},
    "scope": {"path": "/x", "key": "read", "method": "DELETE"},
    "site_path": {"path": "/sites/site-b/x", "key": "site_a"},
    "site_header": {"path": "/x", "key": "site_a", "headers": {"X-Site-Id": "site-b"}},
    "two_sites": {"path": "/sites/site-a/x", "key": "read", "headers": {"X-Site-Id": "site-b"}},
    "two_keys": {"path": "/x", "key": "read"},  # + X-API-Key: another key (below)
}
CODES = {
    "missing": (401, "MISSING_API_KEY"),
    "malformed": (401, "INVALID_API_KEY"),
    "unknown": (401, "INVALID_API_KEY"),
    "revoked": (401, "KEY_REVOKED"),
    "expired": (401, "KEY_EXPIRED"),
    "scope": (403, "INSUFFICIENT_SCOPE"),
    "site_path": (403, "SITE_NOT_ALLOWED"),
    "site_header": (403, "SITE_NOT_ALLOWED"),
    "two_sites": (400, "INVALID_REQUEST"),
    "two_keys": (400, "INVALID_REQUEST"),
}


def _unknown_key() -> str:
    from gateway.keys.format import generate_key

    return generate_key("gw")


@pytest.mark.parametrize("case", list(DENIALS))
async def test_denials_reach_the_client_as_gateway_serve_answers_them(
    front: FrontProxy,
    serve: Gateway,
    keys: dict[str, Key],
    http: aiohttp.ClientSession,
    case: str,
) -> None:
    spec = dict(DENIALS[case])
    key = spec.pop("key", None)
    if key == "unknown":
        key = _unknown_key()
    elif key in keys:
        key = keys[key]
    if case == "two_keys":
        spec["headers"] = {"X-API-Key": keys["write"].value}
    got = await call(http, front.url, key=key, **spec)
    expected = await call(http, serve.url, key=key, **spec)
    status, code = CODES[case]
    assert (expected.status, expected.json()["error"]["code"]) == (status, code), expected
    assert_same_answer(got, expected)
    if status == 401:
        assert got.headers["WWW-Authenticate"] == 'Bearer realm="gateway"', got


async def test_rate_limited_answer_with_retry_after_and_ratelimit_headers(
    front: FrontProxy, authz: Gateway, serve: Gateway, http: aiohttp.ClientSession
) -> None:
    key = authz.create_key("read", rateLimit="2/minute")
    for _ in range(2):
        assert (await call(http, front.url, "/x", key=key)).status == 200
    got = await call(http, front.url, "/x", key=key)
    assert got.status == 429, got
    error = got.json()["error"]
    assert error["code"] == "RATE_LIMITED"
    assert error["details"]["limit"] == "2/minute"
    assert int(got.headers["Retry-After"]) >= 1
    assert error["details"]["retryAfter"] == int(got.headers["Retry-After"])
    assert got.headers["RateLimit-Policy"] == '"2/minute";q=2;w=60', got
    assert got.headers["RateLimit"].startswith('"2/minute";r=0;t='), got
    # gateway serve keeps its own counters: exhaust them too, then compare.
    for _ in range(2):
        await call(http, serve.url, "/x", key=key)
    assert_same_answer(got, await call(http, serve.url, "/x", key=key))


# --- spoofing ----------------------------------------------------------------------------


async def test_client_cannot_name_another_request(
    front: FrontProxy, keys: dict[str, Key], http: aiohttp.ClientSession
) -> None:
    """A client's own X-Forwarded-Uri / X-Original-URI (a public path) and method change
    nothing: the protected request still needs a key, and a read key cannot DELETE."""
    lies = {
        "X-Forwarded-Uri": "/public/x",
        "X-Original-URI": "/public/x",
        "X-Forwarded-Method": "GET",
        "X-Original-Method": "GET",
    }
    got = await call(http, front.url, "/private", headers=lies)
    assert got.status in (400, 401), got
    assert got.json()["error"]["code"] in ("INVALID_REQUEST", "MISSING_API_KEY"), got
    got = await call(http, front.url, "/private", method="DELETE", key=keys["read"], headers=lies)
    assert got.status in (400, 403), got


# --- usage and revoke ------------------------------------------------------------------


async def test_usage_is_recorded_and_revoke_is_effective_at_once(
    front: FrontProxy, authz: Gateway, http: aiohttp.ClientSession
) -> None:
    key = authz.create_key("read")
    assert (await call(http, front.url, "/used?q=secret", key=key)).status == 200
    assert (await call(http, front.url, "/used", method="POST", key=key)).status == 403

    def recorded() -> list[tuple[str, str, int]] | None:
        page = authz.run(lambda service: service.usage(key.id))
        rows = sorted((r.method, r.path, r.status) for r in page.data)
        return rows if len(rows) >= 2 else None

    rows = wait_for(recorded, 10, "usage records")
    assert rows == [("GET", "/used", 200), ("POST", "/used", 403)]

    authz.run(lambda service: service.revoke(key.id))
    deadline = time.monotonic() + 2.0
    while True:
        got = await call(http, front.url, "/used", key=key)
        if got.status == 401 or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.02)
    assert got.status == 401, got
    assert got.json()["error"]["code"] == "KEY_REVOKED"


# --- the listener inside gateway serve -------------------------------------------------


def test_gateway_serve_authz_listen(
    upstream: Upstream, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """`server.authz_listen` runs the same listener inside `gateway serve`, next to its
    proxy, on the same store: a key works through both."""
    import httpx

    config = json.loads(json.dumps(CONFIG))
    workdir = tmp_path_factory.mktemp("serve-authz")
    gateway = launch_authz(workdir, serve_upstream=upstream.url, **config)
    try:
        key = gateway.create_key("read")
        auth = {"Authorization": f"Bearer {key.value}"}
        asked = httpx.get(
            f"http://127.0.0.1:{gateway.authz_port}/check",  # type: ignore[attr-defined]
            headers={**auth, "X-Original-Method": "GET", "X-Original-URI": "/v1/x?y=1"},
        )
        assert asked.status_code == 200, asked.text
        assert asked.content == b""
        assert asked.headers["X-Gateway-Key-Id"] == key.id
        assert asked.headers["X-Gateway-Key-Scope"] == "read"
        assert asked.headers["RateLimit"].startswith('"60/minute";r=59;')
        proxied = httpx.get(f"{gateway.url}/v1/x", headers=auth)
        assert proxied.status_code == 200
        # One limit for both listeners: the proxy's request counted after the authz one.
        assert proxied.headers["RateLimit"].startswith('"60/minute";r=58;')
    finally:
        assert gateway.proc.stop() == 0, gateway.proc.log()
    gateway.assert_no_key_values_logged()
    assert '"outcome":"allowed"' in gateway.proc.log()


# --- the store down ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def store_down(
    upstream: Upstream, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Gateway, Gateway, dict[str, Key], dict[str, FrontProxy]]]:
    """`gateway authz` and `gateway serve` on a Redis store that then goes away; one
    never-used key per proxy (so it must be looked up)."""
    from tests.conftest import need
    from tests.e2e.conftest import Proc, clean_env, free_port, launch_gateway, port_open

    redis_server = need("redis-server", shutil.which("redis-server"))
    workdir = tmp_path_factory.mktemp("store-down")
    port = free_port()
    redis = Proc(
        [redis_server, "--port", str(port), "--save", "", "--appendonly", "no"],
        workdir / "redis.log",
        clean_env(),
    )
    wait_for(lambda: port_open(port), 10, "redis-server")
    config = json.loads(json.dumps(CONFIG))
    url = f"redis://127.0.0.1:{port}/0"
    authz = launch_authz(workdir / "authz", storage_url=url, **config)
    serve = launch_gateway(workdir / "serve", upstream.url, storage={"url": url}, **config)
    keys = {name: authz.create_key("read") for name in (*PROXIES, "serve")}
    fronts: dict[str, FrontProxy] = {}
    redis.stop()
    yield authz, serve, keys, fronts
    for proxy in fronts.values():
        proxy.proc.stop()
    serve.proc.stop()
    authz.proc.stop()


@pytest.mark.parametrize("name", PROXIES)
async def test_store_down_is_503_for_a_key_that_must_be_looked_up(
    name: str,
    store_down: tuple[Gateway, Gateway, dict[str, Key], dict[str, FrontProxy]],
    upstream: Upstream,
    http: aiohttp.ClientSession,
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    authz, serve, keys, fronts = store_down
    if name not in fronts:
        fronts[name] = start_front(name, tmp_path_factory.mktemp(name), authz.port, upstream.port)
    started = time.monotonic()
    got = await call(http, fronts[name].url, "/x", key=keys[name])
    assert time.monotonic() - started < 2.0
    expected = await call(http, serve.url, "/x", key=keys["serve"])
    assert (expected.status, expected.json()["error"]["code"]) == (503, "SERVICE_UNAVAILABLE")
    assert_same_answer(got, expected)


# --- the gateway unreachable: fail closed -------------------------------------------------


@pytest.mark.parametrize(("name", "status"), [("nginx", 503), ("caddy", 502), ("envoy", 503)])
async def test_gateway_unreachable_fails_closed(
    name: str,
    status: int,
    upstream: Upstream,
    http: aiohttp.ClientSession,
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    from tests.e2e.conftest import free_port

    nobody = free_port()  # nothing listens here
    proxy = start_front(name, tmp_path_factory.mktemp(name), nobody, upstream.port)
    try:
        got = await call(http, proxy.url, "/x", key=_unknown_key())
    finally:
        proxy.proc.stop()
    assert got.status == status, got
    if name != "caddy":  # nginx's @gateway_unavailable, Envoy's local_reply_config
        error = got.json()["error"]
        assert error["code"] == "SERVICE_UNAVAILABLE"
        assert error["requestId"] == got.headers["X-Request-ID"]


async def test_a_request_body_goes_to_the_upstream_never_to_the_gateway(
    front: FrontProxy, keys: dict[str, Key], http: aiohttp.ClientSession
) -> None:
    import hashlib

    body = bytes(range(256)) * 4096  # 1 MiB
    headers = {"Authorization": f"Bearer {keys['write'].value}"}
    async with http.post(f"{front.url}/upload", data=body, headers=headers) as response:
        assert response.status == 200, await response.text()
        echo = await response.json()
    assert echo["method"] == "POST"
    assert echo["bodyLength"] == len(body)
    assert echo["bodySha256"] == hashlib.sha256(body).hexdigest()


@pytest.mark.parametrize("name", PROXIES)
async def test_too_many_failed_attempts_reach_the_client_as_429(
    name: str,
    upstream: Upstream,
    http: aiohttp.ClientSession,
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """The failed-attempt throttle of the client IP (through the proxy's X-Forwarded-For)
    answers 429 TOO_MANY_FAILED_ATTEMPTS with Retry-After, through every proxy."""
    config = json.loads(json.dumps(CONFIG))
    config["auth"] = {"failed_attempts_limit": "2/hour"}
    gateway = launch_authz(tmp_path_factory.mktemp(f"throttle-{name}"), **config)
    proxy = start_front(name, tmp_path_factory.mktemp(name), gateway.port, upstream.port)
    try:
        for _ in range(2):
            got = await call(http, proxy.url, "/x", key=_unknown_key())
            assert got.status == 401, got
        got = await call(http, proxy.url, "/x", key=_unknown_key())
    finally:
        proxy.proc.stop()
        gateway.proc.stop()
    assert got.status == 429, got
    error = got.json()["error"]
    assert error["code"] == "TOO_MANY_FAILED_ATTEMPTS"
    assert error["requestId"] == got.headers["X-Request-ID"]
    assert int(got.headers["Retry-After"]) >= 1
    assert error["details"]["retryAfter"] == int(got.headers["Retry-After"])
    assert got.headers["Content-Type"] == "application/json"
