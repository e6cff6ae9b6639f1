"""`gateway serve` starting and stopping as a process: SIGTERM with requests in flight
(they complete, exit 0, usage flushed to SQLite) and startup failures (one clear line,
the documented exit code, no traceback)."""

from __future__ import annotations

import asyncio
import signal
import socket
import subprocess
from collections.abc import Callable
from pathlib import Path

import aiohttp
import pytest

from tests.e2e.conftest import (
    Gateway,
    Upstream,
    clean_env,
    free_port,
    gateway_command,
    port_open,
    wait_for,
    write_toml,
)

pytestmark = pytest.mark.e2e


async def test_sigterm_lets_in_flight_requests_finish_and_flushes_usage(
    upstream: Upstream, start_gateway: Callable[..., Gateway]
) -> None:
    # A long flush interval: only the shutdown flush can have written these records.
    gw = start_gateway(upstream.url, usage={"flush_interval": 3600.0})
    key = gw.create_key("read")
    in_flight = 5

    async with aiohttp.ClientSession() as http:

        async def inflight_upstream() -> int:
            async with http.get(f"{upstream.url}/_inflight") as r:
                return (await r.json())["count"]

        async def slow_call() -> tuple[int, int]:
            async with http.get(
                f"{gw.url}/slow?seconds=1.5",
                headers={"Authorization": f"Bearer {key.value}"},
            ) as r:
                return r.status, (await r.json())["bodyLength"]

        calls = [asyncio.ensure_future(slow_call()) for _ in range(in_flight)]
        deadline = asyncio.get_running_loop().time() + 10
        while await inflight_upstream() < in_flight:
            assert asyncio.get_running_loop().time() < deadline, "requests never reached upstream"
            await asyncio.sleep(0.02)
        gw.proc.popen.send_signal(signal.SIGTERM)

        results = await asyncio.gather(*calls)
    assert results == [(200, 0)] * in_flight
    assert await asyncio.to_thread(gw.proc.popen.wait, 20) == 0
    assert not port_open(gw.port)

    _, summary = gw.run(lambda service: service.details(key.id))
    assert summary.total_requests == in_flight
    assert len(summary.recent) == in_flight
    assert {record.status for record in summary.recent} == {200}
    assert "Traceback" not in gw.proc.log()
    gw.assert_no_key_values_logged()


def _serve_once(tmp_path: Path, config: dict, env: dict[str, str] | None = None) -> tuple[int, str]:
    path = tmp_path / "gateway.toml"
    write_toml(path, config)
    done = subprocess.run(
        gateway_command("--config", str(path), "serve"),
        capture_output=True,
        text=True,
        timeout=60,
        env=env or clean_env(),
        cwd=str(tmp_path),
    )
    return done.returncode, done.stdout + done.stderr


def _config(tmp_path: Path, listen: int, admin: int, upstream: str | None = "http://127.0.0.1:9"):
    config: dict = {
        "server": {"listen": f"127.0.0.1:{listen}", "admin_listen": f"127.0.0.1:{admin}"},
        "storage": {"url": f"sqlite:///{tmp_path / 'gateway.db'}"},
    }
    if upstream:
        config["upstream"] = {"url": upstream}
    return config


def test_port_in_use_is_one_line_and_exit_1(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        code, output = _serve_once(tmp_path, _config(tmp_path, port, free_port()))
    assert code == 1
    assert "Traceback" not in output
    assert f"cannot listen on 127.0.0.1:{port}" in output
    assert "server.listen" in output


def test_missing_upstream_url_is_exit_2(tmp_path: Path) -> None:
    code, output = _serve_once(tmp_path, _config(tmp_path, free_port(), free_port(), None))
    assert code == 2
    assert "upstream.url" in output
    assert "Traceback" not in output


def test_store_made_with_another_secret_is_refused(tmp_path: Path) -> None:
    config = _config(tmp_path, free_port(), free_port())
    listen = config["server"]["listen"]
    # First start creates the store with the test secret; stop it once it listens.
    path = tmp_path / "gateway.toml"
    write_toml(path, config)
    first = subprocess.Popen(
        gateway_command("--config", str(path), "serve"),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=clean_env(),
        cwd=str(tmp_path),
    )
    try:
        wait_for(lambda: port_open(int(listen.rsplit(":", 1)[1])), 30, "the first start")
    finally:
        first.send_signal(signal.SIGTERM)
        assert first.wait(30) == 0
    code, output = _serve_once(tmp_path, config, clean_env(GATEWAY_SECRET="another-" + "y" * 40))
    assert code == 2
    assert "different server secret" in output
    assert "Traceback" not in output
