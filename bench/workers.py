"""Bench 6 — `server.workers`: what a second worker gives, and what sharing counters costs.

Part A, over HTTP: `gateway serve` with 1 and with 2 workers, on the embedded default
(SQLite, memory:// counters — one shared table with 2 workers) and on Redis (a
redis-server this bench starts), in front of the same nginx origin, load from `wrk`.
The four gateways run in interleaved rounds, one at a time, in one run. CPU per request
is the gateway's (supervisor + workers) from /proc.

Part B, in-process, pinned to one core (`os.sched_setaffinity`): the rate-limit step of
one request — `MemoryCounters.acquire` (one process) against `SharedCounters.acquire`
(the workers' shared table: hash, partition lock, slots) — on the usual one-limit policy
and a two-limit one, over 1,000 keys; then the shared table with two processes hitting
it at once (same key / different keys), per acquire.

    python bench/workers.py [--rounds 3] [--seconds 4] [--connections 32]
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(BENCH))

from proxy_http import (  # noqa: E402 - bench scripts import their neighbour
    NGINX_CONF,
    create_key,
    free_port,
    gateway_env,
    need,
    process,
    wrk,
)


def family(pid: int) -> list[int]:
    """`pid` and its children (the supervisor and its workers)."""
    pids = [pid]
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            if int(stat.rpartition(")")[2].split()[1]) == pid:
                pids.append(int(entry))
    return pids


def cpu(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


@contextmanager
def redis_server(workdir: Path) -> Iterator[str]:
    port = free_port()
    args = [need("redis-server"), "--port", str(port), "--bind", "127.0.0.1"]
    args += ["--save", "", "--appendonly", "no", "--dir", str(workdir)]
    with process(args, port):
        yield f"redis://127.0.0.1:{port}/0"


@contextmanager
def gateways(workdir: Path, redis_url: str, origin: int) -> Iterator[dict[str, tuple]]:
    """The four gateways: {name: (url, supervisor pid, key)}."""
    found: dict[str, tuple] = {}
    with ExitStack() as stack:
        for store in ("sqlite", "redis"):
            for workers in (1, 2):
                name = f"{store} x{workers}"
                folder = workdir / name.replace(" ", "-")
                folder.mkdir()
                url = f"sqlite:///{folder / 'gateway.db'}" if store == "sqlite" else redis_url
                port, admin = free_port(), free_port()
                config = folder / "gateway.toml"
                config.write_text(
                    f'[server]\nlisten = "127.0.0.1:{port}"\n'
                    f'admin_listen = "127.0.0.1:{admin}"\nworkers = {workers}\n'
                    f'[upstream]\nurl = "http://127.0.0.1:{origin}"\n'
                    f'[storage]\nurl = "{url}"\n'
                    f'[usage]\nspool_path = "{folder / "usage.spool"}"\n'
                )
                key = create_key(url, "1000000000/minute")
                argv = [sys.executable, "-m", "gateway", "--config", str(config), "serve"]
                proc = stack.enter_context(process(argv, port, env=gateway_env()))
                found[name] = (f"http://127.0.0.1:{port}/", proc.pid, key)
        yield found


def part_a(opts: argparse.Namespace) -> None:
    nginx = need("nginx")
    workdir = Path(tempfile.mkdtemp(prefix="gateway-bench-workers-"))
    origin, unused = free_port(), free_port()
    conf = workdir / "nginx.conf"
    conf.write_text(NGINX_CONF.format(dir=workdir, origin=origin, proxy=unused))
    results: dict[str, list[tuple[float, float, float]]] = {}
    try:
        with (
            process([nginx, "-p", str(workdir), "-c", str(conf)], origin),
            redis_server(workdir) as redis_url,
            gateways(workdir, redis_url, origin) as targets,
        ):
            time.sleep(1.0)
            for url, _pid, key in targets.values():  # warm up every worker
                wrk(url, seconds=1, connections=opts.connections, headers={"X-API-Key": key})
            for _ in range(opts.rounds):
                for name, (url, pid, key) in targets.items():
                    pids = family(pid)
                    before = cpu(pids)
                    result = wrk(
                        url,
                        seconds=opts.seconds,
                        connections=opts.connections,
                        headers={"X-API-Key": key},
                    )
                    used = cpu(pids) - before
                    assert result.non_2xx == 0, (name, result)
                    per_request = used * 1e6 / result.requests
                    results.setdefault(name, []).append((result.rps, result.p99_ms, per_request))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    print(
        f"\nA. wrk -t1 -c{opts.connections} -d{opts.seconds}s, {opts.rounds} interleaved rounds "
        f"(medians); {os.cpu_count()} cores shared by wrk, nginx, redis and the gateway"
    )
    print(f"{'gateway':<12} {'req/s':>8} {'p99 ms':>8} {'CPU µs/req':>11} {'vs x1':>7}")
    for name, rows in results.items():
        rps = statistics.median(r[0] for r in rows)
        base = statistics.median(r[0] for r in results[name.replace("x2", "x1")])
        print(
            f"{name:<12} {rps:>8.0f} {statistics.median(r[1] for r in rows):>8.2f} "
            f"{statistics.median(r[2] for r in rows):>11.0f} {rps / base:>7.2f}"
        )


def _time_acquires(counters: object, policy: object, subjects: list[str], rounds: int) -> float:
    """Median CPU µs per acquire over `rounds` passes of the subjects (process CPU time:
    this machine is shared, and wall time would count other jobs preempting us)."""
    samples = []
    for _ in range(rounds):
        started = time.process_time()
        for subject in subjects:
            counters.acquire(subject, policy, int(time.time() * 1000))  # type: ignore[attr-defined]
        samples.append((time.process_time() - started) * 1e6 / len(subjects))
    return statistics.median(samples)


def _contended(table: object, strategy: str, same_key: bool, count: int) -> tuple[float, float]:
    """(wall, CPU) µs per acquire with two processes acquiring at once, each pinned to a
    core of its own (waiting for the other's lock is wall time, not CPU time)."""
    from gateway.pipeline.ratelimit import parse_policy
    from gateway.pipeline.ratelimit.shared import SharedCounters

    policy = parse_policy("1000000000/minute")
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.sched_setaffinity(0, {1 % (os.cpu_count() or 1)})
        counters = SharedCounters(table, strategy, "bench")  # type: ignore[arg-type]
        subject = "same" if same_key else "child"
        started, cpu_started = time.perf_counter(), time.process_time()
        for _ in range(count):
            counters.acquire(subject, policy, int(time.time() * 1000))
        wall = (time.perf_counter() - started) * 1e6 / count
        used = (time.process_time() - cpu_started) * 1e6 / count
        os.write(write, f"{wall} {used}".encode())
        os._exit(0)
    counters = SharedCounters(table, strategy, "bench")  # type: ignore[arg-type]
    subject = "same" if same_key else "parent"
    started, cpu_started = time.perf_counter(), time.process_time()
    for _ in range(count):
        counters.acquire(subject, policy, int(time.time() * 1000))
    wall = (time.perf_counter() - started) * 1e6 / count
    used = (time.process_time() - cpu_started) * 1e6 / count
    their_wall, their_cpu = map(float, os.read(read, 64).split())
    os.waitpid(pid, 0)
    os.close(read)
    os.close(write)
    return (wall + their_wall) / 2, (used + their_cpu) / 2


def part_b(opts: argparse.Namespace) -> None:
    from gateway.pipeline.ratelimit import MemoryCounters, parse_policy
    from gateway.pipeline.ratelimit.shared import SharedCounters, SharedTable

    os.sched_setaffinity(0, {0})
    strategy = "sliding-window-counter"
    subjects = [f"key{index}" for index in range(1000)]
    random.Random(6).shuffle(subjects)
    print("\nB. rate-limit step per request, in-process, pinned to core 0 (median CPU µs)")
    print(f"{'policy':<22} {'memory':>8} {'shared':>8} {'added':>8}")
    for text in ("1000000000/minute", "1000000000/minute;1000000000/day"):
        policy = parse_policy(text)
        rows = []
        for _ in range(opts.rounds * 3):  # interleaved
            memory = MemoryCounters(strategy)
            shared = SharedCounters(SharedTable(), strategy, "bench")
            _time_acquires(memory, policy, subjects, 1)  # warm: entries exist
            _time_acquires(shared, policy, subjects, 1)
            rows.append(
                (
                    _time_acquires(memory, policy, subjects, 5),
                    _time_acquires(shared, policy, subjects, 5),
                )
            )
        mem = statistics.median(r[0] for r in rows)
        sha = statistics.median(r[1] for r in rows)
        label = "one limit" if ";" not in text else "two limits"
        print(f"{label:<22} {mem:>8.2f} {sha:>8.2f} {sha - mem:>8.2f}")
    table = SharedTable()
    alone = _time_acquires(
        SharedCounters(table, strategy, "bench"), parse_policy("1000000000/minute"), ["a"], 20_000
    )
    diff = _contended(table, strategy, False, 100_000)
    same = _contended(table, strategy, True, 100_000)
    print(
        f"shared, two processes at once (wall / CPU µs per acquire): {alone:.2f} CPU alone -> "
        f"{diff[0]:.2f} / {diff[1]:.2f} different keys, {same[0]:.2f} / {same[1]:.2f} same key"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=4)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--part", choices=["a", "b", "both"], default="both")
    opts = parser.parse_args()
    if opts.part in ("a", "both"):
        part_a(opts)
    if opts.part in ("b", "both"):
        part_b(opts)  # pins this process to core 0: after part A


if __name__ == "__main__":
    main()
