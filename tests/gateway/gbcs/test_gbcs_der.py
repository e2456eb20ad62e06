"""gateway/gbcs/der.py: the strict DER subset (lengths, INTEGER, OCTET STRING, time)."""

from __future__ import annotations

import datetime as dt

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.gbcs import der
from gateway.gbcs.cursor import Cursor, refusing_short_reads
from gateway.gbcs.errors import MalformedCommand, TruncatedCommand

UTC = dt.timezone.utc


def read(fn, data: bytes, *args):  # type: ignore[no-untyped-def]
    cur = Cursor(data, base=100)
    with refusing_short_reads():
        value = fn(cur, "f", *args)
    return value, cur.remaining


@pytest.mark.parametrize(
    ("encoded", "value"),
    [(b"\x00", 0), (b"\x7f", 127), (b"\x81\x80", 128), (b"\x81\xff", 255), (b"\x82\x01\x00", 256), (b"\x82\xff\xff", 65535)],
)
def test_length_round_trip(encoded: bytes, value: int) -> None:
    assert read(der.read_length, encoded) == (value, 0)
    assert der.encode_length(value) == encoded


@pytest.mark.parametrize(
    ("encoded", "message"),
    [
        (b"\x80", "offset 100: f: indefinite length is not DER"),
        (b"\x81\x7f", "offset 100: f: non-minimal length encoding for 127"),
        (b"\x82\x00\xff", "offset 100: f: non-minimal length encoding for 255"),
        (b"\x83\x01\x00\x00", "offset 100: f: length of 3 bytes is not supported (at most 2)"),
    ],
)
def test_length_refusals(encoded: bytes, message: str) -> None:
    with pytest.raises(MalformedCommand) as info:
        read(der.read_length, encoded)
    assert str(info.value) == message


def test_short_length_is_truncated_with_offset() -> None:
    with pytest.raises(TruncatedCommand) as info:
        read(der.read_length, b"\x82\x01")
    assert str(info.value) == "offset 101: f: truncated: needs 2 bytes, 1 left"


@pytest.mark.parametrize(
    ("encoded", "value"),
    [
        (b"\x02\x01\x00", 0),
        (b"\x02\x01\x7f", 127),
        (b"\x02\x02\x00\x80", 128),
        (b"\x02\x02\x03\xe8", 1000),
        (b"\x02\x09\x00\xff\xff\xff\xff\xff\xff\xff\xff", (1 << 64) - 1),
    ],
)
def test_unsigned_round_trip(encoded: bytes, value: int) -> None:
    assert read(der.read_unsigned, encoded) == (value, 0)
    assert der.encode_unsigned(value) == encoded


@pytest.mark.parametrize(
    ("encoded", "detail"),
    [
        (b"\x02\x00", "empty INTEGER"),
        (b"\x02\x02\x00\x7f", "non-minimal INTEGER encoding"),
        (b"\x02\x02\xff\x80", "non-minimal INTEGER encoding"),
        (b"\x02\x01\x80", "negative INTEGER"),
        (b"\x02\x09\x01\x00\x00\x00\x00\x00\x00\x00\x00", "INTEGER exceeds 64 bits"),
        (b"\x04\x01\x00", "expected tag 0x02 (INTEGER), got 0x04"),
    ],
)
def test_unsigned_refusals(encoded: bytes, detail: str) -> None:
    with pytest.raises(MalformedCommand) as info:
        read(der.read_unsigned, encoded)
    assert info.value.detail == detail
    assert info.value.field == "f"


@given(st.integers(min_value=0, max_value=(1 << 64) - 1))
@settings(max_examples=300, deadline=None)
def test_unsigned_property(value: int) -> None:
    assert read(der.read_unsigned, der.encode_unsigned(value)) == (value, 0)


def test_octet_string_size_is_exact() -> None:
    assert read(der.read_octet_string, b"\x04\x02ab", 2) == (b"ab", 0)
    with pytest.raises(MalformedCommand) as info:
        read(der.read_octet_string, b"\x04\x02ab", 3)
    assert str(info.value) == "offset 102: f: expected 3 bytes, got 2"


def test_generalized_time() -> None:
    enc = der.encode_generalized_time(dt.datetime(2030, 1, 15, 9, 0, 0, tzinfo=UTC))
    assert enc == b"\x18\x0f20300115090000Z"
    assert read(der.read_generalized_time, enc) == (dt.datetime(2030, 1, 15, 9, tzinfo=UTC), 0)
    far = read(der.read_generalized_time, b"\x18\x0f99991231235959Z")[0]
    assert far == dt.datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC)


@pytest.mark.parametrize(
    "body",
    [b"20300115090000", b"20300115090000+", b"2030011509000Z", b"20300115090000.5Z", b"2030-115090000Z", b"20301315090000Z",
     b"20300230090000Z", b"20300115250000Z", b"00000101000000Z"],
)
def test_generalized_time_refusals(body: bytes) -> None:
    with pytest.raises(MalformedCommand) as info:
        read(der.read_generalized_time, bytes([0x18, len(body)]) + body)
    assert info.value.offset == 102
    assert info.value.field == "f"


def test_tlv_value_shorter_than_announced_is_truncated() -> None:
    with pytest.raises(TruncatedCommand) as info:
        read(lambda cur, field: der.read_tlv(cur, der.TAG_SEQUENCE, field), b"\x30\x05\x01\x02")
    assert str(info.value) == "offset 102: f: truncated: needs 5 bytes, 2 left"
