"""The client side of the proxy: one `ClientConnection` per TCP (or TLS) connection.

Modelled on uvicorn's `httptools_impl.py`: an `asyncio.Protocol` fed to llhttp. Per
request head the decision core is called once; an allowed request's head is written anew
for the upstream from what the parser understood (method, target, the kept fields, the
decision's additions, framing derived here), never copied through; bodies stream both
ways with flow control (reading on one side pauses while the other side's write buffer
is full). Pipelined requests are answered in order, one at a time.

Edge limits (SPEC §7) are checked while the head is read: more than `max_header_bytes`
or `max_headers` → 431 and close; a head not complete within `header_timeout` → 408 (or a
plain close if nothing came); an idle keep-alive connection closes after
`keepalive_timeout`. Malformed or ambiguous framing → 400 and close, nothing forwarded.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from typing import TYPE_CHECKING
from urllib.parse import unquote

import httptools

from gateway import metrics
from gateway.errors import GatewayError, invalid_request, payload_too_large
from gateway.faces.proxy.http import (
    CONTINUE,
    CRLF,
    GATEWAY_PREFIX,
    LAST_CHUNK,
    NO_BODY_STATUSES,
    RESPONSE_DROPPED,
    STATUS_LINES,
    chunk,
    connection_tokens,
    status_line,
)
from gateway.faces.proxy.upstream import UpstreamConnection, UpstreamUnavailable
from gateway.pipeline.core import Decision, RequestHead

if TYPE_CHECKING:
    from gateway.faces.proxy.server import Proxy

log = logging.getLogger("gateway.proxy")

# Timer kinds of a client connection.
_NONE, _IDLE, _HEAD, _BODY = 0, 1, 2, 3
# Request fields the parser callbacks look at (besides collecting them).
_WATCHED = frozenset({b"content-length", b"transfer-encoding", b"expect", b"connection", b"host"})
_HEAD_METHOD = b"HEAD"
# `Connection` values that nominate nothing beyond the hop-by-hop fields always dropped.
_PLAIN_CONNECTION = frozenset({b"keep-alive", b"close"})
# After a last answer the client may still be sending (a refused body): its bytes are read
# and dropped for this long, so that the answer is not lost to a TCP reset (nginx's
# lingering close).
_SECONDS_TO_LINGER = 3.0


class _Reject(Exception):
    """Raised inside a parser callback: stop parsing, answer `error`, close."""

    def __init__(self, error: GatewayError) -> None:
        super().__init__(error.code)
        self.error = error


def _too_large(limit: int) -> _Reject:
    return _Reject(
        GatewayError(
            "HEADERS_TOO_LARGE",
            "The request head is too large.",
            {"limit": limit},
            status=431,
        )
    )


def _bad_request(reason: str) -> GatewayError:
    return invalid_request("request", reason)


class Exchange:
    """One request and its answer on a client connection."""

    __slots__ = (
        "body_chunked",
        "body_sent",
        "buffer",
        "client",
        "connection_values",
        "content_length",
        "decision",
        "expect_continue",
        "fail_error",
        "finished",
        "head_done",
        "headers",
        "hosts",
        "http11",
        "keep_alive",
        "method",
        "names",
        "path",
        "pending",
        "query",
        "raw_path",
        "received",
        "request_done",
        "response_chunked",
        "response_started",
        "retried",
        "sent_at",
        "status",
        "target_error",
        "upstream",
    )

    def __init__(self, client: ClientConnection) -> None:
        self.client = client
        self.headers: list[tuple[bytes, bytes]] = []  # lower-case names, raw values
        self.names: list[bytes] = []  # the names as sent, for forwarding
        self.connection_values: list[bytes] | None = None
        self.content_length: int | None = None
        self.body_chunked = False
        self.expect_continue = False
        self.hosts = 0
        self.method = b""
        self.path = ""
        self.raw_path = b""
        self.query = b""
        self.target_error: GatewayError | None = None
        self.http11 = True
        self.keep_alive = True
        self.head_done = False
        self.buffer: list[bytes] | None = None
        self.received = 0
        self.request_done = False
        self.fail_error: GatewayError | None = None
        self.decision: Decision | None = None
        self.upstream: UpstreamConnection | None = None
        self.body_sent = False
        self.retried = False
        self.response_started = False
        self.pending: bytes | None = None
        self.response_chunked = False
        self.status = 0
        self.finished = False
        self.sent_at = 0.0

    # --- the request body, from the client parser --------------------------------------

    def request_body(self, data: bytes) -> None:
        self.received += len(data)
        client = self.client
        if self.received > client.proxy.max_body:
            raise _Reject(payload_too_large(client.proxy.max_body))
        upstream = self.upstream
        if upstream is not None:
            upstream.write(chunk(data) if self.body_chunked else data)
            self.body_sent = True
        elif self.buffer is None:
            self.buffer = [data]
        else:
            self.buffer.append(data)

    def request_complete(self) -> None:
        self.request_done = True
        upstream = self.upstream
        if upstream is not None:
            if self.body_chunked:
                upstream.write(LAST_CHUNK)
            upstream.request_sent()

    # --- the answer, from the upstream connection --------------------------------------

    def response_head(
        self, status: int, reason: bytes, headers: list[tuple[bytes, bytes, bytes]]
    ) -> None:
        client = self.client
        self.status = status
        metrics.TALLY.upstream(time.perf_counter() - self.sent_at)
        parts = [status_line(status, reason)]
        dropped = RESPONSE_DROPPED
        nominated: frozenset[bytes] | None = None
        length: bytes | None = None
        for lname, name, value in headers:
            if lname in dropped:
                if lname == b"content-length":
                    length = value
                elif lname == b"connection" and value.lower() not in _PLAIN_CONNECTION:
                    nominated = connection_tokens(v for n, _, v in headers if n == b"connection")
                continue
            parts += (name, b": ", value, CRLF)
        if nominated:
            parts = [parts[0]]
            for lname, name, value in headers:
                if lname not in dropped and lname not in nominated:
                    parts += (name, b": ", value, CRLF)
        # Framing, derived anew for the client.
        if self.method == _HEAD_METHOD or status in NO_BODY_STATUSES:
            if length is not None and status != 204:
                parts += (b"content-length: ", length, CRLF)
        elif length is not None:
            parts += (b"content-length: ", length, CRLF)
        elif self.http11:
            parts.append(b"transfer-encoding: chunked\r\n")
            self.response_chunked = True
        else:
            self.keep_alive = False  # an HTTP/1.0 client: the body ends with the connection
        decision = self.decision
        assert decision is not None  # an exchange reaches the upstream only once decided
        for name, value in decision.client_headers:
            parts += (name, b": ", value, CRLF)
        if not self.keep_alive or client.shutting_down:
            self.keep_alive = False
            parts.append(b"connection: close\r\n\r\n")
        elif not self.http11:
            parts.append(b"connection: keep-alive\r\n\r\n")
        else:
            parts.append(CRLF)
        # Written with the first piece of body (or the end): one write, not two.
        self.pending = b"".join(parts)

    def interim(
        self, status: int, reason: bytes, headers: list[tuple[bytes, bytes, bytes]]
    ) -> None:
        """An informational answer (103 Early Hints...) for an HTTP/1.1 client."""
        if not self.http11:
            return
        parts = [status_line(status, reason)]
        for lname, name, value in headers:
            if lname not in RESPONSE_DROPPED:
                parts += (name, b": ", value, CRLF)
        parts.append(CRLF)
        self.client.write(b"".join(parts))

    def _send(self, data: bytes) -> None:
        head = self.pending
        if head is not None:
            self.pending = None
            self.response_started = True
            data = head + data
        self.client.write(data)

    def flush(self) -> None:
        """The upstream has no more for now: the head goes out without waiting for body."""
        if self.pending is not None:
            self._send(b"")

    def response_body(self, data: bytes) -> None:
        if self.method == _HEAD_METHOD:
            return
        self._send(chunk(data) if self.response_chunked else data)

    def response_complete(self, reusable: bool) -> None:
        upstream = self.upstream
        if self.response_chunked:
            self._send(LAST_CHUNK)
        elif self.pending is not None:
            self._send(b"")
        if upstream is not None:
            self.upstream = None
            if reusable and self.request_done:
                upstream.release()
            else:
                # Not reusable, or the answer came before the end of the request body,
                # which will not be read (the client connection closes after this).
                upstream.abort()
        self.client.exchange_done(self, self.status)

    def upstream_failed(self, error: GatewayError, retryable: bool) -> None:
        self.upstream = None
        client = self.client
        if retryable and not self.body_sent and not self.retried and not client.closed:
            self.retried = True
            client.retry(self)
            return
        if self.response_started:
            client.exchange_broken(self)
        else:
            client.answer_error(self, error)

    def upstream_write_paused(self, paused: bool) -> None:
        self.client.upstream_paused = paused
        self.client.update_reading()


class ClientConnection(asyncio.Protocol):
    """One client connection: parse, decide, forward, answer — in order."""

    __slots__ = (
        "closed",
        "current",
        "deadline",
        "eof",
        "head_bytes",
        "head_raw",
        "in_head",
        "lingering",
        "loop",
        "nheaders",
        "parser",
        "peer",
        "proxy",
        "queue",
        "reading",
        "rejected",
        "shutting_down",
        "timer",
        "timer_kind",
        "trailer_bytes",
        "transport",
        "upstream_paused",
        "url",
        "write_paused",
    )

    def __init__(self, proxy: Proxy) -> None:
        self.proxy = proxy
        self.loop = proxy.loop
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpRequestParser(self)
        self.queue: deque[Exchange] = deque()
        self.current: Exchange | None = None
        self.peer: tuple[str, int] | None = None
        self.url = b""
        self.in_head = False  # some bytes of a head came, its end has not
        self.head_bytes = 0
        self.head_raw = 0
        self.nheaders = 0
        self.trailer_bytes = 0
        self.reading = True
        self.write_paused = False
        self.upstream_paused = False
        self.closed = False
        self.lingering = False
        self.shutting_down = False
        self.eof = False
        self.rejected: GatewayError | None = None
        self.timer: asyncio.TimerHandle | None = None
        self.timer_kind = _NONE
        self.deadline = 0.0

    # --- asyncio.Protocol --------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        peer = transport.get_extra_info("peername")
        if isinstance(peer, tuple) and len(peer) >= 2:
            self.peer = (str(peer[0]), int(peer[1]))
        self.proxy.connections.add(self)
        # Nothing received yet: a plain close when the head timeout passes.
        self._set_timer(_IDLE, self.proxy.header_timeout)

    def data_received(self, data: bytes) -> None:
        if self.lingering:
            return  # dropping what a client still sends after our last answer
        if self.rejected is not None:
            return
        if not self.in_head and self.current is None:
            self.in_head = True
            if self.timer_kind != _HEAD:
                self._set_timer(_HEAD, self.proxy.header_timeout)
        if self.in_head:
            self.head_raw += len(data)
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade as exc:
            self._upgraded(data, exc.args[0] if exc.args else len(data))
        except httptools.HttpParserError as exc:
            cause = exc.__context__
            if isinstance(cause, _Reject):
                self.reject(cause.error)
            else:
                self.reject(_bad_request(_parser_reason(exc)))
            return
        if self.in_head and self.head_raw > self.proxy.max_header_bytes:
            self.reject(_too_large(self.proxy.max_header_bytes).error)
            return
        self.update_reading()

    def _upgraded(self, data: bytes, offset: int) -> None:
        # `Connection: upgrade` without a body (checked in on_headers_complete), or
        # CONNECT: forwarded (or refused) as a plain request; the bytes after it are the
        # next request, for the same parser.
        del data, offset  # what follows an upgrade request is not read (the connection closes)
        self.lingering_after_upgrade()

    def lingering_after_upgrade(self) -> None:
        # Read nothing more: the upgrade request is answered, then the connection closes.
        self.rejected = _bad_request("data after an upgrade request")
        self.update_reading()

    def eof_received(self) -> bool | None:
        if self.lingering:
            self._close()
            return None
        self.eof = True
        current = self.current
        if current is not None and current.head_done and not current.request_done:
            self.reject(_bad_request("the request body ended early"))
        if self.queue:
            return True  # half-closed by the client: answer what it asked, then close
        self._close()
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.proxy.connections.discard(self)
        self._cancel_timer()
        for exchange in self.queue:
            upstream = exchange.upstream
            if upstream is not None:
                exchange.upstream = None
                upstream.abort()  # a client that leaves frees its upstream connection
            if exchange.decision is not None and not exchange.finished:
                exchange.finished = True
                self.proxy.core.finish(exchange.decision, exchange.status or 499)
        self.queue.clear()
        self.parser = None  # type: ignore[assignment]

    def pause_writing(self) -> None:
        self.write_paused = True
        if self.queue and (upstream := self.queue[0].upstream) is not None:
            upstream.pause_reading()

    def resume_writing(self) -> None:
        self.write_paused = False
        if self.queue and (upstream := self.queue[0].upstream) is not None:
            upstream.resume_reading()

    # --- httptools callbacks -----------------------------------------------------------

    def on_message_begin(self) -> None:
        self.current = Exchange(self)
        self.url = b""
        self.head_bytes = 0
        self.nheaders = 0
        self.trailer_bytes = 0
        if not self.in_head:
            self.in_head = True
            self.head_raw = 0
            if self.timer_kind != _HEAD:
                self._set_timer(_HEAD, self.proxy.header_timeout)

    def on_url(self, url: bytes) -> None:
        self.url += url
        self.head_bytes += len(url)
        if self.head_bytes > self.proxy.max_header_bytes:
            raise _too_large(self.proxy.max_header_bytes)

    def on_header(self, name: bytes, value: bytes) -> None:
        proxy = self.proxy
        size = len(name) + len(value) + 4
        exchange = self.current
        assert exchange is not None
        if exchange.head_done:
            # A trailer field of a chunked body: bounded like a head, never forwarded.
            self.trailer_bytes += size
            if self.trailer_bytes > proxy.max_header_bytes:
                raise _too_large(proxy.max_header_bytes)
            return
        self.head_bytes += size
        self.nheaders += 1
        if self.head_bytes > proxy.max_header_bytes or self.nheaders > proxy.max_headers:
            raise _too_large(proxy.max_header_bytes)
        lname = name.lower()
        if value and value[-1] in (32, 9):
            value = value.rstrip(b" \t")
        exchange.headers.append((lname, value))
        exchange.names.append(name)
        if lname in _WATCHED:
            if lname == b"content-length":
                exchange.content_length = int(value)  # llhttp checked: digits, only one
            elif lname == b"transfer-encoding":
                exchange.body_chunked = True  # llhttp checked: chunked, last, only one
            elif lname == b"expect":
                exchange.expect_continue = value.lower() == b"100-continue"
            elif lname == b"host":
                exchange.hosts += 1
            elif exchange.connection_values is None:
                exchange.connection_values = [value]
            else:
                exchange.connection_values.append(value)

    def on_headers_complete(self) -> None:
        exchange = self.current
        assert exchange is not None
        parser = self.parser
        version = parser.get_http_version()
        if version != "1.1":
            if version != "1.0":
                raise _Reject(_bad_request(f"HTTP/{version} is not supported"))
            exchange.http11 = False
            if exchange.body_chunked:
                # RFC 9112 §6.1: chunked framing from an HTTP/1.0 client cannot be trusted.
                raise _Reject(_bad_request("Transfer-Encoding in an HTTP/1.0 request"))
        if exchange.hosts != 1 and (exchange.http11 or exchange.hosts):
            raise _Reject(invalid_request("host", "exactly one Host header is required"))
        exchange.method = parser.get_method()
        exchange.keep_alive = parser.should_keep_alive()
        if parser.should_upgrade():
            # Upgrades are not proxied: answered as a plain request (Upgrade removed), then
            # the connection closes, whatever follows it. With a body, refused.
            if exchange.body_chunked or exchange.content_length:
                raise _Reject(_bad_request("an upgrade request with a body"))
            exchange.keep_alive = False
        exchange.head_done = True
        self.in_head = False
        self.head_raw = 0
        self._parse_target(exchange, self.url)
        if not exchange.body_chunked and not exchange.content_length:
            exchange.request_done = True  # nothing more to read for this request
        queue = self.queue
        queue.append(exchange)
        if len(queue) == 1:
            self._clear_timer()
            self._start(exchange)
            if not exchange.request_done:
                self._set_timer(_BODY, self.proxy.header_timeout)

    def on_body(self, body: bytes) -> None:
        exchange = self.current
        if exchange is not None:
            if self.timer_kind == _BODY:
                self.deadline = self.loop.time() + self.proxy.header_timeout
            exchange.request_body(body)

    def on_message_complete(self) -> None:
        exchange = self.current
        self.current = None
        if self.timer_kind == _BODY:
            self._clear_timer()
        if exchange is not None and not exchange.request_done:
            exchange.request_complete()

    # --- the request target ------------------------------------------------------------

    @staticmethod
    def _parse_target(exchange: Exchange, url: bytes) -> None:
        if url[:1] == b"/" and b"#" not in url:
            raw_path, _, query = url.partition(b"?")
        else:
            try:
                parsed = httptools.parse_url(url)
            except httptools.HttpParserInvalidURLError:
                parsed = None
            if parsed is None or not (parsed.path or b"").startswith(b"/"):
                # The asterisk form (OPTIONS *), CONNECT's authority form: nothing to
                # forward to upstream.url + path.
                exchange.target_error = invalid_request(
                    "path", "must be an absolute path starting with '/'"
                )
                exchange.keep_alive = False
                exchange.raw_path, exchange.path = b"/", "/"
                return
            raw_path, query = parsed.path, parsed.query or b""
        exchange.raw_path = raw_path
        exchange.query = query
        path = raw_path.decode("latin-1")
        exchange.path = unquote(path) if "%" in path else path

    # --- running one exchange ----------------------------------------------------------

    def _start(self, exchange: Exchange) -> None:
        """Decide now when that needs no I/O (the hot path: a cached key, limits in this
        process) and act on it at the loop's next turn, as a task would, with a callback
        instead (a task per request measured ~4 µs); else run the whole of it in a task."""
        try:
            decision = self.proxy.core.decide_now(self._request_head(exchange))
        except Exception:  # not expected (the core answers its failures): as before
            log.exception("proxy error")
            decision = None
        if decision is None:
            self.loop.create_task(self._run(exchange))
        else:
            self.loop.call_soon(self._proceed, exchange, decision)

    def _proceed(self, exchange: Exchange, decision: Decision) -> None:
        try:
            if self._decided(exchange, decision):
                upstream = self.proxy.pool.acquire_idle()
                if upstream is None:
                    self.loop.create_task(self._forward_or_fail(exchange))
                else:
                    self._attach(exchange, upstream)
        except Exception:
            self._failed(exchange)

    async def _run(self, exchange: Exchange) -> None:
        try:
            decision = await self.proxy.core.decide(self._request_head(exchange))
            if self._decided(exchange, decision):
                await self._forward(exchange)
        except Exception:
            self._failed(exchange)

    async def _forward_or_fail(self, exchange: Exchange) -> None:
        try:
            await self._forward(exchange)
        except Exception:
            self._failed(exchange)

    def _request_head(self, exchange: Exchange) -> RequestHead:
        return RequestHead(
            exchange.method.decode("ascii"),
            exchange.path,
            exchange.headers,
            self.peer,
            exchange.raw_path,
            self.proxy.scheme,
        )

    def _decided(self, exchange: Exchange, decision: Decision) -> bool:
        """Act on the decision: True when the request is to be forwarded."""
        proxy = self.proxy
        exchange.decision = decision
        if self.closed:
            exchange.finished = True
            proxy.core.finish(decision, 499)
            return False
        if not decision.allowed:
            self.answer_error(exchange, None)
            return False
        error = exchange.fail_error or exchange.target_error
        if error is None and (exchange.content_length or 0) > proxy.max_body:
            error = payload_too_large(proxy.max_body)
        if error is not None:
            self.answer_error(exchange, error)
            return False
        return True

    def _failed(self, exchange: Exchange) -> None:
        log.exception("proxy error")
        if not self.closed and self.queue and self.queue[0] is exchange:
            if exchange.response_started:
                self.exchange_broken(exchange)
            else:
                self.answer_error(exchange, GatewayError("INTERNAL_ERROR"))

    async def _forward(self, exchange: Exchange, *, fresh: bool = False) -> None:
        try:
            upstream = await self.proxy.pool.acquire(fresh=fresh)
        except UpstreamUnavailable as exc:
            if not self.closed:
                self.answer_error(exchange, exc.error)
            return
        if self.closed or exchange.fail_error is not None:
            upstream.release()
            if exchange.fail_error is not None and not self.closed:
                self.answer_error(exchange, exchange.fail_error)
            return
        self._attach(exchange, upstream)

    def retry(self, exchange: Exchange) -> None:
        """The pooled connection was closed by the upstream before answering: once more
        on a fresh connection (nothing of the body was sent)."""
        self.loop.create_task(self._forward(exchange, fresh=True))

    def _attach(self, exchange: Exchange, upstream: UpstreamConnection) -> None:
        """Write the rewritten request head (and any body already here) upstream."""
        proxy = self.proxy
        exchange.upstream = upstream
        parts = [exchange.method, b" ", proxy.target_prefix, exchange.raw_path]
        if exchange.query:
            parts += (b"?", exchange.query)
        parts += (b" HTTP/1.1\r\nhost: ", proxy.host_header, CRLF)
        dropped = proxy.request_dropped
        if exchange.connection_values is not None:
            dropped = dropped | connection_tokens(exchange.connection_values)
        for (lname, value), name in zip(exchange.headers, exchange.names, strict=True):
            if lname in dropped or lname.startswith(GATEWAY_PREFIX):
                continue
            parts += (name, b": ", value, CRLF)
        decision = exchange.decision
        assert decision is not None
        for name, value in decision.upstream_headers:
            parts += (name, b": ", value, CRLF)
        if exchange.body_chunked:
            parts.append(b"transfer-encoding: chunked\r\n\r\n")
        elif exchange.content_length is not None:
            parts += (b"content-length: %d\r\n\r\n" % exchange.content_length,)
        else:
            parts.append(CRLF)
        buffer = exchange.buffer
        if buffer:
            exchange.buffer = None
            exchange.body_sent = True
            if exchange.body_chunked:
                parts += [chunk(piece) for piece in buffer]
            else:
                parts += buffer
        if exchange.body_chunked and exchange.request_done:
            parts.append(LAST_CHUNK)
        elif (
            exchange.expect_continue
            and exchange.http11  # no interim answers for HTTP/1.0 (RFC 9110 §15.2)
            and not exchange.body_sent
            and not exchange.request_done
        ):
            self.write(CONTINUE)
        if self.write_paused:
            upstream.pause_reading()
        exchange.sent_at = time.perf_counter()
        upstream.start(exchange, b"".join(parts), no_body=exchange.method == _HEAD_METHOD)
        self.update_reading()

    # --- answers the gateway gives itself ----------------------------------------------

    def answer_error(self, exchange: Exchange, error: GatewayError | None) -> None:
        """Answer `error` (None: the decision's own) for the exchange at the queue's head."""
        core = self.proxy.core
        decision = exchange.decision
        if decision is not None:
            status, headers, body = core.error_response(decision, error=error)
        else:
            assert error is not None
            status, headers, body = core.error_response(error)
        if not exchange.request_done or exchange.fail_error is not None:
            exchange.keep_alive = False  # the rest of its body will not be read
        if self.shutting_down:
            exchange.keep_alive = False
        parts = [STATUS_LINES[status]]
        for name, value in headers:
            parts += (name, b": ", value, CRLF)
        parts.append(CRLF if exchange.keep_alive else b"connection: close\r\n\r\n")
        if exchange.method != _HEAD_METHOD:
            parts.append(body)
        exchange.status = status
        exchange.response_started = True
        self.write(b"".join(parts))
        outcome = error.code.lower() if error is not None else None
        self.exchange_done(exchange, status, outcome)

    def exchange_done(self, exchange: Exchange, status: int, outcome: str | None = None) -> None:
        """The answer to `exchange` is written: account for it, then the next one."""
        if not exchange.finished and exchange.decision is not None:
            exchange.finished = True
            self.proxy.core.finish(exchange.decision, status, outcome)
        if self.closed:
            return
        queue = self.queue
        if queue and queue[0] is exchange:
            queue.popleft()
        if not exchange.keep_alive or not exchange.request_done:
            self._close_gracefully()
            return
        if queue:
            self._start(queue[0])
            if not queue[0].request_done:
                self._set_timer(_BODY, self.proxy.header_timeout)
        elif self.eof:
            self._close()
            return
        elif self.rejected is not None:
            self._answer_rejected()
            return
        elif self.shutting_down:
            self._close_gracefully()
            return
        elif self.current is None or not self.in_head:
            self._set_timer(_IDLE, self.proxy.keepalive_timeout)
        self.update_reading()

    def exchange_broken(self, exchange: Exchange) -> None:
        """The answer had started and cannot be completed: the client sees it cut short."""
        if not exchange.finished and exchange.decision is not None:
            exchange.finished = True
            self.proxy.core.finish(exchange.decision, exchange.status)
        upstream = exchange.upstream
        if upstream is not None:
            exchange.upstream = None
            upstream.abort()
        self._close()

    def reject(self, error: GatewayError) -> None:
        """The client's bytes cannot be parsed on: answer `error` once every request before
        it is answered, then close. A request being read when it happened fails with it."""
        if self.rejected is not None or self.closed:
            return
        self.rejected = error
        self._clear_timer()
        current = self.current
        if current is not None and current.head_done and not current.request_done:
            # Its head was understood; its body was not: it fails with this error.
            current.fail_error = error
            upstream = current.upstream
            if upstream is not None:
                current.upstream = None
                upstream.abort()
            if self.queue and self.queue[0] is current and current.upstream is None:
                if current.response_started:
                    self.exchange_broken(current)
                    return
                if current.decision is not None:
                    self.answer_error(current, error)
                    return
                # Not decided yet: `_run` answers once the decision is there.
            self._pause()
            return
        self._pause()
        if not self.queue:
            self._answer_rejected()

    def _answer_rejected(self) -> None:
        error = self.rejected
        assert error is not None
        log.info("bad request from %s: %s", self.peer[0] if self.peer else "?", error.message)
        status, headers, body = self.proxy.core.error_response(error, None)
        parts = [STATUS_LINES[status]]
        for name, value in headers:
            parts += (name, b": ", value, CRLF)
        parts += (b"connection: close\r\n\r\n", body)
        self.write(b"".join(parts))
        self._close_gracefully()

    # --- timers ------------------------------------------------------------------------

    def _set_timer(self, kind: int, delay: float) -> None:
        self.timer_kind = kind
        self.deadline = deadline = self.loop.time() + delay
        timer = self.timer
        if timer is None:
            self.timer = self.loop.call_at(deadline, self._on_timer)
        elif timer.when() > deadline:
            timer.cancel()
            self.timer = self.loop.call_at(deadline, self._on_timer)

    def _clear_timer(self) -> None:
        self.timer_kind = _NONE  # the scheduled callback finds nothing to do

    def _cancel_timer(self) -> None:
        self.timer_kind = _NONE
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def _on_timer(self) -> None:
        self.timer = None
        kind = self.timer_kind
        if kind == _NONE or self.closed:
            return
        if self.loop.time() < self.deadline:
            self.timer = self.loop.call_at(self.deadline, self._on_timer)
            return
        self.timer_kind = _NONE
        if kind == _BODY and not self.lingering:
            current = self.current
            if current is None or current.request_done:
                return
            if not self.reading:
                # Not read because of us (deciding, connecting, upstream full): no fault.
                self._set_timer(_BODY, self.proxy.header_timeout)
                return
            self.reject(GatewayError("REQUEST_TIMEOUT", status=408))
            return
        if self.lingering:
            self._close()
        elif kind == _HEAD and self.in_head:
            self.reject(GatewayError("REQUEST_TIMEOUT", status=408))
        elif not self.queue:
            self._close()  # nothing of a request came: a plain close

    # --- the connection ----------------------------------------------------------------

    def write(self, data: bytes) -> None:
        if not self.closed and self.transport is not None:
            self.transport.write(data)

    def update_reading(self) -> None:
        """Read from the client only when what it sends can go somewhere."""
        want = True
        queue = self.queue
        if self.rejected is not None:
            want = self.lingering
        elif queue:
            if len(queue) > 1:
                want = False  # a pipelined request waits for the one before it
            else:
                active = queue[0]
                if not active.request_done:
                    want = active.upstream is not None and not self.upstream_paused
        if want != self.reading and not self.closed and self.transport is not None:
            self.reading = want
            if want:
                self.transport.resume_reading()
            else:
                self.transport.pause_reading()

    def _pause(self) -> None:
        if self.reading and not self.closed and self.transport is not None:
            self.reading = False
            self.transport.pause_reading()

    def _close_gracefully(self) -> None:
        """Close after what was written, reading (and dropping) what the client still
        sends for a moment, so that our answer is not lost to a reset (lingering close)."""
        if self.closed or self.lingering or self.transport is None:
            return
        self.lingering = True
        transport = self.transport
        if transport.can_write_eof():
            transport.write_eof()
            if not self.reading:
                self.reading = True
                transport.resume_reading()
            self._set_timer(_IDLE, _SECONDS_TO_LINGER)
        else:
            transport.close()

    def _close(self) -> None:
        if not self.closed and self.transport is not None:
            self.transport.close()

    def shutdown(self) -> None:
        """Graceful stop: idle connections close now, busy ones after their answer."""
        self.shutting_down = True
        if not self.queue:
            if self.in_head:
                self._close_gracefully()
            else:
                self._close()  # idle keep-alive connection


def _parser_reason(exc: Exception) -> str:
    text = str(exc) or type(exc).__name__
    return text[:100]
