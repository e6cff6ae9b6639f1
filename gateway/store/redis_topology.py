"""The three Redis URL forms (SPEC §13), as in the `limits` library, and their clients.

- `redis://[user:pass@]host:port/db` (also `rediss://`, `unix://`): one server.
- `redis+sentinel://[user:pass@]host:port[,host:port...]/service_name[?db=N]`
  (the service name may also be given as `?service_name=NAME`): the sentinels are asked
  for the master of `service_name`; after a failover, new connections go to the new one.
- `redis+cluster://[user:pass@]host:port[,host:port...]`: any nodes of a Redis Cluster.

The counters use `limits`' own storage for these forms (`async+` + the URL). The store
needs one slot: all its keys share the hash tag `{gateway}`, so it talks to the master
that owns that slot over a plain connection (`ClusterSlot`), which keeps MULTI/WATCH,
scripts and pub/sub exactly as on a single server, and follows the slot after a
failover or a resharding.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import parse_qs, unquote, urlsplit

from redis.asyncio import Redis
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.sentinel import Sentinel

from gateway.urls import REDIS_SCHEMES

SCHEMES = REDIS_SCHEMES


@dataclass(frozen=True)
class RedisTarget:
    kind: Literal["redis", "sentinel", "cluster"]
    url: str
    nodes: list[tuple[str, int]] = field(default_factory=list)
    service_name: str | None = None
    db: int = 0
    username: str | None = None
    password: str | None = None


def is_redis_url(url: str) -> bool:
    return url.startswith(SCHEMES)


def parse_redis_url(url: str) -> RedisTarget:
    """The parts of a Redis URL; ValueError naming what is wrong (never the password)."""
    if not url.startswith(("redis+sentinel://", "redis+cluster://")):
        if not url.startswith(SCHEMES):
            raise ValueError("must be redis://, redis+sentinel:// or redis+cluster://")
        return RedisTarget("redis", url)
    kind: Literal["sentinel", "cluster"] = "sentinel" if "sentinel" in url[:16] else "cluster"
    parts = urlsplit(url)
    hosts = parts.netloc.rpartition("@")[2]
    nodes = []
    for item in hosts.split(","):
        host, sep, port = item.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"{kind} node {item!r} must be host:port")
        nodes.append((host.strip("[]"), int(port)))
    query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
    service = parts.path.strip("/") or query.get("service_name")
    if kind == "sentinel" and not service:
        raise ValueError("redis+sentinel:// needs a service name: .../service_name")
    if kind == "cluster" and parts.path.strip("/"):
        raise ValueError("redis+cluster:// takes no database or path")
    db = query.get("db", "0")
    if not db.isdigit():
        raise ValueError("db must be a number")
    user = unquote(parts.username) if parts.username else None
    password = unquote(parts.password) if parts.password else None
    return RedisTarget(kind, url, nodes, service, int(db), user, password)


def limits_uri(url: str) -> str:
    """The `limits` async storage URI for a counter URL."""
    if url.startswith("unix://"):
        return "async+redis+" + url
    return "async+" + url


def connect(target: RedisTarget, **options: Any) -> Redis:
    """A client for a single server or a Sentinel-managed master (not for a Cluster)."""
    if target.kind == "redis":
        return Redis.from_url(target.url, **options)
    if target.kind != "sentinel":
        raise ValueError("a Cluster needs ClusterSlot")
    auth = {"username": target.username, "password": target.password}
    timeout = options.get("socket_timeout")
    sentinel = Sentinel(
        target.nodes,
        sentinel_kwargs={**auth, "socket_timeout": timeout, "socket_connect_timeout": timeout},
        **auth,
    )
    assert target.service_name is not None
    return sentinel.master_for(target.service_name, db=target.db, **auth, **options)


class ClusterSlot:
    """A plain client to the master owning the slot of `tag` in a Cluster.

    `client()` returns the current one; `stale()` asks for the next `client()` to look
    the owner up again (after any failure: a MOVED reply, a lost or dead master)."""

    def __init__(self, target: RedisTarget, tag: str, **options: Any) -> None:
        self.target = target
        self.tag = tag
        self.options = options
        self._cluster: RedisCluster | None = None
        self._client: Redis | None = None
        self._owner: tuple[str, int] | None = None
        self._stale = True
        self._lock = asyncio.Lock()
        self._old: list[Redis] = []

    def stale(self) -> None:
        self._stale = True

    async def client(self) -> Redis:
        if not self._stale and self._client is not None:
            return self._client
        async with self._lock:
            if self._stale or self._client is None:
                await self._locate()
        assert self._client is not None
        return self._client

    async def _locate(self) -> None:
        if self._cluster is None:
            timeout = self.options.get("socket_timeout")
            self._cluster = RedisCluster(
                startup_nodes=[ClusterNode(h, p) for h, p in self.target.nodes],
                username=self.target.username,
                password=self.target.password,
                socket_timeout=timeout,
                socket_connect_timeout=timeout,
            )
        await self._cluster.nodes_manager.initialize()
        node = self._cluster.get_node_from_key(self.tag)
        owner = (node.host, node.port)
        if owner != self._owner or self._client is None:
            if self._client is not None:
                self._old.append(self._client)  # in use by callers: closed at the end
            self._client = Redis(
                host=node.host,
                port=node.port,
                username=self.target.username,
                password=self.target.password,
                **self.options,
            )
            self._owner = owner
        self._stale = False

    async def info_version(self) -> tuple[int, ...]:
        info = await (await self.client()).info("server")
        return tuple(int(x) for x in str(info.get("redis_version", "0")).split(".")[:2])

    async def aclose(self) -> None:
        for client in [*self._old, self._client]:
            if client is not None:
                with contextlib.suppress(Exception):
                    await client.aclose()
        self._old, self._client = [], None
        if self._cluster is not None:
            # Only the nodes manager was used (`initialize` of the client never ran, so
            # its `aclose` would do nothing): close its connections directly.
            manager = self._cluster.nodes_manager
            with contextlib.suppress(Exception):
                await manager.aclose()
                await manager.aclose("startup_nodes")
            self._cluster = None
