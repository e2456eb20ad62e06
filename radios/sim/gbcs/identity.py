"""A simulated device's GBCS signing identity, and the supplier keys it trusts.

Each device signs with its own ECDSA P-256 key. Its certificate is a self-signed X.509
certificate naming the device's entity id twice: as GB device certificates do (a
critical subjectAltName otherName hardwareModuleName, RFC 4108, whose serial number is
the EUI-64; the RTDS device certificates in tests/data/gbcs/ carry theirs so) and as
GB organisation certificates do (the subject's x500UniqueIdentifier, a BIT STRING
``00 || EUI-64``), so a hub reading either form learns "this key speaks for that
entity" from the certificate alone. Validity runs to
9999-12-31 23:59:59 (X.509's "no well-defined expiration"), and no clock is read: the
dates are fixed, as GBCS devices ignore certificate dates anyway.
"""

from __future__ import annotations

from dataclasses import dataclass
import datetime as dt
import hashlib

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.name import _ASN1Type  # the BIT STRING form x500UniqueIdentifier takes
from cryptography.x509.oid import NameOID

from eui64 import Eui64

__all__ = ["GbcsIdentity", "entity_id_of", "generate_identity", "load_anchor", "load_identity"]

_HARDWARE_MODULE_NAME = x509.ObjectIdentifier("1.3.6.1.5.5.7.8.4")  # id-on-hardwareModuleName
# The hwType of the RTDS device certificates (SMKI's device type OID), as DER.
_HW_TYPE = bytes.fromhex("060D2A863A0001848FB90F01020201")
_NOT_BEFORE = dt.datetime(2015, 1, 1, tzinfo=dt.timezone.utc)
_NOT_AFTER = dt.datetime(9999, 12, 31, 23, 59, 59, tzinfo=dt.timezone.utc)


@dataclass(frozen=True)
class GbcsIdentity:
    entity_id: Eui64
    signing_key: ec.EllipticCurvePrivateKey
    certificate: x509.Certificate

    @property
    def public_key(self) -> ec.EllipticCurvePublicKey:
        return self.signing_key.public_key()

    @property
    def certificate_pem(self) -> str:
        return self.certificate.public_bytes(serialization.Encoding.PEM).decode("ascii")

    @property
    def signing_key_pem(self) -> str:
        """PKCS#8, unencrypted: lab material, so a bench can keep a device's identity."""
        return self.signing_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        ).decode("ascii")


def _p256_public(key: object, what: str) -> ec.EllipticCurvePublicKey:
    if not isinstance(key, ec.EllipticCurvePublicKey) or not isinstance(key.curve, ec.SECP256R1):
        raise ValueError(f"{what} is not an ECDSA P-256 public key")
    return key


def _hardware_module_name(entity_id: Eui64) -> bytes:
    """HardwareModuleName ::= SEQUENCE { hwType OID, hwSerialNum OCTET STRING }, as DER."""
    body = _HW_TYPE + b"\x04\x08" + entity_id.written
    return bytes([0x30, len(body)]) + body


def entity_id_of(cert: x509.Certificate) -> Eui64 | None:
    """The entity id a certificate names (x500UniqueIdentifier, else hardwareModuleName), if any."""
    for attr in cert.subject.get_attributes_for_oid(NameOID.X500_UNIQUE_IDENTIFIER):
        value = attr.value
        if isinstance(value, bytes) and len(value) == 9 and value[0] == 0:  # no unused bits, 8 bytes
            return Eui64(value[1:])
    try:
        names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return None
    for other in names.get_values_for_type(x509.OtherName):
        # The serial number is the SEQUENCE's last 8 bytes, after 04 08.
        if other.type_id == _HARDWARE_MODULE_NAME and len(other.value) >= 12 and other.value[-10:-8] == b"\x04\x08":
            return Eui64(other.value[-8:])
    return None


def _self_signed(entity_id: Eui64, key: ec.EllipticCurvePrivateKey, name: str) -> x509.Certificate:
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, name),
            x509.NameAttribute(NameOID.X500_UNIQUE_IDENTIFIER, b"\x00" + entity_id.written, _ASN1Type.BitString),
        ]
    )
    public = key.public_key()
    spki = public.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(public)
        .serial_number(int.from_bytes(hashlib.sha256(spki).digest()[:16], "big") >> 1 or 1)  # one key, one serial
        .not_valid_before(_NOT_BEFORE)
        .not_valid_after(_NOT_AFTER)
        .add_extension(
            x509.KeyUsage(True, False, False, False, False, False, False, False, False), critical=True
        )
        .add_extension(
            x509.SubjectAlternativeName([x509.OtherName(_HARDWARE_MODULE_NAME, _hardware_module_name(entity_id))]),
            critical=True,
        )
        .sign(key, hashes.SHA256())
    )


def generate_identity(entity_id: Eui64, name: str) -> GbcsIdentity:
    """A fresh P-256 key and its self-signed certificate (``name`` is the subject CN)."""
    key = ec.generate_private_key(ec.SECP256R1())
    return GbcsIdentity(entity_id, key, _self_signed(entity_id, key, name))


def load_identity(entity_id: Eui64, key_pem: bytes, cert_pem: bytes | None, name: str) -> GbcsIdentity:
    """A configured key, with its certificate or (none given) a self-signed one.

    Refused (ValueError): a key that is not P-256, a certificate for another key, or
    one naming another entity id.
    """
    key = serialization.load_pem_private_key(key_pem, password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey) or not isinstance(key.curve, ec.SECP256R1):
        raise ValueError("the GBCS signing key is not an ECDSA P-256 private key")
    if cert_pem is None:
        return GbcsIdentity(entity_id, key, _self_signed(entity_id, key, name))
    cert = x509.load_pem_x509_certificate(cert_pem)
    if _p256_public(cert.public_key(), "the certificate's key").public_numbers() != key.public_key().public_numbers():
        raise ValueError("the GBCS certificate is not for the signing key")
    named = entity_id_of(cert)
    if named is not None and named != entity_id:
        raise ValueError(f"the GBCS certificate names entity {named.hex()}, not {entity_id.hex()}")
    return GbcsIdentity(entity_id, key, cert)


def load_anchor(pem: bytes) -> tuple[Eui64 | None, ec.EllipticCurvePublicKey]:
    """A supplier's trust anchor (PEM certificate or public key): its entity id if named, its key.

    Certificate dates are ignored: a device checks against the anchor it holds.
    """
    if b"-----BEGIN CERTIFICATE-----" in pem:
        cert = x509.load_pem_x509_certificate(pem)
        return entity_id_of(cert), _p256_public(cert.public_key(), "the certificate's key")
    return None, _p256_public(serialization.load_pem_public_key(pem), "the public key")
