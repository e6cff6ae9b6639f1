"""`gateway serve`'s HTTP/1.1 data path over raw sockets (SPEC §7): framing and smuggling
attempts, edge limits and timeouts, pipelining, 100-continue, HEAD/1xx/204/304/chunked/
close-delimited answers, stale pooled connections, flow control — against a recording
upstream with its own strict parser (tests/e2e/raw_upstream.py), so every assertion is
about the bytes that crossed each wire."""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.e2e.conftest import Gateway, vm_kib
from tests.e2e.raw_upstream import RawUpstream

pytestmark = pytest.mark.e2e

HEADER_LIMIT = 8192
TIMEOUT = 1.0  # header_timeout and keepalive_timeout of the gateway under test


@pytest.fixture(scope="module")
def raw() -> Iterator[RawUpstream]:
    upstream = RawUpstream().start()
    yield upstream
    upstream.stop()


@pytest.fixture(scope="module")
def gw(raw: RawUpstream, start_gateway: Callable[..., Gateway]) -> Gateway:
    return start_gateway(
        raw.url,
        upstream={"read_timeout": 2.0},
        server={
            "max_header_bytes": HEADER_LIMIT,
            "max_headers": 50,
            "header_timeout": TIMEOUT,
            "keepalive_timeout": TIMEOUT,
            "max_body_bytes": 1024 * 1024,
        },
        # Everything public (framing is the subject) but /private, which needs a key.
        routes=[{"prefix": "/private", "scope": "read"}, {"prefix": "/", "public": True}],
    )


# --- a small strict HTTP/1.1 response reader ------------------------------------------


class Conn:
    def __init__(self, port: int, timeout: float = 5.0) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.buffer = bytearray()

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def close(self) -> None:
        self.sock.close()

    def _fill(self) -> bool:
        try:
            data = self.sock.recv(65536)
        except ConnectionResetError:
            data = b""
        self.buffer += data
        return bool(data)

    def closed(self) -> bool:
        """True when the server closed the connection (after anything still buffered)."""
        try:
            return not self._fill() and not self.buffer
        except TimeoutError:
            return False

    def _line(self) -> bytes:
        while b"\r\n" not in self.buffer:
            if not self._fill():
                raise EOFError(self.buffer)
        end = self.buffer.index(b"\r\n")
        line = bytes(self.buffer[:end])
        del self.buffer[: end + 2]
        return line

    def _exactly(self, n: int) -> bytes:
        while len(self.buffer) < n:
            if not self._fill():
                raise EOFError(self.buffer)
        data = bytes(self.buffer[:n])
        del self.buffer[:n]
        return data

    def response(self, *, head: bool = False) -> Response:
        status_line = self._line()
        version, status, _ = status_line.decode("latin-1").split(" ", 2)
        assert version == "HTTP/1.1", status_line
        headers: list[tuple[str, str]] = []
        while line := self._line():
            name, _, value = line.decode("latin-1").partition(":")
            headers.append((name.lower(), value.strip()))
        response = Response(int(status), headers, b"", "none")
        names = [n for n, _ in headers]
        assert names.count("content-length") <= 1, headers
        assert not ("content-length" in names and "transfer-encoding" in names), headers
        if head or response.status < 200 or response.status in (204, 304):
            return response
        if "transfer-encoding" in names:
            assert response.get("transfer-encoding") == "chunked"
            response.framing = "chunked"
            while True:
                size = int(self._line(), 16)
                if size == 0:
                    assert self._line() == b""
                    break
                response.body += self._exactly(size)
                assert self._exactly(2) == b"\r\n"
        elif "content-length" in names:
            response.framing = "length"
            response.body = self._exactly(int(response.get("content-length")))
        else:
            response.framing = "close"
            while self._fill():
                pass
            response.body = bytes(self.buffer)
            self.buffer.clear()
        return response


