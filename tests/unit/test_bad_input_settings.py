"""Settings that used to be accepted and then failed later (a traceback, every key view
failing, a spinning flusher, a silently ignored variable): each is now a ConfigError naming
the file or the environment variable, up front."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.keys.model import check_rate_limit
from gateway.settings import ConfigError, Settings, load_settings


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "gateway.toml"
    path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.parametrize(
    ("text", "field"),
    [
        ("[keys]\nrotation_days = 999999999999\n", "keys.rotation_days"),
        ("[usage]\ndaily_retention_days = 999999999999\n", "usage.daily_retention_days"),
        ("[usage]\nrecent_per_key = 99999999999999999999\n", "usage.recent_per_key"),
        ("[usage]\nflush_interval = 1e-300\n", "usage.flush_interval"),
        ("[keys]\ncache_ttl = 1e300\n", "keys.cache_ttl"),
        ("[upstream]\nread_timeout = 1e300\n", "upstream.read_timeout"),
        ('[rate_limit]\ndefault = "0/minute"\n', "rate_limit.default"),
        ('[rate_limit]\ndefault = "1/0second"\n', "rate_limit.default"),
        ('[auth]\nfailed_attempts_limit = "0/minute"\n', "auth.failed_attempts_limit"),
        ('[auth]\nheaders = [""]\n', "auth.headers"),
        ('[auth]\nheaders = ["X API Key"]\n', "auth.headers"),
        ('[auth]\nsite_header = ""\n', "auth.site_header"),
        ('[auth]\nsite_header = "X-Site-Id:"\n', "auth.site_header"),
        ("[server]\nmax_header_bytes = 10\n", "server.max_header_bytes"),
        ("[server]\nmax_headers = 0\n", "server.max_headers"),
        ("[server]\nheader_timeout = 0\n", "server.header_timeout"),
        ("[server]\nkeepalive_timeout = 1e300\n", "server.keepalive_timeout"),
        ('[server]\ntls_cert = "/nonexistent.pem"\n', "server.tls_cert"),
    ],
)
def test_out_of_range_settings_are_refused(tmp_path: Path, text: str, field: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        load_settings(path)
    assert str(path) in str(caught.value) and field in str(caught.value)


def test_tls_cert_and_key_come_together(tmp_path: Path) -> None:
    pem = tmp_path / "cert.pem"
    pem.write_text("x", encoding="utf-8")
    path = write(tmp_path, f'[server]\ntls_cert = "{pem}"\n')
    with pytest.raises(ConfigError, match="tls_cert and tls_key must be set together"):
        load_settings(path)
    path = write(tmp_path, f'[server]\ntls_cert = "{pem}"\ntls_key = "{pem}"\n')
    assert load_settings(path).server.tls_key == str(pem)


def test_the_largest_allowed_values_load_and_render_a_key(tmp_path: Path) -> None:
    from gateway.keys.model import AccessLevel, ApiKey, Status, utcnow

    path = write(tmp_path, "[keys]\nrotation_days = 36500\n[usage]\nflush_interval = 3600\n")
    settings = load_settings(path)
    now = utcnow()
    key = ApiKey("key_x", "x", AccessLevel.READ, ("*",), Status.ACTIVE, None, "gw_…", now, now)
    assert key.rotation_due(settings.keys.rotation_days) is False


def test_an_environment_value_that_is_not_json_is_a_config_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # pydantic-settings raised SettingsError here, which the CLI printed as a traceback.
    monkeypatch.setenv("GATEWAY_AUTH__HEADERS", "X-Key")
    with pytest.raises(ConfigError) as caught:
        load_settings()
    assert "auth" in str(caught.value) and "JSON" in str(caught.value)


@pytest.mark.parametrize(
    ("name", "hint"),
    [
        ("GATEWAY_STORAGE_URL", "GATEWAY_STORAGE__URL"),
        ("GATEWAY_RATE_LIMIT_DEFAULT", "GATEWAY_RATE_LIMIT__DEFAULT"),
        ("GATEWAY_STORGE__URL", "unknown setting"),
    ],
)
def test_a_mistyped_environment_setting_is_refused_not_ignored(
    monkeypatch: pytest.MonkeyPatch, name: str, hint: str
) -> None:
    monkeypatch.setenv(name, "redis://127.0.0.1:6379/0")
    with pytest.raises(ConfigError) as caught:
        load_settings()
    assert name in str(caught.value) and hint in str(caught.value)


def test_other_gateway_variables_are_not_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("GATEWAY_SECRET", "GATEWAY_REQUIRE_SERVICES", "GATEWAY_UPDATE_SCREENSHOTS"):
        monkeypatch.setenv(name, "1" * 40)
    assert load_settings() == Settings()


@pytest.mark.parametrize(
    "text",
    [
        "1/0second",
        "10 per 0 day",
        "10/999999999999 years",
        "99999999999999999999999/second",
        "1000000001/second",
        "10/11 years",
    ],
)
def test_key_rate_limits_out_of_range_are_refused(text: str) -> None:
    with pytest.raises(ValueError):
        check_rate_limit(text)


@pytest.mark.parametrize(
    "text", ["100/minute", "10/second;5000/day", "1 per 10 seconds", "1/year", "10/10 years"]
)
def test_ordinary_rate_limits_pass(text: str) -> None:
    assert check_rate_limit(text) == text
