"""The forward-auth listener: a small HTTP/1.1 server (asyncio.Protocol + httptools).

Authz requests are tiny (a head, no body worth reading) and answered by the decision core
alone, so this skips any framework: llhttp parses the head, `AuthzFace.check` decides,
and the answer is written as one buffer. Keep-alive and pipelining (answers in order),
and the SPEC §7 edge limits: a head over `max_header_bytes` or with more than
`max_headers` fields → 431 and close; a head not complete within `header_timeout` → 408
(a plain close when nothing arrived); an idle keep-alive connection closed after
`keepalive_timeout`. A body, if a proxy sends one, is read and dropped (over
`max_body_bytes` → 413 and close).

Cheap per check: timeouts are deadlines on the connection, checked by one periodic sweep
of the server, not a timer armed and cancelled per request.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections import deque
from dataclasses import dataclass
from http import HTTPStatus

import httptools

from gateway.errors import GatewayError, payload_too_large
from gateway.faces.authz import Answer, AuthzFace
from gateway.pipeline.core import render_error
from gateway.settings import Settings

log = logging.getLogger("gateway")

_STATUS_LINES = {
    status.value: b"HTTP/1.1 %d %s\r\n" % (status.value, status.phrase.encode())
    for status in HTTPStatus
}
_MAX_PIPELINED = 16  # queued requests before we stop reading from the connection
_NO_DEADLINE = float("inf")


@dataclass(frozen=True, slots=True)
class EdgeLimits:
    max_header_bytes: int = 16 * 1024
    max_headers: int = 100
    header_timeout: float = 10.0
    keepalive_timeout: float = 5.0
    max_body_bytes: int = 10 * 1024 * 1024

    @classmethod
    def from_settings(cls, settings: Settings) -> EdgeLimits:
        server = settings.server
        return cls(
            max_header_bytes=server.max_header_bytes,
            max_headers=server.max_headers,
            header_timeout=server.header_timeout,
            keepalive_timeout=server.keepalive_timeout,
            max_body_bytes=server.max_body_bytes,
        )


class _Request:
    __slots__ = ("headers", "keep_alive", "method", "target")
    keep_alive: bool

    def __init__(self, method: str, target: bytes, headers: list, keep_alive: bool) -> None:
        self.method = method
        self.target = target
        self.headers = headers
        self.keep_alive = keep_alive


class AuthzProtocol(asyncio.Protocol):
    """One client connection of the authz listener."""

    def __init__(self, face: AuthzFace, limits: EdgeLimits, server: AuthzServer) -> None:
        self.face = face
        self.limits = limits
        self.max_header_bytes = limits.max_header_bytes
        self.max_headers = limits.max_headers
        self.server = server
        self.loop = server.loop
        self.transport: asyncio.Transport | None = None
        self.client: tuple[str, int] | None = None
        self.parser = httptools.HttpRequestParser(self)
        self.queue: deque[_Request] = deque()
        self.busy = False
        self.closing = False
        self.paused = False
        # The request being parsed.
        self.url = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.head_bytes = 0
        self.in_head = False
        self.body_bytes = 0
        self.error: GatewayError | None = None
        self.queued = False
        # loop.time() after which the server's sweep acts (see _expired).
        self.deadline = _NO_DEADLINE

    # --- connection ----------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        peer = transport.get_extra_info("peername")
        if isinstance(peer, tuple) and len(peer) >= 2:
            self.client = (str(peer[0]), int(peer[1]))
        self.server.connections.add(self)
        self.deadline = self.loop.time() + self.limits.header_timeout

    def connection_lost(self, exc: Exception | None) -> None:
        self.closing = True
        self.server.connections.discard(self)
        self.queue.clear()

    def data_received(self, data: bytes) -> None:
        if self.closing:
            return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            # An Upgrade request: answer its head, then close (nothing to switch to).
            if not self.in_head and not self.queued:
                self.on_message_complete()
                if self.queue:
                    self.queue[-1].keep_alive = False
            self.transport.pause_reading()  # type: ignore[union-attr]
        except httptools.HttpParserError:
            if self.error is None:
                self.error = GatewayError(
                    "INVALID_REQUEST",
                    "The request is not valid HTTP/1.1.",
                    {"field": "request", "reason": "malformed HTTP/1.1 request"},
                )
        if self.error is not None:
            # Answer what came complete before the problem, then the problem; close.
            self.transport.pause_reading()  # type: ignore[union-attr]
        if not self.busy:
            self._drain()

    # --- httptools callbacks -------------------------------------------------------------

    def on_message_begin(self) -> None:
        self.url = b""
        self.headers = []
        self.head_bytes = 0
        self.body_bytes = 0
        self.in_head = True
        self.queued = False
        if not self.busy and not self.queue:
            self.deadline = self.loop.time() + self.limits.header_timeout

    def on_url(self, url: bytes) -> None:
        self.url += url
        self._count(len(url))

    def on_header(self, name: bytes, value: bytes) -> None:
        headers = self.headers
        headers.append((name.lower(), value))
        self.head_bytes += len(name) + len(value) + 4
        if (
            self.head_bytes > self.max_header_bytes or len(headers) > self.max_headers
        ) and self.error is None:
            too_many = len(headers) > self.max_headers
            self.error = _too_large(self.limits, "fields" if too_many else "bytes")

    def on_headers_complete(self) -> None:
        self.in_head = False

    def on_body(self, body: bytes) -> None:
        self.body_bytes += len(body)
        if self.body_bytes > self.limits.max_body_bytes and self.error is None:
            self.error = payload_too_large(self.limits.max_body_bytes)

    def on_message_complete(self) -> None:
        self.queued = True
        if self.error is not None:
            return
        parser = self.parser
        self.queue.append(
            _Request(
                parser.get_method().decode("latin-1"),
                self.url,
                self.headers,
                parser.should_keep_alive() and not parser.should_upgrade(),
            )
        )
        self.deadline = _NO_DEADLINE  # answering now; the next head's clock starts after
        if len(self.queue) >= _MAX_PIPELINED and not self.paused:
            self.paused = True
            self.transport.pause_reading()  # type: ignore[union-attr]

    def _count(self, size: int) -> None:
        self.head_bytes += size
        if self.head_bytes > self.max_header_bytes and self.error is None:
            self.error = _too_large(self.limits, "bytes")

    # --- answering -----------------------------------------------------------------------

    def _drain(self) -> None:
        """Answer the next queued request (in order); its task drains the rest."""
        if self.queue and not self.busy and not self.closing:
            request = self.queue.popleft()
            if self.paused and len(self.queue) < _MAX_PIPELINED // 2:
                self.paused = False
                self.transport.resume_reading()  # type: ignore[union-attr]
            self.busy = True
            # A task, not a hand-driven coroutine: the store and Redis clients need a
            # current task (asyncio.timeout).
            task = self.loop.create_task(self._answer(request))
            self.server.tasks.add(task)
            task.add_done_callback(self._answered)
            return
        if not self.busy and not self.closing:
            if self.error is not None:
                self._fail()  # a request on this connection broke a rule
            elif self.in_head:
                self.deadline = self.loop.time() + self.limits.header_timeout
            else:
                self.deadline = self.loop.time() + self.limits.keepalive_timeout

    def _answered(self, task: asyncio.Task[None]) -> None:
        self.server.tasks.discard(task)
        self._drain()

    async def _answer(self, request: _Request) -> None:
        try:
            answer = await self.face.check(
                request.method, request.target, request.headers, self.client
            )
        except Exception:  # the core answers request problems itself; this is a bug
            log.exception("authz listener: unexpected error")
            answer = _error_answer(GatewayError("INTERNAL_ERROR"))
        self.busy = False
        if self.closing:
            return
        keep_alive = request.keep_alive and not self.server.stopping
        self._write(answer, keep_alive, head_only=request.method == "HEAD")
        if not keep_alive:
            self._close()

    def _write(self, answer: Answer, keep_alive: bool, *, head_only: bool = False) -> None:
        status = answer.status
        parts = [_STATUS_LINES.get(status) or b"HTTP/1.1 %d Unknown\r\n" % status]
        for name, value in answer.headers:
            if name != b"content-length":
                parts += (name, b": ", value, b"\r\n")
        parts.append(b"content-length: %d\r\n" % len(answer.body))
        if not keep_alive:
            parts.append(b"connection: close\r\n")
        parts.append(b"\r\n")
        if answer.body and not head_only:
            parts.append(answer.body)
        self.transport.write(b"".join(parts))  # type: ignore[union-attr]

    def _fail(self) -> None:
        """Answer `self.error` (bad framing, edge limits: never decided on), then close."""
        if self.error is not None and self.transport is not None and not self.closing:
            self._write(_error_answer(self.error), keep_alive=False)
        self._close()

    def _close(self) -> None:
        self.closing = True
        self.deadline = _NO_DEADLINE
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()

    # --- timeouts (called by the server's sweep) -----------------------------------------

    def expired(self) -> None:
        self.deadline = _NO_DEADLINE
        if self.busy or self.closing:
            return
        if self.in_head:
            self.error = GatewayError(
                "REQUEST_TIMEOUT", "The request head did not arrive in time.", status=408
            )
            self._fail()
        else:
            self._close()  # idle keep-alive, or nothing ever arrived

    def close_if_idle(self) -> None:
        if not self.busy and not self.queue and not self.in_head:
            self._close()


def _too_large(limits: EdgeLimits, what: str) -> GatewayError:
    limit = limits.max_header_bytes if what == "bytes" else limits.max_headers
    return GatewayError(
        "HEADERS_TOO_LARGE",
        "The request head is too large.",
        {"limit": limit},
        status=431,
    )


def _error_answer(error: GatewayError) -> Answer:
    """The one envelope (with X-Request-ID) for an error before any decision."""
    return Answer(*render_error(error))


class AuthzServer:
    """The authz listener on one socket (HTTPS with `tls`): started, stopped gracefully."""

    def __init__(
        self, face: AuthzFace, limits: EdgeLimits, tls: ssl.SSLContext | None = None
    ) -> None:
        self.face = face
        self.limits = limits
        self.tls = tls  # server.tls_cert/tls_key: HTTPS, as the proxy listener
        self.connections: set[AuthzProtocol] = set()
        self.tasks: set[asyncio.Task[None]] = set()
        self.stopping = False
        self.loop: asyncio.AbstractEventLoop = None  # type: ignore[assignment]  # set by start()
        self._server: asyncio.base_events.Server | None = None
        self._sweeper: asyncio.TimerHandle | None = None
        # Timeouts act at most this late.
        shortest = min(limits.header_timeout, limits.keepalive_timeout)
        self.sweep_interval = min(1.0, max(0.05, shortest / 4))

    async def start(self, sock: object) -> None:
        self.loop = asyncio.get_running_loop()
        self._server = await self.loop.create_server(
            lambda: AuthzProtocol(self.face, self.limits, self),
            sock=sock,  # type: ignore[arg-type]
            ssl=self.tls,
            backlog=1024,
        )
        self._sweeper = self.loop.call_later(self.sweep_interval, self._sweep)

    def _sweep(self) -> None:
        now = self.loop.time()
        for conn in [c for c in self.connections if c.deadline <= now]:
            conn.expired()
        self._sweeper = self.loop.call_later(self.sweep_interval, self._sweep)

    async def stop(self, grace: float) -> None:
        """Stop accepting, let in-flight answers finish (up to `grace` s), close the rest."""
        self.stopping = True
        if self._server is not None:
            self._server.close()
        for conn in list(self.connections):
            conn.close_if_idle()
        if self.tasks:
            await asyncio.wait(list(self.tasks), timeout=grace)
        for conn in list(self.connections):
            conn._close()
        if self._sweeper is not None:
            self._sweeper.cancel()
        if self._server is not None:
            await self._server.wait_closed()
