"""The client IP of a request (SPEC §4): the socket peer, or — when the peer is one of
`server.trusted_proxies` — the right-most address of `X-Forwarded-For` that is not a
trusted proxy. A spoofed `X-Forwarded-For` from an untrusted peer changes nothing.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

UNKNOWN = "unknown"
_Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def _parse(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """An address from an `X-Forwarded-For` entry; tolerates a port and IPv6 brackets."""
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        pass
    if text.startswith("["):
        text = text[1:].partition("]")[0]
    elif text.count(":") == 1:
        text = text.partition(":")[0]
    else:
        return None
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


class ClientIP:
    """Resolves client IPs; `trusted_proxies` is parsed once, peer verdicts are cached."""

    def __init__(self, trusted_proxies: Iterable[str] = ()) -> None:
        self.networks: tuple[_Network, ...] = tuple(
            ipaddress.ip_network(item, strict=False) for item in trusted_proxies
        )
        self._verdicts: dict[str, bool] = {}
        # X-Forwarded-For entry -> (its address as text, or None; whether it is trusted):
        # a proxy sends the same few entries over and over (ipaddress parsing is slow).
        self._entries: dict[str, tuple[str | None, bool]] = {}

    def is_trusted(self, host: str) -> bool:
        verdict = self._verdicts.get(host)
        if verdict is None:
            address = _parse(host)
            verdict = address is not None and any(address in net for net in self.networks)
            if len(self._verdicts) < 10_000:
                self._verdicts[host] = verdict
        return verdict

    def resolve(self, client: tuple[str, int] | list | None, forwarded: list[bytes] | None) -> str:
        """The client IP from the ASGI `client` and the `X-Forwarded-For` header values."""
        peer = client[0] if client else UNKNOWN
        if not self.networks or not forwarded or not self.is_trusted(peer):
            return peer
        entries = [
            entry.strip()
            for value in forwarded
            for entry in value.decode("latin-1").split(",")
            if entry.strip()
        ]
        for entry in reversed(entries):
            text, trusted = self._entry(entry)
            if text is None:
                # Not an address: whoever wrote it is not a proxy we trust to say more.
                return entry[:64]
            if not trusted:
                return text
        # Every hop is a trusted proxy: the left-most one is the farthest we know.
        return str(self._entry(entries[0])[0]) if entries else peer

    def _entry(self, entry: str) -> tuple[str | None, bool]:
        known = self._entries.get(entry)
        if known is None:
            address = _parse(entry)
            if address is None:
                known = (None, False)
            else:
                known = (str(address), any(address in net for net in self.networks))
            if len(self._entries) < 10_000:
                self._entries[entry] = known
        return known
