"""A simulated GBCS device's check of its supplier's signature on a firmware image.

Written from GBCS (SR 11.1 Update Firmware), not from the gateway: the image a device
receives is the Zigbee OTA header, the Manufacturer Image, one byte only the
Communications Hub uses, 0x40, and the supplier's 64-byte ECDSA P-256 signature r||s
(SHA-256) over the Manufacturer Image alone. A device holding its supplier's key as
trust anchor takes only images that carry a signature verifying with it.
"""

from __future__ import annotations

from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

__all__ = ["load_supplier_key", "supplier_signature_error"]

SIGNATURE_TAG = 0x40
SIGNATURE_LENGTH = 64
TAIL_LENGTH = 1 + 1 + SIGNATURE_LENGTH  # CH byte, 0x40, r||s


def load_supplier_key(path: str | Path) -> ec.EllipticCurvePublicKey:
    """The P-256 key in a PEM certificate or public key; ValueError or OSError if none.

    Certificate dates are ignored: a device checks against the anchor it holds.
    """
    pem = Path(path).read_bytes()
    if b"-----BEGIN CERTIFICATE-----" in pem:
        key: object = x509.load_pem_x509_certificate(pem).public_key()
    else:
        key = serialization.load_pem_public_key(pem)
    if not isinstance(key, ec.EllipticCurvePublicKey) or not isinstance(key.curve, ec.SECP256R1):
        raise ValueError(f"{path}: not an ECDSA P-256 key")
    return key


def supplier_signature_error(image: bytes, header_length: int, key: ec.EllipticCurvePublicKey) -> str | None:
    """Why ``image`` does not carry a valid supplier signature, or None if it does."""
    end = len(image) - TAIL_LENGTH  # where the Manufacturer Image ends
    if end <= header_length or image[end + 1] != SIGNATURE_TAG:
        return "no supplier signature (CH byte, 0x40, 64 bytes) after the manufacturer image"
    r = int.from_bytes(image[-SIGNATURE_LENGTH:-32], "big")
    s = int.from_bytes(image[-32:], "big")
    try:
        key.verify(encode_dss_signature(r, s), image[header_length:end], ec.ECDSA(hashes.SHA256()))
    except InvalidSignature:
        return "supplier signature does not verify over the manufacturer image"
    return None
