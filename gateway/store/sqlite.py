"""The embedded store: one SQLite file in WAL mode, shared by the gateway and the CLI.

All database work runs on one dedicated thread with one connection, so the event loop
never blocks on disk and the connection is never used from two threads at once. Writes
take `BEGIN IMMEDIATE` (and a busy timeout), so a CLI write while the gateway flushes
usage waits its turn instead of failing with "database is locked".

Changes made by another process are seen by polling the `changes` table's high-water
mark every `poll_interval` seconds (a cheap indexed read). A store with listeners (a
running gateway) records in the `gateways` table the last change it has applied, so a
key command can wait until every running gateway has it (gateway.store.presence).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import sqlite3
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

from gateway.keys.model import ApiKey, Status
from gateway.store.base import (
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
from gateway.urls import sqlite_path

# Each entry upgrades the schema by one version; never edit a released entry, add one.
MIGRATIONS: list[str] = [
    """
    CREATE TABLE meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
    CREATE TABLE keys (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        id TEXT NOT NULL UNIQUE,
        status TEXT NOT NULL,
        record TEXT NOT NULL,
        last_used_at TEXT
    );
    CREATE INDEX keys_status ON keys (status, seq);
    CREATE TABLE digests (
        digest TEXT PRIMARY KEY,
        key_id TEXT NOT NULL,
        expires_at TEXT
    );
    CREATE INDEX digests_key ON digests (key_id);
    CREATE TABLE usage_recent (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        key_id TEXT NOT NULL,
        record TEXT NOT NULL
    );
    CREATE INDEX usage_recent_key ON usage_recent (key_id, seq);
    CREATE TABLE usage_daily (
        key_id TEXT NOT NULL,
        date TEXT NOT NULL,
        requests INTEGER NOT NULL,
        errors INTEGER NOT NULL,
        PRIMARY KEY (key_id, date)
    );
    CREATE TABLE usage_totals (key_id TEXT PRIMARY KEY, total INTEGER NOT NULL);
    CREATE TABLE audit (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        key_id TEXT NOT NULL,
        event TEXT NOT NULL
    );
    CREATE INDEX audit_key ON audit (key_id, seq);
    CREATE TABLE changes (seq INTEGER PRIMARY KEY AUTOINCREMENT, key_id TEXT NOT NULL);
    """,
    # The running gateways and the last change each has applied (gateway.store.presence).
    """
    CREATE TABLE gateways (
        id TEXT PRIMARY KEY,
        label TEXT NOT NULL,
        applied INTEGER NOT NULL,
        seen REAL NOT NULL
    );
    """,
]

CHANGES_KEPT = 10_000
GATEWAYS_KEPT_SECONDS = 60.0  # records of stopped gateways are removed after this
T = TypeVar("T")


# Built once: json.dumps with non-default options builds a new encoder on every call.
_ENCODER = json.JSONEncoder(separators=(",", ":"))


def _dumps(value: Any) -> str:
    return _ENCODER.encode(value)


class SqliteStore:
    def __init__(self, url: str, options: StoreOptions | None = None) -> None:
        self.url = url
        self.path = Path(sqlite_path(url))
        self.options = options or StoreOptions()
        self._executor: ThreadPoolExecutor | None = None
        self._db: sqlite3.Connection | None = None
        self._feed = ChangeFeed()
        self._watcher: asyncio.Task[None] | None = None
        self._last_change = 0
        self.last_write = 0  # the change number of the last write through this object
        self._presence_id = secrets.token_hex(8)
        self._registered = False

    # --- plumbing -------------------------------------------------------------------

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        if self._executor is None:
            raise StoreError("the store is not open")
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._executor, fn, *args)
        except sqlite3.Error as exc:
            raise StoreError(f"sqlite: {exc}") from exc

    def _connect(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        db.execute("PRAGMA busy_timeout = 10000")
        db.execute("PRAGMA journal_mode = WAL")
        db.execute("PRAGMA synchronous = NORMAL")
        db.execute("PRAGMA foreign_keys = ON")
        self._db = db
        self._migrate()
        row = db.execute("SELECT COALESCE(MAX(seq), 0) FROM changes").fetchone()
        self._last_change = row[0]

    def _migrate(self) -> None:
        db = self._conn
        with self._transaction():
            version = db.execute("PRAGMA user_version").fetchone()[0]
            for number, script in enumerate(MIGRATIONS[version:], start=version + 1):
                for statement in script.split(";"):
                    if statement.strip():
                        db.execute(statement)
                db.execute(f"PRAGMA user_version = {number}")

    @property
    def _conn(self) -> sqlite3.Connection:
        assert self._db is not None
        return self._db

    @contextlib.contextmanager
    def _transaction(self) -> Any:
        db = self._conn
        db.execute("BEGIN IMMEDIATE")
        try:
            yield db
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")

    async def open(self) -> None:
        if self._executor is not None:
            return
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="gateway-sqlite")
        try:
            await self._run(self._connect)
        except BaseException:
            self._executor.shutdown(wait=False)
            self._executor = None
            raise

    async def close(self) -> None:
        if self._watcher is not None:
            self._watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watcher
            self._watcher = None
        if self._executor is None:
            return
        if self._registered:
            self._registered = False
            with contextlib.suppress(StoreError):
                await self._run(self._unregister)
        if self._db is not None:
            await self._run(self._db.close)
            self._db = None
        self._executor.shutdown(wait=True)
        self._executor = None

    async def ping(self) -> None:
        await self._run(lambda: self._conn.execute("SELECT 1").fetchone())

    async def check_secret(self, fingerprint: str) -> None:
        def check() -> None:
            with self._transaction() as db:
                row = db.execute("SELECT value FROM meta WHERE name = 'secret'").fetchone()
                if row is None:
                    db.execute("INSERT INTO meta VALUES ('secret', ?)", (fingerprint,))
                elif row[0] != fingerprint:
                    raise SecretMismatch(str(self.path))

        await self._run(check)

    # --- keys -----------------------------------------------------------------------

    @staticmethod
    def _key(record: str, last_used_at: str | None) -> ApiKey:
        data = json.loads(record)
        data["last_used_at"] = last_used_at
        return ApiKey.from_storage(data)

    @staticmethod
    def _record(key: ApiKey) -> str:
        data = key.to_storage()
        data.pop("last_used_at")
        return _dumps(data)

    def _audit(self, db: sqlite3.Connection, audit: AuditEvent | None) -> None:
        if audit is not None:
            db.execute(
                "INSERT INTO audit (key_id, event) VALUES (?, ?)",
                (audit.key_id, _dumps(audit.to_storage())),
            )

    def _changed(self, db: sqlite3.Connection, key_id: str) -> None:
        seq = db.execute("INSERT INTO changes (key_id) VALUES (?)", (key_id,)).lastrowid or 0
        db.execute("DELETE FROM changes WHERE seq <= ?", (seq - CHANGES_KEPT,))
        self.last_write = seq  # on the store's thread; read after the write returns

    async def insert_key(self, key: ApiKey, digest: str, audit: AuditEvent) -> None:
        def insert() -> None:
            with self._transaction() as db:
                db.execute(
                    "INSERT INTO keys (id, status, record) VALUES (?, ?, ?)",
                    (key.id, key.status.value, self._record(key)),
                )
                db.execute("INSERT INTO digests VALUES (?, ?, NULL)", (digest, key.id))
                self._audit(db, audit)
                self._changed(db, key.id)

        await self._run(insert)
        self._feed.notify(key.id)

    async def update_key(self, key_id: str, mutate: Mutation) -> KeyWrite:
        def update() -> KeyWrite:
            with self._transaction() as db:
                row = db.execute(
                    "SELECT record, last_used_at FROM keys WHERE id = ?", (key_id,)
                ).fetchone()
                if row is None:
                    raise KeyNotFound(key_id)
                write = mutate(self._key(*row))
                self._apply(db, key_id, write)
                return write

        write = await self._run(update)
        self._feed.notify(key_id)
        return write

    def _apply(self, db: sqlite3.Connection, key_id: str, write: KeyWrite) -> None:
        if write.key is None:
            for table in ("keys", "digests", "usage_recent", "usage_daily", "usage_totals"):
                column = "id" if table == "keys" else "key_id"
                db.execute(f"DELETE FROM {table} WHERE {column} = ?", (key_id,))
        else:
            db.execute(
                "UPDATE keys SET status = ?, record = ? WHERE id = ?",
                (write.key.status.value, self._record(write.key), key_id),
            )
            if write.retire_digests:
                if write.grace_until is None:
                    db.execute("DELETE FROM digests WHERE key_id = ?", (key_id,))
                else:
                    until = write.grace_until.astimezone(UTC).isoformat()
                    db.execute(
                        "UPDATE digests SET expires_at = MIN(COALESCE(expires_at, ?), ?) "
                        "WHERE key_id = ?",
                        (until, until, key_id),
                    )
            if write.new_digest is not None:
                db.execute("INSERT INTO digests VALUES (?, ?, NULL)", (write.new_digest, key_id))
        self._audit(db, write.audit)
        self._changed(db, key_id)

    async def get_key(self, key_id: str) -> ApiKey | None:
        def get() -> ApiKey | None:
            row = self._conn.execute(
                "SELECT record, last_used_at FROM keys WHERE id = ?", (key_id,)
            ).fetchone()
            return self._key(*row) if row else None

        return await self._run(get)

    async def list_keys(
        self, status: Status | None, limit: int, cursor: str | None
    ) -> Page[ApiKey]:
        def list_() -> Page[ApiKey]:
            clauses, params = [], []
            if status is not None:
                clauses.append("status = ?")
                params.append(status.value)
            if cursor is not None:
                clauses.append("seq < ?")
                params.append(parse_cursor(cursor))
            where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
            rows = self._conn.execute(
                f"SELECT seq, record, last_used_at FROM keys {where} ORDER BY seq DESC LIMIT ?",
                (*params, limit + 1),
            ).fetchall()
            return page_of([(seq, self._key(r, u)) for seq, r, u in rows], limit)

        return await self._run(list_)

    async def lookup_digest(self, digest: str) -> DigestMatch | None:
        def lookup() -> DigestMatch | None:
            row = self._conn.execute(
                "SELECT k.record, k.last_used_at, d.expires_at FROM digests d "
                "JOIN keys k ON k.id = d.key_id WHERE d.digest = ?",
                (digest,),
            ).fetchone()
            if row is None:
                return None
            expires = datetime.fromisoformat(row[2]) if row[2] else None
            return DigestMatch(self._key(row[0], row[1]), expires)

        return await self._run(lookup)

    # --- usage ----------------------------------------------------------------------

    async def record_usage(self, records: list[UsageRecord]) -> None:
        if records:
            await self._run(self._record_usage, records)

    def _record_usage(self, records: list[UsageRecord]) -> None:
        # Batched on purpose: this runs beside the event loop and every Python-level SQL call
        # costs GIL hand-offs, so counts are summed here and written with one executemany per
        # table, and only the records that survive trimming are serialized and inserted.
        keep = max(self.options.recent_per_key, 1)  # the trim below always keeps at least one
        cutoff = (datetime.now(UTC) - timedelta(days=self.options.daily_retention_days)).date()
        with self._transaction() as db:
            existing = _existing_ids(db, {r.key_id for r in records})
            live = [r for r in records if r.key_id in existing]  # deleted keys: history gone
            daily: Counter[tuple[str, str]] = Counter()
            errors: Counter[tuple[str, str]] = Counter()
            per_key: dict[str, list[UsageRecord]] = defaultdict(list)
            for record in live:
                day = (record.key_id, record.at.astimezone(UTC).date().isoformat())
                daily[day] += 1
                errors[day] += record.status >= 400
                per_key[record.key_id].append(record)
            newest = {id(r) for rs in per_key.values() for r in rs[-keep:]}
            db.executemany(
                "INSERT INTO usage_recent (key_id, record) VALUES (?, ?)",
                [(r.key_id, _dumps(r.to_storage())) for r in live if id(r) in newest],
            )
            db.executemany(
                "INSERT INTO usage_daily VALUES (?, ?, ?, ?) ON CONFLICT (key_id, date) "
                "DO UPDATE SET requests = requests + excluded.requests, "
                "errors = errors + excluded.errors",
                [(k, day, n, errors[k, day]) for (k, day), n in daily.items()],
            )
            db.executemany(
                "INSERT INTO usage_totals VALUES (?, ?) ON CONFLICT (key_id) "
                "DO UPDATE SET total = total + excluded.total",
                [(k, len(rs)) for k, rs in per_key.items()],
            )
            stamps = [
                (max(r.at for r in rs).astimezone(UTC).isoformat(), k) for k, rs in per_key.items()
            ]
            db.executemany(
                "UPDATE keys SET last_used_at = ?1 "
                "WHERE id = ?2 AND (last_used_at IS NULL OR last_used_at < ?1)",
                stamps,
            )
            db.executemany(
                "DELETE FROM usage_recent WHERE key_id = ?1 AND seq < ("
                "SELECT seq FROM usage_recent WHERE key_id = ?1 "
                "ORDER BY seq DESC LIMIT 1 OFFSET ?2)",
                [(k, keep - 1) for k in per_key],
            )
            db.execute("DELETE FROM usage_daily WHERE date < ?", (cutoff.isoformat(),))

    async def usage_summary(self, key_id: str, days: int, recent: int) -> UsageSummary:
        def summary() -> UsageSummary:
            db = self._conn
            first = (datetime.now(UTC).date() - timedelta(days=days - 1)).isoformat()
            total = db.execute(
                "SELECT total FROM usage_totals WHERE key_id = ?", (key_id,)
            ).fetchone()
            daily = db.execute(
                "SELECT date, requests, errors FROM usage_daily "
                "WHERE key_id = ? AND date >= ? ORDER BY date",
                (key_id, first),
            ).fetchall()
            rows = db.execute(
                "SELECT seq, record FROM usage_recent WHERE key_id = ? ORDER BY seq DESC LIMIT ?",
                (key_id, recent),
            ).fetchall()
            return UsageSummary(
                total_requests=total[0] if total else 0,
                daily=[DailyUsage(d, r, e) for d, r, e in daily],
                recent=[UsageRecord.from_storage(key_id, json.loads(r), s) for s, r in rows],
            )

        return await self._run(summary)

    async def list_usage(self, key_id: str, limit: int, before: str | None) -> Page[UsageRecord]:
        def list_() -> Page[UsageRecord]:
            params: list[Any] = [key_id]
            where = "key_id = ?"
            if before is not None:
                where += " AND seq < ?"
                params.append(parse_cursor(before, "before"))
            rows = self._conn.execute(
                f"SELECT seq, record FROM usage_recent WHERE {where} ORDER BY seq DESC LIMIT ?",
                (*params, limit + 1),
            ).fetchall()
            items = [(s, UsageRecord.from_storage(key_id, json.loads(r), s)) for s, r in rows]
            return page_of(items, limit)

        return await self._run(list_)

    # --- audit ----------------------------------------------------------------------

    async def list_audit(
        self, key_id: str | None, limit: int, cursor: str | None
    ) -> Page[AuditEvent]:
        def list_() -> Page[AuditEvent]:
            clauses, params = [], []
            if key_id is not None:
                clauses.append("key_id = ?")
                params.append(key_id)
            if cursor is not None:
                clauses.append("seq < ?")
                params.append(parse_cursor(cursor))
            where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
            rows = self._conn.execute(
                f"SELECT seq, event FROM audit {where} ORDER BY seq DESC LIMIT ?",
                (*params, limit + 1),
            ).fetchall()
            return page_of([(s, AuditEvent.from_storage(json.loads(e), s)) for s, e in rows], limit)

        return await self._run(list_)

    # --- change events --------------------------------------------------------------

    def add_listener(self, listener: Callable[[str], None]) -> None:
        self._feed.add(listener)
        if self._watcher is None:
            self._watcher = asyncio.get_running_loop().create_task(self._watch())

    async def _watch(self) -> None:
        """Report changes committed by other processes (e.g. `gateway keys revoke`), and
        record the last change applied: at once when there were new ones, else once per
        HEARTBEAT_SECONDS so that key commands know this gateway is running."""
        reported = -HEARTBEAT_SECONDS
        loop = asyncio.get_running_loop()
        while True:
            try:
                changed = await self._run(self._changes_since)
            except StoreError:
                changed = None
            for key_id in changed or ():
                self._feed.notify(key_id)
            # Recorded only after the listeners ran: the caches no longer hold the change.
            if changed or (changed is not None and loop.time() - reported >= HEARTBEAT_SECONDS):
                with contextlib.suppress(StoreError):
                    await self._run(self._report, self._last_change)
                    reported = loop.time()
            await asyncio.sleep(self.options.poll_interval)

    def _report(self, applied: int) -> None:
        now = time.time()
        with self._transaction() as db:
            db.execute(
                "INSERT INTO gateways VALUES (?, ?, ?, ?) ON CONFLICT (id) "
                "DO UPDATE SET applied = excluded.applied, seen = excluded.seen",
                (self._presence_id, process_label(), applied, now),
            )
            db.execute("DELETE FROM gateways WHERE seen < ?", (now - GATEWAYS_KEPT_SECONDS,))
        self._registered = True

    def _unregister(self) -> None:
        with self._transaction() as db:
            db.execute("DELETE FROM gateways WHERE id = ?", (self._presence_id,))

    @property
    def presence_id(self) -> str | None:
        return self._presence_id if self._watcher is not None else None

    async def live_gateways(self) -> list[GatewayPresence]:
        def live() -> list[GatewayPresence]:
            rows = self._conn.execute(
                "SELECT id, label, applied FROM gateways WHERE seen >= ? ORDER BY id",
                (time.time() - LIVE_SECONDS,),
            ).fetchall()
            return [GatewayPresence(*row) for row in rows]

        return await self._run(live)

    def _changes_since(self) -> list[str]:
        db = self._conn
        rows = db.execute(
            "SELECT seq, key_id FROM changes WHERE seq > ? ORDER BY seq", (self._last_change,)
        ).fetchall()
        if rows:
            self._last_change = rows[-1][0]
        return list(dict.fromkeys(key_id for _, key_id in rows))


def _existing_ids(db: sqlite3.Connection, ids: Iterable[str]) -> set[str]:
    ids = list(ids)
    marks = ",".join("?" * len(ids))
    return {row[0] for row in db.execute(f"SELECT id FROM keys WHERE id IN ({marks})", ids)}
