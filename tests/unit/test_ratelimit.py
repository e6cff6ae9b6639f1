"""Rate-limit arithmetic and headers, in memory with an injected clock (SPEC §4)."""

from __future__ import annotations

import asyncio

import pytest

from gateway.errors import GatewayError
from gateway.pipeline.ratelimit import (
    FailedAttempts,
    MemoryCounters,
    RateLimiter,
    parse_policy,
    retry_after,
    sliding_report,
)


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_policy_names_and_header() -> None:
    policy = parse_policy("10/second;5000/day")
    assert [limit.name for limit in policy.limits] == ["10/second", "5000/day"]
    assert policy.header == b'"10/second";q=10;w=1, "5000/day";q=5000;w=86400'
    assert parse_policy("3/10 minutes").limits[0].name == "3/10 minutes"
    assert parse_policy("3/10 minutes").limits[0].period_ms == 600_000
    assert parse_policy("10/second;5000/day") is policy  # parsed once


def _weighted_below(amount: int, period: int, left: int, current: int, previous: int) -> bool:
    return previous * left + current * period < amount * period


@pytest.mark.parametrize("amount", [1, 3, 7])
@pytest.mark.parametrize("previous", [0, 1, 3, 7, 9])
@pytest.mark.parametrize("current", [0, 1, 3, 7])
def test_sliding_reset_is_the_first_millisecond_that_admits(
    amount: int, previous: int, current: int
) -> None:
    """Brute force over every millisecond: the reported reset is exact."""
    if current > amount:
        return
    period = 1000
    for elapsed in (0, 1, 250, 999):
        remaining, reset = sliding_report(amount, period, elapsed, 0, current, previous)
        if remaining > 0:
            continue
        assert not _weighted_below(amount, period, period - elapsed, current, previous)
        # walk forward one ms at a time, across the window boundary if needed
        t = 0
        while True:
            now = elapsed + t
            if now < period:
                ok = _weighted_below(amount, period, period - now, current, previous)
            else:
                ok = _weighted_below(amount, period, 2 * period - now, 0, current)
            if ok:
                break
            t += 1
        assert reset == t, (amount, previous, current, elapsed)


def test_headers_and_legacy_headers() -> None:
    clock = Clock(1_000.0)
    limiter = RateLimiter(default="2/second;5/minute", strategy="fixed-window", clock=clock)

    async def check() -> dict[str, str]:
        headers = await limiter.check("key_a", None)
        return {k.decode(): v.decode() for k, v in headers}

    import asyncio

    first = asyncio.run(check())
    assert first["ratelimit-policy"] == '"2/second";q=2;w=1, "5/minute";q=5;w=60'
    assert first["ratelimit"] == '"2/second";r=1;t=1, "5/minute";r=4;t=60'
    # the most restrictive limit is the per-second one (1 left)
    assert first["x-ratelimit-limit"] == "2"
    assert first["x-ratelimit-remaining"] == "1"
    assert first["x-ratelimit-reset"] == "1001"
    clock.now += 0.5
    asyncio.run(check())
    with pytest.raises(GatewayError) as caught:
        asyncio.run(check())
    error = caught.value
    assert error.status == 429 and error.code == "RATE_LIMITED"
    assert error.headers["Retry-After"] == "1"  # the second window ends at 1001.0
    assert error.details == {"limit": "2/second", "retryAfter": 1}
    assert error.headers["ratelimit"] == '"2/second";r=0;t=1, "5/minute";r=3;t=60'

    no_legacy = RateLimiter(default="2/second", legacy_headers=False, clock=clock)
    names = {k for k, _ in asyncio.run(no_legacy.check("key_a", None))}
    assert names == {b"ratelimit-policy", b"ratelimit"}


def test_the_keys_own_limit_wins_over_the_default() -> None:
    import asyncio

    limiter = RateLimiter(default="100/minute", clock=Clock(5_000.0))
    headers = dict(asyncio.run(limiter.check("key_b", "7/hour")))
    assert headers[b"ratelimit-policy"] == b'"7/hour";q=7;w=3600'


def test_retry_after_is_at_least_one_and_rounded_up() -> None:
    counters = MemoryCounters("fixed-window")
    policy = parse_policy("1/second")
    counters.acquire("k", policy, 10_000)
    rejected = counters.acquire("k", policy, 10_999)
    assert not rejected.admitted and rejected.states[0][2] == 1
    assert retry_after(rejected) == 1
    rejected = counters.acquire("k", policy, 10_001)
    assert rejected.states[0][2] == 999 and retry_after(rejected) == 1


def test_memory_counters_are_bounded() -> None:
    counters = MemoryCounters("sliding-window-counter", max_entries=3)
    policy = parse_policy("1/minute")
    for subject in "abcdef":
        counters.acquire(subject, policy, 1_000)
    assert len(counters) == 3


def test_failed_attempts_throttle() -> None:
    clock = Clock(120.0)  # the start of a minute window
    throttle = FailedAttempts("2/minute", clock=clock)
    throttle.check("1.2.3.4")
    throttle.failed("1.2.3.4")
    throttle.failed("1.2.3.4")
    with pytest.raises(GatewayError) as caught:
        throttle.check("1.2.3.4")
    assert caught.value.status == 429 and caught.value.code == "TOO_MANY_FAILED_ATTEMPTS"
    # both failures are in this window: free again just after it ends
    assert caught.value.headers["Retry-After"] == "61"
    throttle.check("5.6.7.8")  # another IP is not affected


@pytest.mark.parametrize(("limit", "text"), [("1/second", "1 second"), ("1/minute", "60 seconds")])
def test_retry_after_says_second_or_seconds(limit: str, text: str) -> None:
    clock = Clock(120.0)
    limiter = RateLimiter(default=limit, strategy="fixed-window", clock=clock)
    asyncio.run(limiter.check("key_1", None))
    with pytest.raises(GatewayError) as caught:
        asyncio.run(limiter.check("key_1", None))
    assert caught.value.message.endswith(f"Retry after {text}.")
    throttle = FailedAttempts(limit, clock=clock)
    throttle.failed("1.2.3.4")
    with pytest.raises(GatewayError) as caught:
        throttle.check("1.2.3.4")
    seconds = int(caught.value.headers["Retry-After"])
    unit = "second" if seconds == 1 else "seconds"
    assert caught.value.message.endswith(f"Retry after {seconds} {unit}.")
