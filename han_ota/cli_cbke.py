"""`han-ota cbke`: a lab's Smart Energy key-establishment tools (issue 12 item 6).

Wiring only; the crypto lives in gateway/se. Exit codes: 0 done, 1 input refused (a
file missing or unreadable, bad hex, a wrong length, a certificate or point refused,
keys that do not belong together), 2 usage (an unknown suite, a bad IEEE or issuer, a
missing or conflicting flag, an output that exists without --force). With --json every
outcome is one JSON object on stdout; a refusal's has "error".

Files: hex text, one line, upper case (what the hub's config, the simulated devices
and the specification's examples use); every input may also be the raw bytes, or, on
the command line, the hex itself. Private keys are written with mode 0600 and never
printed.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Annotated, Any, NoReturn, Optional

import typer

from gateway.files import FileRefused, read_small
from gateway.se.certificate import NO_EXPIRY, ZIGBEE_EPOCH_UNIX, ImplicitCertificate, parse_certificate, utc_text
from gateway.se.ecmqv import agree
from gateway.se.ecqv import KeyPair, issue as ecqv_issue, new_key_pair, reconstruct_public_key
from gateway.se.errors import SeError
from gateway.se.material import decode_eui64, decode_material, is_hex_text, parse_any_certificate, public_key
from gateway.se.suites import Suite, suite as suite_by_number
from han_ota.cli_app import new_app, print_json

EXIT_REFUSED = 1
EXIT_USAGE = 2
MAX_MATERIAL_BYTES = 4096  # the largest is a 74-byte certificate as hex text
SECONDS_PER_DAY = 86400

app = new_app(help="Smart Energy key establishment (CBKE) in a lab: a test CA, ECQV certificates, inspection and ECMQV derivation.")


class _Refusal(Exception):
    def __init__(self, message: str, code: int = EXIT_REFUSED) -> None:
        super().__init__(message)
        self.code = code


def _usage(message: str) -> NoReturn:
    raise _Refusal(message, EXIT_USAGE)


def _fail(exc: Exception, json_out: bool, code: int = EXIT_REFUSED) -> NoReturn:
    message = str(exc)
    if json_out:
        print_json({"error": message})
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(getattr(exc, "code", code))


def _hex(data: bytes) -> str:
    return data.hex().upper()


def _curve_tag(s: Suite) -> str:
    """The config keys' suffix: 163k1 or 283k1."""
    return s.curve.name.removeprefix("sect")


def _suite(number: int) -> Suite:
    try:
        return suite_by_number(number)
    except SeError as exc:
        _usage(f"--suite {number}: {exc}")


# --------------------------------------------------------------------------- reading inputs


def _read_file(path: Path, what: str) -> bytes:
    try:
        return read_small(path, MAX_MATERIAL_BYTES, what)
    except FileRefused as exc:
        raise _Refusal(str(exc)) from None


def _material(
    value: str,
    option: str,
    lengths: set[int] | None,
    *,
    secret: bool = False,
    prefix_suffix: str | None = None,
) -> bytes:
    """``value`` as a file (raw or hex), as PREFIX + ``prefix_suffix`` (a CA made by
    `cbke ca`), or as hex text itself. A file wins over hex that happens to name one."""
    path = Path(value)
    what = f"{option} file {value}"
    if _exists(path):
        data = _read_file(path, f"{option} file")
    elif prefix_suffix is not None and _exists(Path(value + prefix_suffix)):
        what = f"{option} file {value + prefix_suffix}"
        data = _read_file(Path(value + prefix_suffix), f"{option} file")
    elif is_hex_text(value.encode("ascii", "replace")):
        what = f"{option} (hex given on the command line)"
        data = value.encode("ascii")
    else:
        # Not echoed when it may be a private key typed in with a typo.
        shown = "the value given names no file" if secret else f"no file {value!r}"
        also = f", no CA prefix ({value}{prefix_suffix} is missing)" if prefix_suffix else ""
        raise _Refusal(f"{option}: {shown}{also}, and it is not hex text; give a file (raw or hex) or the hex itself")
    try:
        return decode_material(data, lengths, what)
    except SeError as exc:
        raise _Refusal(str(exc)) from None


def _certificate(value: str, option: str, s: Suite | None) -> ImplicitCertificate:
    raw = _material(value, option, None)
    try:
        return parse_any_certificate(raw) if s is None else parse_certificate(raw, s)
    except SeError as exc:
        raise _Refusal(f"{option}: {exc}") from None


def _ieee(text: str, option: str) -> bytes:
    try:
        return decode_eui64(text, option)
    except SeError as exc:
        _usage(str(exc))


