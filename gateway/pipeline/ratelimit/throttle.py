"""The failed-attempt throttle per client IP (SPEC §4, `auth.failed_attempts_limit`)."""

from __future__ import annotations

import time
from collections.abc import Callable

from gateway.errors import GatewayError
from gateway.pipeline.ratelimit.policy import Outcome, parse_policy, retry_after, seconds_text


class FailedAttempts:
    """The failed-attempt throttle per client IP (SPEC §4, `auth.failed_attempts_limit`).

    Counted: a presented value that is malformed, unknown, revoked or expired. Not
    counted: a request with no key at all (nothing was guessed), and a store outage.
    An IP beyond the limit is answered 429 TOO_MANY_FAILED_ATTEMPTS before any lookup.

    The counters live in this process (a sliding window counter per IP, bounded in
    number), so checking a well-behaved IP costs one dict lookup and no round trip; with
    several replicas each one throttles on its own, while the workers of one machine
    (`server.workers`) share one table (pipeline/ratelimit/shared.py).
    """

    def __init__(
        self,
        limit: str,
        *,
        clock: Callable[[], float] = time.time,
        max_entries: int = 100_000,
        name: str = "throttle",
    ) -> None:
        from gateway.pipeline.ratelimit.shared import counters_for

        self.policy = parse_policy(limit)
        # `name` keeps each listener's counter apart when the workers share one table.
        self.counters = counters_for("sliding-window-counter", name, max_entries=max_entries)
        self.clock = clock

    def check(self, ip: str) -> None:
        """429 TOO_MANY_FAILED_ATTEMPTS (with Retry-After) when `ip` is beyond the limit."""
        if not self.counters.known(ip, self.policy):
            return
        outcome = self.counters.acquire(ip, self.policy, int(self.clock() * 1000), hit=False)
        if outcome.admitted:
            return
        self._reject(outcome)

    def _reject(self, outcome: Outcome) -> None:
        seconds = retry_after(outcome)
        raise GatewayError(
            "TOO_MANY_FAILED_ATTEMPTS",
            f"Too many failed authentication attempts. Retry after {seconds_text(seconds)}.",
            {"retryAfter": seconds},
            headers={"Retry-After": str(seconds)},
        )

    def attempt(self, ip: str) -> int:
        """Count one attempt of `ip` BEFORE its value is looked up, so that N concurrent
        bad values never evaluate more than the limit (SPEC §13); 429 when the limit is
        used up. Returns the moment counted, for `give_back`."""
        now = int(self.clock() * 1000)
        outcome = self.counters.acquire(ip, self.policy, now)
        if not outcome.admitted:
            self._reject(outcome)
        return now

    def give_back(self, ip: str, at_ms: int) -> None:
        """Undo `attempt` (the value was valid, or the store could not tell)."""
        self.counters.release(ip, self.policy, at_ms)

    def failed(self, ip: str) -> None:
        self.counters.acquire(ip, self.policy, int(self.clock() * 1000))
