"""Forward an allowed request to the upstream: the proxy's last stage (SPEC §7).

`UpstreamApp` is a plain ASGI app; the proxy is `GatewayMiddleware(UpstreamApp(settings))`.
It reads what the decision core decided from the scope (`gateway.decision`: the headers
SPEC §7 adds, `gateway.request_id`) and streams the request to `upstream.url` + path and
the answer back.

The client is aiohttp, chosen by measurement on this kind of machine against a local nginx
(see BENCHMARKS.md): sequential GETs httpx 0.28 ≈ 600/s vs aiohttp ≈ 2,700/s; 32 concurrent
httpx ≈ 310/s vs aiohttp ≈ 3,300/s. One pooled `ClientSession` lives from `start()` to
`stop()`; it never follows redirects, never decompresses, keeps no cookies and ignores
proxy environment variables, so what the upstream says reaches the client untouched.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Iterable
from typing import Any
from urllib.parse import urlsplit

import aiohttp
from yarl import URL

from gateway import metrics
from gateway.errors import GatewayError, invalid_request, payload_too_large
from gateway.pipeline.core import render_error, send_response
from gateway.pipeline.identify import key_header_names
from gateway.settings import Settings

log = logging.getLogger("gateway.forward")

Scope = dict[str, Any]
Headers = list[tuple[bytes, bytes]]

# RFC 9110 §7.6.1 plus the de-facto ones; `expect` is answered by our own server.
HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
        b"proxy-authorization",
        b"proxy-connection",
        b"proxy-authenticate",
        b"expect",
    }
)
# Set by the gateway itself, from config or from what it decided; a client's copy is dropped.
ADDED = frozenset(
    {
        b"host",
        b"x-request-id",
        b"x-forwarded-for",
        b"x-forwarded-proto",
        b"x-forwarded-host",
    }
)
# Hop-by-hop in responses too; x-request-id is the gateway's (the middleware adds it).
RESPONSE_DROPPED = (HOP_BY_HOP - {b"proxy-authenticate"}) | {b"x-request-id"}
# Framing is ours to decide: a `Connection` header naming it does not remove it.
NEVER_NOMINATED = frozenset({b"content-length"})
GATEWAY_PREFIX = b"x-gateway-"
# aiohttp would otherwise invent these when the client did not send them.
SKIP_AUTO_HEADERS = ("Accept", "Accept-Encoding", "User-Agent", "Content-Type")


class _BodyTooLarge(Exception):
    """The request body grew past server.max_body_bytes while streaming."""


class _ClientGone(Exception):
    """The client disconnected while its request body was being streamed."""


def connection_tokens(headers: Iterable[tuple[bytes, bytes]]) -> frozenset[bytes]:
    """The header names every `Connection` header nominates as hop-by-hop (lower case)."""
    names: set[bytes] = set()
    for name, value in headers:
        if name == b"connection":
            names.update(token.strip().lower() for token in value.split(b","))
    names.discard(b"")
    return frozenset(names - NEVER_NOMINATED)


class UpstreamApp:
    """ASGI app forwarding every http request to one upstream through a pooled client."""

    def __init__(self, settings: Settings) -> None:
        url = settings.upstream.url
        if not url:
            raise ValueError("upstream.url is not set")
        parts = urlsplit(url)
        self.base = url.rstrip("/")
        self.host = parts.netloc.rsplit("@", 1)[-1].encode("latin-1")
        self.removed = HOP_BY_HOP | ADDED | frozenset(key_header_names(settings.auth.headers))
        self.max_body = settings.server.max_body_bytes
        self.timeout = aiohttp.ClientTimeout(
            total=None,
            connect=None,
            sock_connect=settings.upstream.connect_timeout,
            sock_read=settings.upstream.read_timeout,
        )
        self.max_connections = settings.upstream.max_connections
        self.session: aiohttp.ClientSession | None = None
        self._lock = asyncio.Lock()

    # --- lifecycle ---------------------------------------------------------------------

    async def start(self) -> None:
        if self.session is not None:
            return
        connector = aiohttp.TCPConnector(
            limit=self.max_connections,
            limit_per_host=self.max_connections,
            ttl_dns_cache=300,
            enable_cleanup_closed=False,
        )
        self.session = aiohttp.ClientSession(
            connector=connector,
            timeout=self.timeout,
            auto_decompress=False,
            cookie_jar=aiohttp.DummyCookieJar(),
            skip_auto_headers=SKIP_AUTO_HEADERS,
            trust_env=False,
            raise_for_status=False,
        )

    async def stop(self) -> None:
        session, self.session = self.session, None
        if session is not None:
            await session.close()

    async def _session(self) -> aiohttp.ClientSession:
        # Normally started explicitly (gateway serve) or by lifespan; lazily otherwise.
        if self.session is None:
            async with self._lock:
                await self.start()
        assert self.session is not None
        return self.session

    # --- ASGI --------------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            await self.forward(scope, receive, send)
        elif scope["type"] == "lifespan":
            await self._lifespan(receive, send)
        # websocket: not proxied; returning closes it.

    async def _lifespan(self, receive: Any, send: Any) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await self.start()
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.stop()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def forward(self, scope: Scope, receive: Any, send: Any) -> None:
        request_id: str = scope.get("gateway.request_id") or ""
        headers, content_length = self._upstream_headers(scope)
        if content_length is not None and content_length > self.max_body:
            await _send_error(send, payload_too_large(self.max_body), request_id)
            return
        body = _RequestBody(receive, self.max_body)
        try:
            data = await body.payload(scope["method"], content_length)
        except _BodyTooLarge:
            await _send_error(send, payload_too_large(self.max_body), request_id)
            return
        if body.client_gone:
            return
        raw_path = scope.get("raw_path") or scope["path"].encode()
        if not raw_path.startswith(b"/"):
            # The asterisk form (`OPTIONS *`) and absolute forms cannot be forwarded to
            # upstream.url + path; refuse them plainly instead of as an upstream failure.
            error = invalid_request("path", "must be an absolute path starting with '/'")
            await _send_error(send, error, request_id)
            return
        target = self.base + raw_path.decode("latin-1")
        if scope.get("query_string"):
            target += "?" + scope["query_string"].decode("latin-1")

        session = await self._session()
        started = time.perf_counter()
        try:
            response = await session.request(
                scope["method"],
                URL(target, encoded=True),
                headers=headers,
                data=data,
                allow_redirects=False,
                compress=None,
                chunked=None,
            )
        except Exception as exc:
            error = self._failure(exc, body, scope)
            if error is not None:
                await _send_error(send, error, request_id)
            return
        metrics.TALLY.upstream(time.perf_counter() - started)  # no lock per request
        # The request body may still be streaming while the answer comes back: if it then
        # fails (too large, client gone), the body closes this response at once.
        body.response = response
        try:
            await self._relay(response, scope, receive, send, body)
        finally:
            response.release()

    # --- request -----------------------------------------------------------------------

    def _upstream_headers(self, scope: Scope) -> tuple[list[tuple[str, str]], int | None]:
        """Headers for the upstream and the declared Content-Length (None if absent)."""
        raw: Headers = scope["headers"]
        # Parsed before anything is added: a client's `Connection: X-Request-ID` can only
        # remove the client's own copy, never the header the gateway adds.
        removed = self.removed
        nominated = connection_tokens(raw) if any(n == b"connection" for n, _ in raw) else None
        if nominated:
            removed = removed | nominated
        out: list[tuple[str, str]] = []
        content_length: int | None = None
        for name, value in raw:
            if name == b"content-length":
                try:
                    content_length = int(value)
                except ValueError:
                    content_length = None
            if name in removed or name.startswith(GATEWAY_PREFIX):
                continue
            out.append((name.decode("latin-1"), value.decode("latin-1")))

        out.append(("Host", self.host.decode("latin-1")))
        # X-Gateway-Key-*, X-Request-ID and X-Forwarded-*: what the decision core decided
        # (it alone judges which peers are trusted proxies).
        decision = scope.get("gateway.decision")
        if decision is not None:
            out += [
                (n.decode("latin-1"), v.decode("latin-1")) for n, v in decision.upstream_headers
            ]
        return out, content_length

    def _failure(self, exc: Exception, body: _RequestBody, scope: Scope) -> GatewayError | None:
        """The error to answer for a failed upstream call (None: the client is gone)."""
        if body.too_large:
            return payload_too_large(self.max_body)
        if body.client_gone:
            return None
        metrics.BACKEND_ERRORS.labels("upstream").inc()
        timed_out = isinstance(exc, asyncio.TimeoutError | aiohttp.ServerTimeoutError)
        log.warning(
            "upstream %s: %s",
            "timeout" if timed_out else "unavailable",
            # The type only: aiohttp's messages can carry the URL and its query string.
            type(exc).__name__,
            extra={"requestId": scope.get("gateway.request_id")},
        )
        if timed_out:
            return GatewayError("UPSTREAM_TIMEOUT")
        return GatewayError("UPSTREAM_UNAVAILABLE")

    # --- response ----------------------------------------------------------------------

    async def _relay(
        self,
        response: aiohttp.ClientResponse,
        scope: Scope,
        receive: Any,
        send: Any,
        body: _RequestBody,
    ) -> None:
        await send(
            {
                "type": "http.response.start",
                "status": response.status,
                "headers": _response_headers(response.raw_headers),
            }
        )
        content = response.content
        try:
            chunk = await content.readany()
        except Exception as exc:
            if not body.failed:
                await self._broken(exc, scope, send)
            return
        if not chunk or content.at_eof():
            # The whole body is here: the common case costs no extra task.
            await send({"type": "http.response.body", "body": chunk, "more_body": False})
            return
        # A body that keeps coming: watch for the client leaving, so that its upstream
        # connection is closed instead of read to the end for nobody.
        watcher = asyncio.ensure_future(_wait_disconnect(receive, response)) if body.done else None
        try:
            while chunk:
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
                try:
                    chunk = await content.readany()
                except Exception as exc:
                    if watcher is not None and watcher.done():
                        return  # the client left; the watcher closed the upstream response
                    if body.failed:
                        return  # the request body failed and closed the upstream response
                    await self._broken(exc, scope, send)
                    return
                if watcher is not None and watcher.done():
                    return
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        finally:
            if watcher is not None and not watcher.done():
                watcher.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await watcher

    async def _broken(self, exc: Exception, scope: Scope, send: Any) -> None:
        """The upstream failed mid-body: headers are gone, so end without completing the
        response (the server closes the connection and the client sees a short body)."""
        metrics.BACKEND_ERRORS.labels("upstream").inc()
        log.warning(
            "upstream response broken: %s",
            type(exc).__name__,
            extra={"requestId": scope.get("gateway.request_id")},
        )


class _RequestBody:
    """The client's request body as the upstream payload: streamed, counted, bounded."""

    __slots__ = ("client_gone", "done", "limit", "receive", "response", "size", "too_large")

    def __init__(self, receive: Any, limit: int) -> None:
        self.receive = receive
        self.limit = limit
        self.size = 0
        self.done = False
        self.too_large = False
        self.client_gone = False
        self.response: aiohttp.ClientResponse | None = None

    @property
    def failed(self) -> bool:
        return self.too_large or self.client_gone

    def _abort(self) -> None:
        """Stop the exchange: the upstream response, if one started, is closed (not pooled),
        so neither the upstream nor our relay waits for a body that will never finish."""
        if self.response is not None:
            self.response.close()

    async def payload(
        self, method: str, content_length: int | None
    ) -> bytes | AsyncIterator[bytes] | None:
        """None (no body), the body itself when it came in one message, else a stream."""
        message = await self.receive()
        if message["type"] == "http.disconnect":
            self.client_gone = True
            self.done = True
            return None
        first = message.get("body", b"")
        if not message.get("more_body", False):
            self.done = True
            self._count(first)
            if (
                not first
                and content_length is None
                and method in ("GET", "HEAD", "DELETE", "OPTIONS")
            ):
                return None
            return first
        return self._stream(first)

    def _count(self, chunk: bytes) -> None:
        self.size += len(chunk)
        if self.size > self.limit:
            self.too_large = True
            self._abort()
            raise _BodyTooLarge

    async def _stream(self, first: bytes) -> AsyncIterator[bytes]:
        self._count(first)
        if first:
            yield first
        while True:
            message = await self.receive()
            if message["type"] == "http.disconnect":
                self.client_gone = True
                self._abort()
                raise _ClientGone
            chunk = message.get("body", b"")
            self._count(chunk)
            if chunk:
                yield chunk
            if not message.get("more_body", False):
                self.done = True
                return


async def _wait_disconnect(receive: Any, response: aiohttp.ClientResponse) -> None:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            response.close()  # drop the upstream connection rather than pool a half-read one
            return


def _response_headers(raw: Iterable[tuple[bytes, bytes]]) -> Headers:
    # One pass for the common answers (no `Connection` header, or one naming only
    # hop-by-hop headers such as `keep-alive`); a second only when it nominates others.
    lowered = [(name.lower(), name, value) for name, value in raw]
    dropped = RESPONSE_DROPPED
    kept = [(name, value) for low, name, value in lowered if low not in dropped]
    if len(kept) == len(lowered) or not any(low == b"connection" for low, _, _ in lowered):
        return kept
    nominated = connection_tokens((low, value) for low, _, value in lowered)
    if nominated <= dropped:
        return kept
    dropped = dropped | nominated
    return [(name, value) for low, name, value in lowered if low not in dropped]


async def _send_error(send: Any, error: GatewayError, request_id: str) -> None:
    # The middleware around us adds X-Request-ID and the RateLimit headers to every answer.
    await send_response(send, render_error(error, request_id, headers=()))
