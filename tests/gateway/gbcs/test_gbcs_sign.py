"""gateway/gbcs/sign.py: CS06 commands in the reference layout, and test identities.

Signatures are checked here with plain ``cryptography`` calls and a hand-written
layout, never with the project's own reader or verifier.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from cryptography.x509.oid import NameOID

from gateway.gbcs import (
    EntityId,
    GbcsUsageError,
    generate_supplier_identity,
    load_signing_key,
    sign_activation,
)

DATA = Path(__file__).parents[2] / "data" / "gbcs"
KEY = load_signing_key((DATA / "supplier-90b3d51f30010000-ds.key").read_bytes())
CERT_KEY = x509.load_pem_x509_certificate((DATA / "supplier-90b3d51f30010000-ds.pem").read_bytes()).public_key()
SUPPLIER = EntityId.parse("90B3D51F30010000")
DEVICE = EntityId.parse("00DB1234567890A0")
HASH = bytes.fromhex("AA758690730934FF0685AA758690730934FF0685657788990011223344556677")
UTC = dt.timezone.utc

# vector -> (counter, execution_time, cancel)
VECTORS = {
    "cs06-immediate-success-command.hex": (1000, None, False),
    "cs06-future-dated-success-command.hex": (1001, dt.datetime(2030, 1, 15, 9, 0, 0, tzinfo=UTC), False),
    "cs06-cancellation-success-command.hex": (1002, None, True),
}


def vector(name: str) -> bytes:
    return bytes.fromhex((DATA / name).read_text())


def independent_check(apdu: bytes, public_key: ec.EllipticCurvePublicKey) -> None:
    """A General Signing APDU's signature, checked from the layout alone."""
    assert apdu[0] == 0xDF
    assert apdu[-65] == 0x40
    r = int.from_bytes(apdu[-64:-32], "big")
    s = int.from_bytes(apdu[-32:], "big")
    public_key.verify(encode_dss_signature(r, s), apdu[1:-65], ec.ECDSA(hashes.SHA256()))