class Response:
    def __init__(self, status: int, headers: list[tuple[str, str]], body: bytes, framing: str):
        self.status = status
        self.headers = headers
        self.body = body
        self.framing = framing

    def get(self, name: str) -> str:
        values = [v for n, v in self.headers if n == name]
        assert len(values) == 1, (name, self.headers)
        return values[0]

    def has(self, name: str) -> bool:
        return any(n == name for n, _ in self.headers)

    def json(self) -> Any:
        return json.loads(self.body)

    def error_code(self) -> str:
        return self.json()["error"]["code"]


def request(
    method: str = "GET", target: str = "/x", *headers: str, body: bytes = b"", host: bool = True
) -> bytes:
    lines = [f"{method} {target} HTTP/1.1"]
    if host:
        lines.append("Host: gw.test")
    lines += headers
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def one(port: int, data: bytes, **kwargs: Any) -> tuple[Response, Conn]:
    conn = Conn(port)
    conn.send(data)
    return conn.response(**kwargs), conn


# --- smuggling and malformed framing: 400, closed, nothing upstream -----------------------

SMUGGLING = {
    "CL+TE": b"POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 6\r\nTransfer-Encoding: chunked"
    b"\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n",
    "TE+CL": b"POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 6"
    b"\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n",
    "two Content-Lengths": b"POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n"
    b"Content-Length: 30\r\n\r\nhelloGET /smuggled HTTP/1.1\r\n\r\n",
    "same Content-Length twice": b"POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n"
    b"Content-Length: 5\r\n\r\nhello",
    "Content-Length +5": b"POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: +5\r\n\r\nhello",
    "Content-Length list": b"POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 5, 5\r\n\r\nhello",
    "Content-Length hex": b"POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 0x5\r\n\r\nhello",
    "obs-fold": b"GET /x HTTP/1.1\r\nHost: a\r\nX-A: a\r\n b\r\n\r\n",
    "obs-fold on TE": b"POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding:\r\n chunked\r\n\r\n"
    b"0\r\n\r\n",
    "TE xchunked": b"POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: xchunked\r\n\r\n0\r\n\r\n",
    "TE chunked, identity": b"POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, "
    b"identity\r\n\r\n0\r\n\r\n",
    "TE identity": b"POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: identity\r\n\r\nabc",
    "TE twice": b"POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n"
    b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    "TE with space before colon": b"POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding : chunked"
    b"\r\n\r\n0\r\n\r\n",
    "TE in HTTP/1.0": b"POST /x HTTP/1.0\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    "chunk-size overflow": b"POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"FFFFFFFFFFFFFFFFF1\r\nab\r\n0\r\n\r\n",
    "chunk size not hex": b"POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"zz\r\nab\r\n0\r\n\r\n",
    "chunk without CRLF": b"POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"2\r\nabX\r\n0\r\n\r\n",
    "bare LF line ends": b"GET /x HTTP/1.1\nHost: a\n\n",
    "bare LF in a header": b"GET /x HTTP/1.1\r\nHost: a\nX-A: b\r\n\r\n",
    "bare LF in chunks": b"POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"2\nab\n0\n\n",
    "bare CR": b"GET /x HTTP/1.1\r\nHost: a\rX-A: b\r\n\r\n",
    "NUL in a value": b"GET /x HTTP/1.1\r\nHost: a\r\nX-A: a\x00b\r\n\r\n",
    "NUL in the target": b"GET /x\x00y HTTP/1.1\r\nHost: a\r\n\r\n",
    "control char in a value": b"GET /x HTTP/1.1\r\nHost: a\r\nX-A: a\x01b\r\n\r\n",
    "space in a header name": b"GET /x HTTP/1.1\r\nHost: a\r\nX A: b\r\n\r\n",
    "no Host": b"GET /x HTTP/1.1\r\nX-A: b\r\n\r\n",
    "two Hosts": b"GET /x HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
    "HTTP/0.9": b"GET /x\r\n\r\n",
    "HTTP/1.2": b"GET /x HTTP/1.2\r\nHost: a\r\n\r\n",
    "HTTP/2 preface": b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
    "unknown method": b"FOO /x HTTP/1.1\r\nHost: a\r\n\r\n",
    "upgrade with a body": b"POST /x HTTP/1.1\r\nHost: a\r\nConnection: upgrade\r\n"
    b"Upgrade: h2c\r\nContent-Length: 5\r\n\r\nGET /",
    "CONNECT": b"CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\n\r\n",
    "OPTIONS *": b"OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n",
}


