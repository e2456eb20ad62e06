"""ECDSA P-256 as GBCS uses it, for images and commands alike: keys, PEM, r‖s signatures.

GBCS signs two things the same way: the Manufacturer Image of a GBCS-form firmware
image (SR 11.1, read by ``gateway.image``) and the signed data of a General Signing
APDU (``gateway.gbcs.apdu``). Both are ECDSA over P-256 with SHA-256, carried as
``r‖s``, 32 bytes each, big-endian. This module is the gateway's one place for that:

- reading keys: ``load_signing_key`` (an unencrypted PEM private key) and
  ``load_verifying_pem`` (a PEM certificate or PEM public key) take bytes; the
  ``read_*`` twins take a path, read it through ``gateway.files`` (a regular file
  only, never blocking on a FIFO: key paths are user-named like images) and name it;
- the P-256 checks (``p256_public_key``, ``p256_private_key``);
- ``sign_raw`` and ``signature_valid``, in ``r‖s``.

Every refusal is a ``KeyRefused``: a ``GbcsUsageError`` (the GBCS layer's local
error) and a ``ValueError`` (what the image layer has always raised for a bad key).
Its message is ``SOURCE: problem; fix`` when the PEM came from a file.

The simulated devices keep their own copy of this (radios/sim/signature.py,
radios/sim/gbcs/) on purpose: a peer that checks our signatures must not share our code.
"""

from __future__ import annotations

import os
from typing import NamedTuple

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, ed25519, rsa, x448, x25519
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature, encode_dss_signature

from gateway.files import FileRefused, read_small

from .errors import GbcsUsageError

SIGNATURE_SIZE = 64  # r‖s
_COORDINATE_SIZE = 32
PEM_LIMIT = 64 * 1024  # a key or certificate is a few hundred bytes; a larger file is not one

FIX_SIGNING = "give the supplier's P-256 private key as unencrypted PEM (`han-ota gbcs keygen` writes one)"
FIX_VERIFYING = "give the supplier's P-256 certificate or public key as PEM (never its private key)"

_CERTIFICATE = b"-----BEGIN CERTIFICATE-----"
_PUBLIC_KEY = b"-----BEGIN PUBLIC KEY-----"
_PRIVATE_KEY = b"PRIVATE KEY-----"  # PKCS#8 "PRIVATE KEY", SEC1 "EC PRIVATE KEY", "ENCRYPTED PRIVATE KEY"

_PUBLIC_TYPES = (
    ec.EllipticCurvePublicKey, rsa.RSAPublicKey, dsa.DSAPublicKey,
    ed25519.Ed25519PublicKey, ed448.Ed448PublicKey, x25519.X25519PublicKey, x448.X448PublicKey,
)
_PRIVATE_TYPES = (
    ec.EllipticCurvePrivateKey, rsa.RSAPrivateKey, dsa.DSAPrivateKey,
    ed25519.Ed25519PrivateKey, ed448.Ed448PrivateKey, x25519.X25519PrivateKey, x448.X448PrivateKey,
)


class KeyRefused(GbcsUsageError, ValueError):
    """A key, certificate or PEM text that cannot serve: names the file, the problem and the fix."""

    def __init__(self, problem: str, *, source: str | None = None, fix: str | None = None) -> None:
        self.problem = problem
        self.source = source
        self.fix = fix
        message = problem if source is None else f"{source}: {problem}"
        super().__init__(message if fix is None else f"{message}; {fix}")


class VerifyingPem(NamedTuple):
    """What a PEM certificate or public key gives: the P-256 key, and the certificate if any."""

    public_key: ec.EllipticCurvePublicKey
    certificate: x509.Certificate | None


def _mismatch(key: object, private: bool) -> str:
    """Why ``key`` is not the P-256 key wanted ("an EC key on secp384r1, not ECDSA P-256")."""
    if isinstance(key, _PRIVATE_TYPES if not private else _PUBLIC_TYPES):
        have, want = ("a public key", "a private key") if private else ("a private key", "a public key or certificate")
        return f"{have}, not {want}"
    if isinstance(key, (ec.EllipticCurvePublicKey, ec.EllipticCurvePrivateKey)):
        return f"an EC key on {key.curve.name}, not ECDSA P-256"
    if isinstance(key, _PUBLIC_TYPES + _PRIVATE_TYPES):
        return f"a key of type {type(key).__name__.lstrip('_')}, not ECDSA P-256"
    # Not a key at all: a caller's bug (a type checker catches it), not a user's file.
    raise TypeError(f"expected a key or certificate, got {type(key).__name__}")


def p256_public_key(key: object, what: str, *, source: str | None = None) -> ec.EllipticCurvePublicKey:
    """``key`` (or a certificate's key) if it is a P-256 public key; KeyRefused otherwise."""
    if isinstance(key, x509.Certificate):
        key = key.public_key()
    if isinstance(key, ec.EllipticCurvePublicKey) and isinstance(key.curve, ec.SECP256R1):
        return key
    raise KeyRefused(f"{what} is {_mismatch(key, private=False)}", source=source, fix=FIX_VERIFYING)


