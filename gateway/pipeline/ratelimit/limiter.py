"""The rate limiter of one process: a key's policy checked on the configured backend,
the RateLimit headers, and `rate_limit.on_backend_error` when Redis fails (SPEC §4, §13)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from gateway import metrics
from gateway.errors import GatewayError
from gateway.pipeline.ratelimit.memory import MemoryCounters
from gateway.pipeline.ratelimit.policy import (
    STRATEGIES,
    Outcome,
    Policy,
    cached_policy,
    parse_policy,
    rate_limit_headers,
    rejection,
)
from gateway.pipeline.ratelimit.redis import RedisCounters
from gateway.store.redis_link import BackendDown, pool_size
from gateway.urls import is_memory

log = logging.getLogger("gateway.ratelimit")

# The RateLimit headers of a counted request, and the 429 when it was not admitted.
Admission = tuple[list[tuple[bytes, bytes]], GatewayError | None]

# Sentinel and Cluster counters: how long to skip Redis after it failed (the policy
# applies meanwhile without a connection attempt per request).
REDIS_RETRY_AFTER = 1.0


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
        if is_memory(storage):
            from gateway.pipeline.ratelimit.shared import counters_for

            # Shared by every worker of the machine under `server.workers` > 1.
            self.memory = counters_for(strategy, "ratelimit")
        else:
            self.redis = RedisCounters(
                storage, strategy, timeout=timeout, max_connections=max_connections
            )
        self._down_until = 0.0

    @classmethod
    def from_settings(cls, settings: Any, clock: Callable[[], float] | None = None) -> RateLimiter:
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
        return cached_policy(rate_limit) or parse_policy(rate_limit)

    def admit_local(self, key_id: str, rate_limit: str | None) -> Admission | None:
        """`admit` without an `await`, for counters in this process; None when they are
        in Redis (the request path saves a coroutine per request with memory://)."""
        memory = self.memory
        if memory is None:
            return None
        policy = self.policy_for(rate_limit)
        outcome = memory.acquire(key_id, policy, int((self.clock or time.time)() * 1000))
        headers = rate_limit_headers(policy, outcome, legacy=self.legacy_headers)
        return headers, None if outcome.admitted else rejection(policy, outcome)

    async def admit(self, key_id: str, rate_limit: str | None) -> Admission:
        """Count one request of the key: its RateLimit headers (for the client, admitted
        or not) and None, or the 429 RATE_LIMITED to answer (nothing was counted).
        GatewayError 503 when the backend is down and `on_backend_error = "deny"`; with
        `allow` it admits without headers (gateway_rate_limit_backend_fail_open_total)."""
        local = self.admit_local(key_id, rate_limit)
        if local is not None:
            return local
        policy = self.policy_for(rate_limit)
        outcome = await self._redis_acquire(key_id, policy)
        if outcome is None:
            return [], None
        headers = rate_limit_headers(policy, outcome, legacy=self.legacy_headers)
        if outcome.admitted:
            return headers, None
        return headers, rejection(policy, outcome)

    async def check(self, key_id: str, rate_limit: str | None) -> list[tuple[bytes, bytes]]:
        """`admit` as one call: the RateLimit headers, or GatewayError 429 (carrying them
        with its Retry-After) / 503."""
        headers, error = await self.admit(key_id, rate_limit)
        if error is None:
            return headers
        limited = {name.decode(): value.decode() for name, value in headers}
        error.headers = {**limited, **error.headers}
        raise error

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
                if not linked:
                    self._down_until = time.monotonic() + REDIS_RETRY_AFTER
                if not isinstance(exc, BackendDown):
                    log.warning("rate limit backend failed: %s", type(exc).__name__)
                metrics.BACKEND_ERRORS.labels("rate_limit").inc()
        if self.fail_open:
            metrics.RATE_LIMIT_FAIL_OPEN.inc()
            return None
        raise GatewayError("SERVICE_UNAVAILABLE", "The rate limit backend is unavailable.")

    async def close(self) -> None:
        if self.redis is not None:
            await self.redis.close()
