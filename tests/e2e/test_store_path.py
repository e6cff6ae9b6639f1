"""Which store a command opens (SPEC §10): a config file's relative store path follows the
file, not the working directory; commands that only read never create a store; `serve`
logs the absolute path of the store it opened."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.e2e.conftest import (
    Proc,
    clean_env,
    free_port,
    gateway_command,
    port_open,
    wait_for,
)

pytestmark = pytest.mark.e2e


def gateway(cwd: Path, *args: str, secret: bool = True) -> subprocess.CompletedProcess[str]:
    env = clean_env()
    if not secret:
        env.pop("GATEWAY_SECRET")
    return subprocess.run(
        gateway_command(*args),
        env=env,
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.fixture
def layout(tmp_path: Path) -> tuple[Path, Path]:
    """conf/gw.toml naming the relative store sqlite:///gateway.db, and another folder."""
    conf, elsewhere = tmp_path / "conf", tmp_path / "elsewhere"
    conf.mkdir()
    elsewhere.mkdir()
    (conf / "gw.toml").write_text('[storage]\nurl = "sqlite:///gateway.db"\n', encoding="utf-8")
    return conf, elsewhere


def test_a_relative_store_path_follows_the_config_file(layout: tuple[Path, Path]) -> None:
    conf, elsewhere = layout
    made = gateway(
        elsewhere, "--config", "../conf/gw.toml", "keys", "create", "--name", "n",
        "--scope", "read", "--json",
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    assert (conf / "gateway.db").exists() and not (elsewhere / "gateway.db").exists()
    for cwd in (elsewhere, conf, conf.parent):
        listed = gateway(cwd, "--config", str(conf / "gw.toml"), "keys", "list")
        assert listed.returncode == 0 and " n " in listed.stdout, listed
    assert list(elsewhere.iterdir()) == []


@pytest.mark.parametrize(
    "command", [("keys", "list"), ("keys", "show", "key_0000000000000000"), ("audit",)]
)
@pytest.mark.parametrize("secret", [True, False])
def test_a_command_that_only_reads_never_creates_a_store(
    layout: tuple[Path, Path], command: tuple[str, ...], secret: bool
) -> None:
    conf, elsewhere = layout
    result = gateway(elsewhere, "--config", "../conf/gw.toml", *command, secret=secret)
    assert result.returncode == 1, result
    assert f"there is no key store at {conf / 'gateway.db'}" in result.stderr
    assert "Traceback" not in result.stderr
    assert list(conf.iterdir()) == [conf / "gw.toml"]  # no database, no secret file
    assert list(elsewhere.iterdir()) == []
    # Through the environment, a relative path follows the working directory.
    env_result = subprocess.run(
        gateway_command(*command),
        env=clean_env(GATEWAY_STORAGE__URL="sqlite:///here.db"),
        cwd=elsewhere,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert env_result.returncode == 1
    assert f"there is no key store at {elsewhere / 'here.db'}" in env_result.stderr
    assert list(elsewhere.iterdir()) == []


def test_serve_logs_the_absolute_path_of_its_store(layout: tuple[Path, Path]) -> None:
    conf, elsewhere = layout
    port, admin_port = free_port(), free_port()
    proc = Proc(
        gateway_command(
            "--config", "../conf/gw.toml", "serve", "--listen", f"127.0.0.1:{port}",
            "--admin-listen", f"127.0.0.1:{admin_port}", "--upstream", "http://127.0.0.1:9",
        ),
        elsewhere / "serve.log",
        clean_env(),
    )  # fmt: skip
    try:
        wait_for(lambda: port_open(admin_port) or not proc.alive(), 30, "the gateway")
        assert proc.alive(), proc.log()
        wait_for(lambda: "key store:" in proc.log(), 10, "the store line")
        assert f"key store: {conf / 'gateway.db'}" in proc.log()
    finally:
        proc.stop()
