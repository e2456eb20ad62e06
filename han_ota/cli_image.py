# SPDX-License-Identifier: GPL-3.0-or-later
"""`han-ota image`: inspect and build firmware images. Wiring only; see gateway/image.py.

Exit codes: 0 ok, 1 image (or key, or file) refused, 2 usage error,
3 image parsed but its signature does not verify with --trust.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, NoReturn, Optional

import typer

from eui64 import Eui64
from gateway.image import (
    DEFAULT_MAX_SIZE,
    FirmwareImage,
    ImageError,
    ImageForm,
    load_image,
    parse_image,
    verify_image_signature,
)
from gateway.image_build import build_image
from gateway.gbcs.keys import read_signing_key, read_verifying_pem
from han_ota.cli_app import new_app, print_json

EXIT_REFUSED = 1
EXIT_SIGNATURE = 3

app = new_app(help="Inspect and build firmware images: Zigbee OTA files and the GBCS signed form.")


def _number(bits: int) -> Callable[[str], int]:
    """A parser for 0x-hex or decimal numbers that fit in `bits` unsigned bits."""

    def parse(text: str | int) -> int:
        if isinstance(text, int):  # typer passes defaults through the parser too
            value = text
        else:
            s = text.strip().lower().replace("_", "")
            try:
                value = int(s[2:], 16) if s.startswith("0x") else int(s, 10)
            except ValueError:
                raise typer.BadParameter(f"{text!r} is not a number (decimal or 0x hex)") from None
        if not 0 <= value < (1 << bits):
            raise typer.BadParameter(f"{text} is outside 0..0x{(1 << bits) - 1:X}")
        return value

    return parse


def _fail(message: str, code: int, report: dict[str, Any] | None = None) -> NoReturn:
    if report is not None:
        report["error"] = message
        print_json(report)
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def _os_error(e: OSError) -> str:
    return f"{e.filename}: {e.strerror}" if e.filename else str(e)


def _num(value: int, width: int) -> str:
    return f"0x{value:0{width}X} ({value})"


def _hw(value: int | None) -> str:
    if value is None:
        return "-"
    return f"0x{value:04X} (version {value >> 8}, revision {value & 0xFF})"


def _describe(image: FirmwareImage, path: Path) -> list[str]:
    d = image.to_dict()
    flags = ", ".join(d["field_control_flags"]) or "none"
    rows: list[tuple[str, str]] = [
        ("file", str(path)),
        ("size", f"{image.size} bytes"),
        ("form", image.form.value),
        ("header_version", _num(image.header_version, 4)),
        ("header_length", str(image.header_length)),
        ("field_control", f"0x{image.field_control:04X} ({flags})"),
        ("manufacturer_code", _num(image.manufacturer_code, 4)),
        ("image_type", _num(image.image_type, 4)),
        ("file_version", _num(image.file_version, 8)),
        ("stack_version", _num(image.stack_version, 4)),
        ("header_string", repr(image.header_string)),
        ("total_size", str(image.total_size)),
        (
            "security_credential_version",
            "-" if image.security_credential_version is None else _num(image.security_credential_version, 2),
        ),
        ("destination", "-" if image.destination is None else str(Eui64(image.destination)).upper()),
        ("min_hardware_version", _hw(image.min_hardware_version)),
        ("max_hardware_version", _hw(image.max_hardware_version)),
        ("manufacturer_image", f"offset {image.manufacturer_image_offset}, {image.manufacturer_image_length} bytes"),
        ("manufacturer_image_hash", image.manufacturer_image_hash.hex()),
    ]
    if image.form is ImageForm.GBCS:
        assert image.signature is not None and image.ch_byte is not None
        rows.append(("ch_byte", f"0x{image.ch_byte:02X}"))
        rows.append(("signature", f"present, r={image.signature[:32].hex()}"))
        rows.append(("", f"s={image.signature[32:].hex()}"))
    else:
        rows.append(("signature", "none"))
    if image.subelements:
        rows.append(("subelements", str(len(image.subelements))))
        for s in image.subelements:
            rows.append(("", f"tag 0x{s.tag:04X} {s.name}: offset {s.offset}, {s.length} bytes of data"))
    width = max(len(k) for k, _ in rows)
    return [f"{k:<{width}}  {v}" for k, v in rows]


@app.command()
def inspect(
    file: Annotated[Path, typer.Argument(metavar="FILE", help="the image file", show_default=False)],
    trust: Annotated[
        Optional[Path],
        typer.Option("--trust", help="supplier certificate or public key (PEM) to verify the GBCS signature"),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print one JSON object instead of text")] = False,
    form: Annotated[
        Optional[ImageForm],
        typer.Option("--form", case_sensitive=False, help="read the image as this form instead of detecting it"),
    ] = None,
) -> None:
    """Print every header field, the form, the manufacturer image and its hash."""
    report: dict[str, Any] | None = (
        {"file": str(file), "valid": False, "signature_valid": None} if as_json else None
    )
    try:
        image = load_image(file, form=form)
    except ImageError as e:
        if report is not None:
            report.update(error_field=e.field, error_offset=e.offset)
        _fail(str(e), EXIT_REFUSED, report)
    except OSError as e:
        _fail(_os_error(e), EXIT_REFUSED, report)

    verdict: bool | None = None
    problem: str | None = None
    if trust is not None:
        try:
            key = read_verifying_pem(trust).public_key
        except ValueError as e:  # KeyRefused: names the file, what is wrong and the fix
            problem = str(e)
        else:
            verdict = verify_image_signature(image, key)
            if not verdict:
                problem = (
                    f"{file}: signature does not verify with {trust}"
                    if image.signature is not None
                    else f"{file}: no signature to verify ({image.form.value} form)"
                )

    if report is not None:
        report.update(valid=True, signature_valid=verdict, **image.to_dict())
        if problem is not None:
            report["error"] = problem
        print_json(report)
    else:
        for line in _describe(image, file):
            typer.echo(line)
        if verdict is not None:
            typer.echo(f"signature_valid  {'yes' if verdict else 'NO'} (trust anchor {trust})")
    if problem is not None:
        typer.echo(f"error: {problem}", err=True)
        raise typer.Exit(EXIT_SIGNATURE if verdict is False else EXIT_REFUSED)


def _write_atomic(path: Path, data: bytes) -> None:
    """Write beside the target, then rename: readers see the old file or the whole new one."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