def hand_built(counter: int, image_hash: bytes, when: bytes | None, originator: bytes, device: bytes) -> bytes:
    """The signed part of a CS06 command, written out from VECTORS.md by hand."""
    counter_bytes = counter.to_bytes((counter.bit_length() + 8) // 8, "big")  # DER: room for a sign bit
    content = b"\x04\x20" + image_hash + b"\x02" + bytes([len(counter_bytes)]) + counter_bytes
    if when is not None:
        content += b"\x18\x0f" + when
    content = b"\x30" + bytes([len(content)]) + content
    return (b"\x09\x01" + counter.to_bytes(8, "big") + b"\x08" + originator + b"\x08" + device + b"\x00"
            + b"\x02\x00\x12" + bytes([len(content)]) + content)


@pytest.mark.parametrize("name", VECTORS)
def test_resigning_reproduces_the_vectors_except_signature_and_mac(name: str) -> None:
    ref = vector(name)
    counter, when, cancel = VECTORS[name]
    out = sign_activation(KEY, originator=SUPPLIER, device=DEVICE, image_hash=HASH, counter=counter,
                          execution_time=when, cancel=cancel, ciphered=True)
    assert len(out) == len(ref)
    sig_start, mac_start = len(ref) - 12 - 64, len(ref) - 12
    assert out[:sig_start] == ref[:sig_start]
    assert out[sig_start:mac_start] != ref[sig_start:mac_start]  # ECDSA is randomised
    assert out[mac_start:] == bytes(12)  # documented: zero MAC
    independent_check(out[14:-12], CERT_KEY)
    # The bare form is the same APDU without the wrapper.
    bare = sign_activation(KEY, originator=SUPPLIER, device=DEVICE, image_hash=HASH, counter=counter,
                           execution_time=when, cancel=cancel)
    assert bare[:-64] == ref[14:-12 - 64]
    independent_check(bare, CERT_KEY)


@pytest.mark.parametrize(
    ("counter", "when", "cancel", "time_bytes"),
    [
        (0, None, False, None),
        (127, None, False, None),
        (128, None, False, None),
        ((1 << 63) + 5, None, False, None),
        ((1 << 64) - 1, None, True, b"99991231235959Z"),
        (7, dt.datetime(2030, 1, 15, 10, 0, 0, tzinfo=dt.timezone(dt.timedelta(hours=1))), False, b"20300115090000Z"),
    ],
)
def test_layout_matches_hand_built_bytes(counter: int, when: dt.datetime | None, cancel: bool, time_bytes: bytes | None) -> None:
    other_hash = bytes(range(32))
    out = sign_activation(KEY, originator=SUPPLIER, device=DEVICE, image_hash=other_hash, counter=counter,
                          execution_time=when, cancel=cancel)
    assert out[0] == 0xDF
    assert out[1:-65] == hand_built(counter, other_hash, time_bytes, SUPPLIER.raw, DEVICE.raw)
    independent_check(out, CERT_KEY)


def test_ciphered_wrapper_layout() -> None:
    out = sign_activation(KEY, originator=SUPPLIER, device=DEVICE, image_hash=HASH, counter=3, ciphered=True)
    inner_len = len(out) - 9
    assert out[:7] == bytes.fromhex("DD000000000000")
    assert out[7:9] == bytes([0x81, inner_len])
    assert out[9:14] == bytes.fromhex("1100000000")
    independent_check(out[14:-12], CERT_KEY)


def test_a_changed_byte_fails_the_independent_check() -> None:
    out = bytearray(sign_activation(KEY, originator=SUPPLIER, device=DEVICE, image_hash=HASH, counter=3))
    out[40] ^= 1
    with pytest.raises(InvalidSignature):
        independent_check(bytes(out), CERT_KEY)


def test_usage_errors() -> None:
    base = dict(originator=SUPPLIER, device=DEVICE, image_hash=HASH, counter=1)
    with pytest.raises(GbcsUsageError, match="not both"):
        sign_activation(KEY, **base, execution_time=dt.datetime(2030, 1, 1, tzinfo=UTC), cancel=True)  # type: ignore[arg-type]
    with pytest.raises(GbcsUsageError, match="timezone-aware"):
        sign_activation(KEY, **base, execution_time=dt.datetime(2030, 1, 1))  # type: ignore[arg-type]
    with pytest.raises(GbcsUsageError, match="whole seconds"):
        sign_activation(KEY, **base, execution_time=dt.datetime(2030, 1, 1, 0, 0, 0, 1, tzinfo=UTC))  # type: ignore[arg-type]
    with pytest.raises(GbcsUsageError):
        sign_activation(KEY, originator=SUPPLIER, device=DEVICE, image_hash=HASH[:31], counter=1)
    with pytest.raises(GbcsUsageError):
        sign_activation(KEY, originator=SUPPLIER, device=DEVICE, image_hash=HASH, counter=-1)
    with pytest.raises(GbcsUsageError):
        sign_activation(KEY, originator=SUPPLIER, device=DEVICE, image_hash=HASH, counter=1 << 64)
    with pytest.raises(GbcsUsageError):
        sign_activation(ec.generate_private_key(ec.SECP384R1()), **base)  # type: ignore[arg-type]


def test_load_signing_key_refusals() -> None:
    p384 = ec.generate_private_key(ec.SECP384R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    encrypted = ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.BestAvailableEncryption(b"pw"))
    for pem in (p384, encrypted, b"garbage"):
        with pytest.raises(GbcsUsageError):
            load_signing_key(pem)


def test_generated_identity_signs_commands_its_certificate_verifies() -> None:
    entity = EntityId.parse("11:22:33:44:55:66:77:88")
    start = dt.datetime(2026, 1, 1, tzinfo=UTC)
    key_pem, cert_pem = generate_supplier_identity(entity, common_name="BENCH SUPPLIER", now=start)
    key = serialization.load_pem_private_key(key_pem, None)
    assert isinstance(key, ec.EllipticCurvePrivateKey) and isinstance(key.curve, ec.SECP256R1)
    cert = x509.load_pem_x509_certificate(cert_pem)
    public = cert.public_key()
    assert isinstance(public, ec.EllipticCurvePublicKey)
    assert public.public_numbers() == key.public_key().public_numbers()
    [uid] = cert.subject.get_attributes_for_oid(NameOID.X500_UNIQUE_IDENTIFIER)
    assert uid.value == b"\x00" + bytes.fromhex("1122334455667788")
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "BENCH SUPPLIER"
    assert cert.not_valid_before_utc == start
    cert.verify_directly_issued_by(cert)  # self-signed
    out = sign_activation(load_signing_key(key_pem), originator=entity, device=DEVICE, image_hash=HASH, counter=9)
    assert out[1:-65] == hand_built(9, HASH, None, entity.raw, DEVICE.raw)
    independent_check(out, public)
    with pytest.raises(InvalidSignature):
        independent_check(out, CERT_KEY)  # not the reference supplier's key
