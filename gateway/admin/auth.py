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
from collections.abc import Iterable
from typing import TYPE_CHECKING

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway import metrics
from gateway.errors import GatewayError, accept_request_id, error_body
from gateway.keys.model import ApiKey
from gateway.keys.model import Scope as KeyScope
from gateway.pipeline.clientip import ClientIP
from gateway.pipeline.identify import extract_key, key_header_names
from gateway.store.base import StoreError

if TYPE_CHECKING:
    from gateway.runtime import Runtime

log = logging.getLogger("gateway.admin")

# Keys of the ASGI scope where the guard leaves what it learned for the handlers.
REQUEST_ID = "gateway.request_id"
ADMIN_KEY = "gateway.admin_key"
VALID_KEY = "gateway.key_presented"  # a valid key, admin or not (for usage records)

PROTECTED_PREFIX = "/v1"
# A presented value that was guessed wrong (not a missing key, not a store outage).
FAILED_ATTEMPT_CODES = frozenset({"INVALID_API_KEY", "KEY_REVOKED", "KEY_EXPIRED"})


def is_protected(path: str) -> bool:
    """Everything under /v1 needs an admin key; health, metrics, the OpenAPI document
    and the dashboard's static files are public (the dashboard signs in with a key)."""
    return path == PROTECTED_PREFIX or path.startswith(PROTECTED_PREFIX + "/")


def request_id_of(scope: Scope) -> str:
    return scope.get(REQUEST_ID) or accept_request_id(None)


def admin_key_of(scope: Scope) -> ApiKey:
    return scope[ADMIN_KEY]


async def send_error(send: Send, error: GatewayError, request_id: str) -> None:
    body = error_body(error, request_id)
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        (b"cache-control", b"no-store"),
    ]
    for name, value in error.headers.items():
        headers.append((name.lower().encode("latin-1"), value.encode("latin-1")))
    await send({"type": "http.response.start", "status": error.status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class AdminGuard:
    """Request id, admin authentication and the last-resort error envelope."""

    def __init__(
        self,
        app: ASGIApp,
        runtime: Runtime,
        key_headers: Iterable[str],
        trusted_proxies: Iterable[str] = (),
    ) -> None:
        self.app = app
        self.runtime = runtime
        self.key_headers = key_header_names(key_headers)
        self.client_ip = ClientIP(trusted_proxies)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = accept_request_id(_header(scope, b"x-request-id"))
        scope[REQUEST_ID] = request_id
        id_header = (b"x-request-id", request_id.encode("ascii"))
        started = False
        status = 500
        began = time.perf_counter()

        async def send_with_id(message: Message) -> None:
            nonlocal started, status
            if message["type"] == "http.response.start":
                started = True
                status = message["status"]
                headers = [h for h in message.get("headers", []) if h[0].lower() != id_header[0]]
                headers.append(id_header)
                message = {**message, "headers": headers}
            await send(message)

        try:
            if is_protected(scope["path"]):
                await self.authenticate(scope)
            await self.app(scope, receive, send_with_id)
        except GatewayError as error:
            if started:
                log.warning("error after the response started: %s", error.code)
                return
            await send_error(send_with_id, error, request_id)
        except StoreError:
            # The store failed mid-request (e.g. Redis went away): a backend outage.
            log.warning("the key store failed during an admin request", exc_info=True)
            metrics.BACKEND_ERRORS.labels("store").inc()
            if not started:
                error = GatewayError("SERVICE_UNAVAILABLE", "The key store is unavailable.")
                await send_error(send_with_id, error, request_id)
        except Exception:
            # A bug: log it with the request id, answer without the trace.
            log.exception("unexpected error in an admin request", extra={"requestId": request_id})
            if not started:
                await send_error(send_with_id, GatewayError("INTERNAL_ERROR"), request_id)
        finally:
            self.record_usage(scope, status, began)

    def record_usage(self, scope: Scope, status: int, began: float) -> None:
        """A usage record for a request that carried a valid key, whatever its outcome
        (SPEC §6), so an admin key's lastUsedAt and history show the admin API too."""
        key: ApiKey | None = scope.get(VALID_KEY)
        usage = self.runtime.usage
        if key is not None and usage is not None:
            elapsed_ms = (time.perf_counter() - began) * 1000
            usage.record(key.id, scope["method"], scope["path"], status, elapsed_ms, None)

    async def authenticate(self, scope: Scope) -> ApiKey:
        """The admin key of the request, or GatewayError 400/401/403/503 (SPEC §2, §3, §9)."""
        verifier = self.runtime.verifier
        if verifier is None:
            raise GatewayError("SERVICE_UNAVAILABLE", "The gateway is not running.")
        # The same failed-attempt throttle as the proxy (SPEC §4), shared with it.
        throttle = self.runtime.throttle
        ip = self.client_ip.resolve(scope.get("client"), _headers(scope, b"x-forwarded-for"))
        if throttle is not None:
            throttle.check(ip)
        value = extract_key(scope["headers"], self.key_headers)
        if value is None:
            raise GatewayError("MISSING_API_KEY")
        try:
            key = await verifier.verify(value)
        except GatewayError as error:
            if throttle is not None and error.code in FAILED_ATTEMPT_CODES:
                throttle.failed(ip)
            raise
        scope[VALID_KEY] = key
        if key.scope is not KeyScope.ADMIN:
            raise GatewayError(
                "INSUFFICIENT_SCOPE",
                "The admin API needs an API key with the admin access level.",
                {"required": KeyScope.ADMIN.value, "granted": key.scope.value},
            )
        scope[ADMIN_KEY] = key
        return key


def _headers(scope: Scope, name: bytes) -> list[bytes] | None:
    values = [value for key, value in scope["headers"] if key == name]
    return values or None


def _header(scope: Scope, name: bytes) -> bytes | None:
    for key, value in scope["headers"]:
        if key == name:
            return value
    return None
