"""A recording upstream over raw sockets, for framing tests of the proxy.

It runs in threads of the test process, keeps every byte each connection received, and
parses requests with its own small strict parser (not llhttp, so a framing mistake of the
gateway is not hidden by the same parser on both sides): a request that does not parse is
recorded in `errors` and the connection closed. Each well-framed request is answered by
its path:

- `/head-cl`: `Content-Length: 1234`, no body (a HEAD-style answer to any method);
- `/status/CODE`: that status, `Content-Length: 5` and `hello` unless 1xx/204/304;
- `/chunked?n=N`: N chunks `chunk-<i>` with `Transfer-Encoding: chunked`;
- `/nominates`: an answer whose `Connection` names `X-Hop` (and carries the usual
  hop-by-hop fields and its own X-Request-ID);
- `/close`: a close-delimited body (no length, then the connection closes);
- `/early-hints`: `103 Early Hints` first, then the echo;
- `/bad-framing`: an answer with both Content-Length and Transfer-Encoding;
- `/big?bytes=N`: N bytes with Content-Length, written as fast as the reader takes them
  (`sent` counts what went out);
- `/slow?s=S`: the echo after S seconds;
- `/drop-after`: the echo, then the connection closes although the answer said keep-alive;
- anything else: JSON of what was received (method, target, headers, body length and sha).
"""

from __future__ import annotations

import hashlib
import json
import socket
import threading
import time
from dataclasses import dataclass, field
from urllib.parse import parse_qs, urlsplit


class Malformed(Exception):
    pass


@dataclass
class Request:
    method: str
    target: str
    version: str
    headers: list[tuple[str, str]]
    body: bytes
    chunked: bool

    def header(self, name: str) -> list[str]:
        return [v for n, v in self.headers if n.lower() == name.lower()]


