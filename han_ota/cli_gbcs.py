# SPDX-License-Identifier: GPL-3.0-or-later
"""`han-ota gbcs`: verify, sign and make keys for GBCS activation commands.

Wiring only; the protocol lives in gateway/gbcs. Exit codes: 0 valid (or written),
1 command refused or malformed, 2 usage error (bad option, unreadable key or anchor).
"""

from __future__ import annotations

import datetime as dt
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, NoReturn, Optional

import typer

from gateway.gbcs import (
    EntityId,
    GbcsError,
    GbcsUsageError,
    MalformedCommand,
    Reason,
    SignedCommand,
    TrustStore,
    Verdict,
    encode_hex_text,
    generate_supplier_identity,
    iso_utc,
    message_label,
    parse_command_file,
    read_anchor,
    sign_activation,
    verify_activation,
)
from gateway.files import FileRefused, read_small
from gateway.gbcs.keys import read_signing_key
from han_ota.cli_app import new_app

EXIT_REFUSED = 1
EXIT_USAGE = 2
MAX_COMMAND_BYTES = 64 * 1024  # a CS06 is a few hundred bytes, even as hex text

app = new_app(help="Verify, sign and make keys for GBCS CS06 Activate Firmware commands.")


# --------------------------------------------------------------------------- parsing options


def _usage(message: str, param: str | None = None) -> NoReturn:
    raise typer.BadParameter(message, param_hint=param)


def _unreadable(message: str, json_out: bool) -> NoReturn:
    """CMD cannot be read (missing, a directory, a FIFO): refused like a bad command."""
    if json_out:
        typer.echo(json.dumps({"valid": False, "message": message, "error": message}))
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(EXIT_REFUSED)


def _entity(text: str, param: str) -> EntityId:
    try:
        return EntityId.parse(text)
    except GbcsUsageError as exc:
        _usage(str(exc), param)


def _hash(text: str, param: str = "--hash") -> bytes:
    digits = text.strip()
    if len(digits) != 64 or any(c not in "0123456789abcdefABCDEF" for c in digits):
        _usage(f"expected 64 hex digits (a SHA-256 Manufacturer Image Hash), got {text!r}", param)
    return bytes.fromhex(digits)


def _utc_time(text: str) -> dt.datetime:
    """ISO 8601 with an explicit UTC offset (``Z`` or ``+00:00``), whole seconds."""
    try:
        when = dt.datetime.fromisoformat(text.strip())
    except ValueError:
        _usage(f"{text!r} is not ISO 8601 (e.g. 2030-01-15T09:00:00Z)", "--at")
    if when.tzinfo is None or when.utcoffset() != dt.timedelta(0):
        _usage(f"{text!r} must be UTC, ending in Z (e.g. 2030-01-15T09:00:00Z)", "--at")
    if when.microsecond:
        _usage(f"{text!r}: GBCS execution times have whole seconds", "--at")
    return when


@dataclass(frozen=True)
class _Anchor:
    entity: EntityId
    path: str
    how: str  # where the entity id came from, for the report


def _resolve_trust(specs: list[str], originator: EntityId) -> tuple[TrustStore, list[_Anchor]]:
    """Each ``--trust`` is ``PATH`` or ``ID=PATH``.

    The entity id is the explicit ID, else the certificate's x500UniqueIdentifier,
    else (a bare public key, given alone) the command's originator.
    """
    keys: dict[EntityId, Any] = {}
    anchors: list[_Anchor] = []
    for spec in specs:
        explicit: EntityId | None = None
        path = spec
        head, sep, tail = spec.partition("=")
        if sep:
            try:
                explicit, path = EntityId.parse(head), tail
            except GbcsUsageError:
                pass  # an '=' inside a path: take it all as the path
        try:
            anchor = read_anchor(path)
        except GbcsUsageError as exc:  # names the file already
            _usage(str(exc), "--trust")
        if explicit is not None and anchor.entity_id is not None and explicit != anchor.entity_id:
            _usage(f"{path} names entity {anchor.entity_id}, not {explicit}", "--trust")
        if explicit is not None:
            entity, how = explicit, "given"
        elif anchor.entity_id is not None:
            entity, how = anchor.entity_id, "certificate x500UniqueIdentifier"
        elif len(specs) == 1:
            entity, how = originator, "applied to the command's originator (only anchor given)"
        else:
            _usage(f"cannot tell which entity {path} speaks for; give it as ID=PATH", "--trust")
        if entity in keys and keys[entity].public_numbers() != anchor.public_key.public_numbers():
            _usage(f"two different keys given for entity {entity}", "--trust")
        keys[entity] = anchor.public_key
        anchors.append(_Anchor(entity, path, how))
    return TrustStore(keys), anchors


