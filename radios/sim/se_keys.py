"""A simulated SE device's key-establishment cryptography: certificates, ECQV, ECMQV, KDF, MACs.

Written from the Smart Energy key-establishment annex's description (see
../shared/se-cbke-vectors/README.md) and SEC 1 / SEC 4, independently of the gateway.

* AES-MMO is zigpy's (the install-code hash), HMAC-MMO is RFC 2104 over it with a
  16-byte block.
* Suite 1 (sect163k1): 48-byte certificates, point 22 | subject 8 | issuer 8 | attrs 10.
  Suite 2 (sect283k1): 74-byte certificates, type 1 | serial 8 | curve 1 | hash 1 |
  issuer 8 | valid-from 5 | valid-to 4 | subject 8 | key usage 1 | point 37.
* ECQV: e = AES-MMO(whole certificate) as an integer; Q = e*B + Q_CA; issuance
  d = e*k_U + r with r = e*k + d_CA (SEC 4 2.4 and 2.5, requester and CA in one
  function: the lab CLI tools are elsewhere, this serves tests and simulated devices).
* ECMQV (SEC 1 3.4): s = d_eph + avf(Q_eph) d_static mod n;
  P = h s (Q'_eph + avf(Q'_eph) Q'_static); Z = x(P) as m-bit field bytes.
* MacKey = MMO(Z || 00000001), KeyData = MMO(Z || 00000002);
  MACU = MAC(02 || ID(U) || ID(V) || E(U) || E(V)), MACV = MAC(03 || ID(V) || ID(U) || E(V) || E(U)).
"""

from __future__ import annotations

from dataclasses import dataclass
import hmac
import random
from typing import Final

from zigpy.util import aes_mmo_hash

from .se_curves import SECT163K1, SECT283K1, Curve, Point, PointError

__all__ = [
    "CertificateError",
    "Credentials",
    "KeyPair",
    "SUITES",
    "Suite",
    "confirmation_macs",
    "derive_keys",
    "ecmqv",
    "hmac_mmo",
    "issue",
    "keypair",
    "keypair_from",
    "macs_equal",
    "make_ca",
    "mmo",
    "parse_certificate",
    "reconstruct_public_key",
]

MMO_BLOCK: Final = 16
SUITE2_CERT_TYPE: Final = 0x00
SUITE2_CURVE: Final = 0x0D  # sect283k1
SUITE2_HASH: Final = 0x08  # AES-MMO
KEY_USAGE_AGREEMENT: Final = 0x08


class CertificateError(ValueError):
    """A certificate that cannot be used: wrong length, bad field, or a point off the curve."""


def mmo(data: bytes) -> bytes:
    return bytes(aes_mmo_hash(data))


def hmac_mmo(key: bytes, message: bytes) -> bytes:
    if len(key) > MMO_BLOCK:
        key = mmo(key)
    key = key.ljust(MMO_BLOCK, b"\x00")
    inner = mmo(bytes(k ^ 0x36 for k in key) + message)
    return mmo(bytes(k ^ 0x5C for k in key) + inner)


@dataclass(frozen=True, slots=True)
class Suite:
    number: int  # 1 or 2; its KeyEstablishmentSuite bit is 1 << (number - 1)
    curve: Curve
    cert_length: int
    avf_bits: int  # k = ceil(log2(n) / 2)

    @property
    def bit(self) -> int:
        return 1 << (self.number - 1)


SUITES: Final = {
    1: Suite(1, SECT163K1, 48, 82),
    2: Suite(2, SECT283K1, 74, 141),
}


@dataclass(frozen=True, slots=True)
class Certificate:
    """An implicit certificate, parsed once."""

    suite: Suite
    raw: bytes
    subject: bytes  # EUI-64, certificate (display) order
    issuer: bytes
    reconstruction: bytes  # the compressed point B

    @property
    def subject_ieee(self) -> int:
        return int.from_bytes(self.subject, "big")


def parse_certificate(suite: Suite, raw: bytes) -> Certificate:
    """Split and check the fields; raise CertificateError naming the field and its offset."""
    if len(raw) != suite.cert_length:
        raise CertificateError(f"suite {suite.number} certificate is {suite.cert_length} bytes, got {len(raw)}")
    if suite.number == 1:
        point, subject, issuer = raw[0:22], raw[22:30], raw[30:38]
    else:
        checks = ((0, SUITE2_CERT_TYPE, "type"), (9, SUITE2_CURVE, "curve"), (10, SUITE2_HASH, "hash"))
        for offset, want, name in checks:
            if raw[offset] != want:
                raise CertificateError(f"certificate {name} 0x{raw[offset]:02X} at offset {offset}, expected 0x{want:02X}")
        if not raw[36] & KEY_USAGE_AGREEMENT:
            raise CertificateError(f"certificate key usage 0x{raw[36]:02X} at offset 36 lacks key agreement (0x08)")
        issuer, subject, point = raw[11:19], raw[28:36], raw[37:74]
    try:
        suite.curve.decompress(point)
    except PointError as exc:
        offset = 0 if suite.number == 1 else 37
        raise CertificateError(f"certificate reconstruction point at offset {offset}: {exc}") from exc
    return Certificate(suite, bytes(raw), bytes(subject), bytes(issuer), bytes(point))


