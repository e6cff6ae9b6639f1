"""Bench — how long `gateway keys revoke|rotate|edit|delete` waits for a running gateway.

A real `gateway serve` runs on the store in its own process. This process writes a key
change through KeyService (as the CLI does) and times `wait_applied` — from the write's
commit until the gateway has recorded that it applied the change (SPEC §10: at most 1 s).
SQLite: the gateway polls every 0.1 s, so the wait is up to one poll plus one write.
Redis: the change arrives by pub/sub, so the wait is a round trip or two.

    GATEWAY_SECRET=... python bench/change_reach.py sqlite:////tmp/reach.db [--trials 30]
    GATEWAY_SECRET=... python bench/change_reach.py redis://127.0.0.1:6379/0
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import statistics
import subprocess
import sys
import time

from gateway.keys.model import KeyCreate
from gateway.runtime import key_service
from gateway.settings import load_settings
from gateway.store.presence import wait_applied


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


async def measure(url: str, trials: int) -> list[float]:
    async with key_service(load_settings(storage={"url": url})) as service:
        while not await service.store.live_gateways():
            await asyncio.sleep(0.05)
        waits = []
        for _ in range(trials):
            key, _ = await service.create(KeyCreate(name="bench", scope="read"))
            await service.revoke(key.id)
            started = time.perf_counter()
            behind = await wait_applied(service.store)
            waits.append((time.perf_counter() - started) * 1000)
            assert not behind, behind
            await asyncio.sleep(0.137)  # out of step with the gateway's poll
        return waits


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url")
    parser.add_argument("--trials", type=int, default=30)
    args = parser.parse_args()
    serve = [sys.executable, "-m", "gateway", "serve", "--upstream", "http://127.0.0.1:9"]
    serve += ["--listen", f"127.0.0.1:{free_port()}", "--admin-listen", f"127.0.0.1:{free_port()}"]
    env = {**os.environ, "GATEWAY_STORAGE__URL": args.url}
    gateway = subprocess.Popen(serve, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        waits = sorted(asyncio.run(measure(args.url, args.trials)))
    finally:
        gateway.terminate()
        gateway.wait()
    p90 = waits[int(len(waits) * 0.9) - 1]
    print(
        f"{args.url.split(':')[0]}: wait after the write, {len(waits)} trials: median "
        f"{statistics.median(waits):.1f} ms, p90 {p90:.1f} ms, max {waits[-1]:.1f} ms"
    )


if __name__ == "__main__":
    main()