def _issuer(text: str) -> bytes:
    try:
        return decode_eui64(text, "--issuer")  # an issuer id has an EUI-64's form
    except SeError:
        _usage(f"--issuer {text!r}: needs 16 hex digits (8 bytes), e.g. 5445535453454341")


def _exists(path: Path) -> bool:
    """Hex given on the command line may be too long for a file name: then it names none."""
    try:
        return path.exists()
    except OSError:
        return False


# --------------------------------------------------------------------------- writing outputs


def _refuse_existing(paths: list[Path], force: bool) -> None:
    if force:
        return
    for path in paths:
        if path.exists() or path.is_symlink():
            _usage(f"{path} exists; use --force to overwrite it, or another -o PREFIX")


def _write(path: Path, text: str, *, private: bool, force: bool) -> None:
    """Write a new file; a private one is 0600 from its creation (and when overwritten)."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | (0 if force else os.O_EXCL)
    fd = os.open(path, flags, 0o600 if private else 0o644)
    try:
        if private:
            os.fchmod(fd, 0o600)
        os.write(fd, text.encode("ascii"))
    finally:
        os.close(fd)


def _write_all(files: list[tuple[Path, str, bool]], force: bool) -> None:
    _refuse_existing([path for path, _, _ in files], force)
    for path, text, private in files:
        try:
            _write(path, text, private=private, force=force)
        except FileExistsError:
            _usage(f"{path} exists; use --force to overwrite it, or another -o PREFIX")
        except OSError as exc:
            _usage(f"cannot write {path}: {exc.strerror or exc}; choose a writable -o PREFIX")


def _lines(pairs: list[tuple[str, object]]) -> None:
    for label, value in pairs:
        typer.echo(f"{label + ':' if label else '':<27}{value}")


# --------------------------------------------------------------------------- the CA files


def _ca_paths(prefix: str) -> tuple[Path, Path, Path]:
    return Path(prefix + ".key"), Path(prefix + ".pub"), Path(prefix + ".ca.json")


def _load_ca(prefix: str) -> tuple[Suite, KeyPair, bytes]:
    key_path, pub_path, info_path = _ca_paths(prefix)
    made = f"make one with `han-ota cbke ca --suite N -o {prefix}`"
    for path in (info_path, key_path, pub_path):
        if not path.exists():
            raise _Refusal(f"--ca {prefix}: {path} is missing; {made}")
    try:
        info = json.loads(_read_file(info_path, "--ca file"))
        s = suite_by_number(int(info["suite"]))
        issuer = bytes.fromhex(str(info["issuer"]))
        if len(issuer) != 8:
            raise ValueError("issuer is not 8 bytes")
    except (ValueError, KeyError, TypeError) as exc:
        raise _Refusal(f"--ca {prefix}: {info_path} is not a CA description (suite, issuer): {exc}; {made}") from None
    private = _material(str(key_path), "--ca", {s.private_key_length}, secret=True)
    public = _material(str(pub_path), "--ca", {s.point_length})
    try:
        if public_key(s, private, f"--ca {key_path}") != public:
            raise _Refusal(f"--ca {prefix}: {pub_path} is not the public key of {key_path}; {made}")
    except SeError as exc:
        raise _Refusal(str(exc)) from None
    return s, KeyPair(private_key=private, public_key=public), issuer


# --------------------------------------------------------------------------- commands


JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON object.")]
SuiteOpt = Annotated[int, typer.Option("--suite", metavar="N", help="Crypto suite: 1 (sect163k1, 48-byte certificates) or 2 (sect283k1, 74-byte).")]


@app.command()
def ca(
    suite_number: SuiteOpt,
    output: Annotated[str, typer.Option("-o", "--output", metavar="PREFIX", help="Writes PREFIX.key (private key, 0600), PREFIX.pub (public key) and PREFIX.ca.json (suite and issuer).")],
    issuer: Annotated[Optional[str], typer.Option("--issuer", metavar="HEX16", help="The issuer id certificates carry (8 bytes); default random.")] = None,
    force: Annotated[bool, typer.Option("--force", help="Overwrite existing files.")] = False,
    json_out: JsonOpt = False,
) -> None:
    """Make a lab test CA: its key pair and what issuing needs. Its public key goes in the hub's ca_public_keys_283k1 or _163k1."""
    try:
        s = _suite(suite_number)
        issuer_id = os.urandom(8) if issuer is None else _issuer(issuer)
        key_path, pub_path, info_path = _ca_paths(output)
        _refuse_existing([key_path, pub_path, info_path], force)
        pair = new_key_pair(s)
        info = {"suite": s.number, "issuer": _hex(issuer_id)}
        _write_all(
            [
                (key_path, _hex(pair.private_key) + "\n", True),
                (pub_path, _hex(pair.public_key) + "\n", False),
                (info_path, json.dumps(info) + "\n", False),
            ],
            force,
        )
    except _Refusal as exc:
        _fail(exc, json_out)
    tag = _curve_tag(s)
    if json_out:
        print_json(
            {
                "suite": s.number,
                "curve": s.curve.name,
                "issuer": _hex(issuer_id),
                "public_key": _hex(pair.public_key),
                "private_key_file": str(key_path),
                "public_key_file": str(pub_path),
                "ca_file": str(info_path),
            }
        )
        return
    _lines(
        [
            ("wrote", f"{key_path} (private key, mode 0600: keep it)"),
            ("wrote", f"{pub_path} (public key)"),
            ("wrote", f"{info_path} (suite and issuer, for `cbke issue --ca {output}`)"),
            ("suite", s.name),
            ("issuer", _hex(issuer_id)),
            ("public key", _hex(pair.public_key)),
            ("hub config", f'ca_public_keys_{tag} = ["{_hex(pair.public_key)}"]'),
        ]
    )


