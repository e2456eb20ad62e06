"""ECQV implicit certificates of the two crypto suites, parsed once into typed values.

Suite 1 (48 bytes, Smart Energy 1.0/1.1):
    reconstruction point 22 | subject 8 | issuer 8 | profile attributes 10
Suite 2 (74 bytes, Smart Energy 1.2):
    type 1 | serial 8 | curve 1 | hash 1 | issuer 8 | valid from 5 | valid to 4 |
    subject 8 | key usage 1 | reconstruction point 37

EUI-64s are in display (big-endian) order. ``parse_certificate`` refuses what no
trust center could use: a wrong length, a point prefix other than 02/03, and for suite
2 a type other than 0x00 (implicit), a curve other than 0x0D (sect283k1) or a hash
other than 0x08 (AES-MMO). Key usage, issuer and subject are policy, left to the
Key Establishment server (``require_key_agreement`` serves it); a certificate with the
wrong key usage can still be inspected. Whether the point is on the curve is found by
ECQV reconstruction (``PointError``).

Validity (suite 2 only; suite-1 certificates carry none): valid-from is 40 bits of
seconds since 2000-01-01 00:00:00 UTC (the Zigbee epoch, as ZCL UTCTime); valid-to is 32
bits of seconds *after* valid-from, 0xFFFFFFFF meaning no expiry. Both are kept as
stored; ``validity`` gives them as Unix seconds and ``check_validity(cert, utc)`` refuses
a certificate outside them at a time the caller gives (the hub passes its clock; no
clock is read here). The layout is the one the brief for issue 12 and
../shared/se-cbke-vectors/README.md give; the Zigbee SE 1.2+ text was not at hand.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from eui64 import Eui64

from .errors import CertificateError, SeError
from .suites import SUITE_1, SUITE_2, Suite

CERT_TYPE_IMPLICIT = 0x00
CURVE_SECT283K1 = 0x0D
HASH_AES_MMO = 0x08
KEY_USAGE_KEY_AGREEMENT = 0x08
NO_EXPIRY = 0xFFFFFFFF
#: 2000-01-01 00:00:00 UTC, the Zigbee epoch, in Unix seconds.
ZIGBEE_EPOCH_UNIX = 946_684_800

# (name, offset, length) of each suite-2 field, in certificate order.
_S2_TYPE = ("type", 0, 1)
_S2_SERIAL = ("serial", 1, 8)
_S2_CURVE = ("curve", 9, 1)
_S2_HASH = ("hash", 10, 1)
_S2_ISSUER = ("issuer", 11, 8)
_S2_VALID_FROM = ("valid from", 19, 5)
_S2_VALID_TO = ("valid to", 24, 4)
_S2_SUBJECT = ("subject", 28, 8)
_S2_KEY_USAGE = ("key usage", 36, 1)
_S2_POINT = ("reconstruction point", 37, 37)

_S1_POINT = ("reconstruction point", 0, 22)
_S1_SUBJECT = ("subject", 22, 8)
_S1_ISSUER = ("issuer", 30, 8)
_S1_PROFILE = ("profile attributes", 38, 10)


def _field(raw: bytes, spec: tuple[str, int, int]) -> bytes:
    _, offset, length = spec
    return raw[offset : offset + length]


@dataclass(frozen=True)
class ImplicitCertificate:
    suite: Suite
    raw: bytes
    reconstruction_point: bytes
    subject: bytes
    issuer: bytes
    cert_type: int | None = None
    serial: bytes | None = None
    curve_id: int | None = None
    hash_id: int | None = None
    valid_from: int | None = None
    valid_to: int | None = None
    key_usage: int | None = None
    profile_attributes: bytes | None = None

    @property
    def subject_ieee(self) -> str:
        """The subject as zigpy prints an EUI64, e.g. "00:00:00:00:00:00:00:01"."""
        return str(Eui64(self.subject))

    @property
    def issuer_ieee(self) -> str:
        return str(Eui64(self.issuer))

    @property
    def validity(self) -> tuple[int, int | None] | None:
        """(valid from, valid until) in Unix seconds (until None: no expiry); None for
        suite 1, whose certificates carry no validity."""
        if self.valid_from is None or self.valid_to is None:
            return None
        start = ZIGBEE_EPOCH_UNIX + self.valid_from
        return start, None if self.valid_to == NO_EXPIRY else start + self.valid_to

    @property
    def allows_key_agreement(self) -> bool:
        """Suite 1 certificates carry no key usage; they exist for key agreement."""
        return self.key_usage is None or bool(self.key_usage & KEY_USAGE_KEY_AGREEMENT)


def require_key_agreement(cert: ImplicitCertificate) -> None:
    """Refuse a suite-2 certificate whose key usage lacks key agreement (bit 0x08)."""
    if not cert.allows_key_agreement:
        name, offset, _ = _S2_KEY_USAGE
        raise CertificateError(name, offset, f"0x{cert.key_usage:02X} lacks key agreement (0x08)")


def check_validity(cert: ImplicitCertificate, utc: float) -> None:
    """Refuse a suite-2 certificate that is not yet valid, or has expired, at ``utc``
    (Unix seconds). Suite-1 certificates pass: they carry no validity."""
    validity = cert.validity
    if validity is None:
        return
    start, until = validity
    if utc < start:
        name, offset, _ = _S2_VALID_FROM
        raise CertificateError(name, offset, f"not valid before {utc_text(start)} (now {utc_text(utc)})")
    if until is not None and utc >= until:
        name, offset, _ = _S2_VALID_TO
        raise CertificateError(name, offset, f"expired at {utc_text(until)} (now {utc_text(utc)})")


def utc_text(unix: float) -> str:
    """A Unix time as an ISO 8601 UTC string ("2026-12-04T02:30:00Z"), for refusals and reports."""
    try:
        return dt.datetime.fromtimestamp(int(unix), dt.timezone.utc).isoformat().replace("+00:00", "Z")
    except (OverflowError, OSError, ValueError):
        return "beyond the calendar"


def parse_certificate(raw: bytes, suite: Suite) -> ImplicitCertificate:
    raw = bytes(raw)
    if len(raw) != suite.certificate_length:
        raise CertificateError(
            "length",
            min(len(raw), suite.certificate_length),
            f"{len(raw)} bytes, suite {suite.number} certificates are {suite.certificate_length}",
        )
    if suite.number == 1:
        return _parse_suite1(raw)
    if suite.number == 2:
        return _parse_suite2(raw)
    raise SeError(f"no certificate format for suite {suite.number}")


def _check_point_prefix(raw: bytes, spec: tuple[str, int, int]) -> bytes:
    name, offset, _ = spec
    point = _field(raw, spec)
    if point[0] not in (0x02, 0x03):
        raise CertificateError(name, offset, f"prefix 0x{point[0]:02X}, must be 0x02 or 0x03 (compressed)")
    return point


def _parse_suite1(raw: bytes) -> ImplicitCertificate:
    return ImplicitCertificate(
        suite=SUITE_1,
        raw=raw,
        reconstruction_point=_check_point_prefix(raw, _S1_POINT),
        subject=_field(raw, _S1_SUBJECT),
        issuer=_field(raw, _S1_ISSUER),
        profile_attributes=_field(raw, _S1_PROFILE),
    )


def _expect(raw: bytes, spec: tuple[str, int, int], wanted: int, meaning: str) -> int:
    name, offset, _ = spec
    value = raw[offset]
    if value != wanted:
        raise CertificateError(name, offset, f"0x{value:02X}, must be 0x{wanted:02X} ({meaning})")
    return value


def _parse_suite2(raw: bytes) -> ImplicitCertificate:
    return ImplicitCertificate(
        suite=SUITE_2,
        raw=raw,
        cert_type=_expect(raw, _S2_TYPE, CERT_TYPE_IMPLICIT, "implicit certificate"),
        serial=_field(raw, _S2_SERIAL),
        curve_id=_expect(raw, _S2_CURVE, CURVE_SECT283K1, "sect283k1"),
        hash_id=_expect(raw, _S2_HASH, HASH_AES_MMO, "AES-MMO"),
        issuer=_field(raw, _S2_ISSUER),
        valid_from=int.from_bytes(_field(raw, _S2_VALID_FROM), "big"),
        valid_to=int.from_bytes(_field(raw, _S2_VALID_TO), "big"),
        subject=_field(raw, _S2_SUBJECT),
        key_usage=raw[_S2_KEY_USAGE[1]],
        reconstruction_point=_check_point_prefix(raw, _S2_POINT),
    )


def _sized(name: str, value: bytes, length: int) -> bytes:
    if len(value) != length:
        raise SeError(f"certificate {name}: {len(value)} bytes, needs {length}")
    return bytes(value)


def _uint(name: str, value: int, length: int) -> bytes:
    if not 0 <= value < 1 << (8 * length):
        raise SeError(f"certificate {name}: {value} does not fit {length} bytes")
    return value.to_bytes(length, "big")


def build_certificate(
    suite: Suite,
    *,
    reconstruction_point: bytes,
    subject: bytes,
    issuer: bytes,
    profile_attributes: bytes = bytes(10),
    cert_type: int = CERT_TYPE_IMPLICIT,
    serial: bytes = bytes(8),
    curve_id: int = CURVE_SECT283K1,
    hash_id: int = HASH_AES_MMO,
    valid_from: int = 0,
    valid_to: int = NO_EXPIRY,
    key_usage: int = KEY_USAGE_KEY_AGREEMENT,
) -> ImplicitCertificate:
    """Lay out a certificate (for issuance) and parse it back, so it obeys the parser.

    Suite 1 uses only the point, subject, issuer and profile attributes; the other
    keywords are suite 2's and are ignored for suite 1.
    """
    point = _sized("reconstruction point", reconstruction_point, suite.point_length)
    subject = _sized("subject", subject, 8)
    issuer = _sized("issuer", issuer, 8)
    if suite.number == 1:
        raw = point + subject + issuer + _sized("profile attributes", profile_attributes, 10)
    else:
        raw = (
            _uint("type", cert_type, 1)
            + _sized("serial", serial, 8)
            + _uint("curve", curve_id, 1)
            + _uint("hash", hash_id, 1)
            + issuer
            + _uint("valid from", valid_from, 5)
            + _uint("valid to", valid_to, 4)
            + subject
            + _uint("key usage", key_usage, 1)
            + point
        )
    return parse_certificate(raw, suite)
