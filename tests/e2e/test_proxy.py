"""`gateway serve` in front of a real upstream process, over real HTTP (SPEC §2–§7).

The upstream (tests/e2e/upstream.py) echoes what it received, so these tests assert on
what actually crossed the wire: key headers, hop-by-hop headers and client `X-Gateway-*`
gone; `X-Gateway-Key-*`, `X-Request-ID` and `X-Forwarded-*` added; bodies intact.
"""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import json
import socket
import time
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import pytest

from tests.e2e.conftest import (
    KEY_VALUES,
    Gateway,
    Key,
    Upstream,
    free_port,
    vm_kib,
    wait_for,
)

pytestmark = pytest.mark.e2e

MiB = 1024 * 1024


@pytest.fixture(scope="module")
def gw(upstream: Upstream, start_gateway: Callable[..., Gateway]) -> Gateway:
    return start_gateway(
        upstream.url,
        upstream={"read_timeout": 1.0},
        server={"max_body_bytes": 64 * MiB},
        auth={"failed_attempts_limit": "1000/minute"},
        routes=[
            {"prefix": "/public", "public": True},
            {"prefix": "/admin-only", "scope": "admin"},
        ],
    )


@pytest.fixture(scope="module")
def keys(gw: Gateway) -> dict[str, Key]:
    return {
        "read": gw.create_key("read"),
        "write": gw.create_key("write"),
        "admin": gw.create_key("admin"),
        "site_a": gw.create_key("read", sites=["site-a"]),
        "limited": gw.create_key("read", rateLimit="2/minute;100/hour"),
    }


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(
        auto_decompress=False, cookie_jar=aiohttp.DummyCookieJar()
    ) as session:
        yield session


def bearer(key: Key | str) -> dict[str, str]:
    value = key.value if isinstance(key, Key) else key
    KEY_VALUES.add(value)
    return {"Authorization": f"Bearer {value}"}


def upstream_headers(echo: dict[str, Any]) -> dict[str, list[str]]:
    """The echoed request headers, by lower-case name (a list: names may repeat)."""
    found: dict[str, list[str]] = {}
    for name, value in echo["headers"]:
        found.setdefault(name.lower(), []).append(value)
    return found


async def get_json(
    http: aiohttp.ClientSession, url: str, **kwargs: Any
) -> tuple[int, dict[str, Any], Any]:
    async with http.get(url, allow_redirects=False, **kwargs) as response:
        return response.status, dict(response.headers), await response.json(content_type=None)


async def error_of(
    http: aiohttp.ClientSession, method: str, url: str, **kwargs: Any
) -> tuple[int, str, aiohttp.ClientResponse, dict[str, Any]]:
    async with http.request(method, url, allow_redirects=False, **kwargs) as response:
        body = await response.json(content_type=None)
        assert response.headers["Content-Type"] == "application/json"
        assert body["error"]["requestId"] == response.headers["X-Request-ID"]
        return response.status, body["error"]["code"], response, body["error"]


# --- forwarding: what reaches the upstream ------------------------------------------------


async def test_allowed_request_reaches_upstream_with_the_right_headers(
    http: aiohttp.ClientSession, gw: Gateway, keys: dict[str, Key], upstream: Upstream
) -> None:
    key = keys["read"]
    status, headers, echo = await get_json(
        http,
        f"{gw.url}/things/a%2Fb?x=1&y=two",
        headers={
            **bearer(key),
            "X-API-Key": key.value,
            "X-Gateway-Key-Id": "key_spoofedspoofed00",
            "X-Gateway-Key-Scope": "admin",
            "X-Gateway-Anything": "spoof",
            "Keep-Alive": "timeout=5",
            "TE": "trailers",
            "Trailer": "X-Checksum",
            "Upgrade": "h2c",
            "Proxy-Authorization": "Basic c2VjcmV0",
            "Proxy-Connection": "keep-alive",
            "X-Request-ID": "client-chosen-id-1",
            "X-Custom": "kept",
        },
        skip_auto_headers=("User-Agent", "Accept-Encoding", "Accept"),
    )
    assert status == 200
    assert echo["method"] == "GET"
    assert echo["path"] == "/things/a%2Fb"
    assert echo["query"] == "x=1&y=two"
    seen = upstream_headers(echo)
    for gone in (
        "authorization",
        "x-api-key",
        "x-gateway-anything",
        "keep-alive",
        "te",
        "trailer",
        "upgrade",
        "proxy-authorization",
        "proxy-connection",
        "connection",
    ):
        assert gone not in seen, gone
    assert seen["x-gateway-key-id"] == [key.id]
    assert seen["x-gateway-key-scope"] == ["read"]
    assert seen["x-request-id"] == ["client-chosen-id-1"]
    assert headers["X-Request-ID"] == "client-chosen-id-1"
    assert seen["x-forwarded-for"] == ["127.0.0.1"]
    assert seen["x-forwarded-proto"] == ["http"]
    assert seen["x-forwarded-host"] == [f"127.0.0.1:{gw.port}"]
    assert seen["host"] == [f"127.0.0.1:{upstream.port}"]  # Host comes from config
    assert seen["x-custom"] == ["kept"]
    # Nothing the client did not send is invented (aiohttp's default headers are off).
    for invented in ("user-agent", "accept-encoding", "accept", "content-type"):
        assert invented not in seen, invented
    # The key value reached nothing upstream.
    assert key.value not in json.dumps(echo)


