"""How many image bytes one Image Block Response may carry to one device (sans-I/O).

The radio's stack refuses an APS payload longer than its limit for the destination
(radios/limits.py: the family's maximum, less APS encryption, less a source route's
2 + 2 per relay). An Image Block Response is 17 bytes of ZCL (header 3, status 1,
manufacturer code 2, image type 2, file version 4, file offset 4, data size 1) and its
data, so the data may be at most the limit less 17: on EZSP 65 bytes direct, 61 behind
one relay, 59 behind two (56, 52, 50 APS-encrypted). The ZCL lets a server send fewer
bytes than the client asked for (Image Block Response: data size at most the request's
maximum), so the session serves at most this.

``block_limit`` sizes from what the gateway knows (the device's APS security, its relays
as zigpy holds them); ``after_too_long`` answers a refusal anyway (the stack holds a
source route the host has not heard of yet): a route one relay longer than we knew, and
so on, until the block is smaller than the refused one. Both return the size and the
sentence the log and the audit give for it.
"""

from __future__ import annotations

from dataclasses import dataclass

from radios.limits import PayloadLimits

__all__ = ["IMAGE_BLOCK_RESPONSE_OVERHEAD", "BlockLimit", "after_too_long", "block_limit"]

#: ZCL OTA Image Block Response (SUCCESS) bytes besides the image data.
IMAGE_BLOCK_RESPONSE_OVERHEAD = 3 + 1 + 2 + 2 + 4 + 4 + 1
#: Never size a block below this: a stack that refuses one byte is refusing something else.
MIN_BLOCK = 1


@dataclass(frozen=True)
class BlockLimit:
    """At most ``size`` data bytes per Image Block Response; ``why`` says where from."""

    size: int
    why: str


def _relays(count: int) -> str:
    return "direct" if count == 0 else f"{count} relay{'s' if count != 1 else ''}"


def _sized(radio: PayloadLimits, aps_encrypted: bool, relays: int, note: str = "") -> BlockLimit:
    size = max(MIN_BLOCK, radio.max_payload(aps_encrypted=aps_encrypted, relays=relays) - IMAGE_BLOCK_RESPONSE_OVERHEAD)
    security = "APS-encrypted" if aps_encrypted else "NWK security only"
    return BlockLimit(size, f"{size} bytes: {security}, {_relays(relays)}{note}, {radio.family} limit {radio.max_aps_payload}")


def block_limit(radio: PayloadLimits, *, aps_encrypted: bool, relays: int) -> BlockLimit:
    """The largest block the radio sends to a device with that security and route."""
    if relays < 0:
        raise ValueError(f"relays must be 0 or more, not {relays}")
    return _sized(radio, aps_encrypted, relays)


def after_too_long(radio: PayloadLimits, *, aps_encrypted: bool, relays: int, refused: int) -> BlockLimit:
    """The block size after the radio refused ``refused`` data bytes as too long.

    When what we know already gives a smaller block, that is it (the route was learnt
    after the block was made). Otherwise the stack's route is longer than zigpy's
    relays say: assume one relay more at a time until the block is smaller than the
    refused one."""
    if refused < 1:
        raise ValueError(f"refused must be a positive number of bytes, not {refused}")
    assumed = max(0, relays)
    limit = _sized(radio, aps_encrypted, assumed)
    while limit.size >= refused and limit.size > MIN_BLOCK:
        assumed += 1
        limit = _sized(radio, aps_encrypted, assumed, f" assumed ({_relays(relays)} known)")
    note = f" (the radio refused {refused} bytes as too long)"
    return BlockLimit(min(limit.size, max(MIN_BLOCK, refused - 1)), limit.why + note)
