"""The key-establishment crypto's one error base and its refusals.

``SeError`` is the only exception gateway/se lets out on bad input. It subclasses
``ValueError`` because every refusal here is a value the caller (or the peer) got wrong.
``CertificateError`` names the certificate field and its byte offset, so the cluster can
log exactly what a device sent; ``PointError`` is a compressed point that is not one.
"""

from __future__ import annotations


class SeError(ValueError):
    """Base of every refusal in gateway/se."""


class CertificateError(SeError):
    """An implicit certificate field is wrong; names the field and its byte offset."""

    def __init__(self, field: str, offset: int, reason: str) -> None:
        self.field = field
        self.offset = offset
        self.reason = reason
        super().__init__(f"certificate {field} at offset {offset}: {reason}")


class PointError(SeError):
    """A compressed point of the wrong length or prefix, or not on the curve."""
