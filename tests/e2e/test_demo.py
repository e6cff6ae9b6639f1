"""`gateway demo`: starts with no config and no network, prints keys and curl lines that
work as printed, logs no key value, and Ctrl-C stops it and removes its temporary store."""

from __future__ import annotations

import json
import re
import shlex
import shutil
import signal
import socket
import subprocess
from pathlib import Path

import pytest

from tests.conftest import need
from tests.e2e.conftest import clean_env, free_port, gateway_command, wait_for

pytestmark = pytest.mark.e2e


def test_demo_prints_working_curl_lines_and_cleans_up(tmp_path: Path) -> None:
    curl = need("curl", shutil.which("curl"))
    env = clean_env()
    env.pop("GATEWAY_SECRET")  # the demo needs nothing: it makes its own secret
    port, admin_port = free_port(), free_port()  # the flag, and the environment
    out_path, err_path = tmp_path / "demo.out", tmp_path / "demo.err"
    with open(out_path, "wb") as out, open(err_path, "wb") as err:
        proc = subprocess.Popen(
            gateway_command("demo", "--listen", f"127.0.0.1:{port}"),
            stdout=out,
            stderr=err,
            env={**env, "GATEWAY_SERVER__ADMIN_LISTEN": f"127.0.0.1:{admin_port}"},
            cwd=str(tmp_path),
        )
    try:
        banner = wait_for(
            lambda: (
                ("admin API" in (text := out_path.read_text()) and text.endswith("\n\n") and text)
                or (proc.poll() is not None and pytest.fail(err_path.read_text()))
            ),
            30,
            "the demo banner",
        )
        lines = [line.strip() for line in banner.splitlines() if line.strip().startswith("curl ")]
        assert len(lines) == 4, banner
        assert f"Proxy       http://127.0.0.1:{port} " in banner
        assert f"Admin API   http://127.0.0.1:{admin_port}/v1/keys" in banner
        keys = re.findall(r"\b(gw_[0-9A-Za-z]{38})\b", banner)
        assert len(set(keys)) == 2
        store = Path(re.search(r"Store\s+(\S+)", banner).group(1))  # type: ignore[union-attr]
        assert store.exists()

        def run(line: str) -> tuple[str, str]:
            args = shlex.split(line)
            assert args[0] == "curl"
            done = subprocess.run(
                [curl, "-s", "-w", "\n%{http_code}", *args[1:]],
                capture_output=True,
                text=True,
                timeout=30,
            )
            body, _, status = done.stdout.rpartition("\n")
            return status, body

        allowed, no_key, wrong_scope, admin_list = (run(line) for line in lines)
        assert allowed[0] == "200"
        echo = json.loads(allowed[1])
        assert echo["headers"]["x-gateway-key-scope"] == "read"
        assert "authorization" not in echo["headers"]
        assert no_key[0] == "401" and "MISSING_API_KEY" in no_key[1]
        assert wrong_scope[0] == "403" and "INSUFFICIENT_SCOPE" in wrong_scope[1]
        assert admin_list[0] == "200"
        assert {key["scope"] for key in json.loads(admin_list[1])["data"]} == {"read", "admin"}
    finally:
        proc.send_signal(signal.SIGINT)  # Ctrl-C
        code = proc.wait(30)
    assert code == 0
    assert not store.exists()
    assert not store.parent.exists()
    log = err_path.read_text()
    assert "Traceback" not in log
    for value in keys:
        assert value not in log


@pytest.mark.parametrize("busy", ["--listen", "--admin-listen", "GATEWAY_SERVER__LISTEN"])
def test_a_busy_port_is_an_error_naming_the_flag(tmp_path: Path, busy: str) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy_address = f"127.0.0.1:{taken.getsockname()[1]}"
        addresses = {"--listen": f"127.0.0.1:{free_port()}"}
        addresses["--admin-listen"] = f"127.0.0.1:{free_port()}"
        env = clean_env()
        if busy.startswith("--"):
            addresses[busy] = busy_address
        else:
            del addresses["--listen"]
            env[busy] = busy_address
        args = [arg for flag, address in addresses.items() for arg in (flag, address)]
        done = subprocess.run(
            gateway_command("demo", *args),
            env=env,
            cwd=str(tmp_path),
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert done.returncode == 2, done
    flag = "--admin-listen" if busy == "--admin-listen" else "--listen"
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"Error: cannot listen on {busy_address}")
    assert "in use" in lines[0] and f"with {flag} HOST:PORT" in lines[0], lines
    assert "Gateway demo is running" not in done.stdout
    assert list(tmp_path.iterdir()) == []
