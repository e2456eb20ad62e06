"""ECMQV key agreement (SEC 1 section 3.4, with cofactor) and the Key Establishment
cluster's KDF and key-confirmation MACs.

U is the initiator, V the responder; each side has a static key (its certificate's)
and an ephemeral one. With avf(Q) = (x(Q) mod 2^k) + 2^k, k = ceil(bits(n)/2):
    s = (d_eph + avf(Q_eph) * d_static) mod n
    P = h*s * (Q'_eph + avf(Q'_eph) * Q'_static),  Z = x(P)
where primes are the peer's. Both sides reach the same P. Then
    MacKey  = AES-MMO(Z || 00000001),  KeyData = AES-MMO(Z || 00000002)
    MACU = HMAC(MacKey, 02 || ID(U) || ID(V) || E(U) || E(V))
    MACV = HMAC(MacKey, 03 || ID(V) || ID(U) || E(V) || E(U))
with IDs the 8-byte EUI-64s (certificate order) and E the compressed ephemeral keys.
KeyData becomes the device's APS link key.
"""

from __future__ import annotations

from dataclasses import dataclass

from .curves import BinaryCurve
from .ecqv import decode_point, private_scalar
from .errors import SeError
from .mmo import aes_mmo, hmac_mmo
from .suites import Suite


@dataclass(frozen=True)
class Agreement:
    z: bytes
    mac_key: bytes
    key_data: bytes
    macu: bytes
    macv: bytes


def _avf(curve: BinaryCurve, p: tuple[int, int]) -> int:
    k = (curve.n.bit_length() + 1) // 2
    return (p[0] & ((1 << k) - 1)) | (1 << k)


def _ieee(data: bytes, what: str) -> bytes:
    if len(data) != 8:
        raise SeError(f"{what}: {len(data)} bytes, an EUI-64 is 8")
    return bytes(data)


def agree(
    suite: Suite,
    *,
    initiator: bool,
    own_static_private: bytes,
    own_ephemeral_private: bytes,
    own_ephemeral_public: bytes,
    own_ieee: bytes,
    peer_static_public: bytes,
    peer_ephemeral_public: bytes,
    peer_ieee: bytes,
) -> Agreement:
    """Both sides' keys in, the agreed secrets out. Raises PointError naming the bad
    point, SeError for a bad private key or IEEE, or a shared point at infinity. The
    own ephemeral public key is trusted to be the private key's (it is ours)."""
    curve = suite.curve
    d_static = private_scalar(suite, own_static_private, "own static private key")
    d_eph = private_scalar(suite, own_ephemeral_private, "own ephemeral private key")
    own_eph = decode_point(curve, own_ephemeral_public, "own ephemeral public key")
    peer_static = decode_point(curve, peer_static_public, "peer static public key")
    peer_eph = decode_point(curve, peer_ephemeral_public, "peer ephemeral public key")
    own_id = _ieee(own_ieee, "own IEEE address")
    peer_id = _ieee(peer_ieee, "peer IEEE address")

    s = (d_eph + _avf(curve, own_eph) * d_static) % curve.n
    r = curve.add(peer_eph, curve.multiply(_avf(curve, peer_eph), peer_static))
    p = curve.multiply(curve.h * s, r)
    if p is None:
        raise SeError("ECMQV: the shared point is the point at infinity")
    z = p[0].to_bytes(curve.element_length, "big")

    mac_key = aes_mmo(z + b"\x00\x00\x00\x01")
    key_data = aes_mmo(z + b"\x00\x00\x00\x02")
    if initiator:
        id_u, id_v, e_u, e_v = own_id, peer_id, own_ephemeral_public, peer_ephemeral_public
    else:
        id_u, id_v, e_u, e_v = peer_id, own_id, peer_ephemeral_public, own_ephemeral_public
    e_u, e_v = bytes(e_u), bytes(e_v)
    macu = hmac_mmo(mac_key, b"\x02" + id_u + id_v + e_u + e_v)
    macv = hmac_mmo(mac_key, b"\x03" + id_v + id_u + e_v + e_u)
    return Agreement(z=z, mac_key=mac_key, key_data=key_data, macu=macu, macv=macv)
