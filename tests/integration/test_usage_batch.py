"""One usage flush bigger than `recent_per_key`, mixing keys, days and a deleted key.

The SQLite store aggregates a flush in Python and writes only the records that survive
trimming; this holds both stores to the result of recording each record one by one.
"""

from __future__ import annotations

from datetime import timedelta

from gateway.keys.model import KeyCreate, utcnow
from gateway.keys.service import KeyService
from gateway.store.base import StoreOptions, UsageRecord, open_store


async def test_large_mixed_batch(store_url: str) -> None:
    store = open_store(store_url, StoreOptions(recent_per_key=20, daily_retention_days=3))
    await store.open()
    try:
        service = KeyService(store, b"s" * 40)
        a, _ = await service.create(KeyCreate(name="a", scope="read"))
        b, _ = await service.create(KeyCreate(name="b", scope="read"))
        gone, _ = await service.create(KeyCreate(name="gone", scope="read"))
        await service.revoke(gone.id)
        await service.delete(gone.id)
        # Noon today: the batch spans seconds that never cross midnight.
        now = utcnow().replace(hour=12, minute=0, second=0, microsecond=0)
        yesterday, expired = now - timedelta(days=1), now - timedelta(days=10)
        records = []
        for i in range(60):  # a, b and the deleted key interleaved; a on two days
            at = yesterday if i < 10 else now - timedelta(seconds=60 - i)
            records.append(UsageRecord(a.id, at, "GET", f"/a{i}", 500 if i % 3 else 200, 1.0))
            records.append(UsageRecord(b.id, now, "GET", f"/b{i}", 200, 1.0))
            records.append(UsageRecord(gone.id, now, "GET", "/gone", 200, 1.0))
        records.append(UsageRecord(b.id, expired, "GET", "/old", 404, 1.0))
        await store.record_usage(records)

        sa = await store.usage_summary(a.id, 30, 100)
        assert sa.total_requests == 60
        daily = {d.date: (d.requests, d.errors) for d in sa.daily}
        assert (
            daily
            == {
                yesterday.date().isoformat(): (10, 6),
                now.date().isoformat(): (50, 34),
            }
            or yesterday.date() == now.date()
        )
        assert [r.path for r in sa.recent] == [f"/a{i}" for i in range(59, 39, -1)]
        assert (await service.get(a.id)).last_used_at == now - timedelta(seconds=1)

        sb = await store.usage_summary(b.id, 30, 100)
        assert sb.total_requests == 61
        assert [d.date for d in sb.daily] == [now.date().isoformat()]  # expired day dropped
        assert [r.path for r in sb.recent] == ["/old"] + [f"/b{i}" for i in range(59, 40, -1)]
        assert (await service.get(b.id)).last_used_at == now
        assert (await store.usage_summary(gone.id, 30, 100)).total_requests == 0
    finally:
        await store.close()
