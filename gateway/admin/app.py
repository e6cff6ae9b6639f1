"""The admin listener's ASGI app: the admin API, health, metrics and the dashboard (SPEC §9).

`gateway serve` builds it with the `Runtime` it manages; tests and embedders pass
`manage_runtime=True` so the app's lifespan starts and stops the runtime itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

from prometheus_client import CONTENT_TYPE_LATEST
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Mount, Route, Router
from starlette.staticfiles import StaticFiles
from starlette.types import Receive, Scope, Send

from gateway import metrics
from gateway.admin.api import API_PREFIX, api_routes
from gateway.admin.auth import AdminGuard, request_id_of
from gateway.admin.openapi import openapi_document
from gateway.admin.routes import ROUTES, bind
from gateway.errors import GatewayError
from gateway.pipeline.core import DecisionCore, render_error
from gateway.runtime import Runtime

log = logging.getLogger("gateway.admin")
DASHBOARD_DIR = Path(__file__).parent / "dashboard"
READY_TIMEOUT = 2.0


async def healthz(request: Request) -> Response:
    return JSONResponse({"status": "ok"})


async def metrics_text(request: Request) -> Response:
    return Response(metrics.exposition(), media_type=CONTENT_TYPE_LATEST)


def _readyz(runtime: Runtime) -> Callable[[Request], Awaitable[Response]]:
    async def readyz(request: Request) -> Response:
        resources = runtime.bundle
        if resources is None:
            raise GatewayError("SERVICE_UNAVAILABLE", "The gateway is not running.")
        try:
            await asyncio.wait_for(resources.service.store.ping(), READY_TIMEOUT)
        except Exception:  # whatever the backend raised, it is not ready
            log.warning("readiness check failed: the key store did not answer", exc_info=True)
            metrics.BACKEND_ERRORS.labels("store").inc()
            raise GatewayError("SERVICE_UNAVAILABLE", "The key store is unavailable.") from None
        return JSONResponse({"status": "ready"})

    return readyz


class _NotFound:
    """A raw ASGI endpoint (so Route takes every method) that is always 404."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        raise GatewayError("NOT_FOUND")


def error_from_http(exc: HTTPException) -> GatewayError:
    """Starlette's routing and static-file errors as the gateway's envelope."""
    if exc.status_code == 405:
        return GatewayError("METHOD_NOT_ALLOWED", headers=dict(exc.headers or {}))
    if exc.status_code in (401, 403, 404):  # a missing or unreadable static file
        return GatewayError("NOT_FOUND")
    return GatewayError("INVALID_REQUEST", status=exc.status_code)


async def _http_exception(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    status, headers, body = render_error(error_from_http(exc), request_id_of(request.scope))
    response = Response(body, status_code=status)
    response.raw_headers = headers
    return response


def create_admin_app(runtime: Runtime, *, manage_runtime: bool = False) -> Starlette:
    """The admin app over `runtime`; with `manage_runtime` its lifespan starts/stops it."""
    document = openapi_document(runtime.settings)

    async def openapi_json(request: Request) -> Response:
        return JSONResponse(document)

    # The operations outside /v1, from the route table (so they are in the document).
    ops = {"health": healthz, "ready": _readyz(runtime), "metrics": metrics_text}
    outside = [op for op in ROUTES if not op.path.startswith(API_PREFIX + "/")]
    bind(outside, ops)  # a handler for each entry, and none the table does not name
    routes: list[BaseRoute] = [
        *(Route(op.path, ops[op.operation_id], methods=[op.method]) for op in outside),
        # The document itself, the one route it does not describe.
        Route("/openapi.json", openapi_json, methods=["GET"]),
        # No slash redirects under /v1: an unknown path is a plain 404 envelope.
        Mount(API_PREFIX, app=Router(api_routes(runtime), redirect_slashes=False)),
        Route("/v1", _NotFound()),  # any method: not a route (instead of a static 405)
    ]
    if DASHBOARD_DIR.is_dir():
        # Last: everything not matched above is a dashboard file (or a 404 envelope).
        routes.append(Mount("/", app=StaticFiles(directory=DASHBOARD_DIR, html=True)))

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        if manage_runtime:
            await runtime.start()
        try:
            yield
        finally:
            if manage_runtime:
                await runtime.stop()

    # The admin listener's own decision core: its own failed-attempt counter (SPEC §4).
    core = DecisionCore.for_listener(runtime.settings, "admin", runtime=runtime)
    return Starlette(
        routes=routes,
        middleware=[Middleware(AdminGuard, core=core)],
        exception_handlers={HTTPException: _http_exception},
        lifespan=lifespan,
    )
