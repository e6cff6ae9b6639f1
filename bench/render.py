"""Benchmark: rendering admin bodies (API, `gateway keys --json`) from the response models.

`gateway.keys.render` builds `gateway.keys.shapes` models with `model_construct` and dumps
them in JSON mode. The baseline, measured in the same run and interleaved with it, is the
hand-written dict builder the models replaced (a copy below; the output is checked equal
first). Reported: the median over rounds of CPU time (process_time) per body, and the
ratio to the baseline, for one key (`key_body`) and a page of 100 keys (`key_list_body`).
This is the CLI and admin API only, not the request path.

    taskset -c 0 python bench/render.py [--rounds 15] [--repeat 200]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from gateway.keys import render
from gateway.keys.model import AccessLevel, ApiKey, Status, rfc3339
from gateway.store.base import Page


def hand_key(key: ApiKey, rotation_days: int = 90) -> dict[str, Any]:
    """The hand-written renderer the models replaced (baseline only)."""
    return {
        "id": key.id,
        "name": key.name,
        "scope": key.scope.value,
        "sites": list(key.sites),
        "status": key.status.value,
        "rateLimit": key.rate_limit,
        "hint": key.hint,
        "createdAt": rfc3339(key.created_at),
        "updatedAt": rfc3339(key.updated_at),
        "lastUsedAt": rfc3339(key.last_used_at),
        "expiresAt": rfc3339(key.expires_at),
        "revokedAt": rfc3339(key.revoked_at),
        "rotatedAt": rfc3339(key.rotated_at),
        "rotationDue": key.rotation_due(rotation_days),
        "expired": key.expired(),
    }


def hand_list(page: Page[ApiKey]) -> dict[str, Any]:
    return {"data": [hand_key(k) for k in page.data], "nextCursor": page.next_cursor}


def cpu_per_call(fn: Callable[[], object], repeat: int) -> float:
    start = time.process_time()
    for _ in range(repeat):
        fn()
    return (time.process_time() - start) / repeat


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--repeat", type=int, default=200)
    args = parser.parse_args()
    now = datetime.now(UTC)
    key = ApiKey(
        "key_abcdefghijklmnop", "ci", AccessLevel.ADMIN, ("*",), Status.ACTIVE, "10/minute",
        "abcd", now, now, now, now + timedelta(days=9), None, now,
    )  # fmt: skip
    page = Page([key] * 100, "12")
    assert render.key_body(key) == {"apiKey": hand_key(key)}
    assert render.key_list_body(page) == hand_list(page)
    cases = {
        "key_body": (lambda: render.key_body(key), lambda: {"apiKey": hand_key(key)}, 50),
        "key_list_body (100 keys)": (
            lambda: render.key_list_body(page),
            lambda: hand_list(page),
            1,
        ),
    }
    for name, (models, hand, scale) in cases.items():
        ours: list[float] = []
        base: list[float] = []
        for _ in range(args.rounds):  # interleaved, so both see the same machine
            base.append(cpu_per_call(hand, args.repeat * scale))
            ours.append(cpu_per_call(models, args.repeat * scale))
        m, b = statistics.median(ours), statistics.median(base)
        print(f"{name}: models {m * 1e6:.1f} us, hand-written {b * 1e6:.1f} us, ratio {m / b:.2f}")


if __name__ == "__main__":
    main()
