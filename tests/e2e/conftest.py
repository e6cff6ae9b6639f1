"""End-to-end fixtures: real processes on free ports, real HTTP, polled until ready.

- `upstream`: tests/e2e/upstream.py (aiohttp.web) in its own process, for the session.
- `start_gateway(**config)`: `python -m gateway serve --config <toml>` in its own process,
  on a temporary SQLite store, its stdout+stderr in a log file; `.create_key(...)` makes
  keys through KeyService on the same store (the CLI's path), remembering every value so
  that the logs can be searched for them. Stopped with SIGTERM at teardown.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import TEST_SECRET

HERE = Path(__file__).parent
ROOT = HERE.parent.parent
START_TIMEOUT = 30.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(condition: Callable[[], Any], timeout: float = 10.0, what: str = "condition") -> Any:
    """Poll `condition` until it returns something truthy; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.02)


def port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.2)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def clean_env(**extra: str) -> dict[str, str]:
    """The environment for a child process: no GATEWAY_* from outside, our secret."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
    env["GATEWAY_SECRET"] = TEST_SECRET
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env.update(extra)
    return env


class Proc:
    """A child process whose output goes to a log file."""

    def __init__(self, args: list[str], log_path: Path, env: dict[str, str]) -> None:
        self.log_path = log_path
        self._log = open(log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.popen = subprocess.Popen(
            args, stdout=self._log, stderr=subprocess.STDOUT, env=env, cwd=str(log_path.parent)
        )

    @property
    def pid(self) -> int:
        return self.popen.pid

    def log(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def alive(self) -> bool:
        return self.popen.poll() is None

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int:
        if self.alive():
            self.popen.send_signal(sig)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()
        self._log.close()
        return self.popen.returncode


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    raise TypeError(value)


def write_toml(path: Path, config: dict[str, Any]) -> None:
    lines: list[str] = []
    for section, values in config.items():
        if isinstance(values, list):  # [[routes]]
            for table in values:
                lines.append(f"[[{section}]]")
                lines += [f"{k} = {toml_value(v)}" for k, v in table.items()]
        else:
            lines.append(f"[{section}]")
            lines += [f"{k} = {toml_value(v)}" for k, v in values.items()]
        lines.append("")
    path.write_text("\n".join(lines), encoding="utf-8")


# Every key value any e2e test created or presented: the logs must contain none of them.
KEY_VALUES: set[str] = set()


@dataclass
class Key:
    id: str
    value: str


@dataclass
class Gateway:
    proc: Proc
    port: int
    admin_port: int
    storage_url: str
    config: dict[str, Any] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def admin_url(self) -> str:
        return f"http://127.0.0.1:{self.admin_port}"

    def run(self, action: Callable[[Any], Any]) -> Any:
        """Run `await action(service)` on this gateway's store, in this process."""
        from gateway.runtime import key_service
        from gateway.settings import load_settings

        settings = load_settings(storage={"url": self.storage_url})

        async def main() -> Any:
            async with key_service(settings) as service:
                return await action(service)

        # In a thread of its own: callers may be async tests with a loop running.
        with _secret(), concurrent.futures.ThreadPoolExecutor(1) as pool:
            return pool.submit(asyncio.run, main()).result()

    def create_key(self, scope: str = "read", **fields: Any) -> Key:
        from gateway.keys.model import KeyCreate, parse_body

        body = parse_body(KeyCreate, {"name": f"e2e {scope}", "scope": scope, **fields})
        key, value = self.run(lambda service: service.create(body))
        KEY_VALUES.add(value)
        return Key(key.id, value)

    def assert_no_key_values_logged(self) -> None:
        text = self.proc.log()
        leaked = [value[:8] + "…" for value in KEY_VALUES if value in text]
        assert not leaked, f"key values found in the gateway's log: {leaked}"


@contextlib.contextmanager
def _secret() -> Iterator[None]:
    old = os.environ.get("GATEWAY_SECRET")
    os.environ["GATEWAY_SECRET"] = TEST_SECRET
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("GATEWAY_SECRET", None)
        else:
            os.environ["GATEWAY_SECRET"] = old


def gateway_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "gateway", *args]


def launch_gateway(workdir: Path, upstream_url: str, **config: Any) -> Gateway:
    """Start `gateway serve` with `config` sections over the defaults; wait until ready."""
    workdir.mkdir(parents=True, exist_ok=True)
    port, admin_port = free_port(), free_port()
    storage_url = f"sqlite:///{workdir / 'gateway.db'}"
    sections: dict[str, Any] = {
        "server": {"listen": f"127.0.0.1:{port}", "admin_listen": f"127.0.0.1:{admin_port}"},
        "upstream": {"url": upstream_url},
        "storage": {"url": storage_url},
    }
    for name, values in config.items():
        if isinstance(values, dict):
            sections[name] = {**sections.get(name, {}), **values}
        else:
            sections[name] = values
    config_path = workdir / "gateway.toml"
    write_toml(config_path, sections)
    proc = Proc(
        gateway_command("--config", str(config_path), "serve"), workdir / "gateway.log", clean_env()
    )
    gateway = Gateway(proc, port, admin_port, sections["storage"]["url"], sections)
    wait_listening(proc, [port, admin_port], "the gateway")
    return gateway


def wait_listening(proc: Proc, ports: list[int], what: str) -> None:
    """Wait until `proc` listens on every one of `ports`; fail (and kill it) if it exits
    first or takes longer than START_TIMEOUT."""

    def ready() -> bool:
        if not proc.alive():
            raise AssertionError(f"{what} exited early ({proc.popen.returncode}):\n{proc.log()}")
        return all(port_open(port) for port in ports)

    try:
        wait_for(ready, START_TIMEOUT, f"{what} to listen")
    except BaseException:
        proc.stop(signal.SIGKILL)
        raise


@dataclass
class Upstream:
    proc: Proc
    port: int

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@pytest.fixture(scope="session")
def upstream(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Upstream]:
    workdir = tmp_path_factory.mktemp("upstream")
    port = free_port()
    proc = Proc(
        [sys.executable, str(HERE / "upstream.py"), str(port)],
        workdir / "upstream.log",
        clean_env(),
    )
    wait_for(lambda: port_open(port) or not proc.alive(), START_TIMEOUT, "the upstream")
    assert proc.alive(), proc.log()
    yield Upstream(proc, port)
    proc.stop()


@pytest.fixture(scope="module")
def start_gateway(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Callable[..., Gateway]]:
    """A factory of gateways (`start_gateway(upstream_url, **sections)`), all stopped,
    and their logs checked for key values, when the module is done."""
    started: list[Gateway] = []

    def start(upstream_url: str, **config: Any) -> Gateway:
        gateway = launch_gateway(tmp_path_factory.mktemp("gateway"), upstream_url, **config)
        started.append(gateway)
        return gateway

    yield start
    for gateway in started:
        gateway.proc.stop()
    for gateway in started:
        gateway.assert_no_key_values_logged()


def vm_kib(pid: int, field_name: str) -> int:
    """A `VmRSS` / `VmHWM` value of /proc/<pid>/status, in KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field_name + ":"):
            return int(line.split()[1])
    raise KeyError(field_name)
