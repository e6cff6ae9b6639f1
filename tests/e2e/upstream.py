"""A small real upstream for end-to-end tests, run as its own process:

    python tests/e2e/upstream.py PORT

It is built on aiohttp.web — a different HTTP server from the gateway's uvicorn — and
answers:
- any path: JSON of what it received (method, path, query, headers as a list of pairs,
  body length and SHA-256 of the body, read as a stream);
- `/slow?seconds=S`: the same after S seconds (tracks requests in flight);
- `/stream?id=I&chunks=N&size=B&delay=S`: N chunks of B bytes, S seconds apart; records
  whether the client stayed (`/_state?id=I` answers `{"state": "done"|"disconnected"|...}`);
- `/big?bytes=N`: N bytes of body, streamed in 64 KiB pieces with Content-Length;
- `/echo-body`: the request body streamed straight back;
- `/redirect`: 302 to /elsewhere; `/status/CODE`: an empty answer with that status;
- `/get-only`: GET only (anything else is aiohttp's own 405);
- `/gzip`: a gzip-encoded body with Content-Encoding: gzip;
- `/set-cookie`: sets a cookie; `/reset`: drops the connection without answering;
- `/_state?id=I`, `/_inflight`: what the test needs to poll.
"""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import json
import sys

from aiohttp import web

STATES: dict[str, str] = {}
INFLIGHT = {"count": 0, "seen": 0}


async def echo(request: web.Request) -> web.Response:
    digest = hashlib.sha256()
    size = 0
    async for chunk in request.content.iter_any():
        digest.update(chunk)
        size += len(chunk)
    return web.json_response(
        {
            "method": request.method,
            "path": request.raw_path.split("?", 1)[0],
            "query": request.query_string,
            "headers": [[k, v] for k, v in request.raw_headers_decoded()],
            "bodyLength": size,
            "bodySha256": digest.hexdigest(),
            "chunked": request.headers.get("Transfer-Encoding", "").lower() == "chunked",
        }
    )


def _raw_headers_decoded(self: web.Request) -> list[tuple[str, str]]:
    return [(k.decode("latin-1"), v.decode("latin-1")) for k, v in self.raw_headers]


web.Request.raw_headers_decoded = _raw_headers_decoded  # type: ignore[attr-defined]


async def slow(request: web.Request) -> web.Response:
    INFLIGHT["count"] += 1
    INFLIGHT["seen"] += 1
    try:
        await asyncio.sleep(float(request.query.get("seconds", "1")))
        return await echo(request)
    finally:
        INFLIGHT["count"] -= 1


async def stream(request: web.Request) -> web.StreamResponse:
    ident = request.query.get("id", "")
    chunks = int(request.query.get("chunks", "10"))
    size = int(request.query.get("size", "1024"))
    delay = float(request.query.get("delay", "0.05"))
    response = web.StreamResponse()
    response.content_type = "application/octet-stream"
    await response.prepare(request)
    STATES[ident] = "streaming"
    try:
        for _ in range(chunks):
            await response.write(b"x" * size)
            await asyncio.sleep(delay)
        await response.write_eof()
    except (ConnectionError, asyncio.CancelledError):
        STATES[ident] = "disconnected"
        raise
    STATES[ident] = "done"
    return response


async def big(request: web.Request) -> web.StreamResponse:
    total = int(request.query.get("bytes", "0"))
    response = web.StreamResponse()
    response.content_type = "application/octet-stream"
    response.content_length = total
    await response.prepare(request)
    piece = b"b" * 65536
    left = total
    while left > 0:
        n = min(left, len(piece))
        await response.write(piece[:n])
        left -= n
    await response.write_eof()
    return response


async def echo_body(request: web.Request) -> web.StreamResponse:
    ident = request.query.get("id", "")
    response = web.StreamResponse()
    response.content_type = "application/octet-stream"
    await response.prepare(request)
    STATES[ident] = "streaming"
    try:
        async for chunk in request.content.iter_any():
            await response.write(chunk)
        await response.write_eof()
    except BaseException:  # reset, cancelled, or a payload error: the gateway went away
        STATES[ident] = "disconnected"
        raise
    STATES[ident] = "done"
    return response


async def redirect(request: web.Request) -> web.Response:
    return web.Response(status=302, headers={"Location": "/elsewhere"}, text="moved")


async def status(request: web.Request) -> web.Response:
    return web.Response(status=int(request.match_info["code"]), text="from upstream")


async def get_only(request: web.Request) -> web.Response:
    return web.Response(text="get only")


async def gzipped(request: web.Request) -> web.Response:
    body = gzip.compress(b"hello compressed world" * 10)
    return web.Response(
        body=body, headers={"Content-Encoding": "gzip", "Content-Type": "text/plain"}
    )


async def set_cookie(request: web.Request) -> web.Response:
    response = web.Response(text="cookie set")
    response.set_cookie("session", "upstream-cookie-value")
    return response


async def reset(request: web.Request) -> web.Response:
    assert request.transport is not None
    request.transport.abort()
    raise asyncio.CancelledError


async def state(request: web.Request) -> web.Response:
    return web.json_response({"state": STATES.get(request.query.get("id", ""), "unknown")})


async def inflight(request: web.Request) -> web.Response:
    return web.json_response(INFLIGHT)


def make_app() -> web.Application:
    app = web.Application(client_max_size=1024**3)
    app.router.add_route("*", "/slow", slow)
    app.router.add_get("/stream", stream)
    app.router.add_get("/big", big)
    app.router.add_route("*", "/echo-body", echo_body)
    app.router.add_route("*", "/redirect", redirect)
    app.router.add_route("*", r"/status/{code:\d+}", status)
    app.router.add_get("/get-only", get_only)
    app.router.add_get("/gzip", gzipped)
    app.router.add_get("/set-cookie", set_cookie)
    app.router.add_route("*", "/reset", reset)
    app.router.add_get("/_state", state)
    app.router.add_get("/_inflight", inflight)
    app.router.add_route("*", r"/{tail:(?!get-only$).*}", echo)
    return app


if __name__ == "__main__":
    print(json.dumps({"port": int(sys.argv[1])}), flush=True)
    web.run_app(make_app(), host="127.0.0.1", port=int(sys.argv[1]), print=None, access_log=None)