@pytest.mark.parametrize("name", list(SMUGGLING))
def test_ambiguous_or_malformed_framing_is_400_and_never_forwarded(
    gw: Gateway, raw: RawUpstream, name: str
) -> None:
    before = raw.total_received()
    response, conn = one(gw.port, SMUGGLING[name])
    assert response.status == 400, (name, response.status, response.body[:200])
    assert response.error_code() == "INVALID_REQUEST"
    assert response.get("content-type") == "application/json"
    assert conn.closed(), f"{name}: the connection stayed open after the 400"
    time.sleep(0.05)
    assert raw.total_received() == before, f"{name}: bytes reached the upstream"
    assert not raw.errors


# --- what the upstream receives: one well-framed request, framing derived anew ------------


def test_a_chunked_body_is_re_encoded_chunk_by_chunk(gw: Gateway, raw: RawUpstream) -> None:
    body = b"5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nX-Trailer: smuggle\r\n\r\n"
    response, _ = one(gw.port, request("POST", "/c", "Transfer-Encoding: chunked", body=body))
    assert response.status == 200
    echo = response.json()
    assert echo["chunked"] and echo["bodyLength"] == 11
    sent = raw.requests[-1]
    assert sent.body == b"hello world"
    assert sent.header("transfer-encoding") == ["chunked"]
    assert not sent.header("x-trailer") and not sent.header("content-length")


def test_content_length_bodies_keep_their_length(gw: Gateway, raw: RawUpstream) -> None:
    response, _ = one(gw.port, request("PUT", "/l", "Content-Length: 5", body=b"hello"))
    assert response.status == 200
    sent = raw.requests[-1]
    assert (sent.method, sent.body, sent.header("content-length")) == ("PUT", b"hello", ["5"])
    # No body: no framing header at all; a declared zero is kept.
    one(gw.port, request("GET", "/n"))
    assert not raw.requests[-1].header("content-length")
    one(gw.port, request("POST", "/z", "Content-Length: 0"))
    assert raw.requests[-1].header("content-length") == ["0"]


def test_the_upstream_head_is_written_anew(gw: Gateway, raw: RawUpstream) -> None:
    response, _ = one(
        gw.port,
        request(
            "GET",
            "/a/%2e%2e/b?q=1&q=2",
            "X-Custom:    padded value   ",
            "Connection: keep-alive, X-Hop",
            "X-Hop: gone",
            "Keep-Alive: timeout=5",
            "Expect: something-else",
            "X-Gateway-Key-Id: spoofed",
        ),
    )
    assert response.status == 200
    sent = raw.requests[-1]
    assert sent.target == "/a/%2e%2e/b?q=1&q=2"
    assert sent.version == "HTTP/1.1"
    assert sent.header("x-custom") == ["padded value"]
    for gone in ("connection", "x-hop", "keep-alive", "expect", "x-gateway-key-id"):
        assert not sent.header(gone), gone
    assert sent.header("host") == [f"127.0.0.1:{raw.port}"]
    assert len(sent.header("x-request-id")) == 1


def test_an_absolute_form_target_is_forwarded_as_its_path(gw: Gateway, raw: RawUpstream) -> None:
    response, _ = one(gw.port, request("GET", "http://elsewhere.example/p?x=1"))
    assert response.status == 200
    assert raw.requests[-1].target == "/p?x=1"
    assert raw.requests[-1].header("host") == [f"127.0.0.1:{raw.port}"]


