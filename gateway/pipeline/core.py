"""The decision core: SPEC §3–§6 written once, for every face (ARCHITECTURE.md).

Given a request head (method, path, headers, client address), `decide()` runs the checks
in SPEC §3's order — request id → route rule (public routes skip the key checks) →
failed-attempt throttle for the client IP → key extraction and verification → access
level → site → rate limit — and returns a `Decision`: allowed (the key, its view, the
headers to add for the client and for the upstream) or denied (a `GatewayError`).
`error_response()` renders a denial (or any later error of the face) as the one JSON
envelope; `finish()` records what happened after the answer: metrics, a usage record for
every request that carried a valid key, one access line.

The core knows no framework and does no forwarding. Faces: the mounted
`GatewayMiddleware` (ASGI), the proxy, forward auth, and the admin API's guard
(`for_listener("admin")`: `/v1` needs an admin key, no route/site/rate-limit rules, and
its own failed-attempt counter so proxy traffic cannot lock administrators out).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Coroutine, MutableMapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from gateway import logs, metrics
from gateway.errors import GatewayError, accept_request_id, error_body
from gateway.keys.format import is_well_formed
from gateway.keys.model import LEVEL_RANK, AccessLevel, ApiKey
from gateway.pipeline.clientip import UNKNOWN, ClientIP
from gateway.pipeline.decide import (
    RouteRules,
    SiteRules,
    check_scope,
    check_site,
    normalize_path,
    required_rank,
)
from gateway.pipeline.identify import extract_key, key_header_names
from gateway.pipeline.ratelimit import FailedAttempts
from gateway.runtime import Resources, Runtime
from gateway.settings import Settings

log = logging.getLogger("gateway")

Listener = Literal["proxy", "admin", "authz"]
Header = tuple[bytes, bytes]

# Outcomes counted as failed attempts of the client IP (SPEC §4): a presented value that
# was guessed wrong — not a missing key, not a store outage.
FAILED_ATTEMPT_CODES = frozenset({"INVALID_API_KEY", "KEY_REVOKED", "KEY_EXPIRED"})
ALLOWED = "allowed"
REQUEST_ID = b"x-request-id"
_FORWARDED_FOR = b"x-forwarded-for"
_ADMIN_RANK = LEVEL_RANK[AccessLevel.ADMIN]
_VIEWS_MAX = 10_000


@dataclass(slots=True)
class RequestHead:
    """What a face knows of a request before its body."""

    method: str  # "GET"
    path: str  # decoded path, no query (as ASGI scope["path"])
    headers: Sequence[Header]  # names lower-case, raw values, in order
    client: tuple[str, int] | None  # the TCP peer
    raw_path: bytes | None = None  # optional, for logs
    scheme: str = "http"  # "https" behind the face's own TLS: X-Forwarded-Proto upstream


@dataclass(slots=True)
class Decision:
    """What the core decided about one request (see the module docstring)."""

    allowed: bool
    status: int  # 200 when allowed, else the error's status
    error: GatewayError | None  # set when not allowed
    # The verified key: None on a public route or when no key was verified. Set also
    # when a later check (scope, site, limit) denied the request, so that `finish()`
    # records its usage (SPEC §6: whatever the outcome).
    key: ApiKey | None
    site: str | None
    request_id: str
    client_ip: str
    started: float  # time.perf_counter() at decide()
    # For the client response: x-request-id, RateLimit-* (error headers come with the error).
    client_headers: list[Header]
    method: str = ""
    path: str = ""
    _core: DecisionCore | None = field(default=None, repr=False)
    _head: RequestHead | None = field(default=None, repr=False)

    def view(self) -> dict[str, Any] | None:
        """`scope["gateway.key"]`: id, name, scope, sites — a fresh dict; None without a key."""
        key = self.key
        if key is None or self._core is None:
            return None
        return self._core.key_view(key)

    @property
    def upstream_headers(self) -> list[Header]:
        """SPEC §7's additions for the upstream: X-Gateway-Key-Id/-AccessLevel, X-Request-ID,
        X-Forwarded-For/-Proto/-Host (a client's X-Forwarded-* kept only from a trusted
        proxy). Built on first use: only the proxy and forward auth need them."""
        head = self._head
        core = self._core
        out: list[Header] = []
        key = self.key
        if key is not None and self.allowed:
            out.append((b"x-gateway-key-id", key.id.encode()))
            out.append((b"x-gateway-key-scope", key.scope.value.encode()))
        out.append((REQUEST_ID, self.request_id.encode()))
        if head is None or core is None:
            return out
        client_xff: list[bytes] = []
        proto = fwd_host = None
        host = b""
        for name, value in head.headers:
            if name == b"host":
                host = value
            elif name == _FORWARDED_FOR:
                client_xff.append(value)
            elif name == b"x-forwarded-proto":
                proto = value
            elif name == b"x-forwarded-host":
                fwd_host = value
        peer = head.client[0] if head.client else ""
        trusted = bool(client_xff or proto or fwd_host) and core.client_ip.is_trusted(peer)
        xff = b", ".join([*client_xff, peer.encode()]) if trusted and client_xff else peer.encode()
        if xff:
            out.append((_FORWARDED_FOR, xff))
        out.append((b"x-forwarded-proto", proto if trusted and proto else head.scheme.encode()))
        host = fwd_host if trusted and fwd_host else host
        if host:
            out.append((b"x-forwarded-host", host))
        return out


class DecisionCore:
    """The checks of SPEC §3–§6 for one listener; see the module docstring.

    `runtime` shares resources opened elsewhere (the server shares one between its
    listeners); without it the core opens its own, on `start()` or lazily on the first
    `decide()`, and only then does `stop()` close them.
    """

    def __init__(
        self, settings: Settings, listener: Listener = "proxy", *, runtime: Runtime | None = None
    ) -> None:
        self.settings = settings
        self.listener = listener
        self.runtime = runtime if runtime is not None else Runtime(settings)
        self.owns_runtime = runtime is None
        # Settings as ready-to-use data, once.
        self.key_headers = key_header_names(settings.auth.headers)
        self.admin = listener == "admin"
        # The admin API has no route, site or rate-limit rules: every protected request
        # needs the admin access level.
        self.routes = RouteRules(() if self.admin else settings.routes)
        self.sites = SiteRules(settings.auth.site_header, settings.auth.site_path_prefix)
        self.require_site = settings.auth.require_site
        self.site_header = b"" if self.admin else self.sites.header
        self.client_ip = ClientIP(settings.server.trusted_proxies)
        self._trusts_proxies = bool(self.client_ip.networks)
        # Each listener counts failed attempts on its own (SPEC §4).
        self.throttle = FailedAttempts(
            settings.auth.failed_attempts_limit, name=f"throttle:{listener}"
        )
        self._views: dict[str, tuple[ApiKey, dict[str, Any]]] = {}

    @classmethod
    def for_listener(
        cls, settings: Settings, listener: Listener = "proxy", *, runtime: Runtime | None = None
    ) -> DecisionCore:
        return cls(settings, listener, runtime=runtime)

    # --- resources ----------------------------------------------------------------------

    @property
    def started(self) -> bool:
        return self.runtime.started

    async def start(self) -> Resources:
        """Open the store, verifier, limiter and usage buffer (idempotent); the bundle."""
        return await self.runtime.start()

    async def stop(self) -> None:
        """Flush usage and close — only resources this core opened itself."""
        if self.owns_runtime:
            await self.runtime.stop()

    async def _open_lazily(self) -> Resources:
        if self.admin:  # the server opens (and closes) what the admin listener shares
            raise GatewayError("SERVICE_UNAVAILABLE", "The gateway is not running.")
        try:
            return await self.runtime.start()
        except Exception as exc:
            log.error("gateway could not open its resources: %s", exc)
            raise GatewayError(
                "SERVICE_UNAVAILABLE", "The gateway's key store is unavailable."
            ) from None

    # --- the decision -------------------------------------------------------------------

    def decide(
        self, head: RequestHead, *, public: bool | None = None
    ) -> Coroutine[Any, Any, Decision]:
        """The decision for `head` (await it). Never raises for request problems: a denial
        is a Decision with the error; an unexpected failure is 500 INTERNAL_ERROR (logged).

        `public`: None follows the route rules; True skips the key checks; False needs a
        key whatever the rules say."""
        return self._decide(head, public, False)  # type: ignore[return-value]

    def decide_now(self, head: RequestHead) -> Decision | None:
        """`decide(head)` without a task or an event-loop turn when it needs no I/O (the
        hot path: a cached key, limits in this process); None when it does — nothing was
        counted then, and the caller awaits `decide(head)` in a task instead."""
        coro = self._decide(head, None, True)
        try:
            coro.send(None)
        except StopIteration as done:
            return done.value  # type: ignore[no-any-return]
        coro.close()  # cannot happen: an eager decision stops before any await
        raise RuntimeError("an eager decision suspended")

    async def _decide(self, head: RequestHead, public: bool | None, eager: bool) -> Decision | None:
        # eager: return None (before counting anything) where an await would be needed.
        started = time.perf_counter()
        method = head.method
        path = head.path

        # One pass over the headers for everything the checks read.
        key_headers = self.key_headers
        site_header = self.site_header
        presented: list[Header] | None = None
        request_id_raw: bytes | None = None
        site_values: list[bytes] | None = None
        forwarded: list[bytes] | None = None
        for name, value in head.headers:
            if name in key_headers:
                if presented is None:
                    presented = [(name, value)]
                else:
                    presented.append((name, value))
            elif name == REQUEST_ID:
                request_id_raw = value
            elif name == site_header:
                if site_values is None:
                    site_values = [value]
                else:
                    site_values.append(value)
            elif name == _FORWARDED_FOR and self._trusts_proxies:
                if forwarded is None:
                    forwarded = [value]
                else:
                    forwarded.append(value)

        request_id = accept_request_id(request_id_raw)
        client = head.client
        if self._trusts_proxies:
            client_ip = self.client_ip.resolve(client, forwarded)
        else:
            client_ip = client[0] if client else UNKNOWN

        decision = Decision(
            True,
            200,
            None,
            None,
            None,
            request_id,
            client_ip,
            started,
            [(REQUEST_ID, request_id.encode())],
            method,
            path,
            self,
            head,
        )
        try:
            if self.admin:
                rule = None
                match_path = path
            else:
                match_path = normalize_path(path)
                rule = self.routes.match(match_path)
                if public is None:
                    public = rule is not None and rule.public
            if public:
                return decision
            resources = self.runtime.bundle
            if resources is None:
                if eager:
                    return None
                resources = await self._open_lazily()
            self.throttle.check(client_ip)
            value = extract_key(presented, key_headers) if presented else None
            if value is None:
                raise GatewayError("MISSING_API_KEY")
            verifier = resources.verifier
            key = verifier.cached(value)  # the hot path: a known valid key, no lookup
            if key is None and not is_well_formed(value, verifier.prefix):
                # Bad shape or checksum: rejected offline, no lookup to count or join.
                # Counted by the one atomic step that also enforces the limit (429 when
                # used up): check() above and a separate count would let workers sharing
                # the table both pass check() and evaluate one more than the limit.
                self.throttle.attempt(client_ip)
                raise GatewayError("INVALID_API_KEY")
            if key is None and eager:
                return None  # a lookup: in a task
            if key is None and verifier.in_flight(value):
                try:  # joins a lookup already counted: no evaluation of its own
                    key = await verifier.verify(value)
                except GatewayError as exc:
                    if exc.code in FAILED_ATTEMPT_CODES:
                        # Its failure counts too; beyond the limit the answer is 429, so
                        # an IP never gets more failure answers than the limit.
                        self.throttle.attempt(client_ip)
                    raise
            elif key is None:
                # Counted before the lookup, given back unless it failed (SPEC §13): N
                # concurrent bad values from one IP never evaluate more than the limit.
                counted = self.throttle.attempt(client_ip)
                try:
                    key = await verifier.verify(value)
                except GatewayError as exc:
                    if exc.code not in FAILED_ATTEMPT_CODES:
                        self.throttle.give_back(client_ip, counted)
                    raise
                self.throttle.give_back(client_ip, counted)
            del value
            decision.key = key
            if self.admin:
                _check_admin(key)
            else:
                check_scope(key, required_rank(method, rule))
                site = decision.site = self.sites.requested(site_values, match_path)
                check_site(key, site, self.require_site)
                limiter = resources.limiter
                admission = limiter.admit_local(key.id, key.rate_limit)
                if admission is None:  # counters in Redis: one round trip
                    if eager:
                        return None
                    admission = await limiter.admit(key.id, key.rate_limit)
                limit_headers, limited = admission
                decision.client_headers += limit_headers
                if limited is not None:  # answered without raising: the common 429 is cheap
                    decision.allowed = False
                    decision.status = 429
                    decision.error = limited
        except GatewayError as exc:
            decision.allowed = False
            decision.status = exc.status
            decision.error = exc
        except Exception:
            log.exception("gateway error on request %s", request_id)
            decision.allowed = False
            decision.status = 500
            decision.error = GatewayError("INTERNAL_ERROR")
        return decision

    def key_view(self, key: ApiKey) -> dict[str, Any]:
        """`scope["gateway.key"]`: a fresh dict per request, built once per key record."""
        cached = self._views.get(key.id)
        if cached is None or cached[0] is not key:
            view = {
                "id": key.id,
                "name": key.name,
                "scope": key.scope.value,
                "sites": list(key.sites),
            }
            if len(self._views) >= _VIEWS_MAX:
                self._views.clear()
            cached = self._views[key.id] = (key, view)
        view = dict(cached[1])
        view["sites"] = list(view["sites"])  # the app may change its copy
        return view

    # --- after the answer ---------------------------------------------------------------

    def finish(self, decision: Decision, status: int, outcome: str | None = None) -> None:
        """Metrics, a usage record (if a valid key was presented) and one access line.

        `outcome` defaults to "allowed", or the error code in lower case."""
        if outcome is None:
            error = decision.error
            outcome = ALLOWED if error is None else error.code.lower()
        elapsed = time.perf_counter() - decision.started
        metrics.TALLY.request(outcome, status, elapsed)
        key = decision.key
        if key is not None:
            resources = self.runtime.bundle
            if resources is not None:
                resources.usage.record(
                    key.id, decision.method, decision.path, status, elapsed * 1000, decision.site
                )
        if logs.access_enabled():
            logs.log_access(
                decision.request_id,
                key.id if key is not None else None,
                outcome,
                status,
                elapsed * 1000,
                decision.method,
                decision.path,
                decision.client_ip,
            )

    def error_response(
        self,
        decision_or_error: Decision | GatewayError,
        request_id: str | None = None,
        *,
        error: GatewayError | None = None,
    ) -> tuple[int, list[Header], bytes]:
        """The one renderer of the SPEC §5 envelope: (status, headers, body).

        Given a Decision: its error (or `error`, a later failure of the face, e.g. 502)
        with the decision's request id and client headers. Given a GatewayError: that,
        with `request_id` (a new one if None) in the body and the X-Request-ID header."""
        return render_error(decision_or_error, request_id, error=error)


def render_error(
    decision_or_error: Decision | GatewayError,
    request_id: str | None = None,
    *,
    error: GatewayError | None = None,
    headers: Sequence[Header] | None = None,
) -> tuple[int, list[Header], bytes]:
    """`DecisionCore.error_response`, for callers without a core at hand.

    `headers` replaces the client headers added (default: the decision's, or just
    X-Request-ID), for an app whose middleware adds them itself."""
    if isinstance(decision_or_error, Decision):
        decision = decision_or_error
        error = error or decision.error or GatewayError("INTERNAL_ERROR")
        request_id = decision.request_id
        extra: Sequence[Header] = decision.client_headers
    else:
        error = decision_or_error
        request_id = request_id or accept_request_id(None)
        extra = [(REQUEST_ID, request_id.encode())]
    if headers is not None:
        extra = headers
    body = error_body(error, request_id)
    rendered = [
        (b"content-type", b"application/json"),
        (b"content-length", b"%d" % len(body)),
        (b"cache-control", b"no-store"),
        *extra,
    ]
    for name, value in error.headers.items():
        pair = (name.lower().encode("latin-1"), value.encode("latin-1"))
        if pair not in rendered:
            rendered.append(pair)
    return error.status, rendered, body


def _check_admin(key: ApiKey) -> None:
    if LEVEL_RANK[key.scope] < _ADMIN_RANK:
        raise GatewayError(
            "INSUFFICIENT_SCOPE",
            "The admin API needs an API key with the admin access level.",
            {"required": AccessLevel.ADMIN.value, "granted": key.scope.value},
        )


# --- the one error sender of the ASGI faces ---------------------------------------------

Message = MutableMapping[str, Any]
Send = Callable[[Message], Awaitable[None]]


async def send_response(send: Send, response: tuple[int, list[Header], bytes]) -> None:
    """Send a rendered `(status, headers, body)` (from `error_response`) over ASGI."""
    status, headers, body = response
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
