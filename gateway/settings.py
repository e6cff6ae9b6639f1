"""Settings: a TOML file plus `GATEWAY_<SECTION>__<KEY>` environment overrides (SPEC §12).

Everything is validated once, up front. Any problem — an unreadable file, bad TOML, an
unknown setting, a wrong type, a bad URL — becomes one `ConfigError` whose message names
the file and the field; the CLI prints it and exits with code 2.
"""

from __future__ import annotations

import ipaddress
import os
import re
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    SettingsError,
)

from gateway import urls
from gateway.keys.format import validate_prefix
from gateway.keys.model import AccessLevelName, check_rate_limit

# An HTTP header name (RFC 9110 token): an empty or spaced name could never match a request.
_HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
# Upper bounds keep every value representable where it is used (timedelta, SQLite
# integers, timers): e.g. rotation_days = 10**12 used to make every key view fail.
_MAX_DAYS = 36_500
_MAX_SECONDS = 86_400.0


class ConfigError(Exception):
    """A configuration problem; the message is ready to show to a user."""


def parse_host_port(value: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError("must be HOST:PORT, e.g. 127.0.0.1:8000")
    return host.strip("[]"), int(port)


def _limit_string(value: str) -> str:
    """The same rule as a key's rateLimit (e.g. no "0/minute", no zero-length window)."""
    check_rate_limit(value)
    return value


def _header_name(value: str) -> str:
    if not _HEADER_NAME.fullmatch(value):
        raise ValueError(f"{value!r} is not an HTTP header name")
    return value


class _Section(BaseModel):
    # No NaN or infinity: a timeout or interval of `inf` would mean "wait forever".
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class ServerSettings(_Section):
    listen: str = "127.0.0.1:8000"
    admin_listen: str = "127.0.0.1:8001"
    trusted_proxies: list[str] = Field(default_factory=list)
    max_body_bytes: int = Field(default=10 * 1024 * 1024, ge=0, le=2**62)
    # Edge limits (SPEC §7), checked while a request head is read, before any work on it.
    max_header_bytes: int = Field(default=16 * 1024, ge=1024, le=1024 * 1024)
    max_headers: int = Field(default=100, ge=1, le=10_000)
    header_timeout: float = Field(default=10.0, gt=0, le=_MAX_SECONDS)
    keepalive_timeout: float = Field(default=5.0, gt=0, le=_MAX_SECONDS)
    # PEM files: both set -> the proxy (and authz) listener speaks HTTPS (TLS 1.2+).
    tls_cert: str | None = None
    tls_key: str | None = None
    # The forward-auth listener of `gateway serve` (SPEC §15); off when unset.
    authz_listen: str | None = None
    # Processes serving the same listeners (SPEC §13); they share one counter table.
    workers: int = Field(default=1, ge=1, le=256)

    @field_validator("listen", "admin_listen", "authz_listen")
    @classmethod
    def _listen(cls, value: str | None) -> str | None:
        if value is not None:
            parse_host_port(value)
        return value

    @field_validator("tls_cert", "tls_key")
    @classmethod
    def _pem_file(cls, value: str | None) -> str | None:
        if value is not None and not Path(value).is_file():
            raise ValueError(f"{value!r} is not a readable file")
        return value

    @model_validator(mode="after")
    def _tls_pair(self) -> ServerSettings:
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("tls_cert and tls_key must be set together")
        return self

    @field_validator("trusted_proxies")
    @classmethod
    def _networks(cls, value: list[str]) -> list[str]:
        for item in value:
            try:
                ipaddress.ip_network(item, strict=False)
            except ValueError:
                raise ValueError(f"{item!r} is not an IP address or network") from None
        return value


class UpstreamSettings(_Section):
    url: str | None = None
    connect_timeout: float = Field(default=5.0, gt=0, le=_MAX_SECONDS)
    read_timeout: float = Field(default=30.0, gt=0, le=_MAX_SECONDS)
    max_connections: int = Field(default=100, ge=1, le=100_000)

    @field_validator("url")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        from urllib.parse import urlsplit

        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("must be an http:// or https:// URL with a host")
        try:
            parts.port  # noqa: B018 - raises on a bad port
        except ValueError:
            raise ValueError("has an invalid port") from None
        return value.rstrip("/")


class StorageSettings(_Section):
    url: str = "sqlite:///gateway.db"
    # Seconds any one backend call may take (SPEC §13): every answer within 1 s.
    timeout: float = Field(default=0.25, gt=0, le=60)

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        kind = urls.kind_of(value)
        if kind == "sqlite":
            urls.sqlite_path(value)
            return value
        if kind == "redis":
            from gateway.store.redis_topology import parse_redis_url

            parse_redis_url(value)
            return value
        raise ValueError("must be " + urls.STORE_URLS)


class KeysSettings(_Section):
    prefix: str = "gw"
    cache_ttl: float = Field(default=60.0, ge=0, le=_MAX_SECONDS)
    rotation_days: int = Field(default=90, ge=1, le=_MAX_DAYS)

    @field_validator("prefix")
    @classmethod
    def _prefix(cls, value: str) -> str:
        return validate_prefix(value)


class AuthSettings(_Section):
    headers: list[str] = Field(default_factory=lambda: ["Authorization", "X-API-Key"])
    site_header: str = "X-Site-Id"
    site_path_prefix: str = "/sites/"
    failed_attempts_limit: str = "30/minute"
    # true: a key limited to sites needs the request to name one of them (SPEC §3); false:
    # a request that names no site passes the site check.
    require_site: bool = False

    @field_validator("headers")
    @classmethod
    def _headers(cls, value: list[str]) -> list[str]:
        if not value:
            raise ValueError("must name at least one header")
        for name in value:
            _header_name(name)
        return value

    @field_validator("site_header")
    @classmethod
    def _site_header(cls, value: str) -> str:
        return _header_name(value)

    @field_validator("failed_attempts_limit")
    @classmethod
    def _limit(cls, value: str) -> str:
        return _limit_string(value)

    @field_validator("site_path_prefix")
    @classmethod
    def _prefix(cls, value: str) -> str:
        if not value.startswith("/"):
            raise ValueError("must start with '/'")
        return value if value.endswith("/") else value + "/"


class RateLimitSettings(_Section):
    default: str = "60/minute"
    strategy: Literal["sliding-window-counter", "moving-window", "fixed-window"] = (
        "sliding-window-counter"
    )
    # None: memory:// with SQLite storage, the storage Redis with Redis storage.
    storage: str | None = None
    on_backend_error: Literal["allow", "deny"] = "allow"
    legacy_headers: bool = True

    @field_validator("default")
    @classmethod
    def _limit(cls, value: str) -> str:
        return _limit_string(value)

    @field_validator("storage")
    @classmethod
    def _storage(cls, value: str | None) -> str | None:
        if value is None or urls.is_memory(value):
            return value
        if urls.kind_of(value) == "redis":
            from gateway.store.redis_topology import parse_redis_url

            parse_redis_url(value)
            return value
        raise ValueError("must be " + urls.COUNTER_URLS)


class UsageSettings(_Section):
    recent_per_key: int = Field(default=1000, ge=20, le=10_000_000)
    daily_retention_days: int = Field(default=90, ge=1, le=_MAX_DAYS)
    # At least 10 ms: a tinier interval would make the flusher spin.
    flush_interval: float = Field(default=0.5, ge=0.01, le=3600)
    # Where records that cannot be written (store down, at shutdown too) wait for the store
    # to come back. None: next to the SQLite file, or in the working directory.
    spool_path: str | None = None

    @field_validator("spool_path")
    @classmethod
    def _spool_path(cls, value: str | None) -> str | None:
        if value is not None and not value.strip():
            raise ValueError("must be a file path (or left unset)")
        return value


class AuthzSettings(_Section):
    """Forward auth (SPEC §15). `path_prefix`: what a proxy puts in front of the original
    path when it sends it as the authz request's own path (Envoy's `path_prefix`)."""

    path_prefix: str = ""

    @field_validator("path_prefix")
    @classmethod
    def _prefix(cls, value: str) -> str:
        if value and (not value.startswith("/") or "?" in value):
            raise ValueError("must be empty or a path starting with '/', e.g. /authz")
        return value.rstrip("/")


class RouteRule(_Section):
    prefix: str
    scope: AccessLevelName | None = None
    public: bool = False

    @field_validator("prefix")
    @classmethod
    def _prefix(cls, value: str) -> str:
        if not value.startswith("/"):
            raise ValueError("must start with '/'")
        return value


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="GATEWAY_",
        env_nested_delimiter="__",
        extra="forbid",
        nested_model_default_partial_update=True,
    )

    server: ServerSettings = Field(default_factory=ServerSettings)
    upstream: UpstreamSettings = Field(default_factory=UpstreamSettings)
    storage: StorageSettings = Field(default_factory=StorageSettings)
    keys: KeysSettings = Field(default_factory=KeysSettings)
    auth: AuthSettings = Field(default_factory=AuthSettings)
    rate_limit: RateLimitSettings = Field(default_factory=RateLimitSettings)
    usage: UsageSettings = Field(default_factory=UsageSettings)
    authz: AuthzSettings = Field(default_factory=AuthzSettings)
    routes: list[RouteRule] = Field(default_factory=list)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # The TOML file is passed in as init values; the environment overrides it.
        return (env_settings, init_settings)

    def usage_spool_path(self) -> Path:
        """`usage.spool_path`, or `<sqlite file>.usage-spool` / `./gateway-usage.spool`."""
        if self.usage.spool_path:
            return Path(self.usage.spool_path)
        return urls.spool_default(self.storage.url)

    def rate_limit_storage_url(self) -> str:
        return urls.counter_url(self.storage.url, self.rate_limit.storage)


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: configuration file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read configuration file ({exc})") from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML ({exc})") from None


