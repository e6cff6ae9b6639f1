"""The usage recorder (SPEC §6): off the response's critical path.

`record()` only appends a tuple to an in-memory buffer. A background task turns the
buffer into `UsageRecord`s and hands them to `store.record_usage` in batches, at least
every `usage.flush_interval` seconds; `stop()` flushes what is left, so a clean stop
loses nothing. The buffer is bounded: when the store is down long enough for it to
fill, new records are dropped and counted in `gateway_usage_dropped_total`. A failed
flush keeps its records and is retried at the next interval.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from datetime import UTC, datetime

from gateway import metrics
from gateway.keys.format import redact_keys
from gateway.store.base import Store, UsageRecord

log = logging.getLogger("gateway.usage")

# (key_id, epoch seconds, method, path, status, latency ms, site)
_Row = tuple[str, float, str, str, int, float, str | None]


# Rows converted per turn of the loop: a flush of a busy half second (~1,000 rows, ~2-3 µs
# each) would otherwise hold the loop for milliseconds and show up in the requests' p99.
_CHUNK = 200


async def _records(rows: list[_Row]) -> list[UsageRecord]:
    """`rows` as UsageRecords, letting requests in between chunks."""
    records: list[UsageRecord] = []
    for start in range(0, len(rows), _CHUNK):
        if start:
            await asyncio.sleep(0)
        records += [
            UsageRecord(
                key_id,
                datetime.fromtimestamp(at, UTC),
                method,
                path,
                status,
                round(latency_ms, 3),
                site,
            )
            for key_id, at, method, path, status, latency_ms, site in rows[start : start + _CHUNK]
        ]
    return records


class UsageRecorder:
    def __init__(
        self,
        store: Store,
        *,
        flush_interval: float = 0.5,
        max_buffer: int = 100_000,
        batch_size: int = 5_000,
    ) -> None:
        self.store = store
        self.flush_interval = flush_interval
        self.max_buffer = max_buffer
        self.batch_size = batch_size
        self._buffer: deque[_Row] = deque()
        self._task: asyncio.Task[None] | None = None
        self._flushing = asyncio.Lock()
        self._stopping = asyncio.Event()

    def record(
        self,
        key_id: str,
        method: str,
        path: str,
        status: int,
        latency_ms: float,
        site: str | None,
    ) -> None:
        """Buffer one request of a valid key; never blocks, never raises."""
        if len(self._buffer) >= self.max_buffer:
            metrics.USAGE_DROPPED.inc()
            return
        # A key value in the path or site is recorded as "[redacted]" (SPEC §14).
        path = redact_keys(path)
        if site is not None:
            site = redact_keys(site)
        self._buffer.append((key_id, time.time(), method, path, status, latency_ms, site))

    def __len__(self) -> int:
        return len(self._buffer)

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        # Never cancelled mid-write: stop() sets the event and waits for the last flush.
        while not self._stopping.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), self.flush_interval)
            try:
                await self.flush()
            except Exception:  # flush() handles store errors; anything else is a bug
                log.exception("usage flush crashed")

    async def flush(self) -> bool:
        """Write everything buffered so far; False (records kept) if the store failed."""
        async with self._flushing:
            while self._buffer:
                count = min(len(self._buffer), self.batch_size)
                rows = [self._buffer.popleft() for _ in range(count)]
                records = await _records(rows)
                try:
                    await self.store.record_usage(records)
                except Exception as exc:  # keep them for the next try
                    log.warning("usage flush failed (%s); will retry", type(exc).__name__)
                    metrics.BACKEND_ERRORS.labels("store").inc()
                    room = self.max_buffer - len(self._buffer)
                    if room < len(rows):
                        metrics.USAGE_DROPPED.inc(len(rows) - max(room, 0))
                        rows = rows[: max(room, 0)]
                    self._buffer.extendleft(reversed(rows))
                    return False
        return True

    async def stop(self, *, attempts: int = 3) -> None:
        """Stop the background task and flush what is buffered (retrying briefly)."""
        if self._task is not None:
            self._stopping.set()
            await self._task
            self._task = None
        for attempt in range(attempts):
            if await self.flush():
                return
            await asyncio.sleep(0.1 * (attempt + 1))
        if self._buffer:
            log.error("usage: %d records could not be written at shutdown", len(self._buffer))
            metrics.USAGE_DROPPED.inc(len(self._buffer))
            self._buffer.clear()