def test_http_1_0_clients(gw: Gateway, raw: RawUpstream) -> None:
    conn = Conn(gw.port)
    conn.send(b"GET /close HTTP/1.0\r\nHost: a\r\n\r\n")
    response = conn.response()
    assert response.status == 200 and response.framing == "close"
    assert response.body == b"until-close body"
    assert raw.requests[-1].version == "HTTP/1.1"  # the upstream always gets HTTP/1.1
    # HTTP/1.0 with keep-alive: a length, the connection kept.
    conn = Conn(gw.port)
    conn.send(b"GET /k HTTP/1.0\r\nHost: a\r\nConnection: keep-alive\r\n\r\n")
    response = conn.response()
    assert response.status == 200 and response.get("connection") == "keep-alive"
    conn.send(b"GET /k2 HTTP/1.0\r\nHost: a\r\n\r\n")
    assert conn.response().status == 200
    assert conn.closed()


# --- what the client receives ---------------------------------------------------------------


def test_head_204_304_and_1xx_answers_are_framed_right(gw: Gateway, raw: RawUpstream) -> None:
    conn = Conn(gw.port)
    conn.send(request("HEAD", "/head-cl"))
    response = conn.response(head=True)
    assert response.status == 200 and response.get("content-length") == "1234"
    conn.send(request("GET", "/status/204"))
    response = conn.response()
    assert response.status == 204 and not response.has("content-length")
    conn.send(request("GET", "/status/304"))
    response = conn.response()
    assert response.status == 304 and response.get("content-length") == "5"
    conn.send(request("GET", "/early-hints"))
    hints = conn.response()
    assert hints.status == 103 and hints.get("link") == "</a.css>; rel=preload"
    response = conn.response()
    assert response.status == 200 and response.json()["target"] == "/early-hints"
    # Still in step after all of them: the same connection answers the next request.
    conn.send(request("HEAD", "/status/200"))
    assert conn.response(head=True).get("content-length") == "5"
    conn.send(request("GET", "/after"))
    assert conn.response().json()["target"] == "/after"


def test_chunked_and_close_delimited_answers_reach_an_http11_client_chunked(
    gw: Gateway,
) -> None:
    conn = Conn(gw.port)
    conn.send(request("GET", "/chunked?n=4"))
    response = conn.response()
    assert response.framing == "chunked"
    assert response.body == b"chunk-0chunk-1chunk-2chunk-3"
    assert not response.has("x-trailer")
    conn.send(request("GET", "/close"))
    response = conn.response()
    assert (response.framing, response.body) == ("chunked", b"until-close body")
    conn.send(request("GET", "/again"))  # the client connection outlived the upstream's
    assert conn.response().status == 200


def test_hop_by_hop_fields_of_the_answer_are_dropped(gw: Gateway) -> None:
    response, _ = one(gw.port, request("GET", "/nominates"))
    assert response.status == 200 and response.body == b"ok"
    names = [name for name, _ in response.headers]
    assert "x-hop" not in names and "keep-alive" not in names and "connection" not in names
    assert response.get("x-stay") == "yes"
    assert response.get("x-request-id") != "upstream-id"  # the gateway's own


def test_an_upstream_answer_with_ambiguous_framing_is_502(gw: Gateway) -> None:
    response, _ = one(gw.port, request("GET", "/bad-framing"))
    assert response.status == 502
    assert response.error_code() == "UPSTREAM_UNAVAILABLE"


def test_a_pooled_connection_closed_by_the_upstream_is_replaced(
    gw: Gateway, raw: RawUpstream
) -> None:
    conn = Conn(gw.port)
    for n in range(5):  # each answer is followed by the upstream closing its side
        conn.send(request("GET", f"/drop-after?n={n}"))
        response = conn.response()
        assert response.status == 200, response.body
        time.sleep(0.05)


# --- pipelining and 100-continue ------------------------------------------------------------


def test_pipelined_requests_are_answered_in_order(gw: Gateway, raw: RawUpstream) -> None:
    conn = Conn(gw.port)
    conn.send(
        request("GET", "/p1")
        + request("POST", "/p2", "Content-Length: 3", body=b"abc")
        + request("POST", "/p3", "Transfer-Encoding: chunked", body=b"2\r\nde\r\n0\r\n\r\n")
        + request("HEAD", "/head-cl")
        + request("GET", "/p5")
    )
    targets = [conn.response().json()["target"] for _ in range(3)]
    assert targets == ["/p1", "/p2", "/p3"]
    assert conn.response(head=True).get("content-length") == "1234"
    assert conn.response().json()["target"] == "/p5"
    bodies = {r.target: r.body for r in raw.requests[-5:]}
    assert bodies["/p2"] == b"abc" and bodies["/p3"] == b"de"


