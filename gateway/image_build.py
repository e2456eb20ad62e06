# SPDX-License-Identifier: GPL-3.0-or-later
"""Build firmware images in the three forms `gateway.image` reads (for benches and tests)."""

from __future__ import annotations

from cryptography.hazmat.primitives.asymmetric import ec
import zigpy.types as t
from zigpy.ota.image import FieldControl, HeaderString, HWVersion, OTAImageHeader

from eui64 import Eui64
from gateway.gbcs.keys import p256_private_key, read_signing_key, sign_raw
from gateway.image import (
    DEFAULT_MAX_SIZE,
    GBCS_SIGNATURE_TAG,
    MAGIC,
    TAG_UPGRADE_IMAGE,
    header_length_for,
)

# A supplier's P-256 private key from a PEM file, by the name image callers know; the
# one loader (and its refusals, naming the file) is gateway.gbcs.keys.
load_signing_key = read_signing_key


def _check_uint(name: str, value: int, bits: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, not {type(value).__name__}")
    if not 0 <= value < (1 << bits):
        raise ValueError(f"{name} must fit in {bits} bits unsigned, got {value}")
    return value


def build_image(
    payload: bytes,
    *,
    manufacturer_code: int,
    image_type: int,
    file_version: int,
    stack_version: int = 2,
    header_string: str = "",
    min_hw: int | None = None,
    max_hw: int | None = None,
    gbcs_key: ec.EllipticCurvePrivateKey | None = None,
    ch_byte: int = 0,
    zigbee_subelement: bool = False,
    security_credential_version: int | None = None,
    destination: bytes | None = None,
    header_version: int = 0x0100,
    max_size: int = DEFAULT_MAX_SIZE,
) -> bytes:
    """An OTA file around `payload`, which becomes the manufacturer image.

    - default: header ‖ payload (the unsigned/PPMID form);
    - `zigbee_subelement`: header ‖ upgrade-image sub-element (tag 0x0000) holding payload;
    - `gbcs_key`: header ‖ payload ‖ `ch_byte` ‖ 0x40 ‖ supplier signature over payload.
    The two options are exclusive: in the GBCS form the manufacturer image is opaque.
    `destination` is an EUI-64 in display order (most significant byte first).
    """
    payload = bytes(payload)
    if not payload:
        raise ValueError("payload is empty: the manufacturer image must hold at least one byte")
    for name, value, bits in (
        ("manufacturer_code", manufacturer_code, 16),
        ("image_type", image_type, 16),
        ("file_version", file_version, 32),
        ("stack_version", stack_version, 16),
        ("header_version", header_version, 16),
        ("ch_byte", ch_byte, 8),
    ):
        _check_uint(name, value, bits)
    if gbcs_key is not None and zigbee_subelement:
        raise ValueError("gbcs_key and zigbee_subelement are exclusive: the GBCS form has no sub-elements")
    if gbcs_key is not None:
        p256_private_key(gbcs_key, "gbcs_key")  # refused before any work, by its name
    encoded = header_string.encode("utf-8")
    if len(encoded) > 32:
        raise ValueError(f"header_string is {len(encoded)} bytes in UTF-8; the header holds 32")
    if (min_hw is None) != (max_hw is None):
        raise ValueError("min_hw and max_hw go together: the header has one flag for both")

    fc = FieldControl(0)
    optional: dict[str, object] = {}
    if security_credential_version is not None:
        fc |= FieldControl.SECURITY_CREDENTIAL_VERSION_PRESENT
        optional["security_credential_version"] = t.uint8_t(
            _check_uint("security_credential_version", security_credential_version, 8)
        )
    if destination is not None:
        if len(destination) != 8:
            raise ValueError(f"destination must be 8 bytes (an EUI-64), got {len(destination)}")
        fc |= FieldControl.DEVICE_SPECIFIC_FILE_PRESENT
        optional["upgrade_file_destination"] = t.EUI64(Eui64(bytes(destination)).air)
    if min_hw is not None and max_hw is not None:
        _check_uint("min_hw", min_hw, 16)
        _check_uint("max_hw", max_hw, 16)
        if min_hw > max_hw:
            raise ValueError(f"min_hw 0x{min_hw:04X} is above max_hw 0x{max_hw:04X}")
        fc |= FieldControl.HARDWARE_VERSIONS_PRESENT
        optional["minimum_hardware_version"] = HWVersion(min_hw)
        optional["maximum_hardware_version"] = HWVersion(max_hw)

    if zigbee_subelement:
        body = TAG_UPGRADE_IMAGE.to_bytes(2, "little") + len(payload).to_bytes(4, "little") + payload
    else:
        body = payload
    tail = b""
    if gbcs_key is not None:
        tail = bytes([ch_byte, GBCS_SIGNATURE_TAG]) + sign_raw(gbcs_key, payload)

    header_length = header_length_for(int(fc))
    total = header_length + len(body) + len(tail)
    if total > max_size:
        raise ValueError(f"image would be {total} bytes, over the maximum of {max_size}")

    header = OTAImageHeader(
        upgrade_file_id=MAGIC,
        header_version=header_version,
        header_length=header_length,
        field_control=fc,
        manufacturer_id=manufacturer_code,
        image_type=image_type,
        file_version=file_version,
        stack_version=stack_version,
        header_string=HeaderString(encoded.ljust(32, b"\x00")),
        image_size=total,
        **optional,
    ).serialize()
    if len(header) != header_length:  # our layout and zigpy's must agree
        raise AssertionError(f"header is {len(header)} bytes, layout says {header_length}")
    return header + body + tail