@app.command()
def build(
    ctx: typer.Context,
    payload: Annotated[Path, typer.Argument(metavar="PAYLOAD", help="file holding the manufacturer image", show_default=False)],
    manufacturer: Annotated[int, typer.Option("--manufacturer", parser=_number(16), metavar="N", help="manufacturer code")],
    image_type: Annotated[int, typer.Option("--image-type", parser=_number(16), metavar="N", help="image type (0x0000-0xFFBF manufacturer-specific)")],
    version: Annotated[int, typer.Option("--version", parser=_number(32), metavar="N", help="file version")],
    output: Annotated[Path, typer.Option("-o", "--output", help="where to write the image", show_default=False)],
    gbcs: Annotated[bool, typer.Option("--gbcs", help="GBCS form: append CH byte, 0x40 and the supplier signature")] = False,
    key: Annotated[
        Optional[Path], typer.Option("--key", help="supplier P-256 private key (PEM) for --gbcs")
    ] = None,
    ch_byte: Annotated[
        Optional[int], typer.Option("--ch-byte", parser=_number(8), metavar="N", help="with --gbcs; default 0")
    ] = None,
    zigbee: Annotated[
        bool, typer.Option("--zigbee-subelement", help="wrap the payload as an upgrade-image sub-element (tag 0x0000)")
    ] = False,
    min_hw: Annotated[Optional[int], typer.Option("--min-hw", parser=_number(16), metavar="N", help="minimum hardware version (adds the header field)")] = None,
    max_hw: Annotated[Optional[int], typer.Option("--max-hw", parser=_number(16), metavar="N", help="maximum hardware version (adds the header field)")] = None,
    stack_version: Annotated[int, typer.Option("--stack-version", parser=_number(16), metavar="N", help="Zigbee stack version in the header (2: Zigbee PRO)")] = 2,
    header_string: Annotated[str, typer.Option("--header-string", help="up to 32 bytes of UTF-8")] = "",
) -> None:
    """Wrap PAYLOAD in an OTA header (and, with --gbcs, sign it) and write the image."""
    if gbcs and key is None:
        ctx.fail("--gbcs needs --key KEY: the supplier's P-256 private key (PEM) to sign with")
    if key is not None and not gbcs:
        ctx.fail("--key is used only with --gbcs")
    if ch_byte is not None and not gbcs:
        ctx.fail("--ch-byte is used only with --gbcs")
    if gbcs and zigbee:
        ctx.fail("--gbcs and --zigbee-subelement are exclusive: the GBCS form has no sub-elements")
    if (min_hw is None) != (max_hw is None):
        ctx.fail("--min-hw and --max-hw go together: the header has one flag for both")

    try:
        with payload.open("rb") as f:
            data = f.read(DEFAULT_MAX_SIZE + 1)
        signing_key = read_signing_key(key) if key is not None else None
    except OSError as e:
        _fail(_os_error(e), EXIT_REFUSED)
    except ValueError as e:
        _fail(str(e), EXIT_REFUSED)

    try:
        image_bytes = build_image(
            data,
            manufacturer_code=manufacturer,
            image_type=image_type,
            file_version=version,
            stack_version=stack_version,
            header_string=header_string,
            min_hw=min_hw,
            max_hw=max_hw,
            gbcs_key=signing_key,
            ch_byte=ch_byte or 0,
            zigbee_subelement=zigbee,
        )
    except ValueError as e:
        _fail(str(e), EXIT_REFUSED)

    form = ImageForm.GBCS if gbcs else ImageForm.ZIGBEE if zigbee else ImageForm.UNSIGNED
    image = parse_image(image_bytes, form=form)  # what we wrote must read back as built
    try:
        _write_atomic(output, image_bytes)
    except OSError as e:
        # The temporary file is ours, not the user's: name what they asked for.
        why = e.strerror or str(e)
        if not output.parent.is_dir():
            why = f"the directory {output.parent} does not exist"
        _fail(f"cannot write {output}: {why}", EXIT_REFUSED)

    typer.echo(
        f"wrote {output}: {image.size} bytes, {form.value} form, manufacturer image "
        f"{image.manufacturer_image_length} bytes at offset {image.manufacturer_image_offset}, "
        f"sha256 {image.manufacturer_image_hash.hex()}"
    )
    detected = parse_image(image_bytes).form
    if detected is not form:
        typer.echo(
            f"warning: read without --form, this file looks like the {detected.value} form; "
            f"inspect it with --form {form.value}",
            err=True,
        )