@app.command("issue")
def issue_cmd(
    ca_prefix: Annotated[str, typer.Option("--ca", metavar="PREFIX", help="The CA made by `han-ota cbke ca -o PREFIX`.")],
    subject: Annotated[str, typer.Option("--subject", metavar="IEEE", help="The certificate's subject: the device's EUI-64 (00:0d:6f:00:0a:bc:de:f0 or 000D6F000ABCDEF0).")],
    suite_number: SuiteOpt,
    output: Annotated[str, typer.Option("-o", "--output", metavar="PREFIX", help="Writes PREFIX.cert (certificate, hex) and PREFIX.key (private key, hex, 0600).")],
    valid_days: Annotated[
        Optional[int], typer.Option("--valid-days", metavar="D", help="Suite 2: valid for D days from now; default no expiry. Suite 1 certificates carry no validity.")
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="Overwrite existing files.")] = False,
    json_out: JsonOpt = False,
) -> None:
    """Issue an implicit certificate for SUBJECT and its private key (ECQV), checked to reconstruct to the key's public point before writing."""
    try:
        s = _suite(suite_number)
        subject_id = _ieee(subject, "--subject")
        fields: dict[str, Any] = {}
        if valid_days is not None and s.number != 2:
            _usage("--valid-days: suite 1 certificates carry no validity times; drop it or use --suite 2")
        if s.number == 2:
            now = int(time.time()) - ZIGBEE_EPOCH_UNIX  # valid-from counts from 2000-01-01 UTC
            if valid_days is not None and not 0 < valid_days * SECONDS_PER_DAY < NO_EXPIRY:
                _usage(f"--valid-days {valid_days}: give 1 to {(NO_EXPIRY - 1) // SECONDS_PER_DAY} days, or leave it out for no expiry")
            # Valid-to read as seconds after valid-from (4 bytes against valid-from's 5).
            fields = {
                "serial": os.urandom(8),
                "valid_from": now,
                "valid_to": NO_EXPIRY if valid_days is None else valid_days * SECONDS_PER_DAY,
            }
        ca_suite, ca_pair, issuer_id = _load_ca(ca_prefix)
        if ca_suite.number != s.number:
            _usage(f"--ca {ca_prefix} is a suite {ca_suite.number} CA, not suite {s.number}; give --suite {ca_suite.number} or a suite-{s.number} CA")
        cert_path, key_path = Path(output + ".cert"), Path(output + ".key")
        _refuse_existing([cert_path, key_path], force)
        try:
            cert, private = ecqv_issue(s, ca_pair, subject_id, issuer_id, **fields)
            public = public_key(s, private)
            if reconstruct_public_key(cert, ca_pair.public_key) != public:
                raise _Refusal("issuance: the certificate does not reconstruct to its private key's public point; nothing written")
        except SeError as exc:
            raise _Refusal(f"issuance: {exc}") from None
        _write_all([(cert_path, _hex(cert.raw) + "\n", False), (key_path, _hex(private) + "\n", True)], force)
    except _Refusal as exc:
        _fail(exc, json_out)
    tag = _curve_tag(s)
    if json_out:
        print_json(
            {
                "suite": s.number,
                "subject": cert.subject_ieee,
                "issuer": _hex(cert.issuer),
                "certificate": _hex(cert.raw),
                "public_key": _hex(public),
                "certificate_file": str(cert_path),
                "private_key_file": str(key_path),
            }
        )
        return
    _lines(
        [
            ("wrote", f"{cert_path} (certificate, {len(cert.raw)} bytes as hex)"),
            ("wrote", f"{key_path} (private key, mode 0600)"),
            ("suite", s.name),
            ("subject", cert.subject_ieee),
            ("issuer", _hex(cert.issuer)),
            ("public key", f"{_hex(public)} (reconstructs from the certificate with the CA's key: checked)"),
            ("as the hub's", f'certificate_{tag} = "{cert_path}"'),
            ("", f'private_key_{tag} = "{key_path}"'),
        ]
    )


