"""Where bench 1's time goes: the middleware around a trivial ASGI app, whole and with one
stage at a time replaced by a stub that returns the same answer at no cost.

    python bench/hot_path_stages.py [--rounds 25] [--requests 2000]

Stages stubbed: key verification (`KeyVerifier.verify` of a cached key: HMAC + cache),
the rate limit check (`RateLimiter.check` with its headers), usage recording, and all
three at once (what remains is the middleware's own work: one pass over the headers,
request id, route rule, throttle check, scope/site checks, `scope["gateway.key"]`, the
`send` wrapper, metrics tally). Rounds interleave the variants; median and min printed.
A stage's cost is the whole minus the variant without it.
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

from hot_path import make_scope, receive, send

from gateway import GatewayMiddleware, Runtime, load_settings
from gateway.keys.model import KeyCreate


async def trivial(scope: dict, receive_, send_) -> None:
    await send_({"type": "http.response.start", "status": 200, "headers": []})
    await send_({"type": "http.response.body", "body": b"hello"})


async def run_round(app, headers, requests: int) -> float:
    started = time.perf_counter()
    for index in range(requests):
        await app(make_scope(headers), receive, send)
        if index % 50 == 49:
            await asyncio.sleep(0)
    return (time.perf_counter() - started) / requests * 1e6


async def main(rounds: int, requests: int) -> None:
    os.environ.setdefault("GATEWAY_SECRET", "bench-secret-" + "x" * 40)
    with tempfile.TemporaryDirectory() as tmp:
        settings = load_settings(
            storage={"url": f"sqlite:///{tmp}/bench.db"},
            rate_limit={"default": "1000000000/minute"},
            usage={"flush_interval": 3600},
        )
        runtime = Runtime(settings)
        await runtime.start()
        assert runtime.service is not None and runtime.verifier is not None
        assert runtime.limiter is not None and runtime.usage is not None
        key, value = await runtime.service.create(KeyCreate(name="bench", scope="read"))
        await runtime.verifier.verify(value)
        headers = [(b"host", b"127.0.0.1:8000"), (b"x-api-key", value.encode())]
        app = GatewayMiddleware(trivial, settings, runtime=runtime)
        verifier, limiter, usage = runtime.verifier, runtime.limiter, runtime.usage
        verify, check, record = verifier.verify, limiter.check, usage.record

        async def stub_verify(presented: str):
            return key

        async def stub_check(key_id: str, rate_limit: str | None):
            return []

        def stub_record(*args: object) -> None:
            pass

        def configure(variant: str) -> None:
            verifier.verify = stub_verify if variant in ("no verify", "stages stubbed") else verify
            limiter.check = stub_check if variant in ("no rate limit", "stages stubbed") else check
            usage.record = stub_record if variant in ("no usage", "stages stubbed") else record

        variants = ["whole", "no verify", "no rate limit", "no usage", "stages stubbed"]
        times: dict[str, list[float]] = {name: [] for name in ["app alone", *variants]}
        for _ in range(rounds):
            times["app alone"].append(await run_round(trivial, headers, requests))
            for variant in variants:
                configure(variant)
                times[variant].append(await run_round(app, headers, requests))
            configure("whole")
            await usage.flush()
        await runtime.stop()

    whole = statistics.median(times["whole"])
    print(f"rounds={rounds} requests/round={requests}   µs/request: median (min)")
    for name, values in times.items():
        median = statistics.median(values)
        note = f"   stage ≈ {whole - median:5.2f} µs" if name not in ("whole", "app alone") else ""
        print(f"  {name:15s} {median:6.2f} ({min(values):6.2f}){note}")
    added = whole - statistics.median(times["app alone"])
    print(f"  added by the middleware around the trivial app: {added:.2f} µs")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=25)
    parser.add_argument("--requests", type=int, default=2000)
    args = parser.parse_args()
    asyncio.run(main(args.rounds, args.requests))
