"""General Signing and General Ciphering APDUs: the GBCS envelopes around a command.

General Signing (tag ``DF``)::

    DF
    09 <CRA flag> <originator counter, u64 BE>        transaction id
    08 <originator EUI-64>
    08 <recipient EUI-64>
    00 | 0C <12-byte COSEM date-time>
    <other-information length: 02 or 12> <message code u16> [<remote party id> <counter u64>]
    <content length, DER> <content>
    40 <signature r||s, 64 bytes> | 00 (unsigned)

The signature covers every byte after ``DF`` up to the end of the content
(``GeneralSigning.signed_data``).

General Ciphering (tag ``DD``), in the only form the reference data uses::

    DD 00 00 00 00 00 00 <DER length> 11 00 00 00 00 <General Signing APDU> <MAC, 12 bytes>

The six ``00`` are the empty transaction-id, originator and recipient system titles,
date-time, other-information and key-info fields; ``11 00000000`` is the security
header (security control byte, invocation counter). The length covers the security
header, the APDU and the MAC. We carry the MAC but cannot check it (it belongs to the
Access Control Broker); every other byte of the wrapper is fixed, so a changed byte
anywhere but the MAC is refused.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

from . import der
from .codes import CraFlag, MessageCode, known_message_code
from .cursor import Cursor, refusing_short_reads
from .errors import GbcsUsageError, MalformedCommand, TrailingBytes, UnknownCode
from .ids import EntityId

TAG_GENERAL_SIGNING = 0xDF
TAG_GENERAL_CIPHERING = 0xDD
SIGNATURE_SIZE = 64
MAC_SIZE = 12
CIPHERING_EMPTY_FIELDS = (
    "transaction id",
    "originator system title",
    "recipient system title",
    "date-time",
    "other information",
    "key info",
)
SECURITY_HEADER = bytes([0x11, 0, 0, 0, 0])
_U64_MAX = (1 << 64) - 1


# Each one-byte field of a COSEM date-time (DLMS Blue Book): (index, name, allowed
# values). 0xFF is "not specified" in every one; 0xFD / 0xFE are the DST month and the
# second-last / last day of the month. The year (0xFFFF unspecified) and the clock
# status (a bit string) take any value; the deviation is checked apart.
_DATE_TIME_FIELDS = (
    (2, "month", "1-12, 0xFD-0xFF", frozenset(range(1, 13)) | {0xFD, 0xFE, 0xFF}),
    (3, "day of month", "1-31, 0xFD-0xFF", frozenset(range(1, 32)) | {0xFD, 0xFE, 0xFF}),
    (4, "day of week", "1-7, 0xFF", frozenset(range(1, 8)) | {0xFF}),
    (5, "hour", "0-23, 0xFF", frozenset(range(24)) | {0xFF}),
    (6, "minute", "0-59, 0xFF", frozenset(range(60)) | {0xFF}),
    (7, "second", "0-59, 0xFF", frozenset(range(60)) | {0xFF}),
    (8, "hundredths", "0-99, 0xFF", frozenset(range(100)) | {0xFF}),
)


def date_time_problem(raw: bytes) -> tuple[int, str] | None:
    """Why 12 bytes are not a COSEM date-time: (index of the byte, detail), or None.

    Twelve zero bytes get their own sentence: they look like "nothing here" but are
    not how COSEM says it (each field unspecified is 0xFF, the deviation 0x8000), and a
    message without a date-time carries length 00 instead.
    """
    if raw == bytes(12):
        return 0, (
            "twelve zero bytes are not a COSEM date-time (month and day 0 do not exist; a field"
            " not specified is 0xFF and the deviation 0x8000, and a message without a date-time"
            " has length 00)"
        )
    for index, name, allowed, values in _DATE_TIME_FIELDS:
        if raw[index] not in values:
            return index, f"{name} 0x{raw[index]:02X} is out of range ({allowed})"
    deviation = int.from_bytes(raw[9:11], "big", signed=True)  # 0x8000, not specified, is -0x8000
    if not -720 <= deviation <= 720 and deviation != -0x8000:
        return 9, f"deviation 0x{raw[9:11].hex().upper()} is out of range (-720 to 720 minutes, 0x8000 not specified)"
    return None


@dataclass(frozen=True)
class CosemDateTime:
    """The 12-byte COSEM date-time of a General Signing header, carried as sent.

    Responses from devices carry one (``07DF0101FF000000008000FF``: 2015-01-01, no
    weekday, 00:00:00.00, deviation unspecified, status FF); commands carry none. The
    parser refuses bytes that are not a date-time (``date_time_problem``); this class
    takes any 12, so tests can build such messages.
    """

    raw: bytes

    def __post_init__(self) -> None:
        if len(self.raw) != 12:
            raise GbcsUsageError(f"a COSEM date-time is 12 bytes, got {len(self.raw)}")

    def as_datetime(self) -> dt.datetime | None:
        """The UTC instant, or None when it cannot be read as one.

        GBCS sends UTC with the deviation "not specified" (0x8000); that and a zero
        deviation are read as UTC. Any other deviation, or a field "not specified"
        (0xFF) or out of range, gives None: the raw bytes are still carried, and we
        do not guess at the sign convention of local-time deviations.
        """
        r = self.raw
        year = int.from_bytes(r[0:2], "big")
        month, day, hour, minute, second, hundredths = r[2], r[3], r[5], r[6], r[7], r[8]
        deviation = int.from_bytes(r[9:11], "big")
        if deviation not in (0x0000, 0x8000):
            return None
        if 0xFF in (month, day, hour, minute, second) or year == 0xFFFF:
            return None
        try:
            return dt.datetime(
                year, month, day, hour, minute, second,
                0 if hundredths == 0xFF else hundredths * 10_000,
                tzinfo=dt.timezone.utc,
            )
        except ValueError:
            return None


@dataclass(frozen=True)
class SupplementaryRemoteParty:
    """The optional tail of other-information: a second party and its counter."""

    entity: EntityId
    counter: int


@dataclass(frozen=True)
class GeneralSigning:
    """A decoded General Signing APDU. ``content`` is the raw DER content."""

    cra_flag: CraFlag
    counter: int
    originator: EntityId
    recipient: EntityId
    date_time: CosemDateTime | None
    message_code: MessageCode | int  # a plain int for a code this layer does not name
    supplementary: SupplementaryRemoteParty | None
    content: bytes
    signature: bytes | None
    # The exact bytes the signature covers, as received (or as built).
    signed_data: bytes = field(repr=False)
    # Input offset of the first content byte, so content decoders can report offsets.
    content_offset: int = field(default=0, repr=False, compare=False)

    @property
    def signed(self) -> bool:
        return self.signature is not None


@dataclass(frozen=True)
class GeneralCiphering:
    """The General Ciphering wrapper: its General Signing APDU and the carried MAC."""

    apdu: GeneralSigning
    mac: bytes


def encode_signed_data(
    *,
    cra_flag: CraFlag,
    counter: int,
    originator: EntityId,
    recipient: EntityId,
    message_code: MessageCode | int,
    content: bytes,
    date_time: CosemDateTime | None = None,
    supplementary: SupplementaryRemoteParty | None = None,
) -> bytes:
    """The bytes a General Signing signature covers (everything after ``DF``)."""
    if not 0 <= counter <= _U64_MAX:
        raise GbcsUsageError(f"counter {counter} is not an unsigned 64-bit value")
    if not 0 <= message_code <= 0xFFFF:
        raise GbcsUsageError(f"message code {message_code} is not a 16-bit value")
    out = bytearray()
    out += bytes([0x09, int(cra_flag)]) + counter.to_bytes(8, "big")
    out += b"\x08" + originator.raw + b"\x08" + recipient.raw
    out += b"\x00" if date_time is None else b"\x0c" + date_time.raw
    if supplementary is None:
        out += b"\x02" + int(message_code).to_bytes(2, "big")
    else:
        if not 0 <= supplementary.counter <= _U64_MAX:
            raise GbcsUsageError("supplementary counter is not an unsigned 64-bit value")
        out += b"\x12" + int(message_code).to_bytes(2, "big")
        out += supplementary.entity.raw + supplementary.counter.to_bytes(8, "big")
    if len(content) > 0xFFFF:
        raise GbcsUsageError(f"content of {len(content)} bytes is over the 65535 supported")
    out += der.encode_length(len(content)) + content
    return bytes(out)


def encode_general_signing(signed_data: bytes, signature: bytes | None) -> bytes:
    """``DF`` + the signed bytes + the signature field."""
    if signature is None:
        return bytes([TAG_GENERAL_SIGNING]) + signed_data + b"\x00"
    if len(signature) != SIGNATURE_SIZE:
        raise GbcsUsageError(f"signature is {SIGNATURE_SIZE} bytes (r||s), got {len(signature)}")
    return bytes([TAG_GENERAL_SIGNING]) + signed_data + bytes([SIGNATURE_SIZE]) + signature


def encode_general_ciphering(apdu: bytes, mac: bytes = bytes(MAC_SIZE)) -> bytes:
    """Wrap an encoded General Signing APDU; the MAC defaults to 12 zero bytes."""
    if len(mac) != MAC_SIZE:
        raise GbcsUsageError(f"MAC is {MAC_SIZE} bytes, got {len(mac)}")
    inner = SECURITY_HEADER + apdu + mac
    if len(inner) > 0xFFFF:
        raise GbcsUsageError("ciphered content over 65535 bytes is not supported")
    head = bytes([TAG_GENERAL_CIPHERING]) + bytes(len(CIPHERING_EMPTY_FIELDS))
    return head + der.encode_length(len(inner)) + inner


def _expect(cur: Cursor, value: int, field_name: str, detail: str) -> None:
    at = cur.offset
    got = cur.u8(field_name)
    if got != value:
        raise MalformedCommand(at, field_name, f"expected 0x{value:02X} ({detail}), got 0x{got:02X}")


def _read_general_signing(cur: Cursor) -> GeneralSigning:
    _expect(cur, TAG_GENERAL_SIGNING, "general signing tag", "General Signing")
    start = cur.offset

    _expect(cur, 0x09, "transaction id length", "9 bytes")
    at = cur.offset
    flag = cur.u8("CRA flag")
    try:
        cra_flag = CraFlag(flag)
    except ValueError:
        raise UnknownCode(at, "CRA flag", f"unknown CRA flag 0x{flag:02X} (01 command, 02 response, 03 alert)") from None
    counter = cur.uint(8, "originator counter")

    _expect(cur, 0x08, "originator length", "8 bytes")
    originator = EntityId(cur.take(8, "originator"))
    _expect(cur, 0x08, "recipient length", "8 bytes")
    recipient = EntityId(cur.take(8, "recipient"))

    at = cur.offset
    dt_len = cur.u8("date-time")
    if dt_len == 0x00:
        date_time = None
    elif dt_len == 0x0C:
        raw = cur.take(12, "date-time")
        problem = date_time_problem(raw)
        if problem is not None:
            raise MalformedCommand(at + 1 + problem[0], "date-time", problem[1])
        date_time = CosemDateTime(raw)
    else:
        raise MalformedCommand(at, "date-time", f"expected length 0x00 or 0x0C, got 0x{dt_len:02X}")

    at = cur.offset
    other_len = cur.u8("other information length")
    if other_len not in (0x02, 0x12):
        raise MalformedCommand(
            at, "other information length",
            f"expected 0x02 (message code) or 0x12 (with remote party and counter), got 0x{other_len:02X}",
        )
    message_code = known_message_code(cur.uint(2, "message code"))
    supplementary = None
    if other_len == 0x12:
        party = EntityId(cur.take(8, "supplementary remote party"))
        supplementary = SupplementaryRemoteParty(party, cur.uint(8, "supplementary counter"))

    length = der.read_length(cur, "content length")
    content_offset = cur.offset
    content = cur.take(length, "content")
    end = cur.offset

    at = cur.offset
    sig_len = cur.u8("signature length")
    if sig_len == SIGNATURE_SIZE:
        signature: bytes | None = cur.take(SIGNATURE_SIZE, "signature")
    elif sig_len == 0x00:
        signature = None
    else:
        raise MalformedCommand(at, "signature length", f"expected 0x40 (signed) or 0x00 (unsigned), got 0x{sig_len:02X}")

    return GeneralSigning(
        cra_flag=cra_flag,
        counter=counter,
        originator=originator,
        recipient=recipient,
        date_time=date_time,
        message_code=message_code,
        supplementary=supplementary,
        content=content,
        signature=signature,
        signed_data=cur.span(start, end),
        content_offset=content_offset,
    )


def decode_general_signing(data: bytes, base: int = 0) -> tuple[GeneralSigning, bytes]:
    """Decode a General Signing APDU from the front of ``data``; return it and the rest."""
    cur = Cursor(data, base)
    with refusing_short_reads():
        value = _read_general_signing(cur)
    return value, cur.rest()


def _read_general_ciphering(cur: Cursor) -> GeneralCiphering:
    _expect(cur, TAG_GENERAL_CIPHERING, "general ciphering tag", "General Ciphering")
    for name in CIPHERING_EMPTY_FIELDS:
        _expect(cur, 0x00, f"ciphering {name}", "empty; only this form is supported")
    length = der.read_length(cur, "ciphered content length")
    inner = cur.sub(length, "ciphered content")
    at = inner.offset
    header = inner.take(len(SECURITY_HEADER), "security header")
    if header != SECURITY_HEADER:
        raise MalformedCommand(at, "security header", f"expected {SECURITY_HEADER.hex().upper()}, got {header.hex().upper()}")
    apdu = _read_general_signing(inner)
    at = inner.offset
    if inner.remaining < MAC_SIZE:
        inner.take(MAC_SIZE, "MAC")  # raises the short read
    if inner.remaining > MAC_SIZE:
        raise TrailingBytes(at, "ciphered content", f"{inner.remaining - MAC_SIZE} bytes between the APDU and the {MAC_SIZE}-byte MAC")
    return GeneralCiphering(apdu, inner.take(MAC_SIZE, "MAC"))


def decode_general_ciphering(data: bytes, base: int = 0) -> tuple[GeneralCiphering, bytes]:
    """Decode a General Ciphering wrapper and its APDU; return them and the rest."""
    cur = Cursor(data, base)
    with refusing_short_reads():
        value = _read_general_ciphering(cur)
    return value, cur.rest()
