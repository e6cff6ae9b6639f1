"""The forward-auth listener itself (`gateway authz`), over raw sockets: HTTP/1.1 framing,
keep-alive and pipelining, the SPEC §7 edge limits, the nginx answer mode, Envoy's
own-path mode with `authz.path_prefix`.
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import KEY_VALUES, Gateway, Key
from tests.e2e.front_proxies import launch_authz

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def authz(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    gateway = launch_authz(
        tmp_path_factory.mktemp("authz-listener"),
        server={
            "trusted_proxies": ["127.0.0.1"],
            "header_timeout": 0.6,
            "keepalive_timeout": 0.8,
            "max_header_bytes": 4096,
            "max_headers": 30,
            "max_body_bytes": 1000,
        },
        auth={"failed_attempts_limit": "10000/minute"},
        authz={"path_prefix": "/authz"},
        routes=[{"prefix": "/public", "public": True}],
    )
    yield gateway
    assert gateway.proc.stop() == 0, gateway.proc.log()
    gateway.assert_no_key_values_logged()


@pytest.fixture(scope="module")
def key(authz: Gateway) -> Key:
    made = authz.create_key("read")
    KEY_VALUES.add(made.value)
    return made


class Response:
    def __init__(self, status: int, headers: dict[str, str], body: bytes) -> None:
        self.status = status
        self.headers = headers
        self.body = body

    def json(self) -> Any:
        return json.loads(self.body)

    def __repr__(self) -> str:
        return f"<{self.status} {self.headers} {self.body[:200]!r}>"


class Conn:
    """A raw client connection that reads whole HTTP/1.1 responses."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        self.buffer = b""

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def _fill(self) -> bool:
        chunk = self.sock.recv(65536)
        self.buffer += chunk
        return bool(chunk)

    def response(self, *, head_only: bool = False) -> Response:
        while b"\r\n\r\n" not in self.buffer:
            assert self._fill(), f"connection closed; got {self.buffer!r}"
        head, _, self.buffer = self.buffer.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        length = 0 if head_only else int(headers.get("content-length", "0"))
        while len(self.buffer) < length:
            assert self._fill(), "connection closed in a body"
        body, self.buffer = self.buffer[:length], self.buffer[length:]
        return Response(status, headers, body)

    def closed(self, timeout: float = 3.0) -> bool:
        """True when the server closes the connection within `timeout` (all read)."""
        self.sock.settimeout(timeout)
        try:
            while self._fill():
                pass
        except TimeoutError:
            return False
        return True

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def conn(authz: Gateway) -> Iterator[Conn]:
    connection = Conn(authz.port)
    yield connection
    connection.close()


def request(
    path: str = "/check",
    *,
    method: str = "GET",
    headers: dict[str, str] | None = None,
    body: bytes = b"",
) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: authz"]
    lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
    if body:
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def original(uri: str, method: str = "GET", **extra: str) -> dict[str, str]:
    return {"X-Original-Method": method, "X-Original-URI": uri, **extra}


def bearer(key: Key) -> dict[str, str]:
    return {"Authorization": f"Bearer {key.value}"}


def test_pipelined_requests_are_answered_in_order_on_one_connection(conn: Conn, key: Key) -> None:
    conn.send(
        request(headers={**original("/a"), **bearer(key)})
        + request(headers=original("/b"))
        + request(headers=original("/public/c"))
        + request(headers={**original("/d", "POST"), **bearer(key)})
    )
    allowed, missing, public, scope = (conn.response() for _ in range(4))
    assert allowed.status == 200 and allowed.body == b"", allowed
    assert allowed.headers["x-gateway-key-id"] == key.id
    assert allowed.headers["x-gateway-key-scope"] == "read"
    assert allowed.headers["ratelimit-policy"] == '"60/minute";q=60;w=60'
    assert missing.status == 401, missing
    assert missing.json()["error"]["code"] == "MISSING_API_KEY"
    assert missing.json()["error"]["requestId"] == missing.headers["x-request-id"]
    assert missing.headers["www-authenticate"] == 'Bearer realm="gateway"'
    assert missing.headers["content-type"] == "application/json"
    assert public.status == 200 and "x-gateway-key-id" not in public.headers, public
    assert scope.status == 403 and scope.json()["error"]["code"] == "INSUFFICIENT_SCOPE"
    # Still open: one more request on the same connection.
    conn.send(request(headers={**original("/e"), **bearer(key)}))
    assert conn.response().status == 200


