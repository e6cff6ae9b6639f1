"""Route rules, access levels and sites (SPEC §3 steps 1, 3, 4) as pure functions."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from gateway.errors import GatewayError
from gateway.keys.model import AccessLevel, ApiKey, Status
from gateway.pipeline.decide import (
    RouteRules,
    SiteRules,
    check_scope,
    check_site,
    normalize_path,
    required_rank,
)
from gateway.settings import RouteRule

NOW = datetime(2030, 1, 1, tzinfo=UTC)


def make_key(scope: str = "read", sites: tuple[str, ...] = ("*",)) -> ApiKey:
    return ApiKey(
        id="key_0123456789abcdef",
        name="k",
        scope=AccessLevel(scope),
        sites=sites,
        status=Status.ACTIVE,
        rate_limit=None,
        hint="gw_abcd…wxyz",
        created_at=NOW,
        updated_at=NOW,
    )


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("/a/b", "/a/b"),
        ("/public/../admin", "/admin"),
        ("//admin", "/admin"),
        ("/a/./b/", "/a/b/"),
        ("/", "/"),
        ("/../..", "/"),
    ],
)
def test_normalize_path(path: str, expected: str) -> None:
    assert normalize_path(path) == expected


def test_longest_prefix_wins_on_segment_boundaries() -> None:
    rules = RouteRules(
        [
            RouteRule(prefix="/public", public=True),
            RouteRule(prefix="/public/private", scope="admin"),
            RouteRule(prefix="/files/"),
        ]
    )
    assert rules.match("/public").public
    assert rules.match("/public/docs").public
    assert rules.match("/publicity") is None
    private = rules.match("/public/private/x")
    assert private is not None and not private.public and private.rank == 2
    assert rules.match("/files/x") is not None
    assert rules.match("/files") is None
    assert rules.match("/other") is None


@pytest.mark.parametrize(
    ("scope", "method", "allowed"),
    [
        (scope, method, allowed)
        for scope, allowed_methods in {
            "read": {"GET", "HEAD", "OPTIONS"},
            "write": {"GET", "HEAD", "OPTIONS", "POST", "PUT", "PATCH", "DELETE"},
            "admin": {"GET", "HEAD", "OPTIONS", "POST", "PUT", "PATCH", "DELETE", "TRACE"},
        }.items()
        for method in ("GET", "HEAD", "OPTIONS", "POST", "PUT", "PATCH", "DELETE", "TRACE")
        for allowed in [method in allowed_methods]
    ],
)
def test_scope_matrix(scope: str, method: str, allowed: bool) -> None:
    key = make_key(scope)
    if allowed:
        check_scope(key, required_rank(method, None))
        return
    with pytest.raises(GatewayError) as caught:
        check_scope(key, required_rank(method, None))
    assert caught.value.status == 403
    assert caught.value.code == "INSUFFICIENT_SCOPE"
    assert caught.value.details["granted"] == scope
    assert caught.value.details["required"] in ("write", "admin")


def test_route_scope_raises_the_level_for_every_method() -> None:
    rule = RouteRules([RouteRule(prefix="/admin", scope="admin")]).match("/admin/x")
    with pytest.raises(GatewayError) as caught:
        check_scope(make_key("write"), required_rank("GET", rule))
    assert caught.value.details == {"required": "admin", "granted": "write"}
    check_scope(make_key("admin"), required_rank("GET", rule))


def test_sites_from_header_and_path() -> None:
    sites = SiteRules("X-Site-Id", "/sites/")
    assert sites.requested(None, "/x") is None
    assert sites.requested([b"alpha"], "/x") == "alpha"
    assert sites.requested(None, "/sites/beta/things") == "beta"
    assert sites.requested(None, "/sites/beta") == "beta"
    assert sites.requested([b"beta"], "/sites/beta/x") == "beta"
    for headers, path in (([b"alpha"], "/sites/beta/x"), ([b"a", b"b"], "/x")):
        with pytest.raises(GatewayError) as caught:
            sites.requested(headers, path)
        assert caught.value.status == 400 and caught.value.code == "INVALID_REQUEST"
    for headers, path in (([b"bad site"], "/x"), (None, "/sites//x"), (None, "/sites/a.b/")):
        with pytest.raises(GatewayError) as caught:
            sites.requested(headers, path)
        assert caught.value.status == 400


def test_check_site() -> None:
    check_site(make_key(sites=("*",)), "anything")
    check_site(make_key(sites=("a", "b")), "b")
    check_site(make_key(sites=("a",)), None)
    check_site(make_key(sites=("*",)), None, require=True)
    with pytest.raises(GatewayError) as required:
        check_site(make_key(sites=("a",)), None, require=True)
    assert required.value.code == "SITE_NOT_ALLOWED" and required.value.details == {"site": None}
    with pytest.raises(GatewayError) as caught:
        check_site(make_key(sites=("a",)), "b")
    assert caught.value.status == 403 and caught.value.code == "SITE_NOT_ALLOWED"
