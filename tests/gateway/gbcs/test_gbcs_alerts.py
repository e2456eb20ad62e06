"""CCS08 Firmware Transfer Alert: built exactly as the RTDS vector, signed by the hub,
and every GBCS message read into a MessageInfo with a signature verdict."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from gateway.gbcs.alerts import (
    FirmwareTransferAlert,
    TransferResponse,
    build_transfer_alert,
    decode_transfer_alert,
    encode_transfer_alert_content,
)
from gateway.gbcs.apdu import decode_general_signing
from gateway.gbcs.codes import AlertCode, CraFlag, MessageCode
from gateway.gbcs.errors import GbcsUsageError, MalformedCommand
from gateway.gbcs.ids import EntityId
from gateway.gbcs.messages import SignatureVerdict, read_message
from gateway.gbcs.sign import generate_supplier_identity, load_signing_key
from gateway.gbcs.trust import TrustStore, load_anchor

DATA = Path(__file__).parents[2] / "data" / "gbcs"
VECTOR = bytes.fromhex((DATA / "ccs08-firmware-transfer-alert.hex").read_text())
HUB = EntityId.parse("00DB1234567890A2")
ACB = EntityId.parse("90B3D51F30000002")
PPMID = EntityId.parse("00DB1234567890A4")
RTDS_TIME = dt.datetime(2015, 1, 1, tzinfo=dt.timezone.utc)


@pytest.fixture(scope="module")
def hub_identity() -> tuple[ec.EllipticCurvePrivateKey, bytes]:
    key_pem, cert_pem = generate_supplier_identity(HUB, common_name=f"COMMUNICATIONS HUB {HUB}", role="CHF")
    return load_signing_key(key_pem), cert_pem


def rtds_alert() -> FirmwareTransferAlert:
    return FirmwareTransferAlert.ended(TransferResponse.SUCCESS, device=PPMID, firmware_version=0x0123ABCD, at=RTDS_TIME)


def test_rebuilds_the_rtds_vector_but_its_signature(hub_identity: tuple[ec.EllipticCurvePrivateKey, bytes]) -> None:
    key, _ = hub_identity
    ours = build_transfer_alert(key, originator=HUB, recipient=ACB, counter=4000, alert=rtds_alert())
    assert len(ours) == len(VECTOR)
    assert ours[:-64].hex().upper() == VECTOR[:-64].hex().upper()
    assert ours[-64:] != VECTOR[-64:]  # our key, not the RTDS hub's


def test_unsigned_form_is_the_vector_with_signature_length_zero() -> None:
    ours = build_transfer_alert(None, originator=HUB, recipient=ACB, counter=4000, alert=rtds_alert())
    assert ours == VECTOR[:-65] + b"\x00"


def test_signature_verifies_with_plain_cryptography_and_the_certificate(hub_identity: tuple[ec.EllipticCurvePrivateKey, bytes]) -> None:
    key, cert_pem = hub_identity
    message = build_transfer_alert(key, originator=HUB, recipient=ACB, counter=4001, alert=rtds_alert())
    public = x509.load_pem_x509_certificate(cert_pem).public_key()
    assert isinstance(public, ec.EllipticCurvePublicKey)
    signed, signature = message[1:-65], message[-64:]  # after DF, up to the end of the content
    assert message[-65] == 0x40
    der_sig = encode_dss_signature(int.from_bytes(signature[:32], "big"), int.from_bytes(signature[32:], "big"))
    public.verify(der_sig, signed, ec.ECDSA(hashes.SHA256()))
    with pytest.raises(InvalidSignature):
        public.verify(der_sig, signed[:-1] + b"\x01", ec.ECDSA(hashes.SHA256()))


def test_the_vector_content_decodes_to_its_fields() -> None:
    apdu, rest = decode_general_signing(VECTOR)
    assert rest == b""
    assert (apdu.cra_flag, apdu.message_code, apdu.counter) == (CraFlag.ALERT, MessageCode.FIRMWARE_TRANSFER_ALERT, 4000)
    assert apdu.date_time is None
    alert, extra = decode_transfer_alert(apdu.content, apdu.content_offset)
    assert extra == b""
    assert alert == rtds_alert()
    assert encode_transfer_alert_content(alert) == apdu.content


@pytest.mark.parametrize(
    ("response", "code"),
    [
        (TransferResponse.SUCCESS, AlertCode.FIRMWARE_TRANSFER_SUCCESS),
        (TransferResponse.IMAGE_DISCARDED, AlertCode.FIRMWARE_TRANSFER_FAILURE),
        (TransferResponse.HARDWARE_VERSION_MISMATCH, AlertCode.FIRMWARE_TRANSFER_FAILURE),
        (TransferResponse.FILE_TRANSFER_FAILURE, AlertCode.FIRMWARE_TRANSFER_FAILURE),
    ],
)
def test_each_outcome_has_its_alert_code_and_round_trips(response: TransferResponse, code: AlertCode) -> None:
    at = dt.datetime(2026, 12, 4, 1, 2, 3, 456789, tzinfo=dt.timezone.utc)
    alert = FirmwareTransferAlert.ended(response, device=PPMID, firmware_version=7, at=at)
    assert alert.alert_code is code
    assert alert.execution_time == at.replace(microsecond=0)
    decoded, _ = decode_transfer_alert(encode_transfer_alert_content(alert))
    assert decoded == alert


def test_inconsistent_alert_is_refused() -> None:
    with pytest.raises(GbcsUsageError, match="0x8F8A goes with 0 only"):
        FirmwareTransferAlert(AlertCode.FIRMWARE_TRANSFER_SUCCESS, RTDS_TIME, PPMID, 1, TransferResponse.IMAGE_DISCARDED)
    with pytest.raises(GbcsUsageError, match="not a firmware transfer alert"):
        FirmwareTransferAlert(AlertCode.READ_FIRMWARE_VERSION, RTDS_TIME, PPMID, 1, TransferResponse.SUCCESS)
    with pytest.raises(GbcsUsageError, match="whole seconds"):
        FirmwareTransferAlert(AlertCode.FIRMWARE_TRANSFER_SUCCESS, RTDS_TIME.replace(microsecond=5), PPMID, 1, TransferResponse.SUCCESS)


def test_bad_content_is_refused_with_field_and_offset() -> None:
    content = bytearray(encode_transfer_alert_content(rtds_alert()))
    content[-1] = 9  # responseCode 9
    with pytest.raises(MalformedCommand, match=r"offset 40: CCS08 response code: 9 is not 0, 1, 2 or 3"):
        decode_transfer_alert(bytes(content))
    short = bytes(content).replace(bytes.fromhex("04040123ABCD"), bytes.fromhex("04030123AB"))
    short = bytes([0x30, short[1] - 1]) + short[2:]
    with pytest.raises(MalformedCommand, match=r"offset 36: CCS08 firmware version: expected 4 bytes, got 3"):
        decode_transfer_alert(short)


# ---------------------------------------------------------------- read_message


def test_reads_the_rtds_alert_with_an_unknown_signer() -> None:
    info = read_message(VECTOR)
    assert info.verdict is SignatureVerdict.UNKNOWN_SIGNER
    assert (info.message_code, info.cra_flag, info.originator, info.recipient, info.counter) == (
        MessageCode.FIRMWARE_TRANSFER_ALERT, CraFlag.ALERT, HUB, ACB, 4000,
    )
    assert info.signature == VECTOR[-64:]
    assert info.date_time is None and not info.ciphered
    assert info.to_dict()["hex"] == VECTOR.hex().upper()


def test_verdicts_against_known_keys(hub_identity: tuple[ec.EllipticCurvePrivateKey, bytes]) -> None:
    key, cert_pem = hub_identity
    known = TrustStore({HUB: load_anchor(cert_pem).public_key})
    ours = build_transfer_alert(key, originator=HUB, recipient=ACB, counter=5, alert=rtds_alert())
    assert read_message(ours, known).verdict is SignatureVerdict.VALID
    assert read_message(VECTOR, known).verdict is SignatureVerdict.INVALID  # the RTDS hub's key is not ours
    unsigned = build_transfer_alert(None, originator=HUB, recipient=ACB, counter=5, alert=rtds_alert())
    assert read_message(unsigned, known).verdict is SignatureVerdict.UNSIGNED


def test_the_supplier_signed_vectors_verify_with_the_supplier_anchor() -> None:
    supplier = load_anchor((DATA / "supplier-90b3d51f30010000-ds.pem").read_bytes())
    assert supplier.entity_id is not None
    known = TrustStore({supplier.entity_id: supplier.public_key})
    info = read_message(bytes.fromhex((DATA / "cs06-immediate-success-command.hex").read_text()), known)
    assert info.verdict is SignatureVerdict.VALID and info.ciphered and info.cra_flag is CraFlag.COMMAND


@pytest.mark.parametrize("name", sorted(p.name for p in DATA.glob("*.hex")))
def test_every_vector_is_read(name: str) -> None:
    info = read_message(bytes.fromhex((DATA / name).read_text()))
    assert info.verdict is not SignatureVerdict.MALFORMED, info.error
    assert info.message_code is not None and info.counter is not None


def test_bytes_that_are_not_gbcs_are_kept_as_malformed() -> None:
    info = read_message(b"\x01\x02")
    assert info.verdict is SignatureVerdict.MALFORMED
    assert info.error == "offset 0: APDU tag: expected 0xDD (General Ciphering) or 0xDF (General Signing), got 0x01"
    assert info.message_code is None and info.to_dict()["hex"] == "0102"
    trailing = read_message(VECTOR + b"\x00")
    assert trailing.verdict is SignatureVerdict.MALFORMED and "1 trailing bytes" in (trailing.error or "")


def test_the_devices_vectors_verify_with_their_rtds_device_certificates() -> None:
    """Device certificates name the device in subjectAltName, not x500UniqueIdentifier:
    the hub knows them by the entity id it is given (HubMessages device_keys)."""
    known = TrustStore({
        EntityId.parse(f"00DB1234567890{suffix}"): load_anchor((DATA / f"device-00db1234567890{suffix.lower()}-ds.pem").read_bytes()).public_key
        for suffix in ("A0", "A1", "A4")
    })
    names = ["cs06-immediate-success-response.hex", "cs06-future-dated-success-response.hex", "cs06-cancellation-success-response.hex",
             "cs06-8f66-future-dated-success-alert.hex", "cs09-8f8b-alert.hex", "fdra-zigbee-8f72-alert.hex"]
    for name in names:
        info = read_message(bytes.fromhex((DATA / name).read_text()), known)
        assert info.verdict is SignatureVerdict.VALID, name
