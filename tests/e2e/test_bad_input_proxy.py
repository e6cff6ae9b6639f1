"""Malformed requests sent byte for byte to a real `gateway serve` (raw sockets, so nothing
is cleaned up by a client library): the documented error or a clean forward, never a 500,
a hang or a key value echoed — and a client that leaves never holds its upstream connection."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Callable

import pytest

from tests.e2e.conftest import Gateway, Key, Upstream

pytestmark = pytest.mark.e2e

LIMIT = 64 * 1024  # server.max_body_bytes of the gateway under test


@pytest.fixture(scope="module")
def gw(upstream: Upstream, start_gateway: Callable[..., Gateway]) -> Gateway:
    return start_gateway(
        upstream.url,
        upstream={"read_timeout": 10.0},
        # Heads up to 128 KiB: the 60 KB header below is about key handling, not the
        # edge limit (tests/e2e/test_proxy_framing.py covers server.max_header_bytes).
        server={"max_body_bytes": LIMIT, "max_header_bytes": 128 * 1024},
        auth={"failed_attempts_limit": "100000/minute"},
    )


@pytest.fixture(scope="module")
def keys(gw: Gateway) -> dict[str, Key]:
    return {
        "read": gw.create_key("read", rateLimit="100000/minute"),
        "write": gw.create_key("write", rateLimit="100000/minute"),
        "admin": gw.create_key("admin", rateLimit="100000/minute"),
    }


def exchange(port: int, data: bytes, timeout: float = 10.0) -> tuple[int, dict[str, str], bytes]:
    """Send raw bytes, read until the server closes; (status, headers, body)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(data)
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
    head, _, body = received.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return int(lines[0].split()[1]), headers, body


def request(target: bytes, *headers: bytes, method: bytes = b"GET", body: bytes = b"") -> bytes:
    lines = [
        method + b" " + target + b" HTTP/1.1",
        b"Host: gw.test",
        *headers,
        b"Connection: close",
    ]
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


def assert_envelope(status: int, headers: dict[str, str], body: bytes, code: str) -> None:
    assert headers["content-type"].startswith("application/json"), (status, body)
    error = json.loads(body)["error"]
    assert error["code"] == code, error
    assert error["requestId"] == headers["x-request-id"]


@pytest.mark.parametrize(
    ("header", "status", "code"),
    [
        (b"Authorization: Bearer ", 401, "MISSING_API_KEY"),
        (b"Authorization: Bearer      ", 401, "MISSING_API_KEY"),
        (b"Authorization: Bearer", 401, "MISSING_API_KEY"),
        (b"Authorization: Basic dXNlcjpwYXNz", 401, "MISSING_API_KEY"),
        (b"Authorization: Bearer \xe9\xff", 401, "INVALID_API_KEY"),
        (b"X-API-Key: \xff\xfe", 401, "INVALID_API_KEY"),
        (b"X-API-Key: gw_" + b"A" * 5000, 401, "INVALID_API_KEY"),
        (b"X-Big: " + b"a" * 60000, 401, "MISSING_API_KEY"),
    ],
)
def test_odd_key_headers_get_the_documented_401(
    gw: Gateway, header: bytes, status: int, code: str
) -> None:
    got, headers, body = exchange(gw.port, request(b"/anything", header))
    assert got == status
    assert_envelope(got, headers, body, code)
    assert headers["www-authenticate"] == 'Bearer realm="gateway"'


def test_two_different_values_of_one_key_header_are_400(gw: Gateway, keys: dict[str, Key]) -> None:
    data = request(
        b"/anything",
        b"X-API-Key: " + keys["read"].value.encode(),
        b"X-API-Key: " + keys["admin"].value.encode(),
    )
    status, headers, body = exchange(gw.port, data)
    assert status == 400
    assert_envelope(status, headers, body, "INVALID_REQUEST")
    assert keys["read"].value.encode() not in body and keys["admin"].value.encode() not in body


@pytest.mark.parametrize(
    ("target", "site_header", "status"),
    [
        (b"/sites/", None, 400),
        (b"/sites/%ff/x", None, 400),
        (b"/sites/*/x", None, 400),
        (b"/sites/" + b"a" * 65 + b"/x", None, 400),
        (b"/sites/a%00/x", None, 400),
        (b"/x", b"\xff", 400),
        (b"/x", b"", 400),
        (b"/sites/a/x", b"b", 400),
    ],
)
def test_bad_site_ids_are_400_naming_the_source(
    gw: Gateway, keys: dict[str, Key], target: bytes, site_header: bytes | None, status: int
) -> None:
    headers = [b"X-API-Key: " + keys["read"].value.encode()]
    if site_header is not None:
        headers.append(b"X-Site-Id: " + site_header)
    got, response_headers, body = exchange(gw.port, request(target, *headers))
    assert got == status
    assert_envelope(got, response_headers, body, "INVALID_REQUEST")


