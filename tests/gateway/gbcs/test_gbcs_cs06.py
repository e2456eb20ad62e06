"""gateway/gbcs/cs06.py: the CS06 Activate Firmware body."""

from __future__ import annotations

import datetime as dt

import pytest

from gateway.gbcs import CANCELLATION_TIME, ActivateFirmware, GbcsUsageError, MalformedCommand, TrailingBytes, iso_utc
from gateway.gbcs.cs06 import decode_activate_firmware, encode_activate_firmware
from gateway.gbcs.errors import TruncatedCommand

UTC = dt.timezone.utc
HASH = bytes.fromhex("AA758690730934FF0685AA758690730934FF0685657788990011223344556677")
# The content bytes of the reference vectors (counter 1000 immediate, 1001 future-dated).
IMMEDIATE = bytes.fromhex("30260420" + HASH.hex() + "020203E8")
FUTURE = bytes.fromhex("30370420" + HASH.hex() + "020203E9" + "180F") + b"20300115090000Z"


def test_decode_reference_bodies() -> None:
    body, rest = decode_activate_firmware(IMMEDIATE)
    assert rest == b""
    assert body == ActivateFirmware(HASH, 1000, None)
    assert body.immediate and not body.cancels
    body, rest = decode_activate_firmware(FUTURE + b"tail")
    assert rest == b"tail"
    assert body.execution_time == dt.datetime(2030, 1, 15, 9, 0, 0, tzinfo=UTC)
    assert not body.cancels and not body.immediate


def test_encode_is_the_inverse() -> None:
    assert encode_activate_firmware(ActivateFirmware(HASH, 1000)) == IMMEDIATE
    assert encode_activate_firmware(ActivateFirmware(HASH, 1001, dt.datetime(2030, 1, 15, 9, tzinfo=UTC))) == FUTURE
    cancel = ActivateFirmware(HASH, 1002, CANCELLATION_TIME)
    assert cancel.cancels
    assert decode_activate_firmware(encode_activate_firmware(cancel))[0] == cancel


@pytest.mark.parametrize(
    ("content", "exc", "message"),
    [
        # the offsets are base (48, where the content sits in the ciphered vectors) + index
        (IMMEDIATE[:-1], TruncatedCommand, "offset 50: CS06 content: truncated: needs 38 bytes, 37 left"),
        (b"\x31" + IMMEDIATE[1:], MalformedCommand, "offset 48: CS06 content: expected tag 0x30 (SEQUENCE), got 0x31"),
        (bytes.fromhex("3025041F") + HASH[:31] + bytes.fromhex("020203E8"), MalformedCommand,
         "offset 52: CS06 image hash: expected 32 bytes, got 31"),
        (bytes.fromhex("30260420") + HASH + bytes.fromhex("020280E8"), MalformedCommand,
         "offset 86: CS06 counter: negative INTEGER"),
        (bytes.fromhex("30270420") + HASH + bytes.fromhex("02030003E8"), MalformedCommand,
         "offset 86: CS06 counter: non-minimal INTEGER encoding"),
        (bytes.fromhex("30280420") + HASH + bytes.fromhex("020203E80500"), MalformedCommand,
         "offset 88: CS06 execution time: expected tag 0x18 (GeneralizedTime), got 0x05"),
        (bytes.fromhex("30390420") + HASH + bytes.fromhex("020203E9180F") + b"20300115090000Z" + b"\x05\x00", TrailingBytes,
         "offset 105: CS06 content: 2 bytes after the last field"),
        (bytes.fromhex("30370420") + HASH + bytes.fromhex("020203E9180F") + b"20300115090000+", MalformedCommand,
         "offset 90: CS06 execution time: expected YYYYMMDDHHMMSSZ, got b'20300115090000+'"),
        (bytes.fromhex("30370420") + HASH + bytes.fromhex("020203E9180F") + b"20300132090000Z", MalformedCommand,
         "offset 90: CS06 execution time: not a calendar date-time: b'20300132090000Z'"),
    ],
)
def test_refusals_name_offset_and_field(content: bytes, exc: type[Exception], message: str) -> None:
    with pytest.raises(exc) as info:
        decode_activate_firmware(content, base=48)
    assert type(info.value) is exc
    assert str(info.value) == message


def test_value_checks() -> None:
    with pytest.raises(GbcsUsageError):
        ActivateFirmware(HASH[:31], 1)
    with pytest.raises(GbcsUsageError):
        ActivateFirmware(HASH, -1)
    with pytest.raises(GbcsUsageError):
        ActivateFirmware(HASH, 1, dt.datetime(2030, 1, 1))  # naive
    with pytest.raises(GbcsUsageError):
        ActivateFirmware(HASH, 1, dt.datetime(2030, 1, 1, tzinfo=dt.timezone(dt.timedelta(hours=1))))
    with pytest.raises(GbcsUsageError):
        ActivateFirmware(HASH, 1, dt.datetime(2030, 1, 1, 0, 0, 0, 5, tzinfo=UTC))


def test_iso_utc() -> None:
    assert iso_utc(dt.datetime(2030, 1, 15, 9, tzinfo=UTC)) == "2030-01-15T09:00:00Z"
    assert iso_utc(CANCELLATION_TIME) == "9999-12-31T23:59:59Z"
