"""gateway/gbcs/apdu.py: General Signing and General Ciphering layouts."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from gateway.gbcs import (
    CosemDateTime,
    CraFlag,
    EntityId,
    MalformedCommand,
    MessageCode,
    SupplementaryRemoteParty,
    TrailingBytes,
    TruncatedCommand,
    UnknownCode,
)
from gateway.gbcs.apdu import (
    decode_general_ciphering,
    decode_general_signing,
    encode_general_ciphering,
    encode_general_signing,
    encode_signed_data,
)

DATA = Path(__file__).parents[2] / "data" / "gbcs"
ALL = sorted(p.name for p in DATA.glob("*.hex"))
SUPPLIER = EntityId.parse("90B3D51F30010000")
DEVICE = EntityId.parse("00DB1234567890A0")


def vector(name: str) -> bytes:
    return bytes.fromhex((DATA / name).read_text())


def bare(name: str) -> bytes:
    """The General Signing APDU of a vector (unwrapped when ciphered)."""
    data = vector(name)
    return data[14:-12] if data[0] == 0xDD else data


def test_alert_fields() -> None:
    data = vector("fdra-zigbee-8f72-alert.hex")
    apdu, rest = decode_general_signing(data + b"more")
    assert rest == b"more"
    assert apdu.cra_flag is CraFlag.ALERT
    assert apdu.counter == 3000
    assert apdu.originator == EntityId.parse("00DB1234567890A1")
    assert apdu.recipient == SUPPLIER
    assert apdu.date_time is None
    assert apdu.message_code is MessageCode.FIRMWARE_DISTRIBUTION_RECEIPT_ALERT
    assert apdu.supplementary is None
    assert apdu.content == data[34:-65]
    assert apdu.signature == data[-64:]
    assert apdu.signed_data == data[1:-65]
    assert apdu.content_offset == 34


@pytest.mark.parametrize("name", ALL)
def test_every_vector_re_encodes_to_its_bytes(name: str) -> None:
    data = bare(name)
    apdu, rest = decode_general_signing(data)
    assert rest == b""
    signed = encode_signed_data(
        cra_flag=apdu.cra_flag,
        counter=apdu.counter,
        originator=apdu.originator,
        recipient=apdu.recipient,
        message_code=apdu.message_code,
        content=apdu.content,
        date_time=apdu.date_time,
        supplementary=apdu.supplementary,
    )
    assert signed == apdu.signed_data == data[1:-65]
    assert encode_general_signing(signed, apdu.signature) == data


@pytest.mark.parametrize("name", [n for n in ALL if n.endswith("command.hex")])
def test_ciphered_vectors_unwrap_and_rewrap(name: str) -> None:
    data = vector(name)
    wrapper, rest = decode_general_ciphering(data)
    assert rest == b""
    assert wrapper.mac == data[-12:]
    assert wrapper.apdu.signed_data == data[15:-77]
    assert encode_general_ciphering(bare(name), wrapper.mac) == data


def test_response_date_time() -> None:
    apdu, _ = decode_general_signing(vector("cs06-immediate-success-response.hex"))
    assert apdu.date_time == CosemDateTime(bytes.fromhex("07DF0101FF000000008000FF"))
    assert apdu.date_time.as_datetime() == dt.datetime(2015, 1, 1, tzinfo=dt.timezone.utc)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("07DF0101FF000000008000FF", dt.datetime(2015, 1, 1, tzinfo=dt.timezone.utc)),
        ("07E6061503" "0C1E2D32" "0000" "00", dt.datetime(2022, 6, 21, 12, 30, 45, 500000, tzinfo=dt.timezone.utc)),
        ("07E6061503" "0C1E2D32" "003C" "00", None),  # a local-time deviation: not interpreted
        ("07DF01FFFF000000008000FF", None),  # day not specified
        ("07DF0231FF000000008000FF", None),  # 31 February
    ],
)
def test_cosem_date_time(raw: str, expected: dt.datetime | None) -> None:
    assert CosemDateTime(bytes.fromhex(raw)).as_datetime() == expected


def test_supplementary_remote_party_round_trip() -> None:
    extra = SupplementaryRemoteParty(EntityId.parse("1122334455667788"), 77)
    signed = encode_signed_data(
        cra_flag=CraFlag.COMMAND, counter=5, originator=SUPPLIER, recipient=DEVICE,
        message_code=MessageCode.ACTIVATE_FIRMWARE, content=b"\x05\x00", supplementary=extra,
    )
    assert signed[28:32] == b"\x00\x12\x00\x12"  # no date-time; other-information length 18; the code
    apdu, rest = decode_general_signing(encode_general_signing(signed, None))
    assert rest == b""
    assert apdu.supplementary == extra
    assert apdu.signature is None
    assert apdu.content == b"\x05\x00"


def with_byte(data: bytes, offset: int, value: int) -> bytes:
    return data[:offset] + bytes([value]) + data[offset + 1 :]


ALERT = vector("fdra-zigbee-8f72-alert.hex")


def test_a_message_code_without_a_name_is_carried() -> None:
    apdu, rest = decode_general_signing(with_byte(ALERT, 32, 0xCE))
    assert (apdu.message_code, type(apdu.message_code), rest) == (0x00CE, int, b"")


@pytest.mark.parametrize(
    ("data", "exc", "message"),
    [
        (with_byte(ALERT, 0, 0xDE), MalformedCommand, "offset 0: general signing tag: expected 0xDF (General Signing), got 0xDE"),
        (with_byte(ALERT, 1, 0x08), MalformedCommand, "offset 1: transaction id length: expected 0x09 (9 bytes), got 0x08"),
        (with_byte(ALERT, 2, 0x04), UnknownCode, "offset 2: CRA flag: unknown CRA flag 0x04 (01 command, 02 response, 03 alert)"),
        (with_byte(ALERT, 2, 0x00), UnknownCode, "offset 2: CRA flag: unknown CRA flag 0x00 (01 command, 02 response, 03 alert)"),
        (with_byte(ALERT, 11, 0x07), MalformedCommand, "offset 11: originator length: expected 0x08 (8 bytes), got 0x07"),
        (with_byte(ALERT, 20, 0x09), MalformedCommand, "offset 20: recipient length: expected 0x08 (8 bytes), got 0x09"),
        (with_byte(ALERT, 29, 0x0B), MalformedCommand, "offset 29: date-time: expected length 0x00 or 0x0C, got 0x0B"),
        (with_byte(ALERT, 30, 0x03), MalformedCommand,
         "offset 30: other information length: expected 0x02 (message code) or 0x12 (with remote party and counter), got 0x03"),
        (with_byte(ALERT, 33, 0x80), MalformedCommand, "offset 33: content length: indefinite length is not DER"),
        (with_byte(ALERT, 77, 0x41), MalformedCommand,
         "offset 77: signature length: expected 0x40 (signed) or 0x00 (unsigned), got 0x41"),
        (ALERT[:-1], TruncatedCommand, "offset 78: signature: truncated: needs 64 bytes, 63 left"),
        (ALERT[:20], TruncatedCommand, "offset 20: recipient length: truncated: needs 1 byte, 0 left"),
        (ALERT[:5], TruncatedCommand, "offset 3: originator counter: truncated: needs 8 bytes, 2 left"),
        (b"", TruncatedCommand, "offset 0: general signing tag: truncated: needs 1 byte, 0 left"),
    ],
)
def test_general_signing_refusals(data: bytes, exc: type[Exception], message: str) -> None:
    with pytest.raises(exc) as info:
        decode_general_signing(data)
    assert type(info.value) is exc
    assert str(info.value) == message


CIPHERED = vector("cs06-immediate-success-command.hex")


def test_ciphering_fixed_fields_are_checked() -> None:
    names = ["transaction id", "originator system title", "recipient system title", "date-time", "other information", "key info"]
    for offset, name in enumerate(names, start=1):
        with pytest.raises(MalformedCommand) as info:
            decode_general_ciphering(with_byte(CIPHERED, offset, 0x01))
        assert str(info.value) == f"offset {offset}: ciphering {name}: expected 0x00 (empty; only this form is supported), got 0x01"
    with pytest.raises(MalformedCommand) as info:
        decode_general_ciphering(with_byte(CIPHERED, 13, 0x01))
    assert str(info.value) == "offset 9: security header: expected 1100000000, got 1100000001"


def test_ciphering_lengths_must_add_up() -> None:
    inner = CIPHERED[9:]
    # One byte between the APDU and the MAC (length adjusted to cover it).
    padded = CIPHERED[:7] + b"\x81\x9d" + inner[:-12] + b"\x00" + inner[-12:]
    with pytest.raises(TrailingBytes) as info:
        decode_general_ciphering(padded)
    assert str(info.value) == "offset 153: ciphered content: 1 bytes between the APDU and the 12-byte MAC"
    # The MAC one byte short (length adjusted), and the length one short of the data.
    with pytest.raises(TruncatedCommand) as info2:
        decode_general_ciphering(CIPHERED[:7] + b"\x81\x9b" + inner[:-1])
    assert str(info2.value) == "offset 153: MAC: truncated: needs 12 bytes, 11 left"
    # Bytes after the announced length are handed back for the caller to refuse.
    _, rest = decode_general_ciphering(CIPHERED + b"\xee")
    assert rest == b"\xee"
    with pytest.raises(TruncatedCommand):
        decode_general_ciphering(CIPHERED[:-1])
