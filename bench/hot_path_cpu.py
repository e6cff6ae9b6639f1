"""The mounted middleware's added CPU per request, for comparing two trees in one run.

`bench/hot_path.py` measures wall time around Starlette; on a shared, loaded machine
wall time also counts other processes. This measures the process's CPU time
(`time.process_time`) per request: a trivial ASGI app called directly, bare and wrapped
in `GatewayMiddleware` (cached key, SQLite store, memory limits, usage buffered), rounds
interleaved, medians. `--tree DIR` imports `gateway` from another checkout (e.g. the
commit before a change, from `git archive`), so before/after are the same script:

    git archive <commit> | tar -x -C /tmp/before
    taskset -c 0 python bench/hot_path_cpu.py --tree /tmp/before
    taskset -c 0 python bench/hot_path_cpu.py
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

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--tree", default=str(Path(__file__).resolve().parent.parent))
parser.add_argument("--rounds", type=int, default=15)
parser.add_argument("--requests", type=int, default=3000)
ARGS = parser.parse_args()
sys.path.insert(0, ARGS.tree)

from gateway import GatewayMiddleware, Runtime, load_settings  # noqa: E402
from gateway.keys.model import KeyCreate  # noqa: E402


async def trivial(scope: dict, receive: object, send: object) -> None:
    # New messages each time, as apps make them (the middleware adds to the headers).
    start = {"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]}
    await send(start)  # type: ignore[operator]
    await send({"type": "http.response.body", "body": b"ok"})  # type: ignore[operator]


async def receive() -> dict:
    return {"type": "http.request", "body": b"", "more_body": False}


async def send(message: dict) -> None:
    pass


def scope(headers: list[tuple[bytes, bytes]]) -> dict:
    return {
        "type": "http",
        "method": "GET",
        "scheme": "http",
        "path": "/items/42",
        "raw_path": b"/items/42",
        "query_string": b"",
        "headers": headers,
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8000),
    }


async def run_round(app: object, headers: list[tuple[bytes, bytes]], n: int) -> float:
    started = time.process_time()
    for _ in range(n):
        await app(scope(headers), receive, send)  # type: ignore[operator]
    return (time.process_time() - started) / n


async def main() -> None:
    os.environ.setdefault("GATEWAY_SECRET", "bench-secret-" + "x" * 40)
    with tempfile.TemporaryDirectory() as tmp:
        settings = load_settings(
            storage={"url": f"sqlite:///{tmp}/bench.db"},
            rate_limit={"default": "1000000000/minute"},
            usage={"flush_interval": 3600},
        )
        runtime = Runtime(settings)
        await runtime.start()
        _, value = await runtime.service.create(KeyCreate(name="bench", scope="read"))
        wrapped = GatewayMiddleware(trivial, settings, runtime=runtime)
        headers = [
            (b"host", b"127.0.0.1:8000"),
            (b"user-agent", b"bench/1.0"),
            (b"accept", b"*/*"),
            (b"x-api-key", value.encode()),
        ]
        await run_round(wrapped, headers, 100)  # warm the key cache
        bare_t, wrapped_t = [], []
        for _ in range(ARGS.rounds):
            bare_t.append(await run_round(trivial, headers, ARGS.requests))
            wrapped_t.append(await run_round(wrapped, headers, ARGS.requests))
            await runtime.usage.flush()
        await runtime.stop()
    added = statistics.median(w - b for b, w in zip(bare_t, wrapped_t, strict=True)) * 1e6
    print(
        f"tree={ARGS.tree} rounds={ARGS.rounds} requests/round={ARGS.requests}: "
        f"bare {statistics.median(bare_t) * 1e6:.2f} µs CPU, "
        f"wrapped {statistics.median(wrapped_t) * 1e6:.2f} µs CPU, added {added:.2f} µs CPU"
    )


if __name__ == "__main__":
    asyncio.run(main())
