"""The little DER the simulated devices' GBCS contents use (X.690), both ways.

Contents are SEQUENCEs of INTEGER, OCTET STRING, GeneralizedTime and NULL; lengths
are definite and minimal (short form below 128, then 0x81 / 0x82). GBCS also writes
the General Signing content length this way. Integers are two's complement, minimal:
0x8F66 goes as ``02 03 00 8F 66``.
"""

from __future__ import annotations

import calendar
import datetime as dt

from .cursor import Cursor, GbcsReadError

__all__ = [
    "INTEGER",
    "NULL",
    "OCTET_STRING",
    "SEQUENCE",
    "GENERALIZED_TIME",
    "encode_generalized_time",
    "encode_integer",
    "encode_length",
    "read_generalized_time",
    "read_integer",
    "read_length",
    "read_tlv",
    "tlv",
]

INTEGER = 0x02
OCTET_STRING = 0x04
NULL = 0x05
SEQUENCE = 0x30
GENERALIZED_TIME = 0x18


def encode_length(n: int) -> bytes:
    if n < 0x80:
        return bytes([n])
    if n <= 0xFF:
        return bytes([0x81, n])
    if n <= 0xFFFF:
        return bytes([0x82]) + n.to_bytes(2, "big")
    raise ValueError(f"DER length {n} is beyond what a GBCS message carries")


def read_length(cur: Cursor, field: str) -> int:
    at = cur.offset
    first = cur.byte(field)
    if first < 0x80:
        return first
    if first not in (0x81, 0x82):
        raise GbcsReadError(field, at, f"length form 0x{first:02X} (short form, 0x81 or 0x82 only)")
    n = int.from_bytes(cur.take(first - 0x80, field), "big")
    if n < (0x80 if first == 0x81 else 0x100):
        raise GbcsReadError(field, at, f"length {n} not in its shortest form")
    return n


def tlv(tag: int, value: bytes) -> bytes:
    return bytes([tag]) + encode_length(len(value)) + value


def read_tlv(cur: Cursor, tag: int, field: str) -> Cursor:
    """The value of the next element, which must carry ``tag``, as its own cursor."""
    cur.expect(tag, f"{field} tag")
    return cur.sub(read_length(cur, f"{field} length"), field)


def encode_integer(value: int) -> bytes:
    size = max(1, (value.bit_length() + 8) // 8)  # room for the sign bit
    return tlv(INTEGER, value.to_bytes(size, "big", signed=True))


def read_integer(cur: Cursor, field: str) -> int:
    at = cur.offset
    body = read_tlv(cur, INTEGER, field)
    raw = body.take(body.remaining, field)
    if not raw:
        raise GbcsReadError(field, at, "empty INTEGER")
    if len(raw) > 1 and (raw[0], raw[1] & 0x80) in ((0x00, 0), (0xFF, 0x80)):
        raise GbcsReadError(field, at, "INTEGER not in its shortest form")
    return int.from_bytes(raw, "big", signed=True)


def encode_generalized_time(when: float) -> bytes:
    """``YYYYMMDDHHMMSSZ`` for a POSIX UTC time (whole seconds, as GBCS writes it)."""
    stamp = dt.datetime.fromtimestamp(int(when), dt.timezone.utc)
    return tlv(GENERALIZED_TIME, stamp.strftime("%Y%m%d%H%M%SZ").encode("ascii"))


def read_generalized_time(cur: Cursor, field: str) -> int:
    """A GeneralizedTime in GBCS's ``YYYYMMDDHHMMSSZ`` form, as POSIX UTC seconds."""
    at = cur.offset
    body = read_tlv(cur, GENERALIZED_TIME, field)
    text = body.take(body.remaining, field)
    try:
        stamp = dt.datetime.strptime(text.decode("ascii"), "%Y%m%d%H%M%SZ")
    except (UnicodeDecodeError, ValueError):
        raise GbcsReadError(field, at, f"GeneralizedTime {text!r} is not YYYYMMDDHHMMSSZ") from None
    if len(text) != 15:  # strptime takes one-digit fields too
        raise GbcsReadError(field, at, f"GeneralizedTime {text!r} is not YYYYMMDDHHMMSSZ")
    return calendar.timegm(stamp.timetuple())
