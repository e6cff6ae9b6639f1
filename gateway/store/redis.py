"""The shared store for many replicas: one Redis database, with pub/sub invalidation.

Layout (every name starts with the namespace `gateway`):

    gateway:seq                     counter: the sequence numbers behind every cursor
    gateway:meta                    hash: secret fingerprint
    gateway:key:<id>                hash: seq, status, record (JSON, without lastUsedAt)
    gateway:key:<id>:digests        set: the digests of the key's values
    gateway:key:<id>:usage          hash: total, last_used_at
    gateway:key:<id>:recent         zset: score seq, member "<seq>:<usage JSON>"
    gateway:key:<id>:daily|:errors  hash: YYYY-MM-DD -> requests | errors
    gateway:keys:all|active|revoked zset: score seq (of the key's creation), member id
    gateway:digest:<hmac>           hash: key_id, expires_at (set during a rotation grace)
    gateway:audit, gateway:audit:<id>  zset: score seq, member "<seq>:<event JSON>"

Every write is one Lua script (`APPLY`) run inside MULTI/EXEC after WATCHing the key's
record: the WATCH makes the rule check in `mutate` and the write one atomic step, and the
script lets the sequence numbers and the digest set be read at execution time, so audit
order is commit order and a rotate swaps old and new digest with no gap and no overlap.
Readers that need several keys at once (digest lookup, key list) are scripts too: one
round trip, one consistent snapshot. Scripts name keys from the namespace, so every key
the store has must live on one server: on a Redis Cluster the namespace is the hash tag
`{gateway}` (one slot; `ClusterSlot` talks to its master), on Sentinel it is unchanged.

Changes are numbered by `gateway:changes` and published on `gateway:<db>:changes` as
"<origin> <key id> <number>" (on a Cluster with Redis 7+ `SPUBLISH` on
`{gateway}:0:changes`, sharded pub/sub: only the slot's shard carries it, rather than
every node of the cluster). A background task (started by the first `add_listener`)
keeps a subscription, reconnecting with backoff; each time a subscription is established
it reports ALL_KEYS, since anything may have changed while it was not listening.
A store with listeners (a running gateway) records the last change it has applied in
`gateway:gateway:<id>` (hash: label, applied; expires after LIVE_SECONDS unless refreshed),
listed in the set `gateway:gateways`, so key commands can wait for it (store.presence).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import secrets
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.client import Pipeline
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import NoScriptError, RedisError, WatchError

from gateway.keys.model import ApiKey, Status
from gateway.store.base import (
    ALL_KEYS,
    AuditEvent,
    ChangeFeed,
    DailyUsage,
    DigestMatch,
    KeyNotFound,
    KeyWrite,
    Mutation,
    Page,
    SecretMismatch,
    StoreError,
    StoreOptions,
    UsageRecord,
    UsageSummary,
    page_of,
    parse_cursor,
)
from gateway.store.presence import (
    HEARTBEAT_SECONDS,
    LIVE_SECONDS,
    GatewayPresence,
    process_label,
)
from gateway.store.redis_link import BackendDown, RedisLink
from gateway.store.redis_topology import ClusterSlot, connect, parse_redis_url
from gateway.urls import redact_url

log = logging.getLogger("gateway.store")

NAMESPACE = "gateway"
MAX_ATTEMPTS = 100  # optimistic-lock retries of one update before giving up
BACKOFF_MIN, BACKOFF_MAX = 0.05, 2.0  # pub/sub reconnect delays, seconds
PING_EVERY = 5.0  # seconds of silence on the subscription before checking it is alive

# ARGV: ns, id, op (insert|update|delete), status, record, new_digest, retire (0|1),
# grace_until (ISO or ""), audit JSON (or ""), channel, message, PUBLISH|SPUBLISH.
APPLY = """
local ns, id, op = ARGV[1], ARGV[2], ARGV[3]
local status, record, new_digest = ARGV[4], ARGV[5], ARGV[6]
local retire, grace, audit = ARGV[7], ARGV[8], ARGV[9]
local kk = ns .. ':key:' .. id
local dset = kk .. ':digests'
local function drop_digests()
  for _, d in ipairs(redis.call('SMEMBERS', dset)) do
    redis.call('DEL', ns .. ':digest:' .. d)
  end
  redis.call('DEL', dset)
