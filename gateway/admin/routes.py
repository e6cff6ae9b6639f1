"""The route table of the admin listener (SPEC §9): one entry per operation, naming its
method, path, summary, request model and response models.

The app serves exactly these operations (`serve` refuses a handler the table does not
name, or a table entry without a handler) and `gateway.admin.openapi` makes the
document's `paths` from the same entries, so no route exists undocumented.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel
from starlette.requests import Request
from starlette.responses import Response

from gateway.keys.model import KeyCreate, KeyEdit, KeyRotate
from gateway.keys.service import MAX_PAGE
from gateway.keys.shapes import (
    KEY_ID,
    AuditListResponse,
    Health,
    KeyDetailsResponse,
    KeyListResponse,
    KeyResponse,
    KeySecretResponse,
    Ready,
    UsageListResponse,
)

Handler = Callable[[Request], Awaitable[Response]]
CURSOR = r"^[0-9]{1,18}$"
TEXT = "text/plain"  # a response documented as text, not a model (the metrics)


@dataclass(frozen=True)
class Operation:
    method: str
    path: str  # the full path on the admin listener, "{id}" for the key id
    operation_id: str
    summary: str
    # The success answer: status, description, and its model (None: no body; TEXT).
    ok: tuple[int, str, type[BaseModel] | str | None]
    errors: tuple[int, ...] = ()  # besides the authentication errors (unless public)
    request: type[BaseModel] | None = None
    request_required: bool = True
    query: tuple[dict[str, Any], ...] = field(default=())
    public: bool = False
    tag: str = "keys"
    links: bool = False  # the answer names a key: link to what can be done with it


def _query(name: str, schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {
        "name": name,
        "in": "query",
        "required": False,
        "schema": schema,
        "description": description,
    }


def _cursor(name: str) -> dict[str, Any]:
    return _query(name, {"type": "string", "pattern": CURSOR}, "The previous page's `nextCursor`.")


LIMIT = _query(
    "limit",
    {"type": "integer", "minimum": 1, "maximum": MAX_PAGE, "default": 50},
    f"Page size, 1–{MAX_PAGE}.",
)
STATUS_QUERY = _query(
    "status",
    {"type": "string", "enum": ["active", "revoked", "all"], "default": "all"},
    "Which keys to list.",
)
KEY_ID_QUERY = _query("keyId", {"type": "string", "pattern": KEY_ID}, "Only this key's.")

ROUTES: tuple[Operation, ...] = (
    Operation(
        "GET", "/v1/keys", "listKeys", "List keys, newest first",
        (200, "A page of keys.", KeyListResponse),
        query=(STATUS_QUERY, LIMIT, _cursor("cursor")),
    ),
    Operation(
        "POST", "/v1/keys", "createKey",
        "Create a key; the response carries its value, shown once",
        (201, "The new key and its value.", KeySecretResponse),
        (413,), request=KeyCreate, links=True,
    ),
    Operation(
        "GET", "/v1/keys/{id}", "getKey",
        "A key with its usage: totals, 30 daily counts, the last 20 requests",
        (200, "The key and its usage.", KeyDetailsResponse), (404,),
    ),
    Operation(
        "PATCH", "/v1/keys/{id}", "editKey",
        "Change name, scope, sites, rateLimit or expiresAt; the value stays",
        (200, "The key as it is now.", KeyResponse), (404, 413), request=KeyEdit,
    ),
    Operation(
        "DELETE", "/v1/keys/{id}", "deleteKey",
        "Delete a revoked key for good (its audit events stay)",
        (204, "Deleted.", None), (404, 409, 413),
    ),
    Operation(
        "GET", "/v1/keys/{id}/usage", "listKeyUsage",
        "Recent requests made with a key, newest first",
        (200, "A page of usage records.", UsageListResponse), (404,),
        query=(LIMIT, _cursor("before")),
    ),
    Operation(
        "POST", "/v1/keys/{id}/rotate", "rotateKey",
        "A new value for the key; the old one stops now or after the grace period",
        (200, "The key and its new value.", KeySecretResponse), (404, 409, 413),
        request=KeyRotate, request_required=False, links=True,
    ),
    Operation(
        "POST", "/v1/keys/{id}/revoke", "revokeKey", "Revoke a key (idempotent)",
        (200, "The revoked key.", KeyResponse), (404, 413), links=True,
    ),
    Operation(
        "GET", "/v1/audit", "listAudit", "Audit events, newest first",
        (200, "A page of audit events.", AuditListResponse),
        query=(KEY_ID_QUERY, LIMIT, _cursor("cursor")), tag="audit",
    ),
    Operation(
        "GET", "/healthz", "health", "Liveness", (200, "Alive.", Health),
        public=True, tag="ops",
    ),
    Operation(
        "GET", "/readyz", "ready", "Readiness: the key store answers",
        (200, "Ready.", Ready), (503,), public=True, tag="ops",
    ),
    Operation(
        "GET", "/metrics", "metrics", "Prometheus metrics", (200, "Metrics.", TEXT),
        public=True, tag="ops",
    ),
)  # fmt: skip


def operations_under(prefix: str) -> list[Operation]:
    return [op for op in ROUTES if op.path.startswith(prefix + "/")]


def bind(
    operations: list[Operation], handlers: Mapping[str, Handler]
) -> dict[str, dict[str, Handler]]:
    """Path → method → handler for `operations`, with a handler for each and nothing else:
    a handler the table does not name would be a route without documentation."""
    unknown = set(handlers) - {op.operation_id for op in operations}
    if unknown:
        raise LookupError(f"handlers without a route table entry: {sorted(unknown)}")
    paths: dict[str, dict[str, Handler]] = {}
    for op in operations:
        paths.setdefault(op.path, {})[op.method] = handlers[op.operation_id]
    return paths