def p256_private_key(key: object, what: str, *, source: str | None = None) -> ec.EllipticCurvePrivateKey:
    """``key`` if it is a P-256 private key; KeyRefused otherwise."""
    if isinstance(key, ec.EllipticCurvePrivateKey) and isinstance(key.curve, ec.SECP256R1):
        return key
    raise KeyRefused(f"{what} is {_mismatch(key, private=True)}", source=source, fix=FIX_SIGNING)


def load_signing_key(pem: bytes, *, source: str | None = None) -> ec.EllipticCurvePrivateKey:
    """A P-256 private key from unencrypted PEM (PKCS#8 or SEC1: lab keys only)."""
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError) as exc:  # TypeError: encrypted, and no password given
        if _PRIVATE_KEY in pem:
            why = str(exc)
        elif _CERTIFICATE in pem:
            why = "it holds a certificate, which has only the public key"
        elif _PUBLIC_KEY in pem:
            why = "it holds a public key"
        else:
            why = "no PEM private key block in it"
        raise KeyRefused(f"not an unencrypted PEM private key ({why})", source=source, fix=FIX_SIGNING) from None
    return p256_private_key(key, "the private key", source=source)


def load_verifying_pem(pem: bytes, *, source: str | None = None) -> VerifyingPem:
    """A P-256 public key from a PEM certificate or PEM public key (dates are not checked).

    Devices check a signature against the key they hold, never a certificate's validity
    period (the reference supplier certificate expired in 2025 and must still verify).
    A file holding a certificate and more (a key after it) is read for its certificate.
    """
    try:
        if _CERTIFICATE in pem:
            cert = x509.load_pem_x509_certificate(pem)
            return VerifyingPem(p256_public_key(cert.public_key(), "the certificate's key", source=source), cert)
        if _PUBLIC_KEY in pem:
            loaded = serialization.load_pem_public_key(pem)
            return VerifyingPem(p256_public_key(loaded, "the public key", source=source), None)
    except KeyRefused:
        raise
    except ValueError as exc:  # a PEM block whose contents are not what it says
        raise KeyRefused(f"unreadable PEM ({exc})", source=source, fix=FIX_VERIFYING) from None
    if _PRIVATE_KEY in pem:  # the mistake most worth naming: a supplier's secret in the wrong place
        raise KeyRefused(
            "holds a private key, where a certificate or public key belongs", source=source, fix=FIX_VERIFYING
        )
    raise KeyRefused("neither a PEM certificate nor a PEM public key", source=source, fix=FIX_VERIFYING)


def read_pem(path: str | os.PathLike[str], what: str) -> bytes:
    """A key or certificate file's bytes; KeyRefused naming the file (missing, FIFO, huge)."""
    try:
        return read_small(path, PEM_LIMIT, what)
    except FileRefused as exc:
        raise KeyRefused(str(exc)) from None


def read_signing_key(path: str | os.PathLike[str]) -> ec.EllipticCurvePrivateKey:
    """``load_signing_key`` on a file; every refusal names the file."""
    return load_signing_key(read_pem(path, "private key"), source=os.fspath(path))


def read_verifying_pem(path: str | os.PathLike[str], what: str = "trust anchor") -> VerifyingPem:
    """``load_verifying_pem`` on a file; every refusal names the file."""
    return load_verifying_pem(read_pem(path, what), source=os.fspath(path))


def sign_raw(key: ec.EllipticCurvePrivateKey, data: bytes) -> bytes:
    """ECDSA P-256 / SHA-256 over ``data`` as GBCS carries it: r‖s, 32 bytes each, big-endian."""
    key = p256_private_key(key, "the signing key")
    r, s = decode_dss_signature(key.sign(data, ec.ECDSA(hashes.SHA256())))
    return r.to_bytes(_COORDINATE_SIZE, "big") + s.to_bytes(_COORDINATE_SIZE, "big")


def signature_valid(key: ec.EllipticCurvePublicKey, data: bytes, signature: bytes) -> bool:
    """Whether ``signature`` (r‖s, 64 bytes) is ``key``'s ECDSA P-256 / SHA-256 over ``data``.

    Any s verifies, high or low: GBCS does not ask for low-S (see ``gateway.gbcs.verify``).
    A signature of another length is not one: False.
    """
    key = p256_public_key(key, "the verifying key")
    if len(signature) != SIGNATURE_SIZE:
        return False
    r = int.from_bytes(signature[:_COORDINATE_SIZE], "big")
    s = int.from_bytes(signature[_COORDINATE_SIZE:], "big")
    try:
        key.verify(encode_dss_signature(r, s), data, ec.ECDSA(hashes.SHA256()))
    except InvalidSignature:
        return False
    return True


__all__ = [
    "FIX_SIGNING",
    "FIX_VERIFYING",
    "PEM_LIMIT",
    "SIGNATURE_SIZE",
    "KeyRefused",
    "VerifyingPem",
    "load_signing_key",
    "load_verifying_pem",
    "p256_private_key",
    "p256_public_key",
    "read_pem",
    "read_signing_key",
    "read_verifying_pem",
    "sign_raw",
    "signature_valid",
]
