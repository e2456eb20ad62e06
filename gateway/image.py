# SPDX-License-Identifier: GPL-3.0-or-later
"""Firmware images: Zigbee OTA upgrade files (ZCL 11.4) and the GBCS form (SR 11.1).

Every image starts with the Zigbee OTA header. What follows it comes in one of three
forms, and the form decides which bytes are the *Manufacturer Image*, the bytes that
GBCS hashes (CS06 carries SHA-256 of them) and the supplier signs:

``ZIGBEE``    header ‖ sub-elements (tag u16, length u32, data) that exactly fill the
              file. The manufacturer image is the data of the one upgrade-image
              sub-element (tag 0x0000): that is the firmware proper, and the other
              sub-elements (ZCL signatures, certificates, pictures) describe it.
``GBCS``      header ‖ Manufacturer Image ‖ 1 byte for the Communications Hub ‖ 0x40 ‖
              64-byte ECDSA P-256 signature r‖s over the Manufacturer Image alone.
``UNSIGNED``  header ‖ Manufacturer Image (the PPMID form of SR 11.4).

Detection, when the caller does not force a form (`parse_image(form=...)`): the first
of these whose whole structure holds, non-empty manufacturer image included, wins:
1. ZIGBEE: the bytes after the header split exactly into sub-elements, exactly one of
   them an upgrade image (requiring it keeps a GBCS or raw image that happens to tile
   from being misread);
2. GBCS: byte ``len-65`` is 0x40 and the CH byte before it follows at least one byte
   of manufacturer image after the header;
3. UNSIGNED: always holds once the header is sound and a byte follows it.
So once the header is sound, detection always finds a form; a forced form refuses what
does not fit it (a sub-element running past the end, a missing 0x40, ...).
A raw payload can collide with rule 2 (a 0x40 exactly 65 bytes from the end); a caller
who knows the form should say so.

The file's bytes are what goes over the air, never rewritten: `FirmwareImage.data` is
the input itself, and everything else is a view onto it.
"""

from __future__ import annotations

import enum
import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from zigpy.ota.image import FieldControl, OTAImageHeader

from eui64 import Eui64
from gateway.files import open_regular
from gateway.gbcs.keys import p256_public_key, read_verifying_pem, signature_valid

MAGIC = OTAImageHeader.MAGIC_VALUE  # 0x0BEEF11E, little-endian on the wire
FIXED_HEADER_LENGTH = 56
DEFAULT_MAX_SIZE = 16 * 1024 * 1024

SUBELEMENT_HEADER_LENGTH = 6  # tag u16 + length u32
TAG_UPGRADE_IMAGE = 0x0000

GBCS_SIGNATURE_TAG = 0x40
GBCS_SIGNATURE_LENGTH = 64
GBCS_TAIL_LENGTH = 1 + 1 + GBCS_SIGNATURE_LENGTH  # CH byte, 0x40, r||s

TOTAL_SIZE_OFFSET = 52
# Image types of PPMID firmware (the prepayment meter interface device, as the
# simulated PPMID's spec has it); every other image is taken for an HCALCS's.
PPMID_IMAGE_TYPES: frozenset[int] = frozenset({0x0084})

SUBELEMENT_TAG_NAMES = {
    0x0000: "upgrade image",
    0x0001: "ECDSA signature (suite 1)",
    0x0002: "ECDSA signing certificate (suite 1)",
    0x0003: "image integrity code",
    0x0004: "picture data",
    0x0005: "ECDSA signature (suite 2)",
    0x0006: "ECDSA signing certificate (suite 2)",
}

_FIELD_CONTROL_FLAGS = (
    (FieldControl.SECURITY_CREDENTIAL_VERSION_PRESENT, "security_credential_version"),
    (FieldControl.DEVICE_SPECIFIC_FILE_PRESENT, "destination"),
    (FieldControl.HARDWARE_VERSIONS_PRESENT, "hardware_versions"),
)


class ImageForm(enum.Enum):
    ZIGBEE = "zigbee"
    GBCS = "gbcs"
    UNSIGNED = "unsigned"


