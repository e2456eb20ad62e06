# SPDX-License-Identifier: GPL-3.0-or-later
"""`han-ota image inspect|build` through typer's CliRunner on the sub-app."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from typer.testing import CliRunner

import han_ota.cli_image as cli_image
from gateway.image import ImageForm, load_image, load_trust_anchor, verify_image_signature
from han_ota.cli_image import app

GBCS_DIR = Path(__file__).parents[1] / "data" / "gbcs"
SR11_1 = GBCS_DIR / "sr11.1-firmware-image.bin"
SR11_4 = GBCS_DIR / "sr11.4-ppmid-firmware-image.bin"
CERT = GBCS_DIR / "supplier-90b3d51f30010000-ds.pem"
SUPPLIER_KEY = GBCS_DIR / "supplier-90b3d51f30010000-ds.key"
SAMPLE_HASH = "7542f475e3f12eae887d81e32c46d313741d67076b13caec2f82e00ba5e1bb36"

runner = CliRunner()


def run(*args: object):
    return runner.invoke(app, [str(a) for a in args])


def flat(text: str) -> str:
    """Usage errors come boxed and wrapped by rich: compare words, not layout."""
    return " ".join(text.replace("│", " ").replace("╭", " ").replace("╰", " ").split())


def field_line(stdout: str, name: str) -> str:
    match = re.search(rf"^{re.escape(name)}\s+(.*)$", stdout, re.MULTILINE)
    assert match, f"no {name!r} line in:\n{stdout}"
    return match.group(1)


@pytest.fixture
def other_key_pem(tmp_path: Path) -> Path:
    path = tmp_path / "other.pub.pem"
    path.write_bytes(
        ec.generate_private_key(ec.SECP256R1())
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    return path


# --- inspect -------------------------------------------------------------------------


def test_inspect_text_shows_every_field() -> None:
    result = run("inspect", SR11_1)
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert field_line(out, "form") == "gbcs"
    assert field_line(out, "size") == "361 bytes"
    assert field_line(out, "header_version") == "0x0100 (256)"
    assert field_line(out, "header_length") == "60"
    assert field_line(out, "field_control") == "0x0004 (hardware_versions)"
    assert field_line(out, "manufacturer_code") == "0x121D (4637)"
    assert field_line(out, "image_type") == "0x0000 (0)"
    assert field_line(out, "file_version") == "0xACDCACDC (2900143324)"
    assert field_line(out, "stack_version") == "0x0002 (2)"
    assert field_line(out, "header_string") == "'I am a GFI ESME[] firmware image'"
    assert field_line(out, "total_size") == "361"
    assert field_line(out, "security_credential_version") == "-"
    assert field_line(out, "destination") == "-"
    assert field_line(out, "min_hardware_version") == "0x1111 (version 17, revision 17)"
    assert field_line(out, "max_hardware_version") == "0x1211 (version 18, revision 17)"
    assert field_line(out, "manufacturer_image") == "offset 60, 235 bytes"
    assert field_line(out, "manufacturer_image_hash") == SAMPLE_HASH
    assert field_line(out, "ch_byte") == "0x00"
    assert field_line(out, "signature").startswith("present, r=0eb4a9c7")
    assert "signature_valid" not in out
    assert result.stderr == ""


def test_inspect_with_trust_verifies() -> None:
    result = run("inspect", SR11_1, "--trust", CERT)
    assert result.exit_code == 0, result.output
    assert field_line(result.stdout, "signature_valid").startswith("yes")


def test_inspect_json_with_trust() -> None:
    result = run("inspect", SR11_1, "--trust", CERT, "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["valid"] is True
    assert report["signature_valid"] is True
    assert "error" not in report
    assert report["form"] == "gbcs"
    assert report["manufacturer_image_hash"] == SAMPLE_HASH
    assert report["file_version"] == 0xACDCACDC
    assert report["signature"] == SR11_1.read_bytes()[-64:].hex()


def test_inspect_json_without_trust_has_null_verdict() -> None:
    result = run("inspect", SR11_4, "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert (report["valid"], report["signature_valid"], report["form"]) == (True, None, "unsigned")
    assert report["image_type"] == 0x0084


def test_inspect_wrong_trust_anchor_fails_verification(other_key_pem: Path) -> None:
    result = run("inspect", SR11_1, "--trust", other_key_pem)
    assert result.exit_code == 3
    assert field_line(result.stdout, "signature_valid").startswith("NO")
    assert result.stderr == f"error: {SR11_1}: signature does not verify with {other_key_pem}\n"

    result = run("inspect", SR11_1, "--trust", other_key_pem, "--json")
    assert result.exit_code == 3
    report = json.loads(result.stdout)
    assert (report["valid"], report["signature_valid"]) == (True, False)
    assert "does not verify" in report["error"]


def test_inspect_tampered_image_with_its_supplier_certificate_exits_3(tmp_path: Path) -> None:
    # One byte of the Manufacturer Image flipped, the signature kept (issue 11 item 7).
    data = bytearray(SR11_1.read_bytes())
    data[100] ^= 0x01
    bad = tmp_path / "tampered.bin"
    bad.write_bytes(bytes(data))
    result = run("inspect", bad, "--trust", CERT)
    assert result.exit_code == 3
    assert field_line(result.stdout, "signature_valid").startswith("NO")
    assert result.stderr == f"error: {bad}: signature does not verify with {CERT}\n"

    result = run("inspect", bad, "--trust", CERT, "--json")
    assert result.exit_code == 3
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert (report["valid"], report["signature_valid"]) == (True, False)
    assert report["error"] == f"{bad}: signature does not verify with {CERT}"


def test_inspect_unsigned_image_with_trust_does_not_verify() -> None:
    result = run("inspect", SR11_4, "--trust", CERT)
    assert result.exit_code == 3
    assert "no signature to verify (unsigned form)" in result.stderr


def test_inspect_refused_image(tmp_path: Path) -> None:
    cut = tmp_path / "cut.ota"
    cut.write_bytes(SR11_1.read_bytes()[:57])
    result = run("inspect", cut)
    assert result.exit_code == 1
    assert result.stdout == ""
    assert result.stderr == (
        f"error: {cut}: truncated at offset 56: header field 'min_hardware_version' needs 2 bytes, file has 1\n"
    )

    result = run("inspect", cut, "--json")
    assert result.exit_code == 1
    report = json.loads(result.stdout)
    assert report["valid"] is False
    assert report["signature_valid"] is None
    assert (report["error_field"], report["error_offset"]) == ("min_hardware_version", 56)
    assert "truncated at offset 56" in report["error"]


def test_inspect_trailing_byte(tmp_path: Path) -> None:
    path = tmp_path / "trailing.ota"
    path.write_bytes(SR11_1.read_bytes() + b"\x00")
    result = run("inspect", path, "--json")
    assert result.exit_code == 1
    report = json.loads(result.stdout)
    assert (report["error_field"], report["error_offset"]) == ("total_size", 52)


def test_inspect_missing_file(tmp_path: Path) -> None:
    result = run("inspect", tmp_path / "nope.ota")
    assert result.exit_code == 1
    assert result.stderr == f"error: {tmp_path / 'nope.ota'}: No such file or directory\n"


def test_inspect_forced_form() -> None:
    result = run("inspect", SR11_1, "--form", "unsigned")
    assert result.exit_code == 0, result.output
    assert field_line(result.stdout, "form") == "unsigned"
    assert field_line(result.stdout, "manufacturer_image") == "offset 60, 301 bytes"

    result = run("inspect", SR11_1, "--form", "zigbee", "--json")
    assert result.exit_code == 1
    report = json.loads(result.stdout)
    assert (report["error_field"], report["error_offset"]) == ("subelement[0].length", 62)


def test_inspect_bad_trust_anchor_file() -> None:
    result = run("inspect", SR11_1, "--trust", SUPPLIER_KEY)
    assert result.exit_code == 1
    assert result.stderr.startswith(f"error: {SUPPLIER_KEY}: ")
    assert "private key" in result.stderr


# --- build ---------------------------------------------------------------------------


@pytest.fixture
def payload(tmp_path: Path) -> Path:
    path = tmp_path / "payload.bin"
    path.write_bytes(b"bench firmware " * 20)
    return path


def test_build_gbcs_then_inspect(tmp_path: Path, payload: Path) -> None:
    out = tmp_path / "signed.ota"
    result = run(
        "build", payload, "--manufacturer", "0x121D", "--image-type", "0", "--version", "0xACDCACDD",
        "--gbcs", "--key", SUPPLIER_KEY, "--ch-byte", "0x5A", "--min-hw", "0x1111", "--max-hw", "4625",
        "--header-string", "bench build", "-o", out,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    digest = hashlib.sha256(payload.read_bytes()).hexdigest()
    size = 60 + 300 + 66
    assert result.stdout == (
        f"wrote {out}: {size} bytes, gbcs form, manufacturer image 300 bytes at offset 60, sha256 {digest}\n"
    )
    assert result.stderr == ""
    assert out.stat().st_size == size

    inspected = run("inspect", out, "--trust", CERT, "--json")
    assert inspected.exit_code == 0, inspected.output
    report = json.loads(inspected.stdout)
    assert report["form"] == "gbcs"
    assert report["signature_valid"] is True
    assert (report["manufacturer_code"], report["file_version"]) == (0x121D, 0xACDCACDD)
    assert (report["min_hardware_version"], report["max_hardware_version"]) == (0x1111, 4625)
    assert (report["ch_byte"], report["header_string"]) == (0x5A, "bench build")
    assert report["manufacturer_image_hash"] == digest


@pytest.mark.parametrize(("flags", "form"), [((), ImageForm.UNSIGNED), (("--zigbee-subelement",), ImageForm.ZIGBEE)])
def test_build_unsigned_and_zigbee(tmp_path: Path, payload: Path, flags: tuple[str, ...], form: ImageForm) -> None:
    out = tmp_path / "image.ota"
    result = run("build", payload, "--manufacturer", "4660", "--image-type", "0x84", "--version", "7", *flags, "-o", out)
    assert result.exit_code == 0, result.output
    assert f"{form.value} form" in result.stdout
    image = load_image(out)
    assert image.form is form
    assert (image.manufacturer_code, image.image_type, image.file_version, image.stack_version) == (
        0x1234, 0x84, 7, 2
    )
    assert image.manufacturer_image == payload.read_bytes()
    assert not verify_image_signature(image, load_trust_anchor(CERT))


def test_build_replaces_atomically_and_leaves_no_temp_files(tmp_path: Path, payload: Path) -> None:
    out = tmp_path / "image.ota"
    out.write_bytes(b"old")
    result = run("build", payload, "--manufacturer", "1", "--image-type", "2", "--version", "3", "-o", out)
    assert result.exit_code == 0, result.output
    assert load_image(out).manufacturer_image == payload.read_bytes()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["image.ota", "payload.bin"]


def test_build_write_failure_keeps_the_old_file(
    tmp_path: Path, payload: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "image.ota"
    out.write_bytes(b"old")

    def broken_fsync(fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(cli_image.os, "fsync", broken_fsync)
    result = run("build", payload, "--manufacturer", "1", "--image-type", "2", "--version", "3", "-o", out)
    assert result.exit_code == 1
    assert "No space left on device" in result.stderr
    assert out.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["image.ota", "payload.bin"]


def test_build_gbcs_without_key_is_a_usage_error(tmp_path: Path, payload: Path) -> None:
    out = tmp_path / "x.ota"
    result = run("build", payload, "--manufacturer", "1", "--image-type", "2", "--version", "3", "--gbcs", "-o", out)
    assert result.exit_code == 2
    assert "--gbcs needs --key KEY" in flat(result.output)
    assert not out.exists()


@pytest.mark.parametrize(
    ("extra", "words"),
    [
        (("--key", str(SUPPLIER_KEY)), "--key is used only with --gbcs"),
        (("--ch-byte", "1"), "--ch-byte is used only with --gbcs"),
        (("--min-hw", "1"), "--min-hw and --max-hw go together"),
        (("--gbcs", "--key", str(SUPPLIER_KEY), "--zigbee-subelement"), "exclusive"),
    ],
)
def test_build_usage_errors(tmp_path: Path, payload: Path, extra: tuple[str, ...], words: str) -> None:
    out = tmp_path / "x.ota"
    result = run("build", payload, "--manufacturer", "1", "--image-type", "2", "--version", "3", *extra, "-o", out)
    assert result.exit_code == 2
    assert words in flat(result.output)
    assert not out.exists()


@pytest.mark.parametrize(
    ("option", "value", "words"),
    [
        ("--manufacturer", "0x10000", "outside 0..0xFFFF"),
        ("--manufacturer", "-1", "outside 0..0xFFFF"),
        ("--version", "0xZZ", "is not a number"),
        ("--image-type", "ten", "is not a number"),
    ],
)
def test_build_bad_numbers(tmp_path: Path, payload: Path, option: str, value: str, words: str) -> None:
    args = {"--manufacturer": "1", "--image-type": "2", "--version": "3", option: value}
    flat_args = [x for kv in args.items() for x in kv]
    result = run("build", payload, *flat_args, "-o", tmp_path / "x.ota")
    assert result.exit_code == 2
    assert words in flat(result.output)


def test_build_refusals_exit_1(tmp_path: Path, payload: Path) -> None:
    out = tmp_path / "x.ota"
    base = ("--manufacturer", "1", "--image-type", "2", "--version", "3", "-o", out)
    result = run("build", payload, *base, "--header-string", "x" * 33)
    assert (result.exit_code, result.stderr) == (1, "error: header_string is 33 bytes in UTF-8; the header holds 32\n")

    empty = tmp_path / "empty.bin"
    empty.write_bytes(b"")
    result = run("build", empty, *base)
    assert result.exit_code == 1 and "payload is empty" in result.stderr

    result = run("build", tmp_path / "missing.bin", *base)
    assert result.exit_code == 1 and "No such file or directory" in result.stderr

    result = run("build", payload, *base[:-2], "--gbcs", "--key", CERT, "-o", out)
    assert result.exit_code == 1 and f"error: {CERT}: not an unencrypted PEM private key" in result.stderr
    assert not out.exists()

    # An output in a directory that is not there names the output, not our temporary file.
    nowhere = tmp_path / "no" / "x.ota"
    result = run("build", payload, *base[:-1], nowhere)
    assert (result.exit_code, result.stderr) == (1, f"error: cannot write {nowhere}: the directory {nowhere.parent} does not exist\n")


def test_build_warns_when_detection_would_misread(tmp_path: Path) -> None:
    tricky = tmp_path / "tricky.bin"
    tricky.write_bytes(b"raw" + b"\x00\x40" + bytes(64))
    out = tmp_path / "tricky.ota"
    result = run("build", tricky, "--manufacturer", "1", "--image-type", "2", "--version", "3", "-o", out)
    assert result.exit_code == 0, result.output
    assert "looks like the gbcs form" in result.stderr and "--form unsigned" in result.stderr
    inspected = run("inspect", out, "--form", "unsigned", "--json")
    assert json.loads(inspected.stdout)["manufacturer_image_length"] == 69
