"""HTTP/1.1 pieces shared by both sides of the proxy: header sets, status lines, chunks.

Everything the proxy writes is built from what the parser understood, with these tables:
the client's framing and hop-by-hop fields are never copied through (SPEC §7).
"""

from __future__ import annotations

import http
from collections.abc import Iterable

# Request fields that never reach the upstream as the client sent them: hop-by-hop
# (RFC 9110 §7.6.1 and the de-facto ones), framing (derived anew), `Expect` (answered
# here), and the fields the gateway sets itself (`Host` from config, the §7 additions).
REQUEST_DROPPED = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
        b"proxy-authorization",
        b"proxy-connection",
        b"expect",
        b"content-length",
        b"host",
        b"x-request-id",
        b"x-forwarded-for",
        b"x-forwarded-proto",
        b"x-forwarded-host",
    }
)
# Response fields that never reach the client as the upstream sent them: hop-by-hop,
# framing (derived anew), and X-Request-ID (the gateway's own is added).
RESPONSE_DROPPED = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
        b"proxy-connection",
        b"content-length",
        b"x-request-id",
    }
)
GATEWAY_PREFIX = b"x-gateway-"
CRLF = b"\r\n"
LAST_CHUNK = b"0\r\n\r\n"
CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
NO_BODY_STATUSES = frozenset({204, 304})


def _status_line(status: int) -> bytes:
    try:
        phrase = http.HTTPStatus(status).phrase.encode("ascii")
    except ValueError:
        phrase = b""
    return b"HTTP/1.1 %d %s\r\n" % (status, phrase)


STATUS_LINES = {status: _status_line(status) for status in range(100, 600)}


def status_line(status: int, reason: bytes) -> bytes:
    """The client's status line: the upstream's reason phrase when it gave one."""
    if reason:
        return b"HTTP/1.1 %d %s\r\n" % (status, reason)
    return STATUS_LINES.get(status) or b"HTTP/1.1 %d \r\n" % status


def chunk(data: bytes) -> bytes:
    """One chunk of a chunked body (never the empty, last one)."""
    return b"%x\r\n%s\r\n" % (len(data), data)


def connection_tokens(values: Iterable[bytes]) -> frozenset[bytes]:
    """The header names the `Connection` field values nominate (lower case)."""
    names: set[bytes] = set()
    for value in values:
        names.update(token.strip().lower() for token in value.split(b","))
    names.discard(b"")
    return frozenset(names)


def render_head(first_line: bytes, headers: Iterable[tuple[bytes, bytes]]) -> bytes:
    parts = [first_line]
    for name, value in headers:
        parts += (name, b": ", value, CRLF)
    parts.append(CRLF)
    return b"".join(parts)
