"""radios/sim/gbcs reader, DER and image hash: the RTDS vectors read, refusals exact."""

from __future__ import annotations

import pytest

from radios.sim.gbcs import GbcsReadError, manufacturer_image_hash, read_message, receipt_hash, signature_verifies
from radios.sim.gbcs import der
from radios.sim.gbcs.content import read_cs06
from radios.sim.gbcs.cursor import Cursor
from radios.sim.gbcs.identity import load_anchor
from sim_gbcs_support import (
    ACB,
    DATA,
    ESME,
    GSME,
    PLACEHOLDER_HASH,
    PPMID,
    SR11_1_HASH,
    SUPPLIER,
    T2030,
    cert_key,
    vector,
)

# name: (CRA flag, counter, originator, recipient, message code, signer's certificate)
VECTORS = {
    "cs06-immediate-success-command.hex": (1, 1000, SUPPLIER, ESME, 0x0012, "supplier-90b3d51f30010000-ds.pem"),
    "cs06-future-dated-success-command.hex": (1, 1001, SUPPLIER, ESME, 0x0012, "supplier-90b3d51f30010000-ds.pem"),
    "cs06-cancellation-success-command.hex": (1, 1002, SUPPLIER, ESME, 0x0012, "supplier-90b3d51f30010000-ds.pem"),
    "cs06-immediate-success-response.hex": (2, 1000, ESME, SUPPLIER, 0x0012, "device-00db1234567890a0-ds.pem"),
    "cs06-future-dated-success-response.hex": (2, 1001, ESME, SUPPLIER, 0x0012, "device-00db1234567890a0-ds.pem"),
    "cs06-cancellation-success-response.hex": (2, 1002, ESME, SUPPLIER, 0x0012, "device-00db1234567890a0-ds.pem"),
    "cs06-8f66-future-dated-success-alert.hex": (3, 2000, ESME, SUPPLIER, 0x00CA, "device-00db1234567890a0-ds.pem"),
    "fdra-zigbee-8f72-alert.hex": (3, 3000, GSME, SUPPLIER, 0x00CF, "device-00db1234567890a1-ds.pem"),
    "cs09-8f8b-alert.hex": (3, 5000, PPMID, ACB, 0x012B, "device-00db1234567890a4-ds.pem"),
}


@pytest.mark.parametrize("name", sorted(VECTORS))
def test_vector_header_fields_and_its_own_signature(name: str) -> None:
    cra, counter, originator, recipient, code, cert = VECTORS[name]
    m = read_message(vector(name))
    assert (m.cra_flag, m.counter, m.originator, m.recipient, m.message_code) == (cra, counter, originator, recipient, code)
    assert m.wrapped == name.endswith("command.hex")
    assert signature_verifies(m, cert_key(cert))
    # Another signer's key does not verify it.
    other = "supplier-90b3d51f30010000-ds.pem" if cert.startswith("device") else "device-00db1234567890a0-ds.pem"
    assert not signature_verifies(m, cert_key(other))


def test_responses_carry_a_date_time_and_commands_and_alerts_none() -> None:
    assert read_message(vector("cs06-immediate-success-response.hex")).date_time == bytes.fromhex("07DF0101FF000000008000FF")
    assert read_message(vector("cs06-immediate-success-command.hex")).date_time is None
    assert read_message(vector("cs09-8f8b-alert.hex")).date_time is None


def test_a_changed_signed_byte_fails_the_signature() -> None:
    data = bytearray(vector("cs06-immediate-success-command.hex"))
    data[14 + 60] ^= 0x01  # inside the CS06 content
    assert not signature_verifies(read_message(bytes(data)), cert_key("supplier-90b3d51f30010000-ds.pem"))


def test_the_content_offset_points_at_the_content() -> None:
    data = vector("cs06-immediate-success-command.hex")
    m = read_message(data)
    assert data[m.content_offset : m.content_offset + len(m.content)] == m.content
    assert m.content[:2] == b"\x30\x26"


def test_cs06_contents() -> None:
    immediate = read_message(vector("cs06-immediate-success-command.hex"))
    c = read_cs06(immediate.content)
    assert (c.image_hash, c.counter, c.execution_time, c.cancels) == (PLACEHOLDER_HASH, 1000, None, False)
    c = read_cs06(read_message(vector("cs06-future-dated-success-command.hex")).content)
    assert (c.counter, c.execution_time, c.cancels) == (1001, T2030, False)
    c = read_cs06(read_message(vector("cs06-cancellation-success-command.hex")).content)
    assert (c.counter, c.cancels) == (1002, True)


def _refusal(data: bytes) -> str:
    with pytest.raises(GbcsReadError) as info:
        read_message(data)
    return str(info.value)


