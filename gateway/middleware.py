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
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from gateway.errors import GatewayError
from gateway.pipeline.core import Decision, DecisionCore, RequestHead, send_response
from gateway.runtime import Runtime
from gateway.settings import Settings, load_settings

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

log = logging.getLogger("gateway")


class GatewayMiddleware:
    """Authenticate, authorize, rate-limit and record every HTTP request to `app`.

    `settings` default to `load_settings()` (the environment / $GATEWAY_CONFIG). Pass
    `core` (a `DecisionCore`) or `runtime` to share resources opened elsewhere (the proxy
    server does); the middleware then never stops them.
    """

    def __init__(
        self,
        app: ASGIApp,
        settings: Settings | None = None,
        *,
        runtime: Runtime | None = None,
        core: DecisionCore | None = None,
    ) -> None:
        if core is None:
            if settings is None:
                settings = runtime.settings if runtime is not None else load_settings()
            core = DecisionCore.for_listener(settings, "proxy", runtime=runtime)
        self.app = app
        self.core = core
        self.settings = core.settings
        self.runtime = core.runtime
        self.owns_runtime = core.owns_runtime

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
                await self.core.start()
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
                await self.core.stop()  # flushes buffered usage
            await send(message)

        await self.app(scope, receive_, send_)

    # --- one request --------------------------------------------------------------------

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        core = self.core
        decision = await core.decide(
            RequestHead(scope["method"], scope["path"], scope["headers"], scope.get("client"))
        )
        scope["gateway.request_id"] = decision.request_id
        scope["gateway.client_ip"] = decision.client_ip
        scope["gateway.decision"] = decision  # the proxy's forwarding reads upstream_headers
        status = decision.status
        outcome: str | None = None
        try:
            if decision.allowed:
                scope["gateway.key"] = decision.view()
                status = 500
                status = await self._call_app(scope, receive, send, decision)
            else:
                await send_response(send, core.error_response(decision))
        except _AppFailed:
            status, outcome = 500, "internal_error"
        finally:
            core.finish(decision, status, outcome)

    async def _call_app(
        self, scope: Scope, receive: Receive, send: Send, decision: Decision
    ) -> int:
        """Run the wrapped app, adding our headers to its response; the status."""
        extra = decision.client_headers
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
            log.exception("unhandled error in the wrapped app (request %s)", decision.request_id)
            if not state[1]:
                error = GatewayError("INTERNAL_ERROR")
                await send_response(send, self.core.error_response(decision, error=error))
            raise _AppFailed from None
        return state[0]


class _AppFailed(Exception):
    """The wrapped app raised; already logged (and answered, if nothing was sent)."""
