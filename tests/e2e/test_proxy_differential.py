"""Differential test: the same requests through nginx `proxy_pass` (Debian's nginx, started
here on a free port) and through `gateway serve` reach the same recording upstream
identically — apart from the headers SPEC §7 adds and removes — and the clients get the
same status, body and framing (issue #11).

nginx is configured to stream like the gateway (`proxy_request_buffering off`,
`proxy_buffering off`, HTTP/1.1 and keep-alive upstream), so both forward a chunked
request chunked and answer as the bytes come.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import need
from tests.e2e.conftest import Gateway, free_port, port_open, wait_for
from tests.e2e.raw_upstream import RawUpstream, Request
from tests.e2e.test_proxy_framing import Conn, Response, request

pytestmark = pytest.mark.e2e

NGINX_CONF = """\
worker_processes 1;
daemon off;
{user}
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    client_body_temp_path {dir}/body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    client_max_body_size 10m;
    upstream origin {{ server 127.0.0.1:{origin}; keepalive 16; }}
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://origin;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_request_buffering off;
            proxy_buffering off;
        }}
    }}
}}
"""

# Fields the two proxies add, remove or set differently by design (SPEC §7 for the
# gateway: its additions, the key headers, hop-by-hop headers; nginx's own `Connection`).
ADDED_OR_REMOVED = {
    "host",
    "connection",
    "keep-alive",
    "te",
    "trailer",
    "upgrade",
    "proxy-authorization",
    "proxy-connection",
    "x-request-id",
    "x-forwarded-for",
    "x-forwarded-proto",
    "x-forwarded-host",
    "x-gateway-key-id",
    "x-gateway-key-scope",
    "content-length",  # framing: compared on its own
    "transfer-encoding",
}


@pytest.fixture(scope="module")
def raw() -> Iterator[RawUpstream]:
    upstream = RawUpstream().start()
    yield upstream
    upstream.stop()


@pytest.fixture(scope="module")
def nginx(raw: RawUpstream, tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    default = "/usr/sbin/nginx"
    binary = need("nginx", shutil.which("nginx") or (default if Path(default).exists() else None))
    workdir = tmp_path_factory.mktemp("nginx")
    port = free_port()
    user = "user root;" if os.geteuid() == 0 else ""  # workers must reach the temp dir
    conf = workdir / "nginx.conf"
    conf.write_text(NGINX_CONF.format(dir=workdir, origin=raw.port, port=port, user=user))
    proc = subprocess.Popen(
        [binary, "-p", str(workdir), "-c", str(conf)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for(lambda: port_open(port) or proc.poll() is not None, 20, "nginx")
        assert proc.poll() is None, (workdir / "error.log").read_text()
        yield port
    finally:
        proc.terminate()
        proc.wait(10)


@pytest.fixture(scope="module")
def gw(raw: RawUpstream, start_gateway: Callable[..., Gateway]) -> Gateway:
    return start_gateway(
        raw.url,
        upstream={"read_timeout": 5.0},
        routes=[{"prefix": "/", "public": True}],  # the data path is the subject here
    )


@dataclass
class Seen:
    """What one proxy did with one exchange: the client's answers and the upstream's
    requests, normalised to what must be equal."""

    answers: list[tuple[int, str, bytes]]
    upstream: list[dict[str, Any]]


def _upstream_view(sent: Request) -> dict[str, Any]:
    return {
        "method": sent.method,
        "target": sent.target,
        "version": sent.version,
        "headers": [(n.lower(), v) for n, v in sent.headers if n.lower() not in ADDED_OR_REMOVED],
        # The body, not its framing: either proxy may send what it has whole with a
        # Content-Length (nginx does when the body came with the head) or chunked.
        "body": sent.body,
    }


def _answer_view(response: Response) -> tuple[int, str, Any]:
    body: Any = response.body
    if body.startswith(b'{"method"'):  # the upstream's echo: it lists the headers it got
        body = json.loads(body)
        del body["headers"], body["chunked"]
    return response.status, response.framing, body


def _through(port: int, raw: RawUpstream, data: bytes, heads: list[bool]) -> Seen:
    before = len(raw.requests)
    conn = Conn(port, timeout=10)
    conn.send(data)
    answers = []
    for head in heads:
        response = conn.response(head=head)
        while 100 <= response.status < 200:  # interim answers first
            answers.append((response.status, "none", b""))
            response = conn.response(head=head)
        answers.append(_answer_view(response))
    conn.close()
    return Seen(answers, [_upstream_view(r) for r in raw.requests[before:]])


CASES: dict[str, tuple[bytes, list[bool]]] = {
    "GET with a query": (request("GET", "/echo?x=1&y=%20two&z"), [False]),
    "GET, odd path": (request("GET", "//a/%2e%2e/b;p?q=%ff"), [False]),
    "custom headers in order": (
        request("GET", "/h", "X-B: 2", "X-A: 1", "X-B: 3", "Accept: */*", "Cookie: a=b"),
        [False],
    ),
    "POST with Content-Length": (
        request("POST", "/p", "Content-Type: text/plain", "Content-Length: 5", body=b"hello"),
        [False],
    ),
    "POST chunked": (
        request(
            "POST",
            "/c",
            "Transfer-Encoding: chunked",
            body=b"5\r\nhello\r\n1;ext=x\r\n \r\n5\r\nworld\r\n0\r\n\r\n",
        ),
        [False],
    ),
    "PUT 1 MiB": (
        request("PUT", "/big-up", "Content-Length: 1048576", body=b"u" * 1048576),
        [False],
    ),
    "PATCH empty body": (request("PATCH", "/e", "Content-Length: 0"), [False]),
    "DELETE": (request("DELETE", "/d"), [False]),
    "OPTIONS": (request("OPTIONS", "/o"), [False]),
    "HEAD with a length": (request("HEAD", "/head-cl"), [True]),
    "204": (request("GET", "/status/204"), [False]),
    "304": (request("GET", "/status/304"), [False]),
    "404": (request("GET", "/status/404"), [False]),
    "503 from upstream": (request("GET", "/status/503"), [False]),
    "chunked answer": (request("GET", "/chunked?n=5"), [False]),
    "close-delimited answer": (request("GET", "/close"), [False]),
    "103 then 200": (request("GET", "/early-hints"), [False]),
    "large streamed answer": (request("GET", "/big?bytes=5000000&id=diff"), [False]),
    "slow upstream": (request("GET", "/slow?s=0.4"), [False]),
    "pipelined": (
        request("GET", "/p1")
        + request("POST", "/p2", "Content-Length: 3", body=b"abc")
        + request("HEAD", "/head-cl")
        + request("GET", "/p4"),
        [False, False, True, False],
    ),
    "HTTP/1.0": (b"GET /old HTTP/1.0\r\nHost: a\r\n\r\n", [False]),
}


@pytest.mark.parametrize("name", list(CASES))
def test_gateway_and_nginx_forward_and_answer_alike(
    name: str, raw: RawUpstream, nginx: int, gw: Gateway
) -> None:
    data, heads = CASES[name]
    by_nginx = _through(nginx, raw, data, heads)
    by_gateway = _through(gw.port, raw, data, heads)
    assert by_gateway.answers == by_nginx.answers, name
    assert by_gateway.upstream == by_nginx.upstream, name
    assert len(by_gateway.upstream) == len(heads)
    assert not raw.errors


def test_the_gateway_differs_only_by_the_spec_headers(raw: RawUpstream, gw: Gateway) -> None:
    """What the comparison leaves out is exactly SPEC §7's set, checked here once."""
    before = len(raw.requests)
    conn = Conn(gw.port)
    conn.send(request("GET", "/spec", "Keep-Alive: 1", "TE: trailers", "X-Kept: yes"))
    assert conn.response().status == 200
    sent = raw.requests[before]
    names = [n.lower() for n, _ in sent.headers]
    assert "keep-alive" not in names and "te" not in names and "x-kept" in names
    for added in ("host", "x-request-id", "x-forwarded-for", "x-forwarded-proto"):
        assert names.count(added) == 1, added


