"""gateway/gbcs/verify.py: the activation decision, one named reason per failure."""

from __future__ import annotations

import datetime as dt
import hashlib
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.gbcs import (
    REASON_CODES,
    ActivateFirmware,
    AlertCode,
    CraFlag,
    EntityId,
    GbcsUsageError,
    MessageCode,
    Reason,
    ResponseCode,
    TrustStore,
    Verdict,
    load_anchor,
    parse_command,
    sign_activation,
    sign_general_signing,
    signature_valid,
    verify_activation,
    verify_activation_bytes,
)
from gateway.gbcs.cs06 import encode_activate_firmware

DATA = Path(__file__).parents[2] / "data" / "gbcs"
SUPPLIER = EntityId.parse("90B3D51F30010000")
OTHER_SUPPLIER = EntityId.parse("90B3D51F30020000")
DEVICE = EntityId.parse("00DB1234567890A0")
OTHER_DEVICE = EntityId.parse("00DB1234567890A9")
HASH = bytes.fromhex("AA758690730934FF0685AA758690730934FF0685657788990011223344556677")
KEY = serialization.load_pem_private_key((DATA / "supplier-90b3d51f30010000-ds.key").read_bytes(), None)
assert isinstance(KEY, ec.EllipticCurvePrivateKey)
OTHER_KEY = ec.generate_private_key(ec.SECP256R1())
TRUST = TrustStore({SUPPLIER: load_anchor((DATA / "supplier-90b3d51f30010000-ds.pem").read_bytes()).public_key})
TRUST_BOTH = TRUST.with_anchor(OTHER_SUPPLIER, OTHER_KEY.public_key())
COMMANDS = {
    "cs06-immediate-success-command.hex": 1000,
    "cs06-future-dated-success-command.hex": 1001,
    "cs06-cancellation-success-command.hex": 1002,
}


def vector(name: str) -> bytes:
    return bytes.fromhex((DATA / name).read_text())


def check(data: bytes | str, **overrides: object) -> Verdict:
    args: dict[str, object] = dict(
        trust=TRUST, responsible_supplier=SUPPLIER, device_ieee=DEVICE, last_counter=None, held_image_hash=HASH
    )
    args.update(overrides)
    return verify_activation_bytes(data, **args)  # type: ignore[arg-type]


def signed(key: ec.EllipticCurvePrivateKey | None = KEY, *, originator: EntityId = SUPPLIER, recipient: EntityId = DEVICE,
           counter: int = 2000, content_counter: int | None = None, cra_flag: CraFlag = CraFlag.COMMAND,
           message_code: MessageCode | int = MessageCode.ACTIVATE_FIRMWARE, image_hash: bytes = HASH) -> bytes:
    """A General Signing APDU around a CS06 body, with any field set as a test needs."""
    n = counter if content_counter is None else content_counter
    body = encode_activate_firmware(ActivateFirmware(image_hash, n))
    return sign_general_signing(key, cra_flag=cra_flag, counter=counter, originator=originator, recipient=recipient,
                                message_code=message_code, content=body)


# ------------------------------------------------------------------ the reference commands


@pytest.mark.parametrize(("name", "counter"), COMMANDS.items())
def test_reference_commands_verify(name: str, counter: int) -> None:
    verdict = check(vector(name))
    assert verdict.reason is Reason.OK, verdict.message
    assert verdict.ok
    assert verdict.response_code is ResponseCode.SUCCESS
    assert verdict.alert_code is None
    assert verdict.command is not None and verdict.command.counter == counter
    assert verdict.activation is not None and verdict.activation.counter == counter
    # The parsed form and the hex text give the same verdict.
    again = verify_activation(parse_command((DATA / name).read_text()), trust=TRUST, responsible_supplier=SUPPLIER,
                              device_ieee=DEVICE, last_counter=counter - 1, held_image_hash=HASH)
    assert again.reason is Reason.OK


def test_ok_messages_say_what_will_happen() -> None:
    assert check(vector("cs06-immediate-success-command.hex")).message == "verified: activate now (counter 1000)"
    assert check(vector("cs06-future-dated-success-command.hex")).message == "verified: activate at 2030-01-15T09:00:00Z (counter 1001)"
    assert check(vector("cs06-cancellation-success-command.hex")).message == "verified: cancel the scheduled activation (counter 1002)"


