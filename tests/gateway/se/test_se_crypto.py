"""gateway/se: the CBKE crypto against the specification's worked example and oracles.

Oracles independent of the code under test: bit-by-bit polynomial arithmetic and
affine double-and-add written here, zigpy's ``aes_mmo_hash``, Python's ``hmac`` over
an AES-MMO hashlib shim, and the suite-1 worked example of 07-5356 Annex C.5.
"""

from __future__ import annotations

import hmac
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from hypothesis import given, settings
from hypothesis import strategies as st
from zigpy.util import aes_mmo_hash

from gateway.se.certificate import (
    ImplicitCertificate,
    build_certificate,
    check_validity,
    parse_certificate,
    require_key_agreement,
    utc_text,
)
from gateway.se.curves import SECT163K1, SECT283K1, BinaryCurve, Point
from gateway.se.ecmqv import Agreement, agree
from gateway.se.ecqv import KeyPair, issue, new_key_pair, reconstruct_public_key
from gateway.se.errors import CertificateError, PointError, SeError
from gateway.se.mmo import aes_mmo, hmac_mmo
from gateway.se.suites import SUITE_1, SUITE_2, SUITES, Suite, suite

if TYPE_CHECKING:
    from typing_extensions import Buffer  # collections.abc.Buffer from Python 3.12

DATA = Path(__file__).parents[2] / "data" / "se_cbke" / "suite1_worked_example.json"
EXAMPLE: dict[str, Any] = json.loads(DATA.read_text())
H = bytes.fromhex
CURVES = [SECT163K1, SECT283K1]
FEW = settings(max_examples=8, deadline=None)
MANY = settings(max_examples=60, deadline=None)


# -- reference arithmetic (slow, obvious) ------------------------------------------------


def ref_mul(curve: BinaryCurve, a: int, b: int) -> int:
    r = 0
    while b:
        if b & 1:
            r ^= a
        a <<= 1
        b >>= 1
    for i in range(r.bit_length() - 1, curve.m - 1, -1):
        if r >> i & 1:
            r ^= curve.poly << (i - curve.m)
    return r


def _polydivmod(a: int, b: int) -> tuple[int, int]:
    q = 0
    while a and a.bit_length() >= b.bit_length():
        shift = a.bit_length() - b.bit_length()
        q ^= 1 << shift
        a ^= b << shift
    return q, a


def ref_inv(curve: BinaryCurve, a: int) -> int:
    # extended Euclid by repeated polynomial division, then a check
    r0, r1, s0, s1 = curve.poly, a, 0, 1
    while r1:
        q, r = _polydivmod(r0, r1)
        r0, r1 = r1, r
        s0, s1 = s1, s0 ^ ref_mul(curve, q, s1)
    assert r0 == 1
    inverse = _polydivmod(s0, curve.poly)[1]
    assert ref_mul(curve, inverse, a) == 1
    return inverse


def ref_on_curve(curve: BinaryCurve, p: tuple[int, int]) -> bool:
    x, y = p
    lhs = ref_mul(curve, y, y) ^ ref_mul(curve, x, y)
    x2 = ref_mul(curve, x, x)
    return lhs == ref_mul(curve, x2, x) ^ ref_mul(curve, curve.a, x2) ^ curve.b


def ref_add(curve: BinaryCurve, p: Point, q: Point) -> Point:
    if p is None:
        return q
    if q is None:
        return p
    (x1, y1), (x2, y2) = p, q
    if x1 == x2 and (y1 != y2 or x1 == 0):
        return None
    if p == q:
        lam = x1 ^ ref_mul(curve, y1, ref_inv(curve, x1))
        x3 = ref_mul(curve, lam, lam) ^ lam ^ curve.a
    else:
        lam = ref_mul(curve, y1 ^ y2, ref_inv(curve, x1 ^ x2))
        x3 = ref_mul(curve, lam, lam) ^ lam ^ x1 ^ x2 ^ curve.a
    return (x3, ref_mul(curve, lam, x1 ^ x3) ^ x3 ^ y1)