def _certificate_fields(cert: ImplicitCertificate) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "suite": cert.suite.number,
        "curve": cert.suite.curve.name,
        "length": len(cert.raw),
        "certificate": _hex(cert.raw),
    }
    if cert.suite.number == 1:
        fields.update(
            reconstruction_point=_hex(cert.reconstruction_point),
            subject=cert.subject_ieee,
            issuer=_hex(cert.issuer),
            profile_attributes=_hex(cert.profile_attributes or b""),
        )
        return fields
    # Suite 2 certificates have every one of these; "or 0" only satisfies the types.
    valid_from, valid_to = cert.valid_from or 0, cert.valid_to or 0
    start, until = cert.validity or (0, None)
    fields.update(
        type=f"0x{cert.cert_type or 0:02X}",
        serial=_hex(cert.serial or b""),
        curve_id=f"0x{cert.curve_id:02X}",
        hash_id=f"0x{cert.hash_id:02X}",
        issuer=_hex(cert.issuer),
        valid_from=valid_from,
        valid_from_utc=utc_text(start),
        valid_to=valid_to,
        valid_until_utc=None if until is None else utc_text(until),
        subject=cert.subject_ieee,
        key_usage=f"0x{cert.key_usage or 0:02X}",
        key_agreement=cert.allows_key_agreement,
        reconstruction_point=_hex(cert.reconstruction_point),
    )
    return fields


# (label, field, offset) in certificate order, for the text report.
_S1_ROWS = [("reconstruction point", "reconstruction_point", 0), ("subject", "subject", 22), ("issuer", "issuer", 30), ("profile attributes", "profile_attributes", 38)]
_S2_ROWS = [
    ("type", "type", 0), ("serial", "serial", 1), ("curve", "curve_id", 9), ("hash", "hash_id", 10),
    ("issuer", "issuer", 11), ("valid from", "valid_from", 19), ("valid to", "valid_to", 24),
    ("subject", "subject", 28), ("key usage", "key_usage", 36), ("reconstruction point", "reconstruction_point", 37),
]  # fmt: skip


def _shown(fields: dict[str, Any], name: str) -> object:
    value = fields[name]
    if name == "type":
        return f"{value} (implicit)"
    if name == "curve_id":
        return f"{value} (sect283k1)"
    if name == "hash_id":
        return f"{value} (AES-MMO)"
    if name == "valid_from":
        return f"{value} ({fields['valid_from_utc']})"
    if name == "valid_to":
        if value == NO_EXPIRY:
            return "0xFFFFFFFF (no expiry)"
        return f"{value} s after valid from (until {fields['valid_until_utc']})"
    if name == "key_usage":
        return f"{value} ({'key agreement' if fields['key_agreement'] else 'NO key agreement: a trust center refuses it'})"
    return value


@app.command()
def inspect(
    cert_arg: Annotated[str, typer.Argument(metavar="CERT", help="Certificate: a file (raw or hex) or the hex itself; 48 bytes is suite 1, 74 suite 2.")],
    ca_key: Annotated[Optional[str], typer.Option("--ca", metavar="KEY", help="CA public key (file, hex, or a `cbke ca` PREFIX): also print the reconstructed public key.")] = None,
    json_out: JsonOpt = False,
) -> None:
    """Print every field of an implicit certificate and, with --ca, the public key it reconstructs to."""
    try:
        cert = _certificate(cert_arg, "CERT", None)
        fields = _certificate_fields(cert)
        reconstructed: bytes | None = None
        ca_public: bytes | None = None
        if ca_key is not None:
            ca_public = _material(ca_key, "--ca", {cert.suite.point_length}, prefix_suffix=".pub")
            try:
                reconstructed = reconstruct_public_key(cert, ca_public)
            except SeError as exc:
                raise _Refusal(f"reconstruction with --ca: {exc}") from None
    except _Refusal as exc:
        _fail(exc, json_out)
    fields["ca_public_key"] = None if ca_public is None else _hex(ca_public)
    fields["public_key"] = None if reconstructed is None else _hex(reconstructed)
    if json_out:
        print_json(fields)
        return
    rows = _S1_ROWS if cert.suite.number == 1 else _S2_ROWS
    pairs: list[tuple[str, object]] = [("suite", f"{cert.suite.name}, told by its length ({fields['length']} bytes)")]
    pairs += [(f"{label} @{offset}", _shown(fields, name)) for label, name, offset in rows]
    pairs.append(("public key", fields["public_key"] or "not reconstructed (give --ca KEY)"))
    _lines(pairs)


