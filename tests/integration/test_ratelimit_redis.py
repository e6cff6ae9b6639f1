"""Rate limits against memory and a real Redis, with an injected clock (SPEC §4).

The same scenarios run on both backends; a further test feeds both the same random
sequence of requests and requires identical answers. Redis outages use a second
redis-server that the test starts, stops and pauses itself.
"""

from __future__ import annotations

import asyncio
import random
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Iterator

import pytest

from gateway import metrics
from gateway.errors import GatewayError
from gateway.pipeline.ratelimit import (
    MemoryCounters,
    Outcome,
    RateLimiter,
    RedisCounters,
    parse_policy,
    retry_after,
)
from tests.conftest import need

STRATEGIES = ["fixed-window", "moving-window", "sliding-window-counter"]


class Backend:
    """One interface over both counter backends: acquire at an explicit time (ms)."""

    def __init__(self, kind: str, strategy: str, redis_url: str | None) -> None:
        self.kind = kind
        if kind == "memory":
            self.memory: MemoryCounters | None = MemoryCounters(strategy)
            self.redis: RedisCounters | None = None
        else:
            assert redis_url is not None
            self.memory = None
            self.redis = RedisCounters(redis_url, strategy)

    async def acquire(self, subject: str, policy_text: str, now_ms: int) -> Outcome:
        policy = parse_policy(policy_text)
        if self.memory is not None:
            return self.memory.acquire(subject, policy, now_ms)
        assert self.redis is not None
        return await self.redis.acquire(subject, policy, now_ms)

    async def close(self) -> None:
        if self.redis is not None:
            await self.redis.close()