@dataclass
class RawUpstream:
    port: int = 0
    requests: list[Request] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    received: list[bytearray] = field(default_factory=list)  # per connection
    sent: dict[str, int] = field(default_factory=dict)
    connections: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def total_received(self) -> int:
        with self.lock:
            return sum(len(b) for b in self.received)

    def start(self) -> RawUpstream:
        self._sock = socket.socket()
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(128)
        self.port = self._sock.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()
        return self

    def stop(self) -> None:
        self._sock.close()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    # --- one connection --------------------------------------------------------------

    def _serve(self, conn: socket.socket) -> None:
        record = bytearray()
        with self.lock:
            self.received.append(record)
            self.connections += 1
        reader = _Reader(conn, record)
        try:
            while True:
                try:
                    request = _read_request(reader)
                except EOFError:
                    return
                except Malformed as exc:
                    with self.lock:
                        self.errors.append(str(exc))
                    return
                with self.lock:
                    self.requests.append(request)
                if not self._answer(conn, request):
                    return
        except OSError:
            return
        finally:
            conn.close()

    def _answer(self, conn: socket.socket, request: Request) -> bool:
        """Write the answer; False: close the connection after it."""
        parts = urlsplit(request.target)
        query = parse_qs(parts.query)
        path = parts.path
        if path == "/head-cl":
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 1234\r\nX-Kind: head\r\n\r\n")
            return True
        if path.startswith("/status/"):
            code = int(path.rsplit("/", 1)[1])
            if code < 200 or code in (204, 304):
                conn.sendall(b"HTTP/1.1 %d X\r\nContent-Length: 5\r\n\r\n" % code)
            else:
                conn.sendall(b"HTTP/1.1 %d X\r\nContent-Length: 5\r\n\r\nhello" % code)
            return True
        if path == "/chunked":
            n = int(query.get("n", ["3"])[0])
            out = [b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"]
            for i in range(n):
                piece = b"chunk-%d" % i
                out.append(b"%x\r\n%s\r\n" % (len(piece), piece))
            out.append(b"0\r\nX-Trailer: t\r\n\r\n")
            conn.sendall(b"".join(out))
            return True
        if path == "/nominates":
            conn.sendall(
                b"HTTP/1.1 200 OK\r\nConnection: keep-alive, X-Hop\r\nX-Hop: gone\r\n"
                b"Keep-Alive: timeout=5\r\nX-Request-ID: upstream-id\r\nX-Stay: yes\r\n"
                b"Content-Length: 2\r\n\r\nok"
            )
            return True
        if path == "/close":
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nuntil-close body")
            return False
        if path == "/bad-framing":
            conn.sendall(
                b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n"
                b"0\r\n\r\n"
            )
            return False
        if path == "/big":
            total = int(query.get("bytes", ["0"])[0])
            ident = query.get("id", [""])[0]
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % total)
            piece = b"b" * 65536
            left = total
            while left > 0:
                n = min(left, len(piece))
                conn.sendall(piece[:n])
                left -= n
                with self.lock:
                    self.sent[ident] = total - left
            return True
        if path == "/slow":
            time.sleep(float(query.get("s", ["0.3"])[0]))
        body = json.dumps(
            {
                "method": request.method,
                "target": request.target,
                "version": request.version,
                "headers": request.headers,
                "bodyLength": len(request.body),
                "bodySha256": hashlib.sha256(request.body).hexdigest(),
                "chunked": request.chunked,
            }
        ).encode()
        head = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n"
        if path == "/early-hints":
            conn.sendall(b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\n")
        conn.sendall(head % len(body) + body)
        return path != "/drop-after"


class _Reader:
    def __init__(self, conn: socket.socket, record: bytearray) -> None:
        self.conn = conn
        self.record = record
        self.buffer = b""

    def _fill(self) -> None:
        data = self.conn.recv(65536)
        if not data:
            raise EOFError
        self.record += data
        self.buffer += data

    def line(self, limit: int = 65536) -> bytes:
        while b"\r\n" not in self.buffer:
            if len(self.buffer) > limit:
                raise Malformed("line too long")
            self._fill()
        line, _, self.buffer = self.buffer.partition(b"\r\n")
        if b"\n" in line or b"\r" in line or b"\x00" in line:
            raise Malformed(f"bad line {line[:50]!r}")
        return line

    def exactly(self, n: int) -> bytes:
        while len(self.buffer) < n:
            self._fill()
        data, self.buffer = self.buffer[:n], self.buffer[n:]
        return data


_TOKEN = set(b"!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")


def _read_request(reader: _Reader) -> Request:
    first = reader.line()
    try:
        method, target, version = first.decode("ascii").split(" ")
    except (UnicodeDecodeError, ValueError):
        raise Malformed(f"bad request line {first[:80]!r}") from None
    if version != "HTTP/1.1" or not target.startswith("/"):
        raise Malformed(f"bad request line {first[:80]!r}")
    headers: list[tuple[str, str]] = []
    while line := reader.line():
        name, sep, value = line.partition(b":")
        if not sep or not name or set(name) - _TOKEN:
            raise Malformed(f"bad header {line[:80]!r}")
        headers.append((name.decode("latin-1"), value.strip().decode("latin-1")))
    names = [n.lower() for n, _ in headers]
    if names.count("host") != 1:
        raise Malformed("Host must come exactly once")
    lengths = [v for n, v in headers if n.lower() == "content-length"]
    codings = [v for n, v in headers if n.lower() == "transfer-encoding"]
    if lengths and codings:
        raise Malformed("Content-Length with Transfer-Encoding")
    if len(lengths) > 1 or (lengths and not lengths[0].isdigit()):
        raise Malformed(f"bad Content-Length {lengths}")
    body = b""
    chunked = False
    if codings:
        if codings != ["chunked"]:
            raise Malformed(f"bad Transfer-Encoding {codings}")
        chunked = True
        parts = []
        while True:
            size_line = reader.line()
            try:
                size = int(size_line, 16)
            except ValueError:
                raise Malformed(f"bad chunk size {size_line[:40]!r}") from None
            if size == 0:
                if reader.line() != b"":
                    raise Malformed("trailers are not expected")
                break
            parts.append(reader.exactly(size))
            if reader.exactly(2) != b"\r\n":
                raise Malformed("chunk without CRLF")
        body = b"".join(parts)
    elif lengths:
        body = reader.exactly(int(lengths[0]))
    return Request(method, target, version, headers, body, chunked)


def wait_until(condition, timeout: float = 5.0) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.01)
    return bool(condition())
