"""The `/v1` routes of the admin API (SPEC §9).

Each handler reads and validates its input strictly, calls `KeyService` with the admin
key's id as the actor and the request id, and answers with a body from
`gateway.keys.render`. Authentication has already happened (`AdminGuard`).
"""

from __future__ import annotations

import json
import logging
import re
from typing import Any

from pydantic import BaseModel, ConfigDict
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from gateway.admin.auth import admin_key_of, request_id_of
from gateway.admin.routes import Handler, bind, operations_under
from gateway.errors import GatewayError, invalid_request, payload_too_large
from gateway.keys import render
from gateway.keys.model import KeyCreate, KeyEdit, KeyRotate, Status, parse_body
from gateway.keys.service import MAX_PAGE, KeyService, check_cursor
from gateway.runtime import Runtime
from gateway.store.presence import wait_applied

log = logging.getLogger("gateway")

MAX_BODY_BYTES = 64 * 1024
DEFAULT_PAGE = 50
STATUS_FILTERS = {"all": None, "active": Status.ACTIVE, "revoked": Status.REVOKED}
_DIGITS = re.compile(r"[0-9]{1,9}")
NO_STORE = {"Cache-Control": "no-store"}

API_PREFIX = "/v1"


class EmptyBody(BaseModel):
    """The only body revoke and delete accept besides none at all: `{}`."""

    model_config = ConfigDict(extra="forbid")


# --- reading requests --------------------------------------------------------------------


async def read_body(request: Request) -> bytes:
    """The request body, refusing (413) more than 64 KiB before and while reading it."""
    declared = request.headers.get("content-length")
    if declared is not None:
        text = declared.strip()
        if not (text.isascii() and text.isdigit()):
            raise invalid_request("Content-Length", "must be a number of bytes")
        if len(text) > 12 or int(text) > MAX_BODY_BYTES:
            raise too_large()
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise too_large()
        chunks.append(chunk)
    return b"".join(chunks)


def too_large() -> GatewayError:
    return payload_too_large(MAX_BODY_BYTES)


class _DuplicateName(Exception):
    def __init__(self, name: str) -> None:
        self.name = name