end
if op == 'insert' and redis.call('EXISTS', kk) == 1 then
  return redis.error_reply('key id already exists')
end
if op == 'delete' then
  drop_digests()
  redis.call('DEL', kk, kk .. ':usage', kk .. ':recent', kk .. ':daily', kk .. ':errors')
  redis.call('ZREM', ns .. ':keys:all', id)
  redis.call('ZREM', ns .. ':keys:active', id)
  redis.call('ZREM', ns .. ':keys:revoked', id)
else
  local seq = redis.call('HGET', kk, 'seq')
  if not seq then seq = redis.call('INCR', ns .. ':seq') end
  local old = redis.call('HGET', kk, 'status')
  if old and old ~= status then redis.call('ZREM', ns .. ':keys:' .. old, id) end
  redis.call('HSET', kk, 'seq', seq, 'status', status, 'record', record)
  redis.call('ZADD', ns .. ':keys:all', seq, id)
  redis.call('ZADD', ns .. ':keys:' .. status, seq, id)
  if retire == '1' then
    if grace == '' then
      drop_digests()
    else
      -- Keep the earlier end when a value is already in a grace period.
      for _, d in ipairs(redis.call('SMEMBERS', dset)) do
        local dk = ns .. ':digest:' .. d
        local current = redis.call('HGET', dk, 'expires_at')
        if not current or grace < current then redis.call('HSET', dk, 'expires_at', grace) end
      end
    end
  end
  if new_digest ~= '' then
    redis.call('HSET', ns .. ':digest:' .. new_digest, 'key_id', id)
    redis.call('SADD', dset, new_digest)
  end
end
if audit ~= '' then
  local seq = redis.call('INCR', ns .. ':seq')
  local member = seq .. ':' .. audit
  redis.call('ZADD', ns .. ':audit', seq, member)
  redis.call('ZADD', ns .. ':audit:' .. id, seq, member)
end
local change = redis.call('INCR', ns .. ':changes')
redis.call(ARGV[12], ARGV[10], ARGV[11] .. ' ' .. change)
return change
"""

# ARGV: ns, digest -> {record, last_used_at or "", expires_at or ""} or nil
LOOKUP = """
local d = redis.call('HMGET', ARGV[1] .. ':digest:' .. ARGV[2], 'key_id', 'expires_at')
if not d[1] then return false end
local kk = ARGV[1] .. ':key:' .. d[1]
local record = redis.call('HGET', kk, 'record')
if not record then return false end
local used = redis.call('HGET', kk .. ':usage', 'last_used_at')
return {record, used or '', d[2] or ''}
"""

# ARGV: ns, index (all|active|revoked), max score ("+inf" or "(<seq>"), count
# -> flat {seq, record, last_used_at or "", ...}, newest first
LIST = """
local ns = ARGV[1]
local ids = redis.call('ZREVRANGEBYSCORE', ns .. ':keys:' .. ARGV[2], ARGV[3], '-inf',
  'WITHSCORES', 'LIMIT', 0, tonumber(ARGV[4]))
