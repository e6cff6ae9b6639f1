"""`gateway keys revoke/rotate` in another process reaches a running middleware within 1 s
(SQLite; SPEC §1, §10). The delay is measured from the change's audit timestamp (taken
by the CLI process as it commits) to the first request the middleware refuses.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from gateway import GatewayMiddleware, Runtime, load_settings
from gateway.keys.model import KeyCreate

LIMIT_SECONDS = 1.0


async def ok(request: Request) -> PlainTextResponse:
    return PlainTextResponse("ok")


APP = Starlette(routes=[Route("/{path:path}", ok)])


async def _cli(sqlite_url: str, *args: str) -> tuple[int, str]:
    env = {**os.environ, "GATEWAY_STORAGE__URL": sqlite_url}
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        "import sys; from gateway.cli import main; sys.argv[0] = 'gateway'; main()",
        *args,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await proc.communicate()
    assert proc.returncode == 0, err.decode()
    return proc.returncode, out.decode()


async def _first_refusal(client: httpx.AsyncClient, value: str, code: str) -> float:
    """Poll with the value until the middleware refuses it with `code`; the wall time."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        response = await client.get("/x", headers={"X-API-Key": value})
        if response.status_code == 401:
            assert response.json()["error"]["code"] == code
            return time.time()
        assert response.status_code == 200
        await asyncio.sleep(0.005)
    raise AssertionError("the change never reached the middleware")


async def _run(sqlite_url: str, action: str) -> None:
    settings = load_settings(storage={"url": sqlite_url}, rate_limit={"default": "100000/minute"})
    runtime = Runtime(settings)
    await runtime.start()
    try:
        assert runtime.service is not None
        key, value = await runtime.service.create(KeyCreate(name="cli", scope="read"))
        app = GatewayMiddleware(APP, settings, runtime=runtime)
        transport = httpx.ASGITransport(app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gw") as client:
            assert (await client.get("/x", headers={"X-API-Key": value})).status_code == 200
            code = "KEY_REVOKED" if action == "revoke" else "INVALID_API_KEY"
            watcher = asyncio.create_task(_first_refusal(client, value, code))
            _, out = await _cli(sqlite_url, "keys", action, key.id, "--yes", "--json")
            refused_at = await watcher
            events = (await runtime.service.audit(key.id)).data
            changed_at = next(e.at for e in events if e.action == action)
            delay = refused_at - changed_at.timestamp()
            print(f"{action}: reached the middleware {delay * 1000:.0f} ms after the commit")
            assert delay < LIMIT_SECONDS
            if action == "rotate":
                new_value = json.loads(out)["secret"]
                response = await client.get("/x", headers={"X-API-Key": new_value})
                assert response.status_code == 200
    finally:
        await runtime.stop()


async def test_cli_revoke_reaches_the_middleware_within_a_second(sqlite_url: str) -> None:
    await _run(sqlite_url, "revoke")


async def test_cli_rotate_reaches_the_middleware_within_a_second(sqlite_url: str) -> None:
    await _run(sqlite_url, "rotate")
