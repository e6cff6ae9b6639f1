"""error_body renders cached envelopes byte-for-byte as json.dumps would."""

from __future__ import annotations

import json

import pytest

from gateway.errors import GatewayError, error_body


def plain(error: GatewayError, request_id: str) -> bytes:
    return json.dumps(error.envelope(request_id), separators=(",", ":")).encode()


@pytest.mark.parametrize(
    "details",
    [
        {},
        {"limit": "1/hour", "retryAfter": 1762},
        {"limit": 1},
        {"limit": True},
        {"limit": 1.0},
        {"limit": None},
        {"field": "x", "reason": 'quote " and é'},
        {"nested": {"a": [1, 2]}},
    ],
)
def test_same_bytes_as_json_dumps_twice(details: dict) -> None:
    error = GatewayError("RATE_LIMITED", "Rate limit exceeded.", details)
    for request_id in ("req-1", "req-2", 'has"quote', "back\\slash"):
        assert error_body(error, request_id) == plain(error, request_id)
        assert error_body(error, request_id) == plain(error, request_id)


def test_equal_but_different_json_values_are_not_confused() -> None:
    # 1, 1.0 and True are equal dict keys; their JSON differs.
    for value in (1, True, 1.0, 1):
        error = GatewayError("RATE_LIMITED", "same message", {"retryAfter": value})
        body = json.loads(error_body(error, "r"))
        assert body["error"]["details"]["retryAfter"] == value
        assert type(body["error"]["details"]["retryAfter"]) is type(value)


def test_many_distinct_details_stay_correct() -> None:
    for seconds in range(3000):
        error = GatewayError("RATE_LIMITED", "m", {"retryAfter": seconds})
        assert error_body(error, "r") == plain(error, "r")
