"""The audit log through the admin API, on both stores (SPEC §9, issue #4).

Every create, edit, rotate, revoke and delete leaves exactly one event naming the actor
(the admin key's id, or `cli` through KeyService directly), the request id and what
changed; events outlive the key; `/v1/audit` filters by key and pages newest first.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from gateway.keys.model import KeyEdit, rfc3339, utcnow
from tests.integration import admin_fixtures
from tests.integration.admin_fixtures import Admin, assert_error

admin = admin_fixtures.admin


async def events(admin: Admin, **params: str) -> list[dict[str, Any]]:
    response = await admin.client.get("/v1/audit", params=params)
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == {"data", "nextCursor"}
    return body["data"]


async def test_each_action_through_the_api_leaves_one_event(admin: Admin) -> None:
    client, actor = admin.client, admin.key.id

    created = await client.post(
        "/v1/keys",
        json={"name": "Audited", "scope": "read", "sites": ["s1"]},
        headers={"X-Request-ID": "req-create"},
    )
    key_id = created.json()["apiKey"]["id"]
    expires = rfc3339(utcnow() + timedelta(days=3))
    edited = await client.patch(
        f"/v1/keys/{key_id}",
        json={"name": "Audited 2", "scope": "write", "expiresAt": expires, "rateLimit": None},
        headers={"X-Request-ID": "req-edit"},
    )
    assert edited.status_code == 200
    rotated = await client.post(
        f"/v1/keys/{key_id}/rotate",
        json={"gracePeriodSeconds": 30},
        headers={"X-Request-ID": "req-rotate"},
    )
    assert rotated.status_code == 200
    revoked = await client.post(f"/v1/keys/{key_id}/revoke", headers={"X-Request-ID": "req-revoke"})
    assert revoked.status_code == 200
    deleted = await client.delete(f"/v1/keys/{key_id}", headers={"X-Request-ID": "req-delete"})
    assert deleted.status_code == 204

    # Kept after the delete, newest first, one per action.
    log = await events(admin, keyId=key_id)
    assert [e["action"] for e in log] == ["delete", "revoke", "rotate", "edit", "create"]
    for event, action in zip(log, ["delete", "revoke", "rotate", "edit", "create"], strict=True):
        assert set(event) == {"id", "at", "action", "keyId", "actor", "requestId", "changes"}
        assert event["keyId"] == key_id and event["actor"] == actor
        assert event["requestId"] == f"req-{action}"
        assert event["at"].endswith("Z")
    delete, revoke, rotate, edit, create = log
    assert create["changes"] == {
        "name": "Audited",
        "scope": "read",
        "sites": ["s1"],
        "rateLimit": None,
        "expiresAt": None,
    }
    # Only the fields that changed, old → new (rateLimit was already null).
    assert edit["changes"] == {
        "name": {"from": "Audited", "to": "Audited 2"},
        "scope": {"from": "read", "to": "write"},
        "expiresAt": {"from": None, "to": expires},
    }
    assert rotate["changes"]["gracePeriodSeconds"] == 30
    assert rotate["changes"]["hint"]["to"] == rotated.json()["apiKey"]["hint"]
    assert revoke["changes"] == {"status": {"from": "active", "to": "revoked"}}
    assert delete["changes"] == {"name": "Audited 2"}

    # No key value in any event.
    text = str(await events(admin))
    assert created.json()["secret"] not in text and rotated.json()["secret"] not in text


async def test_the_request_id_in_the_event_is_the_one_the_response_carries(admin: Admin) -> None:
    response = await admin.client.post("/v1/keys", json={"name": "x", "scope": "read"})
    key_id = response.json()["apiKey"]["id"]
    (event,) = await events(admin, keyId=key_id)
    assert event["requestId"] == response.headers["x-request-id"]


async def test_actions_that_change_nothing_leave_no_event(admin: Admin) -> None:
    key, _ = await admin.new_key()
    await admin.client.post(f"/v1/keys/{key.id}/revoke")
    before = await events(admin, keyId=key.id)
    assert (await admin.client.post(f"/v1/keys/{key.id}/revoke")).status_code == 200
    assert (await admin.client.patch(f"/v1/keys/{key.id}", json={})).status_code == 200
    same_name = await admin.client.patch(f"/v1/keys/{key.id}", json={"name": key.name})
    assert same_name.status_code == 200
    # Rejected requests leave none either.
    assert (await admin.client.post(f"/v1/keys/{key.id}/rotate")).status_code == 409
    assert (await admin.client.patch(f"/v1/keys/{key.id}", json={"scope": "x"})).status_code == 400
    assert await events(admin, keyId=key.id) == before


async def test_actions_through_key_service_are_by_cli(admin: Admin) -> None:
    service = admin.service
    key, _ = await admin.new_key()  # KeyService.create with the default actor
    await service.edit(key.id, KeyEdit(name="by cli"), request_id="cli-req")
    await service.rotate(key.id)
    await service.revoke(key.id)
    await service.delete(key.id)
    log = await events(admin, keyId=key.id)
    assert [e["action"] for e in log] == ["delete", "revoke", "rotate", "edit", "create"]
    assert {e["actor"] for e in log} == {"cli"}
    assert log[3]["requestId"] == "cli-req"


async def test_filter_by_key_and_paging(admin: Admin) -> None:
    first, _ = await admin.new_key()
    second, _ = await admin.new_key()
    for i in range(4):
        await admin.service.edit(first.id, KeyEdit(name=f"first {i}"))
    await admin.service.edit(second.id, KeyEdit(name="second 1"))

    only_first = await events(admin, keyId=first.id)
    assert len(only_first) == 5 and {e["keyId"] for e in only_first} == {first.id}
    assert [e["changes"].get("name", {}).get("to") for e in only_first[:4]] == [
        "first 3",
        "first 2",
        "first 1",
        "first 0",
    ]
    assert len(await events(admin, keyId=second.id)) == 2
    assert await events(admin, keyId="key_0000000000000000") == []

    everything = await events(admin)
    # Newest first: the admin key's own create is the oldest event.
    assert everything[-1]["keyId"] == admin.key.id and everything[-1]["action"] == "create"
    assert len(everything) == 1 + 5 + 2

    paged: list[dict[str, Any]] = []
    cursor: str | None = None
    while True:
        params = {"limit": "3", "keyId": first.id, **({"cursor": cursor} if cursor else {})}
        body = (await admin.client.get("/v1/audit", params=params)).json()
        assert len(body["data"]) <= 3
        paged += body["data"]
        cursor = body["nextCursor"]
        if cursor is None:
            break
    assert paged == only_first


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("keyId=nope", "keyId"),
        ("keyId=", "keyId"),
        ("limit=0", "limit"),
        ("limit=201", "limit"),
        ("limit=ten", "limit"),
        ("cursor=x", "cursor"),
        ("keyId=key_0000000000000000&keyId=key_0000000000000001", "keyId"),
    ],
)
async def test_bad_audit_queries_are_400_naming_the_field(
    admin: Admin, query: str, field: str
) -> None:
    response = await admin.client.get(f"/v1/audit?{query}")
    error = assert_error(response, 400, "INVALID_REQUEST")
    assert error["details"]["field"] == field


async def test_the_audit_log_needs_an_admin_key(admin: Admin) -> None:
    _, read = await admin.new_key("read")
    assert_error(
        await admin.client.get("/v1/audit", headers={"X-API-Key": ""}), 401, "MISSING_API_KEY"
    )
    forbidden = await admin.client.get("/v1/audit", headers={"X-API-Key": read})
    assert_error(forbidden, 403, "INSUFFICIENT_SCOPE")
