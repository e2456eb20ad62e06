"""IEEE addresses (EUI-64): the text people write and the two byte orders.

An EUI-64 is written most significant byte first (``00:0d:6f:00:0a:bc:de:f0``, the
OUI leading), and GBCS carries it in that order too. Zigbee frames carry it the other
way round, least significant byte first; zigpy's ``EUI64`` holds those over-the-air
bytes and prints them reversed, in written order. This module is the one place that
reads the written forms and turns one order into the other: ``Eui64`` holds the
written bytes, ``Eui64.from_air`` and ``.air`` cross over.

It is pure (no zigpy, no I/O) and lives outside ``gateway/`` and ``radios/`` so both
can use it: ``radios/`` may not import ``gateway/``, and ``gateway/``'s sans-I/O cores
may not import zigpy. Callers holding a zigpy ``EUI64`` write ``Eui64.from_air(ieee)``
(it iterates over its air-order bytes) and ``zigpy.types.EUI64(addr.air)`` back.

Accepted text, surrounding whitespace ignored, either case:

- 16 hex digits: ``000d6f000abcdef0``
- 8 colon-separated pairs of hex digits: ``00:0d:6f:00:0a:bc:de:f0``

Everything else is refused with an ``Eui64Error`` naming the field, the text, and
what is wrong where (offsets count characters of the text as given).
"""

from __future__ import annotations

import string
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final

__all__ = ["FORMS", "Eui64", "Eui64Error"]

#: What a user may write, for error messages and help texts.
FORMS: Final = "16 hex digits (0011223344556677) or 8 colon-separated hex pairs (00:11:22:33:44:55:66:77)"

_HEX: Final = frozenset(string.hexdigits)
_SIZE: Final = 8


class Eui64Error(ValueError):
    """An IEEE address was refused: names the field, the value, and why."""

    def __init__(self, field: str, value: object, reason: str, *, written: bool = True) -> None:
        self.field = field
        self.value = value
        self.reason = reason
        # Text gets the forms a user may write; bytes come from code, which needs only the reason.
        super().__init__(f"{field} {value!r}: {reason}" + (f"; expected {FORMS}" if written else ""))


@dataclass(frozen=True, slots=True, order=True)
class Eui64:
    """An IEEE address; ``written`` is its 8 bytes most significant first."""

    written: bytes

    def __post_init__(self) -> None:
        if not isinstance(self.written, bytes) or len(self.written) != _SIZE:
            raise Eui64Error("IEEE address", self.written, f"an EUI-64 is {_SIZE} bytes", written=False)

    @classmethod
    def parse(cls, text: object, field: str = "IEEE address") -> Eui64:
        """Read one of the written forms (see the module docstring)."""
        if not isinstance(text, str):
            raise Eui64Error(field, text, f"expected text, got {type(text).__name__}")
        lead = len(text) - len(text.lstrip())
        body = text.strip()
        if not body:
            raise Eui64Error(field, text, "no digits")
        if ":" in body:
            digits = _pairs(field, text, body, lead)
        else:
            _check_hex(field, text, body, lead)
            if len(body) != 2 * _SIZE:
                raise Eui64Error(field, text, f"{len(body)} hex digits, expected {2 * _SIZE}")
            digits = body
        return cls(bytes.fromhex(digits))

    @classmethod
    def from_air(cls, raw: Iterable[int]) -> Eui64:
        """From over-the-air (little-endian) order: ``bytes(zigpy_eui64)``, or the EUI64 itself."""
        if isinstance(raw, (int, str)):
            # bytes(8) would be eight zero bytes; text has no byte order to take.
            raise Eui64Error("IEEE address", raw, "expected bytes or ints in over-the-air order", written=False)
        air = bytes(raw)
        if len(air) != _SIZE:
            raise Eui64Error("IEEE address", air, f"an EUI-64 is {_SIZE} bytes, over the air least significant first", written=False)
        return cls(air[::-1])

    @classmethod
    def of(cls, value: Eui64 | str | Iterable[int], field: str = "IEEE address") -> Eui64:
        """Text in a written form, an ``Eui64``, or bytes/ints in over-the-air order (a zigpy ``EUI64``)."""
        if isinstance(value, Eui64):
            return value
        if isinstance(value, str):
            return cls.parse(value, field)
        return cls.from_air(value)

    @property
    def air(self) -> bytes:
        """Over-the-air order, least significant byte first: what ``zigpy.types.EUI64`` takes."""
        return self.written[::-1]

    @property
    def reserved(self) -> bool:
        """All zeros or all ones: "none" and the broadcast/unknown address, never a device's."""
        return self.written in (bytes(_SIZE), b"\xff" * _SIZE)

    def hex(self) -> str:
        """16 upper-case hex digits, as GBCS tools print entity ids: ``000D6F000ABCDEF0``."""
        return self.written.hex().upper()

    def __str__(self) -> str:
        """Colon pairs in lower case, as zigpy prints an ``EUI64``: ``00:0d:6f:00:0a:bc:de:f0``."""
        return self.written.hex(":")


def _pairs(field: str, text: str, body: str, lead: int) -> str:
    groups = body.split(":")
    if len(groups) != _SIZE:
        raise Eui64Error(field, text, f"{len(groups)} colon-separated groups, expected {_SIZE}")
    at = lead
    for number, group in enumerate(groups, start=1):
        if len(group) != 2:
            raise Eui64Error(field, text, f"group {number} at offset {at} is {group!r}, expected 2 hex digits")
        _check_hex(field, text, group, at)
        at += 3
    return "".join(groups)


def _check_hex(field: str, text: str, digits: str, at: int) -> None:
    for i, ch in enumerate(digits):
        if ch not in _HEX:
            raise Eui64Error(field, text, f"{ch!r} at offset {at + i} is not a hex digit")
