"""The proxy listener: `ClientConnection`s on one socket, one upstream pool, graceful stop."""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
from typing import Any

from gateway.faces.proxy.client import ClientConnection
from gateway.faces.proxy.http import REQUEST_DROPPED
from gateway.faces.proxy.upstream import UpstreamPool
from gateway.settings import Settings

log = logging.getLogger("gateway.proxy")


def tls_context(cert: str, key: str) -> ssl.SSLContext:
    """The listener's TLS: TLS 1.2 and up, the certificate chain and key from PEM files."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(cert, key)
    context.set_alpn_protocols(["http/1.1"])
    return context


class Proxy:
    """What every client connection of the proxy listener shares, ready to use."""

    def __init__(self, settings: Settings, core: Any, loop: asyncio.AbstractEventLoop) -> None:
        from gateway.pipeline.identify import key_header_names

        server = settings.server
        self.settings = settings
        self.core = core
        self.loop = loop
        self.max_body = server.max_body_bytes
        self.max_header_bytes = server.max_header_bytes
        self.max_headers = server.max_headers
        self.header_timeout = server.header_timeout
        self.keepalive_timeout = server.keepalive_timeout
        self.pool = UpstreamPool(settings, loop)
        self.host_header = self.pool.target.host_header
        self.target_prefix = self.pool.target.prefix
        self.request_dropped = REQUEST_DROPPED | frozenset(key_header_names(settings.auth.headers))
        self.connections: set[ClientConnection] = set()
        self.ssl: ssl.SSLContext | None = None
        if server.tls_cert and server.tls_key:
            self.ssl = tls_context(server.tls_cert, server.tls_key)
        self.server: asyncio.Server | None = None
        self.force = False

    @property
    def scheme(self) -> str:
        return "https" if self.ssl is not None else "http"

    async def start(self, sock: socket.socket) -> None:
        """Listen on `sock` (already bound)."""
        self.server = await self.loop.create_server(
            lambda: ClientConnection(self), sock=sock, ssl=self.ssl, backlog=1024
        )

    def begin_stop(self, *, force: bool = False) -> None:
        """Stop accepting; idle connections close, busy ones after their answer. `force`:
        stop waiting for them too."""
        self.force = self.force or force
        if self.server is not None and self.server.is_serving():
            self.server.close()
        for connection in list(self.connections):
            connection.shutdown()

    async def stop(self, grace: float) -> None:
        """Stop accepting; let answers in progress finish (up to `grace` s); close all."""
        self.begin_stop()
        deadline = self.loop.time() + grace
        while self.connections and self.loop.time() < deadline and not self.force:
            await asyncio.sleep(0.02)
        for connection in list(self.connections):
            if connection.transport is not None:
                connection.transport.abort()
        self.pool.close()
        if self.server is not None:
            await self.server.wait_closed()