def test_nginx_mode_answers_every_denial_as_403_with_the_real_one_in_headers(
    conn: Conn, key: Key
) -> None:
    mode = {"X-Gateway-Authz-Mode": "nginx"}
    conn.send(request(headers={**original("/x"), **mode}))
    denied = conn.response()
    assert denied.status == 403 and denied.body == b"", denied
    assert denied.headers["x-gateway-status"] == "401"
    error = json.loads(denied.headers["x-gateway-error"])["error"]
    assert error["code"] == "MISSING_API_KEY"
    assert error["requestId"] == denied.headers["x-request-id"]
    assert denied.headers["www-authenticate"] == 'Bearer realm="gateway"'
    assert "content-type" not in denied.headers
    # Allowed answers are the same as in the other modes.
    conn.send(request(headers={**original("/x"), **mode, **bearer(key)}))
    allowed = conn.response()
    assert allowed.status == 200 and "x-gateway-status" not in allowed.headers, allowed


def test_envoy_style_own_method_and_path_without_the_prefix(conn: Conn, key: Key) -> None:
    """No X-Forwarded-*/X-Original-*: the authz request is the original one, with
    `authz.path_prefix` in front of its path (and a body Envoy may announce is read)."""
    conn.send(request("/authz/public/x?y=1", method="POST"))
    assert conn.response().status == 200  # a public route: the prefix was removed
    conn.send(request("/authz/items", method="POST", headers=bearer(key), body=b"12345"))
    denied = conn.response()
    assert denied.status == 403, denied
    assert denied.json()["error"]["details"] == {"required": "write", "granted": "read"}
    conn.send(request("/authz/items", method="HEAD", headers=bearer(key)))
    head = conn.response(head_only=True)
    assert head.status == 200, head


def test_head_answer_has_no_body(conn: Conn) -> None:
    conn.send(request("/authz/x", method="HEAD"))
    answer = conn.response(head_only=True)
    assert answer.status == 401
    assert int(answer.headers["content-length"]) > 0
    conn.send(request("/authz/public/x"))  # the next answer starts right after the head
    assert conn.response().status == 200


def test_a_head_over_max_header_bytes_is_431_and_closed(conn: Conn) -> None:
    conn.send(request(headers={"X-Big": "b" * 5000}))
    answer = conn.response()
    assert answer.status == 431, answer
    assert answer.json()["error"]["code"] == "HEADERS_TOO_LARGE"
    assert answer.json()["error"]["details"] == {"limit": 4096}
    assert answer.headers["connection"] == "close"
    assert conn.closed()


def test_a_body_over_max_body_bytes_is_413_and_closed(conn: Conn) -> None:
    conn.send(request("/authz/public/x", method="POST", body=b"x" * 2000))
    answer = conn.response()
    assert answer.status == 413, answer
    assert answer.json()["error"]["code"] == "PAYLOAD_TOO_LARGE"
    assert conn.closed()


def test_too_many_header_fields_is_431_and_closed(conn: Conn) -> None:
    conn.send(request(headers={f"X-H{i}": "v" for i in range(31)}))
    answer = conn.response()
    assert answer.status == 431, answer
    assert answer.json()["error"]["details"] == {"limit": 30}
    assert conn.closed()


