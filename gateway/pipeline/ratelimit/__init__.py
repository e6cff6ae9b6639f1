"""Per-key rate limits (SPEC §4): several limits per key, all-or-nothing, honest headers.

A key's policy is its `rateLimit` (or `rate_limit.default`) in the `limits` notation,
parsed once per distinct string with `limits.parse_many`. A request is admitted only if
every limit of the policy admits it, and a rejected request consumes nothing: the whole
policy is tested and then hit in ONE atomic step —

- in memory, one synchronous function (no `await` between test and hit, so no other
  request of this process can interleave);
- in Redis, one Lua script (`multi_limit.lua`), which Redis runs atomically: one round
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
window stats) and ~20–40 µs per limit in memory, so only its parser is used here; the
Redis client is redis-py's own, made from the URL.

Modules: `policy` (notation, outcome, headers, the 429), `memory`, `redis` (+
`multi_limit.lua`), `limiter` (`RateLimiter`: backend choice, fail-open), `throttle`
(`FailedAttempts`, the per-IP failed-attempt counter), `shared` (the one counter table
of every worker under `server.workers` > 1, in shared memory).
"""

from gateway.pipeline.ratelimit.limiter import RateLimiter
from gateway.pipeline.ratelimit.memory import MemoryCounters, sliding_report
from gateway.pipeline.ratelimit.policy import (
    STRATEGIES,
    Limit,
    Outcome,
    Policy,
    parse_policy,
    rate_limit_headers,
    rejection,
    retry_after,
    seconds_text,
)
from gateway.pipeline.ratelimit.redis import RedisCounters
from gateway.pipeline.ratelimit.throttle import FailedAttempts

__all__ = [
    "STRATEGIES",
    "FailedAttempts",
    "Limit",
    "MemoryCounters",
    "Outcome",
    "Policy",
    "RateLimiter",
    "RedisCounters",
    "parse_policy",
    "rate_limit_headers",
    "rejection",
    "retry_after",
    "seconds_text",
    "sliding_report",
]
