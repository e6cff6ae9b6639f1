"""The usage recorder (SPEC §6): off the response's critical path.

`record()` only appends a tuple to an in-memory buffer. A background task turns the
buffer into `UsageRecord`s and hands them to `store.record_usage` in batches, at least
every `usage.flush_interval` seconds; `stop()` flushes what is left, so a clean stop
loses nothing. With a spool (`usage.spool_path`, SPEC §13) a failed flush moves its
records to the local file, and every later successful flush writes what waits there —
at the latest on the next start — so a store outage, at shutdown too, loses nothing.
Without one, a failed flush keeps its records in the buffer for the next interval. The
buffer is bounded: records beyond it are dropped and counted in
`gateway_usage_dropped_total`.
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
from gateway.pipeline.spool import UsageSpool
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
        spool: UsageSpool | None = None,
    ) -> None:
        self.store = store
        self.spool = spool
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
        """Write everything buffered so far, then whatever waits in the spool; False if
        the store failed (the records wait in the spool, or without one in the buffer)."""
        async with self._flushing:
            while self._buffer:
                count = min(len(self._buffer), self.batch_size)
                rows = [self._buffer.popleft() for _ in range(count)]
                records = await _records(rows)
                try:
                    await self.store.record_usage(records)
                except Exception as exc:  # keep them for the next try
                    metrics.BACKEND_ERRORS.labels("store").inc()
                    if self.spool is not None and self._to_spool(rows + list(self._buffer)):
                        self._buffer.clear()
                        log.warning(
                            "usage flush failed (%s); records spooled to %s",
                            type(exc).__name__,
                            self.spool.path,
                        )
                        return False
                    log.warning("usage flush failed (%s); will retry", type(exc).__name__)
                    room = self.max_buffer - len(self._buffer)
                    if room < len(rows):
                        metrics.USAGE_DROPPED.inc(len(rows) - max(room, 0))
                        rows = rows[: max(room, 0)]
                    self._buffer.extendleft(reversed(rows))
                    return False
            if self.spool is not None and self.spool.pending():
                return await self._replay()
        return True

    def _to_spool(self, rows: list[_Row]) -> bool:
        assert self.spool is not None
        try:
            self.spool.append(rows)
        except OSError as exc:
            log.error("usage spool %s cannot be written (%s)", self.spool.path, exc)
            return False
        return True

    async def _replay(self) -> bool:
        """Write what waits in the spool to the store (the store is back)."""
        assert self.spool is not None
        try:
            taken = self.spool.take()
        except OSError as exc:
            log.error("usage spool %s cannot be read (%s)", self.spool.path, exc)
            return False
        ok = True
        for path, raw in taken:
            rows: list[_Row] = [tuple(row) for row in raw if len(row) == 7]  # type: ignore[misc]
            written = 0
            try:
                for start in range(0, len(rows), self.batch_size):
                    batch = rows[start : start + self.batch_size]
                    await self.store.record_usage(await _records(batch))
                    written += len(batch)
            except Exception as exc:
                ok = False
                log.warning("usage spool replay failed (%s); will retry", type(exc).__name__)
                if not self._to_spool(rows[written:]):
                    continue  # keep the taken file: it is adopted again after a restart
            if written:
                log.info("usage: %d spooled records written to the store", written)
            self.spool.done(path)
        return ok

    async def stop(self, *, attempts: int = 3) -> None:
        """Stop the background task and flush what is buffered (retrying briefly). With a
        spool, what the store cannot take waits there for the next start."""
        if self._task is not None:
            self._stopping.set()
            await self._task
            self._task = None
        for attempt in range(attempts):
            if await self.flush():
                return
            if self.spool is not None and not self._buffer:
                log.warning(
                    "usage: the store is unavailable; records wait in %s for the next start",
                    self.spool.path,
                )
                return
            await asyncio.sleep(0.1 * (attempt + 1))
        if self._buffer and self.spool is not None and self._to_spool(list(self._buffer)):
            self._buffer.clear()
        if self._buffer:
            log.error("usage: %d records could not be written at shutdown", len(self._buffer))
            metrics.USAGE_DROPPED.inc(len(self._buffer))
            self._buffer.clear()