async def test_connection_header_cannot_strip_what_the_gateway_adds(
    http: aiohttp.ClientSession, gw: Gateway, keys: dict[str, Key]
) -> None:
    key = keys["read"]
    status, _, echo = await get_json(
        http,
        f"{gw.url}/spoof",
        headers={
            **bearer(key),
            "Connection": "X-Gateway-Key-Id, X-Request-ID, X-Forwarded-For, X-Nominated",
            "X-Nominated": "must go",
            "X-Request-ID": "rid-connection-spoof",
        },
    )
    assert status == 200
    seen = upstream_headers(echo)
    assert "x-nominated" not in seen
    assert seen["x-gateway-key-id"] == [key.id]
    assert seen["x-gateway-key-scope"] == ["read"]
    assert seen["x-request-id"] == ["rid-connection-spoof"]
    assert seen["x-forwarded-for"] == ["127.0.0.1"]


async def test_spoofed_forwarded_headers_from_an_untrusted_peer_change_nothing(
    http: aiohttp.ClientSession, gw: Gateway, keys: dict[str, Key]
) -> None:
    status, _, echo = await get_json(
        http,
        f"{gw.url}/xff",
        headers={
            **bearer(keys["read"]),
            "X-Forwarded-For": "203.0.113.9, 198.51.100.1",
            "X-Forwarded-Proto": "https",
            "X-Forwarded-Host": "evil.example",
        },
    )
    assert status == 200
    seen = upstream_headers(echo)
    assert seen["x-forwarded-for"] == ["127.0.0.1"]
    assert seen["x-forwarded-proto"] == ["http"]
    assert seen["x-forwarded-host"] == [f"127.0.0.1:{gw.port}"]


async def test_request_body_is_forwarded_intact(
    http: aiohttp.ClientSession, gw: Gateway, keys: dict[str, Key]
) -> None:
    body = b"hello, upstream\x00\xff" * 1000
    async with http.post(f"{gw.url}/upload", data=body, headers=bearer(keys["write"])) as r:
        echo = await r.json(content_type=None)
    assert r.status == 200
    assert echo["bodyLength"] == len(body)
    assert echo["bodySha256"] == hashlib.sha256(body).hexdigest()
    assert upstream_headers(echo)["content-length"] == [str(len(body))]


async def test_public_route_needs_no_key_and_carries_no_key_headers(
    http: aiohttp.ClientSession, gw: Gateway
) -> None:
    status, _, echo = await get_json(
        http, f"{gw.url}/public/info", headers={"X-Gateway-Key-Id": "key_spoofedspoofed00"}
    )
    assert status == 200
    seen = upstream_headers(echo)
    assert "x-gateway-key-id" not in seen
    assert "x-gateway-key-scope" not in seen


async def test_upstream_status_codes_pass_through_untouched(
    http: aiohttp.ClientSession, gw: Gateway, keys: dict[str, Key]
) -> None:
    async with http.get(f"{gw.url}/status/404", headers=bearer(keys["read"])) as r:
        assert r.status == 404
        assert await r.text() == "from upstream"
    async with http.delete(f"{gw.url}/get-only", headers=bearer(keys["write"])) as r:
        assert r.status == 405
        assert "GET" in r.headers["Allow"]
        assert "error" not in await r.text()