@pytest.mark.parametrize("name", COMMANDS)
def test_every_single_bit_flip_outside_the_mac_is_refused(name: str) -> None:
    data = vector(name)
    assert data[0] == 0xDD
    for offset in range(len(data) - 12):
        for mask in (0x01, 0x02, 0x04, 0x08, 0x10, 0x20, 0x40, 0x80, 0xFF):
            flipped = data[:offset] + bytes([data[offset] ^ mask]) + data[offset + 1 :]
            verdict = check(flipped)
            assert not verdict.ok, f"offset {offset} mask {mask:#04x} accepted"


@pytest.mark.parametrize("name", COMMANDS)
def test_the_mac_is_carried_not_checked(name: str) -> None:
    data = vector(name)
    for offset in range(len(data) - 12, len(data)):
        flipped = data[:offset] + bytes([data[offset] ^ 0x5A]) + data[offset + 1 :]
        verdict = check(flipped)
        assert verdict.ok
        assert verdict.command is not None and verdict.command.mac == flipped[-12:]


def test_bare_form_verifies_and_refuses_flips_too() -> None:
    data = vector("cs06-future-dated-success-command.hex")[14:-12]
    assert check(data).ok
    for offset in range(len(data)):
        assert not check(data[:offset] + bytes([data[offset] ^ 0x01]) + data[offset + 1 :]).ok


def test_truncated_and_padded_are_malformed_with_their_own_refusal() -> None:
    data = vector("cs06-immediate-success-command.hex")
    short = check(data[:-1])
    assert short.reason is Reason.MALFORMED
    assert short.command is None
    assert short.response_code is None and short.alert_code is None
    assert short.message == "malformed command: offset 9: ciphered content: truncated: needs 156 bytes, 155 left"
    assert type(short.error).__name__ == "TruncatedCommand"
    long = check(data + b"\x00")
    assert long.reason is Reason.MALFORMED
    assert long.message == "malformed command: offset 165: end of message: 1 trailing byte"
    assert type(long.error).__name__ == "TrailingBytes"


# ------------------------------------------------------------------ one reason per failure


def test_unsigned() -> None:
    verdict = check(signed(None))
    assert verdict.reason is Reason.UNSIGNED
    assert verdict.message == "command is not signed"
    assert verdict.alert_code is AlertCode.TRUSTED_SOURCE_AUTHENTICATION_FAILURE
    assert verdict.response_code is None


def test_another_suppliers_command() -> None:
    cmd = signed(OTHER_KEY, originator=OTHER_SUPPLIER)
    unknown = check(cmd)
    assert unknown.reason is Reason.UNKNOWN_SUPPLIER
    assert unknown.message == "no trust anchor for originator 90B3D51F30020000"
    assert unknown.alert_code is AlertCode.TRUSTED_SOURCE_AUTHENTICATION_FAILURE
    # Known and correctly signed, but not this device's supplier.
    no_authority = check(cmd, trust=TRUST_BOTH)
    assert no_authority.reason is Reason.NO_AUTHORITY
    assert no_authority.message == ("source does not have authority: 90B3D51F30020000 is not the responsible supplier"
                                    " 90B3D51F30010000 of device 00DB1234567890A0")
    assert no_authority.alert_code is AlertCode.SOURCE_DOES_NOT_HAVE_AUTHORITY
    assert no_authority.response_code is None
    # The same command is fine for a device that supplier is responsible for.
    assert check(cmd, trust=TRUST_BOTH, responsible_supplier=OTHER_SUPPLIER).ok


def test_forged_originator_is_a_bad_signature() -> None:
    verdict = check(signed(OTHER_KEY, originator=SUPPLIER), trust=TRUST_BOTH)
    assert verdict.reason is Reason.BAD_SIGNATURE
    assert verdict.message == "signature does not verify with the anchor for 90B3D51F30010000"
    assert verdict.alert_code is AlertCode.TRUSTED_SOURCE_AUTHENTICATION_FAILURE


def test_another_devices_command() -> None:
    verdict = check(vector("cs06-immediate-success-command.hex"), device_ieee=OTHER_DEVICE)
    assert verdict.reason is Reason.WRONG_RECIPIENT
    assert verdict.message == "addressed to 00DB1234567890A0, not to device 00DB1234567890A9"
    assert (verdict.response_code, verdict.alert_code) == (None, None)


def test_wrong_message_code() -> None:
    verdict = check(signed(message_code=MessageCode.FUTURE_DATED_ALERT))
    assert verdict.reason is Reason.WRONG_MESSAGE_CODE
    assert verdict.message == "message code 0x00CA (future-dated command alert) is not CS06 Activate Firmware"


