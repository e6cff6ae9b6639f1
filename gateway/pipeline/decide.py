"""Decide what a request may do: route rules, access level and site (SPEC §3 steps 1, 3, 4).

Everything here is pure and synchronous; configuration is turned into ready-to-use data
once (`RouteRules`, `SiteRules`) and each request costs a few dict and string operations.
"""

from __future__ import annotations

import posixpath
from collections.abc import Iterable
from dataclasses import dataclass

from gateway.errors import GatewayError, invalid_request
from gateway.keys.model import ALL_SITES, LEVEL_RANK, SITE_PATTERN, AccessLevel, ApiKey
from gateway.settings import RouteRule

# SPEC §3: read allows GET, HEAD, OPTIONS; write adds POST, PUT, PATCH, DELETE; any other
# method (TRACE, CONNECT, custom verbs) needs admin, which "allows everything".
METHOD_SCOPE: dict[str, AccessLevel] = {
    "GET": AccessLevel.READ,
    "HEAD": AccessLevel.READ,
    "OPTIONS": AccessLevel.READ,
    "POST": AccessLevel.WRITE,
    "PUT": AccessLevel.WRITE,
    "PATCH": AccessLevel.WRITE,
    "DELETE": AccessLevel.WRITE,
}
_RANK_SCOPE = {rank: scope for scope, rank in LEVEL_RANK.items()}


def normalize_path(path: str) -> str:
    """`path` with dot segments and repeated slashes resolved, for matching rules only.

    So `/public/../admin` is judged as `/admin`: a public route cannot be used to reach
    another one. Most paths have neither and are returned as they are.
    """
    if "/." not in path and "//" not in path:
        return path
    normalized = posixpath.normpath(path)
    if normalized.startswith("//"):  # normpath keeps a leading '//'
        normalized = "/" + normalized.lstrip("/")
    if path.endswith("/") and normalized != "/":
        normalized += "/"
    return normalized


@dataclass(frozen=True, slots=True)
class Rule:
    prefix: str
    public: bool
    rank: int  # the access level the rule requires for every method (0 = no raise)


class RouteRules:
    """`[[routes]]` rules; the longest matching prefix wins.

    A prefix matches on path-segment boundaries: `/public` matches `/public` and
    `/public/x`, not `/publicity` (a prefix ending in `/` matches everything under it).
    """

    def __init__(self, rules: Iterable[RouteRule]) -> None:
        compiled = [
            Rule(
                rule.prefix,
                rule.public,
                LEVEL_RANK[AccessLevel(rule.scope)] if rule.scope is not None else 0,
            )
            for rule in rules
        ]
        self.rules = sorted(compiled, key=lambda rule: len(rule.prefix), reverse=True)

    def match(self, path: str) -> Rule | None:
        for rule in self.rules:
            prefix = rule.prefix
            if path.startswith(prefix) and (
                len(path) == len(prefix) or prefix[-1] == "/" or path[len(prefix)] == "/"
            ):
                return rule
        return None


def required_rank(method: str, rule: Rule | None) -> int:
    rank = LEVEL_RANK[METHOD_SCOPE.get(method, AccessLevel.ADMIN)]
    if rule is not None and rule.rank > rank:
        return rule.rank
    return rank


def check_scope(key: ApiKey, required: int) -> None:
    """403 INSUFFICIENT_SCOPE unless the key's access level reaches `required`."""
    if LEVEL_RANK[key.scope] < required:
        raise GatewayError(
            "INSUFFICIENT_SCOPE",
            details={"required": _RANK_SCOPE[required].value, "granted": key.scope.value},
        )


class SiteRules:
    """Which site a request names: the site header and/or the `/sites/<site>/` path."""

    def __init__(self, header: str, path_prefix: str) -> None:
        self.header_name = header
        self.header = header.lower().encode("latin-1")
        self.path_prefix = path_prefix if path_prefix.endswith("/") else path_prefix + "/"

    def requested(self, header_values: list[bytes] | None, path: str) -> str | None:
        """The one site the request names, or None. 400 for two different or bad ids."""
        site: str | None = None
        source = self.header_name
        if header_values:
            for raw in header_values:
                value = raw.decode("latin-1").strip()
                if site is not None and value != site:
                    raise invalid_request(self.header_name, "the request names two different sites")
                site = value
        if path.startswith(self.path_prefix):
            from_path = path[len(self.path_prefix) :].split("/", 1)[0]
            if site is not None and from_path != site:
                raise invalid_request(
                    "path",
                    f"the path names site {from_path[:64]!r} but {self.header_name} "
                    f"names {site[:64]!r}",
                    "The request names two different sites.",
                )
            site, source = from_path, "path"
        if site is not None and not SITE_PATTERN.fullmatch(site):
            raise invalid_request(source, "a site id must match [A-Za-z0-9_-]{1,64}")
        return site


def check_site(key: ApiKey, site: str | None, require: bool = False) -> None:
    """403 SITE_NOT_ALLOWED unless the key may touch `site`. A request that names no site
    (None) passes, unless `require` (auth.require_site) and the key is limited to sites."""
    if site is None:
        if require and ALL_SITES not in key.sites:
            raise GatewayError(
                "SITE_NOT_ALLOWED",
                "This API key is limited to sites: the request must name one.",
                {"site": None},
            )
        return
    if not key.allows_site(site):
        raise GatewayError("SITE_NOT_ALLOWED", details={"site": site})
