"""One counter table for every worker of a machine (`server.workers` > 1, SPEC §13).

With `memory://` counters, N worker processes must still enforce ONE limit per key (not
a share per worker), with the same all-or-nothing multi-limit step as in one process.
So the supervisor creates this table in shared memory (a `memfd`, mapped by every
worker it forks) and each worker's limiter and failed-attempt throttles use it:

- The table is split into PARTITIONS independent hash tables; a subject (an API key id,
  a client IP) lives wholly in one partition, chosen by its hash. One acquire — test
  every limit of the policy, hit all or none, report — runs under that partition's lock,
  so it is atomic across processes exactly like the in-process step.
- The locks are POSIX record locks (`lockf`) on one byte per partition of the memfd:
  the kernel releases them if a worker dies holding one, so a crashed worker can never
  wedge the others; two syscalls per request.
- Slots are 48 bytes: an 8-byte entry key (hash of subject, limit, strategy, chunk), the
  moment the entry expires (ms), and four integers of state. Open addressing with a
  bounded probe; an expired slot is free again, and a full probe window evicts the entry
  that expires first (the in-process table likewise forgets its oldest subject).
- The strategies keep the in-process definitions (same functions for fixed and sliding
  windows). A moving window needs its last `amount` timestamps: a ring stored four per
  slot in "chunk" entries, plus a head entry (start, count).

Workers are forked by the supervisor (gateway/workers.py), which calls `create_table()`
before the first fork; each child calls `attach()` and from then on `counters_for()`
returns views of the shared table instead of per-process `MemoryCounters`.
"""

from __future__ import annotations

import fcntl
import hashlib
import mmap
import os
import struct
from typing import Any

from gateway.pipeline.ratelimit.memory import (
    _fixed_hit,
    _fixed_prepare,
    _fixed_report,
    _sliding_hit,
    _sliding_prepare,
    _sliding_report,
)
from gateway.pipeline.ratelimit.policy import Limit, Outcome, Policy

# As many entries as the in-process table keeps subjects (MemoryCounters.max_entries).
PARTITIONS = 64
SLOTS_PER_PARTITION = 16384  # 64 x 16384 = 1,048,576 slots x 48 bytes = 48 MiB, touched lazily
PROBE = 16
SLOT = struct.Struct("<Qqqqqq")  # key, expires_ms, a, b, c, d
HEAD = struct.Struct("<Qq")
SIZE = SLOT.size
MASK = (1 << 64) - 1
CHUNK = 4  # moving-window timestamps per slot


class SharedTable:
    """The mapped table and its partition locks (create before forking the workers)."""

    def __init__(
        self, partitions: int = PARTITIONS, slots_per_partition: int = SLOTS_PER_PARTITION
    ) -> None:
        self.partitions = partitions
        self.slots = slots_per_partition
        self.size = partitions * slots_per_partition * SIZE
        self.fd = os.memfd_create("gateway-counters")
        os.ftruncate(self.fd, self.size)
        self.map = mmap.mmap(self.fd, self.size, mmap.MAP_SHARED)

    def lock(self, partition: int) -> None:
        fcntl.lockf(self.fd, fcntl.LOCK_EX, 1, partition)

    def unlock(self, partition: int) -> None:
        fcntl.lockf(self.fd, fcntl.LOCK_UN, 1, partition)

    def find(self, partition: int, key: int, now: int, create: bool) -> tuple[int, bool]:
        """(offset, fresh) of the entry `key`; fresh: new or expired (state to reset).

        With `create=False`, (-1, True) when absent. Call with the partition locked."""
        data = self.map
        base = partition * self.slots
        slots = self.slots
        reuse = -1
        victim, victim_expiry = -1, None
        for step in range(PROBE):
            offset = (base + (key + step) % slots) * SIZE
            found, expires = HEAD.unpack_from(data, offset)
            if found == key:
                return offset, expires <= now
            if found == 0:  # the chain ends here: the entry is not in the table
                if reuse < 0:
                    reuse = offset
                break
            if expires <= now:
                if reuse < 0:
                    reuse = offset
            elif victim_expiry is None or expires < victim_expiry:
                victim, victim_expiry = offset, expires
        if not create:
            return -1, True
        offset = reuse if reuse >= 0 else victim
        SLOT.pack_into(data, offset, key, 0, 0, 0, 0, 0)
        return offset, True

    def used(self) -> int:
        """How many slots hold an entry (expired or not); a full scan, for tests."""
        return sum(
            1 for offset in range(0, self.size, SIZE) if HEAD.unpack_from(self.map, offset)[0] != 0
        )


_TABLE: SharedTable | None = None


def create_table() -> SharedTable:
    """The supervisor's table (before forking); the supervisor itself does not use it."""
    return SharedTable()