# The file paths a config file may hold, as (section, setting): relative ones resolve
# against the file's folder, not the working directory (SPEC §10).
_FILE_PATHS = (("usage", "spool_path"), ("server", "tls_cert"), ("server", "tls_key"))


def _resolve_paths(data: dict[str, Any], folder: Path) -> None:
    """Make the relative paths of a config file's `data` absolute, from `folder`."""
    storage = data.get("storage")
    if isinstance(storage, dict) and isinstance(storage.get("url"), str):
        storage["url"] = urls.absolute_store_url(storage["url"], folder)
    for section, name in _FILE_PATHS:
        values = data.get(section)
        if isinstance(values, dict) and isinstance(values.get(name), str) and values[name]:
            values[name] = str(folder / Path(values[name]).expanduser())


def _did_you_mean(loc: tuple[Any, ...]) -> str:
    """The hint for a mistyped setting at `loc` ("; did you mean 'listen'?"), or ""."""
    import difflib

    model: Any = Settings
    for part in loc[:-1]:
        if isinstance(part, int):
            continue  # an entry of [[routes]]
        field = model.model_fields.get(part) if hasattr(model, "model_fields") else None
        if field is None:
            return ""
        annotation = field.annotation
        model = next((a for a in getattr(annotation, "__args__", ()) if a is not None), annotation)
    names = list(getattr(model, "model_fields", {}))
    close = difflib.get_close_matches(str(loc[-1]), names, n=1, cutoff=0.6)
    return f"; did you mean '{close[0]}'?" if close else ""


