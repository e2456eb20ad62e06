"""A GBCS message as handed to us: raw bytes, hex text or base64 text, bare or General Ciphered.

``parse_command`` is the one entry point; it parses once into a ``SignedCommand``
that carries the General Signing APDU, the carried MAC when ciphered, and the decoded
CS06 body when the message is a CS06 command. Any other content stays raw bytes.
Everything wrong with the input is a ``MalformedCommand`` (a ``GbcsError``) naming
the byte offset and field.
"""

from __future__ import annotations

import base64
import binascii
import string
from dataclasses import dataclass, field

from .apdu import (
    TAG_GENERAL_CIPHERING,
    TAG_GENERAL_SIGNING,
    GeneralSigning,
    decode_general_ciphering,
    decode_general_signing,
)
from .codes import CraFlag, MessageCode
from .cs06 import ActivateFirmware, decode_activate_firmware
from .errors import MalformedCommand, TrailingBytes, TruncatedCommand
from .ids import EntityId

_HEX_DIGITS = frozenset(string.hexdigits)
_WHITESPACE = frozenset(string.whitespace)
_RAW_TAGS = (bytes([TAG_GENERAL_CIPHERING]), bytes([TAG_GENERAL_SIGNING]))
_FORMS = "expected raw GBCS (first byte 0xDD or 0xDF), hex text or base64 text"


@dataclass(frozen=True)
class SignedCommand:
    """A parsed GBCS message (command, response or alert, despite the name)."""

    apdu: GeneralSigning
    mac: bytes | None  # the General Ciphering MAC as carried; None when sent bare
    activation: ActivateFirmware | None  # the CS06 body, for CS06 commands only
    raw: bytes = field(repr=False)  # the whole message as parsed (after hex decoding)

    @property
    def ciphered(self) -> bool:
        return self.mac is not None

    @property
    def counter(self) -> int:
        return self.apdu.counter

    @property
    def originator(self) -> EntityId:
        return self.apdu.originator

    @property
    def recipient(self) -> EntityId:
        return self.apdu.recipient

    @property
    def message_code(self) -> MessageCode | int:
        return self.apdu.message_code

    @property
    def cra_flag(self) -> CraFlag:
        return self.apdu.cra_flag


def decode_hex_text(text: str | bytes) -> bytes:
    """Hex digits in either case, whitespace anywhere ignored. Offsets are text offsets."""
    if isinstance(text, bytes):
        try:
            text = text.decode("ascii")
        except UnicodeDecodeError as exc:
            raise MalformedCommand(exc.start, "hex text", "not ASCII") from None
    digits = []
    for i, ch in enumerate(text):
        if ch in _HEX_DIGITS:
            digits.append(ch)
        elif ch not in _WHITESPACE:
            raise MalformedCommand(i, "hex text", f"not a hex digit: {ch!r}")
    if len(digits) % 2:
        raise MalformedCommand(len(text), "hex text", "odd number of hex digits")
    return bytes.fromhex("".join(digits))


def encode_hex_text(data: bytes) -> str:
    """Upper-case hex without separators or newline: the reference vectors' format."""
    return data.hex().upper()


def decode_command(data: bytes) -> tuple[SignedCommand, bytes]:
    """Decode one message from the front of raw ``data``; return it and the rest."""
    if not data:
        raise TruncatedCommand(0, "APDU tag", "truncated: needs 1 byte, 0 left")
    mac: bytes | None
    if data[0] == TAG_GENERAL_CIPHERING:
        wrapper, rest = decode_general_ciphering(data)
        apdu, mac = wrapper.apdu, wrapper.mac
    elif data[0] == TAG_GENERAL_SIGNING:
        apdu, rest = decode_general_signing(data)
        mac = None
    else:
        raise MalformedCommand(
            0, "APDU tag", f"expected 0xDD (General Ciphering) or 0xDF (General Signing), got 0x{data[0]:02X}"
        )
    activation = None
    if apdu.cra_flag is CraFlag.COMMAND and apdu.message_code is MessageCode.ACTIVATE_FIRMWARE:
        activation, extra = decode_activate_firmware(apdu.content, apdu.content_offset)
        if extra:
            at = apdu.content_offset + len(apdu.content) - len(extra)
            raise TrailingBytes(at, "content", f"{len(extra)} bytes after the CS06 SEQUENCE")
    used = len(data) - len(rest)
    return SignedCommand(apdu, mac, activation, bytes(data[:used])), rest


def parse_command(data: bytes | str) -> SignedCommand:
    """Parse a whole message: ``str`` is hex text, ``bytes`` are raw. Nothing may trail."""
    raw = decode_hex_text(data) if isinstance(data, str) else bytes(data)
    command, rest = decode_command(raw)
    if rest:
        n = len(rest)
        raise TrailingBytes(len(raw) - n, "end of message", f"{n} trailing byte{'' if n == 1 else 's'}")
    return command


def decode_message_file(data: bytes) -> bytes:
    """A message's raw bytes from a file's (or a DUIS payload's): raw, hex or base64.

    The three forms cannot be confused, checked in this order:

    - raw GBCS starts with 0xDD or 0xDF, which are not ASCII, so no text does;
    - hex text: hex digits and whitespace only, an even number of digits (the
      reference vectors' form);
    - base64 text, strict alphabet and padding, whitespace between lines ignored (what
      DCC's tools and the DUIS ``GBCSPayload`` element carry), decoding to 0xDD or 0xDF.

    Text of hex digits only is read as hex even when it would also be valid base64:
    base64 of a GBCS message starts "3" and almost always holds a letter past F.
    """
    if data[:1] in _RAW_TAGS:
        return bytes(data)
    try:
        text = data.decode("ascii")
    except UnicodeDecodeError as exc:
        raise MalformedCommand(exc.start, "message text", f"not ASCII, so not hex or base64 text; {_FORMS}") from None
    compact = "".join(text.split())
    if not compact:
        raise MalformedCommand(0, "message text", f"empty; {_FORMS}")
    try:
        return decode_hex_text(text)
    except MalformedCommand as hex_error:
        try:
            raw = base64.b64decode(compact, validate=True)
            why = None if raw[:1] in _RAW_TAGS else f"decodes to 0x{raw[:1].hex().upper() or '(nothing)'}..., not 0xDD or 0xDF"
        except binascii.Error as b64_error:
            why = str(b64_error)
        if why is None:
            return raw
        # Short hex typos ("DF0G") are valid base64 too: only a decoded GBCS tag makes it base64.
        raise MalformedCommand(
            hex_error.offset, "message text", f"neither hex text ({hex_error.detail}) nor base64 text ({why}); {_FORMS}"
        ) from None


def parse_command_file(data: bytes) -> SignedCommand:
    """Parse a file's bytes: raw GBCS, hex text or base64 text (``decode_message_file``)."""
    return parse_command(decode_message_file(data))
