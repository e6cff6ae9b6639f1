"""Bench 2 — the proxy over HTTP: CPU per request of `gateway serve` next to nginx
`proxy_pass`, measured in the same run (issue #11).

    python bench/proxy_http.py [--rounds 3] [--seconds 5] [--connections 32] [--before DIR]

Every system under test runs pinned to core 0 (`taskset -c 0`); the origin (an nginx
serving a small static answer) and the load (`wrk -t1`) run on core 1. CPU per request is
the system's utime + stime from /proc/PID/stat (all its processes) over the requests wrk
counted. Rounds are interleaved so that drift on a shared machine hits every system.

Systems: nginx `proxy_pass` (the reference; its own nginx, one worker), `gateway serve`
(every check on at SPEC defaults: cached key, SQLite, memory limits, usage recording, the
access log), the same data path with the decision core switched off
(bench/proxy_core_off.py), the bare uvicorn + aiohttp pass-through (bench/bare_proxy.py),
and with `--before DIR` the `gateway serve` of another source tree (e.g. a `git archive`
of the commit before the native data path) run with this interpreter.

Targets (issue #11): CPU efficiency (nginx µs / gateway µs) ≥ 0.40; gateway ≥ 0.70 of the
core-off data path; p99 at half the gateway's peak rate within nginx's p99 + 1 ms at that
rate. `wrk` has no fixed-rate mode (that is wrk2), so the paced runs use a Lua `delay()`
per request: each of C connections waits C/R seconds between requests (closed loop; the
achieved rate is printed). Memory: RSS per idle keep-alive connection, and RSS after
10,000 connections opened and closed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
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

ORIGIN_CONF = """\
worker_processes 1;
daemon off;
pid {dir}/origin.pid;
error_log {dir}/origin-error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {dir}/body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    keepalive_requests 1000000;
    server {{
        listen 127.0.0.1:{origin};
        location / {{ default_type text/plain; return 200 "hello from nginx\\n"; }}
    }}
}}
"""

PROXY_CONF = """\
worker_processes 1;
daemon off;
pid {dir}/proxy.pid;
error_log {dir}/proxy-error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {dir}/body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    keepalive_requests 1000000;
    upstream origin {{ server 127.0.0.1:{origin}; keepalive 64; }}
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


SUT_CORE = "0"  # systems under test
LOAD_CORE = "1"  # origin and wrk


@contextmanager
def process(
    args: list[str],
    port: int,
    env: dict[str, str] | None = None,
    *,
    core: str | None = None,
    cwd: Path = ROOT,
) -> Iterator[subprocess.Popen]:
    """Run `args` until the block ends, its port open; pinned to `core` if given."""
    proc = subprocess.Popen(
        ["taskset", "-c", core, *args] if core is not None else args,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
        cwd=str(cwd),
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


def gateway_env(source: Path = ROOT) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
    env["GATEWAY_SECRET"] = SECRET
    env["PYTHONPATH"] = str(source)
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


@dataclass
class Systems:
    """The origin and every system under test of `main`, on free ports."""

    workdir: Path
    origin: int
    ports: dict[str, int] = field(default_factory=dict)
    pids: dict[str, int] = field(default_factory=dict)
    key: str = ""

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.ports[name]}/"


def _gateway_config(workdir: Path, name: str, port: int, origin: int, storage: str) -> Path:
    config = workdir / f"{name}.toml"
    config.write_text(
        f'[server]\nlisten = "127.0.0.1:{port}"\nadmin_listen = "127.0.0.1:{free_port()}"\n'
        f'[upstream]\nurl = "http://127.0.0.1:{origin}"\n'
        f'[storage]\nurl = "{storage}"\n'
    )
    return config


