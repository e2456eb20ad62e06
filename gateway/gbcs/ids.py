"""GBCS entity identifiers: the EUI-64s of suppliers and devices.

GBCS carries entity ids big-endian, in the order people write them
(``00DB1234567890A0``). Zigbee frames carry IEEE addresses little-endian, but zigpy
prints an ``EUI64`` in written order (``00:db:12:34:56:78:90:a0``). The written
forms and the swap between the two orders belong to ``eui64``: an entity id is an
``Eui64``'s written bytes (``EntityId(Eui64.from_air(ieee).written)``).
"""

from __future__ import annotations

from dataclasses import dataclass

from eui64 import Eui64, Eui64Error

from .errors import GbcsUsageError


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
        try:
            return cls(Eui64.parse(text, "entity id").written)
        except Eui64Error as exc:
            raise GbcsUsageError(str(exc)) from None

    def __str__(self) -> str:
        return Eui64(self.raw).hex()

    def colon(self) -> str:
        """Written order with colons, lower case: zigpy's ``str(EUI64)`` form."""
        return str(Eui64(self.raw))
