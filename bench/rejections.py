"""Bench 3 — rejections are cheap: what a 401 (no key) and a 429 (a key over its limit)
cost compared with an allowed, proxied request, on the same `gateway serve` in one run.

    python bench/rejections.py [--rounds 3] [--seconds 5] [--connections 16]

Cost is measured two ways, interleaved over rounds, median reported: wall time per
request at saturation (1 / throughput under `wrk`) and CPU time of the gateway process
per request (from /proc; less sensitive to other load on a shared machine).
Target (issue #3): each rejection costs ≤ 0.5 of an allowed request.
"""

from __future__ import annotations

import argparse
import statistics
import urllib.error
import urllib.request

from proxy_http import WrkResult, create_key, stack, wrk


def exhaust(url: str, key: str) -> None:
    """Use up a "1/hour" key, so that every later request with it is a 429."""
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {key}"})
    for _ in range(3):
        try:
            urllib.request.urlopen(request, timeout=10).read()
        except urllib.error.HTTPError as exc:
            if exc.code == 429:
                return
    raise SystemExit("the limited key never got a 429")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--connections", type=int, default=16)
    opts = parser.parse_args()

    with stack() as s:
        url = f"http://127.0.0.1:{s.gateway}/"
        limited = create_key(s.storage_url, "1/hour")
        exhaust(url, limited)
        cases = {
            "allowed (200, proxied)": {"Authorization": f"Bearer {s.key}"},
            "401 MISSING_API_KEY": {},
            "429 RATE_LIMITED": {"Authorization": f"Bearer {limited}"},
        }
        pid = s.pids["gateway"]
        for headers in cases.values():
            wrk(url, seconds=1, connections=opts.connections, headers=headers)
        results: dict[str, list[WrkResult]] = {name: [] for name in cases}
        for _ in range(opts.rounds):
            for name, headers in cases.items():
                results[name].append(
                    wrk(
                        url,
                        seconds=opts.seconds,
                        connections=opts.connections,
                        headers=headers,
                        pid=pid,
                    )
                )

    allowed = "allowed (200, proxied)"
    rps = {name: statistics.median(r.rps for r in rs) for name, rs in results.items()}
    cpu = {name: statistics.median(r.cpu_us or 0.0 for r in rs) for name, rs in results.items()}
    print(
        f"wrk -t1 -c{opts.connections} -d{opts.seconds}s against gateway serve, "
        f"{opts.rounds} rounds"
    )
    for name in cases:
        print(
            f"  {name:24s} {rps[name]:8.0f} req/s  {1e6 / rps[name]:7.0f} us wall/req  "
            f"{cpu[name]:6.0f} us CPU/req   cost vs allowed: wall {rps[allowed] / rps[name]:.2f}, "
            f"CPU {cpu[name] / cpu[allowed]:.2f}   (target <= 0.50)"
        )


if __name__ == "__main__":
    main()
