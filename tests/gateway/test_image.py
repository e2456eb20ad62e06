# SPDX-License-Identifier: GPL-3.0-or-later
"""gateway.image / gateway.image_build: the GBCS sample images, round trips, refusals."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.image import (
    DEFAULT_MAX_SIZE,
    FirmwareImage,
    ImageError,
    ImageForm,
    load_image,
    load_trust_anchor,
    parse_image,
    verify_image_signature,
)
from gateway.image_build import build_image, load_signing_key

GBCS_DIR = Path(__file__).parents[1] / "data" / "gbcs"
SR11_1 = GBCS_DIR / "sr11.1-firmware-image.bin"
SR11_4 = GBCS_DIR / "sr11.4-ppmid-firmware-image.bin"
CERT = GBCS_DIR / "supplier-90b3d51f30010000-ds.pem"
SUPPLIER_KEY = GBCS_DIR / "supplier-90b3d51f30010000-ds.key"
SAMPLE_HASH = "7542f475e3f12eae887d81e32c46d313741d67076b13caec2f82e00ba5e1bb36"

# The header layout written out by hand from ZCL 11.4.2 (not computed by the code under
# test): name, offset, size, for field control 0x0007 (every optional field present).
FULL_HEADER = [
    ("magic", 0, 4),
    ("header_version", 4, 2),
    ("header_length", 6, 2),
    ("field_control", 8, 2),
    ("manufacturer_code", 10, 2),
    ("image_type", 12, 2),
    ("file_version", 14, 4),
    ("stack_version", 18, 2),
    ("header_string", 20, 32),
    ("total_size", 52, 4),
    ("security_credential_version", 56, 1),
    ("destination", 57, 8),
    ("min_hardware_version", 65, 2),
    ("max_hardware_version", 67, 2),
]
DEST = bytes.fromhex("00DB1234567890A0")  # display order


@pytest.fixture(scope="module")
def sr11_1() -> bytes:
    return SR11_1.read_bytes()


@pytest.fixture(scope="module")
def sr11_4() -> bytes:
    return SR11_4.read_bytes()


@pytest.fixture(scope="module")
def key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def full_header_image(**kw: object) -> bytes:
    args: dict = dict(
        manufacturer_code=0x1234,
        image_type=0x0084,
        file_version=0x01020304,
        stack_version=2,
        header_string="bench",
        min_hw=0x0100,
        max_hw=0x02FF,
        security_credential_version=0x03,
        destination=DEST,
    )
    args.update(kw)
    return build_image(b"firmware-bytes" * 8, **args)


def set_total_size(data: bytes, total: int) -> bytes:
    return data[:52] + total.to_bytes(4, "little") + data[56:]


def refused(data: bytes, **kw: object) -> ImageError:
    with pytest.raises(ImageError) as info:
        parse_image(data, **kw)
    assert type(info.value) is ImageError
    assert isinstance(info.value, ValueError)
    return info.value


# --- the two GBCS sample images ------------------------------------------------------


def test_sr11_1_is_the_gbcs_signed_form(sr11_1: bytes) -> None:
    image = parse_image(sr11_1)
    assert image.data is sr11_1  # served as given, never rewritten
    assert image.form is ImageForm.GBCS
    assert image.size == 361
    assert (image.header_version, image.header_length, image.field_control) == (0x0100, 60, 0x0004)
    assert (image.manufacturer_code, image.image_type) == (0x121D, 0x0000)
    assert image.file_version == 0xACDCACDC
    assert image.stack_version == 2
    assert image.header_string == "I am a GFI ESME[] firmware image"
    assert image.total_size == 361
    assert image.security_credential_version is None
    assert image.destination is None
    assert (image.min_hardware_version, image.max_hardware_version) == (0x1111, 0x1211)
    assert (image.manufacturer_image_offset, image.manufacturer_image_length) == (60, 235)
    assert image.manufacturer_image == sr11_1[60:295]
    assert image.manufacturer_image_hash.hex() == SAMPLE_HASH
    assert image.ch_byte == 0x00
    assert image.signature == sr11_1[-64:]
    assert image.subelements == ()


def test_sr11_1_signature_verifies_with_the_supplier_certificate(sr11_1: bytes, tmp_path: Path) -> None:
    image = parse_image(sr11_1)
    anchor = load_trust_anchor(CERT)
    assert verify_image_signature(image, anchor)
    # the certificate object and a bare PEM public key work too
    cert = x509.load_pem_x509_certificate(CERT.read_bytes())
    assert verify_image_signature(image, cert)
    pub = tmp_path / "supplier.pub.pem"
    pub.write_bytes(
        anchor.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    assert verify_image_signature(image, load_trust_anchor(pub))


def test_sr11_1_signature_fails_with_another_key(sr11_1: bytes, key: ec.EllipticCurvePrivateKey) -> None:
    assert not verify_image_signature(parse_image(sr11_1), key.public_key())


def test_sr11_1_signature_fails_when_the_manufacturer_image_changes(sr11_1: bytes) -> None:
    tampered = bytearray(sr11_1)
    tampered[100] ^= 0x01
    image = parse_image(bytes(tampered))
    assert image.form is ImageForm.GBCS
    assert not verify_image_signature(image, load_trust_anchor(CERT))


def test_sr11_1_ch_byte_is_outside_the_signature(sr11_1: bytes) -> None:
    changed = bytearray(sr11_1)
    changed[295] = 0x5A  # the CH byte: not part of the manufacturer image
    image = parse_image(bytes(changed))
    assert image.ch_byte == 0x5A
    assert image.manufacturer_image_hash.hex() == SAMPLE_HASH
    assert verify_image_signature(image, load_trust_anchor(CERT))


@pytest.mark.parametrize("sig", [bytes(64), b"\xff" * 64, bytes(32) + b"\x01" * 32])
def test_out_of_range_signature_values_are_false_not_errors(sr11_1: bytes, sig: bytes) -> None:
    image = parse_image(sr11_1[:-64] + sig)
    assert image.signature == sig
    assert verify_image_signature(image, load_trust_anchor(CERT)) is False


def test_sr11_4_is_the_unsigned_ppmid_form(sr11_4: bytes) -> None:
    image = parse_image(sr11_4)
    assert image.form is ImageForm.UNSIGNED
    assert image.size == 295 == image.total_size
    assert (image.manufacturer_code, image.image_type, image.file_version) == (0x121D, 0x0084, 0xACDCACDC)
    assert image.header_string == "I am a GFI PPMID firmware image "
    assert (image.min_hardware_version, image.max_hardware_version) == (0x1111, 0x1211)
    assert (image.manufacturer_image_offset, image.manufacturer_image_length) == (60, 235)
    assert image.manufacturer_image == sr11_4[60:]
    # the same manufacturer image as SR 11.1, so the same hash
    assert image.manufacturer_image_hash.hex() == SAMPLE_HASH
    assert image.signature is None and image.ch_byte is None
    assert verify_image_signature(image, load_trust_anchor(CERT)) is False


def test_forcing_a_form_on_the_samples(sr11_1: bytes, sr11_4: bytes) -> None:
    as_unsigned = parse_image(sr11_1, form=ImageForm.UNSIGNED)
    assert as_unsigned.manufacturer_image == sr11_1[60:]
    assert as_unsigned.signature is None
    assert as_unsigned.manufacturer_image_hash == hashlib.sha256(sr11_1[60:]).digest()

    e = refused(sr11_1, form=ImageForm.ZIGBEE)  # "Cr" tag, "itic" length: overruns
    assert (e.field, e.offset) == ("subelement[0].length", 62)

    e = refused(sr11_4, form=ImageForm.GBCS)
    assert (e.field, e.offset) == ("signature_tag", 295 - 65)
    assert "0x40" in str(e)


def test_load_image_reads_the_file() -> None:
    image = load_image(SR11_1)
    assert image.data == SR11_1.read_bytes()
    assert image.manufacturer_image_hash.hex() == SAMPLE_HASH


def test_hardware_version_ok(sr11_1: bytes) -> None:
    image = parse_image(sr11_1)  # 0x1111..0x1211
    assert image.hardware_version_ok(0x1111)
    assert image.hardware_version_ok(0x1200)
    assert image.hardware_version_ok(0x1211)
    assert not image.hardware_version_ok(0x1110)
    assert not image.hardware_version_ok(0x1212)
    assert not image.hardware_version_ok(None)  # restricted image, device did not say
    free = parse_image(build_image(b"x", manufacturer_code=1, image_type=2, file_version=3))
    assert free.hardware_version_ok(None)
    assert free.hardware_version_ok(0xFFFF)


def test_to_dict_is_json_ready(sr11_1: bytes) -> None:
    d = parse_image(sr11_1).to_dict()
    assert json.loads(json.dumps(d)) == d
    assert d["form"] == "gbcs"
    assert d["manufacturer_image_hash"] == SAMPLE_HASH
    assert d["signature"] == sr11_1[-64:].hex()
    assert d["field_control_flags"] == ["hardware_versions"]
    assert (d["manufacturer_code"], d["min_hardware_version"], d["destination"]) == (0x121D, 0x1111, None)
    z = parse_image(full_header_image(zigbee_subelement=True)).to_dict()
    assert z["destination"] == "00db1234567890a0"
    assert z["subelements"] == [{"tag": 0, "name": "upgrade image", "offset": 69, "length": 112}]


def test_repr_does_not_dump_the_image(sr11_1: bytes) -> None:
    assert "CriticalSoftware" not in repr(parse_image(sr11_1))


# --- build -> parse round trips ------------------------------------------------------


@pytest.mark.parametrize(
    "optional",
    [
        {},
        {"security_credential_version": 1},
        {"destination": DEST},
        {"min_hw": 0x0001, "max_hw": 0x0001},
        {"security_credential_version": 0xFF, "destination": DEST, "min_hw": 0, "max_hw": 0xFFFF},
    ],
    ids=["fc0", "fc1", "fc2", "fc4", "fc7"],
)
@pytest.mark.parametrize("form", list(ImageForm))
def test_round_trip(form: ImageForm, optional: dict, key: ec.EllipticCurvePrivateKey) -> None:
    payload = bytes(range(256)) * 3
    data = build_image(
        payload,
        manufacturer_code=0xABCD,
        image_type=0x0102,
        file_version=0xDEADBEEF,
        stack_version=0x0003,
        header_string="round trip ✓",
        gbcs_key=key if form is ImageForm.GBCS else None,
        ch_byte=0x7E if form is ImageForm.GBCS else 0,
        zigbee_subelement=form is ImageForm.ZIGBEE,
        **optional,
    )
    image = parse_image(data)
    assert image.form is form
    assert image.data is data
    assert image.manufacturer_image == payload
    assert image.manufacturer_image_hash == hashlib.sha256(payload).digest()
    assert (image.manufacturer_code, image.image_type, image.file_version) == (0xABCD, 0x0102, 0xDEADBEEF)
    assert (image.stack_version, image.header_version) == (3, 0x0100)
    assert image.header_string == "round trip ✓"
    assert image.security_credential_version == optional.get("security_credential_version")
    assert image.destination == optional.get("destination")
    assert image.min_hardware_version == optional.get("min_hw")
    assert image.max_hardware_version == optional.get("max_hw")
    assert image.total_size == len(data)

    # the wire layout, checked by hand rather than through the parser
    assert data[:4] == bytes.fromhex("1EF1EE0B")
    assert data[10:12] == bytes.fromhex("CDAB")
    assert data[14:18] == bytes.fromhex("EFBEADDE")
    assert int.from_bytes(data[52:56], "little") == len(data)
    expected_hl = 56 + (1 if "security_credential_version" in optional else 0) + (
        8 if "destination" in optional else 0
    ) + (4 if "min_hw" in optional else 0)
    assert image.header_length == int.from_bytes(data[6:8], "little") == expected_hl
    if "destination" in optional:
        start = 57 if "security_credential_version" in optional else 56
        assert data[start : start + 8] == DEST[::-1]  # little-endian on the wire

    if form is ImageForm.GBCS:
        assert image.ch_byte == 0x7E
        assert data[-65] == 0x40
        assert image.signature == data[-64:]
        assert verify_image_signature(image, key.public_key())
        assert image.subelements == ()
    elif form is ImageForm.ZIGBEE:
        (sub,) = image.subelements
        assert (sub.tag, sub.offset, sub.length, sub.data_offset) == (0, expected_hl, len(payload), expected_hl + 6)
        assert data[expected_hl : expected_hl + 6] == b"\x00\x00" + len(payload).to_bytes(4, "little")
        assert image.signature is None
    else:
        assert image.manufacturer_image_offset == expected_hl
        assert len(data) == expected_hl + len(payload)


def test_round_trip_with_the_rtds_supplier_key() -> None:
    data = build_image(b"lab firmware", manufacturer_code=0x121D, image_type=0, file_version=1,
                       gbcs_key=load_signing_key(SUPPLIER_KEY))
    assert verify_image_signature(parse_image(data), load_trust_anchor(CERT))


def test_gbcs_round_trip_reproduces_the_sample_layout(sr11_1: bytes) -> None:
    # Rebuild SR 11.1's header and body (the signature differs: ECDSA is randomised).
    sample = parse_image(sr11_1)
    data = build_image(
        sample.manufacturer_image,
        manufacturer_code=sample.manufacturer_code,
        image_type=sample.image_type,
        file_version=sample.file_version,
        header_string=sample.header_string,
        min_hw=sample.min_hardware_version,
        max_hw=sample.max_hardware_version,
        gbcs_key=load_signing_key(SUPPLIER_KEY),
    )
    assert data[:-64] == sr11_1[:-64]
    assert verify_image_signature(parse_image(data), load_trust_anchor(CERT))


@pytest.mark.parametrize(
    ("kwargs", "words"),
    [
        ({"payload": b""}, "empty"),
        ({"header_string": "x" * 33}, "32"),
        ({"header_string": "é" * 17}, "34 bytes"),
        ({"min_hw": 1}, "together"),
        ({"min_hw": 2, "max_hw": 1}, "above"),
        ({"manufacturer_code": 0x10000}, "manufacturer_code"),
        ({"file_version": -1}, "file_version"),
        ({"ch_byte": 256}, "ch_byte"),
        ({"destination": b"1234567"}, "8 bytes"),
        ({"zigbee_subelement": True, "gbcs_key": "KEY"}, "exclusive"),
        ({"max_size": 100}, "maximum"),
    ],
)
def test_build_image_refuses_bad_arguments(kwargs: dict, words: str, key: ec.EllipticCurvePrivateKey) -> None:
    args: dict = dict(payload=b"abc" * 40, manufacturer_code=1, image_type=2, file_version=3)
    args.update(kwargs)
    if args.get("gbcs_key") == "KEY":
        args["gbcs_key"] = key
    with pytest.raises(ValueError, match=words):
        build_image(args.pop("payload"), **args)


def test_build_image_refuses_a_non_p256_key() -> None:
    with pytest.raises(ValueError, match="P-256"):
        build_image(b"x", manufacturer_code=1, image_type=2, file_version=3,
                    gbcs_key=ec.generate_private_key(ec.SECP384R1()))


# --- refusals ------------------------------------------------------------------------


def test_truncation_inside_the_header_names_the_field_at_every_offset() -> None:
    data = full_header_image()
    assert int.from_bytes(data[6:8], "little") == 69
    for cut in range(69):
        e = refused(data[:cut])
        name, offset, size = next(f for f in FULL_HEADER if f[1] <= cut < f[1] + f[2])
        assert (e.field, e.offset) == (name, offset), cut
        unit = "byte" if size == 1 else "bytes"
        assert str(e) == (
            f"truncated at offset {offset}: header field '{name}' needs {size} {unit}, file has {cut - offset}"
        )


def test_truncation_after_the_header_is_a_total_size_mismatch() -> None:
    data = full_header_image()
    for cut in range(69, len(data)):
        e = refused(data[:cut])
        assert (e.field, e.offset) == ("total_size", 52)
        assert f"says {len(data)} bytes, file has {cut}" in str(e)


def test_the_brief_example_message() -> None:
    data = build_image(b"x", manufacturer_code=1, image_type=2, file_version=3, security_credential_version=1)
    e = refused(data[:56])
    assert str(e) == "truncated at offset 56: header field 'security_credential_version' needs 1 byte, file has 0"
    assert (e.field, e.offset) == ("security_credential_version", 56)


def test_every_truncation_of_the_samples_is_an_image_error(sr11_1: bytes, sr11_4: bytes) -> None:
    for data in (sr11_1, sr11_4):
        for cut in range(len(data)):
            for form in (None, *ImageForm):
                refused(data[:cut], form=form)


@pytest.mark.parametrize("index", range(4))
def test_bad_magic(sr11_1: bytes, index: int) -> None:
    data = bytearray(sr11_1)
    data[index] ^= 0xFF
    e = refused(bytes(data))
    assert (e.field, e.offset) == ("magic", 0)
    assert "not an OTA image" in str(e) and "1E F1 EE 0B" in str(e)
    assert f"{int.from_bytes(data[:4], 'little'):08X}" not in str(e)  # the file's bytes are not echoed


def test_big_endian_magic_is_refused(sr11_1: bytes) -> None:
    e = refused(bytes.fromhex("0BEEF11E") + sr11_1[4:])
    assert (e.field, e.offset) == ("magic", 0)


@pytest.mark.parametrize(
    ("patch", "value"),
    [(slice(8, 10), 0x0000), (slice(8, 10), 0x0005), (slice(6, 8), 61), (slice(6, 8), 56), (slice(6, 8), 0xFFFF)],
)
def test_header_length_inconsistent_with_field_control(sr11_1: bytes, patch: slice, value: int) -> None:
    data = sr11_1[: patch.start] + value.to_bytes(2, "little") + sr11_1[patch.stop :]
    e = refused(data)
    assert (e.field, e.offset) == ("header_length", 6)
    assert "field_control" in str(e)


def test_hardware_range_upside_down(sr11_1: bytes) -> None:
    data = sr11_1[:56] + (0x1212).to_bytes(2, "little") + sr11_1[58:]  # min above max 0x1211
    e = refused(data)
    assert (e.field, e.offset) == ("max_hardware_version", 58)
    assert "below min_hardware_version 0x1212" in str(e)
    same = sr11_1[:56] + (0x1211).to_bytes(2, "little") + sr11_1[58:]
    assert parse_image(same).hardware_version_ok(0x1211)


def test_total_size_larger_than_the_file(sr11_1: bytes) -> None:
    e = refused(set_total_size(sr11_1, 362))
    assert (e.field, e.offset) == ("total_size", 52)
    assert str(e) == "truncated: total_size at offset 52 says 362 bytes, file has 361"


def test_total_size_smaller_than_the_file(sr11_1: bytes) -> None:
    e = refused(set_total_size(sr11_1, 360))
    assert (e.field, e.offset) == ("total_size", 52)
    assert "1 trailing byte from offset 360" in str(e)


def test_trailing_byte(sr11_1: bytes) -> None:
    e = refused(sr11_1 + b"\x00")
    assert (e.field, e.offset) == ("total_size", 52)
    assert "1 trailing byte from offset 361" in str(e)


def test_oversize(sr11_1: bytes) -> None:
    e = refused(sr11_1, max_size=360)
    assert (e.field, e.offset) == ("size", 360)
    assert parse_image(sr11_1, max_size=361).size == 361
    big = refused(b"\x00" * (DEFAULT_MAX_SIZE + 1))
    assert (big.field, big.offset) == ("size", DEFAULT_MAX_SIZE)


def test_load_image_refuses_oversize_before_reading(tmp_path: Path) -> None:
    path = tmp_path / "huge.ota"
    with path.open("wb") as f:
        f.truncate(DEFAULT_MAX_SIZE + 1)  # sparse: nothing to read if we tried
    with pytest.raises(ImageError) as info:
        load_image(path)
    assert (info.value.field, info.value.offset, info.value.path) == ("size", DEFAULT_MAX_SIZE, str(path))
    assert str(info.value).startswith(f"{path}: ")


def test_load_image_errors_name_the_path(tmp_path: Path, sr11_1: bytes) -> None:
    path = tmp_path / "cut.ota"
    path.write_bytes(sr11_1[:57])
    with pytest.raises(ImageError) as info:
        load_image(path)
    assert (info.value.field, info.value.offset) == ("min_hardware_version", 56)
    assert str(info.value) == (
        f"{path}: truncated at offset 56: header field 'min_hardware_version' needs 2 bytes, file has 1"
    )
    with pytest.raises(FileNotFoundError):
        load_image(tmp_path / "missing.ota")


def zigbee_with(subelements: bytes, header_fc7: bool = False) -> bytes:
    """A header (fc 0) followed by hand-written sub-element bytes, total size fixed up."""
    base = build_image(b"x", manufacturer_code=1, image_type=2, file_version=3)[:56]
    return set_total_size(base + subelements, 56 + len(subelements))


def sub(tag: int, data: bytes, declared: int | None = None) -> bytes:
    n = len(data) if declared is None else declared
    return tag.to_bytes(2, "little") + n.to_bytes(4, "little") + data


def test_subelement_overrun() -> None:
    data = zigbee_with(sub(0x0000, b"firmware", declared=9))
    e = refused(data, form=ImageForm.ZIGBEE)
    assert (e.field, e.offset) == ("subelement[0].length", 58)
    assert "declares 9 bytes of data, file has 8" in str(e)
    # not forced: it does not tile, so it is not read as the Zigbee form
    assert parse_image(data).form is ImageForm.UNSIGNED


def test_second_subelement_overrun() -> None:
    data = zigbee_with(sub(0x0000, b"firmware") + sub(0xF000, b"abc", declared=0xFFFFFFFF))
    e = refused(data, form=ImageForm.ZIGBEE)
    assert (e.field, e.offset) == ("subelement[1].length", 56 + 14 + 2)


def test_truncated_subelement_header() -> None:
    data = zigbee_with(sub(0x0000, b"firmware") + b"\x01\x00\x00")
    e = refused(data, form=ImageForm.ZIGBEE)
    assert (e.field, e.offset) == ("subelement[1]", 70)
    assert "needs 6 bytes" in str(e)


def test_zigbee_needs_exactly_one_upgrade_image() -> None:
    none = zigbee_with(sub(0x0004, b"picture"))
    e = refused(none, form=ImageForm.ZIGBEE)
    assert (e.field, e.offset) == ("subelements", 56)
    assert parse_image(none).form is ImageForm.UNSIGNED

    two = zigbee_with(sub(0x0000, b"a") + sub(0x0000, b"b"))
    e = refused(two, form=ImageForm.ZIGBEE)
    assert (e.field, e.offset) == ("subelement[1].tag", 63)


def test_zigbee_with_several_subelements() -> None:
    body = sub(0x0003, b"\x11" * 16) + sub(0x0000, b"firmware") + sub(0xF123, b"vendor")
    image = parse_image(zigbee_with(body))
    assert image.form is ImageForm.ZIGBEE
    assert [(s.tag, s.offset, s.length, s.name) for s in image.subelements] == [
        (0x0003, 56, 16, "image integrity code"),
        (0x0000, 78, 8, "upgrade image"),
        (0xF123, 92, 6, "manufacturer specific"),
    ]
    assert image.manufacturer_image == b"firmware"
    assert image.manufacturer_image_offset == 84


def test_empty_manufacturer_image() -> None:
    header_only = set_total_size(build_image(b"x", manufacturer_code=1, image_type=2, file_version=3)[:56], 56)
    for form in (None, *ImageForm):
        e = refused(header_only, form=form)
        assert (e.field, e.offset) == ("manufacturer_image", 56)

    empty_upgrade = zigbee_with(sub(0x0000, b""))
    e = refused(empty_upgrade, form=ImageForm.ZIGBEE)
    assert (e.field, e.offset) == ("manufacturer_image", 62)

    just_tail = zigbee_with(b"\x00\x40" + bytes(64))  # CH byte, 0x40, signature: nothing signed
    e = refused(just_tail, form=ImageForm.GBCS)
    assert (e.field, e.offset) == ("manufacturer_image", 56)
    # not forced, the GBCS reading does not hold, so it is the unsigned form
    assert parse_image(just_tail).form is ImageForm.UNSIGNED


def test_gbcs_too_short() -> None:
    e = refused(zigbee_with(b"\x40" * 65), form=ImageForm.GBCS)
    assert (e.field, e.offset) == ("signature", 56)


def test_detection_collision_is_resolved_by_forcing() -> None:
    payload = b"raw" + b"\x00\x40" + bytes(64)  # ends like a GBCS tail
    data = build_image(payload, manufacturer_code=1, image_type=2, file_version=3)
    assert parse_image(data).form is ImageForm.GBCS
    forced = parse_image(data, form=ImageForm.UNSIGNED)
    assert forced.manufacturer_image == payload


def test_parse_accepts_bytearray_and_keeps_an_immutable_copy(sr11_4: bytes) -> None:
    buf = bytearray(sr11_4)
    image = parse_image(buf)
    buf[100] ^= 0xFF
    assert image.data == sr11_4 and isinstance(image.data, bytes)


# --- trust anchors -------------------------------------------------------------------


def test_trust_anchor_refusals(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="private key") as info:
        load_trust_anchor(SUPPLIER_KEY)
    assert str(SUPPLIER_KEY) in str(info.value)
    junk = tmp_path / "junk.pem"
    junk.write_text("not a key\n")
    with pytest.raises(ValueError, match="neither a PEM certificate nor a PEM public key"):
        load_trust_anchor(junk)
    p384 = tmp_path / "p384.pem"
    p384.write_bytes(
        ec.generate_private_key(ec.SECP384R1())
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    with pytest.raises(ValueError, match="P-256"):
        load_trust_anchor(p384)
    broken = tmp_path / "broken.pem"
    broken.write_text("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")
    with pytest.raises(ValueError, match=str(broken)):
        load_trust_anchor(broken)
    missing = tmp_path / "missing.pem"
    with pytest.raises(ValueError, match=f"cannot read trust anchor {missing}: No such file"):
        load_trust_anchor(missing)


def test_verify_refuses_a_key_of_the_wrong_kind(sr11_1: bytes) -> None:
    image = parse_image(sr11_1)
    with pytest.raises(ValueError, match="P-256"):
        verify_image_signature(image, ec.generate_private_key(ec.SECP384R1()).public_key())
    with pytest.raises(TypeError):
        verify_image_signature(image, b"not a key")  # type: ignore[arg-type]


# --- only ImageError escapes ---------------------------------------------------------

SEEDS = [
    SR11_1.read_bytes(),
    SR11_4.read_bytes(),
    full_header_image(),
    full_header_image(zigbee_subelement=True),
    full_header_image(gbcs_key=ec.generate_private_key(ec.SECP256R1())),
]


def check_parse(data: bytes, form: ImageForm | None) -> None:
    try:
        image = parse_image(data, form=form)
    except ImageError as e:
        assert isinstance(e.field, str) and e.field
        assert isinstance(e.offset, int) and e.offset >= 0
        return
    assert isinstance(image, FirmwareImage)
    assert image.data == data
    assert form is None or image.form is form
    assert image.total_size == len(data)
    assert image.header_length <= image.manufacturer_image_offset
    if image.min_hardware_version is not None:
        assert image.max_hardware_version is not None
        assert image.min_hardware_version <= image.max_hardware_version
    end = image.manufacturer_image_offset + image.manufacturer_image_length
    assert 0 < image.manufacturer_image_length and end <= len(data)
    assert image.manufacturer_image_hash == hashlib.sha256(data[image.manufacturer_image_offset : end]).digest()
    if image.form is ImageForm.GBCS:
        assert image.signature == data[-64:] and data[-65] == 0x40 and end == len(data) - 66
    json.dumps(image.to_dict())


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200), st.sampled_from([None, *ImageForm]))
def test_random_bytes_raise_only_image_error(data: bytes, form: ImageForm | None) -> None:
    check_parse(data, form)


@settings(max_examples=300, deadline=None)
@given(st.binary(min_size=56, max_size=300), st.sampled_from([None, *ImageForm]))
def test_random_bytes_behind_a_magic_raise_only_image_error(tail: bytes, form: ImageForm | None) -> None:
    # Random headers with the magic right and total size fixed up reach the deeper checks.
    data = bytes.fromhex("1EF1EE0B") + tail
    check_parse(set_total_size(data, len(data)), form)


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    data = bytearray(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["flip", "set", "cut", "insert", "delete"]))
        pos = draw(st.integers(0, max(0, len(data) - 1)))
        if kind == "flip" and data:
            data[pos] ^= 1 << draw(st.integers(0, 7))
        elif kind == "set" and data:
            data[pos] = draw(st.integers(0, 255))
        elif kind == "cut":
            del data[pos:]
        elif kind == "insert":
            data[pos:pos] = draw(st.binary(min_size=1, max_size=8))
        elif kind == "delete":
            del data[pos : pos + draw(st.integers(1, 8))]
    if len(data) >= 56 and draw(st.booleans()):
        data[52:56] = len(data).to_bytes(4, "little")  # get past the size check
    return bytes(data)


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated(), st.sampled_from([None, *ImageForm]))
def test_mutated_images_raise_only_image_error(data: bytes, form: ImageForm | None) -> None:
    check_parse(data, form)


def test_image_error_survives_pickling() -> None:
    import pickle

    e = ImageError("total_size", 52, "msg", path="/x.ota")
    back = pickle.loads(pickle.dumps(e))
    assert (type(back), back.field, back.offset, back.path, str(back)) == (ImageError, "total_size", 52, "/x.ota", "msg")


@pytest.mark.parametrize(("image_type", "kind"), [(0x0084, "ppmid"), (0x0000, "hcalcs"), (0x0085, "hcalcs")])
def test_an_image_says_which_kind_of_device_it_is_for(image_type: int, kind: str) -> None:
    # The one rule the push's default simulated device and the daemon's job kind both use.
    image = parse_image(build_image(b"fw", manufacturer_code=0x121D, image_type=image_type, file_version=2))
    assert image.device_kind == kind
