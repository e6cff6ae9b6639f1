"""The OpenAPI 3.1 document of the admin API, generated from the models (SPEC §9).

Request bodies are described by the very models that validate them (`KeyCreate`,
`KeyEdit`, `KeyRotate`); response bodies by the very models that render them
(`gateway.keys.shapes`, used by `gateway.keys.render`), so the document cannot drift
from what the API sends.
"""

from __future__ import annotations

import re
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from gateway.admin.routes import ROUTES, TEXT, Operation
from gateway.keys.model import KeyEdit
from gateway.keys.shapes import (
    KEY_ID,
    AuditListResponse,
    ErrorResponse,
    Health,
    KeyDetailsResponse,
    KeyListResponse,
    KeyResponse,
    KeySecretResponse,
    Ready,
    UsageListResponse,
)
from gateway.settings import Settings

REF = "#/components/schemas/{model}"


# Re-exported: the response models, for tests and embedders that validate bodies.
__all__ = [
    "AuditListResponse",
    "ErrorResponse",
    "Health",
    "KeyDetailsResponse",
    "KeyListResponse",
    "KeyResponse",
    "KeySecretResponse",
    "Ready",
    "UsageListResponse",
    "openapi_document",
]

# The models of the route table's requests and answers, and the error envelope every
# route may answer with: the document's component schemas.
REQUEST_MODELS: list[type[BaseModel]] = list(
    dict.fromkeys(op.request for op in ROUTES if op.request is not None)
)
RESPONSE_MODELS: list[type[BaseModel]] = list(
    dict.fromkeys([*(op.ok[2] for op in ROUTES if isinstance(op.ok[2], type)), ErrorResponse])
)

# Rules the request models enforce in validators, stated for clients (the schema
# generator cannot see inside a validator). The validators stay the authority.
KEY_EDIT_NOT_NULL = ("name", "scope", "sites")
_FIELD_HINTS: dict[str, dict[str, Any]] = {
    "name": {"minLength": 1, "maxLength": 100},
    "sites": {"minItems": 1, "items": {"type": "string", "pattern": r"^(\*|[A-Za-z0-9_-]{1,64})$"}},
}


def component_schemas() -> dict[str, Any]:
    pairs = [(m, "validation") for m in REQUEST_MODELS]
    pairs += [(m, "serialization") for m in RESPONSE_MODELS]
    _, top = models_json_schema(pairs, ref_template=REF, by_alias=True)  # type: ignore[arg-type]
    schemas: dict[str, Any] = top["$defs"]
    # KeyEdit: absent means unchanged; null is refused for the fields that have no
    # "unset" value (KeyService.edit), so the document does not offer null for them.
    edit = schemas[KeyEdit.__name__]["properties"]
    for name in KEY_EDIT_NOT_NULL:
        prop = edit[name]
        (kept,) = [branch for branch in prop.pop("anyOf") if branch.get("type") != "null"]
        prop.pop("default", None)
        prop.update(kept)
    for model in REQUEST_MODELS:
        for name, prop in schemas[model.__name__]["properties"].items():
            hint = _FIELD_HINTS.get(name)
            if hint is None:
                continue
            # Optional fields come as anyOf [type, null]: add the rule to the non-null branch.
            target = next((s for s in prop.get("anyOf", []) if s.get("type") != "null"), prop)
            target.update(hint)
    return schemas


# --- paths (from the route table) -------------------------------------------------------

_ERRORS = {
    "400": "Invalid request (`INVALID_REQUEST`, details name the `field`).",
    "401": "No key (`MISSING_API_KEY`), or an invalid, revoked or expired key "
    "(`INVALID_API_KEY`, `KEY_REVOKED`, `KEY_EXPIRED`).",
    "403": "The key is not an admin key (`INSUFFICIENT_SCOPE`, details `required`, `granted`).",
    "404": "No such key (`KEY_NOT_FOUND`).",
    "409": "Conflict with the key's status (`KEY_REVOKED`, `KEY_NOT_REVOKED`).",
    "413": "The body is larger than 64 KiB (`PAYLOAD_TOO_LARGE`).",
    "429": "Too many failed key attempts from this client IP (`TOO_MANY_FAILED_ATTEMPTS`).",
    "500": "A bug (`INTERNAL_ERROR`); never a stack trace.",
    "503": "The key store is unreachable (`SERVICE_UNAVAILABLE`).",
}
_AUTH_ERRORS = (400, 401, 403, 429, 500, 503)
_KEY_ID = {"$ref": "#/components/parameters/KeyId"}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": REF.format(model=name)}


def _json(schema: str) -> dict[str, Any]:
    return {"application/json": {"schema": _ref(schema)}}


