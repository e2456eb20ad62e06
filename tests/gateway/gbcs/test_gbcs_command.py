"""gateway/gbcs/command.py: whole messages from hex text or raw bytes."""

from __future__ import annotations

import base64
import datetime as dt
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.gbcs import (
    CANCELLATION_TIME,
    CraFlag,
    EntityId,
    GbcsError,
    MalformedCommand,
    MessageCode,
    TrailingBytes,
    TruncatedCommand,
    decode_hex_text,
    decode_message_file,
    encode_hex_text,
    parse_command,
    parse_command_file,
)
from gateway.gbcs.apdu import encode_general_ciphering, encode_general_signing, encode_signed_data

DATA = Path(__file__).parents[2] / "data" / "gbcs"
ALL = sorted(p.name for p in DATA.glob("*.hex"))
SUPPLIER = EntityId.parse("90B3D51F30010000")
DEVICE = EntityId.parse("00DB1234567890A0")
HASH = bytes.fromhex("AA758690730934FF0685AA758690730934FF0685657788990011223344556677")
UTC = dt.timezone.utc


def text(name: str) -> str:
    return (DATA / name).read_text()


def vector(name: str) -> bytes:
    return bytes.fromhex(text(name))


# name -> (CRA flag, counter, originator, recipient, message code, ciphered)
EXPECTED = {
    "ccs08-firmware-transfer-alert.hex": (CraFlag.ALERT, 4000, "00DB1234567890A2", "90B3D51F30000002", MessageCode.FIRMWARE_TRANSFER_ALERT, False),
    "cs06-8f66-future-dated-success-alert.hex": (CraFlag.ALERT, 2000, "00DB1234567890A0", "90B3D51F30010000", MessageCode.FUTURE_DATED_ALERT, False),
    "cs06-cancellation-success-command.hex": (CraFlag.COMMAND, 1002, "90B3D51F30010000", "00DB1234567890A0", MessageCode.ACTIVATE_FIRMWARE, True),
    "cs06-cancellation-success-response.hex": (CraFlag.RESPONSE, 1002, "00DB1234567890A0", "90B3D51F30010000", MessageCode.ACTIVATE_FIRMWARE, False),
    "cs06-future-dated-success-command.hex": (CraFlag.COMMAND, 1001, "90B3D51F30010000", "00DB1234567890A0", MessageCode.ACTIVATE_FIRMWARE, True),
    "cs06-future-dated-success-response.hex": (CraFlag.RESPONSE, 1001, "00DB1234567890A0", "90B3D51F30010000", MessageCode.ACTIVATE_FIRMWARE, False),
    "cs06-immediate-success-command.hex": (CraFlag.COMMAND, 1000, "90B3D51F30010000", "00DB1234567890A0", MessageCode.ACTIVATE_FIRMWARE, True),
    "cs06-immediate-success-response.hex": (CraFlag.RESPONSE, 1000, "00DB1234567890A0", "90B3D51F30010000", MessageCode.ACTIVATE_FIRMWARE, False),
    "cs09-8f8b-alert.hex": (CraFlag.ALERT, 5000, "00DB1234567890A4", "90B3D51F30000002", MessageCode.READ_FIRMWARE_VERSION_ALERT, False),
    "fdra-zigbee-8f72-alert.hex": (CraFlag.ALERT, 3000, "00DB1234567890A1", "90B3D51F30010000", MessageCode.FIRMWARE_DISTRIBUTION_RECEIPT_ALERT, False),
}


def test_every_vector_is_covered() -> None:
    assert sorted(EXPECTED) == ALL


@pytest.mark.parametrize("name", ALL)
def test_every_vector_parses(name: str) -> None:
    flag, counter, originator, recipient, code, ciphered = EXPECTED[name]
    cmd = parse_command(text(name))
    assert cmd.cra_flag is flag
    assert cmd.counter == counter
    assert str(cmd.originator) == originator
    assert str(cmd.recipient) == recipient
    assert cmd.message_code is code
    assert cmd.ciphered is ciphered
    assert cmd.apdu.signature is not None
    assert cmd.raw == vector(name)
    assert (cmd.activation is not None) == (flag is CraFlag.COMMAND)
    # Raw bytes and hex text give the same result.
    assert parse_command(vector(name)) == cmd


