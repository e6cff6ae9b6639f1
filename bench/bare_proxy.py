"""The baseline of bench 2: a bare pass-through proxy on the same stack as `gateway serve`
(uvicorn + httptools + uvloop, one pooled aiohttp client), doing only what any proxy must
(stream the request and the answer, drop hop-by-hop headers) and nothing the gateway adds.

    python bench/bare_proxy.py PORT UPSTREAM_URL
"""

from __future__ import annotations

import sys
from typing import Any

import aiohttp
import uvicorn
from yarl import URL

HOP = frozenset({b"connection", b"keep-alive", b"transfer-encoding", b"host", b"te", b"upgrade"})


class BareProxy:
    def __init__(self, upstream: str) -> None:
        self.upstream = upstream.rstrip("/")
        self.session: aiohttp.ClientSession | None = None

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    self.session = aiohttp.ClientSession(
                        connector=aiohttp.TCPConnector(limit=100),
                        auto_decompress=False,
                        cookie_jar=aiohttp.DummyCookieJar(),
                        skip_auto_headers=("Accept", "Accept-Encoding", "User-Agent"),
                    )
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    assert self.session is not None
                    await self.session.close()
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["type"] != "http":
            return
        message = await receive()
        body = message.get("body", b"")
        headers = [
            (n.decode("latin-1"), v.decode("latin-1")) for n, v in scope["headers"] if n not in HOP
        ]
        url = self.upstream + scope["raw_path"].decode("latin-1")
        if scope["query_string"]:
            url += "?" + scope["query_string"].decode("latin-1")
        assert self.session is not None
        async with self.session.request(
            scope["method"],
            URL(url, encoded=True),
            headers=headers,
            data=body or None,
            allow_redirects=False,
        ) as response:
            await send(
                {
                    "type": "http.response.start",
                    "status": response.status,
                    "headers": [(n, v) for n, v in response.raw_headers if n.lower() not in HOP],
                }
            )
            async for chunk in response.content.iter_any():
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b""})


if __name__ == "__main__":
    uvicorn.run(
        BareProxy(sys.argv[2]),
        host="127.0.0.1",
        port=int(sys.argv[1]),
        loop="uvloop",
        http="httptools",
        access_log=False,
        log_level="warning",
        proxy_headers=False,
        server_header=False,
        date_header=False,
    )