# --------------------------------------------------------------------------- reporting


def _command_fields(cmd: SignedCommand) -> dict[str, Any]:
    apdu = cmd.apdu
    body = cmd.activation
    date_time = None
    if apdu.date_time is not None:
        as_dt = apdu.date_time.as_datetime()
        date_time = iso_utc(as_dt) if as_dt is not None else apdu.date_time.raw.hex().upper()
    fields: dict[str, Any] = {
        "form": "general-ciphering" if cmd.ciphered else "general-signing",
        "cra_flag": apdu.cra_flag.name.lower(),
        "counter": apdu.counter,
        "originator": str(apdu.originator),
        "recipient": str(apdu.recipient),
        "date_time": date_time,
        "message_code": f"0x{apdu.message_code:04X}",
        "message_name": message_label(apdu.message_code),
        "supplementary_remote_party": None
        if apdu.supplementary is None
        else {"entity": str(apdu.supplementary.entity), "counter": apdu.supplementary.counter},
        "hash": None,
        "content_counter": None,
        "execution_time": None,
        "cancellation": False,
        "content": None if body is not None else apdu.content.hex().upper(),
        "signature": None if apdu.signature is None else apdu.signature.hex().upper(),
        "mac": None if cmd.mac is None else cmd.mac.hex().upper(),
    }
    if body is not None:
        fields["hash"] = body.image_hash.hex().upper()
        fields["content_counter"] = body.counter
        fields["execution_time"] = None if body.execution_time is None else iso_utc(body.execution_time)
        fields["cancellation"] = body.cancels
    return fields


def _verdict_fields(verdict: Verdict) -> dict[str, Any]:
    return {
        "valid": verdict.ok,
        "reason": verdict.reason.name,
        "code": verdict.reason.name,  # the field `push --json` and `activate --json` share
        "reason_text": verdict.reason.value,
        "message": verdict.message,
        "response_code": None if verdict.response_code is None else int(verdict.response_code),
        "alert_code": None if verdict.alert_code is None else f"0x{verdict.alert_code:04X}",
    }


def _print_text(fields: dict[str, Any], verdict: dict[str, Any], notes: list[str]) -> None:
    def line(label: str, value: object) -> None:
        typer.echo(f"{label + ':':<22}{value}")

    line("form", fields["form"] + (f" (MAC {fields['mac']}, carried, not checked)" if fields["mac"] else ""))
    line("CRA flag", fields["cra_flag"])
    line("counter", fields["counter"])
    line("originator", fields["originator"])
    line("recipient", fields["recipient"])
    line("date-time", fields["date_time"] or "absent")
    line("message code", f"{fields['message_code']} ({fields['message_name']})")
    if fields["supplementary_remote_party"]:
        party = fields["supplementary_remote_party"]
        line("supplementary party", f"{party['entity']} counter {party['counter']}")
    if fields["hash"] is not None:
        line("image hash", fields["hash"])
        line("content counter", fields["content_counter"])
        when = fields["execution_time"]
        if when is None:
            shown = "none (activate immediately)"
        elif fields["cancellation"]:
            shown = f"{when} (cancellation)"
        else:
            shown = when
        line("execution time", shown)
    else:
        line("content", fields["content"])
    line("signature", fields["signature"] or "none (unsigned)")
    for note in notes:
        line("note", note)
    line("verdict", ("VALID: " if verdict["valid"] else "REFUSED: ") + verdict["message"])
    line("reason", f"{verdict['reason']} ({verdict['reason_text']})")
    code = verdict["response_code"]
    line("response code", "none (no CS06 response)" if code is None else code)
    line("alert code", verdict["alert_code"] or "none")