@pytest.mark.parametrize(
    "target",
    [b"//anything", b"/%2e%2e/%2e%2e/etc/passwd", b"/%ff%fe", b"/a%00b", b"/x?%ff=%fe&a=1&a=2"],
)
def test_odd_paths_are_forwarded_as_sent(gw: Gateway, keys: dict[str, Key], target: bytes) -> None:
    status, _, body = exchange(
        gw.port, request(target, b"X-API-Key: " + keys["read"].value.encode())
    )
    assert status == 200, body
    echoed = json.loads(body)
    path = target.decode().partition("?")[0]
    assert echoed["path"] == path or echoed["path"].encode("latin-1") == path.encode()


@pytest.mark.parametrize(
    "value", [b"a" * 129, b"\xe9abc", b"a b", b""], ids=["long", "latin1", "space", "empty"]
)  # fmt: skip
def test_a_bad_request_id_is_replaced(gw: Gateway, keys: dict[str, Key], value: bytes) -> None:
    status, headers, body = exchange(
        gw.port,
        request(b"/x", b"X-API-Key: " + keys["read"].value.encode(), b"X-Request-ID: " + value),
    )
    assert status == 200
    assert headers["x-request-id"] and headers["x-request-id"].encode() != value
    sent = dict((name.lower(), v) for name, v in json.loads(body)["headers"])
    assert sent["x-request-id"] == headers["x-request-id"]


def test_garbage_x_forwarded_for_from_an_untrusted_peer_is_replaced(
    gw: Gateway, keys: dict[str, Key]
) -> None:
    status, _, body = exchange(
        gw.port,
        request(
            b"/x",
            b"X-API-Key: " + keys["read"].value.encode(),
            b"X-Forwarded-For: ,,, \xff, 999.1.1.1, [::1]",
        ),
    )
    assert status == 200
    sent = dict((name.lower(), v) for name, v in json.loads(body)["headers"])
    assert sent["x-forwarded-for"] == "127.0.0.1"


def test_a_body_over_the_limit_is_413_by_content_length_and_while_streaming(
    gw: Gateway, keys: dict[str, Key]
) -> None:
    key = b"X-API-Key: " + keys["write"].value.encode()
    declared = request(b"/x", key, b"Content-Length: %d" % (LIMIT + 1), method=b"POST")
    status, headers, body = exchange(gw.port, declared)
    assert status == 413
    assert_envelope(status, headers, body, "PAYLOAD_TOO_LARGE")
    chunk = b"%x\r\n" % 16384 + b"a" * 16384 + b"\r\n"
    chunked = request(
        b"/x", key, b"Transfer-Encoding: chunked", method=b"POST", body=chunk * 5 + b"0\r\n\r\n"
    )
    status, headers, body = exchange(gw.port, chunked)
    assert status == 413
    assert_envelope(status, headers, body, "PAYLOAD_TOO_LARGE")


def test_options_asterisk_is_not_reported_as_an_upstream_failure(
    gw: Gateway, keys: dict[str, Key]
) -> None:
    status, headers, body = exchange(
        gw.port, request(b"*", b"X-API-Key: " + keys["admin"].value.encode(), method=b"OPTIONS")
    )
    assert status == 400, body
    assert_envelope(status, headers, body, "INVALID_REQUEST")


def test_a_body_crossing_the_limit_after_the_answer_started_closes_promptly(
    gw: Gateway, keys: dict[str, Key]
) -> None:
    head = request(
        b"/echo-body",
        b"X-API-Key: " + keys["write"].value.encode(),
        b"Transfer-Encoding: chunked",
        method=b"POST",
    )
    chunk = b"%x\r\n" % 16384 + b"a" * 16384 + b"\r\n"
    with socket.create_connection(("127.0.0.1", gw.port), timeout=8) as sock:
        sock.sendall(head + chunk)
        received = b""
        while b"\r\n\r\n" not in received:  # the upstream's answer has started
            received += sock.recv(65536)
        assert received.startswith(b"HTTP/1.1 200")
        started = time.monotonic()
        try:
            sock.sendall(chunk * (LIMIT // 16384 + 1))
            while sock.recv(65536):
                pass
        except OSError:
            pass  # a reset is a prompt close too
        elapsed = time.monotonic() - started
    assert elapsed < 5.0, f"the connection stayed open {elapsed:.1f} s (read_timeout is 10 s)"


def test_a_client_leaving_mid_body_frees_its_upstream_connection(
    gw: Gateway, keys: dict[str, Key], upstream: Upstream
) -> None:
    """SPEC §7: the upstream must not wait for the rest of a body that will never come."""
    import httpx

    ident = f"mid-body-{time.monotonic_ns()}"
    head = request(
        f"/echo-body?id={ident}".encode(),
        b"X-API-Key: " + keys["write"].value.encode(),
        b"Content-Length: 10",
        method=b"POST",
        body=b"abc",
    )

    def state() -> str:
        return httpx.get(f"{upstream.url}/_state?id={ident}", timeout=5).json()["state"]

    with socket.create_connection(("127.0.0.1", gw.port), timeout=8) as sock:
        sock.sendall(head)
        deadline = time.monotonic() + 5
        while state() != "streaming":
            assert time.monotonic() < deadline, "the upstream never saw the request"
            time.sleep(0.02)
    deadline = time.monotonic() + 5  # the gateway's read_timeout is 10 s
    while (current := state()) != "disconnected":
        assert current == "streaming", current
        assert time.monotonic() < deadline, "the upstream connection was not freed"
        time.sleep(0.05)
