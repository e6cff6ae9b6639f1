"""SPEC §14 (issue 8 points 8-9): a key value is never written wherever a client puts it
(request id, path, site), and the admin listener writes one access line per request, the
same shape as the proxy's."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from gateway.keys.format import generate_key
from tests.e2e.conftest import KEY_VALUES, Gateway, Upstream, wait_for
from tests.e2e.rawhttp import fetch


def access_lines(gateway: Gateway) -> list[dict[str, Any]]:
    lines = []
    for line in gateway.proc.log().splitlines():
        if '"gateway.access"' in line:
            lines.append(json.loads(line))
    return lines


def line_for(gateway: Gateway, request_id: str) -> dict[str, Any]:
    def find() -> dict[str, Any] | None:
        for line in access_lines(gateway):
            if line.get("requestId") == request_id:
                return line
        return None

    return wait_for(find, 10, f"the access line of {request_id}")


async def test_a_key_value_is_not_accepted_as_request_id(
    start_gateway: Callable[..., Gateway], upstream: Upstream
) -> None:
    gateway = start_gateway(upstream.url)
    key = gateway.create_key()
    answer = await fetch(gateway.port, "/x", {"X-API-Key": key.value, "X-Request-ID": key.value})
    assert answer.status == 200
    request_id = answer.headers["x-request-id"]
    assert key.value not in request_id
    # A key value with other text around it is refused too; a plain id is kept.
    other = generate_key()
    KEY_VALUES.add(other)
    wrapped = await fetch(gateway.port, "/x", {"X-Request-ID": f"req-{other}-1"})
    assert other not in wrapped.headers["x-request-id"]
    assert other not in wrapped.body.decode()
    plain = await fetch(gateway.port, "/x", {"X-Request-ID": "req_12345"})
    assert plain.headers["x-request-id"] == "req_12345"
    line_for(gateway, request_id)  # logged under the gateway's own id


async def test_a_key_value_in_the_path_or_site_is_redacted_in_logs_and_usage(
    start_gateway: Callable[..., Gateway], upstream: Upstream
) -> None:
    gateway = start_gateway(upstream.url)
    key = gateway.create_key()
    admin = gateway.create_key(scope="admin")
    answer = await fetch(gateway.port, f"/sites/{key.value}/docs", {"X-API-Key": key.value})
    assert answer.status == 200
    line = line_for(gateway, answer.headers["x-request-id"])
    assert line["path"] == "/sites/[redacted]/docs"

    def recorded() -> list[dict[str, Any]] | None:
        async def usage(service: Any) -> Any:
            return await service.usage(key.id, 10, None)

        page = gateway.run(usage)
        return page.data or None

    items = wait_for(recorded, 10, "the usage record")
    assert items[0].path == "/sites/[redacted]/docs"
    assert items[0].site == "[redacted]"
    # Over the admin API too: the stored history carries no key value.
    listing = await fetch(
        gateway.admin_port, f"/v1/keys/{key.id}/usage", {"Authorization": f"Bearer {admin.value}"}
    )
    assert listing.status == 200 and key.value not in listing.body.decode()
    assert "[redacted]" in listing.body.decode()


async def test_the_admin_listener_writes_one_access_line_per_request(
    start_gateway: Callable[..., Gateway], upstream: Upstream
) -> None:
    gateway = start_gateway(upstream.url)
    admin = gateway.create_key(scope="admin")
    bearer = {"Authorization": f"Bearer {admin.value}"}
    answers = [
        await fetch(gateway.admin_port, "/healthz"),
        await fetch(gateway.admin_port, "/v1/keys", bearer),
        await fetch(gateway.admin_port, "/v1/keys"),
        await fetch(gateway.admin_port, "/v1/keys/key_doesnotexist0000", bearer),
    ]
    proxy = await fetch(gateway.port, "/x")
    lines = [line_for(gateway, a.headers["x-request-id"]) for a in answers]
    shape = set(line_for(gateway, proxy.headers["x-request-id"]))
    for line in lines:
        assert set(line) == shape, set(line) ^ shape
    health, listing, anonymous, missing = lines
    assert (health["path"], health["status"], health["keyId"]) == ("/healthz", 200, None)
    assert (listing["outcome"], listing["status"], listing["keyId"]) == ("allowed", 200, admin.id)
    assert (anonymous["outcome"], anonymous["status"]) == ("missing_api_key", 401)
    assert missing["status"] == 404 and missing["keyId"] == admin.id
    ids = [line["requestId"] for line in access_lines(gateway)]
    for answer in answers:
        assert ids.count(answer.headers["x-request-id"]) == 1
