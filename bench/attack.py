"""Benchmark 8: the attacks and faults of issue 8, before and after, on one machine.

Runs the issue's measurements against real `gateway serve` processes of a source tree
(`--tree`, default this one; point it at a checkout of an older commit for "before"),
real redis-servers, a real upstream, raw sockets:

  flood       one 64 MiB header (time to the answer), a normal client beside 4 of them
              (its worst latency, failures), the gateway's RSS growth — proxy and admin
  slowloris   1,005 connections trickling a head at a soft fd limit of 1024: normal
              requests answered / failed, and how
  load        500 and 1,000 concurrent requests on a 10/minute key over two replicas
              sharing one Redis: admitted, 429, 503
  freeze      Redis SIGSTOPped: time to answer a never-seen key, /readyz, an admin call
  restart     Redis killed and restarted: a fresh key on the replica that saw no traffic,
              20 concurrent fresh keys
  throttle    100 and 400 concurrent well-formed unknown keys from one IP: how many were
              evaluated (401) with a limit of 30/minute
  usage       1,035 requests while Redis is down, the gateway stopped, Redis and the
              gateway started again: records lost
  redaction   a key value as X-Request-ID and in the path: echoed / logged / stored?
  adminlog    access lines written for 5 admin requests
  soak        N seconds of mixed traffic with rotations and revokes: RSS and open fds over
              time (run it alone: `--only soak --soak-seconds 300`)

The gateways run pinned to CPU 0 (`taskset -c 0`) when the machine has two cores or more;
the clients run here.

    python bench/attack.py [--tree PATH] [--only flood,load,...] [--soak-seconds 300]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
SECRET = "bench-secret-" + "x" * 40
KEY_RE = re.compile(r"\b[a-z][a-z0-9]{1,15}_[0-9A-Za-z]{38}\b")
ID_RE = re.compile(r"\bkey_[0-9A-Za-z]{16}\b")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_port(port: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            sock.settimeout(0.2)
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.02)
    raise RuntimeError(f"nothing listens on {port}")


def pinned(args: list[str]) -> list[str]:
    return ["taskset", "-c", "0", *args] if (os.cpu_count() or 1) >= 2 else args


def rss_kib(pid: int, field: str = "VmRSS") -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


# --- processes -------------------------------------------------------------------------------


class Redis:
    def __init__(self, workdir: Path, persistent: bool = False) -> None:
        self.port = free_port()
        self.workdir = workdir
        self.persistent = persistent
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        args = [shutil.which("redis-server") or "redis-server", "--port", str(self.port)]
        args += ["--save", "", "--dir", str(self.workdir)]
        args += ["--appendonly", "yes" if self.persistent else "no", "--appendfsync", "always"]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL)
        wait_port(self.port)

    def kill(self) -> None:
        if self.proc is not None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGCONT)
            self.proc.kill()
            self.proc.wait()
            self.proc = None


class Gateway:
    def __init__(
        self, tree: Path, workdir: Path, upstream: str, storage: str, **sections: Any
    ) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        self.tree, self.workdir = tree, workdir
        self.port, self.admin_port = free_port(), free_port()
        config = {
            "server": {
                "listen": f"127.0.0.1:{self.port}",
                "admin_listen": f"127.0.0.1:{self.admin_port}",
            },
            "upstream": {"url": upstream},
            "storage": {"url": storage},
        }
        for name, values in sections.items():
            config[name] = {**config.get(name, {}), **values}
        lines = []
        for name, values in config.items():
            lines.append(f"[{name}]")
            lines += [f"{k} = {json.dumps(v)}" for k, v in values.items()]
        self.config = workdir / "gateway.toml"
        self.config.write_text("\n".join(lines) + "\n")
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
        self.env.update(GATEWAY_SECRET=SECRET, PYTHONPATH=str(tree))
        self.log = workdir / "gateway.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, prefix: list[str] | None = None) -> Gateway:
        args = [sys.executable, "-m", "gateway", "--config", str(self.config), "serve"]
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                (prefix or []) + pinned(args),
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self.env,
                cwd=self.workdir,
            )
        wait_port(self.port)
        wait_port(self.admin_port)
        return self

    def stop(self) -> int:
        if self.proc is None:
            return 0
        self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = self.proc.wait()
        self.proc = None
        return code

    @property
    def pid(self) -> int:
        assert self.proc is not None
        # taskset execs the command: the pid is the gateway's
        return self.proc.pid

    def cli(self, *args: str) -> str:
        out = subprocess.run(
            [sys.executable, "-m", "gateway", "--config", str(self.config), *args],
            env=self.env,
            cwd=self.workdir,
            capture_output=True,
            text=True,
            check=True,
        )
        return out.stdout

    def create_key(self, scope: str = "read", rate_limit: str | None = None) -> tuple[str, str]:
        args = ["keys", "create", "--name", "bench", "--scope", scope, "--json"]
        if rate_limit:
            args += ["--rate-limit", rate_limit]
        out = self.cli(*args)
        return ID_RE.search(out).group(0), KEY_RE.search(out).group(0)  # type: ignore[union-attr]


def start_upstream(workdir: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "tests" / "e2e" / "upstream.py"), str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        cwd=workdir,
    )
    wait_port(port)
    return proc, f"http://127.0.0.1:{port}"


# --- a raw HTTP client ---------------------------------------------------------------------


async def fetch(
    port: int, path: str = "/", headers: dict[str, str] | None = None, timeout: float = 10.0
) -> tuple[int, str | None, dict[str, str], float]:
    """(status or -1 on failure, error code, headers, seconds)."""
    started = time.monotonic()
    lines = [f"GET {path} HTTP/1.1", "Host: bench", "Connection: close"]
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    try:
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            try:
                writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())
                data = await reader.read()
            finally:
                writer.close()
    except (OSError, TimeoutError):
        return -1, "no answer", {}, time.monotonic() - started
    head, _, body = data.partition(b"\r\n\r\n")
    if not head:
        return -1, "closed", {}, time.monotonic() - started
    status = int(head.split(b" ", 2)[1])
    found = {}
    for line in head.decode("latin-1").split("\r\n")[1:]:
        name, _, value = line.partition(":")
        found[name.strip().lower()] = value.strip()
    code = None
    with contextlib.suppress(ValueError, KeyError, TypeError):
        code = json.loads(body)["error"]["code"]
    return status, code, found, time.monotonic() - started


def bearer(value: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {value}"}


# --- scenarios -----------------------------------------------------------------------------


def send_big_header(port: int, mib: int) -> float:
    """Seconds until the gateway answers (or closes) a `mib` MiB header, no key."""
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=60) as sock:
        try:
            sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: ")
            chunk = b"a" * (1 << 20)
            for _ in range(mib):
                sock.sendall(chunk)
            sock.sendall(b"\r\n\r\n")
        except OSError:
            pass
        with contextlib.suppress(OSError):
            sock.recv(65536)
    return time.monotonic() - started


async def scenario_flood(tree: Path, work: Path, upstream: str) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for listener in ("proxy", "admin"):
        gw = Gateway(tree, work / f"flood-{listener}", upstream, "sqlite:///g.db").start()
        port = gw.port if listener == "proxy" else gw.admin_port
        try:
            rss0 = rss_kib(gw.pid)
            single = await asyncio.to_thread(send_big_header, port, 64)
            stop = asyncio.Event()
            latencies: list[float] = []
            failures = 0

            async def normal(
                gw: Gateway = gw, stop: asyncio.Event = stop, latencies: list[float] = latencies
            ) -> None:
                nonlocal failures
                while not stop.is_set():
                    status, _, _, seconds = await fetch(gw.admin_port, "/healthz", timeout=10)
                    latencies.append(seconds)
                    failures += status != 200
                    await asyncio.sleep(0.05)

            watcher = asyncio.ensure_future(normal())
            await asyncio.gather(*(asyncio.to_thread(send_big_header, port, 64) for _ in range(4)))
            stop.set()
            await watcher
            result[listener] = {
                "one_64MiB_header_s": round(single, 2),
                "normal_max_latency_s": round(max(latencies), 3),
                "normal_failures": failures,
                "normal_requests": len(latencies),
                "rss_MiB_before": round(rss0 / 1024, 1),
                "peak_rss_growth_MiB": round((rss_kib(gw.pid, "VmHWM") - rss0) / 1024, 1),
            }
        finally:
            gw.stop()
    return result


async def scenario_slowloris(tree: Path, work: Path, upstream: str) -> dict[str, Any]:
    gw = Gateway(tree, work / "slowloris", upstream, "sqlite:///g.db")
    gw.start(prefix=["prlimit", "--nofile=1024:20000"])
    slow: list[socket.socket] = []
    stop = threading.Event()
    try:
        for _ in range(1005):
            try:
                sock = socket.create_connection(("127.0.0.1", gw.port), timeout=2)
                sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nX-Slow: ")
                slow.append(sock)
            except OSError:
                break

        def trickle() -> None:
            while not stop.wait(1.0):
                for sock in slow:
                    with contextlib.suppress(OSError):
                        sock.send(b"a")

        threading.Thread(target=trickle, daemon=True).start()
        outcomes: Counter[str] = Counter()
        for _ in range(61):  # 122 normal requests over ~12 s
            for status, code, _, _ in await asyncio.gather(
                fetch(gw.port, "/n", timeout=10), fetch(gw.port, "/n", timeout=10)
            ):
                outcomes[f"{status} {code}"] += 1
            await asyncio.sleep(0.2)
        fd_lines = sum("file descriptors" in line for line in gw.log.read_text().splitlines())
        return {
            "slow_connections": len(slow),
            "normal_outcomes": dict(outcomes),
            "fd_log_lines": fd_lines,
        }
    finally:
        stop.set()
        for sock in slow:
            sock.close()
        gw.stop()


async def scenario_load(tree: Path, work: Path, upstream: str) -> dict[str, Any]:
    result = {}
    for concurrent in (500, 1000):
        redis = Redis(work)
        redis.start()
        gws = [
            Gateway(tree, work / f"load-{concurrent}-{i}", upstream, redis.url).start()
            for i in range(2)
        ]
        try:
            _, value = gws[0].create_key(rate_limit="10/minute")
            answers = await asyncio.gather(
                *(fetch(gws[i % 2].port, f"/l{i}", bearer(value)) for i in range(concurrent))
            )
            statuses = Counter(a[0] for a in answers)
            result[str(concurrent)] = {
                "admitted": statuses.get(200, 0),
                "admitted_without_ratelimit_headers": sum(
                    1 for a in answers if a[0] == 200 and "ratelimit" not in a[2]
                ),
                "429": statuses.get(429, 0),
                "503": statuses.get(503, 0),
                "other": {k: v for k, v in statuses.items() if k not in (200, 429, 503)},
            }
        finally:
            for gw in gws:
                gw.stop()
            redis.kill()
    return result


async def scenario_freeze(tree: Path, work: Path, upstream: str) -> dict[str, Any]:
    redis = Redis(work)
    redis.start()
    gw = Gateway(tree, work / "freeze", upstream, redis.url).start()
    try:
        _, admin = gw.create_key(scope="admin")
        _, fresh = gw.create_key()
        await fetch(gw.admin_port, "/v1/keys", bearer(admin))
        assert redis.proc is not None
        redis.proc.send_signal(signal.SIGSTOP)
        never, ready, listing = await asyncio.gather(
            fetch(gw.port, "/x", bearer(fresh)),
            fetch(gw.admin_port, "/readyz"),
            fetch(gw.admin_port, "/v1/keys", bearer(admin)),
        )
        return {
            "never_seen_key": [never[0], round(never[3], 2)],
            "readyz": [ready[0], round(ready[3], 2)],
            "admin_list": [listing[0], round(listing[3], 2)],
        }
    finally:
        redis.kill()
        gw.stop()


async def scenario_restart(tree: Path, work: Path, upstream: str) -> dict[str, Any]:
    (work / "restart-redis").mkdir(parents=True, exist_ok=True)
    redis = Redis(work / "restart-redis", persistent=True)  # keys survive the restart
    redis.start()
    busy = Gateway(tree, work / "restart-busy", upstream, redis.url).start()
    idle = Gateway(tree, work / "restart-idle", upstream, redis.url).start()
    try:
        _, value = busy.create_key(rate_limit="100000/minute")
        fresh = [busy.create_key()[1] for _ in range(21)]  # never used before the restart
        for gw in (busy, idle):
            await asyncio.gather(*(fetch(gw.port, "/w", bearer(value)) for _ in range(100)))
        redis.kill()
        redis.start()
        restarted = time.monotonic()
        # The replica that saw no traffic since the restart: its first fresh-key request.
        first = await fetch(idle.port, "/f", bearer(fresh[0]))
        first_200 = None
        while time.monotonic() - restarted < 30:
            if (await fetch(idle.port, "/f", bearer(fresh[0])))[0] == 200:
                first_200 = round(time.monotonic() - restarted, 2)
                break
            await asyncio.sleep(0.1)
        answers = await asyncio.gather(*(fetch(busy.port, "/f", bearer(v)) for v in fresh[1:]))
        return {
            "idle_replica_first_request": first[0],
            "idle_replica_first_200_s_after_restart": first_200,
            "busy_replica_20_concurrent_fresh_keys": dict(Counter(a[0] for a in answers)),
        }
    finally:
        busy.stop()
        idle.stop()
        redis.kill()


async def scenario_throttle(tree: Path, work: Path, upstream: str) -> dict[str, Any]:
    sys.path.insert(0, str(ROOT))
    from gateway.keys.format import generate_key

    result = {}
    for concurrent in (100, 400):
        gw = Gateway(tree, work / f"throttle-{concurrent}", upstream, "sqlite:///g.db").start()
        try:
            answers = await asyncio.gather(
                *(fetch(gw.port, "/", {"X-API-Key": generate_key()}) for _ in range(concurrent))
            )
            codes = Counter(a[1] for a in answers)
            result[str(concurrent)] = {"evaluated": codes.get("INVALID_API_KEY", 0)}
        finally:
            gw.stop()
    return result


async def scenario_usage(tree: Path, work: Path, upstream: str) -> dict[str, Any]:
    redis = Redis(work / "usage-redis", persistent=True)
    (work / "usage-redis").mkdir(parents=True, exist_ok=True)
    redis.start()
    gw = Gateway(tree, work / "usage", upstream, redis.url, usage={"flush_interval": 0.5})
    gw.start()
    try:
        key_id, value = gw.create_key(rate_limit="100000/minute")
        await fetch(gw.port, "/warm", bearer(value))
        time.sleep(1.0)
        redis.kill()
        sent = 0
        for _ in range(23):
            answers = await asyncio.gather(
                *(fetch(gw.port, "/u", bearer(value)) for _ in range(45))
            )
            sent += sum(a[0] == 200 for a in answers)
        exit_code = gw.stop()
        redis.start()
        gw.start()
        time.sleep(3.0)
        shown = json.loads(gw.cli("keys", "show", key_id, "--json"))
        total = _find_total(shown)
        return {
            "requests_while_down": sent,
            "exit_code": exit_code,
            "recorded_after_restart": (total - 1) if total is not None else None,
            "lost": (sent - (total - 1)) if total is not None else None,
        }
    finally:
        gw.stop()
        redis.kill()


def _find_total(data: Any) -> int | None:
    if isinstance(data, dict):
        for name, value in data.items():
            if name in ("totalRequests", "total_requests") and isinstance(value, int):
                return value
            found = _find_total(value)
            if found is not None:
                return found
    return None


async def scenario_redaction(tree: Path, work: Path, upstream: str) -> dict[str, Any]:
    gw = Gateway(tree, work / "redaction", upstream, "sqlite:///g.db").start()
    try:
        key_id, value = gw.create_key()
        _, _, headers, _ = await fetch(gw.port, "/x", {"X-API-Key": value, "X-Request-ID": value})
        await fetch(gw.port, f"/sites/{value}/x", {"X-API-Key": value})
        time.sleep(1.5)
        log = gw.log.read_text()
        usage = gw.cli("keys", "show", key_id, "--json")
        return {
            "request_id_echoed": value in headers.get("x-request-id", ""),
            "value_in_log": value in log,
            "value_in_usage": value in usage,
        }
    finally:
        gw.stop()


async def scenario_adminlog(tree: Path, work: Path, upstream: str) -> dict[str, Any]:
    gw = Gateway(tree, work / "adminlog", upstream, "sqlite:///g.db").start()
    try:
        _, admin = gw.create_key(scope="admin")
        ids = []
        for path in ("/healthz", "/v1/keys", "/v1/keys", "/metrics", "/v1/nothing"):
            ids.append((await fetch(gw.admin_port, path, bearer(admin)))[2].get("x-request-id"))
        time.sleep(1.0)
        lines = [
            json.loads(line)
            for line in gw.log.read_text().splitlines()
            if '"gateway.access"' in line
        ]
        logged = {line.get("requestId") for line in lines}
        return {"admin_requests": len(ids), "access_lines": sum(i in logged for i in ids)}
    finally:
        gw.stop()


async def scenario_soak(tree: Path, work: Path, upstream: str, seconds: float) -> dict[str, Any]:
    redis = Redis(work)
    redis.start()
    # Bad keys are part of the mix; the throttle must not lock the one client IP out.
    gw = Gateway(
        tree, work / "soak", upstream, redis.url, auth={"failed_attempts_limit": "1000000/minute"}
    ).start()
    try:
        _, admin = gw.create_key(scope="admin")
        keys = [gw.create_key(rate_limit="100000/minute") for _ in range(20)]
        samples = []
        started = time.monotonic()
        counts: Counter[str] = Counter()
        next_sample = 0.0
        round_ = 0
        while (elapsed := time.monotonic() - started) < seconds:
            if elapsed >= next_sample:
                samples.append((round(elapsed), rss_kib(gw.pid) // 1024, fds(gw.pid)))
                next_sample += max(seconds / 10, 1)
            round_ += 1
            batch = [fetch(gw.port, f"/s{round_}", bearer(v)) for _, v in keys]
            batch.append(fetch(gw.port, "/bad", {"X-API-Key": "gw_nope"}))
            batch.append(fetch(gw.admin_port, "/v1/keys", bearer(admin)))
            for status, code, *_ in await asyncio.gather(*batch):
                counts[f"{status} {code}" if code else str(status)] += 1
            if round_ % 50 == 0:  # rotate one key, revoke and replace another
                index = round_ // 50 % len(keys)
                key_id, _ = keys[index]
                out = gw.cli("keys", "rotate", key_id, "--json", "--yes")
                keys[index] = (key_id, KEY_RE.search(out).group(0))  # type: ignore[union-attr]
                other = (index + 1) % len(keys)
                gw.cli("keys", "revoke", keys[other][0], "--yes")
                keys[other] = gw.create_key(rate_limit="100000/minute")
        samples.append((round(time.monotonic() - started), rss_kib(gw.pid) // 1024, fds(gw.pid)))
        return {"seconds_rss_MiB_fds": samples, "statuses": dict(counts)}
    finally:
        gw.stop()
        redis.kill()


SCENARIOS = {
    "flood": scenario_flood,
    "slowloris": scenario_slowloris,
    "load": scenario_load,
    "freeze": scenario_freeze,
    "restart": scenario_restart,
    "throttle": scenario_throttle,
    "usage": scenario_usage,
    "redaction": scenario_redaction,
    "adminlog": scenario_adminlog,
}


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tree", type=Path, default=ROOT, help="source tree to run")
    parser.add_argument("--only", default="", help="comma-separated scenario names")
    parser.add_argument("--soak-seconds", type=float, default=0.0)
    args = parser.parse_args()
    names = [n for n in args.only.split(",") if n] or list(SCENARIOS)
    work = Path(tempfile.mkdtemp(prefix="gateway-attack-"))
    upstream_proc, upstream = start_upstream(work)
    print(f"tree {args.tree} ({_commit(args.tree)})", flush=True)
    try:
        for name in names:
            if name == "soak":
                result = await scenario_soak(args.tree, work, upstream, args.soak_seconds or 300)
            else:
                try:
                    result = await SCENARIOS[name](args.tree, work, upstream)
                except Exception as exc:  # a "before" tree may fail a scenario outright
                    result = {"error": f"{type(exc).__name__}: {exc}"[:300]}
            print(f"{name}: {json.dumps(result)}", flush=True)
    finally:
        upstream_proc.terminate()
        upstream_proc.wait()
        shutil.rmtree(work, ignore_errors=True)


def _commit(tree: Path) -> str:
    try:
        return subprocess.run(
            ["git", "-C", str(tree), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "?"


if __name__ == "__main__":
    asyncio.run(main())
