"""What one gateway process shares, opened and closed with the app's lifespan.

`key_service(settings)` opens the configured store with the server secret (the CLI uses
just this); `Runtime` adds the key verifier and the other request-path resources.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

from gateway.keys.service import KeyService
from gateway.pipeline.identify import KeyVerifier
from gateway.pipeline.ratelimit import RateLimiter
from gateway.pipeline.spool import UsageSpool
from gateway.pipeline.usage import UsageRecorder
from gateway.secret import resolve_secret
from gateway.settings import Settings
from gateway.store.base import StoreOptions, open_store


def store_options(settings: Settings) -> StoreOptions:
    from gateway.store.redis_link import pool_size

    return StoreOptions(
        recent_per_key=settings.usage.recent_per_key,
        daily_retention_days=settings.usage.daily_retention_days,
        timeout=settings.storage.timeout,
        max_connections=pool_size(settings),
    )


async def open_key_service(settings: Settings) -> KeyService:
    """Open the configured store and check it was made with this server secret.

    Raises ConfigError (missing/mismatched secret) and StoreError (backend unreachable)."""
    secret = resolve_secret(settings)
    store = open_store(settings.storage.url, store_options(settings))
    await store.open()
    service = KeyService(
        store, secret, prefix=settings.keys.prefix, rotation_days=settings.keys.rotation_days
    )
    try:
        await service.check_secret()
    except BaseException:
        await store.close()
        raise
    return service


@contextlib.asynccontextmanager
async def key_service(settings: Settings) -> AsyncIterator[KeyService]:
    service = await open_key_service(settings)
    try:
        yield service
    finally:
        await service.store.close()


@dataclass(frozen=True, slots=True)
class Resources:
    """What the request path needs, opened together by `Runtime.start()` and returned whole."""

    service: KeyService
    verifier: KeyVerifier
    limiter: RateLimiter
    usage: UsageRecorder

    @classmethod
    async def open(cls, settings: Settings, clock: Callable[[], float] | None = None) -> Resources:
        service = await open_key_service(settings)
        try:
            limiter = RateLimiter.from_settings(settings, clock=clock)
        except BaseException:
            await service.store.close()
            raise
        verifier = KeyVerifier(service, cache_ttl=settings.keys.cache_ttl)
        verifier.attach()
        usage = UsageRecorder(
            service.store,
            flush_interval=settings.usage.flush_interval,
            spool=UsageSpool(settings.usage_spool_path()),
        )
        usage.start()
        return cls(service, verifier, limiter, usage)

    async def close(self) -> None:
        """Flush usage, then close the limiter and the store."""
        try:
            await self.usage.stop()
        finally:
            try:
                await self.limiter.close()
            finally:
                await self.service.store.close()


class NotStarted(RuntimeError):
    """A resource was asked for before `Runtime.start()` (or after `stop()`)."""


class Runtime:
    """The shared resources of one gateway process, opened and closed together.

    The store and key service, the key verifier (listening to the store's change events),
    the rate limiter and the usage recorder, as one `Resources` bundle. The server shares
    one Runtime between its listeners (each listener's `DecisionCore` keeps its own
    failed-attempt throttle); a mounted middleware opens its own.
    `clock` (epoch seconds) replaces the rate limiter's clock in tests.
    """

    def __init__(self, settings: Settings, *, clock: Callable[[], float] | None = None) -> None:
        self.settings = settings
        self.clock = clock
        self.bundle: Resources | None = None  # the one optional: None until started
        self._lock: asyncio.Lock | None = None

    @property
    def started(self) -> bool:
        return self.bundle is not None

    @property
    def resources(self) -> Resources:
        resources = self.bundle
        if resources is None:
            raise NotStarted("the gateway runtime is not started")
        return resources

    @property
    def service(self) -> KeyService:
        return self.resources.service

    @property
    def verifier(self) -> KeyVerifier:
        return self.resources.verifier

    @property
    def limiter(self) -> RateLimiter:
        return self.resources.limiter

    @property
    def usage(self) -> UsageRecorder:
        return self.resources.usage

    async def start(self) -> Resources:
        """Open everything (idempotent, safe to call concurrently); the bundle."""
        if self.bundle is not None:
            return self.bundle
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            if self.bundle is None:
                self.bundle = await Resources.open(self.settings, self.clock)
            return self.bundle

    async def stop(self) -> None:
        """Flush usage, then close the limiter and the store (idempotent)."""
        resources, self.bundle = self.bundle, None
        if resources is not None:
            await resources.close()
