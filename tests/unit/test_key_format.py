"""Key values (SPEC §1 format): generated values parse, every single-character change is
caught offline by the checksum or the shape, the hint and the checksum are as documented."""

from __future__ import annotations

import re
import zlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.keys import format as key_format
from gateway.keys.format import (
    BASE62,
    checksum,
    generate_key,
    generate_key_id,
    hint,
    is_well_formed,
    key_digest,
    secret_fingerprint,
)

prefixes = st.from_regex(r"[a-z][a-z0-9]{1,15}", fullmatch=True)
keys = st.builds(generate_key, prefixes)
default_keys = st.builds(generate_key)
# Characters a typo could bring in: base62, separators, and the odd stranger.
replacement = st.sampled_from(BASE62 + "_-. éZ0")


def from_base62(text: str) -> int:
    number = 0
    for char in text:
        number = number * 62 + BASE62.index(char)
    return number


@given(default_keys)
def test_default_values_match_the_documented_shape(value: str) -> None:
    assert re.fullmatch(r"gw_[0-9A-Za-z]{38}", value)
    assert is_well_formed(value)


@given(prefixes.flatmap(lambda p: st.tuples(st.just(p), st.builds(generate_key, st.just(p)))))
def test_custom_prefixes(pair: tuple[str, str]) -> None:
    prefix, value = pair
    assert value.startswith(prefix + "_") and len(value) == len(prefix) + 1 + 38
    assert is_well_formed(value, prefix)
    other = "zz" if prefix != "zz" else "yy"
    assert not is_well_formed(value, other)


@given(keys)
def test_checksum_is_base62_crc32_left_padded(value: str) -> None:
    body, check = value[:-6], value[-6:]
    assert len(check) == 6 and set(check) <= set(BASE62)
    assert from_base62(check) == zlib.crc32(body.encode())
    assert checksum(body) == check


def test_checksum_padding() -> None:
    assert key_format.base62(0, 6) == "000000"
    assert key_format.base62(61, 6) == "00000z"
    assert key_format.base62(62, 6) == "000010"
    assert key_format.base62(2**32 - 1, 6) == "4gfFC3"
    # Some body whose CRC32 is small enough to need padding.
    body = next(f"gw_{i:032d}" for i in range(10**6) if zlib.crc32(f"gw_{i:032d}".encode()) < 62**5)
    assert checksum(body).startswith("0")


@settings(max_examples=300)
@given(value=keys, data=st.data())
def test_any_substitution_is_rejected(value: str, data: st.DataObject) -> None:
    prefix = value.split("_", 1)[0]
    index = data.draw(st.integers(0, len(value) - 1))
    char = data.draw(replacement.filter(lambda c: c != value[index]))
    changed = value[:index] + char + value[index + 1 :]
    assert not is_well_formed(changed, prefix)


@settings(max_examples=300)
@given(value=keys, data=st.data())
def test_any_deletion_or_insertion_is_rejected(value: str, data: st.DataObject) -> None:
    prefix = value.split("_", 1)[0]
    index = data.draw(st.integers(0, len(value) - 1))
    assert not is_well_formed(value[:index] + value[index + 1 :], prefix)
    at = data.draw(st.integers(0, len(value)))
    char = data.draw(replacement)
    assert not is_well_formed(value[:at] + char + value[at:], prefix)


@given(st.text(max_size=60))
def test_arbitrary_text_never_crashes(text: str) -> None:
    assert is_well_formed(text) in (True, False)


def test_every_single_substitution_of_one_value() -> None:
    """Exhaustive for one value: every position, every base62 character."""
    value = generate_key()
    for index in range(len(value)):
        for char in BASE62:
            if char != value[index]:
                changed = value[:index] + char + value[index + 1 :]
                assert not is_well_formed(changed), (index, char)


@given(keys)
def test_hint_form(value: str) -> None:
    prefix, _, tail = value.partition("_")
    assert hint(value) == f"{prefix}_{tail[:4]}…{value[-4:]}"
    assert tail[4:-4] not in hint(value)


def test_ids_and_digests() -> None:
    assert re.fullmatch(r"key_[0-9A-Za-z]{16}", generate_key_id())
    value = generate_key()
    digest = key_digest(b"s" * 40, value)
    assert re.fullmatch(r"[0-9a-f]{64}", digest)
    assert digest != key_digest(b"t" * 40, value)
    assert value not in digest
    assert secret_fingerprint(b"s" * 40) != secret_fingerprint(b"t" * 40)


@pytest.mark.parametrize("prefix", ["", "a", "A1", "1ab", "a" * 17, "ab-c", "ab_c"])
def test_bad_prefixes(prefix: str) -> None:
    with pytest.raises(ValueError):
        generate_key(prefix)
