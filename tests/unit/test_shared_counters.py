"""The workers' shared counter table (pipeline/ratelimit/shared.py, SPEC §13).

It must give exactly the in-process answers (same random sequences as the memory
backend, every strategy, single and multi-limit policies), and stay exact when several
processes hit the same key at once — and a process killed while holding a partition lock
must not block the others.
"""

from __future__ import annotations

import os
import random
import signal
import time

import pytest

from gateway.pipeline.ratelimit import MemoryCounters, parse_policy
from gateway.pipeline.ratelimit.shared import SharedCounters, SharedTable

STRATEGIES = ["fixed-window", "moving-window", "sliding-window-counter"]
T0 = 1_700_000_000_000


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_agrees_with_memory_counters(strategy: str) -> None:
    rng = random.Random(strategy)
    table = SharedTable(partitions=4, slots_per_partition=256)
    shared = SharedCounters(table, strategy, "ratelimit")
    memory = MemoryCounters(strategy)
    now = T0
    for _ in range(3000):
        now += rng.choice([0, 0, 1, 7, 120, 999, 1_000, 3_000])
        policy = parse_policy(rng.choice(["3/second", "3/second;10/10 seconds", "7/minute"]))
        subject = rng.choice(["a", "b", "c"])
        hit = rng.random() > 0.1
        expected = memory.acquire(subject, policy, now, hit=hit)
        assert shared.acquire(subject, policy, now, hit=hit) == expected, (now, policy.text)


def test_names_keep_counters_apart_and_known_peeks() -> None:
    table = SharedTable(partitions=2, slots_per_partition=64)
    proxy = SharedCounters(table, "sliding-window-counter", "throttle:proxy")
    admin = SharedCounters(table, "sliding-window-counter", "throttle:admin")
    policy = parse_policy("2/minute")
    assert not proxy.known("10.0.0.1", policy)
    assert proxy.acquire("10.0.0.1", policy, T0).admitted
    assert proxy.acquire("10.0.0.1", policy, T0).admitted
    assert not proxy.acquire("10.0.0.1", policy, T0).admitted
    assert proxy.known("10.0.0.1", policy) and not admin.known("10.0.0.1", policy)
    assert admin.acquire("10.0.0.1", policy, T0).admitted


def test_a_full_table_forgets_the_entry_expiring_first() -> None:
    table = SharedTable(partitions=1, slots_per_partition=16)
    counters = SharedCounters(table, "fixed-window", "ratelimit")
    policy = parse_policy("1/minute")
    for index in range(100):  # far more subjects than slots: never an error
        assert counters.acquire(f"k{index}", policy, T0 + index).admitted
    assert len(counters) == 16
    # The newest subjects are still counted.
    assert not counters.acquire("k99", policy, T0 + 100).admitted


def _hammer(table: SharedTable, strategy: str, tries: int) -> int:
    counters = SharedCounters(table, strategy, "ratelimit")
    policy = parse_policy("500/minute;800/hour")
    admitted = 0
    for _ in range(tries):
        if counters.acquire("key", policy, int(time.time() * 1000)).admitted:
            admitted += 1
    return admitted


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_exact_across_processes(strategy: str) -> None:
    table = SharedTable(partitions=8, slots_per_partition=512)
    readers = []
    pids = []
    for _ in range(4):
        read, write = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child: count, report, leave without running any cleanup
            os.close(read)
            os.write(write, str(_hammer(table, strategy, 300)).encode())
            os._exit(0)
        os.close(write)
        readers.append(read)
        pids.append(pid)
    total = 0
    for read, pid in zip(readers, pids, strict=True):
        total += int(os.read(read, 64) or b"0")
        os.close(read)
        assert os.waitpid(pid, 0)[1] == 0
    assert total == 500  # 1200 tries from 4 processes: exactly the limit, not a share


def test_a_worker_dying_with_the_lock_blocks_nobody() -> None:
    table = SharedTable(partitions=1, slots_per_partition=64)
    pid = os.fork()
    if pid == 0:
        table.lock(0)
        time.sleep(60)  # killed while holding it
        os._exit(0)
    try:
        time.sleep(0.2)
        os.kill(pid, signal.SIGKILL)
    finally:
        os.waitpid(pid, 0)
    started = time.monotonic()
    counters = SharedCounters(table, "sliding-window-counter", "ratelimit")
    assert counters.acquire("k", parse_policy("1/minute"), T0).admitted
    assert time.monotonic() - started < 0.5