def _ok(description: str, model: type[BaseModel] | str | None) -> dict[str, Any]:
    response: dict[str, Any] = {
        "description": description,
        "headers": {"X-Request-ID": {"$ref": "#/components/headers/X-Request-ID"}},
    }
    if model == TEXT:
        response["content"] = {TEXT: {"schema": {"type": "string"}}}
    elif isinstance(model, type):
        response["content"] = _json(model.__name__)
    return response


def _operation(op: Operation) -> dict[str, Any]:
    status, description, model = op.ok
    operation: dict[str, Any] = {
        "operationId": op.operation_id,
        "summary": op.summary,
        "tags": [op.tag],
        "responses": {str(status): _ok(description, model)},
    }
    errors = op.errors if op.public else (*op.errors, *_AUTH_ERRORS)
    for code in sorted(set(errors)):
        operation["responses"][str(code)] = {"$ref": f"#/components/responses/Error{code}"}
    if op.query:
        operation["parameters"] = list(op.query)
    if op.request is not None:
        operation["requestBody"] = {
            "required": op.request_required,
            "content": _json(op.request.__name__),
        }
    if op.public:
        operation["security"] = []
    if op.links:
        operation["responses"][str(status)]["links"] = _links()
    return operation


def _paths() -> dict[str, Any]:
    """The document's paths: every operation of the route table, nothing else."""
    paths: dict[str, Any] = {}
    for op in ROUTES:
        item = paths.setdefault(op.path, {})
        if "{id}" in op.path:
            item["parameters"] = [_KEY_ID]
        item[op.method.lower()] = _operation(op)
    return paths


# What a client can do next with the id a response names (OpenAPI links).
_KEY_OPERATIONS = ["getKey", "editKey", "deleteKey", "listKeyUsage", "rotateKey", "revokeKey"]


def _links() -> dict[str, Any]:
    key_id = "$response.body#/apiKey/id"
    links: dict[str, Any] = {
        name: {"operationId": name, "parameters": {"id": key_id}} for name in _KEY_OPERATIONS
    }
    links["listAudit"] = {"operationId": "listAudit", "parameters": {"keyId": key_id}}
    return links


def _security_schemes(settings: Settings) -> tuple[dict[str, Any], list[dict[str, list[str]]]]:
    schemes: dict[str, Any] = {}
    for header in settings.auth.headers:
        if header.lower() == "authorization":
            schemes["bearerAuth"] = {
                "type": "http",
                "scheme": "bearer",
                "description": "`Authorization: Bearer <admin key>`",
            }
        else:
            name = re.sub(r"[^A-Za-z0-9._-]", "_", header)
            schemes[name] = {"type": "apiKey", "in": "header", "name": header}
    return schemes, [{name: []} for name in schemes]


DESCRIPTION = """\
Manage the gateway's API keys. Every `/v1` route needs an API key with the `admin`
access level, in `Authorization: Bearer <key>` or `X-API-Key: <key>` (SPEC §2): no key
is 401, any other access level is 403 `INSUFFICIENT_SCOPE`, on every route and method.
Authentication comes first; then a method a path does not support is 405
`METHOD_NOT_ALLOWED` (with `Allow`), and an unknown path is 404 `NOT_FOUND`.
Every error is the envelope `{"error": {"code", "message", "details", "requestId"}}`,
and every response carries `X-Request-ID` (a client's valid one is kept).
Request bodies are JSON objects of at most 64 KiB; unknown fields are refused.
"""


def openapi_document(settings: Settings) -> dict[str, Any]:
    """The document for this gateway's settings (its key header names)."""
    schemes, security = _security_schemes(settings)
    responses = {
        f"Error{code}": {
            "description": text,
            "headers": {"X-Request-ID": {"$ref": "#/components/headers/X-Request-ID"}},
            "content": _json("ErrorResponse"),
        }
        for code, text in _ERRORS.items()
    }
    responses["Error401"]["headers"]["WWW-Authenticate"] = {
        "schema": {"type": "string"},
        "required": True,
        "description": 'Always `Bearer realm="gateway"`.',
    }
    responses["Error429"]["headers"]["Retry-After"] = {
        "schema": {"type": "integer", "minimum": 1},
        "required": True,
        "description": "Seconds until a retry can succeed.",
    }
    return {
        "openapi": "3.1.0",
        "info": {"title": "Gateway admin API", "version": "1", "description": DESCRIPTION},
        "security": security,
        "paths": _paths(),
        "components": {
            "schemas": component_schemas(),
            "responses": responses,
            "parameters": {
                "KeyId": {
                    "name": "id",
                    "in": "path",
                    "required": True,
                    "schema": {"type": "string", "pattern": KEY_ID},
                    "description": "The key's public id.",
                }
            },
            "headers": {
                "X-Request-ID": {
                    "schema": {"type": "string", "minLength": 1, "maxLength": 128},
                    "required": True,
                    "description": "The request id (the client's, if it sent a valid one).",
                }
            },
            "securitySchemes": schemes,
        },
    }