@pytest.fixture(params=["memory", "redis"])
def backend_kind(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
async def make_backend(backend_kind: str, request: pytest.FixtureRequest) -> AsyncIterator:
    made: list[Backend] = []

    def make(strategy: str) -> Backend:
        url = request.getfixturevalue("redis_url") if backend_kind == "redis" else None
        backend = Backend(backend_kind, strategy, url)
        made.append(backend)
        return backend

    yield make
    for backend in made:
        await backend.close()


T0 = 6_000_000  # ms; a multiple of every period used here, so windows start at T0


@pytest.mark.parametrize("strategy", STRATEGIES)
async def test_each_strategy_admits_the_amount_then_rejects(make_backend, strategy: str) -> None:
    backend = make_backend(strategy)
    remaining = []
    for _ in range(3):
        outcome = await backend.acquire("key_a", "3/minute", T0)
        assert outcome.admitted
        remaining.append(outcome.states[0][1])
    assert remaining == [2, 1, 0]
    rejected = await backend.acquire("key_a", "3/minute", T0 + 30_000)
    assert not rejected.admitted
    assert rejected.states[0][0] is False and rejected.states[0][1] == 0


@pytest.mark.parametrize("strategy", STRATEGIES)
async def test_exact_retry_at_the_window_edge(make_backend, strategy: str) -> None:
    """A retry 1 ms before the reported moment fails; at that moment it succeeds."""
    backend = make_backend(strategy)
    for offset in (0, 10_000, 20_000):
        assert (await backend.acquire("key_e", "3/minute", T0 + offset)).admitted
    now = T0 + 30_000
    rejected = await backend.acquire("key_e", "3/minute", now)
    assert not rejected.admitted
    wait_ms = rejected.states[0][2]
    expected = {
        "fixed-window": 30_000,  # the window began with the first hit at T0
        "moving-window": 30_000,  # the hit at T0 leaves the window at T0 + 60 s
        "sliding-window-counter": 30_001,  # weighted 3 * 59999/60000 < 3 just after T0+60s
    }[strategy]
    assert wait_ms == expected
    assert retry_after(rejected) == -(-expected // 1000)
    assert not (await backend.acquire("key_e", "3/minute", now + wait_ms - 1)).admitted
    assert (await backend.acquire("key_e", "3/minute", now + wait_ms)).admitted


@pytest.mark.parametrize("strategy", STRATEGIES)
async def test_a_rejected_request_consumes_nothing(make_backend, strategy: str) -> None:
    backend = make_backend(strategy)
    policy = "2/second;5/minute"
    now = T0
    previous: Outcome | None = None
    admitted = rejected = 0
    for step in range(40):
        outcome = await backend.acquire("key_m", policy, now)
        if outcome.admitted:
            admitted += 1
        else:
            rejected += 1
            if previous is not None and previous.now_ms == now:
                # same instant, nothing consumed: every limit reports what it did before
                assert [s[1] for s in outcome.states] == [s[1] for s in previous.states]
        # the minute limit only ever moves on admitted requests
        assert outcome.states[1][1] == 5 - admitted
        previous = outcome
        if step % 4 == 3:
            now += 1_000
    # 10 seconds of 4 attempts/second: the minute limit allows exactly 5 in total
    assert admitted == 5 and rejected == 35


@pytest.mark.parametrize("strategy", STRATEGIES)
async def test_concurrent_requests_never_overshoot(make_backend, strategy: str) -> None:
    backend = make_backend(strategy)
    outcomes = await asyncio.gather(
        *(backend.acquire("key_c", "10/minute;20/hour", T0) for _ in range(60))
    )
    assert sum(outcome.admitted for outcome in outcomes) == 10


@pytest.mark.redis
@pytest.mark.parametrize("strategy", STRATEGIES)
async def test_memory_and_redis_agree_exactly(redis_url: str, strategy: str) -> None:
    rng = random.Random(strategy)
    memory = Backend("memory", strategy, None)
    redis_backend = Backend("redis", strategy, redis_url)
    try:
        now = T0
        for _ in range(300):
            now += rng.choice([0, 1, 7, 120, 999, 1_000, 3_000])
            policy = rng.choice(["3/second", "3/second;10/10 seconds"])
            a = await memory.acquire("key_r", policy, now)
            b = await redis_backend.acquire("key_r", policy, now)
            assert a == b, (now, policy)
    finally:
        await redis_backend.close()


@pytest.mark.parametrize("strategy", STRATEGIES)
async def test_limiter_headers_match_on_both_backends(
    backend_kind: str, strategy: str, request: pytest.FixtureRequest
) -> None:
    storage = request.getfixturevalue("redis_url") if backend_kind == "redis" else "memory://"
    clock_s = [T0 / 1000]
    limiter = RateLimiter(
        default="2/minute", strategy=strategy, storage=storage, clock=lambda: clock_s[0]
    )
    try:
        headers = dict(await limiter.check("key_h", None))
        assert headers[b"ratelimit-policy"] == b'"2/minute";q=2;w=60'
        assert headers[b"ratelimit"] == b'"2/minute";r=1;t=60'
        assert headers[b"x-ratelimit-remaining"] == b"1"
        assert headers[b"x-ratelimit-reset"] == str(T0 // 1000 + 60).encode()
        await limiter.check("key_h", None)
        clock_s[0] += 15
        with pytest.raises(GatewayError) as caught:
            await limiter.check("key_h", None)
        assert caught.value.status == 429
        expected_retry = {"fixed-window": 45, "moving-window": 45, "sliding-window-counter": 46}
        assert caught.value.headers["Retry-After"] == str(expected_retry[strategy])
        assert caught.value.details["retryAfter"] == expected_retry[strategy]
    finally:
        await limiter.close()


# --- Redis outages ------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class RedisProcess:
    """A redis-server of our own, to stop, pause and restart."""

    def __init__(self) -> None:
        self.executable = need("redis-server", shutil.which("redis-server"))
        self.port = _free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [self.executable, "--port", str(self.port), "--save", "", "--appendonly", "no"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return
            except OSError:
                time.sleep(0.02)
        raise RuntimeError("redis-server did not start")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.send_signal(signal.SIGCONT)
            self.proc.terminate()
            self.proc.wait(10)
            self.proc = None


@pytest.fixture
def own_redis() -> Iterator[RedisProcess]:
    server = RedisProcess()
    server.start()
    yield server
    server.stop()


async def _timed_check(limiter: RateLimiter) -> tuple[float, list | GatewayError]:
    started = time.monotonic()
    try:
        result: list | GatewayError = await limiter.check("key_down", None)
    except GatewayError as exc:
        result = exc
    return time.monotonic() - started, result


@pytest.mark.redis
async def test_redis_stopped_allow_fails_open_then_recovers(own_redis: RedisProcess) -> None:
    limiter = RateLimiter(default="100/minute", storage=own_redis.url, on_backend_error="allow")
    try:
        assert await limiter.check("key_down", None)  # headers: Redis answered
        before = metrics.RATE_LIMIT_FAIL_OPEN._value.get()
        own_redis.stop()
        for _ in range(3):
            elapsed, result = await _timed_check(limiter)
            assert result == [] and elapsed < 1.5  # admitted, no headers, no hang
        assert metrics.RATE_LIMIT_FAIL_OPEN._value.get() == before + 3
        own_redis.start()
        deadline = time.monotonic() + 5
        while True:
            _, result = await _timed_check(limiter)
            if result:
                break
            assert time.monotonic() < deadline, "the limiter did not recover"
            await asyncio.sleep(0.05)
    finally:
        await limiter.close()


@pytest.mark.redis
async def test_redis_stopped_deny_answers_503(own_redis: RedisProcess) -> None:
    limiter = RateLimiter(default="100/minute", storage=own_redis.url, on_backend_error="deny")
    try:
        await limiter.check("key_down", None)
        own_redis.stop()
        elapsed, result = await _timed_check(limiter)
        assert isinstance(result, GatewayError)
        assert result.status == 503 and result.code == "SERVICE_UNAVAILABLE"
        assert elapsed < 1.5
    finally:
        await limiter.close()


@pytest.mark.redis
async def test_redis_paused_does_not_hang(own_redis: RedisProcess) -> None:
    limiter = RateLimiter(default="100/minute", storage=own_redis.url, on_backend_error="deny")
    try:
        await limiter.check("key_down", None)
        assert own_redis.proc is not None
        own_redis.proc.send_signal(signal.SIGSTOP)
        elapsed, result = await _timed_check(limiter)
        assert isinstance(result, GatewayError) and result.status == 503
        assert elapsed < 1.5
        # while it is known to be down, requests do not wait for it at all
        elapsed, result = await _timed_check(limiter)
        assert isinstance(result, GatewayError) and elapsed < 0.1
    finally:
        own_redis.proc.send_signal(signal.SIGCONT)
        await limiter.close()


@pytest.mark.redis
async def test_the_script_is_loaded_again_after_a_script_flush(redis_url: str) -> None:
    """One way of running the Lua: EVALSHA, and SCRIPT LOAD on NOSCRIPT (a restarted or
    new server has no scripts)."""
    import redis

    counters = RedisCounters(redis_url, "fixed-window")
    try:
        assert (await counters.acquire("key_s", parse_policy("2/minute"), T0)).admitted
        admin = redis.Redis.from_url(redis_url)
        admin.script_flush()
        admin.close()
        outcome = await counters.acquire("key_s", parse_policy("2/minute"), T0)
        assert outcome.admitted and outcome.states[0][1] == 0  # the count survived
    finally:
        await counters.close()
