"""Bad input to the admin API found by probing a running gateway: each gets the documented
400 envelope naming the field (never a 500), and leaves the stored data as it was."""

from __future__ import annotations

import pytest

from tests.integration import admin_fixtures
from tests.integration.admin_fixtures import Admin, assert_error

admin = admin_fixtures.admin


# "²" and "١٢" are str.isdigit() but not cursors; "²" used to reach int() and be a 500.
@pytest.mark.parametrize("value", ["²", "١٢", "０", "1²"])
@pytest.mark.parametrize(
    ("path", "field"),
    [
        ("/v1/keys?cursor=", "cursor"),
        ("/v1/audit?cursor=", "cursor"),
        ("/v1/keys/{id}/usage?before=", "before"),
    ],
)
async def test_non_ascii_digit_cursors_are_400(
    admin: Admin, path: str, field: str, value: str
) -> None:
    response = await admin.client.get(path.format(id=admin.key.id) + value)
    error = assert_error(response, 400, "INVALID_REQUEST")
    assert error["details"]["field"] == field


@pytest.mark.parametrize(
    "limit",
    [
        "1/0second",  # `limits` reads it as 1/second: the stored text would mislead
        "99999999999999999999999/second",
        "10/999999999999 years",
    ],
)
async def test_rate_limits_out_of_range_are_400_and_create_nothing(
    admin: Admin, limit: str
) -> None:
    before = await admin.snapshot()
    response = await admin.client.post(
        "/v1/keys", json={"name": "x", "scope": "read", "rateLimit": limit}
    )
    assert assert_error(response, 400, "INVALID_REQUEST")["details"]["field"] == "rateLimit"
    assert await admin.snapshot() == before


@pytest.mark.parametrize(
    ("method", "path", "body", "field"),
    [
        ("POST", "/v1/keys", b'{"name": "a", "name": "b", "scope": "read"}', "name"),
        ("PATCH", "/v1/keys/{id}", b'{"scope": "read", "scope": "admin"}', "scope"),
        ("POST", "/v1/keys/{id}/rotate", b'{"gracePeriodSeconds": 0, "gracePeriodSeconds": 9}',
         "gracePeriodSeconds"),
        ("POST", "/v1/keys", b'{"name": "a", "scope": "read", "x": {"y": 1, "y": 2}}', "y"),
    ],
)  # fmt: skip
async def test_a_json_name_given_twice_is_400_and_changes_nothing(
    admin: Admin, method: str, path: str, body: bytes, field: str
) -> None:
    # Which of the two values would win is ambiguous (Python's json keeps the last).
    target, _ = await admin.new_key("write")
    before = await admin.snapshot()
    response = await admin.client.request(
        method,
        path.format(id=target.id),
        content=body,
        headers={"Content-Type": "application/json"},
    )
    assert assert_error(response, 400, "INVALID_REQUEST")["details"]["field"] == field
    assert await admin.snapshot() == before