class ImageError(ValueError):
    """A refused image: `field` names what is wrong and `offset` where it starts."""

    def __init__(self, field: str, offset: int, message: str, *, path: str | None = None) -> None:
        super().__init__(message)
        self.field = field
        self.offset = offset
        self.path = path

    def __reduce__(self) -> tuple[Any, ...]:  # picklable despite the keyword-only path
        return (type(self), (self.field, self.offset, str(self)), {"path": self.path})


@dataclass(frozen=True)
class HeaderField:
    name: str
    offset: int
    size: int


@dataclass(frozen=True)
class SubElement:
    """One sub-element: `offset` is where its tag starts, `length` counts its data only."""

    tag: int
    offset: int
    length: int

    @property
    def data_offset(self) -> int:
        return self.offset + SUBELEMENT_HEADER_LENGTH

    @property
    def name(self) -> str:
        if self.tag in SUBELEMENT_TAG_NAMES:
            return SUBELEMENT_TAG_NAMES[self.tag]
        if self.tag >= 0xF000:
            return "manufacturer specific"
        return "reserved"


def header_fields(field_control: int) -> tuple[HeaderField, ...]:
    """The header layout that `field_control` implies, in file order."""
    layout = [
        ("magic", 4),
        ("header_version", 2),
        ("header_length", 2),
        ("field_control", 2),
        ("manufacturer_code", 2),
        ("image_type", 2),
        ("file_version", 4),
        ("stack_version", 2),
        ("header_string", 32),
        ("total_size", 4),
    ]
    fc = FieldControl(field_control)
    if FieldControl.SECURITY_CREDENTIAL_VERSION_PRESENT in fc:
        layout.append(("security_credential_version", 1))
    if FieldControl.DEVICE_SPECIFIC_FILE_PRESENT in fc:
        layout.append(("destination", 8))
    if FieldControl.HARDWARE_VERSIONS_PRESENT in fc:
        layout += [("min_hardware_version", 2), ("max_hardware_version", 2)]
    fields, offset = [], 0
    for name, size in layout:
        fields.append(HeaderField(name, offset, size))
        offset += size
    return tuple(fields)


def header_length_for(field_control: int) -> int:
    last = header_fields(field_control)[-1]
    return last.offset + last.size


