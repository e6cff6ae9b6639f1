"""GatewayMiddleware: the request pipeline as pure ASGI (SPEC §2–§6, §8).

Per request, in SPEC §3's order: request id → route rule (public routes skip the key
checks) → failed-attempt throttle for the client IP → key extraction and verification →
access level → site → rate limit → the wrapped app (or, in the proxy, the forwarding
app), which finds `scope["gateway.key"]`, `scope["gateway.request_id"]` and
`scope["gateway.client_ip"]`. Errors the gateway produces are answered directly with the
JSON envelope; every response carries `X-Request-ID`, and every response that reached
the rate-limit check carries the RateLimit headers. Afterwards: metrics, one access log
line, and a usage record for every request that carried a valid key.

`lifespan` scopes open and close the middleware's resources around the host app's own;
without a lifespan they open on the first request. `websocket` scopes pass through.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from gateway import logs, metrics
from gateway.errors import GatewayError, accept_request_id, error_body
from gateway.keys.model import ApiKey
from gateway.pipeline.clientip import ClientIP
from gateway.pipeline.decide import (
    RouteRules,
    SiteRules,
    check_scope,
    check_site,
    normalize_path,
    required_rank,
)
from gateway.pipeline.identify import extract_key, key_header_names
from gateway.runtime import Runtime
from gateway.settings import Settings, load_settings

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

log = logging.getLogger("gateway")

# Outcomes counted as failed attempts of the client IP (SPEC §4).
FAILED_ATTEMPT_CODES = frozenset({"INVALID_API_KEY", "KEY_REVOKED", "KEY_EXPIRED"})
_REQUEST_ID = b"x-request-id"
_FORWARDED_FOR = b"x-forwarded-for"
_JSON = (b"content-type", b"application/json")
_ALLOWED = "allowed"


class GatewayMiddleware:
    """Authenticate, authorize, rate-limit and record every HTTP request to `app`.

    `settings` default to `load_settings()` (the environment / $GATEWAY_CONFIG). Pass
    `runtime` to share resources opened elsewhere (the proxy server does); the
    middleware then never stops it.
    """

    def __init__(
        self,
        app: ASGIApp,
        settings: Settings | None = None,
        *,
        runtime: Runtime | None = None,
    ) -> None:
        if settings is None:
            settings = runtime.settings if runtime is not None else load_settings()
        self.app = app
        self.settings = settings
        self.runtime = runtime if runtime is not None else Runtime(settings)
        self.owns_runtime = runtime is None
        # Settings as ready-to-use data, once.
        self.key_headers = key_header_names(settings.auth.headers)
        self.routes = RouteRules(settings.routes)
        self.sites = SiteRules(settings.auth.site_header, settings.auth.site_path_prefix)
        self.site_header = self.sites.header
        self.client_ip = ClientIP(settings.server.trusted_proxies)
        self._trusts_proxies = bool(self.client_ip.networks)
        self._views: dict[str, tuple[ApiKey, dict[str, Any]]] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            await self._http(scope, receive, send)
        elif kind == "lifespan" and self.owns_runtime:
            await self._lifespan(scope, receive, send)
        else:
            await self.app(scope, receive, send)

    # --- lifespan -----------------------------------------------------------------------

    async def _lifespan(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Open our resources before the app's startup, close them after its shutdown."""
        first: Message | None = await receive()
        if first is not None and first["type"] == "lifespan.startup":
            try:
                await self.runtime.start()
            except Exception as exc:
                # Like Starlette's own lifespan: report the failure, then raise.
                log.error("gateway middleware failed to start: %s", exc)
                await send({"type": "lifespan.startup.failed", "message": f"gateway: {exc}"})
                raise

        async def receive_() -> Message:
            nonlocal first
            if first is not None:
                message, first = first, None
                return message
            return await receive()

        async def send_(message: Message) -> None:
            if message["type"] in (
                "lifespan.startup.failed",
                "lifespan.shutdown.complete",
                "lifespan.shutdown.failed",
            ):
                await self.runtime.stop()  # flushes buffered usage
            await send(message)

        await self.app(scope, receive_, send_)

    # --- one request --------------------------------------------------------------------

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = time.perf_counter()
        runtime = self.runtime
        method: str = scope["method"]
        path: str = scope["path"]

        # One pass over the headers for everything the pipeline reads.
        key_headers = self.key_headers
        site_header = self.site_header
        presented: list[tuple[bytes, bytes]] | None = None
        request_id_raw: bytes | None = None
        site_values: list[bytes] | None = None
        forwarded: list[bytes] | None = None
        for name, value in scope["headers"]:
            if name in key_headers:
                if presented is None:
                    presented = [(name, value)]
                else:
                    presented.append((name, value))
            elif name == _REQUEST_ID:
                request_id_raw = value
            elif name == site_header:
                if site_values is None:
                    site_values = [value]
                else:
                    site_values.append(value)
            elif name == _FORWARDED_FOR and self._trusts_proxies:
                if forwarded is None:
                    forwarded = [value]
                else:
                    forwarded.append(value)

        request_id = accept_request_id(request_id_raw)
        if self._trusts_proxies:
            client_ip = self.client_ip.resolve(scope.get("client"), forwarded)
        else:
            client = scope.get("client")
            client_ip = client[0] if client else "unknown"
        scope["gateway.request_id"] = request_id
        scope["gateway.client_ip"] = client_ip

        key = None
        site: str | None = None
        extra: list[tuple[bytes, bytes]] = [(_REQUEST_ID, request_id.encode())]
        status = 500
        outcome = "internal_error"
        try:
            if not runtime.started:
                await self._open_lazily()
            match_path = normalize_path(path)
            rule = self.routes.match(match_path)
            if rule is not None and rule.public:
                scope["gateway.key"] = None
            else:
                runtime.throttle.check(client_ip)  # type: ignore[union-attr]
                value = extract_key(presented, key_headers) if presented else None
                if value is None:
                    raise GatewayError("MISSING_API_KEY")
                try:
                    key = await runtime.verifier.verify(value)  # type: ignore[union-attr]
                except GatewayError as exc:
                    if exc.code in FAILED_ATTEMPT_CODES:
                        runtime.throttle.failed(client_ip)  # type: ignore[union-attr]
                    raise
                del value
                check_scope(key, required_rank(method, rule))
                site = self.sites.requested(site_values, match_path)
                check_site(key, site)
                extra += await runtime.limiter.check(key.id, key.rate_limit)  # type: ignore[union-attr]
                scope["gateway.key"] = self._key_view(key)
            status, outcome = await self._call_app(scope, receive, send, extra)
        except GatewayError as exc:
            status, outcome = exc.status, exc.code.lower()
            await self._send_error(send, exc, request_id, extra)
        except _AppFailed:
            status, outcome = 500, "internal_error"
        except Exception:
            log.exception("gateway error on request %s", request_id)
            status, outcome = 500, "internal_error"
            await self._send_error(send, GatewayError("INTERNAL_ERROR"), request_id, extra)
        finally:
            elapsed = time.perf_counter() - started
            metrics.TALLY.request(outcome, status, elapsed)
            if key is not None and runtime.usage is not None:
                runtime.usage.record(key.id, method, path, status, elapsed * 1000, site)
            if logs.access_enabled():
                logs.log_access(
                    request_id,
                    key.id if key is not None else None,
                    outcome,
                    status,
                    elapsed * 1000,
                    method,
                    path,
                    client_ip,
                )

    def _key_view(self, key: ApiKey) -> dict[str, Any]:
        """`scope["gateway.key"]`: a fresh dict per request, built once per key record."""
        cached = self._views.get(key.id)
        if cached is None or cached[0] is not key:
            view = {
                "id": key.id,
                "name": key.name,
                "scope": key.scope.value,
                "sites": list(key.sites),
            }
            if len(self._views) >= 10_000:
                self._views.clear()
            cached = self._views[key.id] = (key, view)
        view = dict(cached[1])
        view["sites"] = list(view["sites"])  # the app may change its copy
        return view

    async def _call_app(
        self, scope: Scope, receive: Receive, send: Send, extra: list[tuple[bytes, bytes]]
    ) -> tuple[int, str]:
        """Run the wrapped app, adding our headers to its response; (status, outcome)."""
        state = [500, False]  # status, response started

        async def send_(message: Message) -> None:
            if message["type"] == "http.response.start":
                state[0] = message["status"]
                state[1] = True
                message["headers"] = [*message.get("headers", ()), *extra]
            await send(message)

        try:
            await self.app(scope, receive, send_)
        except Exception:
            log.exception(
                "unhandled error in the wrapped app (request %s)", scope.get("gateway.request_id")
            )
            if state[1]:
                raise _AppFailed from None
            await self._send_error(
                send, GatewayError("INTERNAL_ERROR"), scope["gateway.request_id"], extra
            )
            raise _AppFailed from None
        return state[0], _ALLOWED

    async def _open_lazily(self) -> None:
        try:
            await self.runtime.start()
        except Exception as exc:
            log.error("gateway middleware could not open its resources: %s", exc)
            raise GatewayError(
                "SERVICE_UNAVAILABLE", "The gateway's key store is unavailable."
            ) from None

    @staticmethod
    async def _send_error(
        send: Send, error: GatewayError, request_id: str, extra: list[tuple[bytes, bytes]]
    ) -> None:
        body = error_body(error, request_id)
        headers = [_JSON, (b"content-length", str(len(body)).encode()), *extra]
        for name, value in error.headers.items():
            pair = (name.lower().encode("latin-1"), value.encode("latin-1"))
            if pair not in headers:
                headers.append(pair)
        await send({"type": "http.response.start", "status": error.status, "headers": headers})
        await send({"type": "http.response.body", "body": body})


class _AppFailed(Exception):
    """The wrapped app raised; already logged (and answered, if nothing was sent)."""
