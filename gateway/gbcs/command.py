"""A GBCS message as handed to us: hex text or raw bytes, bare or General Ciphered.

``parse_command`` is the one entry point; it parses once into a ``SignedCommand``
that carries the General Signing APDU, the carried MAC when ciphered, and the decoded
CS06 body when the message is a CS06 command. Any other content stays raw bytes.
Everything wrong with the input is a ``MalformedCommand`` (a ``GbcsError``) naming
the byte offset and field.
"""

from __future__ import annotations

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
    def message_code(self) -> MessageCode:
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


def parse_command_file(data: bytes) -> SignedCommand:
    """Parse a file's bytes, telling raw GBCS (first byte DD or DF) from hex text.

    Raw messages always start with 0xDD or 0xDF, which are not ASCII, so anything
    else is read as hex text.
    """
    if data[:1] in (bytes([TAG_GENERAL_CIPHERING]), bytes([TAG_GENERAL_SIGNING])):
        return parse_command(data)
    return parse_command(decode_hex_text(data))