def _no_duplicate_names(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """A JSON object, refusing a name given twice: which value would win is ambiguous."""
    data = dict(pairs)
    if len(data) != len(pairs):
        seen: set[str] = set()
        for name, _ in pairs:
            if name in seen:
                raise _DuplicateName(name)
            seen.add(name)
    return data


def parse_json(raw: bytes) -> Any:
    try:
        return json.loads(raw, object_pairs_hook=_no_duplicate_names)
    except _DuplicateName as dup:
        raise invalid_request(dup.name[:64], "is given more than once") from None
    except (ValueError, RecursionError):
        raise invalid_request("body", "must be a JSON object") from None


NO_BODY: Any = object()


async def optional_json(request: Request) -> Any:
    """The JSON body, or NO_BODY when the request has none at all (JSON null is a body)."""
    raw = await read_body(request)
    if not raw.strip():
        return NO_BODY
    return parse_json(raw)


def query_value(request: Request, name: str) -> str | None:
    values = request.query_params.getlist(name)
    if len(values) > 1:
        raise invalid_request(name, "must be given at most once")
    return values[0] if values else None


def query_limit(request: Request) -> int:
    text = query_value(request, "limit")
    if text is None:
        return DEFAULT_PAGE
    if not _DIGITS.fullmatch(text) or not 1 <= int(text) <= MAX_PAGE:
        raise invalid_request("limit", f"must be an integer between 1 and {MAX_PAGE}")
    return int(text)


def query_cursor(request: Request, name: str = "cursor") -> str | None:
    text = query_value(request, name)
    if text is not None:
        check_cursor(text, name)  # 400 naming the field, whatever the store
    return text


def query_status(request: Request) -> Status | None:
    text = query_value(request, "status")
    if text is None:
        return None
    if text not in STATUS_FILTERS:
        raise invalid_request("status", "must be one of active, revoked, all")
    return STATUS_FILTERS[text]


def query_key_id(request: Request) -> str | None:
    return query_value(request, "keyId")


# --- responses ---------------------------------------------------------------------------


def json_response(body: dict[str, Any], status: int = 200) -> Response:
    return JSONResponse(body, status_code=status, headers=NO_STORE)


# --- the routes --------------------------------------------------------------------------


def api_routes(runtime: Runtime) -> list[Route]:
    """The /v1 routes of the route table (`gateway.admin.routes`), relative to the /v1
    mount. One Route per path, so a wrong method gets 405 with the full `Allow` list of
    that path."""

    def service() -> KeyService:
        resources = runtime.bundle
        if resources is None:
            raise GatewayError("SERVICE_UNAVAILABLE", "The gateway is not running.")
        return resources.service

    async def reach_gateways(svc: KeyService) -> None:
        """After a change: wait (at most 1 s) until every other running gateway on the store
        has applied it, so the dashboard's "from the very next request" holds on every
        worker and replica; name on the log any that has not."""
        behind = await wait_applied(svc.store)
        if behind:
            log.warning(
                "key change saved, but not yet applied by %d running gateway(s): %s",
                len(behind),
                "; ".join(f"{g.label} (gateway {g.id})" for g in behind),
            )

    def who(request: Request) -> dict[str, str]:
        return {"actor": admin_key_of(request.scope).id, "request_id": request_id_of(request.scope)}

    async def create_key(request: Request) -> Response:
        body = parse_body(KeyCreate, parse_json(await read_body(request)))
        svc = service()
        key, key_value = await svc.create(body, **who(request))
        return json_response(render.key_value_body(key, key_value, svc.rotation_days), 201)

    async def list_keys(request: Request) -> Response:
        status, limit = query_status(request), query_limit(request)
        cursor = query_cursor(request)
        svc = service()
        page = await svc.list(status, limit, cursor)
        return json_response(render.key_list_body(page, svc.rotation_days))

    async def get_key(request: Request) -> Response:
        svc = service()
        key, summary = await svc.details(request.path_params["id"])
        return json_response(render.details_body(key, summary, svc.rotation_days))

    async def key_usage(request: Request) -> Response:
        limit, before = query_limit(request), query_cursor(request, "before")
        page = await service().usage(request.path_params["id"], limit, before)
        return json_response(render.usage_list_body(page))

    async def edit_key(request: Request) -> Response:
        body = parse_body(KeyEdit, parse_json(await read_body(request)))
        svc = service()
        key = await svc.edit(request.path_params["id"], body, **who(request))
        await reach_gateways(svc)
        return json_response(render.key_body(key, svc.rotation_days))

    async def rotate_key(request: Request) -> Response:
        data = await optional_json(request)
        body = KeyRotate() if data is NO_BODY else parse_body(KeyRotate, data)
        svc = service()
        key, key_value = await svc.rotate(request.path_params["id"], body, **who(request))
        await reach_gateways(svc)
        return json_response(render.key_value_body(key, key_value, svc.rotation_days))

    async def revoke_key(request: Request) -> Response:
        await no_body(request)
        svc = service()
        key = await svc.revoke(request.path_params["id"], **who(request))
        await reach_gateways(svc)
        return json_response(render.key_body(key, svc.rotation_days))

    async def delete_key(request: Request) -> Response:
        await no_body(request)
        svc = service()
        await svc.delete(request.path_params["id"], **who(request))
        await reach_gateways(svc)
        return Response(status_code=204, headers=NO_STORE)

    async def list_audit(request: Request) -> Response:
        key_id, limit = query_key_id(request), query_limit(request)
        cursor = query_cursor(request)
        page = await service().audit(key_id, limit, cursor)
        return json_response(render.audit_list_body(page))

    handlers: dict[str, Handler] = {
        "listKeys": list_keys,
        "createKey": create_key,
        "getKey": get_key,
        "editKey": edit_key,
        "deleteKey": delete_key,
        "listKeyUsage": key_usage,
        "rotateKey": rotate_key,
        "revokeKey": revoke_key,
        "listAudit": list_audit,
    }
    paths = bind(operations_under(API_PREFIX), handlers)
    return [_route(path.removeprefix(API_PREFIX), **methods) for path, methods in paths.items()]


async def no_body(request: Request) -> None:
    """Actions without input accept no body or `{}`; anything else is a mistake → 400."""
    data = await optional_json(request)
    if data is not NO_BODY:
        parse_body(EmptyBody, data)


def _route(path: str, **handlers: Handler) -> Route:
    async def dispatch(request: Request) -> Response:
        method = "GET" if request.method == "HEAD" else request.method
        return await handlers[method](request)

    return Route(path, dispatch, methods=list(handlers))
