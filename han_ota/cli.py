"""The ``han-ota`` command line. Commands are thin wrappers over async functions."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Optional

import typer

from gateway.config import Config, ConfigError, load_config
from gateway.image import ImageError
from han_ota.cli_app import new_app, run, setup_logging

app = new_app(
    name="han-ota",
    help="Communications Hub stand-in for GB smart-metering labs: Zigbee OTA firmware for PPMID and HCALCS devices, released only by supplier-signed GBCS commands.",
)


def _mount() -> None:
    from han_ota import cli_cbke, cli_daemon, cli_gbcs, cli_image, cli_messages, cli_radio, cli_report

    app.add_typer(cli_image.app, name="image", help="Inspect and build firmware images.")
    app.add_typer(cli_gbcs.app, name="gbcs", help="Verify, sign and make keys for GBCS activation commands.")
    app.add_typer(cli_cbke.app, name="cbke", help="Smart Energy key establishment in a lab: test CA, certificates, inspection, ECMQV.")
    cli_daemon.register(app)
    cli_radio.register(app)
    cli_report.register(app)
    cli_messages.register(app)


SIM_DEVICE_HELP = (
    "A simulated device KIND:IEEE[:key=value...] (repeatable). KIND ppmid or hcalcs; keys: manufacturer_code, "
    "image_type, file_version, hardware_version, max_data_size, page_requests, page_size, sleepy_poll (s), loss (0-1), "
    "hops (1-6: radio hops to the coordinator), link (instant|realistic), self_activate_after, min_block_period_ms, timeout_policy, activation_policy, "
    "activation_fails, corrupt, supplier_key (PEM: verify the GBCS supplier signature, of images and of CS06); "
    "GBCS: entity_id (16 hex digits; default the IEEE), gbcs_key and gbcs_cert (PEM: the device's own P-256 "
    "signing key and certificate; generated when absent), supplier_id (when supplier_key names none), acb_id."
)


def fail(message: str, code: int = 2) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(code)


def read_config(path: Optional[Path]) -> Config:
    """--config PATH, else /etc/han-ota/config.toml if it exists, else per-user defaults."""
    from han_ota.client import resolve_config

    try:
        return resolve_config(path)
    except ConfigError as exc:
        raise fail(str(exc)) from None


def input_error(message: str, json_out: bool, failed: Optional[dict[str, str]] = None) -> typer.Exit:
    """A file argument that cannot be used: exit 1, and with --json one object saying why
    (a push's failure object, `failed`, with the message as its reason too)."""
    if json_out:
        typer.echo(json.dumps({"error": message} if failed is None else {**failed, "reason": message, "error": message}))
    return fail(message, 1)


def file_problem(path: Path, what: str) -> Optional[str]:
    """Why `path` cannot be read as the `what` file (missing, a directory, a FIFO ...), or None."""
    from gateway.files import NotRegularFile, open_regular

    try:
        with open_regular(path):
            return None
    except NotRegularFile as exc:
        return str(exc)
    except OSError as exc:
        return f"cannot read {what} {path}: {exc.strerror or exc}"


def read_command(path: Path, json_out: bool = False, failed: Optional[dict[str, str]] = None) -> bytes:
    """A CS06 file as raw APDU bytes: raw, hex text (like the reference data) or base64 (as DUIS carries it)."""
    from gateway.files import FileRefused, read_small
    from gateway.gbcs.command import decode_message_file
    from gateway.gbcs.errors import GbcsError
    from han_ota.cli_gbcs import MAX_COMMAND_BYTES

    try:
        data = read_small(path, MAX_COMMAND_BYTES, "command file")
    except FileRefused as exc:
        raise input_error(str(exc), json_out, failed) from None
    try:
        return decode_message_file(data)
    except GbcsError as exc:
        raise input_error(f"{path}: not a GBCS command: {exc}", json_out, failed) from None


@app.command()
def push(
    image: Path = typer.Argument(..., help="Firmware image file (Zigbee OTA or GBCS form).", exists=False),
    device: str = typer.Option(..., "--device", metavar="IEEE", help="Target device IEEE address (16 hex digits or 8 colon-separated pairs)."),
    radio: Optional[str] = typer.Option(None, "--radio", help="Radio kind: sim (default), ezsp or znp."),
    path: Optional[str] = typer.Option(None, "--path", help="Radio path: serial device, /dev/serial/by-id/... or socket://host:port."),
    baudrate: Optional[int] = typer.Option(None, "--baudrate", help="Serial speed (default: the dongle family's)."),
    flow_control: Optional[str] = typer.Option(None, "--flow-control", help="none, software or hardware."),
    sim_device: list[str] = typer.Option([], "--sim-device", metavar="KIND:IEEE[:KEY=VALUE...]", help=SIM_DEVICE_HELP),
    activate_now: bool = typer.Option(False, "--activate-now", help="Release the hold at once, without supplier authority (lab images only; logged as such)."),
    activation: Optional[Path] = typer.Option(None, "--activation", help="A CS06 Activate Firmware command (file: hex text, base64 or raw): verified before any block is sent, acted on when the device is held (PPMID one-step flow)."),
    allow_downgrade: bool = typer.Option(False, "--allow-downgrade", help="Install the image even on a device that runs a newer version (refused otherwise; logged as a warning)."),
    priority: Optional[str] = typer.Option(
        None, "--priority", metavar="N|high|normal|low", help="0 to 9, higher first (high 9, normal 5, low 1; default: [ota] priority_<kind>). Over a device's job of lower priority it supersedes it; below it, it waits queued."
    ),
    replace: bool = typer.Option(False, "--replace", help="Supersede the device's job even at the same priority (its image is discarded)."),
    wait: bool = typer.Option(False, "--wait", help="With a running daemon: wait for the job with a progress bar instead of returning its id at once."),
    in_process: bool = typer.Option(False, "--in-process", help="Run the push in this process even when a daemon is running."),
    stall_timeout: Optional[float] = typer.Option(None, "--stall-timeout", help="Seconds without a request from the device before the transfer fails (sleepy devices are slow)."),
    timeout: Optional[float] = typer.Option(None, "--timeout", help="Give up (cancel) after this many seconds."),
    config: Optional[Path] = typer.Option(None, "--config", help="TOML configuration file."),
    json_out: bool = typer.Option(False, "--json", help="Print one JSON object as the last line."),
    verbose: int = typer.Option(0, "--verbose", "-v", count=True, help="More log output (-vv includes the radio libraries)."),
) -> None:
    """Push IMAGE to one device and leave it held (or activated with --activate-now / --activation).

    With a running daemon (found through --config's control_socket) the job is handed
    to it; otherwise the push runs in this process on the radio named by --radio or the
    config (the simulated one by default).
    """
    from han_ota.push import PushRequest, final_line, run_push
    from gateway.engine import EngineError
    from gateway.ota.priority import PriorityError, parse_priority
    from radios.select import RadioError

    setup_logging(verbose)
    if activate_now and activation is not None:
        raise fail("give --activate-now or --activation, not both")
    failed = {"device": device, "state": "failed"}
    problem = file_problem(image, "image")
    if problem is not None:
        raise input_error(problem, json_out, failed)
    cfg = read_config(config)
    if sim_device and (radio or cfg.radio.kind) != "sim":
        origin = "--radio" if radio else f"radio.kind in {cfg.source}"
        raise fail(f"--sim-device needs the simulated radio, but {origin} is {radio or cfg.radio.kind!r}: add --radio sim, or drop --sim-device")
    command = read_command(activation, json_out, failed) if activation is not None else None
    try:
        level = None if priority is None else parse_priority(priority, "--priority")
    except PriorityError as exc:
        raise input_error(str(exc), json_out, failed) from None
    if not (in_process or radio or path or sim_device):
        from han_ota.client import find_daemon

        client = find_daemon(cfg)
        if client is not None:
            _push_via_daemon(client, image, device, command, activate_now, stall_timeout, wait, timeout, json_out, config, allow_downgrade, priority=level, replace=replace)
            return
    counters = None
    if command is not None or cfg.hub != type(cfg.hub)():  # [hub]: its alert counter lives there too
        counters = _counter_store(cfg)
    req = PushRequest(
        image=image,
        device=device,
        radio=radio or cfg.radio.kind,
        path=path or cfg.radio.path,
        baudrate=baudrate or cfg.radio.baudrate,
        flow_control=flow_control or cfg.radio.flow_control,
        sim_devices=sim_device,
        activate_now=activate_now,
        allow_downgrade=allow_downgrade,
        priority=level,
        activation=command,
        counters=counters,
        stall_timeout_s=stall_timeout,
        timeout_s=timeout,
        config=cfg,
        progress=not json_out,
    )
    try:
        outcome = asyncio.run(run_push(req))
    except (ImageError, ConfigError, EngineError, RadioError, ValueError) as exc:
        message = str(exc)
        if isinstance(exc, RadioError) and not (radio or path) and cfg.source is not None:
            message += f" (the radio is the one [radio] in {cfg.source} names)"  # the user gave no radio option
        if json_out:
            typer.echo(json.dumps({"device": device, "state": "failed", "reason": message, "error": message}))
        raise fail(message, 1) from None
    except KeyboardInterrupt:
        raise fail("interrupted; the job was not completed", 130) from None
    if json_out:
        typer.echo(json.dumps(outcome.summary))
    else:
        typer.echo(final_line(outcome.summary))
        for warning in outcome.summary.get("warnings", []):
            typer.echo(f"warning: {warning}", err=True)
    raise typer.Exit(0 if outcome.reached else 1)


def _counter_store(cfg: Config):  # type: ignore[no-untyped-def]
    """Accepted counters must outlive this process: they live in the state directory."""
    from gateway.store import StateStore, StoreError
    from han_ota.statedir import StateDirError, describe, ensure_state_dir

    try:
        return StateStore.in_state_dir(ensure_state_dir(cfg))
    except StateDirError as exc:
        raise fail(f"{exc} (it keeps the anti-replay counters)") from None
    except (StoreError, OSError) as exc:
        raise fail(f"cannot open the state directory {describe(cfg)} for anti-replay counters: {exc}") from None


def _push_via_daemon(client, image: Path, device: str, command: Optional[bytes], activate_now: bool, stall_timeout: Optional[float], wait: bool, timeout: Optional[float], json_out: bool, config: Optional[Path], allow_downgrade: bool = False, *, priority: Optional[int] = None, replace: bool = False) -> None:  # type: ignore[no-untyped-def]
    from han_ota.cli_app import hint
    from han_ota.client import DaemonError
    from han_ota.follow import follow_job

    try:
        job = client.push(image, device, activation=command.hex().upper() if command else None, activate_now=activate_now, stall_timeout=stall_timeout, allow_downgrade=allow_downgrade, priority=priority, replace=replace)
    except DaemonError as exc:
        if json_out:
            typer.echo(json.dumps({"device": device, "state": "failed", "reason": str(exc), "error": str(exc)}))
        raise fail(str(exc), 1) from None
    if not wait:
        job_id = job["job"]
        typer.echo(json.dumps(job) if json_out else f"job {job_id} accepted for {job['device']} ({job['state']}); follow it with {hint(f'wait {job_id}', config)} or {hint('status', config)}")
        return
    wanted = "confirmed" if (activate_now or command) else "held"
    raise typer.Exit(follow_job(client, job, wanted, timeout=timeout, json_out=json_out, config=config))


@app.command()
def activate(
    command: Path = typer.Argument(..., help="CS06 Activate Firmware command file: hex text (like the GBCS reference data), base64 (as DUIS GBCSPayload carries it) or raw bytes."),
    device: Optional[str] = typer.Option(None, "--device", help="The held device (default: the command's recipient)."),
    config: Optional[Path] = typer.Option(None, "--config", help="TOML configuration file (finds the daemon's control socket)."),
    json_out: bool = typer.Option(False, "--json", help="Print one JSON object."),
) -> None:
    """Submit a supplier-signed CS06 for a device the gateway holds (HCALCS second step)."""
    from han_ota.client import DaemonError, find_daemon

    cfg = read_config(config)
    raw = read_command(command, json_out)
    client = find_daemon(cfg)
    if client is None:
        raise fail(
            f"no han-ota daemon is listening on {cfg.control_socket}: activation goes to the gateway that holds the device. "
            "Start it with 'han-ota run --config PATH' (or 'systemctl start han-ota'), and push through it."
        )
    try:
        result = client.activate(raw.hex().upper(), device)
    except DaemonError as exc:
        raise fail(str(exc), 1) from None
    if json_out:
        typer.echo(json.dumps(result))
    else:
        # A malformed command names no device unless --device did.
        where = f"{result['device']}: " if result.get("device") else ""
        typer.echo(f"{where}{result.get('message')}")
    raise typer.Exit(0 if result.get("accepted") else 1)


@app.command()
def demo(
    verbose: int = typer.Option(0, "--verbose", "-v", count=True, help="Add the OTA step log (-vv: also the radio libraries)."),
) -> None:
    """A scripted bench session on the simulated radio: a PPMID and an HCALCS."""
    from han_ota.demo import run_demo

    # The narration is the output; -v adds the step-by-step OTA log.
    setup_logging(verbose)
    raise typer.Exit(asyncio.run(run_demo()))


def main() -> None:
    _mount()
    sys.exit(run(app, sys.argv[1:]))


__all__ = ["app", "main"]

if __name__ == "__main__":
    main()
