"""The built-in echo upstream of `gateway demo`: answers every request with JSON describing
what it received, so a user sees exactly what the gateway forwards (and that the key is
not among it)."""

from __future__ import annotations

import json
from typing import Any

MAX_ECHOED_BODY = 4096


async def echo_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["type"] != "http":
        return
    size = 0
    head = bytearray()
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return
        chunk = message.get("body", b"")
        size += len(chunk)
        if len(head) < MAX_ECHOED_BODY:
            head += chunk[: MAX_ECHOED_BODY - len(head)]
        if not message.get("more_body", False):
            break
    answer = {
        "echo": "this is what the upstream received",
        "method": scope["method"],
        "path": scope["path"],
        "query": scope.get("query_string", b"").decode("latin-1"),
        "headers": {
            name.decode("latin-1"): value.decode("latin-1") for name, value in scope["headers"]
        },
        "bodyBytes": size,
        "body": head.decode("utf-8", "replace"),
    }
    body = json.dumps(answer, indent=2).encode() + b"\n"
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
