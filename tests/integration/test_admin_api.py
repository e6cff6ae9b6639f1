"""The admin API, route by route, against both stores (SPEC §5, §9).

Every rejected request is checked to leave the data exactly as it was.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import shutil
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from gateway.admin.api import MAX_BODY_BYTES
from gateway.admin.app import create_admin_app
from gateway.errors import GatewayError
from gateway.keys.format import generate_key
from gateway.keys.model import AccessLevel, rfc3339, utcnow
from gateway.runtime import Runtime
from gateway.settings import load_settings
from tests.conftest import need
from tests.integration import admin_fixtures
from tests.integration.admin_fixtures import Admin, assert_error, running_admin

admin = admin_fixtures.admin

KEY_VALUE = re.compile(r"^gw_[0-9A-Za-z]{38}$")
UNKNOWN_ID = "key_0000000000000000"


async def rejected(
    admin: Admin, method: str, path: str, status: int, code: str, **kwargs: Any
) -> dict[str, Any]:
    """Send a request that must fail with status/code and change nothing."""
    before = await admin.snapshot()
    response = await admin.client.request(method, path, **kwargs)
    error = assert_error(response, status, code)
    assert await admin.snapshot() == before
    return error


# --- public routes -----------------------------------------------------------------------


async def test_health_ready_metrics_openapi_are_public(admin: Admin) -> None:
    client = admin.client
    no_key = {"X-API-Key": ""}
    health = await client.get("/healthz", headers=no_key)
    assert health.status_code == 200 and health.json() == {"status": "ok"}
    ready = await client.get("/readyz", headers=no_key)
    assert ready.status_code == 200 and ready.json() == {"status": "ready"}
    metrics = await client.get("/metrics", headers=no_key)
    assert metrics.status_code == 200
    assert metrics.headers["content-type"].startswith("text/plain")
    assert "gateway_requests_total" in metrics.text
    assert admin.secret not in metrics.text
    doc = await client.get("/openapi.json", headers=no_key)
    assert doc.status_code == 200 and doc.json()["openapi"] == "3.1.0"
    for response in (health, ready, metrics, doc):
        assert response.headers["x-request-id"]


async def test_readyz_is_503_when_the_runtime_is_not_running(store_url: str) -> None:
    runtime = Runtime(load_settings(storage={"url": store_url}))
    app = create_admin_app(runtime)  # not managing it, and nobody started it
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app), base_url="http://admin.test"
    ) as client:
        assert_error(await client.get("/readyz"), 503, "SERVICE_UNAVAILABLE")
        assert (await client.get("/healthz")).status_code == 200
        assert_error(await client.get("/v1/keys"), 503, "SERVICE_UNAVAILABLE")


async def test_dashboard_is_served_at_root(admin: Admin) -> None:
    response = await admin.client.get("/", headers={"X-API-Key": ""})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert response.headers["x-request-id"]
    assert_error(await admin.client.get("/no-such-file.js"), 404, "NOT_FOUND")


# --- request ids, routing errors, unexpected errors ---------------------------------------


async def test_a_valid_client_request_id_is_kept_and_a_bad_one_replaced(admin: Admin) -> None:
    kept = await admin.client.get("/v1/keys", headers={"X-Request-ID": "trace-42"})
    assert kept.headers["x-request-id"] == "trace-42"
    error = await admin.client.get(UNKNOWN_PATH, headers={"X-Request-ID": "trace-43"})
    assert assert_error(error, 404, "NOT_FOUND")["requestId"] == "trace-43"
    for bad in ("has space", "x" * 129):
        replaced = await admin.client.get("/v1/keys", headers={"X-Request-ID": bad})
        assert replaced.headers["x-request-id"] not in ("", bad)


UNKNOWN_PATH = "/v1/nothing-here"


async def test_unknown_path_is_404_and_wrong_method_405_with_allow(admin: Admin) -> None:
    await rejected(admin, "GET", UNKNOWN_PATH, 404, "NOT_FOUND")
    await rejected(admin, "GET", "/v1/keys/", 404, "NOT_FOUND")  # no slash redirects
    await rejected(admin, "GET", "/v1", 404, "NOT_FOUND")
    for method, path, allow in [
        ("PUT", "/v1/keys", {"GET", "HEAD", "POST"}),
        ("POST", f"/v1/keys/{admin.key.id}", {"GET", "HEAD", "PATCH", "DELETE"}),
        ("GET", f"/v1/keys/{admin.key.id}/rotate", {"POST"}),
        ("PURGE", "/v1/audit", {"GET", "HEAD"}),
    ]:
        before = await admin.snapshot()
        response = await admin.client.request(method, path)
        assert_error(response, 405, "METHOD_NOT_ALLOWED")
        assert {m.strip() for m in response.headers["allow"].split(",")} == allow
        assert await admin.snapshot() == before


async def test_an_unexpected_exception_is_a_500_envelope_without_trace(admin: Admin) -> None:
    store = admin.service.store

    async def broken(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("a bug with a secret-looking detail")

    original = store.list_keys
    store.list_keys = broken  # type: ignore[method-assign]
    try:
        response = await admin.client.get("/v1/keys", headers={"X-Request-ID": "boom-1"})
    finally:
        store.list_keys = original  # type: ignore[method-assign]
    error = assert_error(response, 500, "INTERNAL_ERROR")
    assert error["requestId"] == "boom-1"
    assert "a bug" not in response.text and "RuntimeError" not in response.text


async def test_two_different_keys_in_the_headers_is_400(admin: Admin) -> None:
    _, other_secret = await admin.new_key("admin")
    error = await rejected(
        admin,
        "GET",
        "/v1/keys",
        400,
        "INVALID_REQUEST",
        headers={"Authorization": f"Bearer {other_secret}"},
    )
    assert other_secret not in json.dumps(error) and admin.secret not in json.dumps(error)
    # The same key in both headers is fine.
    same = await admin.client.get("/v1/keys", headers={"Authorization": f"Bearer {admin.secret}"})
    assert same.status_code == 200


# --- create --------------------------------------------------------------------------------


async def test_create_returns_201_the_record_and_the_value_once(admin: Admin) -> None:
    expires = rfc3339(utcnow() + timedelta(days=30))
    response = await admin.client.post(
        "/v1/keys",
        json={
            "name": "Billing sync",
            "scope": "write",
            "sites": ["site-a", "site_b"],
            "rateLimit": "10/second;5000/day",
            "expiresAt": expires,
        },
    )
    assert response.status_code == 201, response.text
    assert response.headers["cache-control"] == "no-store"
    body = response.json()
    assert set(body) == {"apiKey", "secret"}
    key, secret = body["apiKey"], body["secret"]
    assert KEY_VALUE.match(secret)
    assert key["name"] == "Billing sync" and key["scope"] == "write"
    assert key["sites"] == ["site-a", "site_b"] and key["status"] == "active"
    assert key["rateLimit"] == "10/second;5000/day" and key["expiresAt"] == expires
    assert key["hint"].startswith(secret[:7]) and key["hint"].endswith(secret[-4:])
    assert key["rotationDue"] is False and key["revokedAt"] is None and key["expired"] is False
    # The value works at once, and is never shown again.
    verified = await admin.runtime.verifier.verify(secret)  # type: ignore[union-attr]
    assert verified.id == key["id"]
    for path in ("/v1/keys", f"/v1/keys/{key['id']}", "/v1/audit", f"/v1/keys/{key['id']}/usage"):
        later = await admin.client.get(path)
        assert later.status_code == 200 and secret not in later.text


async def test_create_with_only_the_required_fields_uses_defaults(admin: Admin) -> None:
    response = await admin.client.post("/v1/keys", json={"name": "n", "scope": "read"})
    assert response.status_code == 201
    key = response.json()["apiKey"]
    assert key["sites"] == ["*"] and key["rateLimit"] is None and key["expiresAt"] is None


def _deep(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


_X = {"name": "x", "scope": "read"}
BAD_CREATE_BODIES: list[tuple[str, bytes | dict[str, Any] | list[Any] | None, str]] = [
    ("not json", b"name=x&scope=read", "body"),
    ("empty", b"", "body"),
    ("array", [], "body"),
    ("null", b"null", "body"),
    ("invalid utf-8", b'{"name": "\xff\xfe", "scope": "read"}', "body"),
    ("deeply nested", _deep(100_00), "body"),
    ("no name", {"scope": "read"}, "name"),
    ("no scope", {"name": "x"}, "scope"),
    ("bad scope", {"name": "x", "scope": "root"}, "scope"),
    ("scope wrong type", {"name": "x", "scope": 2}, "scope"),
    ("unknown field", {"name": "x", "scope": "read", "owner": "me"}, "owner"),
    ("snake_case field", {"name": "x", "scope": "read", "rate_limit": "1/second"}, "rate_limit"),
    ("name wrong type", {"name": 5, "scope": "read"}, "name"),
    ("empty name", {"name": "", "scope": "read"}, "name"),
    ("long name", {"name": "x" * 101, "scope": "read"}, "name"),
    ("control char name", {"name": "a\u0000b", "scope": "read"}, "name"),
    ("blank name", {"name": "   ", "scope": "read"}, "name"),
    ("sites not a list", {"name": "x", "scope": "read", "sites": "a"}, "sites"),
    ("empty sites", {"name": "x", "scope": "read", "sites": []}, "sites"),
    ("bad site id", {"name": "x", "scope": "read", "sites": ["a b"]}, "sites"),
    ("star with sites", {"name": "x", "scope": "read", "sites": ["*", "a"]}, "sites"),
    ("long site id", {"name": "x", "scope": "read", "sites": ["a" * 65]}, "sites"),
    ("bad rate limit", {"name": "x", "scope": "read", "rateLimit": "lots"}, "rateLimit"),
    ("zero rate limit", {"name": "x", "scope": "read", "rateLimit": "0/minute"}, "rateLimit"),
    ("rate limit number", {"name": "x", "scope": "read", "rateLimit": 100}, "rateLimit"),
    ("past expiry", {**_X, "expiresAt": "2001-01-01T00:00:00Z"}, "expiresAt"),
    ("no-zone expiry", {**_X, "expiresAt": "2999-01-01T00:00:00"}, "expiresAt"),
    ("word expiry", {**_X, "expiresAt": "tomorrow"}, "expiresAt"),
    ("huge expiry", {**_X, "expiresAt": "9999-12-31T23:59:59-23:59"}, "expiresAt"),
    ("number expiry", {**_X, "expiresAt": 4102444800}, "expiresAt"),
]  # fmt: skip


def _send_kwargs(body: bytes | dict[str, Any] | list[Any] | None) -> dict[str, Any]:
    if isinstance(body, bytes):
        return {"content": body, "headers": {"Content-Type": "application/json"}}
    return {"json": body}


@pytest.mark.parametrize(
    ("body", "field"),
    [(body, field) for _, body, field in BAD_CREATE_BODIES],
    ids=[name for name, _, _ in BAD_CREATE_BODIES],
)
async def test_create_rejects_bad_bodies_naming_the_field(
    admin: Admin, body: Any, field: str
) -> None:
    error = await rejected(admin, "POST", "/v1/keys", 400, "INVALID_REQUEST", **_send_kwargs(body))
    assert error["details"]["field"] == field, error
    assert error["details"]["reason"]


async def test_bodies_over_64_kib_are_413_whether_declared_or_streamed(admin: Admin) -> None:
    padded = json.dumps({"name": "big", "scope": "read"}).encode()
    exact = padded[:-1] + b" " * (MAX_BODY_BYTES - len(padded)) + b"}"
    assert len(exact) == MAX_BODY_BYTES
    ok = await admin.client.post("/v1/keys", content=exact)
    assert ok.status_code == 201, ok.text

    too_big = exact + b" "
    error = await rejected(admin, "POST", "/v1/keys", 413, "PAYLOAD_TOO_LARGE", content=too_big)
    assert error["details"]["limit"] == MAX_BODY_BYTES

    # Streamed without Content-Length: the API stops reading right after the limit.
    sent = 0

    async def stream() -> AsyncIterator[bytes]:
        nonlocal sent
        for _ in range(1024):  # up to 4 MiB if nobody stops reading
            sent += 4096
            yield b" " * 4096

    for path, method in [
        ("/v1/keys", "POST"),
        (f"/v1/keys/{admin.key.id}", "PATCH"),
        (f"/v1/keys/{admin.key.id}/rotate", "POST"),
        (f"/v1/keys/{admin.key.id}/revoke", "POST"),
    ]:
        sent = 0
        await rejected(admin, method, path, 413, "PAYLOAD_TOO_LARGE", content=stream())
        assert sent <= MAX_BODY_BYTES + 4096

    await rejected(
        admin,
        "POST",
        "/v1/keys",
        413,
        "PAYLOAD_TOO_LARGE",
        content=b"{}",
        headers={"Content-Length": str(10**30)},
    )
    await rejected(
        admin,
        "POST",
        "/v1/keys",
        400,
        "INVALID_REQUEST",
        content=b"{}",
        headers={"Content-Length": "lots"},
    )


# --- list ----------------------------------------------------------------------------------


async def test_list_filters_by_status_and_pages_newest_first(admin: Admin) -> None:
    made = [(await admin.new_key("read"))[0] for _ in range(5)]
    await admin.service.revoke(made[1].id)
    await admin.service.revoke(made[3].id)
    everyone = [admin.key.id] + [k.id for k in made]

    default = (await admin.client.get("/v1/keys")).json()
    assert [k["id"] for k in default["data"]] == everyone[::-1]
    assert default["nextCursor"] is None
    explicit = (await admin.client.get("/v1/keys", params={"status": "all"})).json()
    assert explicit == default
    active = (await admin.client.get("/v1/keys", params={"status": "active"})).json()
    assert [k["id"] for k in active["data"]] == [made[4].id, made[2].id, made[0].id, admin.key.id]
    revoked = (await admin.client.get("/v1/keys", params={"status": "revoked"})).json()
    assert [k["id"] for k in revoked["data"]] == [made[3].id, made[1].id]
    assert all(k["status"] == "revoked" and k["revokedAt"] for k in revoked["data"])

    seen: list[str] = []
    cursor: str | None = None
    while True:
        params = {"limit": "2", **({"cursor": cursor} if cursor else {})}
        page = await admin.client.get("/v1/keys", params=params)
        assert page.status_code == 200
        body = page.json()
        assert len(body["data"]) <= 2
        seen += [k["id"] for k in body["data"]]
        cursor = body["nextCursor"]
        if cursor is None:
            break
    assert seen == everyone[::-1]

    many = [(await admin.new_key())[0] for _ in range(55)]
    first = (await admin.client.get("/v1/keys")).json()
    assert len(first["data"]) == 50 and first["nextCursor"]
    largest = (await admin.client.get("/v1/keys", params={"limit": "200"})).json()
    assert len(largest["data"]) == len(many) + len(everyone)


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("status=deleted", "status"),
        ("status=", "status"),
        ("status=active&status=revoked", "status"),
        ("limit=0", "limit"),
        ("limit=201", "limit"),
        ("limit=-1", "limit"),
        ("limit=abc", "limit"),
        ("limit=1.5", "limit"),
        ("limit=", "limit"),
        ("limit=%EF%BC%93", "limit"),  # a full-width digit that int() would accept
        ("limit=99999999999999999999", "limit"),
        ("cursor=abc", "cursor"),
        ("cursor=-1", "cursor"),
        ("cursor=", "cursor"),
    ],
)
async def test_list_rejects_bad_query_parameters(admin: Admin, query: str, field: str) -> None:
    error = await rejected(admin, "GET", f"/v1/keys?{query}", 400, "INVALID_REQUEST")
    assert error["details"]["field"] == field


# --- details and usage ----------------------------------------------------------------------


async def test_details_show_the_record_and_usage(admin: Admin) -> None:
    key, _ = await admin.new_key("write", sites=["shop"])
    await admin.record_usage(key.id, 25)
    response = await admin.client.get(f"/v1/keys/{key.id}")
    assert response.status_code == 200
    body = response.json()
    assert set(body) == {"apiKey"}
    record = body["apiKey"]
    assert record["id"] == key.id and record["scope"] == "write" and record["sites"] == ["shop"]
    usage = record["usage"]
    assert usage["totalRequests"] == 25
    assert len(usage["daily"]) == 30
    assert (
        usage["daily"][-1]["date"] == utcnow().date().isoformat()
        or sum(d["requests"] for d in usage["daily"][-2:]) == 25
    )
    assert sum(d["requests"] for d in usage["daily"]) == 25
    assert sum(d["errors"] for d in usage["daily"]) == 5
    assert len(usage["recent"]) == 20
    newest = usage["recent"][0]
    assert set(newest) == {"at", "method", "path", "status", "latencyMs", "site"}
    assert newest["path"] == "/items/24" and newest["method"] == "GET"

    fresh, _ = await admin.new_key()
    empty = (await admin.client.get(f"/v1/keys/{fresh.id}")).json()["apiKey"]["usage"]
    assert empty["totalRequests"] == 0 and empty["recent"] == []
    assert len(empty["daily"]) == 30 and all(d["requests"] == 0 for d in empty["daily"])


@pytest.mark.parametrize("key_id", [UNKNOWN_ID, "nope", "key_" + "x" * 200, "%20"])
async def test_unknown_or_malformed_ids_are_404_key_not_found(admin: Admin, key_id: str) -> None:
    for method, suffix, kwargs in [
        ("GET", "", {}),
        ("GET", "/usage", {}),
        ("PATCH", "", {"json": {"name": "x"}}),
        ("POST", "/rotate", {}),
        ("POST", "/revoke", {}),
        ("DELETE", "", {}),
    ]:
        await rejected(admin, method, f"/v1/keys/{key_id}{suffix}", 404, "KEY_NOT_FOUND", **kwargs)


async def test_usage_pages_newest_first(admin: Admin) -> None:
    key, _ = await admin.new_key()
    await admin.record_usage(key.id, 7)
    paths: list[str] = []
    before: str | None = None
    while True:
        params = {"limit": "3", **({"before": before} if before else {})}
        response = await admin.client.get(f"/v1/keys/{key.id}/usage", params=params)
        assert response.status_code == 200, response.text
        body = response.json()
        assert set(body) == {"data", "nextCursor"}
        paths += [r["path"] for r in body["data"]]
        before = body["nextCursor"]
        if before is None:
            break
    assert paths == [f"/items/{i}" for i in range(6, -1, -1)]
    default = (await admin.client.get(f"/v1/keys/{key.id}/usage")).json()
    assert len(default["data"]) == 7 and default["nextCursor"] is None
    for query, field in [("limit=0", "limit"), ("limit=x", "limit"), ("before=x", "before")]:
        error = await rejected(
            admin, "GET", f"/v1/keys/{key.id}/usage?{query}", 400, "INVALID_REQUEST"
        )
        assert error["details"]["field"] == field


# --- edit ----------------------------------------------------------------------------------


async def test_edit_changes_the_fields_and_keeps_the_value(admin: Admin) -> None:
    key, secret = await admin.new_key("read")
    expires = rfc3339(utcnow() + timedelta(days=7))
    response = await admin.client.patch(
        f"/v1/keys/{key.id}",
        json={
            "name": "Renamed",
            "scope": "write",
            "sites": ["a", "b"],
            "rateLimit": "5/second",
            "expiresAt": expires,
        },
    )
    assert response.status_code == 200, response.text
    record = response.json()["apiKey"]
    assert set(response.json()) == {"apiKey"}
    assert record["name"] == "Renamed" and record["scope"] == "write"
    assert record["sites"] == ["a", "b"] and record["rateLimit"] == "5/second"
    assert record["expiresAt"] == expires and record["hint"] == key.hint
    # The same value keeps working, with the new rules from the very next request.
    verified = await admin.runtime.verifier.verify(secret)  # type: ignore[union-attr]
    assert verified.scope.value == "write" and verified.sites == ("a", "b")

    cleared = await admin.client.patch(
        f"/v1/keys/{key.id}", json={"rateLimit": None, "expiresAt": None, "sites": ["*"]}
    )
    record = cleared.json()["apiKey"]
    assert record["rateLimit"] is None and record["expiresAt"] is None and record["sites"] == ["*"]
    assert record["name"] == "Renamed"

    same = await admin.client.patch(f"/v1/keys/{key.id}", json={})
    assert same.status_code == 200 and same.json()["apiKey"] == record


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (b"", "body"),
        (b"{", "body"),
        (["name"], "body"),
        ({"name": None}, "name"),
        ({"scope": None}, "scope"),
        ({"sites": None}, "sites"),
        ({"scope": "owner"}, "scope"),
        ({"sites": ["bad/site"]}, "sites"),
        ({"rateLimit": "fast"}, "rateLimit"),
        ({"expiresAt": "2000-01-01T00:00:00Z"}, "expiresAt"),
        ({"id": "key_0000000000000000"}, "id"),
        ({"status": "revoked"}, "status"),
        ({"secret": "gw_x"}, "secret"),
        ({"name": "ok", "hint": "x"}, "hint"),
    ],
)
async def test_edit_rejects_bad_bodies_and_changes_nothing(
    admin: Admin, body: Any, field: str
) -> None:
    key, _ = await admin.new_key()
    error = await rejected(
        admin, "PATCH", f"/v1/keys/{key.id}", 400, "INVALID_REQUEST", **_send_kwargs(body)
    )
    assert error["details"]["field"] == field


# --- rotate --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "send", [{}, {"content": b""}, {"json": {}}, {"json": {"gracePeriodSeconds": 0}}]
)
async def test_rotate_gives_a_new_value_and_kills_the_old_one_at_once(
    admin: Admin, send: dict[str, Any]
) -> None:
    key, old = await admin.new_key("write")
    verifier = admin.runtime.verifier
    assert verifier is not None
    await verifier.verify(old)  # cached now: rotation must still kill it at once
    response = await admin.client.post(f"/v1/keys/{key.id}/rotate", **send)
    assert response.status_code == 200, response.text
    assert response.headers["cache-control"] == "no-store"
    body = response.json()
    assert set(body) == {"apiKey", "secret"}
    new = body["secret"]
    assert KEY_VALUE.match(new) and new != old
    record = body["apiKey"]
    assert record["id"] == key.id and record["name"] == key.name and record["scope"] == "write"
    assert record["rotatedAt"] and record["hint"] != key.hint
    with pytest.raises(GatewayError) as stopped:
        await verifier.verify(old)
    assert stopped.value.code == "INVALID_API_KEY"
    assert (await verifier.verify(new)).id == key.id


async def test_rotate_with_a_grace_period_keeps_the_old_value_working(admin: Admin) -> None:
    key, old = await admin.new_key()
    response = await admin.client.post(
        f"/v1/keys/{key.id}/rotate", json={"gracePeriodSeconds": 600}
    )
    assert response.status_code == 200
    verifier = admin.runtime.verifier
    assert verifier is not None
    assert (await verifier.verify(old)).id == key.id
    assert (await verifier.verify(response.json()["secret"])).id == key.id


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"gracePeriodSeconds": -1}, "gracePeriodSeconds"),
        ({"gracePeriodSeconds": 604801}, "gracePeriodSeconds"),
        ({"gracePeriodSeconds": "60"}, "gracePeriodSeconds"),
        ({"gracePeriodSeconds": 1.5}, "gracePeriodSeconds"),
        ({"gracePeriodSeconds": True}, "gracePeriodSeconds"),
        ({"gracePeriodSeconds": 10**400}, "gracePeriodSeconds"),
        ({"grace": 5}, "grace"),
        (b"not json", "body"),
        (b"[]", "body"),
        (b"null", "body"),
    ],
)
async def test_rotate_rejects_bad_bodies(admin: Admin, body: Any, field: str) -> None:
    key, old = await admin.new_key()
    kwargs = _send_kwargs(body)
    if isinstance(body, dict) and body.get("gracePeriodSeconds") == 10**400:
        kwargs = _send_kwargs(b'{"gracePeriodSeconds": 1' + b"0" * 400 + b"}")
    path = f"/v1/keys/{key.id}/rotate"
    error = await rejected(admin, "POST", path, 400, "INVALID_REQUEST", **kwargs)
    assert error["details"]["field"] == field
    assert (await admin.runtime.verifier.verify(old)).id == key.id  # type: ignore[union-attr]


async def test_rotating_a_revoked_key_is_409(admin: Admin) -> None:
    key, _ = await admin.new_key()
    await admin.service.revoke(key.id)
    error = await rejected(admin, "POST", f"/v1/keys/{key.id}/rotate", 409, "KEY_REVOKED")
    assert "secret" not in error["details"]


# --- revoke and delete ----------------------------------------------------------------------


async def test_revoke_is_immediate_and_idempotent(admin: Admin) -> None:
    key, secret = await admin.new_key("write")
    verifier = admin.runtime.verifier
    assert verifier is not None
    await verifier.verify(secret)
    response = await admin.client.post(f"/v1/keys/{key.id}/revoke")
    assert response.status_code == 200
    assert set(response.json()) == {"apiKey"}
    record = response.json()["apiKey"]
    assert record["status"] == "revoked" and record["revokedAt"]
    with pytest.raises(GatewayError) as stopped:
        await verifier.verify(secret)
    assert stopped.value.code == "KEY_REVOKED"

    before = await admin.snapshot()
    again = await admin.client.post(f"/v1/keys/{key.id}/revoke", json={})
    assert again.status_code == 200 and again.json()["apiKey"] == record
    assert await admin.snapshot() == before  # no second audit event


async def test_revoke_and_delete_refuse_a_body_with_fields(admin: Admin) -> None:
    key, _ = await admin.new_key()
    for method, path in [("POST", f"/v1/keys/{key.id}/revoke"), ("DELETE", f"/v1/keys/{key.id}")]:
        error = await rejected(admin, method, path, 400, "INVALID_REQUEST", json={"force": True})
        assert error["details"]["field"] == "force"
        error = await rejected(admin, method, path, 400, "INVALID_REQUEST", content=b"{")
        assert error["details"]["field"] == "body"


async def test_delete_needs_revoke_first_then_removes_the_key(admin: Admin) -> None:
    key, secret = await admin.new_key()
    await admin.record_usage(key.id, 3)
    error = await rejected(admin, "DELETE", f"/v1/keys/{key.id}", 409, "KEY_NOT_REVOKED")
    assert error["details"]["id"] == key.id
    assert (await admin.client.post(f"/v1/keys/{key.id}/revoke")).status_code == 200

    deleted = await admin.client.delete(f"/v1/keys/{key.id}")
    assert deleted.status_code == 204 and deleted.content == b""
    assert deleted.headers["x-request-id"]

    assert_error(await admin.client.get(f"/v1/keys/{key.id}"), 404, "KEY_NOT_FOUND")
    assert_error(await admin.client.get(f"/v1/keys/{key.id}/usage"), 404, "KEY_NOT_FOUND")
    await rejected(admin, "DELETE", f"/v1/keys/{key.id}", 404, "KEY_NOT_FOUND")
    with pytest.raises(GatewayError) as gone:
        await admin.runtime.verifier.verify(secret)  # type: ignore[union-attr]
    assert gone.value.code == "INVALID_API_KEY"
    listed = (await admin.client.get("/v1/keys")).json()["data"]
    assert key.id not in [k["id"] for k in listed]
    events = (await admin.client.get("/v1/audit", params={"keyId": key.id})).json()["data"]
    assert [e["action"] for e in events] == ["delete", "revoke", "create"]


# --- the key value appears only in create and rotate ---------------------------------------


async def test_the_value_appears_only_in_create_and_rotate(admin: Admin) -> None:
    created = (await admin.client.post("/v1/keys", json={"name": "v", "scope": "read"})).json()
    key_id, first = created["apiKey"]["id"], created["secret"]
    rotated = (await admin.client.post(f"/v1/keys/{key_id}/rotate")).json()
    second = rotated["secret"]
    responses = [
        await admin.client.get("/v1/keys"),
        await admin.client.get(f"/v1/keys/{key_id}"),
        await admin.client.get(f"/v1/keys/{key_id}/usage"),
        await admin.client.get("/v1/audit"),
        await admin.client.patch(f"/v1/keys/{key_id}", json={"name": "w"}),
        await admin.client.post(f"/v1/keys/{key_id}/revoke"),
        await admin.client.post(f"/v1/keys/{key_id}/rotate"),  # 409 now
        await admin.client.delete(f"/v1/keys/{key_id}"),
        await admin.client.get("/metrics"),
        await admin.client.get("/v1/keys", headers={"X-API-Key": first}),  # 401
    ]
    for response in responses:
        text = response.text + json.dumps(dict(response.headers))
        for value in (first, second, admin.secret):
            assert value not in text, response.request.url


# --- a backend outage is 503, never 500 -------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


async def _poll(check: Callable[[], Awaitable[bool]], seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while not await check():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.05)


async def test_redis_going_away_gives_503_and_recovery(tmp_path: Path) -> None:
    server = need("redis-server", shutil.which("redis-server"))
    port = _free_port()
    # Durable (append-only file in tmp_path), so the keys are there again after a restart.
    command = [server, "--port", str(port), "--bind", "127.0.0.1", "--save", ""]
    command += ["--appendonly", "yes", "--appendfsync", "always", "--dir", str(tmp_path)]

    def start() -> subprocess.Popen[bytes]:
        return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    async def answers() -> bool:
        with contextlib.suppress(OSError):
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.close()
            return True
        return False

    process = start()
    try:
        await _poll(answers)
        async with running_admin(f"redis://127.0.0.1:{port}/0") as admin:
            client = admin.client
            assert (await client.get("/readyz")).status_code == 200
            assert (await client.get("/v1/keys")).status_code == 200  # the admin key is cached
            process.terminate()
            process.wait(timeout=10)

            async def not_ready() -> bool:
                return (await client.get("/readyz")).status_code == 503

            await _poll(not_ready)
            assert_error(await client.get("/readyz"), 503, "SERVICE_UNAVAILABLE")
            # The cached admin key still gets in (fail-soft); the store call itself is 503.
            assert_error(await client.get("/v1/keys"), 503, "SERVICE_UNAVAILABLE")
            created = await client.post("/v1/keys", json={"name": "x", "scope": "read"})
            assert_error(created, 503, "SERVICE_UNAVAILABLE")
            # A key that must be looked up: 503 too, not 401 and not 500.
            unknown = {"X-API-Key": generate_key(admin.service.prefix)}
            assert_error(await client.get("/v1/keys", headers=unknown), 503, "SERVICE_UNAVAILABLE")

            process = start()

            async def ready() -> bool:
                return (await client.get("/readyz")).status_code == 200

            await _poll(ready)
            assert (await client.get("/v1/keys")).status_code == 200
    finally:
        process.terminate()
        process.wait(timeout=10)


# --- requests with a valid key are usage of that key (SPEC §6) --------------------------------


async def test_admin_api_requests_are_recorded_as_usage_of_the_calling_key(admin: Admin) -> None:
    _, read = await admin.new_key("read")
    read_key = await admin.runtime.verifier.verify(read)  # type: ignore[union-attr]
    assert (await admin.client.get("/v1/keys?limit=5")).status_code == 200
    forbidden = await admin.client.get("/v1/audit", headers={"X-API-Key": read})
    assert forbidden.status_code == 403

    async def recorded(key_id: str) -> dict[str, Any]:
        return (await admin.client.get(f"/v1/keys/{key_id}")).json()["apiKey"]

    async def both_recorded() -> bool:
        mine, theirs = await recorded(admin.key.id), await recorded(read_key.id)
        return bool(mine["lastUsedAt"] and theirs["usage"]["recent"])

    await _poll(both_recorded)
    # The whole history, not the 20 most recent: the polling above is recorded too and
    # may already have pushed the first request out of the details' `recent`.
    service = admin.runtime.service
    assert service is not None
    mine = (await service.usage(admin.key.id, limit=200)).data
    assert any(r.path == "/v1/keys" and r.status == 200 for r in mine)
    assert all("?" not in r.path for r in mine)  # never the query string
    (theirs,) = (await recorded(read_key.id))["usage"]["recent"]
    assert (theirs["method"], theirs["path"], theirs["status"]) == ("GET", "/v1/audit", 403)


async def test_an_expired_key_stays_active_and_says_expired(admin: Admin) -> None:
    key, _ = await admin.expired_key(AccessLevel.READ)
    shown = (await admin.client.get(f"/v1/keys/{key.id}")).json()["apiKey"]
    assert shown["status"] == "active" and shown["expired"] is True
    listed = (await admin.client.get("/v1/keys?status=active")).json()["data"]
    assert {k["id"]: k["expired"] for k in listed} == {key.id: True, admin.key.id: False}