@pytest.mark.parametrize(
    "raw",
    [
        b"GET /x HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n",
        b"GET /x HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
        b"NOT HTTP AT ALL\r\n\r\n",
        b"GET /x HTTP/1.1\nHost: a\n\n",
    ],
)
def test_malformed_requests_are_400_and_closed(conn: Conn, raw: bytes) -> None:
    conn.send(raw)
    answer = conn.response()
    assert answer.status == 400, answer
    assert answer.json()["error"]["code"] == "INVALID_REQUEST"
    assert conn.closed()


def test_a_slow_head_is_408_and_closed(conn: Conn) -> None:
    conn.send(b"GET /x HTTP/1.1\r\nHost: a\r\n")
    started = time.monotonic()
    answer = conn.response()
    assert answer.status == 408, answer
    assert answer.json()["error"]["code"] == "REQUEST_TIMEOUT"
    assert 0.5 <= time.monotonic() - started < 3.0
    assert conn.closed()


def test_a_silent_connection_is_closed_without_an_answer(conn: Conn) -> None:
    assert conn.closed(timeout=3.0)
    assert conn.buffer == b""


def test_an_idle_keep_alive_connection_is_closed(conn: Conn) -> None:
    conn.send(request("/authz/public/x"))
    assert conn.response().status == 200
    started = time.monotonic()
    assert conn.closed(timeout=3.0)
    assert conn.buffer == b""
    assert time.monotonic() - started >= 0.7


def test_connection_close_and_upgrade_are_answered_then_closed(conn: Conn, authz: Gateway) -> None:
    conn.send(request("/authz/public/x", headers={"Connection": "close"}))
    answer = conn.response()
    assert answer.status == 200 and answer.headers["connection"] == "close"
    assert conn.closed()
    other = Conn(authz.port)
    try:
        other.send(
            request("/authz/public/ws", headers={"Connection": "Upgrade", "Upgrade": "websocket"})
        )
        assert other.response().status == 200
        assert other.closed()
    finally:
        other.close()


@pytest.fixture(scope="module")
def untrusting(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    """A gateway authz that trusts some proxy, but not 127.0.0.1 (where the tests are)."""
    gateway = launch_authz(
        tmp_path_factory.mktemp("authz-untrusting"),
        server={"trusted_proxies": ["10.0.0.0/8"]},
        routes=[{"prefix": "/public", "public": True}],
    )
    yield gateway
    assert gateway.proc.stop() == 0, gateway.proc.log()


def test_forwarded_headers_from_an_untrusted_peer_change_nothing(untrusting: Gateway) -> None:
    """X-Forwarded-Method/-Uri, X-Original-*, X-Forwarded-For from a peer that is not a
    trusted proxy: the check is about the authz request itself, for the peer's address."""
    lies = {
        "X-Forwarded-Method": "GET",
        "X-Forwarded-Uri": "/public/x",
        "X-Original-Method": "GET",
        "X-Original-URI": "/public/x",
        "X-Forwarded-For": "203.0.113.77",
        "X-Request-ID": "spoof-check-1",
    }
    conn = Conn(untrusting.port)
    try:
        conn.send(request("/private", method="DELETE", headers=lies))
        answer = conn.response()
    finally:
        conn.close()
    assert answer.status == 401, answer  # /private needs a key: /public/x was not believed
    assert answer.json()["error"]["code"] == "MISSING_API_KEY"

    def logged() -> dict[str, Any] | None:
        for line in untrusting.proc.log().splitlines():
            if "spoof-check-1" in line:
                return json.loads(line)
        return None

    from tests.e2e.conftest import wait_for

    line = wait_for(logged, 5, "the access line")
    assert (line["method"], line["path"], line["clientIp"]) == ("DELETE", "/private", "127.0.0.1")


def _self_signed(directory: Path) -> tuple[Path, Path]:
    from datetime import UTC, datetime, timedelta

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=1))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


