"""The failed-attempt throttle is exact under concurrency (SPEC §13, issue 8 point 6):
N concurrent well-formed unknown keys from one IP never evaluate more than the limit, and
valid keys give their attempt back."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable

import pytest

from gateway.keys.format import generate_key
from tests.e2e.conftest import KEY_VALUES, Gateway, Upstream
from tests.e2e.rawhttp import fetch


@pytest.mark.parametrize("concurrent", [100, 400])
async def test_concurrent_bad_keys_from_one_ip_evaluate_at_most_the_limit(
    start_gateway: Callable[..., Gateway], upstream: Upstream, concurrent: int
) -> None:
    gateway = start_gateway(upstream.url, auth={"failed_attempts_limit": "30/hour"})
    values = [generate_key() for _ in range(concurrent)]
    KEY_VALUES.update(values)
    answers = await asyncio.gather(
        *(fetch(gateway.port, "/", {"X-API-Key": value}) for value in values)
    )
    codes = Counter(answer.code for answer in answers)
    assert codes["INVALID_API_KEY"] == 30, codes
    assert codes["TOO_MANY_FAILED_ATTEMPTS"] == concurrent - 30, codes


async def test_valid_keys_give_their_attempt_back(
    start_gateway: Callable[..., Gateway], upstream: Upstream
) -> None:
    gateway = start_gateway(upstream.url, auth={"failed_attempts_limit": "5/hour"})
    good = [gateway.create_key(rateLimit="1000/minute") for _ in range(5)]
    # 5 fresh valid keys at once, each looked up (5 attempts in flight, the limit), then
    # given back: the 5 bad values after them are all still evaluated.
    answers = await asyncio.gather(
        *(fetch(gateway.port, "/", {"X-API-Key": key.value}) for key in good)
    )
    assert [a.status for a in answers] == [200] * 5, [a.code for a in answers]
    bad = [generate_key() for _ in range(5)]
    KEY_VALUES.update(bad)
    answers = await asyncio.gather(*(fetch(gateway.port, "/", {"X-API-Key": v}) for v in bad))
    assert [a.code for a in answers] == ["INVALID_API_KEY"] * 5
    blocked = await fetch(gateway.port, "/", {"X-API-Key": generate_key()})
    assert blocked.code == "TOO_MANY_FAILED_ATTEMPTS"
