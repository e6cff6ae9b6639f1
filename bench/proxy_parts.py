"""Where the proxy's time goes: parts of `gateway serve` under the same `wrk` load as
bench 2, next to the bare proxy, CPU time per request of each process (from /proc) and
context switches per request (all threads). Every part runs pinned to core 0, the origin
and wrk on core 1 (as bench 2).

    python bench/proxy_parts.py [--rounds 3] [--seconds 4] [--connections 32]

Parts (bench/serve_part.py): core-off (the native data path alone), decide (+ the
decision core's checks), usage (+ usage recording and metrics), full (+ access log =
gateway serve). Each step's difference is what that feature costs per request in a real
server.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from contextlib import ExitStack
from pathlib import Path

from proxy_http import BENCH, LOAD_CORE, SUT_CORE, free_port, gateway_env, process, stack, wrk

PARTS = ("core-off", "decide", "usage", "full")


def context_switches(pid: int) -> int:
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        for line in (task / "status").read_text().splitlines():
            if "ctxt_switches" in line:
                total += int(line.split()[1])
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=4)
    parser.add_argument("--connections", type=int, default=32)
    opts = parser.parse_args()

    with stack() as s, ExitStack() as parts:
        urls = {"bare": s.urls()["bare"]}
        pids = {"bare": s.pids["bare"]}
        for part in PARTS:
            port = free_port()
            args = [sys.executable, str(BENCH / "serve_part.py"), part, str(port)]
            proc = parts.enter_context(
                process(
                    [*args, str(s.workdir / "gateway.toml")],
                    port,
                    env=gateway_env(),
                    core=SUT_CORE,
                )
            )
            urls[part], pids[part] = f"http://127.0.0.1:{port}/", proc.pid
        auth = {"Authorization": f"Bearer {s.key}"}
        for url in urls.values():  # warm-up
            wrk(url, seconds=1, connections=opts.connections, headers=auth, core=LOAD_CORE)
        cpu: dict[str, list[float]] = {name: [] for name in urls}
        rps: dict[str, list[float]] = {name: [] for name in urls}
        switches: dict[str, list[float]] = {name: [] for name in urls}
        for _ in range(opts.rounds):
            for name, url in urls.items():
                before = context_switches(pids[name])
                result = wrk(
                    url,
                    seconds=opts.seconds,
                    connections=opts.connections,
                    headers=auth,
                    pid=pids[name],
                    core=LOAD_CORE,
                )
                assert result.non_2xx == 0, f"{name}: {result.non_2xx} non-2xx answers"
                assert result.cpu_us is not None
                cpu[name].append(result.cpu_us)
                rps[name].append(result.rps)
                switches[name].append((context_switches(pids[name]) - before) / result.requests)

    print(f"wrk -t1 -c{opts.connections} -d{opts.seconds}s, {opts.rounds} rounds, medians")
    previous = None
    for name in urls:
        median_cpu = statistics.median(cpu[name])
        step = f"  (+{median_cpu - previous:4.0f} us)" if previous is not None else ""
        print(
            f"  {name:9s} {statistics.median(rps[name]):7.0f} req/s   CPU {median_cpu:4.0f} "
            f"us/request{step}   context switches {statistics.median(switches[name]):.2f}"
            "/request"
        )
        previous = median_cpu if name != "bare" else None


if __name__ == "__main__":
    main()