def test_tls_cert_and_key_make_the_authz_listener_https(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    import ssl

    import httpx

    workdir = tmp_path_factory.mktemp("authz-tls")
    cert, key_file = _self_signed(workdir)
    gateway = launch_authz(
        workdir / "gw",
        server={"tls_cert": str(cert), "tls_key": str(key_file)},
        routes=[{"prefix": "/public", "public": True}],
    )
    try:
        context = ssl.create_default_context(cafile=str(cert))
        url = f"https://localhost:{gateway.port}"
        with httpx.Client(verify=context) as client:
            assert client.get(f"{url}/public/x").status_code == 200
            denied = client.get(f"{url}/private")
            assert denied.status_code == 401
            assert denied.json()["error"]["code"] == "MISSING_API_KEY"
        with pytest.raises(httpx.HTTPError):  # plain HTTP is not spoken
            httpx.get(f"http://127.0.0.1:{gateway.port}/public/x", timeout=2)
    finally:
        assert gateway.proc.stop() == 0, gateway.proc.log()


def test_gateway_authz_startup_problems_are_one_line_and_an_exit_code(tmp_path: Path) -> None:
    import socket as sockets
    import subprocess
    import sys

    from tests.e2e.conftest import clean_env

    command = [sys.executable, "-m", "gateway", "authz", "--listen"]
    env = clean_env(GATEWAY_STORAGE__URL=f"sqlite:///{tmp_path / 'gateway.db'}")
    bad = subprocess.run([*command, "nope"], capture_output=True, text=True, env=env, timeout=60)
    assert bad.returncode == 2, bad
    assert "server.authz_listen" in bad.stderr and "Traceback" not in bad.stderr
    with sockets.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        busy = subprocess.run(
            [*command, f"127.0.0.1:{port}"], capture_output=True, text=True, env=env, timeout=60
        )
    assert busy.returncode == 1, busy
    assert f"cannot listen on 127.0.0.1:{port}" in busy.stderr
    assert "Traceback" not in busy.stderr


def test_gateway_authz_admin_listen_serves_metrics_and_the_admin_api(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """`gateway authz --admin-listen` runs the admin listener in the same process: the
    checks show up in its /metrics, and its admin API sees the same store."""
    import signal
    import sys

    import httpx

    from tests.e2e.conftest import (
        Proc,
        clean_env,
        free_port,
        port_open,
        wait_for,
        write_toml,
    )

    workdir = tmp_path_factory.mktemp("authz-admin")
    port, admin_port = free_port(), free_port()
    storage = f"sqlite:///{workdir / 'gateway.db'}"
    write_toml(workdir / "gateway.toml", {"storage": {"url": storage}})
    args = [sys.executable, "-m", "gateway", "--config", str(workdir / "gateway.toml")]
    args += ["authz", "--listen", f"127.0.0.1:{port}"]
    args += ["--admin-listen", f"127.0.0.1:{admin_port}"]
    proc = Proc(args, workdir / "authz.log", clean_env())
    gateway = Gateway(proc, port, admin_port, storage)
    try:
        wait_for(lambda: port_open(port) and port_open(admin_port), 30, "both listeners")
        admin_key = gateway.create_key("admin")
        assert httpx.get(f"http://127.0.0.1:{port}/x").status_code == 401
        admin = {"Authorization": f"Bearer {admin_key.value}"}
        listed = httpx.get(f"http://127.0.0.1:{admin_port}/v1/keys", headers=admin)
        assert listed.status_code == 200, listed.text
        assert [k["id"] for k in listed.json()["data"]] == [admin_key.id]
        metrics = httpx.get(f"http://127.0.0.1:{admin_port}/metrics").text
        assert 'outcome="missing_api_key"' in metrics, metrics[:2000]
        assert httpx.get(f"http://127.0.0.1:{admin_port}/healthz").status_code == 200
    finally:
        code = proc.stop(signal.SIGTERM)
    assert code == 0, proc.log()
    assert "Traceback" not in proc.log()
