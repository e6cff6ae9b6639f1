"""Redis connections for the store and the rate-limit counters (SPEC §13).

Three rules, one place:

- **Load is not a fault.** Each client has a *blocking* pool of `max_connections`: a call
  that finds every connection busy waits for one instead of failing.
- **A deadline measured on Redis, not on us.** A call fails only when Redis itself stops
  answering: a watchdog thread PINGs Redis on a connection of its own every
  `timeout / 2` seconds, and a call gives up once the watchdog, having asked since the
  call began, has had no answer for `timeout` seconds (a frozen or unreachable Redis). A
  call merely queued behind hundreds of others — a busy pool, a busy event loop — keeps
  waiting (up to `CAP_SECONDS`), since the watchdog, outside the event loop, still hears
  Redis. So a healthy Redis under load
  never produces a timeout (and never switches rate limiting off), and a frozen one is
  detected within about `timeout`.
- **Stale connections are retried once.** After a Redis restart every pooled connection is
  dead; redis-py's retry (ConnectionError only, once, no backoff) reconnects and repeats
  the command on the fresh connection, so no request fails because an idle connection went
  stale. Timeouts are never retried (the deadline must hold).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import AsyncIterator
from typing import Any

import redis
from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

log = logging.getLogger("gateway.redis")

# The longest a call waits while Redis is alive but busy (a safety net, never reached by a
# healthy Redis at the loads measured in bench/).
CAP_SECONDS = 5.0
# Connections of one client being opened at the same time (see redis_client).
CONNECTING_AT_ONCE = 4


class Liveness:
    """Whether Redis answers, as heard by a watchdog thread with its own connection.

    The thread is not slowed by the event loop, so "no PONG for `timeout` seconds" means
    Redis (or the path to it) is failing, not that this process is busy."""

    def __init__(self, url: str, timeout: float, *, cap: float = CAP_SECONDS) -> None:
        self.timeout = timeout
        self.cap = max(cap, timeout)
        self.interval = timeout / 2
        self.last_pong = time.monotonic()
        # When the watchdog last ran (set before and after each PING): a watchdog that has
        # not run for longer than a PING can take was paused with the whole process
        # (SIGSTOP, a VM freeze), which says nothing about Redis.
        self.last_tick = self.last_pong
        self.last_attempt = -1.0  # when the watchdog last started a PING
        self._stop = threading.Event()
        self._url = url
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="redis-watchdog", daemon=True)
            self._thread.start()

    def stop(self, *, wait: bool = True) -> None:
        """Stop the watchdog (it ends within one PING timeout; `wait` joins it)."""
        self._stop.set()
        if self._thread is not None and wait:
            self._thread.join(self.timeout + 1.0)
        self._thread = None

    def _run(self) -> None:
        client = redis.Redis.from_url(
            self._url,
            socket_timeout=self.timeout,
            socket_connect_timeout=self.timeout,
            retry=None,
        )
        try:
            while not self._stop.is_set():
                self.last_tick = time.monotonic()
                self.last_attempt = time.monotonic()
                try:
                    client.ping()
                    self.last_pong = time.monotonic()
                except Exception:  # silence is what the callers measure
                    pass
                self.last_tick = time.monotonic()
                self._stop.wait(self.interval)
        finally:
            with contextlib.suppress(Exception):
                client.close()

    def answered(self) -> None:
        self.last_pong = time.monotonic()

    def silent_for(self) -> float:
        """Seconds since Redis last answered the watchdog, beyond its PING interval; 0 while
        the watchdog itself has not run for longer than a PING can take (the process was
        paused: the calls' own deadline decides until the watchdog has pinged again)."""
        now = time.monotonic()
        if now - self.last_tick > 2 * self.timeout + self.interval:
            return 0.0
        return max(0.0, now - self.last_pong - self.interval)

    def silent_since(self, started: float) -> bool:
        """Whether Redis is silent for a call begun at `started` (time.monotonic()): no
        PONG for `timeout`, and the watchdog has asked since the call began — a watchdog
        that has not run meanwhile (a starved machine) is no evidence against Redis."""
        return self.last_attempt > started and self.silent_for() >= self.timeout

    @contextlib.asynccontextmanager
    async def deadline(self) -> AsyncIterator[None]:
        """Bound the calls inside: TimeoutError once Redis is silent for `timeout` seconds
        (or after `cap` seconds in all)."""
        loop = asyncio.get_running_loop()
        async with asyncio.timeout(None) as timer:
            watch = _Watch(self, timer, loop.time(), time.monotonic())
            watch.handle = loop.call_later(self.timeout, watch.check)
            try:
                yield
            finally:
                watch.handle.cancel()


class _Watch:
    __slots__ = ("began", "handle", "liveness", "start", "timer")

    def __init__(
        self, liveness: Liveness, timer: asyncio.Timeout, start: float, began: float
    ) -> None:
        self.liveness = liveness
        self.timer = timer
        self.start = start  # loop time
        self.began = began  # time.monotonic(), the watchdog's clock
        self.handle: asyncio.TimerHandle

    def check(self) -> None:
        live = self.liveness
        loop = asyncio.get_running_loop()
        now = loop.time()
        silent = live.silent_for()
        if live.silent_since(self.began) or now - self.start >= live.cap:
            log.debug("redis call given up: silent %.3fs, pending %.3fs", silent, now - self.start)
            self.timer.reschedule(now)
        else:
            self.handle = loop.call_later(max(live.timeout - silent, live.interval), self.check)


class BackendDown(Exception):
    """Redis is known to be failing (a call failed for real); not tried until a probe
    answers."""


def redis_client(
    url: str,
    *,
    max_connections: int,
    decode_responses: bool = False,
) -> Redis:
    """A redis-py asyncio client on a blocking pool of `max_connections` (ValueError on a
    bad URL). Socket reads are bounded by the caller's `Liveness.deadline`, not by a
    per-socket timeout that a busy event loop would trip."""
    pool = BlockingConnectionPool.from_url(
        url,
        max_connections=max_connections,
        timeout=None,  # the wait is bounded by the caller's deadline
        decode_responses=decode_responses,
        socket_timeout=CAP_SECONDS,
        socket_connect_timeout=CAP_SECONDS,
        socket_keepalive=True,
        retry=Retry(NoBackoff(), 1, supported_errors=(RedisConnectionError,)),
    )
    base = pool.connection_class
    # New connections are opened a few at a time: a cold burst of hundreds of calls then
    # gets its first answers within milliseconds (the earliest connections serve while
    # the pool grows) instead of all handshakes advancing in lockstep, none finishing.
    opening = asyncio.Semaphore(CONNECTING_AT_ONCE)

    class Watched(base):  # type: ignore[valid-type, misc]
        async def connect(self) -> None:
            if self.is_connected:
                return
            async with opening:
                await super().connect()

    pool.connection_class = Watched
    return Redis(connection_pool=pool)


class RedisLink:
    """One Redis client with its liveness: the only way the gateway talks to Redis.

    `guard()` bounds a call (see `Liveness`). A call that fails for real — Redis silent
    for `timeout`, or the connection refused or reset again on a fresh connection — marks
    the link down: from then on calls fail at once with `BackendDown` (no request waits
    for a Redis known to be failing) while a background probe PINGs every
    `PROBE_SECONDS`; the first answer brings the link back, with or without traffic."""

    PROBE_SECONDS = 0.2

    def __init__(
        self,
        url: str,
        *,
        timeout: float,
        max_connections: int,
        decode_responses: bool = False,
        name: str = "redis",
    ) -> None:
        self.client = redis_client(
            url, max_connections=max_connections, decode_responses=decode_responses
        )
        self.liveness = Liveness(url, timeout)
        self.liveness.start()
        self.name = name
        self.down = False
        self.failures = 0  # calls that failed for real (for tests and logs)
        self._probe: asyncio.Task[None] | None = None
        self._closed = False

    @contextlib.asynccontextmanager
    async def guard(self) -> AsyncIterator[Redis]:
        """The client for one bounded call; BackendDown at once while Redis is failing.
        Errors raised inside (TimeoutError, redis errors, OSError) propagate."""
        if self.down:
            raise BackendDown(f"{self.name}: Redis is unavailable")
        try:
            async with self.liveness.deadline():
                yield self.client
        except (TimeoutError, RedisTimeoutError, RedisConnectionError, OSError):
            self.failed()
            raise

    def failed(self) -> None:
        """Mark the link down (after a real failure) and start probing for Redis."""
        self.failures += 1
        if self.down or self._closed:
            return
        self.down = True
        # info: the server logs it; a CLI command shows its own one-line error instead.
        log.info("%s: Redis is failing; probing every %.1fs", self.name, self.PROBE_SECONDS)
        if self._probe is None or self._probe.done():
            self._probe = asyncio.get_running_loop().create_task(self._run_probe())

    def revived(self) -> None:
        """Redis answered on another path (e.g. the change feed subscribed again)."""
        self.liveness.answered()
        if self.down:
            self.down = False
            log.info("%s: Redis answers again", self.name)

    async def _run_probe(self) -> None:
        while not self._closed and self.down:
            await asyncio.sleep(self.PROBE_SECONDS)
            try:
                async with self.liveness.deadline():
                    await self.client.ping()
            except asyncio.CancelledError:
                raise
            except Exception:  # still down
                continue
            self.revived()
            return

    async def close(self) -> None:
        self._closed = True
        self.liveness.stop(wait=False)
        if self._probe is not None:
            self._probe.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._probe
            self._probe = None
        with contextlib.suppress(Exception):
            await self.client.aclose()
        with contextlib.suppress(Exception):
            await self.client.connection_pool.disconnect()


def pool_size(settings: Any) -> int:
    """Connections per Redis client: as many as the upstream connections the operator
    planned for (`upstream.max_connections`), at least 8."""
    return max(8, int(settings.upstream.max_connections))
