"""What one gateway process shares, opened and closed with the app's lifespan.

`key_service(settings)` opens the configured store with the server secret (the CLI uses
just this); `Runtime` adds the key verifier and the other request-path resources.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable

from gateway.keys.service import KeyService
from gateway.pipeline.identify import FailedAttempts, KeyVerifier
from gateway.pipeline.ratelimit import RateLimiter
from gateway.pipeline.usage import UsageRecorder
from gateway.secret import resolve_secret
from gateway.settings import Settings
from gateway.store.base import StoreOptions, open_store


def store_options(settings: Settings) -> StoreOptions:
    return StoreOptions(
        recent_per_key=settings.usage.recent_per_key,
        daily_retention_days=settings.usage.daily_retention_days,
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


class Runtime:
    """The shared resources of one gateway process, opened and closed together.

    The store and key service, the key verifier (listening to the store's change events),
    the rate limiter, the failed-attempt throttle and the usage recorder. The proxy server
    shares one Runtime between its listeners; a mounted middleware opens its own.
    `clock` (epoch seconds) replaces the rate limiter's and throttle's clock in tests.
    """

    def __init__(self, settings: Settings, *, clock: Callable[[], float] | None = None) -> None:
        self.settings = settings
        self.clock = clock
        self.service: KeyService | None = None
        self.verifier: KeyVerifier | None = None
        self.limiter: RateLimiter | None = None
        self.throttle: FailedAttempts | None = None
        self.usage: UsageRecorder | None = None
        self._lock: asyncio.Lock | None = None

    @property
    def started(self) -> bool:
        return self.service is not None

    async def start(self) -> None:
        """Open everything (idempotent, safe to call concurrently)."""
        if self.service is not None:
            return
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            if self.service is not None:
                return
            settings = self.settings
            service = await open_key_service(settings)
            try:
                limiter = RateLimiter.from_settings(settings, clock=self.clock)
            except BaseException:
                await service.store.close()
                raise
            verifier = KeyVerifier(service, cache_ttl=settings.keys.cache_ttl)
            verifier.attach()
            usage = UsageRecorder(service.store, flush_interval=settings.usage.flush_interval)
            usage.start()
            self.throttle = FailedAttempts(
                settings.auth.failed_attempts_limit, clock=self.clock or time.time
            )
            self.verifier, self.limiter, self.usage = verifier, limiter, usage
            self.service = service

    async def stop(self) -> None:
        """Flush usage, then close the limiter and the store."""
        service = self.service
        if service is None:
            return
        self.service = None
        try:
            if self.usage is not None:
                await self.usage.stop()
        finally:
            try:
                if self.limiter is not None:
                    await self.limiter.close()
            finally:
                await service.store.close()
                self.verifier = self.limiter = self.usage = self.throttle = None