async def test_redirects_are_passed_back_not_followed(
    http: aiohttp.ClientSession, gw: Gateway, keys: dict[str, Key]
) -> None:
    async with http.get(
        f"{gw.url}/redirect", headers=bearer(keys["read"]), allow_redirects=False
    ) as r:
        assert r.status == 302
        assert r.headers["Location"] == "/elsewhere"
        assert await r.text() == "moved"


async def test_compressed_bodies_pass_through_byte_for_byte(
    http: aiohttp.ClientSession, gw: Gateway, keys: dict[str, Key]
) -> None:
    async with http.get(f"{gw.url}/gzip", headers=bearer(keys["read"])) as r:
        raw = await r.read()
        assert r.headers["Content-Encoding"] == "gzip"
    assert gzip.decompress(raw) == b"hello compressed world" * 10


async def test_upstream_cookies_are_not_kept_by_the_gateway(
    http: aiohttp.ClientSession, gw: Gateway, keys: dict[str, Key]
) -> None:
    async with http.get(f"{gw.url}/set-cookie", headers=bearer(keys["read"])) as r:
        assert "session=upstream-cookie-value" in r.headers["Set-Cookie"]
    _, _, echo = await get_json(http, f"{gw.url}/after-cookie", headers=bearer(keys["read"]))
    assert "cookie" not in upstream_headers(echo)


# --- the access checks over HTTP (SPEC §3, §5) ----------------------------------------------


async def test_401s_carry_www_authenticate(
    http: aiohttp.ClientSession, gw: Gateway, keys: dict[str, Key]
) -> None:
    from gateway.keys.format import generate_key

    unknown = generate_key("gw")
    bad_checksum = keys["read"].value[:-1] + ("A" if keys["read"].value[-1] != "A" else "B")
    cases = [
        ({}, "MISSING_API_KEY"),
        (bearer("not-a-key"), "INVALID_API_KEY"),
        (bearer(bad_checksum), "INVALID_API_KEY"),
        (bearer(unknown), "INVALID_API_KEY"),
        ({"X-API-Key": unknown}, "INVALID_API_KEY"),
    ]
    for headers, code in cases:
        status, got, response, _ = await error_of(http, "GET", f"{gw.url}/x", headers=headers)
        assert (status, got) == (401, code)
        assert response.headers["WWW-Authenticate"] == 'Bearer realm="gateway"'


async def test_revoked_and_expired_keys(http: aiohttp.ClientSession, gw: Gateway) -> None:
    revoked = gw.create_key("read")
    gw.run(lambda service: service.revoke(revoked.id))
    status, code, response, _ = await error_of(http, "GET", f"{gw.url}/x", headers=bearer(revoked))
    assert (status, code) == (401, "KEY_REVOKED")
    assert response.headers["WWW-Authenticate"] == 'Bearer realm="gateway"'

    expires = (datetime.now(UTC) + timedelta(seconds=2)).isoformat()
    expiring = gw.create_key("read", expiresAt=expires)
    async with http.get(f"{gw.url}/x", headers=bearer(expiring)) as r:
        assert r.status == 200
    deadline = time.monotonic() + 10
    while await _status(http, f"{gw.url}/x", bearer(expiring)) == 200:
        assert time.monotonic() < deadline, "the key never expired"
        await asyncio.sleep(0.1)
    status, code, response, _ = await error_of(http, "GET", f"{gw.url}/x", headers=bearer(expiring))
    assert status == 401
    assert code == "KEY_EXPIRED"


async def _status(http: aiohttp.ClientSession, url: str, headers: dict[str, str]) -> int:
    async with http.get(url, headers=headers) as r:
        await r.read()
        return r.status


async def test_400_for_two_keys_or_two_sites(
    http: aiohttp.ClientSession, gw: Gateway, keys: dict[str, Key]
) -> None:
    status, code, _, error = await error_of(
        http,
        "GET",
        f"{gw.url}/x",
        headers={**bearer(keys["read"]), "X-API-Key": keys["write"].value},
    )
    assert (status, code) == (400, "INVALID_REQUEST")
    assert error["details"]["field"]
    status, code, _, _ = await error_of(
        http,
        "GET",
        f"{gw.url}/sites/site-a/x",
        headers={**bearer(keys["read"]), "X-Site-Id": "site-b"},
    )
    assert (status, code) == (400, "INVALID_REQUEST")


