"""SPEC §7 edge limits on real `gateway serve` listeners over raw sockets (issue 8 points
1-2): a huge or header-stuffed head is refused with 431 after reading just the limit and
the connection closed, nothing reaches the app; a head trickling in is cut by
`server.header_timeout` (408); idle connections close; one attacker stalls nobody."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import time
from collections.abc import Callable

import pytest

from tests.e2e.conftest import Gateway, Upstream, vm_kib
from tests.e2e.rawhttp import fetch

LISTENERS = ["proxy", "admin"]


@pytest.fixture(scope="module")
def gateway(start_gateway: Callable[..., Gateway], upstream: Upstream) -> Gateway:
    return start_gateway(
        upstream.url,
        server={"header_timeout": 1.0, "keepalive_timeout": 1.0},
    )


def port_of(gateway: Gateway, listener: str) -> int:
    return gateway.port if listener == "proxy" else gateway.admin_port


def exchange(port: int, data: bytes, timeout: float = 5.0) -> tuple[bytes, float]:
    """Send `data`, read until the server closes; (everything read, seconds taken)."""
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        with contextlib.suppress(OSError):  # refused mid-send: the answer is still readable
            sock.sendall(data)
        chunks = []
        try:
            while chunk := sock.recv(65536):
                chunks.append(chunk)
        except ConnectionResetError:
            pass
    return b"".join(chunks), time.monotonic() - started


def status_and_code(answer: bytes) -> tuple[int, str | None]:
    head, _, body = answer.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    try:
        return status, json.loads(body)["error"]["code"]
    except (ValueError, KeyError, TypeError):
        return status, None


@pytest.mark.parametrize("listener", LISTENERS)
def test_a_head_over_max_header_bytes_is_431_and_closed(gateway: Gateway, listener: str) -> None:
    head = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 20_000  # no end yet
    answer, seconds = exchange(port_of(gateway, listener), head)
    assert status_and_code(answer) == (431, "HEADERS_TOO_LARGE")
    assert b'"limit":16384' in answer
    assert seconds < 2.0


@pytest.mark.parametrize("listener", LISTENERS)
def test_more_than_max_headers_fields_is_431(gateway: Gateway, listener: str) -> None:
    fields = b"".join(b"X-%d: 1\r\n" % i for i in range(101))
    answer, _ = exchange(
        port_of(gateway, listener), b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + fields + b"\r\n"
    )
    assert status_and_code(answer) == (431, "HEADERS_TOO_LARGE")


def test_the_limits_are_whole_heads_not_single_lines(gateway: Gateway) -> None:
    # 99 fields, 15 KiB in all: within both limits, answered normally.
    fields = b"".join(b"X-%d: %s\r\n" % (i, b"v" * 140) for i in range(98))
    head = b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + fields + b"Connection: close\r\n\r\n"
    assert len(head) < 16 * 1024
    answer, _ = exchange(gateway.admin_port, head)
    assert status_and_code(answer)[0] == 200


@pytest.mark.parametrize("listener", LISTENERS)
def test_a_trickling_head_gets_408_after_header_timeout(gateway: Gateway, listener: str) -> None:
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", port_of(gateway, listener)), timeout=5) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        answer = b""
        try:
            for _ in range(8):  # one byte every 0.25 s, for up to 2 s
                sock.sendall(b"X")
                time.sleep(0.25)
        except OSError:
            pass
        try:
            while chunk := sock.recv(65536):
                answer += chunk
        except ConnectionResetError:
            pass
    assert status_and_code(answer) == (408, "REQUEST_TIMEOUT")
    assert time.monotonic() - started < 3.0


@pytest.mark.parametrize("listener", LISTENERS)
def test_silent_and_idle_connections_are_closed(gateway: Gateway, listener: str) -> None:
    port = port_of(gateway, listener)
    # Nothing ever sent: a plain close after header_timeout.
    answer, seconds = exchange(port, b"")
    assert answer == b"" and seconds < 3.0
    # Idle after an answer: closed after keepalive_timeout.
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        started = time.monotonic()
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
        assert data.startswith(b"HTTP/1.1 ")
        assert time.monotonic() - started < 3.0


def test_malformed_http_on_the_admin_listener_is_the_json_envelope(gateway: Gateway) -> None:
    answer, _ = exchange(gateway.admin_port, b"GET / HTTP/1.1\r\nHost x\r\n\r\n")
    assert status_and_code(answer) == (400, "INVALID_REQUEST")


@pytest.mark.parametrize("listener", LISTENERS)
async def test_header_floods_stall_no_one_and_memory_stays_bounded(
    gateway: Gateway, listener: str
) -> None:
    """Four clients each sending a 64 MiB header (the issue's repro) while a normal client
    keeps asking: the normal client is answered promptly, the gateway's memory barely
    moves."""
    port = port_of(gateway, listener)
    rss_before = vm_kib(gateway.proc.pid, "VmRSS")
    flood_done = asyncio.Event()

    def flood() -> None:  # in a thread: the test's own loop stays free to measure
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
                sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: ")
                chunk = b"a" * (1 << 20)
                for _ in range(64):
                    sock.sendall(chunk)
        except OSError:
            pass  # refused and closed by the gateway: what we want

    async def normal() -> list[float]:
        latencies = []
        while not flood_done.is_set():
            answer = await fetch(gateway.admin_port, "/healthz")
            assert answer.status == 200
            latencies.append(answer.seconds)
            await asyncio.sleep(0.02)
        return latencies

    watcher = asyncio.ensure_future(normal())
    await asyncio.gather(*(asyncio.to_thread(flood) for _ in range(4)))
    flood_done.set()
    latencies = await watcher
    rss_after = vm_kib(gateway.proc.pid, "VmRSS")
    assert latencies and max(latencies) < 0.5, max(latencies)
    assert rss_after - rss_before < 32 * 1024, (rss_before, rss_after)
