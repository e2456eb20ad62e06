"""What a simulated device reads: a General Signing APDU, bare or in General Ciphering.

Written from the GBCS layouts (tests/data/gbcs/VECTORS.md), not from the gateway::

    DF
    09 <CRA flag: 01 command, 02 response, 03 alert> <originator counter, u64 BE>
    08 <originator EUI-64>  08 <recipient EUI-64>
    00 | 0C <12-byte COSEM date-time>
    <other-information length> <message code u16> [<supplementary remote party ...>]
    <content length, DER> <content>
    40 <ECDSA P-256 signature r||s> | 00 (unsigned)

A command from the hub may come wrapped as ``DD 00 00 00 00 00 00 <DER length> 11 00
00 00 00 <APDU> <12-byte MAC>``. The device carries no Access Control Broker key, so
the MAC is read and not checked (what it trusts is the supplier's signature inside).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from eui64 import Eui64

from . import der
from .cursor import Cursor, GbcsReadError

__all__ = [
    "CRA_ALERT",
    "CRA_COMMAND",
    "CRA_RESPONSE",
    "GbcsReadError",
    "SignedMessage",
    "read_message",
    "signature_verifies",
]

GENERAL_SIGNING: Final = 0xDF
GENERAL_CIPHERING: Final = 0xDD
CRA_COMMAND: Final = 0x01
CRA_RESPONSE: Final = 0x02
CRA_ALERT: Final = 0x03
SIGNATURE_TAG: Final = 0x40
SIGNATURE_SIZE: Final = 64
MAC_SIZE: Final = 12
_CIPHERING_HEADER: Final = bytes(6)  # empty transaction id, system titles, date-time, other info, key info
_SECURITY_HEADER: Final = bytes([0x11, 0, 0, 0, 0])


@dataclass(frozen=True)
class SignedMessage:
    """One General Signing APDU, read once."""

    cra_flag: int
    counter: int
    originator: Eui64
    recipient: Eui64
    date_time: bytes | None  # the 12 COSEM bytes as sent, or None
    message_code: int
    supplementary: bytes  # other information after the message code (usually none)
    content: bytes
    content_offset: int  # where the content starts in the bytes handed to read_message
    signature: bytes | None  # r||s, or None when unsigned
    signed_data: bytes  # what the signature covers: after DF up to the end of the content
    wrapped: bool  # it came in General Ciphering


def read_message(data: bytes) -> SignedMessage:
    """Read a whole message; GbcsReadError names the field and offset of the first fault."""
    cur = Cursor(bytes(data))
    if not cur.remaining:
        raise GbcsReadError("tag", 0, "empty message")
    if data[0] == GENERAL_CIPHERING:
        return _read_ciphering(cur)
    message = _read_signing(cur)
    cur.end("General Signing APDU")
    return message


def _read_ciphering(cur: Cursor) -> SignedMessage:
    cur.expect(GENERAL_CIPHERING, "General Ciphering tag")
    at = cur.offset
    if cur.take(6, "General Ciphering header") != _CIPHERING_HEADER:
        raise GbcsReadError("General Ciphering header", at, "expected six empty fields (00 00 00 00 00 00)")
    body = cur.sub(der.read_length(cur, "General Ciphering length"), "General Ciphering body")
    cur.end("General Ciphering")
    at = body.offset
    if body.take(5, "security header") != _SECURITY_HEADER:
        raise GbcsReadError("security header", at, "expected 11 00000000")
    if body.remaining < MAC_SIZE:
        raise GbcsReadError("MAC", body.offset, f"needs {MAC_SIZE} bytes, {body.remaining} left")
    inner = body.sub(body.remaining - MAC_SIZE, "General Signing APDU")
    message = _read_signing(inner)
    inner.end("General Signing APDU")
    return SignedMessage(**{**message.__dict__, "wrapped": True})


def _read_signing(cur: Cursor) -> SignedMessage:
    cur.expect(GENERAL_SIGNING, "General Signing tag")
    signed_from = cur.offset
    cur.expect(0x09, "transaction id length")
    at = cur.offset
    cra = cur.byte("CRA flag")
    if cra not in (CRA_COMMAND, CRA_RESPONSE, CRA_ALERT):
        raise GbcsReadError("CRA flag", at, f"0x{cra:02X} (01 command, 02 response, 03 alert)")
    counter = int.from_bytes(cur.take(8, "originator counter"), "big")
    cur.expect(0x08, "originator length")
    originator = Eui64(cur.take(8, "originator"))
    cur.expect(0x08, "recipient length")
    recipient = Eui64(cur.take(8, "recipient"))
    at = cur.offset
    dt_len = cur.byte("date-time length")
    if dt_len not in (0x00, 0x0C):
        raise GbcsReadError("date-time length", at, f"0x{dt_len:02X} (00 absent, 0C present)")
    date_time = cur.take(12, "date-time") if dt_len else None
    at = cur.offset
    other = cur.sub(cur.byte("other information length"), "other information")
    if other.remaining < 2:
        raise GbcsReadError("other information length", at, "shorter than the 2-byte message code")
    message_code = int.from_bytes(other.take(2, "message code"), "big")
    supplementary = other.take(other.remaining, "supplementary remote party")
    content_len = der.read_length(cur, "content length")
    content_offset = cur.offset
    content = cur.take(content_len, "content")
    signed_to = cur.offset
    tag = cur.byte("signature length")
    if tag == SIGNATURE_TAG:
        signature: bytes | None = cur.take(SIGNATURE_SIZE, "signature")
    elif tag == 0x00:
        signature = None
    else:
        raise GbcsReadError("signature length", signed_to, f"0x{tag:02X} (40 signed, 00 unsigned)")
    return SignedMessage(
        cra_flag=cra,
        counter=counter,
        originator=originator,
        recipient=recipient,
        date_time=date_time,
        message_code=message_code,
        supplementary=supplementary,
        content=content,
        content_offset=content_offset,
        signature=signature,
        signed_data=cur.span(signed_from, signed_to),
        wrapped=False,
    )


def signature_verifies(message: SignedMessage, key: ec.EllipticCurvePublicKey) -> bool:
    """ECDSA P-256 / SHA-256 over ``signed_data``: GBCS's r||s, checked as DER for cryptography."""
    if message.signature is None:
        return False
    r = int.from_bytes(message.signature[:32], "big")
    s = int.from_bytes(message.signature[32:], "big")
    try:
        key.verify(encode_dss_signature(r, s), message.signed_data, ec.ECDSA(hashes.SHA256()))
    except InvalidSignature:
        return False
    return True