@dataclass(frozen=True)
class FirmwareImage:
    data: bytes = field(repr=False)
    form: ImageForm
    header_length: int
    manufacturer_code: int
    image_type: int
    file_version: int
    header_version: int
    field_control: int
    stack_version: int
    header_string: str
    total_size: int
    security_credential_version: int | None
    # EUI-64 in display order (most significant byte first, as printed on labels and
    # in GBCS); the file holds it little-endian, i.e. these bytes reversed.
    destination: bytes | None
    min_hardware_version: int | None
    max_hardware_version: int | None
    manufacturer_image_offset: int
    manufacturer_image_length: int
    manufacturer_image_hash: bytes  # SHA-256 of the manufacturer image
    signature: bytes | None  # GBCS form only: r||s, 64 bytes
    ch_byte: int | None  # GBCS form only: the byte only the Communications Hub uses
    subelements: tuple[SubElement, ...]

    @property
    def size(self) -> int:
        return len(self.data)

    @property
    def device_kind(self) -> str:
        """The kind of device the image is for when nothing else says: ppmid or hcalcs."""
        return "ppmid" if self.image_type in PPMID_IMAGE_TYPES else "hcalcs"

    @property
    def manufacturer_image(self) -> bytes:
        start = self.manufacturer_image_offset
        return self.data[start : start + self.manufacturer_image_length]

    def hardware_version_ok(self, hw: int | None) -> bool:
        """Whether a device reporting hardware version `hw` may take this image."""
        if self.min_hardware_version is None or self.max_hardware_version is None:
            return True
        # The image is restricted to a hardware range: a device that does not say its
        # version cannot be shown to fit, so it is refused (zigpy's OTA server does too).
        if hw is None:
            return False
        return self.min_hardware_version <= hw <= self.max_hardware_version

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: bytes as lowercase hex strings, numbers as integers."""

        def hex_or_none(value: bytes | None) -> str | None:
            return None if value is None else value.hex()

        fc = FieldControl(self.field_control)
        return {
            "form": self.form.value,
            "size": self.size,
            "header_version": self.header_version,
            "header_length": self.header_length,
            "field_control": self.field_control,
            "field_control_flags": [name for flag, name in _FIELD_CONTROL_FLAGS if flag in fc],
            "manufacturer_code": self.manufacturer_code,
            "image_type": self.image_type,
            "file_version": self.file_version,
            "stack_version": self.stack_version,
            "header_string": self.header_string,
            "total_size": self.total_size,
            "security_credential_version": self.security_credential_version,
            "destination": hex_or_none(self.destination),
            "min_hardware_version": self.min_hardware_version,
            "max_hardware_version": self.max_hardware_version,
            "manufacturer_image_offset": self.manufacturer_image_offset,
            "manufacturer_image_length": self.manufacturer_image_length,
            "manufacturer_image_hash": self.manufacturer_image_hash.hex(),
            "signature": hex_or_none(self.signature),
            "ch_byte": self.ch_byte,
            "subelements": [
                {"tag": s.tag, "name": s.name, "offset": s.offset, "length": s.length}
                for s in self.subelements
            ],
        }


def _plural(n: int, unit: str = "byte") -> str:
    return f"{n} {unit}" if n == 1 else f"{n} {unit}s"


def _need(data: bytes, f: HeaderField) -> None:
    have = max(0, len(data) - f.offset)
    if have < f.size:
        raise ImageError(
            f.name,
            f.offset,
            f"truncated at offset {f.offset}: header field '{f.name}' needs "
            f"{_plural(f.size)}, file has {have}",
        )


def _u16(data: bytes, offset: int) -> int:
    return int.from_bytes(data[offset : offset + 2], "little")


def _u32(data: bytes, offset: int) -> int:
    return int.from_bytes(data[offset : offset + 4], "little")


def _read_header(data: bytes) -> OTAImageHeader:
    """Check the header field by field, then let zigpy's struct read the values."""
    first = header_fields(0)  # the fixed fields, which decide the rest
    by_name = {f.name: f for f in first}

    _need(data, by_name["magic"])
    magic = _u32(data, 0)
    if magic != MAGIC:
        # Not the file's bytes: for a file that is no image at all (a key, /etc/shadow)
        # they are its content, and the message ends up in logs and the audit log.
        raise ImageError(
            "magic", 0, f"not an OTA image: it does not start with the OTA magic (bytes 1E F1 EE 0B, 0x{MAGIC:08X})"
        )
    for name in ("header_version", "header_length", "field_control"):
        _need(data, by_name[name])
    header_length = _u16(data, 6)
    field_control = _u16(data, 8)
    expected = header_length_for(field_control)
    if header_length != expected:
        raise ImageError(
            "header_length",
            6,
            f"header_length at offset 6 is {header_length} but field_control 0x{field_control:04X} "
            f"implies {expected}",
        )
    for f in header_fields(field_control):
        _need(data, f)

    header, rest = OTAImageHeader.deserialize(data[:header_length])
    if rest:  # cannot happen once the layout above agrees with zigpy's
        raise ImageError("header_length", 6, f"header has {len(rest)} unread bytes")
    if FieldControl.HARDWARE_VERSIONS_PRESENT in header.field_control:
        low, high = int(header.minimum_hardware_version), int(header.maximum_hardware_version)
        if low > high:  # no hardware could take it; say so rather than never offer it
            at = header_length - 2
            raise ImageError(
                "max_hardware_version",
                at,
                f"max_hardware_version 0x{high:04X} at offset {at} is below "
                f"min_hardware_version 0x{low:04X}",
            )
    return header


def _read_subelements(data: bytes, start: int) -> tuple[SubElement, ...]:
    subs: list[SubElement] = []
    offset, end = start, len(data)
    while offset < end:
        i = len(subs)
        if end - offset < SUBELEMENT_HEADER_LENGTH:
            raise ImageError(
                f"subelement[{i}]",
                offset,
                f"truncated at offset {offset}: sub-element {i} header needs "
                f"{SUBELEMENT_HEADER_LENGTH} bytes (tag, length), file has {end - offset}",
            )
        tag, length = _u16(data, offset), _u32(data, offset + 2)
        room = end - offset - SUBELEMENT_HEADER_LENGTH
        if length > room:
            raise ImageError(
                f"subelement[{i}].length",
                offset + 2,
                f"sub-element {i} (tag 0x{tag:04X}) at offset {offset} declares "
                f"{_plural(length)} of data, file has {room} after its header",
            )
        subs.append(SubElement(tag, offset, length))
        offset += SUBELEMENT_HEADER_LENGTH + length
    return tuple(subs)