@pytest.mark.parametrize(
    ("name", "counter", "when"),
    [
        ("cs06-immediate-success-command.hex", 1000, None),
        ("cs06-future-dated-success-command.hex", 1001, dt.datetime(2030, 1, 15, 9, tzinfo=UTC)),
        ("cs06-cancellation-success-command.hex", 1002, CANCELLATION_TIME),
    ],
)
def test_cs06_bodies(name: str, counter: int, when: dt.datetime | None) -> None:
    cmd = parse_command(text(name))
    assert cmd.activation is not None
    assert cmd.activation.image_hash == HASH
    assert cmd.activation.counter == counter
    assert cmd.activation.execution_time == when
    assert cmd.activation.cancels is (when == CANCELLATION_TIME)
    assert cmd.mac == vector(name)[-12:]


def test_vector_files_are_upper_hex_without_newline() -> None:
    for name in ALL:
        raw = (DATA / name).read_bytes()
        assert raw == encode_hex_text(vector(name)).encode("ascii")


def test_hex_text_tolerates_whitespace_and_case() -> None:
    hex_text = text("cs06-immediate-success-command.hex")
    spaced = "\n".join(" ".join(hex_text[i : i + 2] for i in range(j, min(j + 32, len(hex_text)), 2)) for j in range(0, len(hex_text), 32))
    assert parse_command("  " + spaced.lower() + "\r\n\t") == parse_command(hex_text)


@pytest.mark.parametrize(
    ("hex_text", "message"),
    [
        ("DF0G", "offset 3: hex text: not a hex digit: 'G'"),
        ("DF 0x09", "offset 4: hex text: not a hex digit: 'x'"),
        ("DF0", "offset 3: hex text: odd number of hex digits"),
        ("DF:09", "offset 2: hex text: not a hex digit: ':'"),
    ],
)
def test_bad_hex_text(hex_text: str, message: str) -> None:
    with pytest.raises(MalformedCommand) as info:
        parse_command(hex_text)
    assert str(info.value) == message


def test_hex_bytes_must_be_ascii() -> None:
    with pytest.raises(MalformedCommand) as info:
        decode_hex_text(b"DF\xff09")
    assert str(info.value) == "offset 2: hex text: not ASCII"


def test_empty_and_unknown_tag() -> None:
    with pytest.raises(TruncatedCommand) as info:
        parse_command(b"")
    assert str(info.value) == "offset 0: APDU tag: truncated: needs 1 byte, 0 left"
    with pytest.raises(MalformedCommand) as info2:
        parse_command(b"\xde\x00")
    assert str(info2.value) == "offset 0: APDU tag: expected 0xDD (General Ciphering) or 0xDF (General Signing), got 0xDE"


@pytest.mark.parametrize("name", ALL)
def test_every_truncation_is_refused_as_truncated(name: str) -> None:
    data = vector(name)
    for n in range(len(data)):
        with pytest.raises(TruncatedCommand):
            parse_command(data[:n])


def test_truncation_message() -> None:
    data = vector("cs06-immediate-success-command.hex")
    with pytest.raises(TruncatedCommand) as info:
        parse_command(data[:-1])
    assert str(info.value) == "offset 9: ciphered content: truncated: needs 156 bytes, 155 left"
    alert = vector("cs09-8f8b-alert.hex")
    with pytest.raises(TruncatedCommand) as info:
        parse_command(alert[:-10])
    assert str(info.value) == f"offset {len(alert) - 64}: signature: truncated: needs 64 bytes, 54 left"


@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize("pad", [b"\x00", b"\x00" * 12, b"\xdf"])
def test_padding_is_refused_as_trailing(name: str, pad: bytes) -> None:
    data = vector(name)
    with pytest.raises(TrailingBytes) as info:
        parse_command(data + pad)
    n = len(pad)
    assert str(info.value) == f"offset {len(data)}: end of message: {n} trailing byte{'' if n == 1 else 's'}"
    with pytest.raises(TrailingBytes):
        parse_command(text(name) + pad.hex())


def test_bytes_after_the_cs06_sequence_are_refused() -> None:
    content = bytes.fromhex("30260420") + HASH + bytes.fromhex("020203E8") + b"\x00"
    signed = encode_signed_data(
        cra_flag=CraFlag.COMMAND, counter=1000, originator=SUPPLIER, recipient=DEVICE,
        message_code=MessageCode.ACTIVATE_FIRMWARE, content=content,
    )
    with pytest.raises(TrailingBytes) as info:
        parse_command(encode_general_signing(signed, None))
    assert str(info.value) == "offset 74: content: 1 bytes after the CS06 SEQUENCE"


def test_cs06_body_errors_point_into_the_whole_message() -> None:
    data = bytearray(vector("cs06-immediate-success-command.hex"))
    data[84] = 0x03  # the counter's INTEGER tag (0x02) inside the ciphered command
    with pytest.raises(MalformedCommand) as info:
        parse_command(bytes(data))
    assert str(info.value) == "offset 84: CS06 counter: expected tag 0x02 (INTEGER), got 0x03"


