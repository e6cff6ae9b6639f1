"""Who may call the admin API: every credential × every route × every method (SPEC §9).

Only an active, unexpired `admin` key gets past the door; everyone else gets the same
401/403 on every path (known or not) and every method (known or not), and changes nothing.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from tests.integration import admin_fixtures
from tests.integration.admin_fixtures import Admin, assert_error, running_admin

admin = admin_fixtures.admin

METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "PURGE"]

# path template → the methods it supports; None: not a route at all.
ROUTES: dict[str, set[str] | None] = {
    "/v1/keys": {"GET", "HEAD", "POST"},
    "/v1/keys/{id}": {"GET", "HEAD", "PATCH", "DELETE"},
    "/v1/keys/{id}/usage": {"GET", "HEAD"},
    "/v1/keys/{id}/rotate": {"POST"},
    "/v1/keys/{id}/revoke": {"POST"},
    "/v1/audit": {"GET", "HEAD"},
    "/v1": None,
    "/v1/": None,
    "/v1/unknown": None,
    "/v1/keys/{id}/unknown": None,
}

Credential = Callable[[Admin], Awaitable[dict[str, str]]]


async def _no_key(admin: Admin) -> dict[str, str]:
    return {}


async def _empty_header(admin: Admin) -> dict[str, str]:
    return {"X-API-Key": "", "Authorization": "Bearer "}


async def _basic_auth(admin: Admin) -> dict[str, str]:
    return {"Authorization": f"Basic {admin.secret}"}  # only Bearer counts


async def _malformed(admin: Admin) -> dict[str, str]:
    return {"X-API-Key": "gw_not-a-key"}


async def _unknown(admin: Admin) -> dict[str, str]:
    # Well formed, right checksum, never issued.
    from gateway.keys.format import generate_key

    return {"X-API-Key": generate_key(admin.service.prefix)}


async def _read(admin: Admin) -> dict[str, str]:
    return {"X-API-Key": (await admin.new_key("read"))[1]}


async def _write(admin: Admin) -> dict[str, str]:
    return {"Authorization": f"Bearer {(await admin.new_key('write'))[1]}"}


async def _revoked_admin(admin: Admin) -> dict[str, str]:
    key, secret = await admin.new_key("admin")
    await admin.service.revoke(key.id)
    return {"X-API-Key": secret}


async def _expired_admin(admin: Admin) -> dict[str, str]:
    return {"X-API-Key": (await admin.expired_key())[1]}


async def _rotated_admin(admin: Admin) -> dict[str, str]:
    key, secret = await admin.new_key("admin")
    await admin.service.rotate(key.id)
    return {"X-API-Key": secret}


# credential → (status, code) it must get on every /v1 request.
DENIED: dict[str, tuple[Credential, int, str]] = {
    "no key": (_no_key, 401, "MISSING_API_KEY"),
    "empty headers": (_empty_header, 401, "MISSING_API_KEY"),
    "basic auth": (_basic_auth, 401, "MISSING_API_KEY"),
    "malformed key": (_malformed, 401, "INVALID_API_KEY"),
    "unknown key": (_unknown, 401, "INVALID_API_KEY"),
    "rotated-out admin key": (_rotated_admin, 401, "INVALID_API_KEY"),
    "revoked admin key": (_revoked_admin, 401, "KEY_REVOKED"),
    "expired admin key": (_expired_admin, 401, "KEY_EXPIRED"),
    "read key": (_read, 403, "INSUFFICIENT_SCOPE"),
    "write key": (_write, 403, "INSUFFICIENT_SCOPE"),
}


async def _paths(admin: Admin) -> dict[str, set[str] | None]:
    target, _ = await admin.new_key("read")
    return {path.replace("{id}", target.id): methods for path, methods in ROUTES.items()}


@pytest.mark.parametrize("credential", list(DENIED))
async def test_every_route_and_method_refuses_a_non_admin_caller(
    admin: Admin, credential: str
) -> None:
    make, status, code = DENIED[credential]
    paths = await _paths(admin)
    headers = await make(admin)
    before = await admin.snapshot()
    wrong: list[str] = []
    for path, _methods in paths.items():
        for method in METHODS:
            response = await admin.client.request(
                method, path, headers={"X-API-Key": "", **headers}, json={"name": "x"}
            )
            if response.status_code != status:
                wrong.append(f"{method} {path}: {response.status_code} {response.text[:120]}")
                continue
            if method == "HEAD":
                assert response.content == b""
                continue
            error = assert_error(response, status, code)
            if status == 401:
                assert response.headers["www-authenticate"] == 'Bearer realm="gateway"'
            if code == "INSUFFICIENT_SCOPE":
                assert error["details"]["required"] == "admin"
                assert error["details"]["granted"] in ("read", "write")
    assert not wrong, "\n".join(wrong)
    assert await admin.snapshot() == before


async def test_an_admin_key_reaches_every_route_and_gets_405_or_404_otherwise(
    admin: Admin,
) -> None:
    paths = await _paths(admin)
    wrong: list[str] = []
    for via in ("X-API-Key", "Authorization"):
        value = admin.secret if via == "X-API-Key" else f"Bearer {admin.secret}"
        for path, methods in paths.items():
            for method in METHODS:
                response = await admin.client.request(
                    method, path, headers={"X-API-Key": "", via: value}
                )
                got = response.status_code
                if got in (401, 403, 500):
                    wrong.append(f"{method} {path} via {via}: {got}")
                elif methods is None and got != 404:
                    wrong.append(f"{method} {path}: {got}, expected 404")
                elif methods is not None and method not in methods:
                    if got != 405:
                        wrong.append(f"{method} {path}: {got}, expected 405")
                    elif set(response.headers["allow"].replace(" ", "").split(",")) != methods:
                        wrong.append(f"{method} {path}: Allow {response.headers['allow']}")
                elif methods is not None and got == 405:
                    wrong.append(f"{method} {path}: 405 on a supported method")
    assert not wrong, "\n".join(wrong)


async def test_public_routes_need_no_key(admin: Admin) -> None:
    for path in ("/healthz", "/readyz", "/metrics", "/openapi.json"):
        response = await admin.client.get(path, headers={"X-API-Key": ""})
        assert response.status_code == 200, path
        # A bad key on a public route changes nothing either.
        response = await admin.client.get(path, headers={"X-API-Key": "gw_bad"})
        assert response.status_code == 200, path


async def test_failed_attempts_are_throttled_per_ip_before_any_lookup(store_url: str) -> None:
    async with running_admin(store_url, auth={"failed_attempts_limit": "3/hour"}) as admin:
        attempts = [
            (await _malformed(admin), "INVALID_API_KEY"),
            (await _revoked_admin(admin), "KEY_REVOKED"),
            (await _unknown(admin), "INVALID_API_KEY"),
        ]
        # No key at all is not a guess: it does not count.
        for _ in range(5):
            anonymous = await admin.client.get("/v1/keys", headers={"X-API-Key": ""})
            assert_error(anonymous, 401, "MISSING_API_KEY")
        for headers, code in attempts:
            assert_error(await admin.client.get("/v1/keys", headers=headers), 401, code)
        # Beyond the limit, the IP is refused before any lookup, even with the right key.
        for path in ("/v1/keys", "/v1/audit", "/v1/nothing"):
            response = await admin.client.get(path)
            error = assert_error(response, 429, "TOO_MANY_FAILED_ATTEMPTS")
            assert int(response.headers["retry-after"]) >= 1
            assert error["details"]["retryAfter"] == int(response.headers["retry-after"])
        # Public routes are not behind the door.
        assert (await admin.client.get("/healthz")).status_code == 200


async def test_proxy_traffic_cannot_lock_administrators_out(store_url: str) -> None:
    """SPEC §4: the admin listener keeps its own failed-attempt counter, though it shares
    the runtime (store, key cache) with the proxy listener of the same process."""
    import httpx

    from gateway import GatewayMiddleware

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    async with running_admin(store_url, auth={"failed_attempts_limit": "2/hour"}) as admin:
        proxy = GatewayMiddleware(app, runtime=admin.runtime)
        transport = httpx.ASGITransport(proxy)
        async with httpx.AsyncClient(transport=transport, base_url="http://proxy.test") as client:
            for _ in range(2):
                response = await client.get("/x", headers={"X-API-Key": "gw_bad"})
                assert_error(response, 401, "INVALID_API_KEY")
            # the same client IP is now refused by the proxy, even with a good key ...
            response = await client.get("/x", headers={"X-API-Key": admin.secret})
            assert_error(response, 429, "TOO_MANY_FAILED_ATTEMPTS")
        # ... but the admin API still answers it
        assert (await admin.client.get("/v1/keys")).status_code == 200
        # and the admin listener's own counter works the same way
        for _ in range(2):
            bad = await admin.client.get("/v1/keys", headers={"X-API-Key": "gw_bad"})
            assert_error(bad, 401, "INVALID_API_KEY")
        locked = await admin.client.get("/v1/keys")
        error = assert_error(locked, 429, "TOO_MANY_FAILED_ATTEMPTS")
        seconds = int(locked.headers["retry-after"])
        unit = "second" if seconds == 1 else "seconds"
        assert error["message"].endswith(f"Retry after {seconds} {unit}.")
