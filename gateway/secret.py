"""The server secret that keys are HMAC'd with (SPEC §1).

`GATEWAY_SECRET` wins. Without it, the embedded SQLite store keeps a generated secret in
`<db>.secret` (mode 0600) beside the database; Redis storage requires the variable, since
every replica must share it.
"""

from __future__ import annotations

import logging
import os
import secrets
from pathlib import Path

from gateway.settings import ConfigError, Settings
from gateway.urls import is_sqlite, redact_url, sqlite_path

log = logging.getLogger("gateway")

ENV_VAR = "GATEWAY_SECRET"
MIN_LENGTH = 32


def _checked(value: str, source: str) -> bytes:
    value = value.strip()
    if len(value) < MIN_LENGTH:
        raise ConfigError(
            f"{source}: {ENV_VAR} must be at least {MIN_LENGTH} characters of random data "
            '(e.g. python -c "import secrets; print(secrets.token_urlsafe(48))")'
        )
    return value.encode("utf-8")


def secret_file_for(storage_url: str) -> Path:
    return Path(sqlite_path(storage_url) + ".secret")


def secret_from_environment() -> bytes | None:
    """GATEWAY_SECRET, checked (ConfigError if too short), or None when it is not set."""
    from_env = os.environ.get(ENV_VAR)
    return None if from_env is None else _checked(from_env, "environment")


def resolve_secret(settings: Settings) -> bytes:
    """The server secret for `settings`' store; raises ConfigError (exit 2) if there is none."""
    from_env = secret_from_environment()
    if from_env is not None:
        return from_env
    url = settings.storage.url
    if not is_sqlite(url):
        raise ConfigError(
            f"{ENV_VAR} is required with storage.url = {redact_url(url)!r}: every replica "
            f"must share it. Set {ENV_VAR} to at least {MIN_LENGTH} random characters."
        )
    path = secret_file_for(url)
    try:
        return _checked(path.read_text(encoding="utf-8"), str(path))
    except FileNotFoundError:
        pass
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the server secret ({exc})") from None
    path.parent.mkdir(parents=True, exist_ok=True)
    value = secrets.token_urlsafe(48)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        # Another process created it first: use theirs.
        return _checked(path.read_text(encoding="utf-8"), str(path))
    except OSError as exc:
        raise ConfigError(f"{path}: cannot create the server secret ({exc})") from None
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(value + "\n")
    log.info("created a new server secret in %s (mode 0600); back it up with the database", path)
    return value.encode("utf-8")
