"""Benchmark 4: Redis round trips per request, with Redis storage and a cached key.

Starts its own redis-server on a free port, runs requests through the mounted middleware
(store, key cache and rate limits all on Redis), and counts:

- round trips the gateway's Redis clients send (every `send_packed_command`, one per
  command or pipeline), per request;
- `INFO commandstats` deltas on the server (commands run inside the Lua script are
  listed there too, but cost no round trip);

and, as the baseline in the same run, the same policy checked the way `limits.aio`'s
strategies do it (test every limit, hit every limit, read each window's stats).
Usage is flushed once at the end (batched writes, reported separately). Target: 1.

    python bench/redis_round_trips.py [--requests 2000] [--policy "10000/minute;100000/hour"]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import limits
import redis
from limits.aio.strategies import SlidingWindowCounterRateLimiter
from redis.asyncio.connection import Connection

from gateway import GatewayMiddleware, Runtime, load_settings
from gateway.keys.model import KeyCreate

SENT = [0]
_original_send = Connection.send_packed_command


async def _counting_send(self, command, check_health=True):  # type: ignore[no-untyped-def]
    SENT[0] += 1
    return await _original_send(self, command, check_health)


Connection.send_packed_command = _counting_send  # type: ignore[method-assign]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def commandstats(client: redis.Redis) -> dict[str, int]:
    stats = client.info("commandstats")
    return {name.removeprefix("cmdstat_"): int(v["calls"]) for name, v in stats.items()}


def delta(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    names = set(before) | set(after)
    out = {n: after.get(n, 0) - before.get(n, 0) for n in names}
    return {n: c for n, c in sorted(out.items()) if c and n not in ("info",)}


async def app(scope, receive, send) -> None:  # type: ignore[no-untyped-def]
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})


def scope_for(value: str) -> dict:
    return {
        "type": "http",
        "method": "GET",
        "path": "/items/1",
        "raw_path": b"/items/1",
        "query_string": b"",
        "headers": [(b"host", b"gw"), (b"x-api-key", value.encode())],
        "client": ("127.0.0.1", 1),
        "server": ("gw", 80),
    }


async def receive() -> dict:
    return {"type": "http.request", "body": b"", "more_body": False}


async def main(requests: int, policy_text: str) -> None:
    os.environ.setdefault("GATEWAY_SECRET", "bench-secret-" + "x" * 40)
    executable = shutil.which("redis-server")
    if not executable:
        sys.exit("redis-server is not installed")
    port = free_port()
    url = f"redis://127.0.0.1:{port}/0"
    with tempfile.TemporaryDirectory() as tmp:
        server = subprocess.Popen(
            [executable, "--port", str(port), "--save", "", "--dir", tmp],
            stdout=subprocess.DEVNULL,
        )
        try:
            admin = redis.Redis.from_url(url)
            deadline = time.monotonic() + 10
            while True:
                try:
                    admin.ping()
                    break
                except redis.ConnectionError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.05)
            await run(url, admin, requests, policy_text)
        finally:
            server.terminate()
            server.wait(10)


async def run(url: str, admin: redis.Redis, requests: int, policy_text: str) -> None:
    settings = load_settings(
        storage={"url": url},
        rate_limit={"default": policy_text},
        usage={"flush_interval": 3600},
    )
    runtime = Runtime(settings)
    await runtime.start()
    assert runtime.service is not None and runtime.usage is not None
    _, value = await runtime.service.create(KeyCreate(name="bench", scope="read"))
    middleware = GatewayMiddleware(app, settings, runtime=runtime)
    statuses: list[int] = []

    async def send(message: dict) -> None:
        if message["type"] == "http.response.start":
            statuses.append(message["status"])

    await middleware(scope_for(value), receive, send)  # caches the key
    await asyncio.sleep(0.3)  # let the change feed subscribe (it empties the cache once)
    await middleware(scope_for(value), receive, send)
    await runtime.usage.flush()
    statuses.clear()

    before, sent_before = commandstats(admin), SENT[0]
    for _ in range(requests):
        await middleware(scope_for(value), receive, send)
    ours_sent = SENT[0] - sent_before
    ours = delta(before, commandstats(admin))
    assert statuses.count(200) == requests, set(statuses)

    before, sent_before = commandstats(admin), SENT[0]
    await runtime.usage.flush()
    usage_sent = SENT[0] - sent_before
    usage_cmds = delta(before, commandstats(admin))
    await runtime.stop()

    # Baseline: limits.aio's strategy calls for the same policy (all-or-nothing needs
    # test for every limit first, then hit every limit, then the stats for headers).
    from limits.storage import storage_from_string

    from gateway.store.redis_topology import limits_uri

    storage = storage_from_string(limits_uri(url), implementation="redispy")
    limiter = SlidingWindowCounterRateLimiter(storage)
    items = limits.parse_many(policy_text)
    before, sent_before = commandstats(admin), SENT[0]
    for _ in range(requests):
        if all([await limiter.test(item, "bench") for item in items]):
            for item in items:
                await limiter.hit(item, "bench")
        for item in items:
            await limiter.get_window_stats(item, "bench")
    base_sent = SENT[0] - sent_before
    base_cmds = delta(before, commandstats(admin))
    await storage.bridge.get_connection().aclose()

    per = requests
    print(f"policy {policy_text!r}, {requests} requests, cached key, Redis store + limits")
    print(f"gateway : {ours_sent / per:.3f} round trips/request; commandstats per request:")
    print("          " + ", ".join(f"{n}={c / per:.2f}" for n, c in ours.items()))
    print(
        f"usage   : {usage_sent} round trips for {per} records "
        f"({usage_sent / per:.4f}/request, batched); commands: "
        + ", ".join(f"{n}={c}" for n, c in usage_cmds.items())
    )
    print(f"baseline: {base_sent / per:.3f} round trips/request (limits.aio test+hit+stats)")
    print("          " + ", ".join(f"{n}={c / per:.2f}" for n, c in base_cmds.items()))
    print(f"ratio gateway/baseline round trips: {ours_sent / base_sent:.2f}")
    print("PASS" if ours_sent / per <= 1.0 else "FAIL")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--policy", default="10000/minute;100000/hour")
    args = parser.parse_args()
    asyncio.run(main(args.requests, args.policy))
