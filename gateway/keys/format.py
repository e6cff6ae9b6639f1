"""Key values: generate, parse and checksum them; the hint; the stored HMAC (SPEC §1).

A key is `<prefix>_<random><check>`: 32 base62 characters from `secrets`, then the CRC32
of `<prefix>_<random>` in base62, left-padded to 6. Parsing checks the shape and the
checksum offline, so a typo or a made-up value never reaches the store.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import zlib

BASE62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
RANDOM_LENGTH = 32
CHECK_LENGTH = 6
ID_LENGTH = 16
PREFIX_PATTERN = re.compile(r"[a-z][a-z0-9]{1,15}")
_BASE62_SET = frozenset(BASE62)


def base62(number: int, width: int) -> str:
    """`number` in base62, left-padded with '0' to `width` characters."""
    digits = []
    while number:
        number, rest = divmod(number, 62)
        digits.append(BASE62[rest])
    return "".join(reversed(digits)).rjust(width, "0")


def random_base62(length: int) -> str:
    return "".join(secrets.choice(BASE62) for _ in range(length))


def checksum(body: str) -> str:
    """The 6-character check of `<prefix>_<random>`: CRC32 in base62."""
    return base62(zlib.crc32(body.encode("ascii")), CHECK_LENGTH)


def validate_prefix(prefix: str) -> str:
    if not PREFIX_PATTERN.fullmatch(prefix):
        raise ValueError("prefix must match [a-z][a-z0-9]{1,15}")
    return prefix


def generate_key(prefix: str = "gw") -> str:
    body = f"{validate_prefix(prefix)}_{random_base62(RANDOM_LENGTH)}"
    return body + checksum(body)


def generate_key_id() -> str:
    return "key_" + random_base62(ID_LENGTH)


def is_well_formed(value: str, prefix: str = "gw") -> bool:
    """True when `value` has the key shape for `prefix` and a matching checksum."""
    tail_length = RANDOM_LENGTH + CHECK_LENGTH
    if len(value) != len(prefix) + 1 + tail_length or not value.startswith(prefix + "_"):
        return False
    tail = value[len(prefix) + 1 :]
    if not _BASE62_SET.issuperset(tail):
        return False
    return hmac.compare_digest(checksum(value[:-CHECK_LENGTH]), value[-CHECK_LENGTH:])


def hint(value: str) -> str:
    """Display form: `<prefix>_` + first 4 of random + `…` + last 4 of the key."""
    prefix, _, tail = value.partition("_")
    return f"{prefix}_{tail[:4]}…{value[-4:]}"


def key_digest(secret: bytes, value: str) -> str:
    """HMAC-SHA256(server_secret, key_value), hex: the only thing stored about a value."""
    return hmac.new(secret, value.encode("utf-8"), hashlib.sha256).hexdigest()


def secret_fingerprint(secret: bytes) -> str:
    """A fingerprint of the server secret, stored to refuse opening with another one."""
    return hmac.new(secret, b"gateway-secret-fingerprint-v1", hashlib.sha256).hexdigest()[:32]