async def test_403_scope_and_site(
    http: aiohttp.ClientSession, gw: Gateway, keys: dict[str, Key]
) -> None:
    status, code, _, error = await error_of(
        http, "POST", f"{gw.url}/x", headers=bearer(keys["read"]), data=b"{}"
    )
    assert (status, code) == (403, "INSUFFICIENT_SCOPE")
    assert error["details"] == {"required": "write", "granted": "read"}
    # A route rule raises the level for every method on it.
    status, code, _, _ = await error_of(
        http, "GET", f"{gw.url}/admin-only/x", headers=bearer(keys["write"])
    )
    assert (status, code) == (403, "INSUFFICIENT_SCOPE")
    assert await _status(http, f"{gw.url}/admin-only/x", bearer(keys["admin"])) == 200
    # Sites, by path and by header.
    site_key = keys["site_a"]
    assert await _status(http, f"{gw.url}/sites/site-a/x", bearer(site_key)) == 200
    status, code, _, _ = await error_of(
        http, "GET", f"{gw.url}/sites/site-b/x", headers=bearer(site_key)
    )
    assert (status, code) == (403, "SITE_NOT_ALLOWED")
    status, code, _, _ = await error_of(
        http, "GET", f"{gw.url}/x", headers={**bearer(site_key), "X-Site-Id": "site-b"}
    )
    assert (status, code) == (403, "SITE_NOT_ALLOWED")


async def test_429_with_retry_after_and_ratelimit_headers(
    http: aiohttp.ClientSession, gw: Gateway, keys: dict[str, Key]
) -> None:
    key = keys["limited"]
    for remaining in (1, 0):
        async with http.get(f"{gw.url}/x", headers=bearer(key)) as r:
            assert r.status == 200
            assert r.headers["RateLimit-Policy"] == ('"2/minute";q=2;w=60, "100/hour";q=100;w=3600')
            assert f'"2/minute";r={remaining};' in r.headers["RateLimit"]
            assert r.headers["X-RateLimit-Limit"] == "2"
    status, code, response, error = await error_of(http, "GET", f"{gw.url}/x", headers=bearer(key))
    assert (status, code) == (429, "RATE_LIMITED")
    retry_after = int(response.headers["Retry-After"])
    assert 1 <= retry_after <= 60
    assert error["details"]["retryAfter"] == retry_after


# --- upstream failures (SPEC §7) ------------------------------------------------------------


async def test_upstream_reset_is_502_and_slow_upstream_is_504(
    http: aiohttp.ClientSession, gw: Gateway, keys: dict[str, Key]
) -> None:
    status, code, _, _ = await error_of(
        http, "GET", f"{gw.url}/reset", headers=bearer(keys["read"])
    )
    assert (status, code) == (502, "UPSTREAM_UNAVAILABLE")
    started = time.monotonic()
    status, code, _, _ = await error_of(
        http, "GET", f"{gw.url}/slow?seconds=5", headers=bearer(keys["read"])
    )
    assert (status, code) == (504, "UPSTREAM_TIMEOUT")
    assert time.monotonic() - started < 4  # read_timeout is 1 s


async def test_dead_upstream_is_502(
    http: aiohttp.ClientSession, start_gateway: Callable[..., Gateway]
) -> None:
    dead = start_gateway(f"http://127.0.0.1:{free_port()}")
    key = dead.create_key("read")
    status, code, _, _ = await error_of(http, "GET", f"{dead.url}/x", headers=bearer(key))
    assert (status, code) == (502, "UPSTREAM_UNAVAILABLE")


# --- bodies: limits and streaming -----------------------------------------------------------


