"""Key material as lab files and command lines carry it: raw bytes or hex text.

The hub's configuration, the simulated devices and ``han-ota cbke`` read certificates,
keys and points from files that hold either the raw bytes or their hex text (what the
specification's examples and the lab tools print). ``decode_material`` tells the two
apart without guessing from the length alone, which could not: a 74-byte suite-2
certificate and the hex text of a 37-byte point have the same length. Hex text is
taken when every byte is a hex digit or whitespace; no raw certificate can look like
that (its first byte is 0x00, 0x02 or 0x03) and a raw key only with negligible chance.
"""

from __future__ import annotations

import string
from collections.abc import Collection

from .certificate import ImplicitCertificate, parse_certificate
from .ecqv import private_scalar
from .errors import CertificateError, SeError
from .suites import SUITES, Suite

_HEX_TEXT = frozenset((string.hexdigits + string.whitespace).encode("ascii"))


def is_hex_text(data: bytes) -> bool:
    """Only hex digits and whitespace, and at least one digit."""
    return bool(data.strip()) and all(b in _HEX_TEXT for b in data)


def decode_material(data: bytes, lengths: Collection[int] | None, what: str) -> bytes:
    """The bytes of ``data`` (raw, or hex text with any whitespace), refused unless
    their length is one of ``lengths`` (None: any). The message never shows the
    bytes: they may be a private key."""
    data = bytes(data)
    if is_hex_text(data):
        digits = b"".join(data.split())
        if len(digits) % 2:
            raise SeError(f"{what}: hex text with an odd number of digits ({len(digits)})")
        value = bytes.fromhex(digits.decode("ascii"))
        form = "hex text of "
    else:
        value, form = data, ""
    if lengths is not None and len(value) not in lengths:
        wanted = " or ".join(str(n) for n in sorted(lengths))
        raise SeError(f"{what}: {form}{len(value)} bytes, needs {wanted}")
    return value


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


def parse_eui64(text: str) -> bytes:
    """An EUI-64 in any usual form (``00:0d:6f:00:0a:bc:de:f0``, ``000D6F000ABCDEF0``,
    dashes) as 8 bytes in display (certificate) order."""
    digits = text.strip().replace(":", "").replace("-", "").replace(" ", "")
    if len(digits) != 16 or not all(c in string.hexdigits for c in digits):
        raise SeError(f"EUI-64 {text!r}: needs 16 hex digits, e.g. 00:0d:6f:00:0a:bc:de:f0 or 000D6F000ABCDEF0")
    return bytes.fromhex(digits)


__all__ = ["decode_material", "is_hex_text", "parse_any_certificate", "parse_eui64", "public_key", "suite_of_certificate"]
