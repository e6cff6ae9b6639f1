"""Bench 2 — the proxy over HTTP: `gateway serve` vs a bare pass-through proxy on the same
stack (bench/bare_proxy.py), both in front of the same nginx serving a small static
answer, load from `wrk`. Also an nginx `proxy_pass` to the same origin, as the outside
reference. Rounds are interleaved so that drift on a shared machine hits every target.

    python bench/proxy_http.py [--rounds 3] [--seconds 5] [--connections 16]

Targets (issue #3): gateway ≥ 0.80 of the bare proxy's throughput; p99 added ≤ 1 ms at
half of the bare proxy's peak rate. `wrk` has no fixed-rate mode (that is wrk2), so the
half-rate runs use a Lua `delay()` per request: each of C connections waits C/R seconds
between requests, which paces the total near R req/s (closed loop: the achieved rate is
printed next to each result, slightly below R when latency adds up).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BENCH = Path(__file__).resolve().parent
SECRET = "bench-secret-" + "b" * 40

NGINX_CONF = """\
worker_processes 1;
daemon off;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {dir}/body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    upstream origin {{ server 127.0.0.1:{origin}; keepalive 64; }}
    server {{
        listen 127.0.0.1:{origin};
        location / {{ default_type text/plain; return 200 "hello from nginx\\n"; }}
    }}
    server {{
        listen 127.0.0.1:{proxy};
        location / {{
            proxy_pass http://origin;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }}
    }}
}}
"""

RATE_LUA = """\
-- Paces each connection: with C connections and a target of R req/s in total,
-- every connection waits C/R seconds before each request.
local wait_ms = 0
function init(args)
    wait_ms = tonumber(args[1])
end
function delay()
    return wait_ms
end
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_port(port: int, proc: subprocess.Popen, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"process exited early: {proc.args}")
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise SystemExit(f"port {port} never opened")


def need(tool: str) -> str:
    path = shutil.which(tool) or (
        f"/usr/sbin/{tool}" if Path(f"/usr/sbin/{tool}").exists() else None
    )
    if not path:
        raise SystemExit(f"{tool} is required for this benchmark")
    return path


@contextmanager
def process(
    args: list[str], port: int, env: dict[str, str] | None = None
) -> Iterator[subprocess.Popen]:
    proc = subprocess.Popen(
        args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, cwd=str(ROOT)
    )
    try:
        wait_port(port, proc)
        yield proc
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()


@dataclass
class Stack:
    """nginx origin + nginx proxy_pass + bare proxy + gateway, all on free ports."""

    origin: int
    nginx_proxy: int
    bare: int
    gateway: int
    admin: int
    workdir: Path
    storage_url: str = ""
    key: str = ""
    pids: dict[str, int] = field(default_factory=dict)

    def urls(self) -> dict[str, str]:
        return {
            "nginx": f"http://127.0.0.1:{self.nginx_proxy}/",
            "bare": f"http://127.0.0.1:{self.bare}/",
            "gateway": f"http://127.0.0.1:{self.gateway}/",
        }


def gateway_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
    env["GATEWAY_SECRET"] = SECRET
    env["PYTHONPATH"] = str(ROOT)
    return env


def create_key(storage_url: str, rate_limit: str, scope: str = "read") -> str:
    """A key made through KeyService on the bench's store (the CLI's path)."""
    sys.path.insert(0, str(ROOT))
    os.environ["GATEWAY_SECRET"] = SECRET
    from gateway.keys.model import KeyCreate, parse_body
    from gateway.runtime import key_service
    from gateway.settings import load_settings

    async def main() -> str:
        async with key_service(load_settings(storage={"url": storage_url})) as service:
            body = parse_body(KeyCreate, {"name": "bench", "scope": scope, "rateLimit": rate_limit})
            _, value = await service.create(body)
            return value

    return asyncio.run(main())


@contextmanager
def stack() -> Iterator[Stack]:
    nginx = need("nginx")
    need("wrk")
    workdir = Path(tempfile.mkdtemp(prefix="gateway-bench-"))
    s = Stack(free_port(), free_port(), free_port(), free_port(), free_port(), workdir)
    conf = workdir / "nginx.conf"
    conf.write_text(NGINX_CONF.format(dir=workdir, origin=s.origin, proxy=s.nginx_proxy))
    storage = s.storage_url = f"sqlite:///{workdir / 'gateway.db'}"
    config = workdir / "gateway.toml"
    config.write_text(
        f'[server]\nlisten = "127.0.0.1:{s.gateway}"\nadmin_listen = "127.0.0.1:{s.admin}"\n'
        f'[upstream]\nurl = "http://127.0.0.1:{s.origin}"\n'
        f'[storage]\nurl = "{storage}"\n'
    )
    s.key = create_key(storage, "1000000000/minute")
    try:
        with (
            process([nginx, "-p", str(workdir), "-c", str(conf)], s.nginx_proxy),
            process(
                [
                    sys.executable,
                    str(BENCH / "bare_proxy.py"),
                    str(s.bare),
                    f"http://127.0.0.1:{s.origin}",
                ],
                s.bare,
            ) as bare,
            process(
                [sys.executable, "-m", "gateway", "--config", str(config), "serve"],
                s.gateway,
                env=gateway_env(),
            ) as gateway,
        ):
            s.pids = {"bare": bare.pid, "gateway": gateway.pid}
            yield s
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


