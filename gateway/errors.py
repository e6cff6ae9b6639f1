"""Errors are values with a code: one type, one envelope renderer, request ids (SPEC §5)."""

from __future__ import annotations

import itertools
import json
import re
import secrets
from typing import Any

from gateway.keys.format import contains_key

# Default human messages per code; a raise site may pass a more specific one.
MESSAGES: dict[str, str] = {
    "INVALID_REQUEST": "The request is not valid.",
    "MISSING_API_KEY": "No API key was provided.",
    "INVALID_API_KEY": "The API key is not valid.",
    "KEY_REVOKED": "This API key has been revoked.",
    "KEY_EXPIRED": "This API key has expired.",
    "INSUFFICIENT_SCOPE": "This API key does not have the required access level.",
    "SITE_NOT_ALLOWED": "This API key is not allowed to access this site.",
    "NOT_FOUND": "Not found.",
    "KEY_NOT_FOUND": "No API key with this id exists.",
    "METHOD_NOT_ALLOWED": "Method not allowed.",
    "KEY_NOT_REVOKED": "Only a revoked key can be deleted. Revoke the key first.",
    "PAYLOAD_TOO_LARGE": "The request body is too large.",
    "RATE_LIMITED": "Rate limit exceeded.",
    "TOO_MANY_FAILED_ATTEMPTS": "Too many failed authentication attempts.",
    "UPSTREAM_UNAVAILABLE": "The upstream service is unavailable.",
    "SERVICE_UNAVAILABLE": "A backend service is unavailable.",
    "UPSTREAM_TIMEOUT": "The upstream service did not answer in time.",
    "INTERNAL_ERROR": "An internal error occurred.",
}

STATUS: dict[str, int] = {
    "INVALID_REQUEST": 400,
    "MISSING_API_KEY": 401,
    "INVALID_API_KEY": 401,
    "KEY_REVOKED": 401,
    "KEY_EXPIRED": 401,
    "INSUFFICIENT_SCOPE": 403,
    "SITE_NOT_ALLOWED": 403,
    "NOT_FOUND": 404,
    "KEY_NOT_FOUND": 404,
    "METHOD_NOT_ALLOWED": 405,
    "KEY_NOT_REVOKED": 409,
    "PAYLOAD_TOO_LARGE": 413,
    "RATE_LIMITED": 429,
    "TOO_MANY_FAILED_ATTEMPTS": 429,
    "UPSTREAM_UNAVAILABLE": 502,
    "SERVICE_UNAVAILABLE": 503,
    "UPSTREAM_TIMEOUT": 504,
    "INTERNAL_ERROR": 500,
}


class GatewayError(Exception):
    """An error the gateway answers itself, with an HTTP status and a stable code.

    `headers` carries extra response headers (e.g. Retry-After, WWW-Authenticate).
    """

    def __init__(
        self,
        code: str,
        message: str | None = None,
        details: dict[str, Any] | None = None,
        *,
        status: int | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        self.code = code
        self.status = status if status is not None else STATUS[code]
        self.message = message or MESSAGES.get(code, code)
        self.details = details or {}
        self.headers = dict(headers or {})
        if self.status == 401:
            self.headers.setdefault("WWW-Authenticate", 'Bearer realm="gateway"')
        super().__init__(f"{code}: {self.message}")

    def envelope(self, request_id: str) -> dict[str, Any]:
        return error_envelope(self.code, self.message, self.details, request_id)


def invalid_request(field: str, reason: str, message: str | None = None) -> GatewayError:
    """400 INVALID_REQUEST naming the field (SPEC §5 details: field, reason)."""
    return GatewayError(
        "INVALID_REQUEST",
        message or f"Invalid value for '{field}': {reason}",
        {"field": field, "reason": reason},
    )


def error_envelope(
    code: str, message: str, details: dict[str, Any], request_id: str
) -> dict[str, Any]:
    return {
        "error": {
            "code": code,
            "message": message,
            "details": details,
            "requestId": request_id,
        }
    }


def payload_too_large(limit: int) -> GatewayError:
    """413 for a body over `limit` bytes; every listener's carries the limit (SPEC §5)."""
    return GatewayError(
        "PAYLOAD_TOO_LARGE",
        f"The request body is larger than {limit} bytes.",
        {"limit": limit},
    )


def error_body(error: GatewayError, request_id: str) -> bytes:
    """The envelope as compact JSON. Errors without details (every 401, most denials)
    are rendered once per code and message; errors whose details are plain strings and
    integers (a 429's limit and retryAfter) once per code, message and details; only the
    request id is put in per request."""
    if '"' in request_id or "\\" in request_id:
        return json.dumps(error.envelope(request_id), separators=(",", ":")).encode()
    details = error.details
    if not details:
        cache, key = _BODIES, (error.code, error.message)
    else:
        key = _details_key(error, details)
        if key is None:
            return json.dumps(error.envelope(request_id), separators=(",", ":")).encode()
        cache = _DETAILED_BODIES
    parts = cache.get(key)
    if parts is None:
        text = json.dumps(error.envelope("\0"), separators=(",", ":"))
        head, marker, tail = text.partition('"\\u0000"')
        if not marker:  # cannot happen; render plainly rather than guess
            return json.dumps(error.envelope(request_id), separators=(",", ":")).encode()
        parts = (head.encode() + b'"', b'"' + tail.encode())
        if cache is _BODIES:
            if len(_BODIES) < 256:  # messages are few; never let odd ones grow this
                _BODIES[key] = parts
        else:
            if len(_DETAILED_BODIES) >= 1024:  # a 429's retryAfter changes every second
                _DETAILED_BODIES.clear()
            _DETAILED_BODIES[key] = parts
    return parts[0] + request_id.encode() + parts[1]


def _details_key(error: GatewayError, details: dict[str, Any]) -> tuple | None:
    """A cache key for an envelope with these details, or None when they are not all
    plain str/int values (exact types: 1, 1.0 and True are equal keys, not equal JSON)."""
    items: list[object] = [error.code, error.message]
    for name, value in details.items():
        kind = type(value)
        if kind is not str and kind is not int:
            return None
        items += (name, kind is int, value)
    return tuple(items)


# (code, message) -> the envelope's bytes before and after the request id.
_BODIES: dict[tuple[str, str], tuple[bytes, bytes]] = {}
# The same for envelopes with plain details (see `_details_key`).
_DETAILED_BODIES: dict[tuple, tuple[bytes, bytes]] = {}


# Request ids: a random per-process prefix and a counter — unique, and cheap to make
# (they need not be secret; os.urandom per request costs a system call).
_ID_PREFIX = secrets.token_hex(8)
_ID_COUNTER = itertools.count(int.from_bytes(secrets.token_bytes(4), "big"))
_VISIBLE_ASCII = re.compile(r"[\x21-\x7e]{1,128}")


def new_request_id() -> str:
    return f"{_ID_PREFIX}{next(_ID_COUNTER) & 0xFFFFFFFFFFFFFFFF:016x}"


def accept_request_id(value: str | bytes | None) -> str:
    """Keep a client's X-Request-ID if it is 1–128 visible ASCII characters and holds no
    key-shaped value (SPEC §14), else make one."""
    if value:
        if isinstance(value, bytes):
            value = value.decode("latin-1")
        # A key value sent as a request id would be logged and echoed: never kept.
        if _VISIBLE_ASCII.fullmatch(value) and not contains_key(value):
            return value
    return new_request_id()
