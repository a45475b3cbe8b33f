"""The Internet checksum (RFC 1071) against its worked example and scapy."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from loopstack.wire.checksum import checksum, ones_sum, pseudo_sum, verify

from .oracle import a4, a6, scapy_checksum


def test_rfc1071_example() -> None:
    # RFC 1071 3: the words 0001 f203 f4f5 f6f7 sum to ddf2 with end-around carry.
    data = bytes.fromhex("0001f203f4f5f6f7")
    assert ones_sum(data) == 0xDDF2
    assert checksum(data) == 0x220D
    assert verify(data + (0x220D).to_bytes(2, "big"))


def test_odd_length_is_padded_with_a_zero_byte() -> None:
    assert ones_sum(b"\x12") == 0x1200
    assert checksum(b"\x12\x34\x56") == checksum(b"\x12\x34\x56\x00")


def test_negative_zero() -> None:
    assert ones_sum(b"") == 0
    assert ones_sum(b"\xff\xff") == 0xFFFF
    assert ones_sum(b"\x80\x00\x7f\xff") == 0xFFFF
    assert checksum(b"\x00\x00") == 0xFFFF


@settings(max_examples=300)
@given(st.binary(max_size=1500))
def test_checksum_matches_scapy(data: bytes) -> None:
    assert checksum(data) == scapy_checksum(data)
    assert checksum(memoryview(data)) == checksum(bytearray(data))


@settings(max_examples=100)
@given(st.binary(min_size=1, max_size=600), st.integers(0, 0xFFFF))
def test_checksum_with_initial_equals_sum_of_parts(data: bytes, word: int) -> None:
    assert checksum(data, word) == checksum(word.to_bytes(2, "big") + data)


def test_pseudo_sum_picks_family_by_address_length() -> None:
    v4 = pseudo_sum(a4("10.0.0.1"), a4("10.0.0.2"), 6, 20)
    assert checksum(b"", v4) == checksum(a4("10.0.0.1") + a4("10.0.0.2") + bytes((0, 6, 0, 20)))
    v6 = pseudo_sum(a6("::1"), a6("fe80::2"), 17, 8)
    flat = a6("::1") + a6("fe80::2") + (8).to_bytes(4, "big") + bytes((0, 0, 0, 17))
    assert checksum(b"", v6) == checksum(flat)
