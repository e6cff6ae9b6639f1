"""Rate-limit counters in this process (`rate_limit.storage = "memory://"`).

Every method is synchronous, hence atomic in the event loop: the whole policy is tested
and then hit with no `await` in between, so no other request can interleave.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Any

from gateway.pipeline.ratelimit.policy import Limit, Outcome, Policy

# The three strategies, each as prepare (bring the state to `now`, say whether one more
# request fits), hit (count it) and report (remaining, reset in ms).


def _fixed_prepare(state: list[int], limit: Limit, now: int) -> bool:
    if state[1] <= now:
        state[0] = 0
        state[1] = 0
    return state[0] < limit.amount


def _fixed_hit(state: list[int], limit: Limit, now: int) -> None:
    if state[0] == 0:
        state[1] = now + limit.period_ms
    state[0] += 1


def _fixed_report(state: list[int], limit: Limit, now: int) -> tuple[int, int]:
    count = state[0]
    return limit.amount - count, (state[1] - now if count else limit.period_ms)


def _moving_prepare(state: deque[int], limit: Limit, now: int) -> bool:
    horizon = now - limit.period_ms
    while state and state[0] <= horizon:
        state.popleft()
    return len(state) < limit.amount


def _moving_hit(state: deque[int], limit: Limit, now: int) -> None:
    state.append(now)


def _moving_report(state: deque[int], limit: Limit, now: int) -> tuple[int, int]:
    reset = state[0] + limit.period_ms - now if state else limit.period_ms
    return limit.amount - len(state), reset


def _sliding_prepare(state: list[int], limit: Limit, now: int) -> bool:
    period = limit.period_ms
    index = now // period
    if state[0] != index:
        # Roll the windows: the current one becomes the previous one, or both are stale.
        state[2] = state[1] if state[0] == index - 1 else 0
        state[1] = 0
        state[0] = index
    elapsed = now - index * period
    return state[2] * (period - elapsed) + state[1] * period < limit.amount * period


def _sliding_hit(state: list[int], limit: Limit, now: int) -> None:
    state[1] += 1


def _sliding_report(state: list[int], limit: Limit, now: int) -> tuple[int, int]:
    return sliding_report(limit.amount, limit.period_ms, now, state[0], state[1], state[2])


def sliding_report(
    amount: int, period: int, now: int, index: int, current: int, previous: int
) -> tuple[int, int]:
    """(remaining, reset ms) of a sliding window counter; exact integer arithmetic.

    When nothing remains, the reset is the first millisecond at which the weighted count
    drops below `amount` again (the same formula is in the Lua script).
    """
    left = period - (now - index * period)  # ms left in the current window
    weighted = previous * left + current * period  # the weighted count, times period
    remaining = amount - weighted // period
    if remaining > 0:
        return remaining, left
    if current < amount:
        # previous * (left - t) < (amount - current) * period  ⇔  t > …
        return 0, (previous * left - (amount - current) * period) // previous + 1
    # Wait for the next window, then until current * (period - s) < amount * period.
    return 0, left + (period * (current - amount)) // current + 1


_MEMORY_STRATEGIES: dict[str, tuple[Callable[[], Any], Callable, Callable, Callable]] = {
    "fixed-window": (lambda: [0, 0], _fixed_prepare, _fixed_hit, _fixed_report),
    "moving-window": (deque, _moving_prepare, _moving_hit, _moving_report),
    "sliding-window-counter": (
        lambda: [-2, 0, 0],
        _sliding_prepare,
        _sliding_hit,
        _sliding_report,
    ),
}


class MemoryCounters:
    """Counters in this process. Every method is synchronous, hence atomic in the loop."""

    def __init__(self, strategy: str, *, max_entries: int = 1_000_000) -> None:
        self.strategy = strategy
        self._fresh, self._prepare, self._hit, self._report = _MEMORY_STRATEGIES[strategy]
        self._states: dict[str, dict[str, Any]] = {}
        self.max_entries = max_entries

    def _states_for(self, subject: str, policy: Policy) -> list[Any]:
        # Counters are per (subject, limit), as in Redis: editing a key's policy keeps the
        # counts of the limits it still has.
        by_limit = self._states.get(subject)
        if by_limit is None:
            if len(self._states) >= self.max_entries:
                # Forget the oldest subject rather than grow without bound.
                del self._states[next(iter(self._states))]
            by_limit = self._states[subject] = {}
        states = []
        for limit in policy.limits:
            state = by_limit.get(limit.ident)
            if state is None:
                state = by_limit[limit.ident] = self._fresh()
            states.append(state)
        return states

    def acquire(self, subject: str, policy: Policy, now_ms: int, *, hit: bool = True) -> Outcome:
        """Test every limit at `now_ms`; if all admit (and `hit`), count the request in all."""
        if len(policy.limits) == 1:
            return self._acquire_one(subject, policy.limits[0], now_ms, hit)
        states = self._states_for(subject, policy)
        limits_ = policy.limits
        prepare, report = self._prepare, self._report
        verdicts = []
        admitted = True
        for index, limit in enumerate(limits_):
            admits = prepare(states[index], limit, now_ms)
            verdicts.append(admits)
            if not admits:
                admitted = False
        if admitted and hit:
            count = self._hit
            for index, limit in enumerate(limits_):
                count(states[index], limit, now_ms)
        result = []
        for index, limit in enumerate(limits_):
            remaining, reset = report(states[index], limit, now_ms)
            result.append((verdicts[index], remaining if remaining > 0 else 0, reset))
        return Outcome(admitted, now_ms, tuple(result))

    def _acquire_one(self, subject: str, limit: Limit, now_ms: int, hit: bool) -> Outcome:
        # The usual policy has one limit: the same steps as `acquire` without its lists
        # and loops (the request path; measured ~2x cheaper).
        by_limit = self._states.get(subject)
        state = by_limit.get(limit.ident) if by_limit is not None else None
        if state is None:
            state = self._states_for(subject, Policy("", (limit,), b""))[0]
        admits = self._prepare(state, limit, now_ms)
        if admits and hit:
            self._hit(state, limit, now_ms)
        remaining, reset = self._report(state, limit, now_ms)
        return Outcome(admits, now_ms, ((admits, remaining if remaining > 0 else 0, reset),))

    def release(self, subject: str, policy: Policy, at_ms: int) -> None:
        """Take back one request counted at `at_ms` (sliding-window-counter only: the
        failed-attempt throttle's "given back if the key turns out valid")."""
        by_limit = self._states.get(subject)
        if by_limit is None or self.strategy != "sliding-window-counter":
            return
        for limit in policy.limits:
            state = by_limit.get(limit.ident)
            if state is None:
                continue
            index = at_ms // limit.period_ms
            if state[0] == index and state[1] > 0:
                state[1] -= 1
            elif state[0] == index + 1 and state[2] > 0:
                state[2] -= 1
        # Nothing left counted: forget the subject, so `known()` is False again and the
        # throttle's check of a client whose attempts were all given back costs nothing.
        if all(state[1] == 0 and state[2] == 0 for state in by_limit.values()):
            del self._states[subject]

    def known(self, subject: str, policy: Policy) -> bool:
        """Whether `subject` has counters (cheap: lets callers skip an untouched one)."""
        return subject in self._states

    def __len__(self) -> int:
        return len(self._states)
