"""What the gateway itself answers after a request was allowed — 413, 502, 504 — is
counted under its error code, not as "allowed", and the proxy's 413 carries `limit` like
the admin API's (SPEC §5, §14). A real `gateway serve` over real HTTP."""

from __future__ import annotations

import re
from collections.abc import Callable

import httpx
import pytest

from tests.e2e.conftest import Gateway, Upstream, free_port

pytestmark = pytest.mark.e2e

LIMIT = 1024


def counts(gw: Gateway) -> dict[tuple[str, str], float]:
    text = httpx.get(f"{gw.admin_url}/metrics", timeout=10).text
    pattern = r'^gateway_requests_total\{outcome="([a-z_]+)",status="(\d+)"\} (\S+)$'
    return {(o, s): float(v) for o, s, v in re.findall(pattern, text, re.MULTILINE)}


def test_413_502_504_count_their_error_code(
    upstream: Upstream, start_gateway: Callable[..., Gateway]
) -> None:
    gw = start_gateway(
        upstream.url, server={"max_body_bytes": LIMIT}, upstream={"read_timeout": 0.3}
    )
    headers = {"X-API-Key": gw.create_key("write").value}
    with httpx.Client(base_url=gw.url, headers=headers, timeout=10) as client:
        declared = client.post("/echo-body", content=b"x" * (LIMIT + 1))
        streamed = client.post("/echo-body", content=iter([b"x" * 600, b"x" * 600]))
        slow = client.get("/slow", params={"seconds": "2"})
        assert client.get("/fine").status_code == 200
    for response in (declared, streamed):
        assert response.status_code == 413, response.text
        error = response.json()["error"]
        assert error["code"] == "PAYLOAD_TOO_LARGE" and error["details"] == {"limit": LIMIT}
    assert slow.status_code == 504 and slow.json()["error"]["code"] == "UPSTREAM_TIMEOUT"

    dead = start_gateway(f"http://127.0.0.1:{free_port()}")
    refused = httpx.get(
        f"{dead.url}/x", headers={"X-API-Key": dead.create_key("read").value}, timeout=10
    )
    assert refused.status_code == 502, refused.text

    seen = counts(gw)
    assert seen[("payload_too_large", "413")] == 2
    assert seen[("upstream_timeout", "504")] == 1
    assert seen[("allowed", "200")] >= 1
    assert counts(dead)[("upstream_unavailable", "502")] == 1
    for gateway in (gw, dead):
        wrong = [k for k in counts(gateway) if k[0] == "allowed" and k[1] in ("413", "502", "504")]
        assert not wrong, wrong
