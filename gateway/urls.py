"""Storage URLs: the one table of schemes, and what a URL names (SPEC §12, §13).

`storage.url` opens a store (`sqlite://` embedded, or a Redis); `rate_limit.storage`
holds the counters (`memory://` in the process, or a Redis). Every other module asks
here instead of testing prefixes itself. This module imports nothing of the gateway, so
settings, the secret and the stores can all use it without an import cycle.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit, urlunsplit

Kind = Literal["sqlite", "redis", "memory"]

SQLITE = "sqlite://"
MEMORY = "memory://"
# One server, a Sentinel-managed master, a Cluster (store/redis_topology.py parses them).
REDIS_SCHEMES = ("redis://", "rediss://", "unix://", "redis+sentinel://", "redis+cluster://")

SCHEMES: dict[Kind, tuple[str, ...]] = {
    "sqlite": (SQLITE,),
    "redis": REDIS_SCHEMES,
    "memory": (MEMORY,),
}

STORE_URLS = (
    "sqlite:///path.db or redis://host:port/db (or "
    "redis+sentinel://host:port/service_name, redis+cluster://host:port,host:port)"
)
COUNTER_URLS = (
    "memory:// or redis://host:port/db (or "
    "redis+sentinel://host:port/service_name, redis+cluster://host:port,host:port)"
)


def kind_of(url: str) -> Kind | None:
    """Which backend a URL names, or None for an unknown scheme."""
    for kind, prefixes in SCHEMES.items():
        if url.startswith(prefixes):
            return kind
    return None


def is_sqlite(url: str) -> bool:
    return url.startswith(SQLITE)


def is_memory(url: str) -> bool:
    return url.startswith(MEMORY)


def sqlite_path(url: str) -> str:
    """The file path of a `sqlite:///path.db` URL (`sqlite:////abs/path.db` is absolute)."""
    path = url.removeprefix(SQLITE)
    if path.startswith("/"):
        path = path[1:]
    if not path or path == ":memory:":
        raise ValueError("sqlite:// URL needs a file path, e.g. sqlite:///gateway.db")
    return path


def sqlite_url(path: Path | str) -> str:
    return f"{SQLITE}/{path}"


def redact_url(url: str) -> str:
    """`url` without a password, for messages and logs."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)[1]
    user = parts.username or ""
    return urlunsplit(parts._replace(netloc=f"{user}:***@{netloc}"))


def absolute_store_url(url: str, folder: Path) -> str:
    """`url` with a relative SQLite path made absolute from `folder` (other URLs as they are);
    a config file's relative paths follow the file, not the working directory."""
    if not is_sqlite(url):
        return url
    try:
        path = Path(sqlite_path(url)).expanduser()
    except ValueError:
        return url  # the settings report it
    return sqlite_url(folder / path)


def missing_store(url: str) -> Path | None:
    """The absolute path of an embedded store that does not exist yet (None: it exists, or
    the store is a server). Commands that only read check it, so they never create one."""
    if not is_sqlite(url):
        return None
    path = Path(sqlite_path(url)).expanduser().absolute()
    return None if path.exists() else path


def store_location(url: str) -> str:
    """What to tell a user about the store a URL opens: the absolute file path (SQLite), or
    the URL without its password."""
    if is_sqlite(url):
        return str(Path(sqlite_path(url)).expanduser().absolute())
    return redact_url(url)


def counter_url(storage_url: str, configured: str | None) -> str:
    """Where the rate-limit counters live: `rate_limit.storage`, else in memory beside an
    embedded store, else in the store's Redis (the limit is then global)."""
    if configured:
        return configured
    return MEMORY if is_sqlite(storage_url) else storage_url


def spool_default(storage_url: str) -> Path:
    """`usage.spool_path`'s default: `<sqlite file>.usage-spool`, or one in the working
    directory for a Redis store."""
    if is_sqlite(storage_url):
        return Path(sqlite_path(storage_url) + ".usage-spool")
    return Path("gateway-usage.spool")
