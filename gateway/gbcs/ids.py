"""GBCS entity identifiers: the EUI-64s of suppliers and devices.

GBCS carries entity ids big-endian, in the order people write them
(``00DB1234567890A0``). Zigbee frames carry IEEE addresses little-endian, but zigpy
prints an ``EUI64`` in written order (``00:db:12:34:56:78:90:a0``), so
``EntityId.parse(str(ieee))`` gives the right id without byte swapping.
"""

from __future__ import annotations

import string
from dataclasses import dataclass

from .errors import GbcsUsageError

_HEX = frozenset(string.hexdigits)


@dataclass(frozen=True, order=True)
class EntityId:
    """An 8-byte entity identifier, big-endian as GBCS sends it."""

    raw: bytes

    def __post_init__(self) -> None:
        if not isinstance(self.raw, bytes) or len(self.raw) != 8:
            raise GbcsUsageError(f"an entity id is 8 bytes, not {self.raw!r}")

    @classmethod
    def parse(cls, text: str) -> EntityId:
        """16 hex digits, or 8 colon-separated pairs (``00:db:12:34:56:78:90:a0``)."""
        stripped = text.strip()
        parts = stripped.split(":")
        if len(parts) == 8 and all(len(p) == 2 for p in parts):
            digits = "".join(parts)
        elif len(parts) == 1 and len(stripped) == 16:
            digits = stripped
        else:
            raise GbcsUsageError(
                f"entity id {text!r}: expected 16 hex digits or 8 colon-separated pairs"
            )
        if not set(digits) <= _HEX:
            raise GbcsUsageError(f"entity id {text!r}: not hexadecimal")
        return cls(bytes.fromhex(digits))

    def __str__(self) -> str:
        return self.raw.hex().upper()

    def colon(self) -> str:
        """Written order with colons, lower case: zigpy's ``str(EUI64)`` form."""
        return ":".join(f"{b:02x}" for b in self.raw)
