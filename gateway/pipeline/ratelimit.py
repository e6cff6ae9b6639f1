"""Per-key rate limits (SPEC §4): several limits per key, all-or-nothing, honest headers.

A key's policy is its `rateLimit` (or `rate_limit.default`) in the `limits` notation,
parsed once per distinct string with `limits.parse_many`. A request is admitted only if
every limit of the policy admits it, and a rejected request consumes nothing: the whole
policy is tested and then hit in ONE atomic step —

- in memory, one synchronous function (no `await` between test and hit, so no other
  request of this process can interleave);
- in Redis, one Lua script (`MULTI_LIMIT_LUA`), which Redis runs atomically: one round
  trip per request, and no replica can interleave either.

So the guarantee is strict: concurrent requests never overshoot a limit, and a request
that any limit rejects changes no counter. The three strategies of `limits` are
implemented with the same definitions in both backends (integer milliseconds, so the two
agree exactly):

- `fixed-window`: a window of the limit's period starts at the first hit.
- `moving-window`: the timestamps of the last `amount` hits; admitted while fewer than
  `amount` of them are younger than the period.
- `sliding-window-counter`: windows aligned to multiples of the period; the weighted
  count is `previous * (time left in the current window) / period + current`.

`limits.aio`'s own per-limit calls would cost 2–3 Redis round trips per limit (test, hit,
window stats) and ~20–40 µs per limit in memory, so only its parser and its Redis
storage (for the connection, `implementation="redispy"`) are used here.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple

import limits

from gateway import metrics
from gateway.errors import GatewayError

log = logging.getLogger("gateway.ratelimit")

STRATEGIES = ("sliding-window-counter", "moving-window", "fixed-window")
# Sentinel and Cluster counters: how long a Redis call may take at least, and how long to
# skip Redis after it failed. (On one server, RedisLink decides: see RedisCounters.)
REDIS_TIMEOUT = 0.5
REDIS_RETRY_AFTER = 1.0


@dataclass(frozen=True, slots=True)
class Limit:
    name: str  # e.g. "100/minute"
    amount: int
    period_ms: int
    ident: str  # e.g. "100/1/minute", part of the counter's key
    quoted: bytes  # b'"100/minute"', the structured-field string

    @property
    def member(self) -> str:
        """This limit's RateLimit-Policy list member (draft-11 structured field)."""
        return f'"{self.name}";q={self.amount};w={self.period_ms // 1000}'


@dataclass(frozen=True, slots=True)
class Policy:
    text: str
    limits: tuple[Limit, ...]
    header: bytes  # the RateLimit-Policy value, rendered once


def _limit(item: limits.RateLimitItem) -> Limit:
    granularity = item.GRANULARITY.name
    if item.multiples == 1:
        name = f"{item.amount}/{granularity}"
    else:
        name = f"{item.amount}/{item.multiples} {granularity}s"
    ident = f"{item.amount}/{item.multiples}/{granularity}"
    return Limit(name, item.amount, item.get_expiry() * 1000, ident, f'"{name}"'.encode())


_POLICIES: dict[str, Policy] = {}


def parse_policy(text: str) -> Policy:
    """The parsed policy for a limit string; cached, so each distinct string parses once."""
    policy = _POLICIES.get(text)
    if policy is None:
        items = tuple(_limit(item) for item in limits.parse_many(text))
        if not items:
            raise ValueError(f"no limit in {text!r}")
        header = ", ".join(limit.member for limit in items).encode()
        policy = Policy(text, items, header)
        if len(_POLICIES) < 10_000:  # distinct strings are few; never unbounded
            _POLICIES[text] = policy
    return policy


class Outcome(NamedTuple):
    """The result of one check: admitted or not, and each limit's state after it.

    `states[i]` is `(admits, remaining, reset_ms)` for `policy.limits[i]`: whether that
    limit admitted the request, how many more requests it admits now, and in how many
    milliseconds it resets — when `remaining` is 0, the moment a request can succeed.
    """

    admitted: bool
    now_ms: int
    states: tuple[tuple[bool, int, int], ...]