def _raw_request(port: int, request: bytes) -> bytes:
    """Send a hand-made request (its body need not follow) and read the whole answer."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(request)
        data = b""
        while not data.endswith(b"}}"):
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
        return data


async def test_413_by_content_length_and_while_streaming(
    http: aiohttp.ClientSession, upstream: Upstream, start_gateway: Callable[..., Gateway]
) -> None:
    small = start_gateway(upstream.url, server={"max_body_bytes": 1024 * 1024})
    key = small.create_key("write")
    # Declared too large: refused before a byte of body is read.
    answer = _raw_request(
        small.port,
        b"POST /upload HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
        + key.value.encode()
        + b"\r\nContent-Length: 104857600\r\n\r\n",
    )
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    assert b"PAYLOAD_TOO_LARGE" in answer

    # No Content-Length (chunked): counted while streaming.
    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(40):
            yield b"z" * 65536

    status, code, _, _ = await error_of(
        http, "POST", f"{small.url}/upload", headers=bearer(key), data=chunks()
    )
    assert (status, code) == (413, "PAYLOAD_TOO_LARGE")
    # Just under the limit passes.
    async with http.post(f"{small.url}/upload", headers=bearer(key), data=b"y" * 1024 * 1024) as r:
        assert r.status == 200
        assert (await r.json(content_type=None))["bodyLength"] == 1024 * 1024


async def test_50_mib_streams_both_ways_in_bounded_memory(
    http: aiohttp.ClientSession, gw: Gateway, keys: dict[str, Key]
) -> None:
    size = 50 * MiB
    baseline = vm_kib(gw.proc.pid, "VmRSS")

    piece = bytes(range(256)) * 256  # 64 KiB
    digest = hashlib.sha256()

    async def upload() -> AsyncIterator[bytes]:
        for _ in range(size // len(piece)):
            digest.update(piece)
            yield piece

    async with http.post(f"{gw.url}/upload", headers=bearer(keys["write"]), data=upload()) as r:
        echo = await r.json(content_type=None)
    assert r.status == 200
    assert echo["bodyLength"] == size
    assert echo["bodySha256"] == digest.hexdigest()
    assert echo["chunked"]  # streamed on, not collected into one Content-Length body

    received = 0
    async with http.get(f"{gw.url}/big?bytes={size}", headers=bearer(keys["read"])) as r:
        assert r.status == 200
        assert r.headers["Content-Length"] == str(size)
        async for chunk in r.content.iter_any():
            received += len(chunk)
    assert received == size

    # The peak resident size grew by far less than one body: nothing was buffered whole.
    peak = vm_kib(gw.proc.pid, "VmHWM")
    assert (peak - baseline) * 1024 < 20 * MiB, f"peak grew by {(peak - baseline) // 1024} MiB"


async def test_client_disconnect_frees_the_upstream_connection(
    upstream: Upstream, gw: Gateway, keys: dict[str, Key], http: aiohttp.ClientSession
) -> None:
    ident = f"disconnect-{time.monotonic_ns()}"
    url = f"{gw.url}/stream?id={ident}&chunks=400&size=1024&delay=0.05"
    reader, writer = await asyncio.open_connection("127.0.0.1", gw.port)
    writer.write(
        f"GET {url.removeprefix(gw.url)} HTTP/1.1\r\nHost: x\r\n"
        f"Authorization: Bearer {keys['read'].value}\r\n\r\n".encode()
    )
    await writer.drain()
    assert (await reader.readuntil(b"\r\n\r\n")).startswith(b"HTTP/1.1 200")
    await reader.read(1024)  # the stream has started
    writer.close()
    await writer.wait_closed()

    async def state() -> str:
        async with http.get(f"{upstream.url}/_state?id={ident}") as r:
            return (await r.json())["state"]

    deadline = time.monotonic() + 10  # the full stream would take 20 s
    while (current := await state()) != "disconnected":
        assert current == "streaming", current
        assert time.monotonic() < deadline, "the upstream connection was not closed"
        await asyncio.sleep(0.05)


# --- failed attempts and trusted proxies (SPEC §4) --------------------------------------------


async def test_failed_attempts_cannot_be_dodged_with_a_spoofed_forwarded_for(
    http: aiohttp.ClientSession, upstream: Upstream, start_gateway: Callable[..., Gateway]
) -> None:
    from gateway.keys.format import generate_key

    strict = start_gateway(upstream.url, auth={"failed_attempts_limit": "3/hour"})
    good = strict.create_key("read")
    for n in range(3):
        headers = {**bearer(generate_key("gw")), "X-Forwarded-For": f"198.51.100.{n}"}
        assert (await error_of(http, "GET", f"{strict.url}/x", headers=headers))[1] == (
            "INVALID_API_KEY"
        )
    headers = {**bearer(generate_key("gw")), "X-Forwarded-For": "198.51.100.77"}
    status, code, response, _ = await error_of(http, "GET", f"{strict.url}/x", headers=headers)
    assert (status, code) == (429, "TOO_MANY_FAILED_ATTEMPTS")
    assert int(response.headers["Retry-After"]) >= 1
    # Even a valid key from that IP waits (checked before any lookup).
    status, code, _, _ = await error_of(http, "GET", f"{strict.url}/x", headers=bearer(good))
    assert (status, code) == (429, "TOO_MANY_FAILED_ATTEMPTS")


async def test_trusted_proxy_chain_is_appended_and_its_client_is_throttled(
    http: aiohttp.ClientSession, upstream: Upstream, start_gateway: Callable[..., Gateway]
) -> None:
    from gateway.keys.format import generate_key

    behind_lb = start_gateway(
        upstream.url,
        server={"trusted_proxies": ["127.0.0.0/8"]},
        auth={"failed_attempts_limit": "2/hour"},
    )
    key = behind_lb.create_key("read")
    status, _, echo = await get_json(
        http,
        f"{behind_lb.url}/x",
        headers={
            **bearer(key),
            "X-Forwarded-For": "203.0.113.5",
            "X-Forwarded-Proto": "https",
            "X-Forwarded-Host": "api.example.com",
        },
    )
    assert status == 200
    seen = upstream_headers(echo)
    assert seen["x-forwarded-for"] == ["203.0.113.5, 127.0.0.1"]
    assert seen["x-forwarded-proto"] == ["https"]
    assert seen["x-forwarded-host"] == ["api.example.com"]
    # Failed attempts count for the client the trusted proxy names, not for the proxy.
    for _ in range(2):
        headers = {**bearer(generate_key("gw")), "X-Forwarded-For": "203.0.113.66"}
        await error_of(http, "GET", f"{behind_lb.url}/x", headers=headers)
    headers = {**bearer(generate_key("gw")), "X-Forwarded-For": "203.0.113.66"}
    assert (await error_of(http, "GET", f"{behind_lb.url}/x", headers=headers))[1] == (
        "TOO_MANY_FAILED_ATTEMPTS"
    )
    other = {**bearer(key), "X-Forwarded-For": "203.0.113.67"}
    assert await _status(http, f"{behind_lb.url}/x", other) == 200


# --- the admin listener and the logs --------------------------------------------------------


async def test_health_readiness_and_metrics_on_the_admin_listener(
    http: aiohttp.ClientSession, gw: Gateway, keys: dict[str, Key]
) -> None:
    assert await _status(http, f"{gw.url}/x", bearer(keys["read"])) == 200
    async with http.get(f"{gw.admin_url}/healthz") as r:
        assert r.status == 200
    async with http.get(f"{gw.admin_url}/readyz") as r:
        assert r.status == 200
    async with http.get(f"{gw.admin_url}/metrics") as r:
        assert r.status == 200
        text = await r.text()
    assert 'gateway_requests_total{outcome="allowed",status="200"}' in text
    assert "gateway_upstream_duration_seconds_count" in text
    assert 'gateway_backend_errors_total{backend="upstream"}' in text
    for value in KEY_VALUES:
        assert value not in text
    # The proxy listener does not serve the admin routes.
    async with http.get(f"{gw.url}/healthz") as r:
        assert r.status == 401


async def test_one_json_log_line_per_request_and_no_key_values(
    http: aiohttp.ClientSession, gw: Gateway, keys: dict[str, Key]
) -> None:
    rid = f"log-check-{time.monotonic_ns()}"
    headers = {**bearer(keys["read"]), "X-Request-ID": rid}
    assert await _status(http, f"{gw.url}/logged?api_key={keys['read'].value}", headers) == 200

    def line() -> dict[str, Any] | None:
        for text in gw.proc.log().splitlines():
            if rid in text:
                return json.loads(text)
        return None

    entry = wait_for(line, 5, "the access log line")
    assert entry["requestId"] == rid
    assert entry["keyId"] == keys["read"].id
    assert entry["outcome"] == "allowed"
    assert entry["status"] == 200
    assert entry["path"] == "/logged"
    for text in gw.proc.log().splitlines():
        json.loads(text)  # every line is one JSON object
    gw.assert_no_key_values_logged()
