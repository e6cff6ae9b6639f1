"""Identify the key of a request: extract it from the headers, check its shape offline,
then verify it from an in-process cache or the store (SPEC §2, §3 step 2, §13).

The cache maps a value's HMAC digest to what the store said about it. Every change the
store reports drops that key's entries, so revoke, rotate and edit apply from the very
next request; `cache_ttl` bounds how long an entry may live if an event was missed.
Malformed and unknown values are never cached, so they cannot grow it.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from datetime import UTC, datetime

from gateway import metrics
from gateway.errors import GatewayError, invalid_request
from gateway.keys.format import is_well_formed, key_length
from gateway.keys.model import ApiKey, Status
from gateway.keys.service import KeyService
from gateway.store.base import ALL_KEYS, DigestMatch, StoreError

BEARER = b"bearer "


def key_header_names(names: Iterable[str]) -> tuple[bytes, ...]:
    """The configured key headers as lower-case bytes, the form ASGI headers come in."""
    return tuple(name.lower().encode("latin-1") for name in names)


def extract_key(headers: Iterable[tuple[bytes, bytes]], names: tuple[bytes, ...]) -> str | None:
    """The key a request presents, or None. Different values in key headers → 400.

    `Authorization` counts only with the Bearer scheme; other headers carry the bare
    value. The query string is never looked at.
    """
    found: str | None = None
    for name, raw in headers:
        if name not in names:
            continue
        if name == b"authorization":
            if raw[:7].lower() != BEARER:
                continue
            raw = raw[7:]
        value = raw.strip().decode("latin-1")
        if not value:
            continue
        if found is not None and value != found:
            raise invalid_request(
                "Authorization",
                "the request carries different API keys in its key headers",
                "The request carries two different API keys.",
            )
        found = value
    return found


class _Entry:
    __slots__ = ("good_until", "key_id", "loaded", "match")

    def __init__(self, match: DigestMatch, loaded: float) -> None:
        self.match = match
        self.key_id = match.key.id
        self.loaded = loaded
        # Epoch seconds until which this value is simply valid (active, unexpired, not
        # past a rotation grace period): the hot path compares one float.
        key = match.key
        if key.status is not Status.ACTIVE:
            self.good_until = float("-inf")
        else:
            ends = [t.timestamp() for t in (match.expires_at, key.expires_at) if t is not None]
            self.good_until = min(ends, default=float("inf"))


class KeyVerifier:
    """Verifies presented values; one per process, shared by the proxy and the admin API."""

    def __init__(
        self,
        service: KeyService,
        *,
        cache_ttl: float = 60.0,
        max_entries: int = 100_000,
        monotonic: Callable[[], float] = time.monotonic,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.service = service
        self.prefix = service.prefix
        self.length = key_length(self.prefix)
        self.cache_ttl = cache_ttl
        self.max_entries = max_entries
        self.monotonic = monotonic
        self.clock = clock
        self._cache: OrderedDict[str, _Entry] = OrderedDict()
        # Bumped by every invalidation: a lookup that raced one is not cached.
        self._generation = 0
        self._pending: dict[str, tuple[asyncio.Future[DigestMatch | None], int]] = {}

    def attach(self) -> None:
        """Start listening to the store's change events (call from the running loop)."""
        self.service.store.add_listener(self.invalidate)

    def invalidate(self, key_id: str) -> None:
        self._generation += 1
        if key_id == ALL_KEYS:
            self._cache.clear()
            return
        stale = [digest for digest, entry in self._cache.items() if entry.key_id == key_id]
        for digest in stale:
            del self._cache[digest]

    def __len__(self) -> int:
        return len(self._cache)

    def cached(self, value: str) -> ApiKey | None:
        """The key of `value` if the cache alone proves it valid now (no lookup), else None.

        The hot path — a known, valid key — looks in the cache before checking the shape:
        only digests of well-formed values are ever cached, so a hit proves the shape
        (HMAC collisions aside). The length test keeps the HMAC's input bounded."""
        if len(value) != self.length:
            return None
        entry = self._cache.get(self.service.digest(value))
        if (
            entry is not None
            and self.clock() < entry.good_until
            and self.monotonic() - entry.loaded < self.cache_ttl
        ):
            metrics.TALLY.cache_hits += 1
            return entry.match.key
        return None

    def in_flight(self, value: str) -> bool:
        """Whether a store lookup of `value` is already under way (a request joining it
        causes no lookup of its own)."""
        if len(value) != self.length:
            return False
        shared = self._pending.get(self.service.digest(value))
        return shared is not None and shared[1] == self._generation

    async def verify(self, value: str) -> ApiKey:
        """The active, unexpired key `value` belongs to; else GatewayError (401 / 503)."""
        key = self.cached(value)
        if key is not None:
            return key
        digest = self.service.digest(value) if len(value) == self.length else None
        if digest is None or not is_well_formed(value, self.prefix):
            raise GatewayError("INVALID_API_KEY")
        match = await self._match(digest)
        now = datetime.fromtimestamp(self.clock(), UTC)
        if match is None or not match.valid_at(now):
            raise GatewayError("INVALID_API_KEY")
        key = match.key
        if key.status is Status.REVOKED:
            raise GatewayError("KEY_REVOKED")
        if key.expires_at is not None and now >= key.expires_at:
            raise GatewayError("KEY_EXPIRED")
        return key

    def _lookup_done(self, digest: str, done: asyncio.Future[DigestMatch | None]) -> None:
        shared = self._pending.get(digest)
        if shared is not None and shared[0] is done:
            del self._pending[digest]
        if not done.cancelled():
            done.exception()  # retrieved: every waiter may have gone

    async def _match(self, digest: str) -> DigestMatch | None:
        entry = self._cache.get(digest)
        now = self.monotonic()
        if entry is not None and now - entry.loaded < self.cache_ttl:
            metrics.TALLY.cache_hits += 1
            return entry.match
        metrics.TALLY.cache_misses += 1
        # One lookup per digest at a time: N concurrent requests with a key not yet cached
        # share one store round trip (a burst on a fresh key is one lookup, not N).
        # A lookup started before an invalidation is not joined (it may be stale).
        generation = self._generation
        shared = self._pending.get(digest)
        if shared is None or shared[1] != generation:
            future = asyncio.ensure_future(self.service.store.lookup_digest(digest))
            shared = self._pending[digest] = (future, generation)
            future.add_done_callback(lambda done: self._lookup_done(digest, done))
        try:
            match = await asyncio.shield(shared[0])
        except StoreError:
            metrics.BACKEND_ERRORS.labels("store").inc()
            if entry is not None:
                return entry.match  # fail-soft: a key we knew keeps working
            raise GatewayError("SERVICE_UNAVAILABLE", "The key store is unavailable.") from None
        if match is None:
            self._cache.pop(digest, None)
            return None
        if self.cache_ttl > 0 and generation == self._generation:
            self._cache[digest] = _Entry(match, now)
            self._cache.move_to_end(digest)
            while len(self._cache) > self.max_entries:
                self._cache.popitem(last=False)
        return match
