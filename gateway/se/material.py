"""Key material as lab files and command lines carry it: raw bytes or hex text.

The hub's configuration, the simulated devices and ``han-ota cbke`` read certificates,
keys and points from files that hold either the raw bytes or their hex text (what the
specification's examples and the lab tools print). ``decode_material`` tells the two
apart without guessing from the length alone, which could not: a 74-byte suite-2
certificate and the hex text of a 37-byte point have the same length. Hex text is
taken when every byte is a hex digit or a separator (whitespace, a capture tool's
colons); no raw certificate can look like that (its first byte is 0x00, 0x02 or 0x03)
and a raw key only with negligible chance.
"""

from __future__ import annotations

import string
from collections.abc import Collection

from eui64 import FORMS, Eui64, Eui64Error

from .certificate import ImplicitCertificate, parse_certificate
from .ecqv import private_scalar
from .errors import CertificateError, SeError
from .suites import SUITES, Suite

_HEX_DIGITS = frozenset(string.hexdigits.encode("ascii"))
# Separators a pasted value may carry: line breaks, spaces, and the colons of a capture tool.
_SEPARATORS = frozenset((string.whitespace + ":").encode("ascii"))
_HEX_TEXT = _HEX_DIGITS | _SEPARATORS
_PRINTABLE = frozenset(string.printable.encode("ascii"))


def is_hex_text(data: bytes) -> bool:
    """Only hex digits and separators (whitespace, colons), and at least one digit."""
    return any(b in _HEX_DIGITS for b in data) and all(b in _HEX_TEXT for b in data)


def _wanted(lengths: Collection[int]) -> str:
    return " or ".join(f"{n}" for n in sorted(lengths)) + " bytes (raw, or " + " or ".join(f"{2 * n}" for n in sorted(lengths)) + " hex digits)"


def decode_material(data: bytes, lengths: Collection[int] | None, what: str) -> bytes:
    """The bytes of ``data`` (raw, or hex text with any whitespace or colons), refused
    unless their length is one of ``lengths`` (None: any). The message never shows the
    bytes: they may be a private key."""
    data = bytes(data)
    if is_hex_text(data):
        digits = bytes(b for b in data if b in _HEX_DIGITS)
        if len(digits) % 2:
            raise SeError(f"{what}: hex text with an odd number of digits ({len(digits)})")
        value = bytes.fromhex(digits.decode("ascii"))
        if lengths is not None and len(value) not in lengths:
            raise SeError(f"{what}: hex text of {len(value)} bytes, needs {_wanted(lengths)}")
        return value
    if lengths is None or len(data) in lengths:
        return data
    if all(b in _PRINTABLE for b in data):
        # Text that is not hex: say where, by one character (never the value itself).
        digits = bytes(b for b in data if b not in _SEPARATORS)
        bad = next(i for i, b in enumerate(digits) if b not in _HEX_DIGITS)
        raise SeError(f"{what}: neither hex text ({chr(digits[bad])!r} at hex digit {bad} is not hex) nor raw, needs {_wanted(lengths)}")
    raise SeError(f"{what}: {len(data)} bytes, needs {_wanted(lengths)}")


def decode_eui64(text: str, what: str = "EUI-64") -> bytes:
    """An EUI-64 in a written form (eui64's) as 8 bytes in display (certificate) order."""
    try:
        return Eui64.parse(text, what).written
    except Eui64Error as exc:
        raise SeError(f"{what} {text!r}: {exc.reason}; needs {FORMS}") from None


def suite_of_certificate(raw: bytes) -> Suite:
    """The suite whose certificates have ``raw``'s length (48: suite 1, 74: suite 2)."""
    for s in SUITES:
        if len(raw) == s.certificate_length:
            return s
    lengths = ", ".join(f"suite {s.number} {s.certificate_length}" for s in sorted(SUITES, key=lambda s: s.number))
    raise CertificateError("length", 0, f"{len(raw)} bytes, which is no suite's certificate ({lengths})")


def parse_any_certificate(raw: bytes) -> ImplicitCertificate:
    """A certificate of either suite, the suite told by its length."""
    return parse_certificate(raw, suite_of_certificate(raw))


def public_key(suite: Suite, private_key: bytes, what: str = "private key") -> bytes:
    """The compressed public point of ``private_key`` (checked: length, 0 < d < n)."""
    d = private_scalar(suite, private_key, what)
    return suite.curve.compress(suite.curve.multiply_base(d))


__all__ = ["decode_eui64", "decode_material", "is_hex_text", "parse_any_certificate", "public_key", "suite_of_certificate"]