def test_a_cs06_response_is_not_a_command() -> None:
    verdict = check(signed(cra_flag=CraFlag.RESPONSE))
    assert verdict.reason is Reason.NOT_A_COMMAND
    assert verdict.message == "CRA flag is response, not command"


@pytest.mark.parametrize(
    ("name", "flag"),
    [("cs06-immediate-success-response.hex", "response"), ("cs06-8f66-future-dated-success-alert.hex", "alert"),
     ("fdra-zigbee-8f72-alert.hex", "alert")],
)
def test_device_messages_are_not_commands_whoever_signed_them(name: str, flag: str) -> None:
    # Signed by the device, for which we hold no anchor: still "not a command" (issue 11 item 18d).
    verdict = check(vector(name))
    assert verdict.reason is Reason.NOT_A_COMMAND
    assert verdict.message == f"CRA flag is {flag}, not command"


def test_a_message_code_this_layer_does_not_name_is_a_wrong_message_code() -> None:
    # Well formed and signed: not malformed (issue 11 item 18e).
    verdict = check(signed(message_code=0x0013))
    assert verdict.reason is Reason.WRONG_MESSAGE_CODE
    assert verdict.message == "message code 0x0013 (not a message this gateway reads) is not CS06 Activate Firmware"
    assert verdict.command is not None and verdict.command.message_code == 0x0013


def test_counter_mismatch() -> None:
    verdict = check(signed(counter=2000, content_counter=1999))
    assert verdict.reason is Reason.COUNTER_MISMATCH
    assert verdict.message == "content counter 1999 differs from header counter 2000"
    assert verdict.alert_code is AlertCode.TRUSTED_SOURCE_AUTHENTICATION_FAILURE


@pytest.mark.parametrize(("last", "ok"), [(None, True), (0, True), (999, True), (1000, False), (1001, False), (10**12, False)])
def test_replayed_and_lower_counters(last: int | None, ok: bool) -> None:
    verdict = check(vector("cs06-immediate-success-command.hex"), last_counter=last)
    assert verdict.ok is ok
    if not ok:
        assert verdict.reason is Reason.REPLAYED_COUNTER
        assert verdict.message == f"counter 1000 is not above the last accepted {last}"


def test_no_image_held() -> None:
    verdict = check(vector("cs06-immediate-success-command.hex"), held_image_hash=None)
    assert verdict.reason is Reason.NO_IMAGE_HELD
    assert verdict.response_code is ResponseCode.NO_IMAGE_HELD == 1
    assert verdict.alert_code is None


def test_the_sample_image_does_not_match_the_placeholder_hash() -> None:
    image = (DATA / "sr11.1-firmware-image.bin").read_bytes()
    # OTA header (60 bytes) | Manufacturer Image | 1 byte | 0x40 | 64-byte signature
    assert image[-65] == 0x40
    image_hash = hashlib.sha256(image[60:-66]).digest()
    assert image_hash.hex() == "7542f475e3f12eae887d81e32c46d313741d67076b13caec2f82e00ba5e1bb36"
    verdict = check(vector("cs06-future-dated-success-command.hex"), held_image_hash=image_hash)
    assert verdict.reason is Reason.HASH_MISMATCH
    assert verdict.reason.value == "hash mismatch"
    assert verdict.response_code is ResponseCode.HASH_MISMATCH == 2
    assert verdict.alert_code is AlertCode.FIRMWARE_VERIFICATION_FAILURE
    assert verdict.message.startswith("hash mismatch: command names AA7586")


def test_checks_run_in_the_documented_order() -> None:
    # Each case breaks two things; the earlier check in the documented order wins.
    cases = [
        (check(signed(None, cra_flag=CraFlag.ALERT, message_code=MessageCode.FUTURE_DATED_ALERT)), Reason.NOT_A_COMMAND),
        (check(signed(None, message_code=MessageCode.FUTURE_DATED_ALERT)), Reason.WRONG_MESSAGE_CODE),
        (check(signed(None, originator=OTHER_SUPPLIER)), Reason.UNSIGNED),
        (check(signed(OTHER_KEY, originator=SUPPLIER, recipient=OTHER_DEVICE)), Reason.BAD_SIGNATURE),
        (check(signed(OTHER_KEY, originator=OTHER_SUPPLIER, recipient=OTHER_DEVICE), trust=TRUST_BOTH), Reason.NO_AUTHORITY),
        (check(signed(recipient=OTHER_DEVICE, counter=5, content_counter=6)), Reason.WRONG_RECIPIENT),
        (check(signed(counter=5, content_counter=6), last_counter=10), Reason.COUNTER_MISMATCH),
        (check(signed(counter=5), last_counter=10, held_image_hash=None), Reason.REPLAYED_COUNTER),
        (check(signed(image_hash=bytes(32)), held_image_hash=None), Reason.NO_IMAGE_HELD),
    ]
    for verdict, reason in cases:
        assert verdict.reason is reason, verdict.message


