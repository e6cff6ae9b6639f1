"""The upstream side of the proxy: keep-alive connections parsed by httptools, and their pool.

One `UpstreamConnection` carries one exchange at a time (no pipelining towards the
upstream). It parses the response with llhttp and hands the pieces to its exchange
(`response_head`, `response_body`, `response_complete`, `upstream_failed`); it never
copies the upstream's framing through. The pool keeps idle connections (newest first),
closes those idle longer than `IDLE_SECONDS`, and bounds the total at
`upstream.max_connections` (callers wait for a free one).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import ssl
from collections import deque
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import urlsplit

import httptools

from gateway.errors import GatewayError
from gateway.settings import Settings

if TYPE_CHECKING:
    from asyncio import Transport

log = logging.getLogger("gateway.proxy")

# An idle pooled connection is closed after this many seconds (below the keep-alive time
# of common servers: nginx 75 s, aiohttp 75 s, gunicorn 2 s is the exception, which the
# stale-connection retry covers).
IDLE_SECONDS = 15.0
# The largest response head accepted from the upstream; beyond it the answer is a 502.
MAX_RESPONSE_HEAD = 64 * 1024
MAX_RESPONSE_HEADERS = 200
_OUT_OF_FDS = frozenset({errno.EMFILE, errno.ENFILE})


class Exchange(Protocol):
    """What an upstream connection reports to (implemented by the client side)."""

    request_done: bool  # the whole request body was sent

    def response_head(
        self, status: int, reason: bytes, headers: list[tuple[bytes, bytes, bytes]]
    ) -> None: ...
    def interim(
        self, status: int, reason: bytes, headers: list[tuple[bytes, bytes, bytes]]
    ) -> None: ...
    def response_body(self, data: bytes) -> None: ...
    def flush(self) -> None: ...
    def response_complete(self, reusable: bool) -> None: ...
    def upstream_failed(self, error: GatewayError, retryable: bool) -> None: ...
    def upstream_write_paused(self, paused: bool) -> None: ...


class UpstreamTarget:
    """`upstream.url` as ready-to-use data: where to connect, Host, path prefix, TLS."""

    __slots__ = ("host", "host_header", "port", "prefix", "server_hostname", "ssl")

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        self.host = parts.hostname or ""
        secure = parts.scheme == "https"
        self.port = parts.port or (443 if secure else 80)
        self.host_header = parts.netloc.rsplit("@", 1)[-1].encode("latin-1")
        self.prefix = parts.path.rstrip("/").encode("latin-1")
        self.ssl: ssl.SSLContext | None = ssl.create_default_context() if secure else None
        self.server_hostname = self.host if secure else None


class UpstreamConnection(asyncio.Protocol):
    """One connection to the upstream; parses one response at a time."""

    __slots__ = (
        "closed",
        "exchange",
        "head_bytes",
        "headers",
        "idle_since",
        "informational",
        "last_read",
        "no_body",
        "parser",
        "pool",
        "reading_paused",
        "reason",
        "responded",
        "reused",
        "timer",
        "transport",
        "until_close",
    )

    def __init__(self, pool: UpstreamPool) -> None:
        self.pool = pool
        self.transport: Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.exchange: Exchange | None = None
        self.closed = False
        self.reused = False
        self.idle_since = 0.0
        self.timer: asyncio.TimerHandle | None = None
        self.last_read = 0.0
        self.reading_paused = False
        self._reset_response()

    def _reset_response(self) -> None:
        self.reason = b""
        self.headers: list[tuple[bytes, bytes, bytes]] = []
        self.head_bytes = 0
        self.informational = False
        self.no_body = False
        self.until_close = False
        self.responded = False  # any byte of a response (not 1xx) seen

    # --- one exchange ----------------------------------------------------------------

    def start(self, exchange: Exchange, data: bytes, *, no_body: bool) -> None:
        """Send a request head (and what body is ready) for `exchange`; wait for the answer."""
        self.exchange = exchange
        self.no_body = no_body
        self.last_read = self.pool.loop.time()
        if self.timer is None:
            self.timer = self.pool.loop.call_at(
                self.last_read + self.pool.read_timeout, self._on_timer
            )
        assert self.transport is not None
        self.transport.write(data)

    def write(self, data: bytes) -> None:
        if self.transport is not None and not self.closed:
            self.transport.write(data)

    def request_sent(self) -> None:
        """The request body is all written: `upstream.read_timeout` counts from now."""
        self.last_read = self.pool.loop.time()

    def pause_reading(self) -> None:
        """The client cannot take more: stop reading the upstream (and its read timer)."""
        if not self.reading_paused and self.transport is not None and not self.closed:
            self.reading_paused = True
            self.transport.pause_reading()

    def resume_reading(self) -> None:
        if self.reading_paused and self.transport is not None and not self.closed:
            self.reading_paused = False
            self.last_read = self.pool.loop.time()
            self.transport.resume_reading()

    def abort(self) -> None:
        """Drop the connection (not pooled): its exchange is gone or failed."""
        self.exchange = None
        self._cancel_timer()
        if not self.closed:
            self.closed = True
            if self.transport is not None:
                self.transport.abort()

    def _finish(self, reusable: bool) -> None:
        exchange = self.exchange
        self.exchange = None
        # The read timer stays scheduled: it finds no exchange (or the next one's fresh
        # `last_read`) when it fires — cheaper than a timer per request.
        if self.reading_paused and self.transport is not None and not self.closed:
            self.reading_paused = False
            self.transport.resume_reading()
        self._reset_response()
        if exchange is not None:
            exchange.response_complete(reusable)

    def release(self) -> None:
        """Back to the pool (called by the exchange once its request is fully sent)."""
        self.pool.release(self)

    def _cancel_timer(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def _on_timer(self) -> None:
        self.timer = None
        if self.exchange is None or self.closed:
            return
        loop = self.pool.loop
        deadline = self.last_read + self.pool.read_timeout
        if not self.exchange.request_done:
            # Still sending the request body: the wait for an answer has not begun (a
            # stalled client body is the client side's 408).
            self.last_read = loop.time()
            deadline = self.last_read + self.pool.read_timeout
        if self.reading_paused or loop.time() < deadline:
            # Activity since (or the client is slow, which is not the upstream's fault).
            self.timer = loop.call_at(
                max(deadline, loop.time() + 0.05) if not self.reading_paused else loop.time() + 1,
                self._on_timer,
            )
            return
        self._fail(GatewayError("UPSTREAM_TIMEOUT"), "timeout")

    def _fail(self, error: GatewayError, what: str, *, retryable: bool = False) -> None:
        exchange = self.exchange
        self.abort()
        if exchange is not None:
            self.pool.count_failure(what)
            exchange.upstream_failed(error, retryable)

    # --- asyncio.Protocol --------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        if self.exchange is None:
            # Bytes nobody asked for (an idle connection): it cannot be trusted any more.
            self.abort()
            return
        self.last_read = self.pool.loop.time()
        try:
            self.parser.feed_data(data)
            exchange = self.exchange
            if exchange is not None:
                exchange.flush()
        except httptools.HttpParserError as exc:
            if isinstance(exc.__context__, _BadResponse):
                reason = str(exc.__context__)
            else:
                reason = str(exc) or type(exc).__name__
            self._fail(GatewayError("UPSTREAM_UNAVAILABLE"), f"malformed response ({reason})")

    def eof_received(self) -> bool:
        exchange = self.exchange
        if exchange is not None and self.until_close:
            self.until_close = False
            self.closed = True
            self._finish(False)  # the body ended with the connection
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._cancel_timer()
        self.pool.forget(self)
        exchange = self.exchange
        if exchange is None:
            return
        if self.until_close:
            self.until_close = False
            self._finish(False)
            return
        self.exchange = None
        # A pooled connection the upstream closed while idle: safe to retry if nothing of
        # an answer came (the exchange knows whether any body was sent).
        retryable = self.reused and not self.responded
        self.pool.count_failure("closed", quiet=retryable)
        exchange.upstream_failed(GatewayError("UPSTREAM_UNAVAILABLE"), retryable)

    def pause_writing(self) -> None:
        if self.exchange is not None:
            self.exchange.upstream_write_paused(True)

    def resume_writing(self) -> None:
        if self.exchange is not None:
            self.exchange.upstream_write_paused(False)

    # --- httptools callbacks -----------------------------------------------------------

    def on_status(self, reason: bytes) -> None:
        self.reason += reason
        self.responded = True

    def on_header(self, name: bytes, value: bytes) -> None:
        self.head_bytes += len(name) + len(value) + 4
        if self.head_bytes > MAX_RESPONSE_HEAD or len(self.headers) >= MAX_RESPONSE_HEADERS:
            raise _BadResponse("response head too large")
        self.headers.append((name.lower(), name, value))

    def on_headers_complete(self) -> None:
        status = self.parser.get_status_code()
        if status < 200:
            if status == 101:
                raise _BadResponse("unrequested protocol switch")
            self.informational = True
            if status != 100 and self.exchange is not None:
                # 103 Early Hints and the like go on to the client (as nginx does); a 100
                # Continue is ours to give, already given.
                self.exchange.interim(status, self.reason, self.headers)
            return
        exchange = self.exchange
        assert exchange is not None
        headers = self.headers
        if not self.no_body and status not in (204, 304):
            framed = False
            for name, _, value in headers:
                if name == b"content-length":
                    framed = True
                elif name == b"transfer-encoding":
                    framed = value.rstrip().lower().endswith(b"chunked")
            self.until_close = not framed
        exchange.response_head(status, self.reason, headers)
        if self.no_body and self.exchange is exchange:
            # A HEAD answer has no body whatever its Content-Length says; llhttp cannot
            # be told so, hence a fresh parser for the next response on this connection.
            self.parser = httptools.HttpResponseParser(self)
            self._finish(True)

    def on_body(self, body: bytes) -> None:
        exchange = self.exchange
        if exchange is None:
            if not self.closed:
                self.abort()  # a body after a HEAD answer: the connection is out of step
            return
        exchange.response_body(body)

    def on_message_complete(self) -> None:
        if self.informational:  # the real answer comes next, for the same request
            self.reason = b""
            self.headers = []
            self.head_bytes = 0
            self.informational = False
            return
        if self.exchange is None:
            return
        self.until_close = False
        self._finish(self.parser.should_keep_alive())


class _BadResponse(Exception):
    """The upstream's answer is not one we pass on (too large, a protocol switch)."""


