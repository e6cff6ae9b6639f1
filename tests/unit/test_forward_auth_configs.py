"""The shipped forward-auth configs (config/): what each passes on, checked as text.

nginx, Caddy and Envoy are also run for real with these files (tests/e2e/
test_forward_auth.py). Traefik has no binary on the test machine, so this is the test
its config gets: the gateway's address, the headers copied to the upstream, the key
headers removed, and the middleware order.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from gateway.faces.authz import UPSTREAM_HEADERS
from gateway.settings import Settings

CONFIG = Path(__file__).resolve().parents[2] / "config"
KEY_HEADERS = Settings().auth.headers  # Authorization, X-API-Key


def test_traefik_forward_auth_middleware() -> None:
    config = yaml.safe_load((CONFIG / "traefik.yml").read_text())
    http = config["http"]
    router = http["routers"]["api"]
    # Ask the gateway first; the key is dropped only after (the gateway needs it).
    assert router["middlewares"] == ["gateway-auth", "strip-key"]
    auth = http["middlewares"]["gateway-auth"]["forwardAuth"]
    assert auth["address"] == "http://127.0.0.1:8002/"
    # Traefik, not the client, says which request it is.
    assert auth["trustForwardHeader"] is False
    assert [h.lower() for h in auth["authResponseHeaders"]] == [h.lower() for h in UPSTREAM_HEADERS]
    removed = http["middlewares"]["strip-key"]["headers"]["customRequestHeaders"]
    assert removed == {name: "" for name in KEY_HEADERS}
    server = http["services"]["api"]["loadBalancer"]["servers"][0]["url"]
    assert server == "http://127.0.0.1:9000"


def test_envoy_passes_the_gateway_headers() -> None:
    config = yaml.safe_load((CONFIG / "envoy.yaml").read_text())
    manager = config["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]
    typed = manager["typed_config"]
    route = typed["route_config"]["virtual_hosts"][0]["routes"][0]
    assert {h.lower() for h in route["request_headers_to_remove"]} == {
        h.lower() for h in KEY_HEADERS
    }
    filters = {f["name"]: f["typed_config"] for f in typed["http_filters"]}
    names = [f["name"] for f in typed["http_filters"]]
    # Client X-Gateway-* go before the gateway is asked; the router comes last.
    assert names == [
        "envoy.filters.http.header_mutation",
        "envoy.filters.http.ext_authz",
        "envoy.filters.http.router",
    ]
    authz = filters["envoy.filters.http.ext_authz"]
    assert authz["failure_mode_allow"] is False
    assert authz["http_service"]["path_prefix"] == "/authz"
    allowed = {p.get("exact") or p.get("prefix") for p in authz["allowed_headers"]["patterns"]}
    # Every header the gateway reads besides Authorization (always sent by Envoy).
    assert {"x-api-key", "x-site-id", "x-request-id", "x-forwarded-for"} <= allowed
    upstream = authz["http_service"]["authorization_response"]["allowed_upstream_headers"]
    patterns = {p.get("exact") or p.get("prefix") for p in upstream["patterns"]}
    assert patterns == {"x-gateway-", "x-request-id"}
    removed = filters["envoy.filters.http.header_mutation"]["mutations"]["request_mutations"]
    assert {m["remove"] for m in removed} == {"x-gateway-key-id", "x-gateway-key-scope"}


@pytest.mark.parametrize("name", ["nginx.conf", "Caddyfile", "envoy.yaml", "traefik.yml"])
def test_every_config_names_the_gateway_headers(name: str) -> None:
    text = (CONFIG / name).read_text().lower()
    for header in UPSTREAM_HEADERS:
        assert header.lower() in text, (name, header)
    for header in KEY_HEADERS:
        assert header.lower() in text, (name, header)


def test_nginx_protected_location_has_no_return() -> None:
    """`return` runs before `auth_request` and would silently skip the key check."""
    text = (CONFIG / "nginx.conf").read_text()
    start = text.index("location / {")
    end = text.index("location = /_gateway_auth")
    protected = "\n".join(
        line for line in text[start:end].splitlines() if not line.strip().startswith("#")
    )
    assert "auth_request /_gateway_auth;" in protected
    assert "return" not in protected
    assert "error_page 403 = @gateway_denied;" in protected
    assert "proxy_set_header X-Gateway-Authz-Mode nginx;" in text
