"""Key values are never stored (SPEC §1): after every kind of write, the raw bytes of the
SQLite file and its WAL, and every Redis key and value, contain no key value, no random
part of one, and not the server secret."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import redis

from gateway.keys.model import KeyCreate, KeyEdit, KeyRotate, utcnow
from gateway.keys.service import KeyService
from gateway.store.base import UsageRecord
from gateway.urls import sqlite_path
from tests.conftest import TEST_SECRET


async def exercise(service: KeyService) -> tuple[list[str], list[str]]:
    """Create, use, edit, rotate (with and without grace), revoke, delete; the values made,
    and the digests that must be there (so the search is known to read the right data)."""
    values: list[str] = []
    key, value = await service.create(KeyCreate(name="bytes", scope="write", sites=["s1"]))
    values.append(value)
    other, other_value = await service.create(KeyCreate(name="gone", scope="read"))
    values.append(other_value)
    now = utcnow()
    await service.store.record_usage(
        [
            UsageRecord(k.id, now - timedelta(seconds=i), "GET", f"/p/{i}", 200 + i, 2.5, "s1")
            for i in range(5)
            for k in (key, other)
        ]
    )
    await service.edit(key.id, KeyEdit(name="renamed"))
    _, graced = await service.rotate(key.id, KeyRotate(gracePeriodSeconds=3600))
    values.append(graced)
    _, current = await service.rotate(key.id, KeyRotate(gracePeriodSeconds=60))
    values.append(current)
    await service.store.record_usage([UsageRecord(key.id, utcnow(), "POST", "/q", 201, 1.0)])
    await service.revoke(other.id)
    await service.delete(other.id)
    await service.audit()
    # Digests of values that must still be valid (in grace or current).
    return values, [service.digest(v) for v in (value, graced, current)]


def needles(values: list[str]) -> list[bytes]:
    found = [TEST_SECRET.encode()]
    for value in values:
        random_part = value.split("_", 1)[1][:32]
        found += [value.encode(), random_part.encode(), value.encode("utf-16-le")]
    return found


def assert_absent(haystack: bytes, values: list[str], where: str) -> None:
    for needle in needles(values):
        assert needle not in haystack, f"a key value (or its random part) is in {where}"


async def test_no_key_value_is_stored(service: KeyService, store_url: str) -> None:
    if store_url.startswith("sqlite"):
        await sqlite_check(service, store_url)
    else:
        await redis_check(service, store_url)


async def sqlite_check(service: KeyService, store_url: str) -> None:
    values, digests = await exercise(service)
    path = Path(sqlite_path(store_url))
    wal = Path(str(path) + "-wal")
    files = [p for p in (path, wal) if p.exists()]
    assert wal in files  # read while the store is open, before any checkpoint
    data = b"".join(p.read_bytes() for p in files)
    assert any(d.encode() in data for d in digests)
    assert_absent(data, values, "the SQLite file or its WAL")
    await service.store.close()  # checkpoints the WAL into the file
    data = b"".join(p.read_bytes() for p in path.parent.iterdir() if p.name.startswith(path.name))
    assert_absent(data, values, "the SQLite files after close")


def dump_redis(url: str) -> bytes:
    """Every key and value in the database, read per type, plus DUMP's serialized bytes."""
    client = redis.Redis.from_url(url)
    try:
        parts: list[bytes] = []
        for name in client.scan_iter(count=500):
            parts.append(name)
            kind = client.type(name)
            if kind == b"string":
                parts.append(client.get(name) or b"")
            elif kind == b"hash":
                for field, value in client.hgetall(name).items():
                    parts += [field, value]
            elif kind == b"set":
                parts += list(client.smembers(name))
            elif kind == b"zset":
                for member, score in client.zrange(name, 0, -1, withscores=True):
                    parts += [member, str(score).encode()]
            elif kind == b"list":
                parts += list(client.lrange(name, 0, -1))
            elif kind == b"stream":
                for entry_id, fields in client.xrange(name):
                    parts.append(entry_id)
                    for field, value in fields.items():
                        parts += [field, value]
            else:
                raise AssertionError(f"unexpected Redis type {kind!r} for {name!r}")
            parts.append(client.dump(name) or b"")
        return b"\n".join(parts)
    finally:
        client.close()


async def redis_check(service: KeyService, store_url: str) -> None:
    values, digests = await exercise(service)
    data = dump_redis(store_url)
    assert all(d.encode() in data for d in digests)
    assert b"renamed" in data  # the records are there; their values are not
    assert_absent(data, values, "Redis")
