"""Forward auth: the decision core answering nginx, Traefik, Caddy and Envoy (SPEC §15).

A front proxy asks, for each request it received, whether it may pass. The face finds the
original request in the question, lets the decision core decide, and turns the decision
into the answer the proxy understands:

- allowed: `200`, empty body, `X-Gateway-Key-Id`, `X-Gateway-Key-Scope`, `X-Request-ID`
  (for the upstream) and the RateLimit headers (for the client);
- denied: the same status, headers and JSON envelope `gateway serve` would answer.
  nginx's `auth_request` only understands 2xx/401/403 (anything else becomes a 500), so
  an authz request carrying `X-Gateway-Authz-Mode: nginx` gets every denial as `403`
  with the real status in `X-Gateway-Status` and the envelope in `X-Gateway-Error`; the
  shipped config/nginx.conf answers the client with them (`error_page 403 = @denied`).

The original request: method from `X-Forwarded-Method` / `X-Original-Method`, path and
query from `X-Forwarded-Uri` / `X-Original-URI` (or ingress-nginx's `X-Original-URL`),
believed only from `server.trusted_proxies`. Without them (Envoy's HTTP mode) the authz
request's own method and path are the original ones, `authz.path_prefix` removed first.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from urllib.parse import unquote, urlsplit

from gateway.errors import GatewayError, invalid_request
from gateway.pipeline.clientip import ClientIP
from gateway.pipeline.core import Decision, DecisionCore, RequestHead
from gateway.settings import Settings

Headers = list[tuple[bytes, bytes]]

MODE_HEADER = b"x-gateway-authz-mode"
NGINX_MODE = b"nginx"
# What the nginx mode adds to a denial answered as 403.
STATUS_HEADER = b"x-gateway-status"
ERROR_HEADER = b"x-gateway-error"

_METHOD_HEADERS = (b"x-forwarded-method", b"x-original-method")
_URI_HEADERS = (b"x-forwarded-uri", b"x-original-uri", b"x-original-url")
# What an allowed answer gives the front proxy to pass to the upstream (config/ files).
UPSTREAM_HEADERS = ("X-Gateway-Key-Id", "X-Gateway-Key-Scope", "X-Request-ID")
_KEY_ID = b"x-gateway-key-id"
_KEY_SCOPE = b"x-gateway-key-scope"
_FORWARDED = frozenset((*_METHOD_HEADERS, *_URI_HEADERS))
# A method is an HTTP token; anything else in a forwarded header is not believed.
_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")


class Answer:
    """What the authz listener writes back: status, headers, body."""

    __slots__ = ("body", "headers", "status")

    def __init__(self, status: int, headers: Headers, body: bytes) -> None:
        self.status = status
        self.headers = headers
        self.body = body


class OriginalRequest:
    """Finds the request a proxy asks about (SPEC §15), from `server.trusted_proxies` and
    `authz.path_prefix`."""

    def __init__(self, settings: Settings, client_ip: ClientIP) -> None:
        self.path_prefix = settings.authz.path_prefix
        self.client_ip = client_ip  # the decision core's: trust is decided in one place
        self.trusting = bool(self.client_ip.networks)

    def __call__(
        self, method: str, target: bytes, headers: Sequence[tuple[bytes, bytes]], peer: str | None
    ) -> tuple[str, str, bytes]:
        """The original request's method, decoded path and raw path (no query).

        `method` and `target` are the authz request's own; the forwarded headers count
        only when the peer is a trusted proxy (a spoofed one changes nothing). Raises
        400 INVALID_REQUEST when they name two different requests."""
        if self.trusting and peer is not None and self.client_ip.is_trusted(peer):
            uri = forwarded = None
            conflict = b""
            for name, value in headers:
                if name in _FORWARDED:
                    if name in _URI_HEADERS:
                        value = _target_of(value.strip())
                        if uri is None:
                            uri = value
                        elif value != uri:
                            conflict = b"uri"
                    else:
                        value = value.strip().upper()
                        if forwarded is None:
                            forwarded = value
                        elif value != forwarded and not conflict:
                            conflict = b"method"
            if uri is not None:
                # Two different answers to "which request?" (e.g. a client's own
                # X-Forwarded-Uri next to nginx's X-Original-URI): believe neither.
                if conflict == b"uri":
                    raise invalid_request(
                        "X-Forwarded-Uri", "the request names different original URIs"
                    )
                if conflict:
                    raise invalid_request(
                        "X-Forwarded-Method", "the request names different original methods"
                    )
                if forwarded:
                    method = _method(forwarded) or method
                raw = _path_of(uri)
                return method, _decoded(raw), raw
        raw = _path_of(target)
        prefix = self.path_prefix
        if prefix:
            text = raw.decode("latin-1")
            if text == prefix or text.startswith(prefix + "/"):
                raw = raw[len(prefix) :] or b"/"
        return method, _decoded(raw), raw


class AuthzFace:
    """One forward-auth question in, one answer out; usage and the access line recorded."""

    def __init__(self, core: DecisionCore) -> None:
        self.core = core
        self.original = OriginalRequest(core.settings, core.client_ip)

    async def check(
        self,
        method: str,
        target: bytes,
        headers: Headers,
        client: tuple[str, int] | None,
    ) -> Answer:
        """Decide on the request the proxy describes; answer as SPEC §15 says."""
        core = self.core
        try:
            orig_method, path, raw_path = self.original(
                method, target, headers, client[0] if client else None
            )
        except GatewayError as error:
            decision = await core.decide(RequestHead(method, "/", headers, client), public=True)
            decision.allowed, decision.status, decision.error = False, error.status, error
        else:
            head = RequestHead(orig_method, path, headers, client, raw_path)
            decision = await core.decide(head)
        try:
            if decision.allowed:
                return Answer(200, allowed_headers(decision), b"")
            status, answer_headers, body = core.error_response(decision)
            if _nginx_mode(headers):
                return nginx_denial(status, answer_headers, body)
            return Answer(status, answer_headers, body)
        finally:
            core.finish(decision, decision.status)


def allowed_headers(decision: Decision) -> Headers:
    """X-Gateway-Key-Id/-Scope for the upstream; X-Request-ID for both; RateLimit headers
    for the client. (Not `decision.upstream_headers`: the X-Forwarded-* it also builds are
    the front proxy's business.)"""
    key = decision.key
    if key is None:  # a public route
        return decision.client_headers
    return [
        (_KEY_ID, key.id.encode()),
        (_KEY_SCOPE, key.scope.value.encode()),
        *decision.client_headers,  # x-request-id first, then the RateLimit headers
    ]


def nginx_denial(status: int, headers: Headers, body: bytes) -> Answer:
    """A denial as nginx's auth_request can pass it on: 403, the real one in headers.

    The envelope is compact JSON with non-ASCII escaped, so it is a valid header value."""
    out: Headers = [pair for pair in headers if pair[0] not in (b"content-type", b"content-length")]
    out.append((STATUS_HEADER, str(status).encode()))
    out.append((ERROR_HEADER, body))
    return Answer(403, out, b"")


def _nginx_mode(headers: Sequence[tuple[bytes, bytes]]) -> bool:
    for name, value in headers:
        if name == MODE_HEADER:
            return value.strip().lower() == NGINX_MODE
    return False


def _method(value: bytes) -> str | None:
    """A forwarded method if it is an HTTP token (validated once per distinct value)."""
    known = _METHODS.get(value)
    if known is None:
        if not _TOKEN.fullmatch(value):
            return None
        known = value.decode("ascii")
        if len(_METHODS) < 64:
            _METHODS[value] = known
    return known


_METHODS: dict[bytes, str] = {}


def _decoded(raw: bytes) -> str:
    """The path as ASGI gives it: percent-decoded (UTF-8)."""
    path = raw.decode("latin-1")
    return unquote(path) if "%" in path else path


def _target_of(uri: bytes) -> bytes:
    """Path and query of a forwarded URI; ingress-nginx's X-Original-URL is a whole URL."""
    if uri[:1] == b"/":
        return uri
    if b"://" in uri:
        parts = urlsplit(uri.decode("latin-1"))
        target = parts.path or "/"
        return (target + "?" + parts.query if parts.query else target).encode("latin-1")
    return uri


def _path_of(target: bytes) -> bytes:
    """The path of a request target or forwarded URI, without the query string."""
    if not target.startswith(b"/"):
        if b"://" in target:  # absolute form
            parts = urlsplit(target.decode("latin-1"))
            return (parts.path or "/").encode("latin-1")
        return b"/"
    target = target.partition(b"?")[0]
    return target.partition(b"#")[0] if b"#" in target else target