def _upgrade_image(subs: tuple[SubElement, ...], header_length: int) -> SubElement:
    upgrades = [(i, s) for i, s in enumerate(subs) if s.tag == TAG_UPGRADE_IMAGE]
    if not upgrades:
        raise ImageError(
            "subelements",
            header_length,
            f"no upgrade image sub-element (tag 0x0000) among {_plural(len(subs), 'sub-element')}: "
            "the manufacturer image is taken from it",
        )
    if len(upgrades) > 1:
        i, second = upgrades[1]
        raise ImageError(
            f"subelement[{i}].tag",
            second.offset,
            f"second upgrade image sub-element at offset {second.offset}: which one is the "
            "manufacturer image is ambiguous",
        )
    return upgrades[0][1]


def _check_gbcs_tail(data: bytes, header_length: int) -> None:
    after = len(data) - header_length
    if after < GBCS_TAIL_LENGTH:
        raise ImageError(
            "signature",
            header_length,
            f"GBCS form needs at least {GBCS_TAIL_LENGTH} bytes after the header "
            f"(CH byte, 0x40, {GBCS_SIGNATURE_LENGTH}-byte signature), file has {after}",
        )
    tag_offset = len(data) - GBCS_SIGNATURE_LENGTH - 1
    if data[tag_offset] != GBCS_SIGNATURE_TAG:
        raise ImageError(
            "signature_tag",
            tag_offset,
            f"GBCS form needs 0x40 at offset {tag_offset} (65 bytes from the end), "
            f"found 0x{data[tag_offset]:02X}",
        )


@dataclass(frozen=True)
class _Layout:
    """Where a form puts the manufacturer image and what surrounds it."""

    form: ImageForm
    mi_offset: int
    mi_length: int
    subelements: tuple[SubElement, ...] = ()
    signature: bytes | None = None
    ch_byte: int | None = None


def _layout(data: bytes, header_length: int, form: ImageForm) -> _Layout:
    if form is ImageForm.ZIGBEE:
        subs = _read_subelements(data, header_length)
        upgrade = _upgrade_image(subs, header_length)
        layout = _Layout(form, upgrade.data_offset, upgrade.length, subelements=subs)
    elif form is ImageForm.GBCS:
        _check_gbcs_tail(data, header_length)
        tail = len(data) - GBCS_TAIL_LENGTH
        layout = _Layout(
            form, header_length, tail - header_length, signature=data[tail + 2 :], ch_byte=data[tail]
        )
    elif form is ImageForm.UNSIGNED:
        layout = _Layout(form, header_length, len(data) - header_length)
    else:
        raise TypeError(f"form must be an ImageForm or None, not {form!r}")
    if layout.mi_length == 0:
        raise ImageError(
            "manufacturer_image",
            layout.mi_offset,
            f"the manufacturer image at offset {layout.mi_offset} is empty ({form.value} form)",
        )
    return layout


def _detect_layout(data: bytes, header_length: int) -> _Layout:
    # The first form whose whole structure holds, empty manufacturer image included,
    # wins; UNSIGNED always holds once there is a byte after the header.
    for form in (ImageForm.ZIGBEE, ImageForm.GBCS):
        try:
            return _layout(data, header_length, form)
        except ImageError:
            pass
    return _layout(data, header_length, ImageForm.UNSIGNED)