def test_real_clients_through_the_gateway(raw: RawUpstream, gw: Gateway) -> None:
    """curl, httpx, requests and aiohttp, each with a body, on keep-alive connections."""
    import asyncio

    import aiohttp
    import httpx
    import requests

    url = f"http://127.0.0.1:{gw.port}/client"
    curl = shutil.which("curl")
    if curl:
        out = subprocess.run(
            [curl, "-sS", "-X", "POST", "--data-binary", "curl-body", url, url + "2"],
            capture_output=True,
            timeout=30,
            check=True,
        ).stdout
        assert out.count(b'"bodyLength": 9') == 2
        chunked = subprocess.run(
            [curl, "-sS", "-H", "Transfer-Encoding: chunked", "--data-binary", "abc", url],
            capture_output=True,
            timeout=30,
            check=True,
        ).stdout
        assert b'"chunked": true' in chunked
    with httpx.Client() as client:
        for _ in range(3):
            assert client.post(url, content=b"httpx").json()["bodyLength"] == 5
    with requests.Session() as session:
        for _ in range(3):
            assert session.put(url, data=b"requests").json()["bodyLength"] == 8

    async def with_aiohttp() -> list[int]:
        async with aiohttp.ClientSession() as session:
            results = []
            for _ in range(3):
                async with session.post(url, data=b"aio") as r:
                    results.append((await r.json())["bodyLength"])
            return results

    assert asyncio.run(with_aiohttp()) == [3, 3, 3]


def test_wrk_through_the_gateway(gw: Gateway) -> None:
    wrk = shutil.which("wrk")
    binary = need("wrk", wrk)
    out = subprocess.run(
        [binary, "-t1", "-c16", "-d2s", f"http://127.0.0.1:{gw.port}/wrk"],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    ).stdout
    assert "Non-2xx" not in out and "Socket errors" not in out, out
    assert int(out.split(" requests in")[0].split()[-1]) > 100, out
