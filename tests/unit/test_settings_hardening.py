"""The settings of SPEC §7 edge limits and §13 backend behaviour: defaults, the
environment, bounds, and the commented example in config/ naming each of them."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from gateway.settings import ConfigError, load_settings

EXAMPLE = Path(__file__).resolve().parents[2] / "config" / "gateway.toml"


def test_defaults() -> None:
    settings = load_settings()
    assert settings.server.max_header_bytes == 16 * 1024
    assert settings.server.max_headers == 100
    assert settings.server.header_timeout == 10.0
    assert settings.server.keepalive_timeout == 5.0
    assert settings.storage.timeout == 0.25
    assert settings.usage.spool_path is None


def test_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GATEWAY_SERVER__MAX_HEADER_BYTES", "4096")
    monkeypatch.setenv("GATEWAY_SERVER__MAX_HEADERS", "20")
    monkeypatch.setenv("GATEWAY_SERVER__HEADER_TIMEOUT", "2.5")
    monkeypatch.setenv("GATEWAY_SERVER__KEEPALIVE_TIMEOUT", "1")
    monkeypatch.setenv("GATEWAY_STORAGE__TIMEOUT", "0.1")
    monkeypatch.setenv("GATEWAY_USAGE__SPOOL_PATH", "/tmp/x.spool")
    settings = load_settings()
    assert settings.server.max_header_bytes == 4096
    assert settings.server.max_headers == 20
    assert settings.server.header_timeout == 2.5
    assert settings.server.keepalive_timeout == 1.0
    assert settings.storage.timeout == 0.1
    assert str(settings.usage_spool_path()) == "/tmp/x.spool"


@pytest.mark.parametrize(
    ("section", "field", "value"),
    [
        ("server", "max_header_bytes", 10),
        ("server", "max_header_bytes", 2**40),
        ("server", "max_headers", 0),
        ("server", "header_timeout", 0),
        ("server", "keepalive_timeout", -1),
        ("storage", "timeout", 0),
        ("storage", "timeout", 3600),
        ("usage", "spool_path", " "),
    ],
)
def test_bounds_name_the_field(section: str, field: str, value: object) -> None:
    with pytest.raises(ConfigError, match=rf"{section}\.{field}"):
        load_settings(None, **{section: {field: value}})


def test_spool_path_defaults(tmp_path: Path) -> None:
    sqlite = load_settings(None, storage={"url": f"sqlite:///{tmp_path / 'g.db'}"})
    assert sqlite.usage_spool_path() == Path(f"{tmp_path / 'g.db'}.usage-spool")
    redis = load_settings(None, storage={"url": "redis://127.0.0.1:6379/0"})
    assert redis.usage_spool_path() == Path("gateway-usage.spool")


def test_example_config_names_every_new_setting() -> None:
    text = EXAMPLE.read_text()
    data = tomllib.loads(text)
    for name in ("max_header_bytes", "max_headers", "header_timeout", "keepalive_timeout"):
        assert name in data["server"]
    assert data["storage"]["timeout"] == 0.25
    assert "spool_path" in text
    load_settings(EXAMPLE)