def ref_multiply(curve: BinaryCurve, k: int, p: Point) -> Point:
    r: Point = None
    for bit in f"{k:b}":
        r = ref_add(curve, r, r)
        if bit == "1":
            r = ref_add(curve, r, p)
    return r


# -- curve constants --------------------------------------------------------------------


@pytest.mark.parametrize("curve", CURVES, ids=lambda c: c.name)
def test_the_generator_is_on_the_curve_and_has_order_n(curve: BinaryCurve) -> None:
    g = curve.generator
    assert ref_on_curve(curve, g)
    assert curve.is_on_curve(g)
    assert curve.multiply(curve.n, g) is None
    assert curve.multiply(curve.n - 1, g) == curve.negate(g)
    assert curve.multiply(curve.n + 1, g) == g
    # Hasse: the group order h*n lies within 2*sqrt(2^m) of 2^m + 1
    assert abs(curve.h * curve.n - (1 << curve.m) - 1) <= 2 * (1 << (curve.m + 1) // 2)


def test_curve_sizes() -> None:
    assert (SECT163K1.point_length, SECT163K1.scalar_length, SECT163K1.element_length) == (22, 21, 21)
    assert (SECT283K1.point_length, SECT283K1.scalar_length, SECT283K1.element_length) == (37, 36, 36)


# -- field --------------------------------------------------------------------------------


@pytest.mark.parametrize("curve", CURVES, ids=lambda c: c.name)
@MANY
@given(data=st.data())
def test_field_operations_match_the_bitwise_reference(curve: BinaryCurve, data: st.DataObject) -> None:
    f = curve.field
    a = data.draw(st.integers(1, (1 << curve.m) - 1))
    b = data.draw(st.integers(0, (1 << curve.m) - 1))
    assert f.mul(a, b) == ref_mul(curve, a, b)
    assert f.sqr(b) == ref_mul(curve, b, b)
    assert f.mul(a, f.inv(a)) == 1
    assert f.sqr(f.sqrt(b)) == b
    z = f.half_trace(b)
    # z^2 + z = b exactly when Tr(b) = 0; otherwise z^2 + z = b + 1
    assert f.sqr(z) ^ z == b ^ f.trace(b)
    assert f.trace(b) in (0, 1)


def test_zero_and_unreduced_multiples_of_the_polynomial_have_no_inverse() -> None:
    f = SECT163K1.field
    for a in (0, f.poly, f.poly << 3):
        with pytest.raises(ZeroDivisionError):
            f.inv(a)


# -- scalar multiplication --------------------------------------------------------------


@pytest.mark.parametrize("curve", CURVES, ids=lambda c: c.name)
@pytest.mark.parametrize("k", [0, 1, 2, 3, 4, 7, 0xDEADBEEF, (1 << 90) + 12345])
def test_ladder_matches_double_and_add(curve: BinaryCurve, k: int) -> None:
    assert curve.multiply(k, curve.generator) == ref_multiply(curve, k, curve.generator)


@pytest.mark.parametrize("curve", CURVES, ids=lambda c: c.name)
def test_multiply_edge_cases(curve: BinaryCurve) -> None:
    g = curve.generator
    order2 = (0, curve.field.sqrt(curve.b))
    assert ref_on_curve(curve, order2)
    assert curve.multiply(3, order2) == order2
    assert curve.multiply(curve.h, order2) is None
    assert curve.multiply(5, None) is None
    assert curve.multiply(-3, g) == curve.negate(curve.multiply(3, g))
    assert curve.multiply_base(curve.n + 5) == curve.multiply(5, g)
    assert curve.add(g, curve.negate(g)) is None
    p = curve.multiply(1234567, g)
    assert curve.add(p, g) == ref_add(curve, p, g)
    assert curve.add(p, p) == curve.multiply(2, p)


@pytest.mark.parametrize("curve", CURVES, ids=lambda c: c.name)
@FEW
@given(data=st.data())
def test_multiplication_is_a_homomorphism(curve: BinaryCurve, data: st.DataObject) -> None:
    j = data.draw(st.integers(1, curve.n - 1))
    k = data.draw(st.integers(1, curve.n - 1))
    lhs = curve.multiply_base((j + k) % curve.n)
    assert lhs == curve.add(curve.multiply_base(j), curve.multiply_base(k))
    assert lhs is None or ref_on_curve(curve, lhs)


# -- point compression ------------------------------------------------------------------


@pytest.mark.parametrize("curve", CURVES, ids=lambda c: c.name)
@FEW
@given(data=st.data())
def test_compress_round_trips_for_multiples_of_g(curve: BinaryCurve, data: st.DataObject) -> None:
    p = curve.multiply_base(data.draw(st.integers(1, curve.n - 1)))
    assert p is not None
    encoded = curve.compress(p)
    assert len(encoded) == curve.point_length and encoded[0] in (2, 3)
    assert curve.decompress(encoded) == p


@pytest.mark.parametrize("curve", CURVES, ids=lambda c: c.name)
@MANY
@given(data=st.data())
def test_decompress_finds_the_point_or_refuses_an_x_off_the_curve(curve: BinaryCurve, data: st.DataObject) -> None:
    x = data.draw(st.integers(1, (1 << curve.m) - 1))
    prefix = data.draw(st.sampled_from([2, 3]))
    encoded = bytes([prefix]) + x.to_bytes(curve.element_length, "big")
    beta = x ^ curve.a ^ ref_inv(curve, ref_mul(curve, x, x))
    solvable = curve.field.trace(beta) == 0
    if not solvable:
        with pytest.raises(PointError, match="is not on the curve"):
            curve.decompress(encoded)
        return
    p = curve.decompress(encoded)
    assert p[0] == x and ref_on_curve(curve, p)
    assert curve.compress(p) == encoded
    assert curve.compress(curve.negate(p))[0] == prefix ^ 1


@pytest.mark.parametrize("curve", CURVES, ids=lambda c: c.name)
def test_bad_compressed_points_are_refused(curve: BinaryCurve) -> None:
    good = curve.compress(curve.generator)
    with pytest.raises(PointError, match=f"{len(good) - 1} bytes, needs {len(good)}"):
        curve.decompress(good[:-1])
    with pytest.raises(PointError, match=f"{len(good) + 1} bytes"):
        curve.decompress(good + b"\x00")
    for prefix in (0x00, 0x01, 0x04, 0xFF):
        with pytest.raises(PointError, match=f"prefix 0x{prefix:02X}"):
            curve.decompress(bytes([prefix]) + good[1:])
    with pytest.raises(PointError, match="more than"):
        curve.decompress(b"\x02" + b"\xff" * curve.element_length)
    with pytest.raises(PointError, match="x = 0 needs prefix 0x02"):
        curve.decompress(b"\x03" + bytes(curve.element_length))
    x = next(x for x in range(2, 1000) if curve.field.trace(x ^ curve.a ^ ref_inv(curve, ref_mul(curve, x, x))))
    with pytest.raises(PointError, match="not on the curve"):
        curve.decompress(b"\x02" + x.to_bytes(curve.element_length, "big"))
    with pytest.raises(PointError, match="infinity"):
        curve.compress(None)


# -- AES-MMO and HMAC-MMO ---------------------------------------------------------------


@pytest.mark.parametrize("length", [0, 1, 13, 14, 15, 16, 17, 31, 32, 33, 47, 48, 49, 74, 100, 255, 1000, 8191])
def test_aes_mmo_matches_zigpy(length: int) -> None:
    for seed in range(3):
        data = bytes((seed * 31 + i * 7) & 0xFF for i in range(length))
        assert aes_mmo(data) == bytes(aes_mmo_hash(data))
    data = os.urandom(length)
    assert aes_mmo(data) == bytes(aes_mmo_hash(data))


def _mmo_blocks(padded: bytes) -> bytes:
    h = bytes(16)
    for i in range(0, len(padded), 16):
        m = padded[i : i + 16]
        e = Cipher(algorithms.AES(h), modes.ECB()).encryptor().update(m)
        h = bytes(a ^ b for a, b in zip(e, m))
    return h


def test_aes_mmo_uses_the_long_length_form_from_2_to_the_16_bits() -> None:
    data = bytes(range(256)) * 32  # 8192 bytes = 2^16 bits
    padded = data + b"\x80" + bytes(9) + (len(data) * 8).to_bytes(4, "big") + bytes(2)
    assert len(padded) % 16 == 0
    assert aes_mmo(data) == _mmo_blocks(padded)


def test_install_code_gives_the_link_key() -> None:
    ex = EXAMPLE["install_code_example"]
    assert aes_mmo(H(ex["install_code"])) == H(ex["link_key"])


class _MmoHashlib:
    """Enough of hashlib's interface for the stdlib hmac module."""

    name = "aes-mmo"
    block_size = 16
    digest_size = 16

    def __init__(self, data: bytes = b"") -> None:
        self._data = bytearray(data)

    def update(self, data: Buffer, /) -> None:
        self._data += data

    def copy(self) -> _MmoHashlib:
        return _MmoHashlib(bytes(self._data))

    def digest(self) -> bytes:
        return aes_mmo(bytes(self._data))

    def hexdigest(self) -> str:
        return self.digest().hex()


def _mmo_new(data: bytes = b"") -> _MmoHashlib:
    return _MmoHashlib(data)


@pytest.mark.parametrize("key_length", [0, 5, 16, 17, 40])
def test_hmac_mmo_matches_the_stdlib_hmac_construction(key_length: int) -> None:
    key = bytes(range(1, key_length + 1))
    for message in (b"", b"\x02" + bytes(60), os.urandom(77)):
        assert hmac_mmo(key, message) == hmac.new(key, message, _mmo_new).digest()


# -- suites -----------------------------------------------------------------------------


def test_suites() -> None:
    assert SUITES == (SUITE_2, SUITE_1)
    assert suite(1) is SUITE_1 and suite(2) is SUITE_2
    assert (SUITE_1.bit, SUITE_1.curve, SUITE_1.certificate_length) == (1, SECT163K1, 48)
    assert (SUITE_2.bit, SUITE_2.curve, SUITE_2.certificate_length) == (2, SECT283K1, 74)
    with pytest.raises(SeError, match="unknown crypto suite 3"):
        suite(3)


# -- the suite-1 worked example (07-5356 Annex C.5) -------------------------------------


def _side(name: str) -> dict[str, bytes]:
    return {k: H(v) for k, v in EXAMPLE[name].items()}


def test_worked_example_certificates_parse() -> None:
    v = _side("responder")
    cert = parse_certificate(v["certificate"], SUITE_1)
    assert cert.subject == v["ieee"] and cert.subject_ieee == "00:00:00:00:00:00:00:01"
    assert cert.issuer == b"TESTSECA"
    assert cert.profile_attributes == H("01090006000000000000")
    assert cert.reconstruction_point == v["certificate"][:22]
    assert cert.serial is None and cert.key_usage is None and cert.allows_key_agreement


@pytest.mark.parametrize("name", ["responder", "initiator"])
def test_worked_example_keys(name: str) -> None:
    v = _side(name)
    curve = SUITE_1.curve
    cert = parse_certificate(v["certificate"], SUITE_1)
    assert reconstruct_public_key(cert, H(EXAMPLE["ca_public_key"])) == v["static_public_key"]
    assert curve.compress(curve.multiply_base(int.from_bytes(v["static_private_key"], "big"))) == v["static_public_key"]
    assert curve.compress(curve.multiply_base(int.from_bytes(v["ephemeral_private_key"], "big"))) == v["ephemeral_public_key"]


def _agree(s: Suite, own: dict[str, bytes], peer: dict[str, bytes], initiator: bool) -> Agreement:
    return agree(
        s,
        initiator=initiator,
        own_static_private=own["static_private_key"],
        own_ephemeral_private=own["ephemeral_private_key"],
        own_ephemeral_public=own["ephemeral_public_key"],
        own_ieee=own["ieee"],
        peer_static_public=peer["static_public_key"],
        peer_ephemeral_public=peer["ephemeral_public_key"],
        peer_ieee=peer["ieee"],
    )


def test_worked_example_agreement() -> None:
    u, v = _side("initiator"), _side("responder")
    at_u = _agree(SUITE_1, u, v, initiator=True)
    at_v = _agree(SUITE_1, v, u, initiator=False)
    for a in (at_u, at_v):
        assert a.z == H(EXAMPLE["shared_secret_z"])
        assert a.mac_key == H(EXAMPLE["mac_key"])
        assert a.macv == H(EXAMPLE["macv"])
    assert at_u.macu == at_v.macu and at_u.key_data == at_v.key_data
    assert at_u.key_data == aes_mmo(at_u.z + b"\x00\x00\x00\x02")
    assert at_u.macu != at_u.macv and len(at_u.macu) == 16


# -- issuance and suite 2 ---------------------------------------------------------------


def _issue_side(s: Suite, ca: KeyPair, ieee: bytes, **fields: Any) -> dict[str, bytes]:
    cert, private = issue(s, ca, subject=ieee, issuer=b"LABCA\x00\x00\x01", **fields)
    eph = new_key_pair(s)
    static_public = reconstruct_public_key(cert, ca.public_key)
    assert static_public == s.curve.compress(s.curve.multiply_base(int.from_bytes(private, "big")))
    assert cert.subject == ieee
    return {
        "ieee": ieee,
        "certificate": cert.raw,
        "static_private_key": private,
        "static_public_key": static_public,
        "ephemeral_private_key": eph.private_key,
        "ephemeral_public_key": eph.public_key,
    }


@pytest.mark.parametrize("s", [SUITE_2, SUITE_1], ids=lambda s: f"suite{s.number}")
def test_issued_keys_reconstruct_and_agree(s: Suite) -> None:
    ca = new_key_pair(s)
    assert len(ca.private_key) == s.private_key_length and len(ca.public_key) == s.point_length
    device = _issue_side(s, ca, H("000D6F0000ABCDEF"))
    hub = _issue_side(s, ca, H("00124B0001020304"))
    assert len(device["certificate"]) == s.certificate_length
    at_device = _agree(s, device, hub, initiator=True)
    at_hub = _agree(s, hub, device, initiator=False)
    assert at_device == at_hub
    assert len(at_hub.z) == s.curve.element_length
    # another CA's key reconstructs a different public key: the MACs no longer match
    other = new_key_pair(s)
    wrong = reconstruct_public_key(parse_certificate(device["certificate"], s), other.public_key)
    assert _agree(s, hub, {**device, "static_public_key": wrong}, initiator=False).macu != at_device.macu


def test_suite2_certificate_fields() -> None:
    ca = new_key_pair(SUITE_2)
    cert, _ = issue(
        SUITE_2, ca, subject=H("0000000000000002"), issuer=H("5445535453454341"),
        serial=H("0102030405060708"), valid_from=1_700_000_000, valid_to=86400 * 365,
    )  # fmt: skip
    again = parse_certificate(cert.raw, SUITE_2)
    assert again == cert
    assert (cert.cert_type, cert.curve_id, cert.hash_id, cert.key_usage) == (0x00, 0x0D, 0x08, 0x08)
    assert cert.serial == H("0102030405060708")
    assert (cert.valid_from, cert.valid_to) == (1_700_000_000, 86400 * 365)
    assert cert.raw[19:24] == (1_700_000_000).to_bytes(5, "big")
    assert cert.raw[28:36] == H("0000000000000002") and cert.raw[11:19] == b"TESTSECA"
    assert cert.raw[37:] == cert.reconstruction_point and cert.profile_attributes is None
    assert cert.subject_ieee == "00:00:00:00:00:00:00:02"
    require_key_agreement(cert)
    # Valid-from counts from the Zigbee epoch, valid-to from valid-from.
    assert cert.validity == (946_684_800 + 1_700_000_000, 946_684_800 + 1_700_000_000 + 86400 * 365)
    assert utc_text(cert.validity[0]) == "2053-11-13T22:13:20Z"


def test_suite2_validity_edges() -> None:
    ca = new_key_pair(SUITE_2)
    forever, _ = issue(SUITE_2, ca, subject=bytes(8), issuer=bytes(8))  # the defaults: from the epoch, no expiry
    assert forever.validity == (946_684_800, None) and utc_text(946_684_800) == "2000-01-01T00:00:00Z"
    check_validity(forever, 946_684_800)
    check_validity(forever, 2.0**40)
    with pytest.raises(CertificateError, match=r"^certificate valid from at offset 19: not valid before 2000-01-01T00:00:00Z \(now 1999-12-31T23:59:59Z\)$"):
        check_validity(forever, 946_684_799)
    one_second, _ = issue(SUITE_2, ca, subject=bytes(8), issuer=bytes(8), valid_to=1)
    check_validity(one_second, 946_684_800)
    with pytest.raises(CertificateError, match=r"^certificate valid to at offset 24: expired at 2000-01-01T00:00:01Z"):
        check_validity(one_second, 946_684_801)


def test_issue_refuses_a_mismatched_ca_key_pair() -> None:
    a, b = new_key_pair(SUITE_1), new_key_pair(SUITE_1)
    with pytest.raises(SeError, match="not the private key's"):
        issue(SUITE_1, KeyPair(a.private_key, b.public_key), subject=bytes(8), issuer=bytes(8))


# -- certificate refusals ---------------------------------------------------------------


def _suite2_raw() -> bytes:
    point = SUITE_2.curve.compress(SUITE_2.curve.generator)
    return build_certificate(SUITE_2, reconstruction_point=point, subject=bytes(8), issuer=bytes(8)).raw


SUITE1_RAW = H(EXAMPLE["responder"]["certificate"])


def _with(raw: bytes, offset: int, value: int) -> bytes:
    return raw[:offset] + bytes([value]) + raw[offset + 1 :]


@pytest.mark.parametrize(
    ("s", "raw", "field", "offset", "reason"),
    [
        (SUITE_1, SUITE1_RAW[:47], "length", 47, "47 bytes, suite 1 certificates are 48"),
        (SUITE_1, SUITE1_RAW + b"\x00", "length", 48, "49 bytes, suite 1 certificates are 48"),
        (SUITE_1, b"", "length", 0, "0 bytes, suite 1 certificates are 48"),
        (SUITE_1, _with(SUITE1_RAW, 0, 0x04), "reconstruction point", 0, "prefix 0x04, must be 0x02 or 0x03 (compressed)"),
        (SUITE_2, SUITE1_RAW, "length", 48, "48 bytes, suite 2 certificates are 74"),
        (SUITE_2, _with(_suite2_raw(), 0, 0x01), "type", 0, "0x01, must be 0x00 (implicit certificate)"),
        (SUITE_2, _with(_suite2_raw(), 9, 0x0C), "curve", 9, "0x0C, must be 0x0D (sect283k1)"),
        (SUITE_2, _with(_suite2_raw(), 10, 0x01), "hash", 10, "0x01, must be 0x08 (AES-MMO)"),
        (SUITE_2, _with(_suite2_raw(), 37, 0x00), "reconstruction point", 37, "prefix 0x00, must be 0x02 or 0x03 (compressed)"),
    ],
)  # fmt: skip
def test_bad_certificates_are_refused_naming_field_and_offset(
    s: Suite, raw: bytes, field: str, offset: int, reason: str
) -> None:
    with pytest.raises(CertificateError) as info:
        parse_certificate(raw, s)
    assert (info.value.field, info.value.offset, info.value.reason) == (field, offset, reason)
    assert str(info.value) == f"certificate {field} at offset {offset}: {reason}"
    assert isinstance(info.value, SeError) and isinstance(info.value, ValueError)


def test_key_usage_without_key_agreement_is_refused_by_the_policy_check() -> None:
    cert = parse_certificate(_with(_suite2_raw(), 36, 0x80), SUITE_2)  # parses: it can be inspected
    assert not cert.allows_key_agreement
    with pytest.raises(CertificateError, match=r"^certificate key usage at offset 36: 0x80 lacks key agreement"):
        require_key_agreement(cert)


def test_build_refuses_wrong_sizes() -> None:
    point = SUITE_1.curve.compress(SUITE_1.curve.generator)
    with pytest.raises(SeError, match="subject: 7 bytes, needs 8"):
        build_certificate(SUITE_1, reconstruction_point=point, subject=bytes(7), issuer=bytes(8))
    with pytest.raises(SeError, match="reconstruction point: 22 bytes, needs 37"):
        build_certificate(SUITE_2, reconstruction_point=point, subject=bytes(8), issuer=bytes(8))
    p2 = SUITE_2.curve.compress(SUITE_2.curve.generator)
    with pytest.raises(SeError, match="valid to: 4294967296 does not fit 4 bytes"):
        build_certificate(SUITE_2, reconstruction_point=p2, subject=bytes(8), issuer=bytes(8), valid_to=1 << 32)


def test_reconstruction_refuses_bad_points() -> None:
    ca = H(EXAMPLE["ca_public_key"])
    good = parse_certificate(SUITE1_RAW, SUITE_1)
    with pytest.raises(PointError, match="^CA public key: sect163k1 compressed point: 21 bytes, needs 22$"):
        reconstruct_public_key(good, ca[:-1])
    x = next(x for x in range(2, 1000) if SECT163K1.field.trace(x ^ 1 ^ ref_inv(SECT163K1, ref_mul(SECT163K1, x, x))))
    off_curve = b"\x02" + x.to_bytes(21, "big")
    with pytest.raises(PointError, match="not on the curve"):
        reconstruct_public_key(good, off_curve)
    bad_cert = parse_certificate(off_curve + SUITE1_RAW[22:], SUITE_1)
    with pytest.raises(PointError, match="^certificate reconstruction point: .* not on the curve$"):
        reconstruct_public_key(bad_cert, ca)


# -- agreement refusals -----------------------------------------------------------------


def test_agree_refuses_bad_points_keys_and_addresses() -> None:
    u, v = _side("initiator"), _side("responder")
    with pytest.raises(PointError, match="peer ephemeral public key: .*prefix 0x04"):
        _agree(SUITE_1, u, {**v, "ephemeral_public_key": b"\x04" + v["ephemeral_public_key"][1:]}, True)
    with pytest.raises(PointError, match="peer static public key: .*21 bytes"):
        _agree(SUITE_1, u, {**v, "static_public_key": v["static_public_key"][:-1]}, True)
    with pytest.raises(SeError, match="own static private key: 20 bytes, suite 1 needs 21"):
        _agree(SUITE_1, {**u, "static_private_key": bytes(20)}, v, True)
    with pytest.raises(SeError, match="own ephemeral private key: not in 1..n-1"):
        _agree(SUITE_1, {**u, "ephemeral_private_key": bytes(21)}, v, True)
    with pytest.raises(SeError, match="peer IEEE address: 7 bytes"):
        _agree(SUITE_1, u, {**v, "ieee": bytes(7)}, True)


def test_agree_refuses_a_shared_point_at_infinity() -> None:
    # (0, sqrt(b)) has order 2, and the cofactor 2 sends it to infinity
    u, v = _side("initiator"), _side("responder")
    small = b"\x02" + bytes(21)
    with pytest.raises(SeError, match="point at infinity"):
        _agree(SUITE_1, u, {**v, "static_public_key": small, "ephemeral_public_key": small}, True)


def test_implicit_certificate_is_frozen() -> None:
    cert = parse_certificate(SUITE1_RAW, SUITE_1)
    assert isinstance(cert, ImplicitCertificate)
    with pytest.raises(AttributeError):
        cert.subject = bytes(8)  # type: ignore[misc]