local out = {}
for i = 1, #ids, 2 do
  local kk = ns .. ':key:' .. ids[i]
  local record = redis.call('HGET', kk, 'record')
  if record then
    out[#out + 1] = ids[i + 1]
    out[#out + 1] = record
    out[#out + 1] = redis.call('HGET', kk .. ':usage', 'last_used_at') or ''
  end
end
return out
"""

# ARGV: ns, id, keep, cutoff date, n, then n times: usage JSON, date, error (0|1), at (ISO)
RECORD_USAGE = """
local ns, id = ARGV[1], ARGV[2]
local kk = ns .. ':key:' .. id
if redis.call('EXISTS', kk) == 0 then return 0 end  -- deleted: its history went with it
local keep, cutoff, n = tonumber(ARGV[3]), ARGV[4], tonumber(ARGV[5])
local latest = redis.call('HGET', kk .. ':usage', 'last_used_at')
for i = 0, n - 1 do
  local base = 6 + i * 4
  local at = ARGV[base + 3]
  local seq = redis.call('INCR', ns .. ':seq')
  redis.call('ZADD', kk .. ':recent', seq, seq .. ':' .. ARGV[base])
  redis.call('HINCRBY', kk .. ':daily', ARGV[base + 1], 1)
  redis.call('HINCRBY', kk .. ':errors', ARGV[base + 1], tonumber(ARGV[base + 2]))
  if not latest or latest < at then latest = at end
end
redis.call('HINCRBY', kk .. ':usage', 'total', n)
redis.call('HSET', kk .. ':usage', 'last_used_at', latest)
redis.call('ZREMRANGEBYRANK', kk .. ':recent', 0, -(keep + 1))
for _, day in ipairs(redis.call('HKEYS', kk .. ':daily')) do
  if day < cutoff then
    redis.call('HDEL', kk .. ':daily', day)
    redis.call('HDEL', kk .. ':errors', day)
  end
end
return n
"""

_SHA = {
    name: hashlib.sha1(text.encode()).hexdigest()
    for name, text in (("lookup", LOOKUP), ("list", LIST), ("usage", RECORD_USAGE))
}
_TEXT = {"lookup": LOOKUP, "list": LIST, "usage": RECORD_USAGE}


def _dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))


def _iso(moment: datetime) -> str:
    """The one text form of a stored moment; compared as strings, like the SQLite store."""
    return moment.astimezone(UTC).isoformat()


def _split(member: str) -> tuple[int, dict[str, Any]]:
    """A "<seq>:<JSON>" sorted-set member."""
    seq, _, data = member.partition(":")
    return int(seq), json.loads(data)


class RedisStore:
    def __init__(self, url: str, options: StoreOptions | None = None) -> None:
        # `url` is shown in messages, so it never carries the password.
        self.url = redact_url(url)
        self.options = options or StoreOptions()
        try:
            self._target = parse_redis_url(url)
        except ValueError as exc:
            raise StoreError(f"redis: bad URL {self.url} ({exc})") from None
        cluster = self._target.kind == "cluster"
        # One hash tag for everything on a Cluster: every script stays on one slot.
        self.ns = "{" + NAMESPACE + "}" if cluster else NAMESPACE
        self._client: Redis | None = None
        self._slot: ClusterSlot | None = None
        self._link: RedisLink | None = None
        self._channel = ""
        self._publish = "PUBLISH"
        self._origin = secrets.token_hex(8)
        self._feed = ChangeFeed()
        self._listener: asyncio.Task[None] | None = None
        self._live = True  # whether the change feed was subscribed before its last failure
        self.conflicts = 0  # updates retried because the key changed meanwhile (WATCH)
        self._closing = False
        self.last_write = 0  # the change number of the last write through this object
        self._applied = -1  # the last change this store's listeners have applied (-1: none yet)
        self._applied_event = asyncio.Event()
        self._reporter: asyncio.Task[None] | None = None

    # --- plumbing -------------------------------------------------------------------

    async def open(self) -> None:
        if self._client is not None:
            return
        timeout = self.options.timeout
        options: dict[str, Any] = {
            "decode_responses": True,
            "socket_timeout": timeout,
            "socket_connect_timeout": timeout,
            # No silent retries: a retried write could apply twice, and the caller's
            # timeout must hold.
            "retry": Retry(NoBackoff(), 0),
        }
        if self._target.kind == "cluster":
            await self._open_cluster(options)
            return
        try:
            if self._target.kind == "redis":
                # One server: the blocking pool, the deadline on Redis's silence and the one
                # retry of a dead pooled connection of RedisLink (SPEC §13).
                from gateway.store.redis_link import RedisLink

                link = RedisLink(
                    self._target.url,
                    timeout=timeout,
                    max_connections=self.options.max_connections,
                    decode_responses=True,
                    name="store",
                )
                self._link = link
                client = link.client
            else:
                client = connect(self._target, **options)
        except ValueError as exc:
            raise StoreError(f"redis: bad URL {self.url} ({exc})") from None
        db = client.connection_pool.connection_kwargs.get("db", self._target.db)
        # Pub/sub channels are not per database: the channel names the database.
        self._channel = f"{self.ns}:{db}:changes"
        self._client = client

    async def _open_cluster(self, options: dict[str, Any]) -> None:
        slot = ClusterSlot(self._target, self.ns, **options)
        try:
            async with asyncio.timeout(max(self.options.timeout * 4, 1.0)):
                version = await slot.info_version()
        except (RedisError, OSError) as exc:
            await slot.aclose()
            raise StoreError(f"redis cluster {self.url}: {exc or type(exc).__name__}") from None
        self._channel = f"{self.ns}:0:changes"  # in the store's slot
        # Sharded pub/sub (Redis 7+): the message stays on the slot's shard.
        self._publish = "SPUBLISH" if version >= (7, 0) else "PUBLISH"
        self._slot = slot
        self._client = await slot.client()

    async def close(self) -> None:
        self._closing = True  # the feed's loops stop even if every cancel were swallowed
        if self._listener is not None:
            # Cancel until it is done: on Python 3.11 a cancel that races redis-py's own
            # read timeout inside pubsub.get_message() can be swallowed, and a single
            # cancel then leaves close() waiting forever.
            listener = self._listener
            while not listener.done():
                listener.cancel()
                await asyncio.wait([listener], timeout=0.1)
            with contextlib.suppress(asyncio.CancelledError, Exception):
                listener.result()
            self._listener = None
        if self._reporter is not None:
            reporter, self._reporter = self._reporter, None
            reporter.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await reporter
            # Stopped: key commands need not wait for this gateway any more.
            with contextlib.suppress(StoreError):
                async with self._guard("unregister") as client:
                    await client.delete(self._k("gateway", self._origin))
                    await client.srem(self._k("gateways"), self._origin)
        if self._slot is not None:
            slot, self._slot, self._client = self._slot, None, None
            await slot.aclose()
        if self._link is not None:
            link, self._link, self._client = self._link, None, None
            await link.close()
        if self._client is not None:
            client, self._client = self._client, None
            with contextlib.suppress(RedisError, OSError):
                await client.aclose()

    async def _current(self) -> Redis:
        """The client to use now (on a Cluster: the store slot's master, looked up again
        after a failure)."""
        if self._slot is not None:
            self._client = await self._slot.client()
        if self._client is None:
            raise StoreError("the store is not open")
        return self._client

    @contextlib.asynccontextmanager
    async def _guard(self, what: str) -> AsyncIterator[Redis]:
        """The client, for one call bounded by `options.timeout`; failures → StoreError."""
        if self._client is None:
            raise StoreError("the store is not open")
        if self._link is not None:  # one server: RedisLink's rules (deadline, down, retry)
            try:
                async with self._link.guard() as client:
                    yield client
            except (RedisError, OSError, BackendDown) as exc:
                detail = str(exc) or type(exc).__name__
                raise StoreError(f"redis {what}: {detail}") from exc
            return
        try:
            async with asyncio.timeout(self.options.timeout):
                yield await self._current()
        except (RedisError, OSError) as exc:  # OSError includes TimeoutError
            if self._slot is not None:
                self._slot.stale()  # MOVED, a failover: find the slot's master again
            detail = str(exc) or type(exc).__name__
            raise StoreError(f"redis {what}: {detail}") from exc

    async def _script(self, client: Redis, name: str, *args: Any) -> Any:
        try:
            return await client.evalsha(_SHA[name], 0, *args)
        except NoScriptError:  # Redis restarted or flushed its script cache
            await client.script_load(_TEXT[name])
            return await client.evalsha(_SHA[name], 0, *args)

    def _k(self, *parts: str) -> str:
        return ":".join((self.ns, *parts))

    async def ping(self) -> None:
        async with self._guard("ping") as client:
            await client.ping()

    async def check_secret(self, fingerprint: str) -> None:
        async with self._guard("check_secret") as client:
            meta = self._k("meta")
            await client.hsetnx(meta, "secret", fingerprint)
            stored = await client.hget(meta, "secret")
        if stored != fingerprint:
            raise SecretMismatch(self.url)

    # --- keys -----------------------------------------------------------------------

    @staticmethod
    def _record(key: ApiKey) -> str:
        data = key.to_storage()
        data.pop("last_used_at")
        return _dumps(data)

    @staticmethod
    def _key(record: str, last_used_at: str | None) -> ApiKey:
        data = json.loads(record)
        data["last_used_at"] = last_used_at or None
        return ApiKey.from_storage(data)

    def _apply_args(self, op: str, key_id: str, write: KeyWrite) -> list[str]:
        key = write.key
        return [
            self.ns,
            key_id,
            op,
            key.status.value if key else "",
            self._record(key) if key else "",
            write.new_digest or "",
            "1" if write.retire_digests else "0",
            _iso(write.grace_until) if write.grace_until else "",
            _dumps(write.audit.to_storage()) if write.audit else "",
            self._channel,
            f"{self._origin} {key_id}",
            self._publish,
        ]

    async def insert_key(self, key: ApiKey, digest: str, audit: AuditEvent) -> None:
        write = KeyWrite(key, audit, new_digest=digest)
        async with self._guard("insert_key") as client:
            change = await client.eval(APPLY, 0, *self._apply_args("insert", key.id, write))
        self.last_write = int(change)
        self._feed.notify(key.id)

    async def update_key(self, key_id: str, mutate: Mutation) -> KeyWrite:
        record_key = self._k("key", key_id)
        async with self._guard("update_key") as client, client.pipeline() as pipe:
            for _ in range(MAX_ATTEMPTS):
                try:
                    write = await self._update_once(pipe, record_key, key_id, mutate)
                except WatchError:
                    self.conflicts += 1  # someone changed the key meanwhile: read it again
                    continue
                break
            else:
                raise StoreError(f"redis update_key: {key_id} kept changing; gave up")
        self._feed.notify(key_id)
        return write

    async def _update_once(
        self, pipe: Pipeline, record_key: str, key_id: str, mutate: Mutation
    ) -> KeyWrite:
        await pipe.watch(record_key)
        record = await pipe.hget(record_key, "record")
        if record is None:
            await pipe.unwatch()
            raise KeyNotFound(key_id)
        last_used = await pipe.hget(record_key + ":usage", "last_used_at")
        write = mutate(self._key(record, last_used))  # may raise: nothing is written
        op = "update" if write.key is not None else "delete"
        pipe.multi()
        pipe.eval(APPLY, 0, *self._apply_args(op, key_id, write))
        (change,) = await pipe.execute()
        self.last_write = int(change)
        return write

    async def get_key(self, key_id: str) -> ApiKey | None:
        record_key = self._k("key", key_id)
        async with self._guard("get_key") as client, client.pipeline(transaction=True) as pipe:
            pipe.hget(record_key, "record")
            pipe.hget(record_key + ":usage", "last_used_at")
            record, last_used = await pipe.execute()
        return self._key(record, last_used) if record else None

    async def list_keys(
        self, status: Status | None, limit: int, cursor: str | None
    ) -> Page[ApiKey]:
        index = status.value if status is not None else "all"
        top = f"({parse_cursor(cursor)}" if cursor is not None else "+inf"
        async with self._guard("list_keys") as client:
            flat = await self._script(client, "list", self.ns, index, top, limit + 1)
        rows = [(int(flat[i]), self._key(flat[i + 1], flat[i + 2])) for i in range(0, len(flat), 3)]
        return page_of(rows, limit)

    async def lookup_digest(self, digest: str) -> DigestMatch | None:
        async with self._guard("lookup_digest") as client:
            found = await self._script(client, "lookup", self.ns, digest)
        if not found:
            return None
        record, last_used, expires = found
        return DigestMatch(
            self._key(record, last_used), datetime.fromisoformat(expires) if expires else None
        )

    # --- usage ----------------------------------------------------------------------

    async def record_usage(self, records: list[UsageRecord]) -> None:
        """Apply a batch in one round trip: one atomic script per key, pipelined."""
        if not records:
            return
        by_key: dict[str, list[UsageRecord]] = {}
        for record in records:
            by_key.setdefault(record.key_id, []).append(record)
        cutoff = (datetime.now(UTC) - timedelta(days=self.options.daily_retention_days)).date()
        calls = []
        for key_id, batch in by_key.items():
            args: list[Any] = [
                self.ns,
                key_id,
                self.options.recent_per_key,
                cutoff.isoformat(),
                len(batch),
            ]
            for record in batch:
                at = record.at.astimezone(UTC)
                error = 1 if record.status >= 400 else 0
                args += [_dumps(record.to_storage()), at.date().isoformat(), error, _iso(at)]
            calls.append(args)
        async with self._guard("record_usage") as client:
            pending = calls
            for _ in range(2):
                async with client.pipeline(transaction=False) as pipe:
                    for args in pending:
                        pipe.evalsha(_SHA["usage"], 0, *args)
                    results = await pipe.execute(raise_on_error=False)
                missing = [a for a, r in zip(pending, results, strict=True) if _no_script(r)]
                failed = [r for r in results if isinstance(r, Exception) and not _no_script(r)]
                if failed:
                    raise failed[0]
                if not missing:
                    return
                await client.script_load(RECORD_USAGE)
                pending = missing
            raise StoreError("redis record_usage: the usage script could not be loaded")

    async def usage_summary(self, key_id: str, days: int, recent: int) -> UsageSummary:
        base = self._k("key", key_id)
        first = (datetime.now(UTC).date() - timedelta(days=days - 1)).isoformat()
        async with self._guard("usage_summary") as client, client.pipeline() as pipe:
            pipe.hget(base + ":usage", "total")
            pipe.hgetall(base + ":daily")
            pipe.hgetall(base + ":errors")
            pipe.zrevrange(base + ":recent", 0, max(recent, 1) - 1)
            total, daily, errors, members = await pipe.execute()
        members = members[: max(recent, 0)]
        return UsageSummary(
            total_requests=int(total or 0),
            daily=[
                DailyUsage(date, int(count), int(errors.get(date, 0)))
                for date, count in sorted(daily.items())
                if date >= first
            ],
            recent=[
                UsageRecord.from_storage(key_id, data, seq) for seq, data in map(_split, members)
            ],
        )

    async def list_usage(self, key_id: str, limit: int, before: str | None) -> Page[UsageRecord]:
        top = f"({parse_cursor(before, 'before')}" if before is not None else "+inf"
        async with self._guard("list_usage") as client:
            members = await client.zrevrangebyscore(
                self._k("key", key_id, "recent"), top, "-inf", start=0, num=limit + 1
            )
        rows = [
            (seq, UsageRecord.from_storage(key_id, data, seq)) for seq, data in map(_split, members)
        ]
        return page_of(rows, limit)

    # --- audit ----------------------------------------------------------------------

    async def list_audit(
        self, key_id: str | None, limit: int, cursor: str | None
    ) -> Page[AuditEvent]:
        index = self._k("audit", key_id) if key_id is not None else self._k("audit")
        top = f"({parse_cursor(cursor)}" if cursor is not None else "+inf"
        async with self._guard("list_audit") as client:
            members = await client.zrevrangebyscore(index, top, "-inf", start=0, num=limit + 1)
        rows = [(seq, AuditEvent.from_storage(data, seq)) for seq, data in map(_split, members)]
        return page_of(rows, limit)

    # --- change events --------------------------------------------------------------

    def add_listener(self, listener: Callable[[str], None]) -> None:
        self._feed.add(listener)
        if self._listener is None:
            loop = asyncio.get_running_loop()
            self._listener = loop.create_task(self._listen())
            self._reporter = loop.create_task(self._report_applied())

    def _applied_up_to(self, change: int) -> None:
        if change > self._applied:
            self._applied = change
            self._applied_event.set()

    async def _report_applied(self) -> None:
        """Record the last change applied: at once when it moves, else once per
        HEARTBEAT_SECONDS, from the first subscription on (before it, nothing is known)."""
        record = self._k("gateway", self._origin)
        label = process_label()
        while not self._closing:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(HEARTBEAT_SECONDS):
                    await self._applied_event.wait()
            self._applied_event.clear()
            if self._applied < 0:
                continue
            try:
                async with self._guard("report") as client, client.pipeline() as pipe:
                    pipe.hset(record, mapping={"label": label, "applied": self._applied})
                    pipe.pexpire(record, int(LIVE_SECONDS * 1000))
                    pipe.sadd(self._k("gateways"), self._origin)
                    await pipe.execute()
            except StoreError as exc:
                log.debug("cannot record the applied change (%s)", exc)

    @property
    def presence_id(self) -> str | None:
        return self._origin if self._reporter is not None else None

    async def live_gateways(self) -> list[GatewayPresence]:
        async with self._guard("live_gateways") as client:
            ids = sorted(await client.smembers(self._k("gateways")))
            async with client.pipeline(transaction=False) as pipe:
                for gateway_id in ids:
                    pipe.hmget(self._k("gateway", gateway_id), "label", "applied")
                rows = await pipe.execute()
            gone = [g for g, (_, applied) in zip(ids, rows, strict=True) if applied is None]
            if gone:
                await client.srem(self._k("gateways"), *gone)
        return [
            GatewayPresence(g, label, int(applied))
            for g, (label, applied) in zip(ids, rows, strict=True)
            if applied is not None
        ]

    async def _listen(self) -> None:
        """Keep a subscription to the change channel for as long as the store is open."""
        delay = BACKOFF_MIN
        while not self._closing:
            try:
                await self._subscription()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # lost or refused: try again after a while
                if self._live:  # say it once per outage, not once per attempt
                    log.warning("redis change feed interrupted (%s); reconnecting", exc)
                    delay = BACKOFF_MIN
                else:
                    log.debug("redis change feed still unavailable (%s)", exc)
            self._live = False
            await asyncio.sleep(delay)
            delay = min(delay * 2, BACKOFF_MAX)

    async def _subscription(self) -> None:
        """One subscription, until its connection fails (then raise)."""
        loop = asyncio.get_running_loop()
        timeout = self.options.timeout
        try:
            async with asyncio.timeout(timeout):
                client = await self._current()
        except (RedisError, OSError):
            if self._slot is not None:
                self._slot.stale()
            raise
        pubsub = client.pubsub()
        try:
            async with asyncio.timeout(timeout):
                if self._publish == "SPUBLISH":
                    await pubsub.ssubscribe(self._channel)
                else:
                    await pubsub.subscribe(self._channel)
            heard = loop.time()
            pinged = False
            while not self._closing:
                message = await pubsub.get_message(timeout=min(1.0, PING_EVERY))
                now = loop.time()
                if message is not None:
                    heard, pinged = now, False
                    await self._on_message(client, message)
                elif not pinged and now - heard > PING_EVERY:
                    await pubsub.ping()  # the answer arrives as a message
                    pinged = True
                elif pinged and now - heard > PING_EVERY + timeout:
                    raise StoreError("the change feed stopped answering")
        except (RedisError, OSError):
            if self._slot is not None:
                self._slot.stale()
            raise
        finally:
            with contextlib.suppress(Exception):
                await pubsub.aclose()

    async def _on_message(self, client: Redis, message: dict[str, Any]) -> None:
        kind = message.get("type")
        if kind in ("subscribe", "ssubscribe"):
            self._live = True
            if self._link is not None:
                self._link.revived()  # Redis answers: no need to wait for the probe
            # Read before forgetting: every change up to it is then applied.
            async with asyncio.timeout(self.options.timeout):
                change = int(await client.get(self._k("changes")) or 0)
            # Listening (again): whatever changed while we were not is unknown.
            self._feed.notify(ALL_KEYS)
            self._applied_up_to(change)
        elif kind in ("message", "smessage"):
            origin, key_id, change = [*str(message.get("data", "")).split(" "), "", ""][:3]
            if key_id and origin != self._origin:  # our own writes were reported already
                self._feed.notify(key_id)
            if change.isdigit():
                self._applied_up_to(int(change))


def _no_script(result: Any) -> bool:
    return isinstance(result, NoScriptError)