@app.command()
def derive(
    suite_number: SuiteOpt,
    ca_key: Annotated[str, typer.Option("--ca", metavar="CA", help="CA public key (file, hex, or a `cbke ca` PREFIX) that issued both certificates.")],
    cert_arg: Annotated[str, typer.Option("--cert", metavar="C", help="Own certificate (file or hex); its subject is the own IEEE.")],
    key_arg: Annotated[str, typer.Option("--key", metavar="K", help="Own static private key (file or hex).")],
    ephemeral_key: Annotated[str, typer.Option("--ephemeral-key", metavar="EK", help="Own ephemeral private key (file or hex).")],
    peer_cert: Annotated[str, typer.Option("--peer-cert", metavar="PC", help="Peer's certificate (file or hex); its subject is the peer IEEE.")],
    peer_ephemeral: Annotated[str, typer.Option("--peer-ephemeral", metavar="EP", help="Peer's ephemeral public key, compressed (file or hex).")],
    initiator: Annotated[bool, typer.Option("--initiator", help="Own side initiated key establishment (U).")] = False,
    responder: Annotated[bool, typer.Option("--responder", help="Own side responded (V, the trust center's role).")] = False,
    json_out: JsonOpt = False,
) -> None:
    """ECMQV as one side of a key establishment: print Z, MacKey, KeyData (the APS link key), MACU and MACV, to check an exchange against a capture."""
    try:
        s = _suite(suite_number)
        if initiator == responder:
            _usage("give exactly one of --initiator and --responder")
        ca_public = _material(ca_key, "--ca", {s.point_length}, prefix_suffix=".pub")
        own_cert = _certificate(cert_arg, "--cert", s)
        own_key = _material(key_arg, "--key", {s.private_key_length}, secret=True)
        eph_key = _material(ephemeral_key, "--ephemeral-key", {s.private_key_length}, secret=True)
        other = _certificate(peer_cert, "--peer-cert", s)
        peer_eph = _material(peer_ephemeral, "--peer-ephemeral", {s.point_length})
        try:
            own_public = public_key(s, own_key, "--key")
            eph_public = public_key(s, eph_key, "--ephemeral-key")
            if reconstruct_public_key(own_cert, ca_public) != own_public:
                raise _Refusal("--cert does not carry --key's public key under --ca: wrong key, certificate or CA")
            peer_public = reconstruct_public_key(other, ca_public)
            result = agree(
                s,
                initiator=initiator,
                own_static_private=own_key,
                own_ephemeral_private=eph_key,
                own_ephemeral_public=eph_public,
                own_ieee=own_cert.subject,
                peer_static_public=peer_public,
                peer_ephemeral_public=peer_eph,
                peer_ieee=other.subject,
            )
        except SeError as exc:
            raise _Refusal(str(exc)) from None
    except _Refusal as exc:
        _fail(exc, json_out)
    report = {
        "suite": s.number,
        "role": "initiator" if initiator else "responder",
        "own_ieee": own_cert.subject_ieee,
        "peer_ieee": other.subject_ieee,
        "own_ephemeral_public_key": _hex(eph_public),
        "peer_public_key": _hex(peer_public),
        "z": _hex(result.z),
        "mac_key": _hex(result.mac_key),
        "key_data": _hex(result.key_data),
        "macu": _hex(result.macu),
        "macv": _hex(result.macv),
    }
    if json_out:
        print_json(report)
        return
    _lines(
        [
            ("role", f"{report['role']} ({'U' if initiator else 'V'}), {s.name}"),
            ("own IEEE", report["own_ieee"]),
            ("peer IEEE", report["peer_ieee"]),
            ("own ephemeral public", report["own_ephemeral_public_key"]),
            ("peer public key", f"{report['peer_public_key']} (reconstructed)"),
            ("Z", report["z"]),
            ("MacKey", report["mac_key"]),
            ("KeyData", f"{report['key_data']} (the APS link key)"),
            ("MACU", report["macu"]),
            ("MACV", report["macv"]),
        ]
    )


__all__ = ["app"]
