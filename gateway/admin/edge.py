"""SPEC §7 edge limits for the listeners that run on uvicorn (the admin listener).

uvicorn's httptools protocol has no limit on a request head and no head timeout: a 64 MiB
header is buffered whole (and slowly) before the app sees anything, and a client sending
one byte a second holds its connection forever. `EdgeProtocol` adds, while the head is
read and before any work on it:

- a head over `server.max_header_bytes` (request line + header fields, counted on the raw
  bytes as they arrive, so a huge header is refused after reading just the limit) or with
  more than `server.max_headers` fields → 431 `HEADERS_TOO_LARGE`, connection closed;
- a head not complete within `server.header_timeout` → 408 `REQUEST_TIMEOUT`, or a plain
  close if nothing of it arrived;
- an idle keep-alive connection closes after `server.keepalive_timeout` (uvicorn's own
  keep-alive timer).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from gateway import metrics
from gateway.errors import GatewayError, invalid_request
from gateway.pipeline.core import render_error

log = logging.getLogger("gateway.edge")

_END = b"\r\n\r\n"


def too_large(limit: int) -> GatewayError:
    return GatewayError(
        "HEADERS_TOO_LARGE", "The request head is too large.", {"limit": limit}, status=431
    )


class EdgeProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with the edge limits (set by `edge_protocol`)."""

    max_header_bytes = 16 * 1024
    max_headers = 100
    header_timeout = 10.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._in_head = True  # reading a request head (not a body)
        self._head_bytes = 0  # bytes of the current head so far
        self._tail = b""  # the last 3 bytes seen, to find a "\r\n\r\n" split across reads
        self._fields = 0
        self._head_timer: asyncio.TimerHandle | None = None
        # Set by a parser callback that refuses the head; httptools then raises its own
        # parser error, which uvicorn answers through `send_400_response`.
        self._refusal: GatewayError | None = None

    # --- timers ---------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _arm(self) -> None:
        self._disarm()
        self._head_timer = self.loop.call_later(self.header_timeout, self._head_timed_out)

    def _disarm(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if self.transport.is_closing() or not self._in_head:
            return
        if self._head_bytes == 0:
            self.transport.close()  # nothing of a request arrived: just close
            return
        self._refuse(
            GatewayError("REQUEST_TIMEOUT", "The request head did not arrive in time.", status=408)
        )

    # --- reading ----------------------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        if self.transport.is_closing():
            return
        if self._in_head:
            if self._head_bytes == 0 and self._head_timer is None:
                self._arm()  # the first byte of a head on a kept-alive connection
            seen = self._tail + data
            end = seen.find(_END)
            if end < 0:
                size = self._head_bytes + len(data)
                self._tail = seen[-3:]
            else:
                size = self._head_bytes + end + len(_END) - len(self._tail)
            if size > self.max_header_bytes:
                self._refuse(too_large(self.max_header_bytes))
                return
            self._head_bytes = size if end < 0 else self._head_bytes
        super().data_received(data)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._fields = 0

    def on_header(self, name: bytes, value: bytes) -> None:
        self._fields += 1
        if self._fields > self.max_headers:
            self._refusal = too_large(self.max_headers)
            raise ValueError("too many header fields")  # stops the parser
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._in_head = False
        self._head_bytes = 0
        self._tail = b""
        self._disarm()
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._in_head = True  # what comes next is the next request's head

    # --- refusing ---------------------------------------------------------------------------

    def send_400_response(self, msg: str) -> None:
        """uvicorn's answer to a parser error: our refusal, or 400 INVALID_REQUEST as the
        JSON envelope (SPEC §5) instead of uvicorn's plain text."""
        refusal, self._refusal = self._refusal, None
        if refusal is None:
            refusal = invalid_request("request", "malformed HTTP request")
        self._refuse(refusal)

    def _refuse(self, error: GatewayError) -> None:
        """Answer `error` as the JSON envelope, close the connection; the app never sees
        the request."""
        self._disarm()
        self._in_head = False
        status, headers, body = render_error(error)  # the one envelope, with X-Request-ID
        lines = [b"HTTP/1.1 %d %s\r\n" % (status, _REASONS.get(status, b"Error"))]
        lines += [b"%s: %s\r\n" % pair for pair in headers]
        lines.append(b"connection: close\r\n\r\n")
        head = b"".join(lines)
        metrics.TALLY.request(error.code.lower(), error.status, 0.0)
        log.info("request head refused: %s", error.code)
        self.transport.write(head + body)
        self.transport.close()


_REASONS = {400: b"Bad Request", 408: b"Request Timeout", 431: b"Request Header Fields Too Large"}


def edge_protocol(
    max_header_bytes: int, max_headers: int, header_timeout: float
) -> type[EdgeProtocol]:
    """An `EdgeProtocol` class with these limits (uvicorn takes a class as `http`)."""
    return type(
        "EdgeProtocol",
        (EdgeProtocol,),
        {
            "max_header_bytes": max_header_bytes,
            "max_headers": max_headers,
            "header_timeout": header_timeout,
        },
    )
