"""What one gateway process shares, opened and closed with the app's lifespan.

`key_service(settings)` opens the configured store with the server secret (the CLI uses
just this); `Runtime` adds the key verifier and the other request-path resources.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from gateway.keys.service import KeyService
from gateway.pipeline.identify import KeyVerifier
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
    """The shared resources of one gateway process: store, key service, verifier."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.service: KeyService | None = None
        self.verifier: KeyVerifier | None = None

    async def start(self) -> None:
        if self.service is not None:
            return
        service = await open_key_service(self.settings)
        self.verifier = KeyVerifier(service, cache_ttl=self.settings.keys.cache_ttl)
        self.verifier.attach()
        self.service = service

    async def stop(self) -> None:
        if self.service is None:
            return
        await self.service.store.close()
        self.service = None
        self.verifier = None
