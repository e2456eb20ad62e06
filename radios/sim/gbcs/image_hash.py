"""The Manufacturer Image Hash a device computes over an image it downloaded.

GBCS's CS06 carries SHA-256 over the *Manufacturer Image*; which bytes those are
depends on what follows the Zigbee OTA header (its length is the u16 at offset 6):

1. Zigbee sub-elements (tag u16, length u32, little-endian) that exactly fill the
   file with exactly one upgrade image (tag 0x0000): that element's data;
2. the GBCS form of SR 11.1: Manufacturer Image, one byte for the Communications
   Hub, 0x40 and a 64-byte signature (0x40 at 65 bytes from the end);
3. otherwise (the unsigned PPMID form of SR 11.4) everything after the header.

The first that holds wins, the order a hub uses to tell the forms apart, so the
device and its hub hash the same bytes.
"""

from __future__ import annotations

import hashlib
from typing import Final

from .cursor import GbcsReadError

__all__ = ["manufacturer_image", "manufacturer_image_hash", "receipt_hash"]

_HEADER_LENGTH_AT: Final = 6
_MIN_HEADER: Final = 56
_TAIL: Final = 1 + 1 + 64  # CH byte, 0x40, r||s
_UPGRADE_IMAGE_TAG: Final = 0x0000


def _sub_element_image(body: bytes) -> bytes | None:
    pos, images = 0, []
    while pos < len(body):
        if len(body) - pos < 6:
            return None
        tag = int.from_bytes(body[pos : pos + 2], "little")
        size = int.from_bytes(body[pos + 2 : pos + 6], "little")
        if pos + 6 + size > len(body):
            return None
        if tag == _UPGRADE_IMAGE_TAG:
            images.append(body[pos + 6 : pos + 6 + size])
        pos += 6 + size
    return images[0] if len(images) == 1 and images[0] else None


def manufacturer_image(image: bytes) -> bytes:
    """The Manufacturer Image inside a whole OTA file; GbcsReadError if there is none."""
    if len(image) < _MIN_HEADER:
        raise GbcsReadError("OTA header", 0, f"{len(image)} bytes, shorter than an OTA header ({_MIN_HEADER})")
    header_length = int.from_bytes(image[_HEADER_LENGTH_AT : _HEADER_LENGTH_AT + 2], "little")
    if not _MIN_HEADER <= header_length < len(image):
        raise GbcsReadError("OTA header length", _HEADER_LENGTH_AT, f"{header_length}, outside {_MIN_HEADER}..{len(image) - 1}")
    body = image[header_length:]
    found = _sub_element_image(body)
    if found is not None:
        return found
    if len(body) > _TAIL and body[-65] == 0x40:
        return body[:-_TAIL]
    return body


def manufacturer_image_hash(image: bytes) -> bytes:
    """SHA-256 over `manufacturer_image`: what a CS06 must name to activate ``image``."""
    return hashlib.sha256(manufacturer_image(image)).digest()


def receipt_hash(image: bytes) -> bytes:
    """The hash a Firmware Distribution Receipt Alert reports for what was downloaded.

    The Manufacturer Image Hash; for a file whose OTA header cannot be read (so no
    Manufacturer Image can be found: a failed download's 0x8F1C), SHA-256 of the file.
    """
    try:
        return manufacturer_image_hash(image)
    except GbcsReadError:
        return hashlib.sha256(image).digest()
