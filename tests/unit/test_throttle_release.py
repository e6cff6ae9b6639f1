"""Giving a failed attempt back (SPEC §13): the throttle counts an attempt before its
lookup and releases it for a valid key — in process and in the workers' shared table."""

from __future__ import annotations

import pytest

from gateway.errors import GatewayError
from gateway.pipeline.ratelimit import FailedAttempts, MemoryCounters, parse_policy
from gateway.pipeline.ratelimit.shared import SharedCounters, SharedTable

T0 = 1_700_000_000_000


@pytest.mark.parametrize("kind", ["memory", "shared"])
def test_release_takes_back_one_count(kind: str) -> None:
    policy = parse_policy("3/minute")
    counters = (
        MemoryCounters("sliding-window-counter")
        if kind == "memory"
        else SharedCounters(SharedTable(4, 64), "sliding-window-counter", "throttle:proxy")
    )
    for _ in range(3):
        assert counters.acquire("ip", policy, T0).admitted
    assert not counters.acquire("ip", policy, T0).admitted
    counters.release("ip", policy, T0)
    assert counters.acquire("ip", policy, T0 + 1).admitted
    assert not counters.acquire("ip", policy, T0 + 2).admitted
    # Released in the next window: the count moved to "previous" and is taken from there.
    counters.release("ip", policy, T0 + 2)
    counters.release("ip", policy, T0 + 60_000)  # nothing counted then: no effect


def test_attempts_in_flight_are_capped_and_given_back() -> None:
    now = [T0 / 1000]
    throttle = FailedAttempts("2/minute", clock=lambda: now[0])
    first = throttle.attempt("1.2.3.4")
    throttle.attempt("1.2.3.4")
    with pytest.raises(GatewayError) as caught:
        throttle.attempt("1.2.3.4")
    assert caught.value.code == "TOO_MANY_FAILED_ATTEMPTS"
    throttle.give_back("1.2.3.4", first)  # that one was a valid key
    throttle.check("1.2.3.4")
    throttle.attempt("1.2.3.4")
    with pytest.raises(GatewayError):
        throttle.check("1.2.3.4")
