"""What a simulated device writes: General Signing APDUs signed with its own P-256 key.

The layout is reader.py's, written the other way; the signature is ECDSA P-256 with
SHA-256 over every byte after ``DF`` up to the end of the content, carried as ``40``
and r||s (32 bytes each, big-endian), as the RTDS responses and alerts carry theirs.
ECDSA draws a fresh nonce per signature, so two signings of one message differ in
the signature only.
"""

from __future__ import annotations

import datetime as dt
from typing import Final

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from eui64 import Eui64

from . import der
from .reader import GENERAL_SIGNING, SIGNATURE_TAG

__all__ = ["cosem_date_time", "signed_message", "zigbee_utc"]

_ZIGBEE_EPOCH: Final = 946684800  # 2000-01-01T00:00:00Z, ZigBee's UTCTime origin


def cosem_date_time(when: float) -> bytes:
    """The 12-byte COSEM date-time of a response header, in UTC.

    As the RTDS responses write it (``07DF0101FF000000008000FF``): day of week not
    specified (FF), hundredths 0, deviation not specified (0x8000: GBCS is UTC), clock
    status FF.
    """
    t = dt.datetime.fromtimestamp(int(when), dt.timezone.utc)
    return t.year.to_bytes(2, "big") + bytes([t.month, t.day, 0xFF, t.hour, t.minute, t.second, 0x00, 0x80, 0x00, 0xFF])


def zigbee_utc(when: float) -> int:
    """ZigBee UTCTime: whole seconds since 2000-01-01 UTC."""
    return int(when) - _ZIGBEE_EPOCH


def signed_message(
    *,
    cra_flag: int,
    counter: int,
    originator: Eui64,
    recipient: Eui64,
    message_code: int,
    content: bytes,
    key: ec.EllipticCurvePrivateKey | None,
    date_time: bytes | None = None,
) -> bytes:
    """One General Signing APDU; ``key=None`` leaves it unsigned (``00``)."""
    if not 0 <= counter < 1 << 64:
        raise ValueError(f"originator counter {counter} does not fit 8 bytes")
    if date_time is not None and len(date_time) != 12:
        raise ValueError(f"a COSEM date-time is 12 bytes, got {len(date_time)}")
    body = (
        bytes([0x09, cra_flag])
        + counter.to_bytes(8, "big")
        + b"\x08"
        + originator.written
        + b"\x08"
        + recipient.written
        + (b"\x00" if date_time is None else b"\x0c" + date_time)
        + b"\x02"
        + message_code.to_bytes(2, "big")
        + der.encode_length(len(content))
        + content
    )
    if key is None:
        return bytes([GENERAL_SIGNING]) + body + b"\x00"
    r, s = decode_dss_signature(key.sign(body, ec.ECDSA(hashes.SHA256())))
    return bytes([GENERAL_SIGNING]) + body + bytes([SIGNATURE_TAG]) + r.to_bytes(32, "big") + s.to_bytes(32, "big")