def test_codes_table_covers_every_reason() -> None:
    assert set(REASON_CODES) == set(Reason)
    assert REASON_CODES[Reason.OK] == (ResponseCode.SUCCESS, None)
    assert AlertCode.TRUSTED_SOURCE_AUTHENTICATION_FAILURE == 0x8F3D
    assert AlertCode.SOURCE_DOES_NOT_HAVE_AUTHORITY == 0x8F30
    assert AlertCode.FIRMWARE_VERIFICATION_FAILURE == 0x8F1C
    assert AlertCode.FIRMWARE_VERIFICATION_SUCCESS == 0x8F72
    assert Reason.NO_AUTHORITY.value == "source does not have authority"


def test_caller_mistakes_are_usage_errors() -> None:
    cmd = parse_command(vector("cs06-immediate-success-command.hex"))
    with pytest.raises(GbcsUsageError):
        verify_activation(cmd, trust=TRUST, responsible_supplier=SUPPLIER, device_ieee=DEVICE, last_counter=None,
                          held_image_hash=HASH[:16])
    with pytest.raises(GbcsUsageError):
        verify_activation(cmd, trust=TRUST, responsible_supplier=SUPPLIER, device_ieee=DEVICE, last_counter=-1,
                          held_image_hash=HASH)


@pytest.mark.parametrize("sig", [bytes(64), b"\xff" * 64, bytes(32) + b"\x01" * 32, b"\x01" * 63])
def test_degenerate_signatures_are_invalid_not_errors(sig: bytes) -> None:
    cmd = parse_command(vector("cs06-immediate-success-command.hex"))
    assert signature_valid(TRUST[SUPPLIER], cmd.apdu.signed_data, sig) is False


# ------------------------------------------------------------------ properties

ORIGINALS = [vector(n) for n in COMMANDS]


@st.composite
def mutated_command(draw: st.DrawFn) -> tuple[bytes, bytes]:
    original = draw(st.sampled_from(ORIGINALS))
    data = bytearray(original)
    for _ in range(draw(st.integers(1, 3))):
        i = draw(st.integers(0, len(data) - 1))
        kind = draw(st.sampled_from(["set", "xor", "insert", "delete"]))
        if kind == "set":
            data[i] = draw(st.integers(0, 255))
        elif kind == "xor":
            data[i] ^= 1 << draw(st.integers(0, 7))
        elif kind == "insert":
            data[i:i] = draw(st.binary(min_size=1, max_size=3))
        else:
            del data[i]
    return original, bytes(data)


@given(mutated_command(), st.one_of(st.none(), st.integers(0, 2000)))
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_mutated_commands_never_escape_and_never_pass_changed(pair: tuple[bytes, bytes], last: int | None) -> None:
    original, data = pair
    verdict = check(data, last_counter=last)  # raises nothing but a GbcsError (none expected here)
    assert isinstance(verdict.reason, Reason)
    if verdict.ok:
        # Only the MAC may differ from a reference command that is accepted.
        assert len(data) == len(original) and data[:-12] == original[:-12]


@given(st.binary(max_size=260))
@settings(max_examples=300, deadline=None)
def test_random_bytes_are_malformed_or_refused(data: bytes) -> None:
    verdict = check(b"\xdd" + data)
    assert not verdict.ok
    verdict = check(b"\xdf" + data)
    assert not verdict.ok


@given(st.integers(0, (1 << 64) - 1), st.binary(min_size=32, max_size=32), st.booleans())
@settings(max_examples=100, deadline=None)
def test_signed_commands_round_trip_through_the_verifier(counter: int, image_hash: bytes, ciphered: bool) -> None:
    data = sign_activation(KEY, originator=SUPPLIER, device=DEVICE, image_hash=image_hash, counter=counter,
                           execution_time=dt.datetime(2031, 2, 3, 4, 5, 6, tzinfo=dt.timezone.utc), ciphered=ciphered)
    verdict = check(data, held_image_hash=image_hash, last_counter=counter - 1 if counter else None)
    assert verdict.ok, verdict.message
    assert check(data, held_image_hash=image_hash, last_counter=counter).reason is Reason.REPLAYED_COUNTER
