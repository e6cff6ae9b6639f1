"""The admin listener's front door, as pure ASGI (SPEC §5, §9).

Every HTTP request gets a request id (a valid client `X-Request-ID` is kept) that comes
back in the `X-Request-ID` header of every response. Every path under `/v1` needs an
`admin`-scope key, checked before routing, so an unauthenticated caller learns nothing
about which paths or methods exist. Any error becomes the JSON envelope; an unexpected
exception becomes 500 `INTERNAL_ERROR` without a trace in the body.
"""

from __future__ import annotations

import logging
import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway import logs, metrics
from gateway.errors import GatewayError, accept_request_id
from gateway.keys.model import ApiKey
from gateway.pipeline.core import DecisionCore, RequestHead, render_error, send_response
from gateway.store.base import StoreError

log = logging.getLogger("gateway.admin")

# Keys of the ASGI scope where the guard leaves what it learned for the handlers.
REQUEST_ID = "gateway.request_id"
ADMIN_KEY = "gateway.admin_key"
VALID_KEY = "gateway.key_presented"  # a valid key, admin or not (for usage records)

PROTECTED_PREFIX = "/v1"


def is_protected(path: str) -> bool:
    """Everything under /v1 needs an admin key; health, metrics, the OpenAPI document
    and the dashboard's static files are public (the dashboard signs in with a key)."""
    return path == PROTECTED_PREFIX or path.startswith(PROTECTED_PREFIX + "/")


def request_id_of(scope: Scope) -> str:
    return scope.get(REQUEST_ID) or accept_request_id(None)


def admin_key_of(scope: Scope) -> ApiKey:
    return scope[ADMIN_KEY]


async def send_error(send: Send, error: GatewayError, request_id: str) -> None:
    await send_response(send, render_error(error, request_id))


class AdminGuard:
    """Request id, admin authentication (the decision core of the "admin" listener, with
    its own failed-attempt counter) and the last-resort error envelope."""

    def __init__(self, app: ASGIApp, core: DecisionCore) -> None:
        self.app = app
        self.core = core

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope["path"]
        head = RequestHead(scope["method"], path, scope["headers"], scope.get("client"))
        decision = await self.core.decide(head, public=not is_protected(path))
        request_id = decision.request_id
        scope[REQUEST_ID] = request_id
        id_header = (b"x-request-id", request_id.encode("ascii"))
        started = False
        status = 500
        began = decision.started
        if decision.key is not None:
            scope[VALID_KEY] = decision.key

        async def send_with_id(message: Message) -> None:
            nonlocal started, status
            if message["type"] == "http.response.start":
                started = True
                status = message["status"]
                headers = [h for h in message.get("headers", []) if h[0].lower() != id_header[0]]
                headers.append(id_header)
                message = {**message, "headers": headers}
            await send(message)

        outcome: str | None = None
        try:
            if decision.error is not None:
                raise decision.error
            if decision.key is not None:
                scope[ADMIN_KEY] = decision.key
            await self.app(scope, receive, send_with_id)
        except GatewayError as error:
            outcome = error.code.lower()
            if started:
                log.warning("error after the response started: %s", error.code)
                return
            await send_error(send_with_id, error, request_id)
        except StoreError:
            # The store failed mid-request (e.g. Redis went away): a backend outage.
            log.warning("the key store failed during an admin request", exc_info=True)
            metrics.BACKEND_ERRORS.labels("store").inc()
            outcome = "service_unavailable"
            if not started:
                error = GatewayError("SERVICE_UNAVAILABLE", "The key store is unavailable.")
                await send_error(send_with_id, error, request_id)
        except Exception:
            # A bug: log it with the request id, answer without the trace.
            log.exception("unexpected error in an admin request", extra={"requestId": request_id})
            outcome = "internal_error"
            if not started:
                await send_error(send_with_id, GatewayError("INTERNAL_ERROR"), request_id)
        finally:
            if outcome is None:  # answered by a handler (its own errors are envelopes too)
                outcome = "allowed" if status < 400 else f"status_{status}"
            self.record(scope, decision.client_ip, request_id, status, outcome, began)

    def record(
        self, scope: Scope, client_ip: str, request_id: str, status: int, outcome: str, began: float
    ) -> None:
        """A usage record for a request that carried a valid key, whatever its outcome
        (SPEC §6), so an admin key's lastUsedAt and history show the admin API too; and
        one access line, the same shape as the proxy's (SPEC §14)."""
        key: ApiKey | None = scope.get(VALID_KEY)
        elapsed_ms = (time.perf_counter() - began) * 1000
        resources = self.core.runtime.bundle
        if key is not None and resources is not None:
            resources.usage.record(key.id, scope["method"], scope["path"], status, elapsed_ms, None)
        if logs.access_enabled():
            logs.log_access(
                request_id,
                key.id if key is not None else None,
                outcome,
                status,
                elapsed_ms,
                scope["method"],
                scope["path"],
                client_ip,
            )
