"""eui64/: every written form of an IEEE address, every refusal, and the byte orders."""

from __future__ import annotations

import pytest
import zigpy.types as zt

from eui64 import FORMS, Eui64, Eui64Error

WRITTEN = bytes.fromhex("000d6f000abcdef0")
AIR = bytes([0xF0, 0xDE, 0xBC, 0x0A, 0x00, 0x6F, 0x0D, 0x00])


@pytest.mark.parametrize(
    "text",
    [
        "000d6f000abcdef0",
        "000D6F000ABCDEF0",
        "000d6F000AbCdEf0",
        "00:0d:6f:00:0a:bc:de:f0",
        "00:0D:6F:00:0A:BC:DE:F0",
        "  00:0d:6f:00:0a:bc:de:f0\n",
        "\t000d6f000abcdef0 ",
    ],
)
def test_every_written_form_reads_the_same_address(text: str) -> None:
    addr = Eui64.parse(text)
    assert addr.written == WRITTEN
    assert addr.air == AIR
    assert addr == Eui64(WRITTEN)


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("", "no digits"),
        ("   ", "no digits"),
        ("000d6f000abcdef", "15 hex digits, expected 16"),
        ("000d6f000abcdef000", "18 hex digits, expected 16"),
        ("zz0d6f000abcdef0", "'z' at offset 0 is not a hex digit"),
        ("000d6f000abcdeg0", "'g' at offset 14 is not a hex digit"),
        (" 000d6f000abcdeg0", "'g' at offset 15 is not a hex digit"),
        ("00-0d-6f-00-0a-bc-de-f0", "'-' at offset 2 is not a hex digit"),
        ("000d 6f000abcdef0", "' ' at offset 4 is not a hex digit"),
        ("0x000d6f000abcdef0", "'x' at offset 1 is not a hex digit"),
        ("00:0d", "2 colon-separated groups, expected 8"),
        ("00:0d:6f:00:0a:bc:de:f0:11", "9 colon-separated groups, expected 8"),
        ("00:0d:6f:00:0a:bc:de:", "group 8 at offset 21 is '', expected 2 hex digits"),
        ("0:00d:6f:00:0a:bc:de:f0", "group 1 at offset 0 is '0', expected 2 hex digits"),
        ("00:0d:6f:000:a:bc:de:f0", "group 4 at offset 9 is '000', expected 2 hex digits"),
        ("00:0d:6f:00:0a:bc:de:fg", "'g' at offset 22 is not a hex digit"),
        ("  00:0d:6f:00:0a:bc:zz:f0", "'z' at offset 20 is not a hex digit"),
        ("00::0d:6f:00:0a:bc:de", "group 2 at offset 3 is '', expected 2 hex digits"),
        ("٠٠0d6f000abcdef0", "'٠' at offset 0 is not a hex digit"),
    ],
)
def test_every_refusal_says_what_and_where(text: str, reason: str) -> None:
    with pytest.raises(Eui64Error) as caught:
        Eui64.parse(text, "device[0].ieee")
    err = caught.value
    assert err.reason == reason
    assert (err.field, err.value) == ("device[0].ieee", text)
    assert str(err) == f"device[0].ieee {text!r}: {reason}; expected {FORMS}"
    assert isinstance(err, ValueError)


@pytest.mark.parametrize("value", [None, 0x000D6F000ABCDEF0, WRITTEN])
def test_parse_takes_only_text(value: object) -> None:
    with pytest.raises(Eui64Error, match=f"expected text, got {type(value).__name__}"):
        Eui64.parse(value)


def test_default_field_name() -> None:
    with pytest.raises(Eui64Error, match=r"^IEEE address '00:0d': 2 colon-separated groups"):
        Eui64.parse("00:0d")


def test_written_forms() -> None:
    addr = Eui64(WRITTEN)
    assert str(addr) == "00:0d:6f:00:0a:bc:de:f0"
    assert addr.hex() == "000D6F000ABCDEF0"
    assert Eui64.parse(str(addr)) == Eui64.parse(addr.hex()) == addr


def test_the_byte_orders_agree_with_zigpy() -> None:
    ours = Eui64.parse("00:0d:6f:00:0a:bc:de:f0")
    theirs = zt.EUI64.convert("00:0d:6f:00:0a:bc:de:f0")
    assert bytes(theirs) == ours.air
    assert str(theirs) == str(ours)
    assert zt.EUI64(ours.air) == theirs
    assert Eui64.from_air(theirs) == Eui64.from_air(bytes(theirs)) == Eui64.from_air(list(AIR)) == ours
    assert Eui64.from_air(ours.air) == ours


@pytest.mark.parametrize("raw", [b"", AIR[:7], AIR + b"\x00"])
def test_byte_lengths_refused(raw: bytes) -> None:
    with pytest.raises(Eui64Error) as air:
        Eui64.from_air(raw)
    assert str(air.value) == f"IEEE address {raw!r}: an EUI-64 is 8 bytes, over the air least significant first"
    with pytest.raises(Eui64Error) as written:
        Eui64(raw)
    assert str(written.value) == f"IEEE address {raw!r}: an EUI-64 is 8 bytes"


def test_written_must_be_bytes() -> None:
    with pytest.raises(Eui64Error, match="an EUI-64 is 8 bytes"):
        Eui64(bytearray(WRITTEN))  # type: ignore[arg-type]


def test_of_takes_each_kind_in_its_own_order() -> None:
    addr = Eui64(WRITTEN)
    assert Eui64.of(addr) is addr
    assert Eui64.of("00:0d:6f:00:0a:bc:de:f0") == addr
    assert Eui64.of(AIR) == addr
    assert Eui64.of(zt.EUI64(AIR)) == addr
    with pytest.raises(Eui64Error, match="^--device 'nope': 'n' at offset 0"):
        Eui64.of("nope", "--device")


def test_reserved() -> None:
    assert Eui64(bytes(8)).reserved
    assert Eui64(b"\xff" * 8).reserved
    assert not Eui64(WRITTEN).reserved
    assert not Eui64(b"\xff" * 7 + b"\xfe").reserved


def test_values_hash_and_order() -> None:
    a, b = Eui64.parse("0000000000000001"), Eui64.parse("00:00:00:00:00:00:00:02")
    assert a < b
    assert {a: 1}[Eui64.parse("00:00:00:00:00:00:00:01")] == 1
    with pytest.raises(AttributeError):
        a.written = WRITTEN  # type: ignore[misc]


@pytest.mark.parametrize("value", [8, "00:0d:6f:00:0a:bc:de:f0"])
def test_from_air_takes_no_int_or_text(value: object) -> None:
    # bytes(8) is eight zero bytes: an int must not pass for an address.
    with pytest.raises(Eui64Error, match="expected bytes or ints in over-the-air order"):
        Eui64.from_air(value)  # type: ignore[arg-type]
