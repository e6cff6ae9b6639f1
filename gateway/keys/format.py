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


# base62 of every number below 62**2, so a checksum is three table lookups (hot path).
_PAIRS = [a + b for a in BASE62 for b in BASE62]


def _check_fast(body: str) -> str:
    n = zlib.crc32(body.encode("ascii"))  # < 2**32 < 62**6: three pairs of digits
    high, low = divmod(n, 3844)
    return _PAIRS[high // 3844] + _PAIRS[high % 3844] + _PAIRS[low]


_SHAPES: dict[str, re.Pattern[str]] = {}


def key_length(prefix: str = "gw") -> int:
    """The length of every well-formed key value with `prefix`."""
    return len(prefix) + 1 + RANDOM_LENGTH + CHECK_LENGTH


def is_well_formed(value: str, prefix: str = "gw") -> bool:
    """True when `value` has the key shape for `prefix` and a matching checksum."""
    shape = _SHAPES.get(prefix)
    if shape is None:
        shape = _SHAPES[prefix] = re.compile(
            re.escape(prefix) + f"_[0-9A-Za-z]{{{RANDOM_LENGTH + CHECK_LENGTH}}}"
        )
    if shape.fullmatch(value) is None:
        return False
    # The checksum is public (anyone can compute it), so a plain comparison is fine.
    return _check_fast(value[:-CHECK_LENGTH]) == value[-CHECK_LENGTH:]


# Anything that may be a key: a prefix-shaped run, "_", 38 base62 characters (SPEC §1).
_CANDIDATE = re.compile(rf"([a-z0-9]{{2,16}})_([0-9A-Za-z]{{{RANDOM_LENGTH + CHECK_LENGTH}}})")
REDACTED = "[redacted]"


def _key_spans(text: str) -> list[tuple[int, int]]:
    """Where `text` holds key-shaped values (any prefix, valid checksum)."""
    spans = []
    for match in _CANDIDATE.finditer(text):
        run, tail = match.group(1), match.group(2)
        for start in range(len(run) - 1):  # the prefix is the run's longest valid end
            prefix = run[start:]
            if not prefix[0].isalpha():
                continue
            if _check_fast(f"{prefix}_{tail[:RANDOM_LENGTH]}") == tail[RANDOM_LENGTH:]:
                spans.append((match.start(1) + start, match.end()))
                break
    return spans


def contains_key(text: str) -> bool:
    """Whether a key-shaped value (the §1 format with a valid checksum) is in `text`."""
    return "_" in text and bool(_key_spans(text))


def redact_keys(text: str) -> str:
    """`text` with every key-shaped value replaced by `[redacted]` (SPEC §14); cheap
    when there is none (no "_": one scan in C)."""
    if "_" not in text:
        return text
    spans = _key_spans(text)
    if not spans:
        return text
    parts, last = [], 0
    for start, end in spans:
        parts += (text[last:start], REDACTED)
        last = end
    parts.append(text[last:])
    return "".join(parts)


def hint(value: str) -> str:
    """Display form: `<prefix>_` + first 4 of random + `…` + last 4 of the key."""
    prefix, _, tail = value.partition("_")
    return f"{prefix}_{tail[:4]}…{value[-4:]}"


_HMAC_BASES: dict[bytes, hmac.HMAC] = {}


def key_digest(secret: bytes, value: str) -> str:
    """HMAC-SHA256(server_secret, key_value), hex: the only thing stored about a value."""
    # Copying a keyed HMAC skips re-deriving the inner/outer pads on every request.
    base = _HMAC_BASES.get(secret)
    if base is None:
        base = _HMAC_BASES[secret] = hmac.new(secret, digestmod=hashlib.sha256)
    mac = base.copy()
    mac.update(value.encode("utf-8"))
    return mac.hexdigest()


def secret_fingerprint(secret: bytes) -> str:
    """A fingerprint of the server secret, stored to refuse opening with another one."""
    return hmac.new(secret, b"gateway-secret-fingerprint-v1", hashlib.sha256).hexdigest()[:32]