def test_a_malformed_request_after_good_ones_is_answered_after_them(gw: Gateway) -> None:
    conn = Conn(gw.port)
    conn.send(request("GET", "/ok1") + request("GET", "/ok2") + b"GET /bad HTTP/1.1\nHost: a\n\n")
    assert conn.response().json()["target"] == "/ok1"
    assert conn.response().json()["target"] == "/ok2"
    assert conn.response().status == 400
    assert conn.closed()


def test_expect_100_continue(gw: Gateway, raw: RawUpstream) -> None:
    conn = Conn(gw.port)
    conn.send(request("POST", "/upload", "Content-Length: 5", "Expect: 100-continue"))
    interim = conn.response()
    assert interim.status == 100
    conn.send(b"hello")
    response = conn.response()
    assert response.status == 200 and response.json()["bodyLength"] == 5
    assert not raw.requests[-1].header("expect")
    # Refused: the error comes instead of 100 Continue, and the connection closes.
    before = raw.total_received()
    conn = Conn(gw.port)
    conn.send(request("POST", "/private/x", "Content-Length: 5", "Expect: 100-continue"))
    response = conn.response()
    assert response.status == 401 and response.error_code() == "MISSING_API_KEY"
    assert conn.closed()
    assert raw.total_received() == before


# --- edge limits and timeouts ----------------------------------------------------------------


def test_a_head_over_the_limit_is_431_closed_and_not_forwarded(
    gw: Gateway, raw: RawUpstream
) -> None:
    before = raw.total_received()
    for data in (
        request("GET", "/x", "X-Big: " + "a" * HEADER_LIMIT),
        request("GET", "/x" + "a" * HEADER_LIMIT),
        request("GET", "/x", *(f"X-H{i}: v" for i in range(51))),
        request("GET", "/x", *(f"X-H{i}: " + "v" * 200 for i in range(45))),
    ):
        response, conn = one(gw.port, data)
        assert response.status == 431
        assert response.error_code() == "HEADERS_TOO_LARGE"
        assert response.json()["error"]["details"] == {"limit": HEADER_LIMIT}
        assert conn.closed()
    assert raw.total_received() == before
    # Just under the limits passes.
    response, _ = one(gw.port, request("GET", "/x", *(f"X-H{i}: v" for i in range(48))))
    assert response.status == 200


def test_a_huge_head_is_refused_as_soon_as_the_limit_is_read(gw: Gateway) -> None:
    conn = Conn(gw.port, timeout=10)
    sent = [0]

    def flood() -> None:
        try:
            conn.sock.sendall(b"GET /x HTTP/1.1\r\nHost: a\r\nX-Big: ")
            while sent[0] < 64 * 1024 * 1024:
                conn.sock.sendall(b"a" * 65536)
                sent[0] += 65536
        except OSError:
            pass  # the gateway closed the connection

    started = time.monotonic()
    flooding = threading.Thread(target=flood, daemon=True)
    flooding.start()
    response = conn.response()
    sent_by_then = sent[0]
    assert response.status == 431
    assert time.monotonic() - started < 2
    # Answered after about the limit, not after the whole header (socket buffers aside).
    assert sent_by_then < 16 * 1024 * 1024, sent_by_then
    flooding.join(10)
    conn.close()


def test_a_slow_head_is_408_and_a_silent_connection_is_closed(gw: Gateway) -> None:
    conn = Conn(gw.port)
    conn.send(b"GET /x HTTP/1.1\r\nHost: a\r\n")
    started = time.monotonic()
    response = conn.response()
    assert response.status == 408 and response.error_code() == "REQUEST_TIMEOUT"
    assert TIMEOUT * 0.9 <= time.monotonic() - started < TIMEOUT + 4
    assert conn.closed()
    silent = Conn(gw.port)
    started = time.monotonic()
    assert silent.closed()  # a plain close, no answer
    assert time.monotonic() - started < TIMEOUT + 4