@contextmanager
def systems(before: Path | None = None) -> Iterator[Systems]:
    nginx = need("nginx")
    need("wrk")
    need("taskset")
    workdir = Path(tempfile.mkdtemp(prefix="gateway-bench-"))
    s = Systems(workdir, free_port())
    names = ["nginx", "gateway", "core-off", "bare"] + (["before"] if before else [])
    s.ports = {name: free_port() for name in names}
    (workdir / "origin.conf").write_text(ORIGIN_CONF.format(dir=workdir, origin=s.origin))
    (workdir / "proxy.conf").write_text(
        PROXY_CONF.format(dir=workdir, origin=s.origin, proxy=s.ports["nginx"])
    )
    storage = f"sqlite:///{workdir / 'gateway.db'}"
    s.key = create_key(storage, "1000000000/minute")
    origin_url = f"http://127.0.0.1:{s.origin}"
    try:
        with contextlib.ExitStack() as running:
            running.enter_context(
                process(
                    [nginx, "-p", str(workdir), "-c", str(workdir / "origin.conf")],
                    s.origin,
                    core=LOAD_CORE,
                )
            )
            commands: dict[str, tuple[list[str], dict[str, str] | None]] = {
                "nginx": ([nginx, "-p", str(workdir), "-c", str(workdir / "proxy.conf")], None),
                "gateway": (
                    [
                        sys.executable,
                        "-m",
                        "gateway",
                        "--config",
                        str(
                            _gateway_config(
                                workdir, "gateway", s.ports["gateway"], s.origin, storage
                            )
                        ),
                        "serve",
                    ],
                    gateway_env(),
                ),
                "core-off": (
                    [
                        sys.executable,
                        str(BENCH / "proxy_core_off.py"),
                        str(s.ports["core-off"]),
                        origin_url,
                    ],
                    None,
                ),
                "bare": (
                    [
                        sys.executable,
                        str(BENCH / "bare_proxy.py"),
                        str(s.ports["bare"]),
                        origin_url,
                    ],
                    None,
                ),
            }
            if before is not None:
                commands["before"] = (
                    [
                        sys.executable,
                        "-m",
                        "gateway",
                        "--config",
                        str(
                            _gateway_config(workdir, "before", s.ports["before"], s.origin, storage)
                        ),
                        "serve",
                    ],
                    {**gateway_env(before)},
                )
            for name, (args, env) in commands.items():
                # `python -m gateway` imports the tree it runs in: the 'before' one from its own.
                cwd = before if name == "before" and before is not None else ROOT
                proc = running.enter_context(
                    process(args, s.ports[name], env=env, core=SUT_CORE, cwd=cwd)
                )
                s.pids[name] = proc.pid
            yield s
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


@dataclass
class Stack:
    """nginx origin + nginx proxy_pass + bare proxy + gateway, all on free ports, unpinned
    (for bench/rejections.py and bench/proxy_parts.py)."""

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


def tree_cpu_seconds(pid: int) -> float:
    """utime + stime of a process and its descendants (nginx's worker), from /proc."""
    children: dict[int, list[int]] = {}
    own: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(entry))
        own[int(entry)] = int(fields[11]) + int(fields[12])
    total, todo = 0, [pid]
    while todo:
        current = todo.pop()
        total += own.get(current, 0)
        todo += children.get(current, [])
    return total / os.sysconf("SC_CLK_TCK")


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
    core: str | None = None,
    tree: bool = False,
) -> WrkResult:
    args = ["taskset", "-c", core] if core is not None else []
    args += [need("wrk"), "-t1", f"-c{connections}", f"-d{seconds}s", "--latency"]
    for name, value in (headers or {}).items():
        args += ["-H", f"{name}: {value}"]
    if rate is not None:
        assert workdir is not None
        script = workdir / "rate.lua"
        script.write_text(RATE_LUA)
        args += ["-s", str(script), url, "--", str(round(connections * 1000 / rate, 3))]
    else:
        args.append(url)
    measure = tree_cpu_seconds if tree else cpu_seconds
    cpu_before = measure(pid) if pid else 0.0
    out = subprocess.run(args, capture_output=True, text=True, check=True).stdout
    cpu = measure(pid) - cpu_before if pid else None
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


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise KeyError("VmRSS")


def idle_connection_memory(port: int, pid: int, count: int = 1000) -> tuple[float, int, int]:
    """(KiB per idle keep-alive connection, RSS before and after `count`·10 connections
    opened — each with one request — and closed), in KiB."""
    request = b"GET / HTTP/1.1\r\nHost: bench\r\nAuthorization: Bearer %s\r\n\r\n"
    start = rss_kib(pid)
    socks = []
    for _ in range(count):
        sock = socket.create_connection(("127.0.0.1", port))
        socks.append(sock)
    time.sleep(0.5)
    per_connection = (rss_kib(pid) - start) / count
    for sock in socks:
        sock.close()
    time.sleep(0.5)
    before = rss_kib(pid)
    for _ in range(10):
        batch = [socket.create_connection(("127.0.0.1", port)) for _ in range(count)]
        for sock in batch:
            sock.sendall(request % KEY_FOR_MEMORY.encode())
        for sock in batch:
            sock.recv(65536)
            sock.close()
    time.sleep(0.5)
    return per_connection, before, rss_kib(pid)


