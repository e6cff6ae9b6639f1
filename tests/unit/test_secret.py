"""The server secret (SPEC §1): GATEWAY_SECRET, or `<db>.secret` (0600) for SQLite; required
for Redis; a store opened with another secret is refused."""

from __future__ import annotations

import logging
import stat
from pathlib import Path

import pytest

from gateway.runtime import key_service, open_key_service
from gateway.secret import resolve_secret, secret_file_for
from gateway.settings import ConfigError, load_settings
from gateway.urls import redact_url


def sqlite_settings(tmp_path: Path):
    return load_settings(storage={"url": f"sqlite:///{tmp_path / 'data' / 'gw.db'}"})


def test_environment_secret_wins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GATEWAY_SECRET", "  " + "e" * 40 + "\n")
    assert resolve_secret(sqlite_settings(tmp_path)) == b"e" * 40
    assert not (tmp_path / "data" / "gw.db.secret").exists()


def test_short_environment_secret_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GATEWAY_SECRET", "short")
    with pytest.raises(ConfigError, match="GATEWAY_SECRET must be at least 32"):
        resolve_secret(sqlite_settings(tmp_path))


def test_sqlite_secret_file_created_0600_and_reused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.delenv("GATEWAY_SECRET")
    settings = sqlite_settings(tmp_path)
    path = secret_file_for(settings.storage.url)
    assert path == tmp_path / "data" / "gw.db.secret"
    with caplog.at_level(logging.INFO, logger="gateway"):
        first = resolve_secret(settings)
    assert path.exists() and stat.S_IMODE(path.stat().st_mode) == 0o600
    assert len(first) >= 32
    assert any(str(path) in r.getMessage() for r in caplog.records)
    assert first.decode() not in caplog.text
    assert resolve_secret(settings) == first  # reused, not replaced


def test_bad_secret_file_is_a_config_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GATEWAY_SECRET")
    settings = sqlite_settings(tmp_path)
    path = secret_file_for(settings.storage.url)
    path.parent.mkdir(parents=True)
    path.write_text("tiny")
    with pytest.raises(ConfigError, match=str(path)):
        resolve_secret(settings)
    path.unlink()
    path.mkdir()  # unreadable as a file
    with pytest.raises(ConfigError, match="cannot read the server secret"):
        resolve_secret(settings)


def test_redis_requires_gateway_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GATEWAY_SECRET")
    settings = load_settings(storage={"url": "redis://:hunter2pass@localhost:6379/0"})
    with pytest.raises(ConfigError) as info:
        resolve_secret(settings)
    assert "GATEWAY_SECRET" in str(info.value)
    assert "hunter2pass" not in str(info.value)


def test_redact_url() -> None:
    assert redact_url("redis://user:pw@host:1/0") == "redis://user:***@host:1/0"
    assert redact_url("redis://:pw@host:1/0") == "redis://:***@host:1/0"
    assert redact_url("redis://host:1/0") == "redis://host:1/0"


async def test_store_opened_with_another_secret_is_refused(
    store_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = load_settings(storage={"url": store_url})
    async with key_service(settings) as service:
        await service.check_secret()
    async with key_service(settings):
        pass  # the same secret opens it again
    monkeypatch.setenv("GATEWAY_SECRET", "a-different-secret-" + "z" * 40)
    with pytest.raises(ConfigError, match="different server secret") as info:
        await open_key_service(settings)
    assert "z" * 40 not in str(info.value)


async def test_redis_store_url_in_messages_has_no_password(redis_server: str) -> None:
    from gateway.store.redis import RedisStore

    store = RedisStore(redis_server.replace("redis://", "redis://:pw123456@") + "/0")
    assert "pw123456" not in store.url
