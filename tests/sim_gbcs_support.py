"""What the tests of the simulated devices' GBCS share: the RTDS vectors, keys, times.

The RTDS device certificates (device-00db1234567890a*-ds.pem) are the public ones of
SmartDCCInnovation/gbcs-parser test/rtds/keystore/ (RTDS 4.5.0), copied into
tests/data/gbcs/ so the device-signed vectors can be verified.
"""

from __future__ import annotations

import calendar
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from eui64 import Eui64

DATA = Path(__file__).parent / "data" / "gbcs"
SUPPLIER = Eui64(bytes.fromhex("90B3D51F30010000"))
ACB = Eui64(bytes.fromhex("90B3D51F30000002"))
ESME = Eui64(bytes.fromhex("00DB1234567890A0"))  # the CS06 vectors' device
GSME = Eui64(bytes.fromhex("00DB1234567890A1"))  # the FDRA vector's device
PPMID = Eui64(bytes.fromhex("00DB1234567890A4"))
PLACEHOLDER_HASH = bytes.fromhex("AA758690730934FF0685AA758690730934FF0685657788990011223344556677")
SR11_1_HASH = bytes.fromhex("7542f475e3f12eae887d81e32c46d313741d67076b13caec2f82e00ba5e1bb36")
T2015 = calendar.timegm((2015, 1, 1, 0, 0, 0))  # the RTDS responses' and alerts' time
T2030 = calendar.timegm((2030, 1, 15, 9, 0, 0))  # the future-dated CS06's execution time


def vector(name: str) -> bytes:
    return bytes.fromhex((DATA / name).read_text().strip())


def cert_key(name: str) -> ec.EllipticCurvePublicKey:
    key = x509.load_pem_x509_certificate((DATA / name).read_bytes()).public_key()
    assert isinstance(key, ec.EllipticCurvePublicKey)
    return key


def supplier_private_key() -> ec.EllipticCurvePrivateKey:
    key = serialization.load_pem_private_key((DATA / "supplier-90b3d51f30010000-ds.key").read_bytes(), None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    return key


def plain_verify(message: bytes, key: ec.EllipticCurvePublicKey) -> bool:
    """GBCS's signature check with plain cryptography calls, apart from the reader.

    A bare device message ends in 40 || r || s; the signature covers every byte after
    DF up to the 40.
    """
    assert message[0] == 0xDF and message[-65] == 0x40
    r, s = int.from_bytes(message[-64:-32], "big"), int.from_bytes(message[-32:], "big")
    try:
        key.verify(encode_dss_signature(r, s), message[1:-65], ec.ECDSA(hashes.SHA256()))
    except InvalidSignature:
        return False
    return True