def attach(table: SharedTable | None) -> None:
    """In a worker: from now on, memory counters are views of `table`."""
    global _TABLE
    _TABLE = table


def attached() -> SharedTable | None:
    return _TABLE


def counters_for(strategy: str, name: str, *, max_entries: int = 1_000_000) -> Any:
    """Counters for `name` ("ratelimit", "throttle:proxy"...): shared with the other
    workers when a table is attached, else this process's own `MemoryCounters`."""
    if _TABLE is not None:
        return SharedCounters(_TABLE, strategy, name)
    from gateway.pipeline.ratelimit.memory import MemoryCounters

    return MemoryCounters(strategy, max_entries=max_entries)


def _hash(text: str) -> int:
    value = int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "little")
    return value or 1  # 0 marks an empty slot


class _Slots:
    """A state backed by one slot: the list the in-process functions work on."""

    __slots__ = ("offset", "state")

    def __init__(self, offset: int, state: list[int]) -> None:
        self.offset = offset
        self.state = state


class SharedCounters:
    """`MemoryCounters`' interface over the shared table; each call is one locked step."""

    def __init__(self, table: SharedTable, strategy: str, name: str) -> None:
        self.table = table
        self.strategy = strategy
        self.name = name
        self._keys: dict[tuple[str, str], tuple[int, int]] = {}
        self._sliding = strategy == "sliding-window-counter"
        self._steps = (
            (_sliding_prepare, _sliding_hit, _sliding_report)
            if self._sliding
            else (_fixed_prepare, _fixed_hit, _fixed_report)
        )

    def _key(self, subject: str, limit: Limit) -> tuple[int, int]:
        """(partition, entry key) of one limit of a subject; cached."""
        cached = self._keys.get((subject, limit.ident))
        if cached is None:
            partition = _hash(f"{self.name}\0{subject}") % self.table.partitions
            key = _hash(f"{self.name}\0{subject}\0{limit.ident}\0{self.strategy}")
            if len(self._keys) >= 100_000:
                self._keys.clear()
            cached = self._keys[(subject, limit.ident)] = (partition, key)
        return cached

    def acquire(self, subject: str, policy: Policy, now_ms: int, *, hit: bool = True) -> Outcome:
        """Test every limit at `now_ms`; if all admit (and `hit`), count the request in all."""
        table = self.table
        limits_ = policy.limits
        keys = [self._key(subject, limit) for limit in limits_]
        partition = keys[0][0]
        fcntl.lockf(table.fd, fcntl.LOCK_EX, 1, partition)
        try:
            if self.strategy == "moving-window":
                return self._moving(partition, keys, limits_, now_ms, hit)
            if len(limits_) == 1:
                return self._one(partition, keys[0][1], limits_[0], now_ms, hit)
            return self._windows(partition, keys, limits_, now_ms, hit)
        finally:
            fcntl.lockf(table.fd, fcntl.LOCK_UN, 1, partition)

    def _load(self, partition: int, key: int, now: int, create: bool) -> tuple[int, list[int]]:
        """(offset, state) of a fixed or sliding window entry; a fresh state when it is new,
        expired or (offset -1) absent and not created."""
        offset, fresh = self.table.find(partition, key, now, create)
        if offset < 0 or fresh:
            return offset, [-2, 0, 0] if self._sliding else [0, 0]
        _, _, a, b, c, _ = SLOT.unpack_from(self.table.map, offset)
        return offset, [a, b, c] if self._sliding else [a, b]

    def _store(self, offset: int, key: int, state: list[int], limit: Limit) -> None:
        """Write a window state back (its expiry: when it no longer matters)."""
        if offset < 0:
            return
        if self._sliding:  # both windows are stale two periods after the current began
            expires = (state[0] + 2) * limit.period_ms
            SLOT.pack_into(self.table.map, offset, key, expires, state[0], state[1], state[2], 0)
        else:
            SLOT.pack_into(self.table.map, offset, key, state[1], state[0], state[1], 0, 0)

    def _one(self, partition: int, key: int, limit: Limit, now: int, hit: bool) -> Outcome:
        # The usual one-limit policy: `_windows` without its lists and loops.
        offset, state = self._load(partition, key, now, hit)
        prepare, count, report = self._steps
        admits = prepare(state, limit, now)
        if admits and hit:
            count(state, limit, now)
        remaining, reset = report(state, limit, now)
        self._store(offset, key, state, limit)
        return Outcome(admits, now, ((admits, remaining if remaining > 0 else 0, reset),))

    def _windows(
        self,
        partition: int,
        keys: list[tuple[int, int]],
        limits_: tuple[Limit, ...],
        now: int,
        hit: bool,
    ) -> Outcome:
        prepare, count, report = self._steps
        slots = [_Slots(*self._load(partition, key, now, hit)) for _, key in keys]
        verdicts = [prepare(s.state, limit, now) for s, limit in zip(slots, limits_, strict=True)]
        admitted = all(verdicts)
        if admitted and hit:
            for s, limit in zip(slots, limits_, strict=True):
                count(s.state, limit, now)
        result = []
        for index, (s, limit) in enumerate(zip(slots, limits_, strict=True)):
            remaining, reset = report(s.state, limit, now)
            result.append((verdicts[index], remaining if remaining > 0 else 0, reset))
            self._store(s.offset, keys[index][1], s.state, limit)
        return Outcome(admitted, now, tuple(result))

    # --- moving window: a ring of `amount` timestamps in chunk entries -----------------

    def _moving(
        self,
        partition: int,
        keys: list[tuple[int, int]],
        limits_: tuple[Limit, ...],
        now: int,
        hit: bool,
    ) -> Outcome:
        table, data = self.table, self.table.map
        heads = []
        verdicts = []
        for (_, key), limit in zip(keys, limits_, strict=True):
            offset, fresh = table.find(partition, key, now, create=hit)
            if offset < 0 or fresh:
                start, used, expires = 0, 0, 0
            else:
                _, expires, start, used, _, _ = SLOT.unpack_from(data, offset)
            horizon = now - limit.period_ms
            while used and self._stamp(partition, key, start, now) <= horizon:
                start = (start + 1) % limit.amount
                used -= 1
            heads.append([offset, start, used, expires])
            verdicts.append(used < limit.amount)
        admitted = all(verdicts)
        result = []
        for index, ((_, key), limit) in enumerate(zip(keys, limits_, strict=True)):
            offset, start, used, expires = heads[index]
            if admitted and hit:
                self._set_stamp(partition, key, (start + used) % limit.amount, now, limit)
                used += 1
                expires = now + limit.period_ms
            if used:
                reset = self._stamp(partition, key, start, now) + limit.period_ms - now
            else:
                reset = limit.period_ms
            result.append((verdicts[index], limit.amount - used, reset))
            if offset >= 0:
                SLOT.pack_into(data, offset, key, expires, start, used, 0, 0)
        return Outcome(admitted, now, tuple(result))

    @staticmethod
    def _chunk_key(key: int, chunk: int) -> int:
        return ((key ^ ((chunk + 1) * 0x9E3779B97F4A7C15)) & MASK) or 1

    def _stamp(self, partition: int, key: int, index: int, now: int) -> int:
        offset, fresh = self.table.find(partition, self._chunk_key(key, index // CHUNK), now, False)
        if offset < 0 or fresh:
            return 0  # lost (evicted) or long expired: counts as expired
        return SLOT.unpack_from(self.table.map, offset)[2 + index % CHUNK]

    def _set_stamp(self, partition: int, key: int, index: int, now: int, limit: Limit) -> None:
        data = self.table.map
        chunk_key = self._chunk_key(key, index // CHUNK)
        offset, fresh = self.table.find(partition, chunk_key, now, True)
        values = [0, 0, 0, 0] if fresh else list(SLOT.unpack_from(data, offset)[2:])
        values[index % CHUNK] = now
        SLOT.pack_into(data, offset, chunk_key, now + limit.period_ms, *values)

    # --- the rest of MemoryCounters' interface -------------------------------------------

    def release(self, subject: str, policy: Policy, at_ms: int) -> None:
        """Take back one request counted at `at_ms` (sliding-window-counter only), as
        `MemoryCounters.release`."""
        if self.strategy != "sliding-window-counter":
            return
        table, data = self.table, self.table.map
        for limit in policy.limits:
            partition, key = self._key(subject, limit)
            table.lock(partition)
            try:
                offset, fresh = table.find(partition, key, at_ms, create=False)
                if offset < 0 or fresh:
                    continue
                found, expires, index, current, previous, _ = SLOT.unpack_from(data, offset)
                window = at_ms // limit.period_ms
                if index == window and current > 0:
                    current -= 1
                elif index == window + 1 and previous > 0:
                    previous -= 1
                else:
                    continue
                SLOT.pack_into(data, offset, found, expires, index, current, previous, 0)
            finally:
                table.unlock(partition)

    def known(self, subject: str, policy: Policy) -> bool:
        """Whether `subject` may have counters (a lock-free peek; a miss skips the check)."""
        partition, key = self._key(subject, policy.limits[0])
        offset, _ = self.table.find(partition, key, 0, False)  # now=0: nothing is expired
        return offset >= 0

    def clear(self) -> None:
        """Forget every counter of every worker (tests)."""
        self.table.map[:] = bytes(self.table.size)

    def __len__(self) -> int:
        return self.table.used()
