"""Benchmark 5: key verification with 100,000 keys in the store vs 10 keys.

Two SQLite stores, one with 10 keys and one with 100,000 (inserted through the store's
`insert_key`, as `KeyService.create` does). Rounds alternate between them and measure:

- lookup: verification with the cache off (every call looks the digest up in the store);
- cached: verification of keys already in the in-process cache.

Target: the 100,000-key cost within 1.2x of the 10-key cost (median of rounds).

    python bench/scale.py [--keys 100000] [--rounds 9] [--sample 500]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from gateway.keys import format as key_format
from gateway.keys.model import AccessLevel, ApiKey, Status, utcnow
from gateway.keys.service import KeyService
from gateway.pipeline.identify import KeyVerifier
from gateway.runtime import open_key_service
from gateway.settings import load_settings
from gateway.store.base import AuditEvent


async def fill(service: KeyService, count: int) -> list[str]:
    """Insert `count` active keys; their values."""
    values = []
    now = utcnow()
    for _ in range(count):
        value = key_format.generate_key("gw")
        key = ApiKey(
            id=key_format.generate_key_id(),
            name="scale",
            scope=AccessLevel.READ,
            sites=("*",),
            status=Status.ACTIVE,
            rate_limit=None,
            hint=key_format.hint(value),
            created_at=now,
            updated_at=now,
        )
        audit = AuditEvent(now, "create", key.id, "bench")
        await service.store.insert_key(key, service.digest(value), audit)
        values.append(value)
    return values


async def per_verify(verifier: KeyVerifier, values: list[str]) -> float:
    started = time.perf_counter()
    for value in values:
        await verifier.verify(value)
    return (time.perf_counter() - started) / len(values)


async def main(keys: int, rounds: int, sample: int) -> None:
    os.environ.setdefault("GATEWAY_SECRET", "bench-secret-" + "x" * 40)
    rng = random.Random(7)
    with tempfile.TemporaryDirectory() as tmp:
        services, samples, repeated = {}, {}, {}
        for count in (10, keys):
            settings = load_settings(storage={"url": f"sqlite:///{tmp}/{count}.db"})
            service = await open_key_service(settings)
            started = time.perf_counter()
            values = await fill(service, count)
            print(f"inserted {count} keys in {time.perf_counter() - started:.1f} s")
            services[count] = service
            samples[count] = [rng.choice(values) for _ in range(sample)]
            # The cached case verifies 10 distinct values on both stores: with the
            # 10-key store it cannot do otherwise, and 500 distinct values vs 10 would
            # measure CPU caches, not the store.
            ten = rng.sample(values, 10)
            repeated[count] = [ten[i % 10] for i in range(sample)]
            del values  # 100,000 live strings would only slow the garbage collector
        gc.collect()
        gc.freeze()  # what setup left alive is not rescanned during the rounds
        lookup = {c: KeyVerifier(s, cache_ttl=0) for c, s in services.items()}
        cached = {c: KeyVerifier(s, cache_ttl=3600) for c, s in services.items()}
        for count in services:  # warm up: the cached verifiers learn their sample
            await per_verify(lookup[count], samples[count])
            await per_verify(cached[count], repeated[count])
        results: dict[tuple[str, int], list[float]] = {}
        for _ in range(rounds):
            for count in services:
                for name, verifiers, values in (
                    ("lookup", lookup, samples[count]),
                    ("cached", cached, repeated[count]),
                ):
                    elapsed = await per_verify(verifiers[count], values)
                    results.setdefault((name, count), []).append(elapsed)
        for service in services.values():
            await service.store.close()

    print(f"rounds={rounds}, {sample} verifications per round, median µs per verification")
    worst = 0.0
    for name in ("lookup", "cached"):
        small = statistics.median(results[(name, 10)]) * 1e6
        large = statistics.median(results[(name, keys)]) * 1e6
        ratio = large / small
        worst = max(worst, ratio)
        print(
            f"{name:7s} 10 keys {small:8.2f} µs   {keys} keys {large:8.2f} µs   ratio {ratio:.2f}"
        )
    print("PASS" if worst <= 1.2 else "FAIL")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keys", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--sample", type=int, default=500)
    args = parser.parse_args()
    asyncio.run(main(args.keys, args.rounds, args.sample))