def _ceil_seconds(ms: int) -> int:
    return -(-ms // 1000)


def seconds_text(seconds: int) -> str:
    """ "1 second", "2 seconds": for the Retry after … of error messages."""
    return f"{seconds} second" if seconds == 1 else f"{seconds} seconds"


def retry_after(outcome: Outcome) -> int:
    """Whole seconds until every rejecting limit admits again: rounded up, at least 1."""
    wait = max((reset for admits, _, reset in outcome.states if not admits), default=0)
    return max(1, _ceil_seconds(wait))


# --- the in-memory backend ----------------------------------------------------------------
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

    def known(self, subject: str, policy: Policy) -> bool:
        """Whether `subject` has counters (cheap: lets callers skip an untouched one)."""
        return subject in self._states

    def clear(self) -> None:
        self._states.clear()

    def __len__(self) -> int:
        return len(self._states)


# --- the Redis backend --------------------------------------------------------------------

# KEYS: one key per limit. ARGV: strategy, now in ms ('' = the Redis server's clock, so
# every replica shares one clock), then amount and period (ms) of each limit.
# Returns {admitted, now, then per limit: admits, remaining, reset_ms}.
MULTI_LIMIT_LUA = """
local strategy = ARGV[1]
local now = tonumber(ARGV[2])
if not now then
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local function idiv(a, b) return (a - math.fmod(a, b)) / b end
local n = #KEYS
local amount, period, s1, s2, s3, oks = {}, {}, {}, {}, {}, {}
local admit = true
for i = 1, n do
  local a = tonumber(ARGV[1 + 2 * i])
  local p = tonumber(ARGV[2 + 2 * i])
  amount[i] = a
  period[i] = p
  local ok
  if strategy == 'fixed-window' then
    local v = redis.call('HMGET', KEYS[i], 'c', 'e')
    local c = tonumber(v[1]) or 0
    local e = tonumber(v[2]) or 0
    if e <= now then c = 0; e = 0 end
    s1[i] = c; s2[i] = e
    ok = c < a
  elseif strategy == 'moving-window' then
    -- newest first; the entries still in the window are a prefix: binary search it
    local lo, hi = 0, a
    while lo < hi do
      local mid = math.floor((lo + hi) / 2)
      local v = redis.call('LINDEX', KEYS[i], mid)
      if v and tonumber(v) + p > now then lo = mid + 1 else hi = mid end
    end
    s1[i] = lo
    if lo > 0 then s2[i] = tonumber(redis.call('LINDEX', KEYS[i], lo - 1)) else s2[i] = false end
    ok = lo < a
  else
    local v = redis.call('HMGET', KEYS[i], 'i', 'c', 'p')
    local idx = idiv(now, p)
    local si = tonumber(v[1])
    local c = tonumber(v[2]) or 0
    local pr = tonumber(v[3]) or 0
    if si ~= idx then
      if si == idx - 1 then pr = c else pr = 0 end
      c = 0
    end
    s1[i] = c; s2[i] = pr; s3[i] = idx
    ok = pr * (p - (now - idx * p)) + c * p < a * p
  end
  oks[i] = ok
  if not ok then admit = false end
end
local out = {0, now}
if admit then out[1] = 1 end
for i = 1, n do
  local a, p = amount[i], period[i]
  local remaining, reset
  if strategy == 'fixed-window' then
    local c, e = s1[i], s2[i]
    if admit then
      if c == 0 then e = now + p end
      c = c + 1
      redis.call('HSET', KEYS[i], 'c', c, 'e', e)
      redis.call('PEXPIRE', KEYS[i], e - now)
    end
    remaining = a - c
    if c > 0 then reset = e - now else reset = p end
  elseif strategy == 'moving-window' then
    local count, oldest = s1[i], s2[i]
    if admit then
      redis.call('LPUSH', KEYS[i], now)
      redis.call('LTRIM', KEYS[i], 0, a - 1)
      redis.call('PEXPIRE', KEYS[i], p)
      count = count + 1
      if not oldest then oldest = now end
    end
    remaining = a - count
    if oldest then reset = oldest + p - now else reset = p end
  else
    local c, pr, idx = s1[i], s2[i], s3[i]
    if admit then
      c = c + 1
      redis.call('HSET', KEYS[i], 'i', idx, 'c', c, 'p', pr)
      redis.call('PEXPIRE', KEYS[i], 2 * p)
    end
    local left = p - (now - idx * p)
    remaining = a - idiv(pr * left + c * p, p)
    if remaining > 0 then
      reset = left
    elseif c < a then
      reset = idiv(pr * left - (a - c) * p, pr) + 1
    else
      reset = left + idiv(p * (c - a), c) + 1
    end
  end
  if remaining < 0 then remaining = 0 end
  local ok = 0
  if oks[i] then ok = 1 end
  out[#out + 1] = ok
  out[#out + 1] = remaining
  out[#out + 1] = reset
end
return out
"""

_SHORT = {"sliding-window-counter": "swc", "moving-window": "mw", "fixed-window": "fw"}


def redis_storage(url: str) -> Any:
    """A `limits.aio` Redis storage on redis-py's asyncio client, with short timeouts.

    redis-py's default retries (with backoff) are turned off: a failed call goes straight
    to `rate_limit.on_backend_error` instead of holding the request.
    """
    from limits.storage import storage_from_string
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    from gateway.store.redis_topology import limits_uri

    # redis+sentinel:// and redis+cluster:// are `limits`' own forms.
    return storage_from_string(
        limits_uri(url),
        implementation="redispy",
        socket_timeout=REDIS_TIMEOUT,
        socket_connect_timeout=REDIS_TIMEOUT,
        retry=Retry(NoBackoff(), 0),
        health_check_interval=0,
    )


class RedisCounters:
    """Counters in Redis, shared by every replica; one EVALSHA per check.

    On one server (redis://), the connection rules are RedisLink's: a blocking pool (load
    waits, never fails), a deadline on Redis's own silence (`storage.timeout`), one retry
    of a dead pooled connection, fail fast while Redis is known to be down. Sentinel and
    Cluster URLs use `limits`' storage with a plain timeout."""

    def __init__(
        self,
        url: str,
        strategy: str,
        *,
        key_prefix: str = "gw:rl:",
        timeout: float = 0.25,
        max_connections: int = 100,
    ) -> None:
        from gateway.store.redis_link import RedisLink
        from gateway.store.redis_topology import parse_redis_url

        self.strategy = strategy
        self.timeout = timeout
        self.link: RedisLink | None = None
        self.storage: Any = None
        if parse_redis_url(url).kind == "redis":
            self.link = RedisLink(
                url, timeout=timeout, max_connections=max_connections, name="rate limit"
            )
            self.client = self.link.client
        else:
            self.storage = redis_storage(url)
            self.client = self.storage.bridge.get_connection()
        self.script = self.client.register_script(MULTI_LIMIT_LUA)
        self.key_prefix = key_prefix
        self._suffix = ":" + _SHORT[strategy]
        self._args: dict[str, list[Any]] = {}
        # redis-py's Cluster client breaks connections when many first calls discover
        # the cluster at once: the first call does it alone.
        self._discover: asyncio.Lock | None = None
        if hasattr(self.client, "nodes_manager"):
            self._discover = asyncio.Lock()

    async def _discover_cluster(self) -> None:
        assert self._discover is not None
        async with self._discover:
            if self._discover is not None:
                await self.client.initialize()
                self._discover = None

    async def acquire(self, subject: str, policy: Policy, now_ms: int | None) -> Outcome:
        # `{subject}` is a hash tag: all of a key's counters live in one cluster slot.
        base = f"{self.key_prefix}{{{subject}}}:"
        keys = [base + limit.ident + self._suffix for limit in policy.limits]
        args = self._args.get(policy.text)
        if args is None:
            args = [self.strategy, ""]
            for limit in policy.limits:
                args += (limit.amount, limit.period_ms)
            self._args[policy.text] = args
        if now_ms is not None:
            args = [self.strategy, now_ms, *args[2:]]
        if self.link is not None:
            async with self.link.guard():
                reply = await self.script(keys=keys, args=args)
        else:
            async with asyncio.timeout(max(self.timeout * 2, REDIS_TIMEOUT)):
                if self._discover is not None:
                    await self._discover_cluster()
                reply = await self.script(keys=keys, args=args)
        values = [int(v) for v in reply]
        states = tuple(
            (values[i] == 1, values[i + 1], values[i + 2]) for i in range(2, len(values), 3)
        )
        return Outcome(values[0] == 1, values[1], states)

    async def close(self) -> None:
        if self.link is not None:
            await self.link.close()
        else:
            await self.client.aclose()


# --- the limiter --------------------------------------------------------------------------


class RateLimiter:
    """Checks a key's policy and renders the RateLimit headers (one per process)."""

    def __init__(
        self,
        *,
        default: str = "60/minute",
        strategy: str = "sliding-window-counter",
        storage: str = "memory://",
        on_backend_error: str = "allow",
        legacy_headers: bool = True,
        clock: Callable[[], float] | None = None,
        timeout: float = 0.25,
        max_connections: int = 100,
    ) -> None:
        if strategy not in STRATEGIES:
            raise ValueError(f"unknown rate limit strategy {strategy!r}")
        self.default = parse_policy(default)
        self.strategy = strategy
        self.fail_open = on_backend_error == "allow"
        self.legacy_headers = legacy_headers
        # None: the backend's own clock (time.time in memory, the Redis server's TIME).
        self.clock = clock
        self.memory: MemoryCounters | None = None
        self.redis: RedisCounters | None = None
        if storage.startswith("memory://"):
            from gateway.pipeline.shared_counters import counters_for

            # Shared by every worker of the machine under `server.workers` > 1.
            self.memory = counters_for(strategy, "ratelimit")
        else:
            self.redis = RedisCounters(
                storage, strategy, timeout=timeout, max_connections=max_connections
            )
        self._down_until = 0.0

    @classmethod
    def from_settings(cls, settings: Any, clock: Callable[[], float] | None = None) -> RateLimiter:
        from gateway.store.redis_link import pool_size

        section = settings.rate_limit
        return cls(
            default=section.default,
            strategy=section.strategy,
            storage=settings.rate_limit_storage_url(),
            on_backend_error=section.on_backend_error,
            legacy_headers=section.legacy_headers,
            clock=clock,
            timeout=settings.storage.timeout,
            max_connections=pool_size(settings),
        )

    def policy_for(self, rate_limit: str | None) -> Policy:
        if rate_limit is None:
            return self.default
        return _POLICIES.get(rate_limit) or parse_policy(rate_limit)

    async def check(self, key_id: str, rate_limit: str | None) -> list[tuple[bytes, bytes]]:
        """Count one request of the key; its RateLimit headers, or GatewayError 429/503.

        With the backend down: `allow` admits without headers (counted in
        gateway_rate_limit_backend_fail_open_total), `deny` answers 503."""
        policy = self.policy_for(rate_limit)
        if self.memory is not None:
            now = int((self.clock or time.time)() * 1000)
            outcome = self.memory.acquire(key_id, policy, now)
        else:
            outcome = await self._redis_acquire(key_id, policy)
            if outcome is None:
                return []
        headers = self.headers(policy, outcome)
        if outcome.admitted:
            return headers
        raise self.rejection(policy, outcome, headers)

    async def _redis_acquire(self, key_id: str, policy: Policy) -> Outcome | None:
        # On one server only a real failure gets here (see RedisLink): Redis silent for
        # storage.timeout, refused or reset again on a fresh connection, or known to be
        # down — never a busy pool or a busy event loop, so load never fails open.
        assert self.redis is not None
        linked = self.redis.link is not None
        if linked or time.monotonic() >= self._down_until:
            now = int(self.clock() * 1000) if self.clock is not None else None
            try:
                return await self.redis.acquire(key_id, policy, now)
            except Exception as exc:  # any backend failure follows the policy, never a 500
                from gateway.store.redis_link import BackendDown

                if not linked:
                    self._down_until = time.monotonic() + REDIS_RETRY_AFTER
                if not isinstance(exc, BackendDown):
                    log.warning("rate limit backend failed: %s", type(exc).__name__)
                metrics.BACKEND_ERRORS.labels("rate_limit").inc()
        if self.fail_open:
            metrics.RATE_LIMIT_FAIL_OPEN.inc()
            return None
        raise GatewayError("SERVICE_UNAVAILABLE", "The rate limit backend is unavailable.")

    def headers(self, policy: Policy, outcome: Outcome) -> list[tuple[bytes, bytes]]:
        """RateLimit-Policy and RateLimit (draft-11), and the legacy X-RateLimit-* trio."""
        states = outcome.states
        if len(states) == 1:
            tightest = 0
            _, remaining, reset = states[0]
            value = b"%s;r=%d;t=%d" % (policy.limits[0].quoted, remaining, -(-reset // 1000))
        else:
            members = []
            tightest = 0
            for index, (_, remaining, reset) in enumerate(states):
                quoted = policy.limits[index].quoted
                members.append(b"%s;r=%d;t=%d" % (quoted, remaining, -(-reset // 1000)))
                best = states[tightest]
                if remaining < best[1] or (remaining == best[1] and reset > best[2]):
                    tightest = index
            value = b", ".join(members)
        headers = [(b"ratelimit-policy", policy.header), (b"ratelimit", value)]
        if self.legacy_headers:
            _, remaining, reset = states[tightest]
            headers += (
                (b"x-ratelimit-limit", b"%d" % policy.limits[tightest].amount),
                (b"x-ratelimit-remaining", b"%d" % remaining),
                (b"x-ratelimit-reset", b"%d" % -(-(outcome.now_ms + reset) // 1000)),
            )
        return headers

    def rejection(
        self, policy: Policy, outcome: Outcome, headers: list[tuple[bytes, bytes]]
    ) -> GatewayError:
        """429 RATE_LIMITED naming the limit that keeps the request out the longest."""
        seconds = retry_after(outcome)
        blocking = max(
            (
                (reset, limit.name)
                for limit, (admits, _, reset) in zip(policy.limits, outcome.states, strict=True)
                if not admits
            ),
        )[1]
        extra = {name.decode(): value.decode() for name, value in headers}
        extra["Retry-After"] = str(seconds)
        return GatewayError(
            "RATE_LIMITED",
            f"Rate limit exceeded ({blocking}). Retry after {seconds_text(seconds)}.",
            {"limit": blocking, "retryAfter": seconds},
            headers=extra,
        )

    async def close(self) -> None:
        if self.redis is not None:
            await self.redis.close()
