"""A minimal strict DER reader and writer: exactly what GBCS lengths and CS06 need.

Strict means one encoding per value (X.690 DER): definite lengths in the shortest form,
INTEGERs without redundant leading bytes, GeneralizedTime as ``YYYYMMDDHHMMSSZ``.
Anything else is refused, so a signed command has a single byte form and a parsed
value re-encodes to the bytes it came from. Lengths above 65535 are not supported: no
GBCS message here comes near it.
"""

from __future__ import annotations

import datetime as dt

from .cursor import Cursor
from .errors import GbcsUsageError, MalformedCommand

TAG_INTEGER = 0x02
TAG_OCTET_STRING = 0x04
TAG_SEQUENCE = 0x30
TAG_GENERALIZED_TIME = 0x18

_TAG_NAMES = {
    TAG_INTEGER: "INTEGER",
    TAG_OCTET_STRING: "OCTET STRING",
    TAG_SEQUENCE: "SEQUENCE",
    TAG_GENERALIZED_TIME: "GeneralizedTime",
}

_U64_MAX = (1 << 64) - 1


def read_length(cur: Cursor, field: str) -> int:
    """A DER length: short form below 0x80, else 0x81 nn or 0x82 nnnn, minimal."""
    at = cur.offset
    first = cur.u8(field)
    if first < 0x80:
        return first
    if first == 0x80:
        raise MalformedCommand(at, field, "indefinite length is not DER")
    count = first & 0x7F
    if count > 2:
        raise MalformedCommand(at, field, f"length of {count} bytes is not supported (at most 2)")
    value = cur.uint(count, field)
    if value < (0x80 if count == 1 else 0x100):
        raise MalformedCommand(at, field, f"non-minimal length encoding for {value}")
    return value


def encode_length(n: int) -> bytes:
    if n < 0 or n > 0xFFFF:
        raise GbcsUsageError(f"DER length {n} is outside 0..65535")
    if n < 0x80:
        return bytes([n])
    if n < 0x100:
        return bytes([0x81, n])
    return bytes([0x82]) + n.to_bytes(2, "big")


def read_tlv(cur: Cursor, tag: int, field: str) -> Cursor:
    """Read tag ``tag`` and its length; return a cursor over exactly its value."""
    at = cur.offset
    got = cur.u8(field)
    if got != tag:
        raise MalformedCommand(
            at, field, f"expected tag 0x{tag:02X} ({_TAG_NAMES.get(tag, '?')}), got 0x{got:02X}"
        )
    length = read_length(cur, field)
    return cur.sub(length, field)


def encode_tlv(tag: int, value: bytes) -> bytes:
    return bytes([tag]) + encode_length(len(value)) + value


def read_octet_string(cur: Cursor, field: str, size: int) -> bytes:
    value = read_tlv(cur, TAG_OCTET_STRING, field)
    if value.remaining != size:
        raise MalformedCommand(value.offset, field, f"expected {size} bytes, got {value.remaining}")
    return value.rest()


def read_unsigned(cur: Cursor, field: str) -> int:
    """A non-negative INTEGER that fits 64 bits, minimally encoded."""
    value = read_tlv(cur, TAG_INTEGER, field)
    at = value.offset
    body = value.rest()
    if not body:
        raise MalformedCommand(at, field, "empty INTEGER")
    if len(body) > 1 and (
        (body[0] == 0x00 and body[1] < 0x80) or (body[0] == 0xFF and body[1] >= 0x80)
    ):
        raise MalformedCommand(at, field, "non-minimal INTEGER encoding")
    if body[0] & 0x80:
        raise MalformedCommand(at, field, "negative INTEGER")
    number = int.from_bytes(body, "big")
    if number > _U64_MAX:
        raise MalformedCommand(at, field, "INTEGER exceeds 64 bits")
    return number


def encode_unsigned(n: int) -> bytes:
    if n < 0:
        raise GbcsUsageError(f"{n} is negative; only unsigned INTEGERs are written")
    body = n.to_bytes(n.bit_length() // 8 + 1, "big")  # one spare bit keeps it positive
    if len(body) > 1 and body[0] == 0 and body[1] < 0x80:
        body = body[1:]
    return encode_tlv(TAG_INTEGER, body)


def read_generalized_time(cur: Cursor, field: str) -> dt.datetime:
    """``YYYYMMDDHHMMSSZ`` exactly (no fractions, no offsets), as an aware UTC datetime."""
    value = read_tlv(cur, TAG_GENERALIZED_TIME, field)
    at = value.offset
    body = value.rest()
    if len(body) != 15 or body[14:] != b"Z" or not body[:14].isdigit():
        raise MalformedCommand(at, field, f"expected YYYYMMDDHHMMSSZ, got {body!r}")
    d = body.decode("ascii")
    try:
        return dt.datetime(
            int(d[0:4]), int(d[4:6]), int(d[6:8]), int(d[8:10]), int(d[10:12]), int(d[12:14]),
            tzinfo=dt.timezone.utc,
        )
    except ValueError:
        raise MalformedCommand(at, field, f"not a calendar date-time: {body!r}") from None


def encode_generalized_time(when: dt.datetime) -> bytes:
    # strftime's %Y does not zero-pad years below 1000 on every platform: format by hand.
    w = when.astimezone(dt.timezone.utc)
    text = f"{w.year:04d}{w.month:02d}{w.day:02d}{w.hour:02d}{w.minute:02d}{w.second:02d}Z"
    return encode_tlv(TAG_GENERALIZED_TIME, text.encode("ascii"))
