"""`server.workers` (SPEC §12, §13): bounds, environment, `gateway serve --workers N`."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from gateway.cli import cli
from gateway.settings import ConfigError, load_settings


def test_default_bounds_and_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    assert load_settings().server.workers == 1
    for bad in (0, 257, "two"):
        with pytest.raises(ConfigError, match="workers"):
            load_settings(server={"workers": bad})
    monkeypatch.setenv("GATEWAY_SERVER__WORKERS", "3")
    assert load_settings().server.workers == 3


def test_cli_refuses_a_bad_worker_count() -> None:
    result = CliRunner().invoke(cli, ["serve", "--workers", "0", "--upstream", "http://h"])
    assert result.exit_code == 2
    assert "--workers" in result.output
