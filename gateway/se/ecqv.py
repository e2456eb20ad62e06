"""ECQV implicit certificates (SEC 4): public-key reconstruction, key pairs, issuance.

Reconstruction: Q = e*B + Q_CA, with B the certificate's reconstruction point and e
the AES-MMO hash of the whole certificate read as a big-endian integer (128 bits, below
n for both curves). Issuance here is the CA and the requester in one step, as a lab CA
does for its own devices: for a random k, B = k*G and the private key is
d = e*k + d_CA mod n, so that d*G = e*B + Q_CA.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .certificate import ImplicitCertificate, build_certificate
from .curves import BinaryCurve
from .errors import CertificateError, PointError, SeError
from .mmo import aes_mmo
from .suites import Suite

Rng = Callable[[int], bytes]


@dataclass(frozen=True)
class KeyPair:
    private_key: bytes
    public_key: bytes


def private_scalar(suite: Suite, private_key: bytes, what: str = "private key") -> int:
    """A private key's integer, refused unless it has the suite's length and 0 < d < n."""
    if len(private_key) != suite.private_key_length:
        raise SeError(f"{what}: {len(private_key)} bytes, suite {suite.number} needs {suite.private_key_length}")
    d = int.from_bytes(private_key, "big")
    if not 0 < d < suite.curve.n:
        raise SeError(f"{what}: not in 1..n-1 for {suite.curve.name}")
    return d


def random_scalar(suite: Suite, rng: Rng = os.urandom) -> int:
    """Uniform in 1..n-1 by rejection (n is just above a power of two for both curves)."""
    n = suite.curve.n
    bits = n.bit_length()
    for _ in range(1000):
        d = int.from_bytes(rng(suite.private_key_length), "big") >> (8 * suite.private_key_length - bits)
        if 0 < d < n:
            return d
    raise SeError("random source gave no usable scalar in 1000 draws")


def decode_point(curve: BinaryCurve, data: bytes, what: str) -> tuple[int, int]:
    """``curve.decompress`` whose PointError says which point was wrong."""
    try:
        return curve.decompress(bytes(data))
    except PointError as exc:
        raise PointError(f"{what}: {exc}") from None


def certificate_hash(cert: ImplicitCertificate) -> int:
    return int.from_bytes(aes_mmo(cert.raw), "big")


def reconstruct_public_key(cert: ImplicitCertificate, ca_public_key: bytes) -> bytes:
    curve = cert.suite.curve
    q_ca = decode_point(curve, ca_public_key, "CA public key")
    b = decode_point(curve, cert.reconstruction_point, "certificate reconstruction point")
    q = curve.add(curve.multiply(certificate_hash(cert), b), q_ca)
    if q is None:
        name, offset = ("reconstruction point", 0 if cert.suite.number == 1 else 37)
        raise CertificateError(name, offset, "reconstructs the point at infinity")
    return curve.compress(q)


def new_key_pair(suite: Suite, rng: Rng = os.urandom) -> KeyPair:
    d = random_scalar(suite, rng)
    return KeyPair(
        private_key=d.to_bytes(suite.private_key_length, "big"),
        public_key=suite.curve.compress(suite.curve.multiply_base(d)),
    )


def issue(
    suite: Suite,
    ca: KeyPair,
    subject: bytes,
    issuer: bytes,
    rng: Rng = os.urandom,
    **fields: Any,
) -> tuple[ImplicitCertificate, bytes]:
    """An implicit certificate for ``subject`` and its private key; ``fields`` are
    build_certificate's suite-specific keywords (serial, valid_from, ...)."""
    curve = suite.curve
    n = curve.n
    d_ca = private_scalar(suite, ca.private_key, "CA private key")
    if curve.compress(curve.multiply_base(d_ca)) != bytes(ca.public_key):
        raise SeError("CA key pair: the public key is not the private key's")
    for _ in range(100):
        k = random_scalar(suite, rng)
        point = curve.compress(curve.multiply_base(k))
        cert = build_certificate(suite, reconstruction_point=point, subject=subject, issuer=issuer, **fields)
        d = (certificate_hash(cert) * k + d_ca) % n
        if d:
            return cert, d.to_bytes(suite.private_key_length, "big")
    raise SeError("issuance found no usable private key in 100 draws")
