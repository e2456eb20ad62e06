"""A simulated device's GBCS signing identity, and the supplier keys it trusts.

Each device signs with its own ECDSA P-256 key. Its certificate is a self-signed X.509
certificate naming the device's entity id the way GB organisation certificates do (the
subject's x500UniqueIdentifier, a BIT STRING ``00 || EUI-64``), so a hub can learn
"this key speaks for that entity" from the certificate alone. Validity runs to
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


def entity_id_of(cert: x509.Certificate) -> Eui64 | None:
    """The entity id a certificate's x500UniqueIdentifier names, if it names one."""
    for attr in cert.subject.get_attributes_for_oid(NameOID.X500_UNIQUE_IDENTIFIER):
        value = attr.value
        if isinstance(value, bytes) and len(value) == 9 and value[0] == 0:  # no unused bits, 8 bytes
            return Eui64(value[1:])
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