# --------------------------------------------------------------------------- commands


@app.command()
def verify(
    cmd: Annotated[Path, typer.Argument(metavar="CMD", help="Command file: raw bytes, hex text or base64 text (whitespace allowed).")],
    trust: Annotated[
        list[str],
        typer.Option(
            "--trust",
            metavar="PATH|ID=PATH",
            help="Trust anchor: PEM certificate or public key, as PATH or ID=PATH (repeatable). "
            "A certificate naming its entity id (x500UniqueIdentifier) needs no ID; a lone anchor "
            "without one applies to the command's originator.",
        ),
    ],
    device: Annotated[Optional[str], typer.Option("--device", metavar="IEEE", help="Device IEEE; without it the recipient check is skipped.")] = None,
    supplier: Annotated[
        Optional[str],
        typer.Option("--supplier", metavar="ID", help="Responsible supplier of the device; without it the originator is taken as such."),
    ] = None,
    image_hash: Annotated[
        Optional[str], typer.Option("--hash", metavar="HEX", help="Manufacturer Image Hash the device holds (64 hex); without it the hash check is skipped.")
    ] = None,
    last_counter: Annotated[Optional[int], typer.Option("--last-counter", min=0, metavar="N", help="Last counter accepted for the device.")] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Parse CMD, print every field, and verify it as a CS06 Activate Firmware command."""
    try:
        data = read_small(cmd, MAX_COMMAND_BYTES, "command file")
    except FileRefused as exc:
        _unreadable(str(exc), json_out)
    device_id = None if device is None else _entity(device, "--device")
    supplier_id = None if supplier is None else _entity(supplier, "--supplier")
    held = None if image_hash is None else _hash(image_hash)

    try:
        command = parse_command_file(data)
    except MalformedCommand as exc:
        report = {
            "valid": False,
            "reason": Reason.MALFORMED.name,
            "code": Reason.MALFORMED.name,
            "reason_text": Reason.MALFORMED.value,
            "message": f"malformed command: {exc}",
            "error": {"offset": exc.offset, "field": exc.field, "detail": exc.detail},
            "response_code": None,
            "alert_code": None,
            **{k: None for k in ("originator", "recipient", "counter", "message_code", "hash", "execution_time")},
        }
        if json_out:
            typer.echo(json.dumps(report))
        else:
            typer.echo(f"REFUSED: malformed command: {exc}")
        raise typer.Exit(EXIT_REFUSED)

    store, anchors = _resolve_trust(trust, command.originator)
    notes: list[str] = []
    skipped: list[str] = []
    if device_id is None:
        device_id = command.recipient
        skipped.append("recipient")
        notes.append("recipient check skipped (no --device)")
    if supplier_id is None:
        supplier_id = command.originator
        skipped.append("responsible supplier")
        notes.append("authority check skipped (no --supplier): the originator is taken as responsible supplier")
    if held is None:
        held = command.activation.image_hash if command.activation is not None else None
        skipped.append("hash")
        notes.append("image hash check skipped (no --hash)")
    if last_counter is None:
        notes.append("no --last-counter: no counter accepted before")
    for anchor in anchors:
        notes.append(f"trust anchor {anchor.entity} from {anchor.path} ({anchor.how})")

    try:
        verdict = verify_activation(
            command,
            trust=store,
            responsible_supplier=supplier_id,
            device_ieee=device_id,
            last_counter=last_counter,
            held_image_hash=held,
        )
    except GbcsError as exc:  # a usage problem (our arguments), not the command's
        _usage(str(exc))

    fields = _command_fields(command)
    result = _verdict_fields(verdict)
    if json_out:
        report = {
            **result,
            **fields,
            "skipped_checks": skipped,
            "last_counter": last_counter,
            "trust": [{"entity_id": str(a.entity), "path": a.path, "source": a.how} for a in anchors],
        }
        typer.echo(json.dumps(report))
    else:
        _print_text(fields, result, notes)
    raise typer.Exit(0 if verdict.ok else EXIT_REFUSED)


def _write_private(path: Path, data: bytes, force: bool) -> None:
    """Write with mode 0600 from the start (and reset it when overwriting)."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | (0 if force else os.O_EXCL)
    fd = os.open(path, flags, 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, data)
    finally:
        os.close(fd)


#: The RTDS Communications Hub (gbcs-vectors/README.md): a hub key's entity id when none is given.
RTDS_HUB_ID = "00DB1234567890A2"
#: The subject OU of a hub's certificate: a CHF is a device, not a GBCS organisation role.
HUB_ROLE = "CHF"


@app.command()
def keygen(
    output: Annotated[str, typer.Option("-o", "--output", metavar="PREFIX", help="Prefix: writes PREFIX.key (0600) and PREFIX.pem.")],
    entity_id: Annotated[
        Optional[str],
        typer.Option("--entity-id", metavar="ID", help=f"The entity id (16 hex digits or colon pairs): a supplier's; without it, a hub key for [hub] with the RTDS hub's id {RTDS_HUB_ID}."),
    ] = None,
    hub: Annotated[bool, typer.Option("--hub", help="A Communications Hub's digital-signing key for [hub] signing_key/certificate (its alerts), not a supplier's.")] = False,
    common_name: Annotated[Optional[str], typer.Option("--cn", metavar="NAME", help="Certificate common name.")] = None,
    force: Annotated[bool, typer.Option("--force", help="Overwrite existing files.")] = False,
) -> None:
    """Make a P-256 signing key and a self-signed certificate naming its entity id: a supplier's, or the hub's (--hub, or no --entity-id)."""
    hub = hub or entity_id is None
    entity = _entity(entity_id or RTDS_HUB_ID, "--entity-id")
    key_path, cert_path = Path(output + ".key"), Path(output + ".pem")
    if not force:
        for existing in (key_path, cert_path):
            if existing.exists():
                _usage(f"{existing} exists; use --force to overwrite", "-o")
    if hub:
        key_pem, cert_pem = generate_supplier_identity(entity, common_name=common_name or f"COMMUNICATIONS HUB {entity}", role=HUB_ROLE)
    else:
        key_pem, cert_pem = generate_supplier_identity(entity, common_name=common_name)
    try:
        _write_private(key_path, key_pem, force)
        cert_path.write_bytes(cert_pem)
    except OSError as exc:
        _usage(f"{exc.filename}: {exc.strerror}", "-o")
    typer.echo(f"wrote {key_path} (private key, mode 0600) and {cert_path} (certificate for entity {entity})")
    if hub:
        typer.echo(f'for the hub\'s alerts: [hub] entity_id = "{entity}", signing_key = "{key_path}", certificate = "{cert_path}"')


@app.command("sign-activation")
def sign_activation_cmd(
    key: Annotated[Path, typer.Option("--key", metavar="KEY", help="Supplier private key (PEM, P-256).")],
    originator: Annotated[str, typer.Option("--originator", metavar="ID", help="Supplier entity id.")],
    device: Annotated[str, typer.Option("--device", metavar="IEEE", help="Device IEEE (recipient).")],
    image_hash: Annotated[str, typer.Option("--hash", metavar="HEX", help="Manufacturer Image Hash (64 hex digits).")],
    counter: Annotated[int, typer.Option("--counter", min=0, metavar="N", max=(1 << 64) - 1, help="Originator counter.")],
    output: Annotated[str, typer.Option("-o", "--output", metavar="FILE", help="Output file ('-' for standard output).")],
    at: Annotated[Optional[str], typer.Option("--at", metavar="TIME", help="Execution time, ISO 8601 UTC (2030-01-15T09:00:00Z).")] = None,
    cancel: Annotated[bool, typer.Option("--cancel", help="Cancel a scheduled activation (9999-12-31T23:59:59Z).")] = False,
    ciphered: Annotated[bool, typer.Option("--ciphered", help="Wrap in General Ciphering (MAC: 12 zero bytes).")] = False,
    hex_out: Annotated[bool, typer.Option("--hex/--binary", help="Hex text like the reference vectors (default) or raw bytes.")] = True,
) -> None:
    """Build and sign a CS06 Activate Firmware command."""
    if at is not None and cancel:
        _usage("give --at or --cancel, not both", "--at")
    when = None if at is None else _utc_time(at)
    if when is not None and when <= dt.datetime.now(dt.timezone.utc):
        # Legal, and a hub acts on it at once: the user may have meant a future time.
        typer.echo(f"warning: --at {iso_utc(when)} is not in the future: a hub that accepts this command activates at once", err=True)
    origin = _entity(originator, "--originator")
    recipient = _entity(device, "--device")
    digest = _hash(image_hash)
    try:
        signing_key = read_signing_key(key)
    except GbcsUsageError as exc:  # names the file already
        _usage(str(exc), "--key")
    try:
        message = sign_activation(
            signing_key,
            originator=origin,
            device=recipient,
            image_hash=digest,
            counter=counter,
            execution_time=when,
            cancel=cancel,
            ciphered=ciphered,
        )
    except GbcsUsageError as exc:
        _usage(str(exc))
    payload = encode_hex_text(message).encode("ascii") if hex_out else message
    if output == "-":
        stream = typer.get_binary_stream("stdout")
        stream.write(payload)
        stream.flush()
        return
    try:
        Path(output).write_bytes(payload)
    except OSError as exc:
        _usage(f"{output}: {exc.strerror}", "-o")
    what = "cancellation" if cancel else (iso_utc(when) if when is not None else "immediate")
    typer.echo(
        f"wrote {output}: CS06 {what}, counter {counter}, {origin} -> {recipient},"
        f" {'general ciphering' if ciphered else 'general signing'}, {len(message)} bytes"
    )


@app.command("send")
def send_cmd(
    command: Annotated[Path, typer.Argument(help="GBCS command file: hex text, base64 or raw bytes (a CS06, a CS08 Read Firmware Version, ...).")],
    device: Annotated[str, typer.Option("--device", metavar="IEEE", help="The device to send it to (its recipient).")],
    config: Annotated[Optional[Path], typer.Option("--config", help="TOML configuration file (finds the daemon's control socket).")] = None,
    timeout: Annotated[float, typer.Option("--timeout", min=1.0, metavar="SECONDS", help="How long to wait for the device's response.")] = 60.0,
    json_out: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Forward a verified GBCS command over the device's tunnel (through the daemon) and print its response.

    A CS06 goes through the activation gate first: a refused one is never forwarded."""
    from gateway.gbcs.command import decode_message_file
    from han_ota.client import DaemonError, find_daemon, resolve_config

    try:
        raw = decode_message_file(read_small(command, MAX_COMMAND_BYTES, "command file"))
    except (FileRefused, GbcsError) as exc:
        _unreadable(f"{command}: {exc}", json_out)
    try:
        cfg = resolve_config(config)
    except ValueError as exc:  # ConfigError
        _usage(str(exc), "--config")
    client = find_daemon(cfg)
    if client is None:
        message = f"no han-ota daemon is listening on {cfg.control_socket}: the tunnel is the daemon's; start it with 'han-ota run --config PATH'"
        if json_out:
            typer.echo(json.dumps({"forwarded": False, "error": message}))
        typer.echo(f"error: {message}", err=True)
        raise typer.Exit(EXIT_REFUSED)
    client.timeout = timeout + 30.0  # the daemon answers when the device did
    try:
        result = client.gbcs_send(raw.hex().upper(), device, timeout)
    except DaemonError as exc:
        if json_out:
            typer.echo(json.dumps({"forwarded": False, "error": str(exc)}))
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(EXIT_REFUSED) from None
    if json_out:
        typer.echo(json.dumps(result))
    elif not result.get("forwarded"):
        typer.echo(f"{result.get('device')}: not forwarded: {result.get('error')}")
    elif result.get("response") is None:
        typer.echo(f"{result.get('device')}: forwarded {result.get('message_code')}; no response within {timeout:g} s")
    else:
        typer.echo(f"{result.get('device')}: forwarded {result.get('message_code')}; response {result.get('response_message_code') or '(unparsed)'}:")
        typer.echo(result["response"])
    raise typer.Exit(0 if result.get("forwarded") else EXIT_REFUSED)


__all__ = ["app"]
