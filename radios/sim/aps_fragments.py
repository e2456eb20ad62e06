"""APS fragmentation as the Zigbee specification does it (2.2.5.1.8, 2.2.8.4.5), sans-I/O.

A unicast ASDU too large for one frame goes as numbered blocks, each an APS data frame
with the extended header (frame control bit 7 set) in front of its part::

    extended frame control u8   bits 0-1: 0b01 first fragment, 0b10 a later one
    block number u8             the first fragment: the total number of blocks;
                                a later one: its block number (1, 2, ...)

Blocks go a window at a time (apsMaxWindowSize, 1..8). The receiver answers each
window with one APS ack carrying the same extended frame control, the window's first
block number and an ack bitfield (bit i: block first+i received). The sender resends
the blocks the ack lacks (all of them when the ack is lost) up to apscMaxFrameRetries
times, then gives up; the receiver hands the ASDU up once every block is in.

``split`` cuts an ASDU into ``Fragment`` frames; ``Reassembly`` is the receiver's side
(fragments in, acks and the whole ASDU out). The air (han.py) runs the exchange and its
timing; these hold only the bytes and the bookkeeping.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final

__all__ = ["FIRST", "LATER", "MAX_BLOCKS", "Fragment", "FragmentAck", "FragmentError", "Reassembly", "split"]

FIRST: Final = 0b01
LATER: Final = 0b10
MAX_BLOCKS: Final = 255  # the first fragment's block-number field counts them
EXTENDED_HEADER: Final = 2
ACK_EXTENDED_HEADER: Final = 3


class FragmentError(ValueError):
    """A fragment or an ack that cannot be read: names the field and its offset."""


@dataclass(frozen=True)
class Fragment:
    block: int  # 0 for the first
    total: int  # known to the sender; carried only by the first fragment
    part: bytes

    def to_bytes(self) -> bytes:
        if self.block == 0:
            return bytes([FIRST, self.total]) + self.part
        return bytes([LATER, self.block]) + self.part


@dataclass(frozen=True)
class FragmentAck:
    first_block: int
    bitfield: int

    def to_bytes(self) -> bytes:
        return bytes([FIRST if self.first_block == 0 else LATER, self.first_block, self.bitfield])

    @classmethod
    def parse(cls, data: bytes) -> FragmentAck:
        if len(data) != ACK_EXTENDED_HEADER:
            raise FragmentError(f"APS fragment ack: {len(data)} bytes at offset 0, expected 3 (extended frame control, block number, ack bitfield)")
        if data[0] & 0b11 not in (FIRST, LATER):
            raise FragmentError(f"APS fragment ack: extended frame control 0x{data[0]:02X} at offset 0 names no fragment")
        return cls(data[1], data[2])

    def blocks(self) -> set[int]:
        return {self.first_block + i for i in range(8) if self.bitfield >> i & 1}


def split(asdu: bytes, part_size: int) -> list[Fragment]:
    """The fragments of ``asdu``, ``part_size`` bytes of it each (the last shorter)."""
    if part_size < 1:
        raise ValueError(f"APS fragmentation: part size {part_size} leaves no room for data")
    parts = [asdu[i : i + part_size] for i in range(0, len(asdu), part_size)] or [b""]
    if len(parts) > MAX_BLOCKS:
        raise ValueError(f"APS fragmentation: {len(asdu)} bytes need {len(parts)} blocks, more than {MAX_BLOCKS}")
    return [Fragment(i, len(parts), part) for i, part in enumerate(parts)]


@dataclass
class Reassembly:
    """The receiving APS layer's state for one fragmented ASDU."""

    total: int | None = None
    parts: dict[int, bytes] = field(default_factory=dict)

    def receive(self, frame: bytes) -> None:
        """One fragment frame (extended header first), as it came off the air."""
        if len(frame) < EXTENDED_HEADER:
            raise FragmentError(f"APS fragment: {len(frame)} bytes, the extended header at offset 0 needs 2")
        kind, number = frame[0] & 0b11, frame[1]
        if kind == FIRST:
            if number == 0:
                raise FragmentError("APS fragment: block number (the block count) 0 at offset 1")
            self.total = number
            self.parts[0] = frame[2:]
        elif kind == LATER:
            if number == 0:
                raise FragmentError("APS fragment: block number 0 at offset 1 in a later fragment")
            self.parts[number] = frame[2:]
        else:
            raise FragmentError(f"APS fragment: extended frame control 0x{frame[0]:02X} at offset 0 names no fragment")

    def ack(self, first_block: int, count: int) -> FragmentAck:
        """The ack for the window of ``count`` blocks from ``first_block``."""
        bits = sum(1 << i for i in range(count) if first_block + i in self.parts)
        return FragmentAck(first_block, bits)

    def complete(self) -> bytes | None:
        if self.total is None or any(i not in self.parts for i in range(self.total)):
            return None
        return b"".join(self.parts[i] for i in range(self.total))