def parse_image(
    data: bytes, *, form: ImageForm | None = None, max_size: int = DEFAULT_MAX_SIZE
) -> FirmwareImage:
    """Parse an image, detecting its form unless `form` is given. Raises only ImageError."""
    data = bytes(data)  # the same object when given bytes; a frozen copy otherwise
    if len(data) > max_size:
        raise ImageError(
            "size", max_size, f"file is {len(data)} bytes, over the maximum of {max_size} (offset {max_size} onward)"
        )
    header = _read_header(data)
    header_length = int(header.header_length)

    total = int(header.image_size)
    if total > len(data):
        raise ImageError(
            "total_size",
            TOTAL_SIZE_OFFSET,
            f"truncated: total_size at offset {TOTAL_SIZE_OFFSET} says {total} bytes, file has {len(data)}",
        )
    if total < len(data):
        raise ImageError(
            "total_size",
            TOTAL_SIZE_OFFSET,
            f"{_plural(len(data) - total, 'trailing byte')} from offset {total}: total_size at "
            f"offset {TOTAL_SIZE_OFFSET} says {total} bytes, file has {len(data)}",
        )
    if header_length == len(data):
        raise ImageError(
            "manufacturer_image",
            header_length,
            f"nothing after the {header_length}-byte header at offset {header_length}: "
            "the manufacturer image is empty",
        )

    layout = _detect_layout(data, header_length) if form is None else _layout(data, header_length, form)
    mi_offset, mi_length = layout.mi_offset, layout.mi_length

    fc = header.field_control
    destination = None
    if FieldControl.DEVICE_SPECIFIC_FILE_PRESENT in fc:
        destination = Eui64.from_air(header.upgrade_file_destination).written
    hw_present = FieldControl.HARDWARE_VERSIONS_PRESENT in fc
    return FirmwareImage(
        data=data,
        form=layout.form,
        header_length=header_length,
        manufacturer_code=int(header.manufacturer_id),
        image_type=int(header.image_type),
        file_version=int(header.file_version),
        header_version=int(header.header_version),
        field_control=int(fc),
        stack_version=int(header.stack_version),
        # ZCL gives the string no encoding; UTF-8 with escapes keeps odd bytes visible.
        header_string=bytes(header.header_string).rstrip(b"\x00").decode("utf-8", "backslashreplace"),
        total_size=total,
        security_credential_version=(
            int(header.security_credential_version)
            if FieldControl.SECURITY_CREDENTIAL_VERSION_PRESENT in fc
            else None
        ),
        destination=destination,
        min_hardware_version=int(header.minimum_hardware_version) if hw_present else None,
        max_hardware_version=int(header.maximum_hardware_version) if hw_present else None,
        manufacturer_image_offset=mi_offset,
        manufacturer_image_length=mi_length,
        manufacturer_image_hash=hashlib.sha256(data[mi_offset : mi_offset + mi_length]).digest(),
        signature=layout.signature,
        ch_byte=layout.ch_byte,
        subelements=layout.subelements,
    )


def load_image(
    path: str | os.PathLike[str], *, form: ImageForm | None = None, max_size: int = DEFAULT_MAX_SIZE
) -> FirmwareImage:
    """Read and parse a file; ImageError messages start with the path.

    OSError (missing, unreadable file; NotRegularFile for a FIFO, directory or device)
    propagates unchanged: it names the path already.
    """
    p = Path(path)
    with open_regular(p) as f:
        size = os.fstat(f.fileno()).st_size
        if size > max_size:  # refuse before reading a huge file into memory
            raise ImageError(
                "size", max_size, f"{p}: file is {size} bytes, over the maximum of {max_size}", path=str(p)
            )
        data = f.read(max_size + 1)  # +1: a file that grew is still refused below
    try:
        return parse_image(data, form=form, max_size=max_size)
    except ImageError as e:
        raise ImageError(e.field, e.offset, f"{p}: {e}", path=str(p)) from e


def verify_image_signature(
    image: FirmwareImage, public_key_or_cert: ec.EllipticCurvePublicKey | x509.Certificate
) -> bool:
    """Whether the GBCS signature over the manufacturer image verifies with the key.

    An image without a signature (not the GBCS form) does not verify: False. A key that
    is not P-256 is refused (KeyRefused, a ValueError) whatever the image; an object
    that is no key at all is a TypeError.
    """
    key = p256_public_key(public_key_or_cert, "the trust anchor")
    if image.signature is None:
        return False
    return signature_valid(key, image.manufacturer_image, image.signature)


def load_trust_anchor(path: str | os.PathLike[str]) -> ec.EllipticCurvePublicKey:
    """A supplier's P-256 key from a PEM certificate or PEM public key file.

    Certificate dates are not checked: GBCS devices check the signature against the
    trust anchor they hold, not its validity period (the RTDS test certificate expired).
    Refusals are KeyRefused (a ValueError) naming the file, missing files included.
    """
    return read_verifying_pem(path).public_key
