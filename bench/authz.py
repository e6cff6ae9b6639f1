"""Bench — forward auth: nginx + `auth_request` → `gateway authz` vs nginx alone.

One nginx (one worker) runs the shipped config/nginx.conf (auth_request to the gateway,
`error_page 403 = @gateway_denied`) next to a plain `proxy_pass` server and the origin
(a small static answer), so both setups proxy to the same origin through the same
worker. `gateway authz` answers the checks. nginx and the gateway are pinned to core 0
(`taskset -c 0`), `wrk` runs on core 1. Rounds are interleaved.

    python bench/authz.py [--rounds 3] [--seconds 5] [--connections 32]

Figures (issue #12):
- CPU efficiency = (nginx CPU per request, nginx alone) / (nginx + gateway CPU per
  request, with every check on: usage recorded, metrics, one access line): target >= 0.30.
- The issue's reference, in the same run: auth_request to a minimal Python decision on
  uvicorn (answers 200 with two headers, checks nothing).
- Decision CPU = the gateway process's CPU per check (its HTTP parsing, the decision,
  usage, metrics, the access line): allowed <= 40 us; a 401 cheaper than an allowed one.
CPU is utime + stime from /proc/PID/stat (nginx: master + worker).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from proxy_http import (  # the sibling bench's helpers
    ROOT,
    cpu_seconds,
    create_key,
    free_port,
    gateway_env,
    need,
    process,
    wrk,
)

EXTRA_SERVERS = """
    # --- bench only: the origin, nginx alone in front of it, and the issue's reference
    # (auth_request to a minimal Python decision on uvicorn: 200, two headers) ---
    upstream minimal_decision {{
        server 127.0.0.1:{minimal};
        keepalive 32;
    }}
    server {{
        listen 127.0.0.1:{reference};
        location / {{
            auth_request /_minimal;
            proxy_pass http://api;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }}
        location = /_minimal {{
            internal;
            proxy_pass http://minimal_decision;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_pass_request_body off;
            proxy_set_header Content-Length "";
            proxy_set_header X-Original-URI $request_uri;
        }}
    }}
    server {{
        listen 127.0.0.1:{origin};
        location / {{ default_type text/plain; return 200 "hello from nginx\\n"; }}
    }}
    server {{
        listen 127.0.0.1:{plain};
        location / {{
            proxy_pass http://api;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }}
    }}
}}
"""


MINIMAL_DECISION = """\
async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    headers = [(b"x-gateway-key-id", b"key_minimal"), (b"x-gateway-key-scope", b"read")]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": b""})
"""


def nginx_conf(
    workdir: Path,
    *,
    origin: int,
    plain: int,
    gated: int,
    authz: int,
    reference: int,
    minimal: int,
) -> str:
    text = (ROOT / "config" / "nginx.conf").read_text()
    for old, new in (
        ("worker_processes auto;", "worker_processes 1;"),
        ("127.0.0.1:8002", f"127.0.0.1:{authz}"),
        ("127.0.0.1:9000", f"127.0.0.1:{origin}"),
        ("listen 8080;", f"listen 127.0.0.1:{gated};"),
    ):
        assert old in text, old
        text = text.replace(old, new)
    body, _, _ = text.rstrip().rpartition("}")  # the end of the http block
    return body + EXTRA_SERVERS.format(
        origin=origin, plain=plain, reference=reference, minimal=minimal
    )


def nginx_pids(master: int) -> list[int]:
    """The master and its workers."""
    pids = [master]
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == master:
                pids.append(int(entry.name))
    return pids


@dataclass
class Setup:
    plain: int
    gated: int
    reference: int
    nginx: list[int] = field(default_factory=list)
    authz: int = 0
    minimal: int = 0
    key: str = ""


@contextmanager
def setup(workdir: Path) -> Iterator[Setup]:
    nginx = need("nginx")
    taskset = need("taskset")
    origin, plain, gated, authz = free_port(), free_port(), free_port(), free_port()
    reference, minimal = free_port(), free_port()
    (workdir / "tmp").mkdir()
    conf = workdir / "nginx.conf"
    conf.write_text(
        nginx_conf(
            workdir,
            origin=origin,
            plain=plain,
            gated=gated,
            authz=authz,
            reference=reference,
            minimal=minimal,
        )
    )
    (workdir / "minimal_decision.py").write_text(MINIMAL_DECISION)
    storage = f"sqlite:///{workdir / 'gateway.db'}"
    config = workdir / "gateway.toml"
    config.write_text(
        '[server]\ntrusted_proxies = ["127.0.0.1"]\n'
        f'[storage]\nurl = "{storage}"\n'
        # Invalid keys are measured too: the failed-attempt throttle must not turn them
        # into 429s during the run.
        '[auth]\nfailed_attempts_limit = "1000000000/minute"\n'
    )
    s = Setup(plain, gated, reference)
    s.key = create_key(storage, "1000000000/minute")
    user = ["-g", "daemon off; user root;"] if os.geteuid() == 0 else ["-g", "daemon off;"]
    with ExitStack() as stack:
        command = [sys.executable, "-m", "gateway", "--config", str(config), "authz"]
        gateway = stack.enter_context(
            process(
                [taskset, "-c", "0", *command, "--listen", f"127.0.0.1:{authz}"],
                authz,
                env=gateway_env(),
            )
        )
        uvicorn = [sys.executable, "-m", "uvicorn", "--app-dir", str(workdir)]
        uvicorn += ["--http", "httptools", "--loop", "uvloop", "--no-access-log"]
        uvicorn += ["--log-level", "warning", "--port", str(minimal), "minimal_decision:app"]
        decision = stack.enter_context(process([taskset, "-c", "0", *uvicorn], minimal))
        server = stack.enter_context(
            process([taskset, "-c", "0", nginx, "-p", str(workdir), "-c", str(conf), *user], gated)
        )
        s.authz = gateway.pid
        s.minimal = decision.pid
        s.nginx = nginx_pids(server.pid)
        yield s


def cpu_of(pids: list[int]) -> float:
    return sum(cpu_seconds(pid) for pid in pids)


@dataclass
class Run:
    rps: float
    nginx_us: float
    authz_us: float
    non_2xx: int


def measure(
    url: str, s: Setup, opts: argparse.Namespace, headers: dict[str, str], decider: int
) -> Run:
    nginx_before, authz_before = cpu_of(s.nginx), cpu_seconds(decider)
    result = wrk(url, seconds=opts.seconds, connections=opts.connections, headers=headers)
    nginx_cpu = cpu_of(s.nginx) - nginx_before
    authz_cpu = cpu_seconds(decider) - authz_before
    n = result.requests
    return Run(result.rps, nginx_cpu * 1e6 / n, authz_cpu * 1e6 / n, result.non_2xx)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--connections", type=int, default=32)
    opts = parser.parse_args()
    # wrk (started from here) on core 1; the system under test has core 0.
    os.sched_setaffinity(0, {1})

    with tempfile.TemporaryDirectory(prefix="gateway-bench-authz-") as tmp, setup(Path(tmp)) as s:
        cases = {
            "nginx alone": (s.plain, {}),
            "minimal decision": (s.reference, {}),
            "allowed": (s.gated, {"Authorization": f"Bearer {s.key}"}),
            "401 missing key": (s.gated, {}),
            "401 invalid key": (s.gated, {"Authorization": "Bearer gw_" + "A" * 38}),
        }
        for port, headers in cases.values():  # warm-up
            wrk(
                f"http://127.0.0.1:{port}/",
                seconds=1,
                connections=opts.connections,
                headers=headers,
            )
        runs: dict[str, list[Run]] = {name: [] for name in cases}
        for _ in range(opts.rounds):
            for name, (port, headers) in cases.items():
                decider = s.minimal if name == "minimal decision" else s.authz
                run = measure(f"http://127.0.0.1:{port}/x", s, opts, headers, decider)
                expect_ok = name in ("nginx alone", "minimal decision", "allowed")
                assert (run.non_2xx == 0) == expect_ok, f"{name}: {run.non_2xx} non-2xx"
                runs[name].append(run)

    print(
        f"wrk -t1 -c{opts.connections} -d{opts.seconds}s on core 1; nginx (1 worker) and "
        f"gateway authz pinned to core 0; {opts.rounds} rounds, medians"
    )
    med = {
        name: (
            statistics.median(r.rps for r in rs),
            statistics.median(r.nginx_us for r in rs),
            statistics.median(r.authz_us for r in rs),
        )
        for name, rs in runs.items()
    }
    for name, (rps, nginx_us, authz_us) in med.items():
        print(
            f"  {name:16s} {rps:8.0f} req/s   CPU per request: nginx {nginx_us:6.1f} us, "
            f"gateway {authz_us:6.1f} us, total {nginx_us + authz_us:6.1f} us"
        )
    alone = med["nginx alone"][1]  # the gateway idles meanwhile: not part of nginx alone
    for name in ("minimal decision", "allowed", "401 missing key", "401 invalid key"):
        total = med[name][1] + med[name][2]
        target = "the issue's reference" if name == "minimal decision" else "target >= 0.30"
        print(f"  CPU efficiency, {name:16s} = {alone / total:.2f}   ({target})")
    print(
        f"  decision CPU per check: minimal uvicorn app {med['minimal decision'][2]:.1f} us, "
        f"allowed {med['allowed'][2]:.1f} us (target <= 40), "
        f"401 missing {med['401 missing key'][2]:.1f} us, "
        f"401 invalid {med['401 invalid key'][2]:.1f} us"
    )


if __name__ == "__main__":
    main()
