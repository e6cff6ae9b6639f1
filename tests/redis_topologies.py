"""Real Redis topologies for tests and benches: a 3-master Cluster and a Sentinel set-up.

Every server is a real `redis-server` on a free loopback port with its files in a
temporary folder, started and stopped by the caller:

- `RedisCluster3`: three `redis-server --cluster-enabled yes` joined with
  `redis-cli --cluster create ... --cluster-yes`; ready when every node reports
  `cluster_state:ok` and knows all three masters.
- `SentinelSetup`: one master, one replica (`replicaof`) and one sentinel
  (`redis-server sentinel.conf --sentinel`, quorum 1, short down-after so a failover
  takes about a second); `kill_master()` stops the master (SIGKILL) to force a failover.
"""

from __future__ import annotations

import contextlib
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

SERVICE = "gw-master"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait(condition: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        try:
            result = condition()
        except Exception:  # not up yet
            result = None
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.05)


def _cli(port: int, *args: str, timeout: float = 5.0) -> str:
    done = subprocess.run(
        ["redis-cli", "-h", "127.0.0.1", "-p", str(port), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    return done.stdout


class _Servers:
    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.procs: dict[int, subprocess.Popen[bytes]] = {}

    def start_server(self, port: int, *args: str, conf: str | None = None) -> None:
        workdir = self.folder / str(port)
        workdir.mkdir(parents=True, exist_ok=True)
        argv = [shutil.which("redis-server") or "redis-server"]
        if conf is not None:
            path = workdir / "redis.conf"
            path.write_text(conf)
            argv.append(str(path))
        argv += ["--port", str(port), "--bind", "127.0.0.1", "--dir", str(workdir)]
        argv += ["--save", "", "--appendonly", "no", *args]
        log = open(workdir / "log.txt", "wb")  # noqa: SIM115 - the child keeps it
        self.procs[port] = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)
        log.close()
        _wait(lambda: _cli(port, "ping").strip() == "PONG", 10, f"redis-server on {port}")

    def kill(self, port: int, sig: int = signal.SIGKILL) -> None:
        proc = self.procs.pop(port, None)
        if proc is not None and proc.poll() is None:
            proc.send_signal(sig)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(5)
            if proc.poll() is None:
                proc.kill()
                proc.wait(5)

    def stop(self) -> None:
        for port in list(self.procs):
            self.kill(port, signal.SIGTERM)


class RedisCluster3(_Servers):
    """Three masters (and with `replicas=True` a replica each), every slot covered."""

    def __init__(
        self, folder: Path, *, replicas: bool = False, node_timeout_ms: int = 2000
    ) -> None:
        super().__init__(folder)
        self.replicas = replicas
        self.node_timeout_ms = node_timeout_ms
        self.ports = [free_port() for _ in range(6 if replicas else 3)]

    @property
    def url(self) -> str:
        return "redis+cluster://" + ",".join(f"127.0.0.1:{p}" for p in self.ports)

    def start(self) -> RedisCluster3:
        try:
            for port in self.ports:
                self.start_server(
                    port,
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    "nodes.conf",
                    "--cluster-node-timeout",
                    str(self.node_timeout_ms),
                    # The bus port, else port + 10000 (which may be taken or above 65535).
                    "--cluster-port",
                    str(free_port()),
                )
            nodes = [f"127.0.0.1:{p}" for p in self.ports]
            replicas = ["--cluster-replicas", "1"] if self.replicas else []
            subprocess.run(
                ["redis-cli", "--cluster", "create", *nodes, *replicas, "--cluster-yes"],
                capture_output=True,
                timeout=30,
                check=True,
            )
            for port in self.ports:
                _wait(lambda p=port: self._ready(p), 20, f"cluster node {port}")
            for port in self.ports:  # a replica can take over only once it has synced
                _wait(lambda p=port: self._synced(p), 20, f"cluster replica {port}")
        except BaseException:
            self.stop()
            raise
        return self

    def _ready(self, port: int) -> bool:
        info = _cli(port, "cluster", "info")
        nodes = _cli(port, "cluster", "nodes")
        replicas = nodes.count("slave") == 3 if self.replicas else True
        return "cluster_state:ok" in info and nodes.count("master") == 3 and replicas

    def _synced(self, port: int) -> bool:
        info = _cli(port, "info", "replication")
        return "role:master" in info or "master_link_status:up" in info

    def owner(self, key: str) -> int | None:
        """The port of the master that owns `key`'s slot now (None: none during a failover)."""
        for port in self.ports:
            if port not in self.procs:
                continue
            slot = int(_cli(port, "cluster", "keyslot", key).strip())
            for line in _cli(port, "cluster", "nodes").splitlines():
                fields = line.split()
                if "master" not in fields[2] or "fail" in fields[2]:
                    continue
                for part in fields[8:]:
                    low, _, high = part.partition("-")
                    if low.isdigit() and int(low) <= slot <= int(high or low):
                        return int(fields[1].split(":")[1].split("@")[0])
        return None

    def flush(self) -> None:
        for port in self.ports:
            if port in self.procs and "role:master" in _cli(port, "info", "replication"):
                _cli(port, "flushall")


class SentinelSetup(_Servers):
    """A master, its replica and one sentinel watching them as `SERVICE`."""

    def __init__(self, folder: Path, *, down_after_ms: int = 400) -> None:
        super().__init__(folder)
        self.master_port, self.replica_port, self.sentinel_port = (free_port() for _ in range(3))
        self.down_after_ms = down_after_ms

    @property
    def url(self) -> str:
        return f"redis+sentinel://127.0.0.1:{self.sentinel_port}/{SERVICE}"

    def start(self) -> SentinelSetup:
        try:
            self.start_server(self.master_port)
            self.start_server(self.replica_port, "--replicaof", "127.0.0.1", str(self.master_port))
            _wait(
                lambda: "master_link_status:up" in _cli(self.replica_port, "info", "replication"),
                10,
                "the replica to sync",
            )
            conf = (
                f"sentinel monitor {SERVICE} 127.0.0.1 {self.master_port} 1\n"
                f"sentinel down-after-milliseconds {SERVICE} {self.down_after_ms}\n"
                f"sentinel failover-timeout {SERVICE} 3000\n"
                f"sentinel parallel-syncs {SERVICE} 1\n"
            )
            self.start_server(self.sentinel_port, "--sentinel", conf=conf)
            _wait(
                lambda: "slaves=1" in _cli(self.sentinel_port, "info", "sentinel"),
                15,
                "the sentinel to see the replica",
            )
        except BaseException:
            self.stop()
            raise
        return self

    def master(self) -> int:
        """The port the sentinel currently names as master."""
        reply = _cli(self.sentinel_port, "sentinel", "get-master-addr-by-name", SERVICE)
        return int(reply.split()[1])

    def kill_master(self) -> int:
        """SIGKILL the current master; its port (the sentinel then fails over)."""
        port = self.master()
        self.kill(port)
        return port

    def wait_failover(self, old: int, timeout: float = 15.0) -> int:
        return _wait(lambda: (p := self.master()) != old and p, timeout, "the failover")

    def flush(self) -> None:
        _cli(self.master(), "flushall")