KEY_FOR_MEMORY = ""


def main() -> None:
    global KEY_FOR_MEMORY
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--before", type=Path, help="source tree of the 'before' gateway")
    opts = parser.parse_args()

    with systems(opts.before) as s:
        KEY_FOR_MEMORY = s.key
        names = list(s.ports)
        auth = {"Authorization": f"Bearer {s.key}"}
        for name in names:  # warm-up: pools filled, code paths hot
            wrk(s.url(name), seconds=2, connections=opts.connections, headers=auth, core=LOAD_CORE)
        peak: dict[str, list[WrkResult]] = {name: [] for name in names}
        for _ in range(opts.rounds):
            for name in names:
                result = wrk(
                    s.url(name),
                    seconds=opts.seconds,
                    connections=opts.connections,
                    headers=auth,
                    pid=s.pids[name],
                    core=LOAD_CORE,
                    tree=True,
                )
                assert result.non_2xx == 0, f"{name}: {result.non_2xx} non-2xx answers"
                peak[name].append(result)
        median_rps = {name: statistics.median(r.rps for r in rs) for name, rs in peak.items()}
        cpu = {
            name: statistics.median(r.cpu_us for r in rs if r.cpu_us is not None)
            for name, rs in peak.items()
        }
        half = median_rps["gateway"] / 2
        paced: dict[str, list[WrkResult]] = {"nginx": [], "gateway": []}
        for _ in range(opts.rounds):
            for name in paced:
                paced[name].append(
                    wrk(
                        s.url(name),
                        seconds=opts.seconds,
                        connections=opts.connections,
                        headers=auth,
                        rate=half,
                        workdir=s.workdir,
                        core=LOAD_CORE,
                    )
                )
        memory = idle_connection_memory(s.ports["gateway"], s.pids["gateway"])
        load = os.getloadavg()

    print(
        f"taskset -c {SUT_CORE} <system>; taskset -c {LOAD_CORE} wrk -t1 -c{opts.connections} "
        f"-d{opts.seconds}s --latency; {opts.rounds} interleaved rounds; "
        f"load average at the end {load[0]:.1f} {load[1]:.1f} {load[2]:.1f}"
    )
    print("\npeak (median of rounds):")
    print(f"  {'system':9s} {'req/s':>8s} {'CPU µs/req':>11s} {'nginx/it':>9s}   rounds (µs/req)")
    for name, results in peak.items():
        rounds = ", ".join(f"{r.cpu_us:.1f}" for r in results if r.cpu_us is not None)
        print(
            f"  {name:9s} {median_rps[name]:8.0f} {cpu[name]:11.1f} "
            f"{cpu['nginx'] / cpu[name]:9.2f}   {rounds}"
        )
    print(
        f"\n  CPU efficiency of gateway serve (nginx µs / gateway µs) = "
        f"{cpu['nginx'] / cpu['gateway']:.2f}   (target >= 0.40, stretch 0.50)"
    )
    print(
        f"  gateway / core-off data path (core-off µs / gateway µs) = "
        f"{cpu['core-off'] / cpu['gateway']:.2f}   (target >= 0.70)"
    )
    if "before" in cpu:
        print(
            f"  before: efficiency {cpu['nginx'] / cpu['before']:.3f}; "
            f"gateway now uses {cpu['gateway'] / cpu['before']:.2f} of the CPU per request "
            f"it used before ({cpu['before'] / cpu['gateway']:.1f}x less)"
        )
    print(f"\nat half the gateway's peak ({half:.0f} req/s target, paced):")
    p99 = {}
    for name, results in paced.items():
        p99[name] = statistics.median(r.p99_ms for r in results)
        print(
            f"  {name:8s} achieved {statistics.median(r.rps for r in results):7.0f} req/s   "
            f"p50 {statistics.median(r.p50_ms for r in results):.2f} ms   p99 {p99[name]:.2f} ms"
        )
    print(f"  gateway p99 - nginx p99 = {p99['gateway'] - p99['nginx']:.2f} ms   (target <= 1 ms)")
    per_connection, before_rss, after_rss = memory
    print(
        f"\nmemory: {per_connection:.1f} KiB per idle keep-alive connection (1,000 open); "
        f"RSS {before_rss / 1024:.1f} MiB before and {after_rss / 1024:.1f} MiB after 10,000 "
        "connections opened, used once and closed"
    )


if __name__ == "__main__":
    main()
