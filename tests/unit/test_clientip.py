"""Client IP from the socket peer and trusted proxies' X-Forwarded-For (SPEC §4)."""

from __future__ import annotations

from gateway.pipeline.clientip import ClientIP


def test_no_trusted_proxies_means_the_peer() -> None:
    resolver = ClientIP([])
    assert resolver.resolve(("10.0.0.1", 1234), [b"6.6.6.6"]) == "10.0.0.1"
    assert resolver.resolve(None, None) == "unknown"


def test_untrusted_peer_cannot_spoof() -> None:
    resolver = ClientIP(["10.0.0.0/8"])
    assert resolver.resolve(("203.0.113.9", 1), [b"1.2.3.4"]) == "203.0.113.9"


def test_right_most_untrusted_address() -> None:
    resolver = ClientIP(["10.0.0.0/8", "192.168.1.1"])
    # client-supplied junk on the left, then the real client, then our proxies
    forwarded = [b"6.6.6.6, 198.51.100.7", b"192.168.1.1"]
    assert resolver.resolve(("10.1.2.3", 1), forwarded) == "198.51.100.7"


def test_ports_brackets_and_ipv6() -> None:
    resolver = ClientIP(["::1", "127.0.0.1"])
    assert resolver.resolve(("::1", 1), [b"[2001:db8::5]:443"]) == "2001:db8::5"
    assert resolver.resolve(("127.0.0.1", 1), [b"198.51.100.7:8080"]) == "198.51.100.7"


def test_all_trusted_gives_the_left_most() -> None:
    resolver = ClientIP(["10.0.0.0/8"])
    assert resolver.resolve(("10.0.0.1", 1), [b"10.0.0.9, 10.0.0.8"]) == "10.0.0.9"


def test_garbage_entry_is_not_trusted() -> None:
    resolver = ClientIP(["10.0.0.0/8"])
    assert resolver.resolve(("10.0.0.1", 1), [b"1.1.1.1, not-an-ip"]) == "not-an-ip"