def test_refusals_name_field_and_offset() -> None:
    bare = vector("cs06-immediate-success-response.hex")
    wrapped = vector("cs06-immediate-success-command.hex")
    assert _refusal(b"") == "GBCS: tag at offset 0: empty message"
    assert _refusal(b"\xde" + bare[1:]) == "GBCS: General Signing tag at offset 0: expected 0xDF, got 0xDE"
    assert _refusal(bare[:5]) == "GBCS: originator counter at offset 3: needs 8 bytes, 2 left"
    assert _refusal(bare[:2] + b"\x04" + bare[3:]) == "GBCS: CRA flag at offset 2: 0x04 (01 command, 02 response, 03 alert)"
    assert _refusal(bare[:29] + b"\x0b" + bare[30:]) == "GBCS: date-time length at offset 29: 0x0B (00 absent, 0C present)"
    assert _refusal(bare + b"\x00") == "GBCS: General Signing APDU at offset 122: 1 trailing byte"
    assert _refusal(bare[:-65] + b"\x41" + bare[-64:]) == "GBCS: signature length at offset 57: 0x41 (40 signed, 00 unsigned)"
    assert _refusal(bare[:-1]) == "GBCS: signature at offset 58: needs 64 bytes, 63 left"
    assert _refusal(bare[:45] + b"\x50" + bare[46:]) == "GBCS: content at offset 46: needs 80 bytes, 76 left"
    assert _refusal(bare[:42] + b"\x01" + bare[43:]) == "GBCS: other information length at offset 42: shorter than the 2-byte message code"
    assert _refusal(wrapped[:3] + b"\x01" + wrapped[4:]) == "GBCS: General Ciphering header at offset 1: expected six empty fields (00 00 00 00 00 00)"
    assert _refusal(wrapped[:9] + b"\x12" + wrapped[10:]) == "GBCS: security header at offset 9: expected 11 00000000"
    assert _refusal(wrapped + b"\x00") == "GBCS: General Ciphering at offset 165: 1 trailing byte"
    assert _refusal(wrapped[:-1]) == "GBCS: General Ciphering body at offset 9: needs 156 bytes, 155 left"


def test_der_refusals() -> None:
    with pytest.raises(GbcsReadError, match=r"^GBCS: x length at offset 1: length 5 not in its shortest form$"):
        der.read_tlv(Cursor(b"\x04\x81\x05hello"), der.OCTET_STRING, "x")
    with pytest.raises(GbcsReadError, match=r"^GBCS: x length at offset 1: length form 0x83 \(short form, 0x81 or 0x82 only\)$"):
        der.read_tlv(Cursor(b"\x04\x83\x00\x00\x01a"), der.OCTET_STRING, "x")
    with pytest.raises(GbcsReadError, match=r"^GBCS: n at offset 0: INTEGER not in its shortest form$"):
        der.read_integer(Cursor(b"\x02\x02\x00\x05"), "n")
    with pytest.raises(GbcsReadError, match=r"^GBCS: n at offset 0: empty INTEGER$"):
        der.read_integer(Cursor(b"\x02\x00"), "n")
    with pytest.raises(GbcsReadError, match=r"^GBCS: t at offset 0: GeneralizedTime b'2030011509000Z' is not YYYYMMDDHHMMSSZ$"):
        der.read_generalized_time(Cursor(der.tlv(der.GENERALIZED_TIME, b"2030011509000Z")), "t")
    assert der.read_integer(Cursor(der.encode_integer(0x8F66)), "n") == 0x8F66
    assert der.encode_integer(0x8F66) == bytes.fromhex("0203008F66")
    assert der.encode_integer(0) == bytes.fromhex("020100")
    assert der.encode_length(0x9C) == b"\x81\x9c" and der.encode_length(300) == b"\x82\x01\x2c"


def test_cs06_content_refusals_count_from_the_message() -> None:
    m = read_message(vector("cs06-immediate-success-command.hex"))
    short_hash = bytes.fromhex("301E0418") + bytes(24) + der.encode_integer(1000)
    with pytest.raises(GbcsReadError, match=r"^GBCS: manufacturer image hash at offset 50: 24 bytes, expected 32$"):
        read_cs06(short_hash, m.content_offset)
    with pytest.raises(GbcsReadError, match=r"^GBCS: CS06 content at offset 88: 1 trailing byte$"):
        read_cs06(m.content + b"\x00", m.content_offset)


def test_rtds_anchors_name_their_entity_ids() -> None:
    assert load_anchor((DATA / "supplier-90b3d51f30010000-ds.pem").read_bytes())[0] == SUPPLIER
    assert load_anchor((DATA / "device-00db1234567890a4-ds.pem").read_bytes())[0] == PPMID  # hardwareModuleName form


def test_manufacturer_image_hash_of_the_sample_images() -> None:
    assert manufacturer_image_hash((DATA / "sr11.1-firmware-image.bin").read_bytes()) == SR11_1_HASH
    ppmid = (DATA / "sr11.4-ppmid-firmware-image.bin").read_bytes()
    import hashlib

    header_length = int.from_bytes(ppmid[6:8], "little")
    assert manufacturer_image_hash(ppmid) == hashlib.sha256(ppmid[header_length:]).digest()  # unsigned form
    with pytest.raises(GbcsReadError, match=r"^GBCS: OTA header at offset 0: 10 bytes, shorter than an OTA header \(56\)$"):
        manufacturer_image_hash(bytes(10))


def test_manufacturer_image_of_a_zigbee_sub_element_file() -> None:
    sr = (DATA / "sr11.1-firmware-image.bin").read_bytes()
    header = bytearray(sr[:60])
    firmware = b"firmware proper"
    body = (0).to_bytes(2, "little") + len(firmware).to_bytes(4, "little") + firmware
    body += (0x0001).to_bytes(2, "little") + (3).to_bytes(4, "little") + b"sig"
    image = bytes(header) + body
    import hashlib

    assert manufacturer_image_hash(image) == hashlib.sha256(firmware).digest()


def test_receipt_hash_falls_back_to_the_whole_file_when_no_header_is_readable() -> None:
    import hashlib

    sr = (DATA / "sr11.1-firmware-image.bin").read_bytes()
    assert receipt_hash(sr) == SR11_1_HASH
    broken = sr[:6] + b"\xff\xff" + sr[8:]  # header length beyond the file
    assert receipt_hash(broken) == hashlib.sha256(broken).digest()