def _describe(exc: ValidationError, source: str) -> str:
    lines = []
    for problem in exc.errors():
        field = ".".join(str(part) for part in problem.get("loc", ())) or "(top level)"
        if problem.get("type") == "extra_forbidden":
            reason = "unknown setting" + _did_you_mean(tuple(problem.get("loc", ())))
        else:
            reason = str(problem.get("msg", "invalid value")).removeprefix("Value error, ")
        lines.append(f"{source}: {field}: {reason}")
    return "\n".join(lines)


def _describe_env_error(exc: SettingsError) -> str:
    match = re.search(r'field "([^"]+)"', str(exc))
    field = match.group(1) if match else "a setting"
    return (
        f"environment: {field}: a GATEWAY_{field.upper()}__* value is not valid JSON "
        f"(lists and tables are JSON, e.g. GATEWAY_AUTH__HEADERS='[\"X-API-Key\"]')"
    )


def _check_environment_names() -> None:
    """Refuse a GATEWAY_* variable that looks like a setting but names none, instead of
    silently ignoring it: GATEWAY_STORAGE_URL (one underscore) would otherwise leave the
    default store in use. Other GATEWAY_* names (GATEWAY_SECRET...) are not settings."""
    sections = Settings.model_fields
    for name in os.environ:
        if not name.upper().startswith("GATEWAY_"):
            continue
        rest = name[len("GATEWAY_") :].lower()
        if "__" in rest:
            section = rest.split("__", 1)[0]
            if section not in sections:
                known = ", ".join(sections)
                raise ConfigError(f"environment: {name}: unknown setting (sections are {known})")
            continue
        for section in sections:
            if rest.startswith(section + "_"):
                setting = rest[len(section) + 1 :].upper()
                raise ConfigError(
                    f"environment: {name}: unknown setting; did you mean "
                    f"GATEWAY_{section.upper()}__{setting} (two underscores)?"
                )


def load_settings(path: str | os.PathLike[str] | None = None, **overrides: Any) -> Settings:
    """Settings from `path` (or $GATEWAY_CONFIG, or the embedded defaults) and the environment.

    `overrides` are section dicts (e.g. `storage={"url": ...}`) that win over both.
    Raises ConfigError with a message naming the file and the field.
    """
    if path is None:
        path = os.environ.get("GATEWAY_CONFIG") or None
    data: dict[str, Any] = {}
    source = "environment"
    if path is not None:
        file_path = Path(path)
        data = _read_toml(file_path)
        _resolve_paths(data, file_path.resolve().parent)
        source = f"{file_path} (or its GATEWAY_* environment overrides)"
        # BaseSettings takes `_env_file`, `_cli_parse_args`... as init arguments: a file
        # must never reach those, so a top-level name with "_" is just an unknown setting.
        for name in data:
            if name.startswith("_"):
                raise ConfigError(f"{file_path}: {name}: unknown setting")
    _check_environment_names()
    try:
        settings = Settings(**data)
    except ValidationError as exc:
        raise ConfigError(_describe(exc, source)) from None
    except SettingsError as exc:  # e.g. GATEWAY_AUTH__HEADERS=X-Key: not JSON
        raise ConfigError(_describe_env_error(exc)) from None
    if not overrides:
        return settings
    # Overrides (command-line flags) win over both the file and the environment.
    merged = settings.model_dump()
    for section, values in overrides.items():
        if isinstance(values, dict) and isinstance(merged.get(section), dict):
            merged[section] = {**merged[section], **values}
        else:
            merged[section] = values
    try:
        return Settings.model_validate(merged)
    except ValidationError as exc:
        raise ConfigError(_describe(exc, "command line")) from None