def test_parse_command_file_detects_the_form(tmp_path: Path) -> None:
    name = "cs06-future-dated-success-command.hex"
    expected = parse_command(text(name))
    assert parse_command_file((DATA / name).read_bytes()) == expected
    assert parse_command_file(vector(name)) == expected
    assert parse_command_file(b" \n" + (DATA / name).read_bytes() + b"\n") == expected
    with pytest.raises(MalformedCommand) as info:
        parse_command_file(b"\x00\x01")
    assert info.value.field == "message text"


@pytest.mark.parametrize("name", ALL)
def test_base64_text_is_read_like_hex(name: str) -> None:
    # DCC's tools and DUIS GBCSPayload carry messages as base64 (issue 11 item 18).
    b64 = base64.b64encode(vector(name))
    assert decode_message_file(b64) == vector(name)
    wrapped = b"\n".join(b64[i : i + 76] for i in range(0, len(b64), 76)) + b"\r\n"
    assert parse_command_file(wrapped) == parse_command(text(name))


def test_hex_digits_only_are_hex_even_when_valid_base64() -> None:
    assert decode_message_file(b"DF09") == bytes.fromhex("DF09")


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"DF0G", "offset 3: message text: neither hex text (not a hex digit: 'G') nor base64 text (decodes to 0x0C..., not 0xDD or 0xDF); "
                  "expected raw GBCS (first byte 0xDD or 0xDF), hex text or base64 text"),
        (b" \n", "offset 0: message text: empty; expected raw GBCS (first byte 0xDD or 0xDF), hex text or base64 text"),
        (b"DF\xff09", "offset 2: message text: not ASCII, so not hex or base64 text; "
                      "expected raw GBCS (first byte 0xDD or 0xDF), hex text or base64 text"),
    ],
)
def test_a_file_in_none_of_the_forms_names_all_three(data: bytes, message: str) -> None:
    with pytest.raises(MalformedCommand) as info:
        decode_message_file(data)
    assert str(info.value) == message


def test_bad_base64_names_the_base64_problem_too() -> None:
    with pytest.raises(MalformedCommand) as info:
        decode_message_file(b"3wk=B===")
    # binascii's own wording varies between Python versions: check only our parts.
    assert str(info.value).startswith("offset 1: message text: neither hex text (not a hex digit: 'w') nor base64 text (")
    assert str(info.value).endswith("); expected raw GBCS (first byte 0xDD or 0xDF), hex text or base64 text")


# ------------------------------------------------------------------ properties

VECTORS = [vector(n) for n in ALL]


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    data = bytearray(draw(st.sampled_from(VECTORS)))
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["set", "insert", "delete", "truncate"]))
        i = draw(st.integers(0, max(len(data) - 1, 0)))
        if kind == "set" and data:
            data[i] = draw(st.integers(0, 255))
        elif kind == "insert":
            data[i:i] = draw(st.binary(min_size=1, max_size=4))
        elif kind == "delete" and data:
            del data[i : i + draw(st.integers(1, 4))]
        else:
            del data[i:]
    return bytes(data)


@given(st.one_of(st.binary(max_size=300), st.tuples(st.sampled_from([b"\xdd", b"\xdf"]), st.binary(max_size=300)).map(b"".join)))
@settings(max_examples=300, deadline=None)
def test_random_bytes_only_raise_gbcs_errors(data: bytes) -> None:
    try:
        parse_command(data)
    except GbcsError:
        pass


@given(st.text(max_size=200))
@settings(max_examples=300, deadline=None)
def test_random_text_only_raises_gbcs_errors(data: str) -> None:
    try:
        parse_command(data)
    except GbcsError:
        pass


@given(mutated())
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_mutated_vectors_parse_or_are_refused(data: bytes) -> None:
    try:
        cmd = parse_command(data)
    except MalformedCommand as exc:
        assert 0 <= exc.offset <= len(data)
        return
    # Anything accepted re-encodes from its fields to exactly its input: the reader
    # admits one byte form per message, so nothing unsigned can hide in the encoding.
    a = cmd.apdu
    signed = encode_signed_data(
        cra_flag=a.cra_flag, counter=a.counter, originator=a.originator, recipient=a.recipient,
        message_code=a.message_code, content=a.content, date_time=a.date_time, supplementary=a.supplementary,
    )
    assert signed == a.signed_data
    again = encode_general_signing(signed, a.signature)
    if cmd.mac is not None:
        again = encode_general_ciphering(again, cmd.mac)
    assert again == data
