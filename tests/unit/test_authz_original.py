"""Forward auth: which request a proxy asks about (SPEC §15), and spoofing changes nothing."""

from __future__ import annotations

import pytest

from gateway.errors import GatewayError
from gateway.faces.authz import OriginalRequest
from gateway.pipeline.clientip import ClientIP
from gateway.settings import load_settings

PROXY = "10.0.0.5"
CLIENT = "203.0.113.9"


def original(
    headers: dict[str, str] | None = None,
    *,
    method: str = "GET",
    target: bytes = b"/authz",
    peer: str | None = PROXY,
    prefix: str = "",
    trusted: list[str] | None = None,
) -> tuple[str, str, bytes]:
    settings = load_settings(
        None,
        server={"trusted_proxies": ["10.0.0.0/8"] if trusted is None else trusted},
        authz={"path_prefix": prefix},
    )
    pairs = [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
    client_ip = ClientIP(settings.server.trusted_proxies)  # as the decision core builds it
    return OriginalRequest(settings, client_ip)(method, target, pairs, peer)


def test_traefik_and_caddy_headers_from_a_trusted_proxy() -> None:
    found = original({"X-Forwarded-Method": "POST", "X-Forwarded-Uri": "/sites/a/x?k=1"})
    assert found == ("POST", "/sites/a/x", b"/sites/a/x")


def test_nginx_headers_and_percent_decoding() -> None:
    found = original({"X-Original-Method": "delete", "X-Original-URI": "/a%20b/%C3%A9?q=%2F"})
    assert found == ("DELETE", "/a b/é", b"/a%20b/%C3%A9")


def test_ingress_nginx_original_url() -> None:
    found = original({"X-Original-Method": "PUT", "X-Original-URL": "https://api.example/v1/x?y"})
    assert found == ("PUT", "/v1/x", b"/v1/x")


def test_the_same_uri_twice_is_fine() -> None:
    headers = {"X-Original-URI": "/x?a=1", "X-Forwarded-Uri": "/x?a=1", "X-Original-Method": "GET"}
    assert original(headers)[1] == "/x"
    both = {"X-Original-URI": "/v1/x?y", "X-Original-URL": "http://h/v1/x?y"}
    assert original(both)[1] == "/v1/x"


@pytest.mark.parametrize(
    ("headers", "field"),
    [
        # A client's own X-Forwarded-Uri next to the X-Original-URI nginx sets.
        ({"X-Original-URI": "/private", "X-Forwarded-Uri": "/public"}, "X-Forwarded-Uri"),
        ({"X-Original-URI": "/x?a", "X-Original-URL": "http://h/x?b"}, "X-Forwarded-Uri"),
        (
            {"X-Forwarded-Uri": "/x", "X-Forwarded-Method": "GET", "X-Original-Method": "POST"},
            "X-Forwarded-Method",
        ),
    ],
)
def test_two_different_original_requests_are_refused(headers: dict[str, str], field: str) -> None:
    with pytest.raises(GatewayError) as caught:
        original(headers)
    assert caught.value.status == 400
    assert caught.value.code == "INVALID_REQUEST"
    assert caught.value.details["field"] == field


def test_without_a_forwarded_method_the_own_method_counts() -> None:
    assert original({"X-Forwarded-Uri": "/x"}, method="HEAD")[0] == "HEAD"


def test_a_method_that_is_not_a_token_is_not_believed() -> None:
    assert original({"X-Forwarded-Method": "GET X", "X-Forwarded-Uri": "/x"})[0] == "GET"


@pytest.mark.parametrize("peer", [CLIENT, None])
def test_untrusted_peer_cannot_choose_the_request(peer: str | None) -> None:
    headers = {"X-Forwarded-Method": "GET", "X-Forwarded-Uri": "/public/x"}
    assert original(headers, method="POST", target=b"/admin", peer=peer) == (
        "POST",
        "/admin",
        b"/admin",
    )


def test_no_trusted_proxies_means_nothing_forwarded_is_believed() -> None:
    headers = {"X-Original-Method": "GET", "X-Original-URI": "/public"}
    assert original(headers, target=b"/private", trusted=[])[1] == "/private"


def test_envoy_own_path_with_the_prefix_removed() -> None:
    found = original(method="PATCH", target=b"/authz/sites/b/items?x=1", prefix="/authz")
    assert found == ("PATCH", "/sites/b/items", b"/sites/b/items")
    assert original(target=b"/authz", prefix="/authz")[1] == "/"
    assert original(target=b"/authz?x", prefix="/authz")[1] == "/"
    # Only a whole segment is a prefix.
    assert original(target=b"/authzz/x", prefix="/authz")[1] == "/authzz/x"


def test_own_path_without_prefix_and_odd_targets() -> None:
    assert original(target=b"/v1/x?key=gw_abc")[1] == "/v1/x"
    assert original(target=b"http://host:1/abs/path?q")[1] == "/abs/path"
    assert original(target=b"*", method="OPTIONS")[1] == "/"


def test_path_prefix_setting_is_validated() -> None:
    from gateway.settings import ConfigError

    assert load_settings(None, authz={"path_prefix": "/authz/"}).authz.path_prefix == "/authz"
    with pytest.raises(ConfigError, match=r"authz\.path_prefix"):
        load_settings(None, authz={"path_prefix": "authz"})
    with pytest.raises(ConfigError, match=r"server\.authz_listen"):
        load_settings(None, server={"authz_listen": "nope"})
