"""Benchmark 1: the mounted middleware's cost per request, in process.

The same bare Starlette app is called directly through ASGI (no server, no sockets),
once bare and once wrapped in GatewayMiddleware with a valid, cached key, a SQLite store
and in-memory rate limits. Rounds alternate between the two so that both see the same
machine state; the result is the median per-request time of each and their difference.
Target: at most 25 µs added per request.

    python bench/hot_path.py [--rounds 21] [--requests 2000] [--profile]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from gateway import GatewayMiddleware, Runtime, load_settings
from gateway.keys.model import KeyCreate

TARGET_US = 25.0


async def hello(request: Request) -> PlainTextResponse:
    return PlainTextResponse("hello")


def bare_app() -> Starlette:
    return Starlette(routes=[Route("/items/{item}", hello)])


def make_scope(headers: list[tuple[bytes, bytes]]) -> dict:
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": "/items/42",
        "raw_path": b"/items/42",
        "root_path": "",
        "query_string": b"",
        "headers": headers,
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8000),
    }


async def receive() -> dict:
    return {"type": "http.request", "body": b"", "more_body": False}


async def send(message: dict) -> None:
    return None


async def run_round(app, headers, requests: int) -> float:
    """Seconds per request over `requests` sequential calls.

    Every 50 requests the loop gets a turn, as it would between requests in a server
    (the calls themselves never wait)."""
    started = time.perf_counter()
    for index in range(requests):
        await app(make_scope(headers), receive, send)
        if index % 50 == 49:
            await asyncio.sleep(0)
    return (time.perf_counter() - started) / requests


async def main(rounds: int, requests: int, profile: bool) -> None:
    os.environ.setdefault("GATEWAY_SECRET", "bench-secret-" + "x" * 40)
    with tempfile.TemporaryDirectory() as tmp:
        settings = load_settings(
            storage={"url": f"sqlite:///{tmp}/bench.db"},
            rate_limit={"default": "1000000000/minute"},
            # The usage buffer is flushed between rounds instead (untimed; its cost per
            # record is measured on its own below), so rounds time the request path.
            usage={"flush_interval": 3600},
        )
        runtime = Runtime(settings)
        await runtime.start()
        assert runtime.service is not None
        _, value = await runtime.service.create(KeyCreate(name="bench", scope="read"))
        bare = bare_app()
        wrapped = GatewayMiddleware(bare_app(), settings, runtime=runtime)
        headers = [
            (b"host", b"127.0.0.1:8000"),
            (b"user-agent", b"bench/1.0"),
            (b"accept", b"*/*"),
            (b"x-api-key", value.encode()),
        ]
        # warm up both (and the key cache); check the wrapped app really admits
        statuses: list[int] = []

        async def record(message: dict) -> None:
            if message["type"] == "http.response.start":
                statuses.append(message["status"])

        await wrapped(make_scope(headers), receive, record)
        assert statuses == [200], statuses
        await run_round(bare, headers, requests)
        await run_round(wrapped, headers, requests)

        if profile:
            import cProfile
            import pstats

            profiler = cProfile.Profile()
            profiler.enable()
            await run_round(wrapped, headers, requests * 5)
            profiler.disable()
            pstats.Stats(profiler).sort_stats("tottime").print_stats(25)

        assert runtime.usage is not None
        await runtime.usage.flush()
        bare_times, wrapped_times, flush_times = [], [], []
        for _ in range(rounds):
            bare_times.append(await run_round(bare, headers, requests))
            wrapped_times.append(await run_round(wrapped, headers, requests))
            pending = len(runtime.usage)
            started = time.perf_counter()
            await runtime.usage.flush()
            flush_times.append((time.perf_counter() - started) / pending)
        await runtime.stop()

    bare_us = statistics.median(bare_times) * 1e6
    wrapped_us = statistics.median(wrapped_times) * 1e6
    added = [(w - b) * 1e6 for b, w in zip(bare_times, wrapped_times, strict=True)]
    added_us = statistics.median(added)
    print(f"rounds={rounds} requests/round={requests}")
    print(f"bare Starlette app      median {bare_us:8.2f} µs/request")
    print(f"with GatewayMiddleware  median {wrapped_us:8.2f} µs/request")
    print(f"added per request       median {added_us:8.2f} µs (target ≤ {TARGET_US:.0f} µs)")
    print(f"ratio wrapped/bare      {wrapped_us / bare_us:.2f}")
    flush_us = statistics.median(flush_times) * 1e6
    print(
        f"background usage write  median {flush_us:8.2f} µs/record (SQLite, off the request path)"
    )
    print("PASS" if added_us <= TARGET_US else "FAIL")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=21)
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args()
    asyncio.run(main(args.rounds, args.requests, args.profile))
