"""Rate-limit policies (SPEC §4): the `limits` notation parsed once, each check's outcome,
and the headers and errors rendered from it — shared by the memory and Redis backends."""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import limits

from gateway.errors import GatewayError

STRATEGIES = ("sliding-window-counter", "moving-window", "fixed-window")


@dataclass(frozen=True, slots=True)
class Limit:
    name: str  # e.g. "100/minute"
    amount: int
    period_ms: int
    ident: str  # e.g. "100/1/minute", part of the counter's key
    quoted: bytes  # b'"100/minute"', the structured-field string

    @property
    def member(self) -> str:
        """This limit's RateLimit-Policy list member (draft-11 structured field)."""
        return f'"{self.name}";q={self.amount};w={self.period_ms // 1000}'


@dataclass(frozen=True, slots=True)
class Policy:
    text: str
    limits: tuple[Limit, ...]
    header: bytes  # the RateLimit-Policy value, rendered once


def _limit(item: limits.RateLimitItem) -> Limit:
    granularity = item.GRANULARITY.name
    if item.multiples == 1:
        name = f"{item.amount}/{granularity}"
    else:
        name = f"{item.amount}/{item.multiples} {granularity}s"
    ident = f"{item.amount}/{item.multiples}/{granularity}"
    return Limit(name, item.amount, item.get_expiry() * 1000, ident, f'"{name}"'.encode())


_POLICIES: dict[str, Policy] = {}


def parse_policy(text: str) -> Policy:
    """The parsed policy for a limit string; cached, so each distinct string parses once."""
    policy = _POLICIES.get(text)
    if policy is None:
        items = tuple(_limit(item) for item in limits.parse_many(text))
        if not items:
            raise ValueError(f"no limit in {text!r}")
        header = ", ".join(limit.member for limit in items).encode()
        policy = Policy(text, items, header)
        if len(_POLICIES) < 10_000:  # distinct strings are few; never unbounded
            _POLICIES[text] = policy
    return policy


class Outcome(NamedTuple):
    """The result of one check: admitted or not, and each limit's state after it.

    `states[i]` is `(admits, remaining, reset_ms)` for `policy.limits[i]`: whether that
    limit admitted the request, how many more requests it admits now, and in how many
    milliseconds it resets — when `remaining` is 0, the moment a request can succeed.
    """

    admitted: bool
    now_ms: int
    states: tuple[tuple[bool, int, int], ...]


def _ceil_seconds(ms: int) -> int:
    return -(-ms // 1000)


def seconds_text(seconds: int) -> str:
    """ "1 second", "2 seconds": for the Retry after … of error messages."""
    return f"{seconds} second" if seconds == 1 else f"{seconds} seconds"


def retry_after(outcome: Outcome) -> int:
    """Whole seconds until every rejecting limit admits again: rounded up, at least 1."""
    wait = max((reset for admits, _, reset in outcome.states if not admits), default=0)
    return max(1, _ceil_seconds(wait))


def cached_policy(text: str) -> Policy | None:
    """The policy already parsed for `text`, if any (the request path's fast lookup)."""
    return _POLICIES.get(text)


def rate_limit_headers(
    policy: Policy, outcome: Outcome, *, legacy: bool = True
) -> list[tuple[bytes, bytes]]:
    """RateLimit-Policy and RateLimit (draft-11), and the legacy X-RateLimit-* trio."""
    states = outcome.states
    if len(states) == 1:
        tightest = 0
        _, remaining, reset = states[0]
        value = b"%s;r=%d;t=%d" % (policy.limits[0].quoted, remaining, -(-reset // 1000))
    else:
        members = []
        tightest = 0
        for index, (_, remaining, reset) in enumerate(states):
            quoted = policy.limits[index].quoted
            members.append(b"%s;r=%d;t=%d" % (quoted, remaining, -(-reset // 1000)))
            best = states[tightest]
            if remaining < best[1] or (remaining == best[1] and reset > best[2]):
                tightest = index
        value = b", ".join(members)
    headers = [(b"ratelimit-policy", policy.header), (b"ratelimit", value)]
    if legacy:
        _, remaining, reset = states[tightest]
        headers += (
            (b"x-ratelimit-limit", b"%d" % policy.limits[tightest].amount),
            (b"x-ratelimit-remaining", b"%d" % remaining),
            (b"x-ratelimit-reset", b"%d" % -(-(outcome.now_ms + reset) // 1000)),
        )
    return headers


_MESSAGES: dict[tuple[str, int], str] = {}


def rejection(policy: Policy, outcome: Outcome) -> GatewayError:
    """429 RATE_LIMITED naming the limit that keeps the request out the longest, with
    Retry-After (the RateLimit headers go with the client headers, as for an admitted
    request: see `rate_limit_headers`)."""
    states = outcome.states
    if len(states) == 1:
        seconds = max(1, _ceil_seconds(states[0][2]))
        blocking = policy.limits[0].name
    else:
        seconds = retry_after(outcome)
        blocking = max(
            (reset, limit.name)
            for limit, (admits, _, reset) in zip(policy.limits, states, strict=True)
            if not admits
        )[1]
    message = _MESSAGES.get((blocking, seconds))
    if message is None:
        message = f"Rate limit exceeded ({blocking}). Retry after {seconds_text(seconds)}."
        if len(_MESSAGES) < 10_000:
            _MESSAGES[(blocking, seconds)] = message
    return GatewayError(
        "RATE_LIMITED",
        message,
        {"limit": blocking, "retryAfter": seconds},
        headers={"Retry-After": str(seconds)},
    )