@dataclass
class WrkResult:
    rps: float
    p50_ms: float
    p99_ms: float
    non_2xx: int
    requests: int
    cpu_us: float | None = None  # CPU time of the measured process per request


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process, from /proc (clock ticks → seconds)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0}


def _ms(text: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s)", text)
    assert match, text
    return float(match.group(1)) * _UNITS[match.group(2)]


def wrk(
    url: str,
    *,
    seconds: int,
    connections: int,
    headers: dict[str, str] | None = None,
    rate: float | None = None,
    workdir: Path | None = None,
    pid: int | None = None,
) -> WrkResult:
    args = [need("wrk"), "-t1", f"-c{connections}", f"-d{seconds}s", "--latency"]
    for name, value in (headers or {}).items():
        args += ["-H", f"{name}: {value}"]
    if rate is not None:
        assert workdir is not None
        script = workdir / "rate.lua"
        script.write_text(RATE_LUA)
        args += ["-s", str(script), url, "--", str(round(connections * 1000 / rate, 3))]
    else:
        args.append(url)
    cpu_before = cpu_seconds(pid) if pid else 0.0
    out = subprocess.run(args, capture_output=True, text=True, check=True).stdout
    cpu = cpu_seconds(pid) - cpu_before if pid else None
    requests = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    p50 = _ms(re.search(r"\s50%\s+(\S+)", out).group(1))  # type: ignore[union-attr]
    p99 = _ms(re.search(r"\s99%\s+(\S+)", out).group(1))  # type: ignore[union-attr]
    non_2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    return WrkResult(
        rps,
        p50,
        p99,
        int(non_2xx.group(1)) if non_2xx else 0,
        requests,
        cpu * 1e6 / requests if cpu is not None and requests else None,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--connections", type=int, default=16)
    opts = parser.parse_args()

    with stack() as s:
        urls = s.urls()
        auth = {"gateway": {"Authorization": f"Bearer {s.key}"}}
        for name, url in urls.items():  # warm-up: pools filled, code paths hot
            wrk(url, seconds=1, connections=opts.connections, headers=auth.get(name))
        peak: dict[str, list[WrkResult]] = {name: [] for name in urls}
        for _ in range(opts.rounds):
            for name, url in urls.items():
                result = wrk(
                    url,
                    seconds=opts.seconds,
                    connections=opts.connections,
                    headers=auth.get(name),
                    pid=s.pids.get(name),
                )
                assert result.non_2xx == 0, f"{name}: {result.non_2xx} non-2xx answers"
                peak[name].append(result)
        median_rps = {name: statistics.median(r.rps for r in rs) for name, rs in peak.items()}
        half = median_rps["bare"] / 2
        paced: dict[str, list[WrkResult]] = {"bare": [], "gateway": []}
        for _ in range(opts.rounds):
            for name in paced:
                paced[name].append(
                    wrk(
                        urls[name],
                        seconds=opts.seconds,
                        connections=opts.connections,
                        headers=auth.get(name),
                        rate=half,
                        workdir=s.workdir,
                    )
                )

    print(f"wrk -t1 -c{opts.connections} -d{opts.seconds}s --latency, {opts.rounds} rounds")
    print("\npeak throughput (median of rounds):")
    for name, results in peak.items():
        rounds = ", ".join(f"{r.rps:.0f}" for r in results)
        print(
            f"  {name:8s} {median_rps[name]:8.0f} req/s   p50 "
            f"{statistics.median(r.p50_ms for r in results):.2f} ms   rounds: {rounds}"
        )
    ratio = median_rps["gateway"] / median_rps["bare"]
    print(f"  gateway / bare proxy       = {ratio:.2f}   (target >= 0.80)")
    cpu = {
        name: statistics.median(r.cpu_us for r in peak[name] if r.cpu_us is not None)
        for name in ("bare", "gateway")
    }
    print(
        f"  CPU per request: bare {cpu['bare']:.0f} us, gateway {cpu['gateway']:.0f} us "
        f"(ratio {cpu['bare'] / cpu['gateway']:.2f}: the same comparison, less sensitive to "
        "other load on the machine)"
    )
    print(f"  gateway / nginx proxy_pass = {median_rps['gateway'] / median_rps['nginx']:.2f}")
    print(f"\nat half of the bare proxy's peak ({half:.0f} req/s target, paced):")
    p99 = {}
    for name, results in paced.items():
        p99[name] = statistics.median(r.p99_ms for r in results)
        print(
            f"  {name:8s} achieved {statistics.median(r.rps for r in results):7.0f} req/s   "
            f"p50 {statistics.median(r.p50_ms for r in results):.2f} ms   p99 {p99[name]:.2f} ms"
        )
    print(f"  p99 added by the gateway = {p99['gateway'] - p99['bare']:.2f} ms   (target <= 1 ms)")


if __name__ == "__main__":
    main()