def _hash_int(cert: bytes) -> int:
    return int.from_bytes(mmo(cert), "big")


def reconstruct_public_key(cert: Certificate, ca_public_key: bytes) -> Point:
    """ECQV: Q = e*B + Q_CA. Raises CertificateError if the CA key is no point or Q is infinity."""
    curve = cert.suite.curve
    try:
        q_ca = curve.decompress(ca_public_key)
    except PointError as exc:
        raise CertificateError(f"CA public key: {exc}") from exc
    q = curve.add(curve.multiply(_hash_int(cert.raw), curve.decompress(cert.reconstruction)), q_ca)
    if q is None:
        raise CertificateError("reconstructed public key is the point at infinity")
    return q


@dataclass(frozen=True, slots=True)
class KeyPair:
    private: int
    public: Point

    def public_bytes(self, curve: Curve) -> bytes:
        return curve.compress(self.public)


def keypair(curve: Curve, rng: random.Random) -> KeyPair:
    d = rng.randrange(1, curve.n)
    return KeyPair(d, curve.multiply(d, curve.g))


def keypair_from(curve: Curve, private: int) -> KeyPair:
    return KeyPair(private, curve.multiply(private, curve.g))


@dataclass(frozen=True, slots=True)
class Credentials:
    """What a device holds: its certificate and private key, and the CA it trusts
    (public key, and the issuer id a peer's certificate must carry)."""

    suite: Suite
    certificate: bytes
    private_key: int
    ca_public_key: bytes
    ca_issuer: bytes

    @property
    def private_key_bytes(self) -> bytes:
        return self.private_key.to_bytes(self.suite.curve.scalar_bytes, "big")


def make_ca(suite: Suite, rng: random.Random) -> KeyPair:
    return keypair(suite.curve, rng)


def _encode_certificate(suite: Suite, point: bytes, subject: bytes, issuer: bytes, serial: bytes) -> bytes:
    if suite.number == 1:
        return point + subject + issuer + bytes.fromhex("01090006000000000000")
    valid_from = b"\x00" * 5  # "valid since the beginning"
    valid_to = b"\xff" * 4  # no expiry
    return (
        bytes([SUITE2_CERT_TYPE]) + serial + bytes([SUITE2_CURVE, SUITE2_HASH]) + issuer
        + valid_from + valid_to + subject + bytes([KEY_USAGE_AGREEMENT]) + point
    )


def issue(
    suite: Suite,
    ca: KeyPair,
    subject: bytes,
    issuer: bytes,
    rng: random.Random,
) -> Credentials:
    """ECQV issuance of an implicit certificate for ``subject`` (EUI-64, display order)."""
    curve = suite.curve
    while True:
        request = keypair(curve, rng)  # the requester's k_U, R_U
        k = keypair(curve, rng)  # the CA's per-certificate key
        p_u = curve.add(request.public, k.public)
        if p_u is None:
            continue
        serial = rng.getrandbits(64).to_bytes(8, "big")
        cert = _encode_certificate(suite, curve.compress(p_u), subject, issuer, serial)
        e = _hash_int(cert)
        r = (e * k.private + ca.private) % curve.n
        d_u = (e * request.private + r) % curve.n
        if d_u:
            return Credentials(suite, cert, d_u, ca.public_bytes(curve), issuer)


def _avf(suite: Suite, q: Point) -> int:
    if q is None:
        raise CertificateError("associate value of the point at infinity")
    k = suite.avf_bits
    return (q[0] % (1 << k)) + (1 << k)


def ecmqv(
    suite: Suite,
    static_private: int,
    ephemeral: KeyPair,
    peer_static: Point,
    peer_ephemeral: Point,
) -> bytes:
    """The shared secret Z (m-bit field bytes); CertificateError if it is the point at infinity."""
    curve = suite.curve
    s = (ephemeral.private + _avf(suite, ephemeral.public) * static_private) % curve.n
    q = curve.add(peer_ephemeral, curve.multiply(_avf(suite, peer_ephemeral), peer_static))
    p = curve.multiply(curve.h * s, q)
    if p is None:
        raise CertificateError("ECMQV gave the point at infinity")
    return p[0].to_bytes(curve.field_bytes, "big")


def derive_keys(z: bytes) -> tuple[bytes, bytes]:
    """(MacKey, KeyData)."""
    return mmo(z + b"\x00\x00\x00\x01"), mmo(z + b"\x00\x00\x00\x02")


def confirmation_macs(mac_key: bytes, id_u: bytes, id_v: bytes, e_u: bytes, e_v: bytes) -> tuple[bytes, bytes]:
    """(MACU, MACV); U the initiator, V the responder; E the compressed ephemeral keys."""
    macu = hmac_mmo(mac_key, b"\x02" + id_u + id_v + e_u + e_v)
    macv = hmac_mmo(mac_key, b"\x03" + id_v + id_u + e_v + e_u)
    return macu, macv


def macs_equal(a: bytes, b: bytes) -> bool:
    return hmac.compare_digest(a, b)