def test_slowloris_one_byte_at_a_time_is_cut_off(gw: Gateway) -> None:
    import select

    conn = Conn(gw.port)
    started = time.monotonic()
    data = request("GET", "/x", "X-Slow: " + "s" * 100)
    for byte in data[:-2]:
        if select.select([conn.sock], [], [], 0.05)[0]:
            break  # the gateway answered (or closed)
        try:
            conn.sock.sendall(bytes([byte]))
        except OSError:
            break
    response = conn.response()
    assert response.status == 408
    assert time.monotonic() - started < TIMEOUT + 3


def test_a_stalled_request_body_is_408(gw: Gateway) -> None:
    conn = Conn(gw.port)
    conn.send(request("POST", "/stalled", "Content-Length: 10", body=b"abc"))
    started = time.monotonic()
    response = conn.response()
    assert response.status == 408 and response.error_code() == "REQUEST_TIMEOUT"
    assert TIMEOUT * 0.9 <= time.monotonic() - started < TIMEOUT + 4
    assert conn.closed()
    # A body that keeps coming, however slowly, is not cut off.
    conn = Conn(gw.port)
    conn.send(request("POST", "/trickle", "Content-Length: 4"))
    for byte in b"abcd":
        time.sleep(TIMEOUT * 0.6)
        conn.send(bytes([byte]))
    response = conn.response()
    assert response.status == 200 and response.json()["bodyLength"] == 4


def test_an_idle_keep_alive_connection_is_closed(gw: Gateway) -> None:
    conn = Conn(gw.port)
    conn.send(request("GET", "/x"))
    assert conn.response().status == 200
    started = time.monotonic()  # the gateway's idle clock started a little earlier
    assert conn.closed()
    assert TIMEOUT * 0.5 <= time.monotonic() - started < TIMEOUT + 4


def test_a_body_over_the_limit_is_413_by_length_and_while_streaming(gw: Gateway) -> None:
    response, conn = one(gw.port, request("POST", "/x", "Content-Length: 2000000"))
    assert response.status == 413 and conn.closed()
    chunk = b"%x\r\n" % 65536 + b"a" * 65536 + b"\r\n"
    conn = Conn(gw.port)
    conn.send(request("POST", "/x", "Transfer-Encoding: chunked"))
    try:
        for _ in range(20):
            conn.send(chunk)
    except OSError:
        pass
    response = conn.response()
    assert response.status == 413 and response.error_code() == "PAYLOAD_TOO_LARGE"


# --- streaming with flow control ------------------------------------------------------------


def test_a_client_that_does_not_read_holds_the_upstream_back(gw: Gateway, raw: RawUpstream) -> None:
    size = 128 * 1024 * 1024
    baseline = vm_kib(gw.proc.pid, "VmRSS")
    conn = Conn(gw.port, timeout=30)
    conn.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
    conn.send(request("GET", f"/big?bytes={size}&id=slow-reader"))
    time.sleep(1.5)  # the client reads nothing meanwhile
    sent = raw.sent.get("slow-reader", 0)
    assert sent < 32 * 1024 * 1024, f"the upstream could send {sent} bytes to a stalled client"
    grown = vm_kib(gw.proc.pid, "VmRSS") - baseline
    assert grown * 1024 < 32 * 1024 * 1024, f"the gateway grew by {grown} KiB"
    response = conn.response()
    assert response.status == 200 and len(response.body) == size
    assert raw.sent["slow-reader"] == size


# --- any head at all: a well-framed request upstream or none, never a 500 -----------------

