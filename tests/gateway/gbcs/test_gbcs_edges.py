"""Signature and date-time edge cases of GBCS verification, and the decisions on them.

Decisions (docs/gbcs.md):
- A high-S ECDSA signature verifies: GBCS asks only for ECDSA P-256 / SHA-256 r||s, two
  of the three reference CS06 commands are high-S, and DCC's own tooling signs with
  OpenSSL, which does not normalise s. Re-encoding a command with n - s makes other
  bytes of the same supplier-signed command; the anti-replay counter refuses it once
  either form has been accepted.
- A header date-time of twelve zero bytes is not a COSEM date-time (month and day 0 do
  not exist; "not specified" is 0xFF per field and 0x8000 for the deviation), so the
  message is malformed, refused at the date-time's offset. A valid header date-time on
  a command is carried and plays no part in when CS06 executes (that is the content's
  execution date-time).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from typer.testing import CliRunner

from gateway.gbcs import (
    ActivateFirmware,
    CosemDateTime,
    CraFlag,
    EntityId,
    MalformedCommand,
    MessageCode,
    Reason,
    TrustStore,
    Verdict,
    load_anchor,
    parse_command,
    sign_general_signing,
    verify_activation_bytes,
)
from gateway.gbcs.cs06 import encode_activate_firmware
from han_ota.cli_gbcs import app

DATA = Path(__file__).parents[2] / "data" / "gbcs"
SUPPLIER = EntityId.parse("90B3D51F30010000")
DEVICE = EntityId.parse("00DB1234567890A0")
HASH = bytes.fromhex("AA758690730934FF0685AA758690730934FF0685657788990011223344556677")
KEY = serialization.load_pem_private_key((DATA / "supplier-90b3d51f30010000-ds.key").read_bytes(), None)
assert isinstance(KEY, ec.EllipticCurvePrivateKey)
TRUST = TrustStore({SUPPLIER: load_anchor((DATA / "supplier-90b3d51f30010000-ds.pem").read_bytes()).public_key})
N = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551  # order of P-256


def vector(name: str) -> bytes:
    return bytes.fromhex((DATA / name).read_text())


def check(data: bytes, last_counter: int | None = None) -> Verdict:
    return verify_activation_bytes(
        data, trust=TRUST, responsible_supplier=SUPPLIER, device_ieee=DEVICE, last_counter=last_counter, held_image_hash=HASH
    )


def with_s(data: bytes, s: int) -> bytes:
    """``data`` (a General Ciphered CS06: signature, then the 12-byte MAC) with another s."""
    return data[:-44] + s.to_bytes(32, "big") + data[-12:]


def s_of(data: bytes) -> int:
    return int.from_bytes(data[-44:-12], "big")


# ------------------------------------------------------------------ high-S signatures


@pytest.mark.parametrize(
    ("name", "high"),
    [("cs06-immediate-success-command.hex", True), ("cs06-future-dated-success-command.hex", False),
     ("cs06-cancellation-success-command.hex", True)],
)
def test_reference_commands_are_high_and_low_s_and_all_verify(name: str, high: bool) -> None:
    # Refusing high-S would refuse DCC's own reference commands.
    assert (s_of(vector(name)) > N // 2) is high
    assert check(vector(name)).ok


@pytest.mark.parametrize("name", ["cs06-immediate-success-command.hex", "cs06-future-dated-success-command.hex"])
def test_the_other_s_verifies_and_the_counter_refuses_it_as_a_replay(name: str) -> None:
    original = vector(name)
    flipped = with_s(original, N - s_of(original))
    assert flipped != original
    counter = parse_command(original).counter
    assert check(flipped).ok  # the same supplier-signed command, other bytes
    for first, second in ((original, flipped), (flipped, original)):
        assert check(first).ok
        replay = check(second, last_counter=counter)  # the first one was accepted
        assert replay.reason is Reason.REPLAYED_COUNTER
        assert replay.message == f"counter {counter} is not above the last accepted {counter}"


@pytest.mark.parametrize("s", [0, N, N + 1, (1 << 256) - 1])
def test_s_outside_1_to_n_minus_1_is_a_bad_signature(s: int) -> None:
    assert check(with_s(vector("cs06-immediate-success-command.hex"), s)).reason is Reason.BAD_SIGNATURE


# ------------------------------------------------------------------ header date-time


def with_date_time(raw: bytes) -> bytes:
    body = encode_activate_firmware(ActivateFirmware(HASH, 2000))
    return sign_general_signing(KEY, cra_flag=CraFlag.COMMAND, counter=2000, originator=SUPPLIER, recipient=DEVICE,
                                message_code=MessageCode.ACTIVATE_FIRMWARE, content=body, date_time=CosemDateTime(raw))


def test_twelve_zero_bytes_are_not_a_date_time() -> None:
    verdict = check(with_date_time(bytes(12)))  # correctly signed: only the date-time is wrong
    assert verdict.reason is Reason.MALFORMED
    assert verdict.error is not None and (verdict.error.offset, verdict.error.field) == (30, "date-time")
    assert verdict.message == (
        "malformed command: offset 30: date-time: twelve zero bytes are not a COSEM date-time (month and day 0 do"
        " not exist; a field not specified is 0xFF and the deviation 0x8000, and a message without a date-time has"
        " length 00)"
    )


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ("07DF0D01FF000000008000FF", "offset 32: date-time: month 0x0D is out of range (1-12, 0xFD-0xFF)"),
        ("07DF0100FF000000008000FF", "offset 33: date-time: day of month 0x00 is out of range (1-31, 0xFD-0xFF)"),
        ("07DF010100000000008000FF", "offset 34: date-time: day of week 0x00 is out of range (1-7, 0xFF)"),
        ("07DF0101FF180000008000FF", "offset 35: date-time: hour 0x18 is out of range (0-23, 0xFF)"),
        ("07DF0101FF000000647FFFFF", "offset 38: date-time: hundredths 0x64 is out of range (0-99, 0xFF)"),
        ("07DF0101FF00000000 7FFF FF".replace(" ", ""),
         "offset 39: date-time: deviation 0x7FFF is out of range (-720 to 720 minutes, 0x8000 not specified)"),
    ],
)
def test_a_date_time_field_out_of_range_is_named(raw: str, message: str) -> None:
    with pytest.raises(MalformedCommand) as info:
        parse_command(with_date_time(bytes.fromhex(raw)))
    assert str(info.value) == message


@pytest.mark.parametrize("raw", ["07DF0101FF000000008000FF", "FFFFFFFFFFFFFFFFFF8000FF", "07E6061503" "0C1E2D32" "FD30" "00"])
def test_a_valid_header_date_time_is_carried_and_does_not_schedule(raw: str) -> None:
    verdict = check(with_date_time(bytes.fromhex(raw)))
    assert verdict.ok, verdict.message
    assert verdict.command is not None and verdict.command.apdu.date_time == CosemDateTime(bytes.fromhex(raw))
    # When CS06 executes is the content's execution date-time alone: none here, so now.
    assert verdict.activation is not None and verdict.activation.immediate
    assert verdict.message == "verified: activate now (counter 2000)"


def test_gbcs_verify_names_the_zero_date_time(tmp_path: Path) -> None:
    import json

    path = tmp_path / "zero-date-time.hex"
    path.write_text(with_date_time(bytes(12)).hex())
    result = CliRunner().invoke(app, ["verify", str(path), "--trust", str(DATA / "supplier-90b3d51f30010000-ds.pem"), "--json"])
    report = json.loads(result.output.splitlines()[-1])
    assert (result.exit_code, report["code"], report["error"]["offset"], report["error"]["field"]) == (1, "MALFORMED", 30, "date-time")
