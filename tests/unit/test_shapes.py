"""The response shapes are one source: a rendered body validates against the schema the
OpenAPI document publishes for it, and the app, the route table and the document name the
same routes."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import jsonschema
import pytest
from starlette.routing import Mount, Route

from gateway.admin.app import create_admin_app
from gateway.admin.openapi import openapi_document
from gateway.admin.routes import ROUTES, TEXT, bind
from gateway.errors import STATUS, GatewayError, error_body
from gateway.keys import render
from gateway.keys.model import AccessLevel, ApiKey, Status
from gateway.runtime import Runtime
from gateway.settings import load_settings
from gateway.store.base import AuditEvent, DailyUsage, Page, UsageRecord, UsageSummary

NOW = datetime(2026, 12, 2, 12, 0, 5, 123456, tzinfo=UTC)
ACTIVE = ApiKey(
    "key_abcdefghijklmnop", "ci é", AccessLevel.ADMIN, ("*",), Status.ACTIVE, "10/minute",
    "abcd", NOW, NOW, None, NOW + timedelta(days=1), None, NOW,
)  # fmt: skip
REVOKED = ApiKey(
    "key_abcdefghijklmnoq", "old", AccessLevel.READ, ("a", "b"), Status.REVOKED, None,
    "wxyz", NOW, NOW, NOW, None, NOW, None,
)  # fmt: skip
RECORDS = [
    UsageRecord("key_abcdefghijklmnop", NOW, "GET", "/a", 200, 1.23456789),
    UsageRecord("key_abcdefghijklmnop", NOW, "POST", "/b", 503, 3.0, "shop"),
]
SUMMARY = UsageSummary(2, [DailyUsage("2026-12-02", 2, 1)], RECORDS)
EVENTS = [
    AuditEvent(NOW, "edit", ACTIVE.id, "cli", None, {"name": ["a", "b"], "expiresAt": None}, 7),
    AuditEvent(NOW, "create", ACTIVE.id, REVOKED.id, "req-1", {}, None),
]

# (component schema, rendered body): every response model the API renders.
BODIES: list[tuple[str, dict[str, Any]]] = [
    ("KeyResponse", render.key_body(ACTIVE)),
    ("KeyResponse", render.key_body(REVOKED, 1)),
    ("KeySecretResponse", render.key_value_body(ACTIVE, "gw_live_value")),
    ("KeyDetailsResponse", render.details_body(ACTIVE, SUMMARY)),
    ("KeyDetailsResponse", render.details_body(REVOKED, UsageSummary(0, [], []))),
    ("KeyListResponse", render.key_list_body(Page([ACTIVE, REVOKED], "12"))),
    ("KeyListResponse", render.key_list_body(Page([], None))),
    ("UsageListResponse", render.usage_list_body(Page(RECORDS, "3"))),
    ("AuditListResponse", render.audit_list_body(Page(EVENTS, None))),
    ("Health", {"status": "ok"}),
    ("Ready", {"status": "ready"}),
]


@pytest.fixture(scope="module")
def document() -> dict[str, Any]:
    return openapi_document(load_settings())


def validate(document: dict[str, Any], name: str, body: Any) -> None:
    schema = {"$ref": f"#/components/schemas/{name}", "components": document["components"]}
    jsonschema.Draft202012Validator(
        schema, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER
    ).validate(body)


@pytest.mark.parametrize(("name", "body"), BODIES, ids=[name for name, _ in BODIES])
def test_a_rendered_body_validates_against_its_published_schema(
    document: dict[str, Any], name: str, body: dict[str, Any]
) -> None:
    validate(document, name, json.loads(json.dumps(body)))


def test_the_wire_form_of_a_key_record() -> None:
    """Field order, camelCase, nulls and second-precision UTC times, byte for byte."""
    assert json.dumps(render.render_key(REVOKED, 90)) == (
        '{"id": "key_abcdefghijklmnoq", "name": "old", "scope": "read", "sites": ["a", "b"], '
        '"status": "revoked", "rateLimit": null, "hint": "wxyz", '
        '"createdAt": "2026-12-02T12:00:05Z", "updatedAt": "2026-12-02T12:00:05Z", '
        '"lastUsedAt": "2026-12-02T12:00:05Z", "expiresAt": null, '
        '"revokedAt": "2026-12-02T12:00:05Z", "rotatedAt": null, '
        '"rotationDue": false, "expired": false}'
    )
    details = render.details_body(ACTIVE, SUMMARY)["apiKey"]
    assert list(details)[-3:] == ["rotationDue", "expired", "usage"]
    assert details["usage"]["recent"][0]["latencyMs"] == 1.235
    assert render.render_audit(EVENTS[1])["id"] is None


def test_a_body_that_breaks_its_schema_is_refused(document: dict[str, Any]) -> None:
    body = render.key_body(ACTIVE)
    body["apiKey"]["extra"] = 1
    with pytest.raises(jsonschema.ValidationError):
        validate(document, "KeyResponse", body)
    body = render.key_list_body(Page([ACTIVE], None))
    del body["data"][0]["hint"]
    with pytest.raises(jsonschema.ValidationError):
        validate(document, "KeyListResponse", body)


@pytest.mark.parametrize("code", sorted(STATUS))
def test_the_hot_path_error_bytes_validate_against_the_error_schema(
    document: dict[str, Any], code: str
) -> None:
    body = error_body(GatewayError(code, details={"field": "x"}), "req-1")
    validate(document, "ErrorResponse", json.loads(body))


# --- the route table and the document ----------------------------------------------------


@pytest.mark.parametrize("op", ROUTES, ids=[op.operation_id for op in ROUTES])
def test_every_route_is_in_the_document_with_its_schemas(document: dict[str, Any], op: Any) -> None:
    operation = document["paths"][op.path][op.method.lower()]
    assert operation["operationId"] == op.operation_id
    status, _, model = op.ok
    answer = operation["responses"][str(status)]
    if model is None:
        assert "content" not in answer
    elif model == TEXT:
        assert answer["content"] == {TEXT: {"schema": {"type": "string"}}}
    else:
        ref = answer["content"]["application/json"]["schema"]["$ref"]
        assert ref == f"#/components/schemas/{model.__name__}"
        assert model.__name__ in document["components"]["schemas"]
    for code, response in operation["responses"].items():
        if code != str(status):  # every error answer is the one envelope
            name = response["$ref"].rsplit("/", 1)[1]
            error = document["components"]["responses"][name]
            assert error["content"]["application/json"]["schema"]["$ref"].endswith("/ErrorResponse")
    if op.request is not None:
        body = operation["requestBody"]["content"]["application/json"]["schema"]
        assert body["$ref"] == f"#/components/schemas/{op.request.__name__}"
    if op.public:
        assert operation["security"] == []
    else:
        assert {"401", "403"} <= set(operation["responses"])


def test_the_document_has_no_path_the_table_does_not_name(document: dict[str, Any]) -> None:
    table = {(op.path, op.method.lower()) for op in ROUTES}
    documented = {(path, method) for path, item in document["paths"].items() for method in item} - {
        (path, "parameters") for path in document["paths"]
    }
    assert documented == table


def _served(routes: list[Any], prefix: str = "") -> set[tuple[str, str]]:
    served: set[tuple[str, str]] = set()
    for route in routes:
        if isinstance(route, Mount) and route.path == "/v1":
            served |= _served(route.routes, "/v1")
        elif isinstance(route, Route) and route.methods is not None:
            served |= {(prefix + route.path, m) for m in route.methods if m != "HEAD"}
    return served


def test_the_app_serves_exactly_the_table_and_the_document_itself() -> None:
    app = create_admin_app(Runtime(load_settings()))
    table = {(op.path, op.method) for op in ROUTES}
    assert _served(app.routes) == table | {("/openapi.json", "GET")}


def test_bind_refuses_a_handler_without_an_entry_and_an_entry_without_a_handler() -> None:
    async def handler(request: Any) -> Any:
        raise AssertionError

    ops = [op for op in ROUTES if op.path == "/healthz"]
    assert bind(ops, {"health": handler}) == {"/healthz": {"GET": handler}}
    with pytest.raises(LookupError, match="undocumentedThing"):
        bind(ops, {"health": handler, "undocumentedThing": handler})
    with pytest.raises(KeyError):
        bind(ops, {})