class UpstreamUnavailable(Exception):
    """No connection to the upstream could be had; `error` is the answer to give."""

    def __init__(self, error: GatewayError) -> None:
        super().__init__(error.code)
        self.error = error


class UpstreamPool:
    """Keep-alive connections to the one upstream, at most `upstream.max_connections`."""

    def __init__(self, settings: Settings, loop: asyncio.AbstractEventLoop) -> None:
        assert settings.upstream.url
        self.loop = loop
        self.target = UpstreamTarget(settings.upstream.url)
        self.connect_timeout = settings.upstream.connect_timeout
        self.read_timeout = settings.upstream.read_timeout
        self.limit = settings.upstream.max_connections
        self.idle: list[UpstreamConnection] = []
        self.open = 0
        self.waiters: deque[asyncio.Future[UpstreamConnection | None]] = deque()
        self.closing = False
        self._sweeper: asyncio.TimerHandle | None = None
        self._metrics: Any = None

    def count_failure(self, what: str, *, quiet: bool = False) -> None:
        if quiet:
            return
        from gateway import metrics

        metrics.BACKEND_ERRORS.labels("upstream").inc()
        log.warning("upstream %s", what)

    # --- acquire / release -------------------------------------------------------------

    def acquire_idle(self) -> UpstreamConnection | None:
        """An idle connection (newest first) without waiting, or None."""
        idle = self.idle
        while idle:
            conn = idle.pop()
            if not conn.closed:
                conn.reused = True
                return conn
        return None

    async def acquire(self, *, fresh: bool = False) -> UpstreamConnection:
        """An idle connection (newest first), a new one, or the next one released."""
        idle = self.idle
        while idle and not fresh:
            conn = idle.pop()
            if not conn.closed:
                conn.reused = True
                return conn
        while self.open >= self.limit:
            waiter = self.loop.create_future()
            self.waiters.append(waiter)
            try:
                conn = await asyncio.wait_for(waiter, self.read_timeout)
            except TimeoutError:
                raise UpstreamUnavailable(GatewayError("UPSTREAM_TIMEOUT")) from None
            if conn is not None and not conn.closed:
                conn.reused = True
                return conn
        return await self._connect()

    async def _connect(self) -> UpstreamConnection:
        target = self.target
        self.open += 1
        try:
            _, conn = await asyncio.wait_for(
                self.loop.create_connection(
                    lambda: UpstreamConnection(self),
                    target.host,
                    target.port,
                    ssl=target.ssl,
                    server_hostname=target.server_hostname,
                ),
                self.connect_timeout,
            )
        except TimeoutError:
            self._closed_one()
            self.count_failure("connect timeout")
            raise UpstreamUnavailable(GatewayError("UPSTREAM_TIMEOUT")) from None
        except OSError as exc:
            self._closed_one()
            if exc.errno in _OUT_OF_FDS:
                # Not the upstream's fault: this process ran out of file descriptors.
                log.error("out of file descriptors: cannot open an upstream connection")
                raise UpstreamUnavailable(
                    GatewayError("SERVICE_UNAVAILABLE", "The gateway is overloaded.")
                ) from None
            self.count_failure(f"unavailable: {type(exc).__name__}")
            raise UpstreamUnavailable(GatewayError("UPSTREAM_UNAVAILABLE")) from None
        except BaseException:
            self._closed_one()
            raise
        return conn

    def release(self, conn: UpstreamConnection) -> None:
        if conn.closed:
            return
        if self.closing:
            conn.abort()
            return
        while self.waiters:
            waiter = self.waiters.popleft()
            if not waiter.done():
                waiter.set_result(conn)
                return
        conn.idle_since = self.loop.time()
        self.idle.append(conn)
        if self._sweeper is None:
            self._sweeper = self.loop.call_later(IDLE_SECONDS / 3, self._sweep)

    def forget(self, conn: UpstreamConnection) -> None:
        """`conn` is closed (called once, from connection_lost)."""
        with contextlib.suppress(ValueError):
            self.idle.remove(conn)
        self._closed_one()

    def _closed_one(self) -> None:
        self.open -= 1
        while self.waiters:  # a slot is free: let one waiter connect
            waiter = self.waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

    def _sweep(self) -> None:
        self._sweeper = None
        cutoff = self.loop.time() - IDLE_SECONDS
        for conn in [c for c in self.idle if c.idle_since < cutoff]:
            conn.abort()
        if self.idle:
            self._sweeper = self.loop.call_later(IDLE_SECONDS / 3, self._sweep)

    def close(self) -> None:
        self.closing = True
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        for conn in list(self.idle):
            conn.abort()
        self.idle.clear()