BASES = [
    request(
        "POST", "/fuzz?a=1", "X-A: b", "Transfer-Encoding: chunked", body=b"5\r\nhello\r\n0\r\n\r\n"
    ),
    request("POST", "/fuzz?a=1", "X-A: b", "Content-Length: 5", body=b"hello"),
    request("GET", "/fuzz?a=1", "X-A: b", "Content-Length: 5", "Transfer-Encoding: chunked")
    + b"5\r\nhello\r\n0\r\n\r\n",
    request("GET", "/fuzz?a=1", "X-A: b"),
]


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    base=st.sampled_from(BASES),
    edits=st.lists(
        st.tuples(
            st.integers(min_value=0, max_value=120),
            st.integers(min_value=0, max_value=4),
            st.sampled_from(
                [b"", b"\r", b"\n", b"\x00", b" ", b"\t", b":", b"\r\n", b"chunked", b"5", b","]
            ),
        ),
        min_size=0,
        max_size=3,
    ),
)
def test_any_mangled_head_gets_an_answer_and_never_smuggles(
    gw: Gateway, raw: RawUpstream, base: bytes, edits: list[tuple[int, int, bytes]]
) -> None:
    data = base
    for position, cut, insert in edits:
        data = data[:position] + insert + data[position + cut :]
    before = len(raw.requests)
    conn = Conn(gw.port, timeout=5)
    conn.send(data + request("GET", "/fuzz-next"))
    conn.sock.shutdown(socket.SHUT_WR)  # nothing more comes: no waiting for a timeout
    statuses = []
    try:
        while len(statuses) < 2:
            statuses.append(conn.response().status)
    except (EOFError, ValueError, AssertionError, TimeoutError):
        pass
    conn.close()
    assert all(status in (200, 400, 408, 413, 431) for status in statuses), statuses
    assert 500 not in statuses
    assert not raw.errors, raw.errors  # the upstream never saw a malformed request
    for sent in raw.requests[before:]:
        assert sent.target in ("/fuzz?a=1", "/fuzz-next") or sent.target.startswith("/"), sent


# --- TLS on the proxy listener ----------------------------------------------------------------


@pytest.mark.filterwarnings("ignore:ssl.TLSVersion:DeprecationWarning")  # the old client below
def test_tls_cert_and_key_make_the_proxy_listener_https(
    raw: RawUpstream,
    start_gateway: Callable[..., Gateway],
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    import ssl

    import httpx

    from tests.e2e.test_authz_listener import _self_signed

    cert, key = _self_signed(tmp_path_factory.mktemp("proxy-tls"))
    tls = start_gateway(
        raw.url,
        server={"tls_cert": str(cert), "tls_key": str(key)},
        routes=[{"prefix": "/", "public": True}],
    )
    context = ssl.create_default_context(cafile=str(cert))
    with httpx.Client(verify=context) as client:
        for _ in range(2):  # keep-alive over TLS
            response = client.post(f"https://localhost:{tls.port}/tls", content=b"secret body")
            assert response.status_code == 200
            echo = response.json()
            assert echo["bodyLength"] == 11
            assert dict((n.lower(), v) for n, v in echo["headers"])["x-forwarded-proto"] == "https"
    old = ssl.create_default_context(cafile=str(cert))
    old.minimum_version = ssl.TLSVersion.TLSv1
    old.maximum_version = ssl.TLSVersion.TLSv1_1
    with pytest.raises(httpx.ConnectError):  # TLS 1.2 is the least the listener speaks
        httpx.get(f"https://localhost:{tls.port}/old", verify=old)
    with socket.create_connection(("127.0.0.1", tls.port), timeout=5) as plain:
        plain.sendall(request("GET", "/plain"))  # plain HTTP on the TLS port: no answer
        with contextlib.suppress(OSError):
            assert not plain.recv(100).startswith(b"HTTP/1.1 200")


def test_requests_wait_for_a_free_upstream_connection(
    raw: RawUpstream, start_gateway: Callable[..., Gateway]
) -> None:
    """upstream.max_connections bounds the pool; a request beyond it waits, not fails."""
    one_conn = start_gateway(
        raw.url, upstream={"max_connections": 1}, routes=[{"prefix": "/", "public": True}]
    )
    before = raw.connections
    conns = [Conn(one_conn.port) for _ in range(4)]
    for n, conn in enumerate(conns):
        conn.send(request("GET", f"/slow?s=0.2&n={n}"))
    assert [conn.response().status for conn in conns] == [200] * 4
    assert raw.connections - before == 1  # all four over the one pooled connection
