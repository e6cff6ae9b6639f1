"""Rate-limit counters in Redis, shared by every replica: one script call per check.

The script (`multi_limit.lua`, read once) runs through redis-py's `Script`: EVALSHA,
and on NOSCRIPT (a restarted or new server) SCRIPT LOAD and again — the one way scripts
are run. The client is redis-py's own: RedisLink's on one server, `connect()`'s for
Sentinel and Cluster URLs (short timeouts, no retries: a failed call goes straight to
`rate_limit.on_backend_error` instead of holding the request).
"""

from __future__ import annotations

import asyncio
from importlib import resources
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.backoff import NoBackoff
from redis.retry import Retry

from gateway.pipeline.ratelimit.policy import Outcome, Policy
from gateway.store.redis_link import RedisLink
from gateway.store.redis_topology import connect as connect_target
from gateway.store.redis_topology import parse_redis_url

# Sentinel and Cluster counters: how long a Redis call may take at least. (On one server,
# RedisLink decides: see RedisCounters.)
REDIS_TIMEOUT = 0.5
MULTI_LIMIT_LUA = resources.files(__package__).joinpath("multi_limit.lua").read_text()


def connect(url: str) -> Redis | RedisCluster:
    """A redis-py asyncio client for a counter URL: redis://, rediss://, unix://,
    redis+sentinel:// (the service's master) or redis+cluster:// (any nodes)."""
    target = parse_redis_url(url)
    options: dict[str, Any] = {
        "socket_timeout": REDIS_TIMEOUT,
        "socket_connect_timeout": REDIS_TIMEOUT,
        "retry": Retry(NoBackoff(), 0),
        "health_check_interval": 0,
    }
    if target.kind != "cluster":
        return connect_target(target, **options)
    return RedisCluster(
        startup_nodes=[ClusterNode(host, port) for host, port in target.nodes],
        username=target.username,
        password=target.password,
        max_connections=1000,
        **options,
    )


_SHORT = {"sliding-window-counter": "swc", "moving-window": "mw", "fixed-window": "fw"}


class RedisCounters:
    """Counters in Redis, shared by every replica; one script call per check.

    On one server (redis://), the connection rules are RedisLink's: a blocking pool (load
    waits, never fails), a deadline on Redis's own silence (`storage.timeout`), one retry
    of a dead pooled connection, fail fast while Redis is known to be down. Sentinel and
    Cluster URLs use `connect()`'s client with a plain timeout."""

    def __init__(
        self,
        url: str,
        strategy: str,
        *,
        key_prefix: str = "gw:rl:",
        timeout: float = 0.25,
        max_connections: int = 100,
    ) -> None:
        self.strategy = strategy
        self.timeout = timeout
        self.link: RedisLink | None = None
        self.client: Redis | RedisCluster
        if parse_redis_url(url).kind == "redis":
            self.link = RedisLink(
                url, timeout=timeout, max_connections=max_connections, name="rate limit"
            )
            self.client = self.link.client
        else:
            self.client = connect(url)
        self.script = self.client.register_script(MULTI_LIMIT_LUA)
        self.key_prefix = key_prefix
        self._suffix = ":" + _SHORT[strategy]
        self._args: dict[str, list[Any]] = {}
        # redis-py's Cluster client breaks connections when many first calls discover
        # the cluster at once: the first call does it alone.
        self._discover: asyncio.Lock | None = None
        if isinstance(self.client, RedisCluster):
            self._discover = asyncio.Lock()

    async def _discover_cluster(self) -> None:
        assert self._discover is not None
        async with self._discover:
            if self._discover is not None and isinstance(self.client, RedisCluster):
                await self.client.initialize()
                self._discover = None

    async def acquire(self, subject: str, policy: Policy, now_ms: int | None) -> Outcome:
        # `{subject}` is a hash tag: all of a key's counters live in one cluster slot.
        base = f"{self.key_prefix}{{{subject}}}:"
        keys = [base + limit.ident + self._suffix for limit in policy.limits]
        args = self._args.get(policy.text)
        if args is None:
            args = [self.strategy, ""]
            for limit in policy.limits:
                args += (limit.amount, limit.period_ms)
            self._args[policy.text] = args
        if now_ms is not None:
            args = [self.strategy, now_ms, *args[2:]]
        if self.link is not None:
            async with self.link.guard():
                reply = await self.script(keys=keys, args=args)
        else:
            async with asyncio.timeout(max(self.timeout * 2, REDIS_TIMEOUT * 2)):
                if self._discover is not None:
                    await self._discover_cluster()
                reply = await self.script(keys=keys, args=args)
        values = [int(v) for v in reply]
        states = tuple(
            (values[i] == 1, values[i + 1], values[i + 2]) for i in range(2, len(values), 3)
        )
        return Outcome(values[0] == 1, values[1], states)

    async def close(self) -> None:
        if self.link is not None:
            await self.link.close()
        else:
            await self.client.aclose()
