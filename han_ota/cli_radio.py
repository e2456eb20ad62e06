"""``han-ota radio detect|info|form|backup|restore`` and ``han-ota emulate ezsp|znp``.

Wiring only: the work is in ``radios.detect``, ``radios.network`` and the emulators in
``radios.emulate``. ``register(app)`` adds the two command groups to the main
``han-ota`` app; ``python -m han_ota.cli_radio ...`` gives the same commands on their own.

Exit codes: 0 ok; 1 the radio refused or failed (the message names the port and the
fix); 2 usage or configuration error; 130 interrupted.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import signal
import sys
from pathlib import Path
from typing import Annotated, Any, NoReturn, Optional

import typer

from han_ota.cli_app import new_app, setup_logging

LOGGER = logging.getLogger("han_ota.radio")

EXIT_FAILED = 1
EXIT_USAGE = 2

radio_app = new_app(name="radio",
                    help="Find, inspect, form, back up and restore the Zigbee coordinator.")
emulate_app = new_app(name="emulate",
                      help="Run an emulated coordinator (a virtual dongle) with simulated HAN devices behind it.")

RadioOption = Annotated[Optional[str], typer.Option("--radio", help="Radio kind: ezsp or znp [default: the config's radio.kind, else the one dongle detect finds].", show_default=False)]
PathOption = Annotated[Optional[str], typer.Option("--path", help="Serial device, /dev/serial/by-id/..., /dev/han-ota/<name> or socket://host:port.", show_default=False)]
BaudOption = Annotated[Optional[int], typer.Option("--baudrate", help="Serial speed [default: the dongle family's: 115200; ZBT-2 460800].", show_default=False)]
FlowOption = Annotated[Optional[str], typer.Option("--flow-control", help="none, software or hardware [default: znp none, ezsp software].", show_default=False)]
ConfigOption = Annotated[Optional[Path], typer.Option("--config", help="TOML configuration file (its radio table gives the defaults).", show_default=False)]
JsonOption = Annotated[bool, typer.Option("--json", help="Print one JSON object as the last line.")]
VerboseOption = Annotated[int, typer.Option("--verbose", "-v", count=True, help="More log output (-vv includes the radio libraries).")]


def _fail(message: str, code: int = EXIT_FAILED, *, as_json: bool = False) -> NoReturn:
    if as_json:
        typer.echo(json.dumps({"error": message}))
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def _logging(verbose: int, quiet: bool) -> None:
    setup_logging(verbose, default=logging.WARNING if quiet else logging.INFO)


def _config(path: Optional[Path], as_json: bool) -> Any:
    from gateway.config import ConfigError
    from han_ota.client import resolve_config

    try:
        return resolve_config(path)
    except ConfigError as exc:
        _fail(str(exc), EXIT_USAGE, as_json=as_json)


def resolve_target(radio: Optional[str], path: Optional[str], baudrate: Optional[int], flow_control: Optional[str], config: Optional[Path], *, as_json: bool = False) -> Any:
    """The radio to talk to: options, then the config's [radio], then the one dongle
    ``detect`` finds. Exits with a message when it cannot tell."""
    from radios.detect import detect_ports
    from radios.network import RadioTarget

    if flow_control is not None and flow_control not in ("none", "software", "hardware"):
        _fail(f"--flow-control {flow_control!r}: give none, software or hardware", EXIT_USAGE, as_json=as_json)
    if radio is not None and radio not in ("ezsp", "znp"):
        _fail(f"--radio {radio!r}: these commands talk to a coordinator: ezsp or znp", EXIT_USAGE, as_json=as_json)
    cfg = _config(config, as_json)
    r = cfg.radio
    kind = radio or (r.kind if r.kind in ("ezsp", "znp") else None)
    path = path or r.path
    baudrate = baudrate or r.baudrate
    flow_control = flow_control or r.flow_control
    if path is None or kind is None:
        found = [p for p in detect_ports() if p.radio is not None and (kind is None or p.radio == kind)]
        if len(found) == 1 and path is None:
            port = found[0]
            path, kind = port.best_path, kind or port.radio
            baudrate = baudrate or port.baudrate
            flow_control = flow_control or port.flow_control
            typer.echo(f"using {port.dongle.name if port.dongle else 'the dongle'} at {path} ({kind})", err=True)
        elif path is None:
            listed = "; ".join(f"{p.best_path} ({p.radio})" for p in found) or "none found"
            _fail(f"which radio? give --radio ezsp|znp --path P, or a config with a radio table (coordinators detected: {listed})", EXIT_USAGE, as_json=as_json)
        elif kind is None:
            _fail(f"which driver for {path}? give --radio ezsp or znp (han-ota radio detect --probe --path {path} asks both)", EXIT_USAGE, as_json=as_json)
    return RadioTarget(kind, path, baudrate, flow_control)


def _run(coro: Any, *, as_json: bool) -> Any:
    from radios.select import RadioError

    try:
        return asyncio.run(coro)
    except RadioError as exc:
        _fail(str(exc), EXIT_FAILED, as_json=as_json)
    except KeyboardInterrupt:
        _fail("interrupted", 130, as_json=as_json)


def _print_report(report: dict[str, Any], as_json: bool) -> None:
    if as_json:
        typer.echo(json.dumps(report))
        return
    c = report["coordinator"]
    typer.echo(f"radio        {report['radio']} at {report['path']}")
    if report["formed"]:
        typer.echo(f"coordinator  {c['ieee']}  {c['manufacturer'] or ''} {c['model'] or ''}  firmware {c['firmware'] or '?'}".rstrip())
        n = report["network"]
        typer.echo(f"network      channel {n['channel']}, PAN id {n['pan_id']}, extended PAN id {n['extended_pan_id']}, update id {n['nwk_update_id']}")
        typer.echo(f"keys         network key #{n['network_key']['seq']} (fingerprint {n['network_key']['fingerprint']}, frame counter {n['network_key']['tx_counter']}); TC link key {n['tc_link_key']}")
        d = report["devices"]
        typer.echo(f"devices      {len(d['addresses'])} known address(es), {len(d['children'])} child(ren), {len(d['link_keys'])} link key(s)")
        for ieee, nwk in d["addresses"].items():
            typer.echo(f"             {ieee}  {nwk}")
    else:
        typer.echo("network      none formed (han-ota radio form makes one; han-ota radio restore FILE brings a backup back)")


# ------------------------------------------------------------------------------ radio


@radio_app.command("detect")
def detect(
    probe: Annotated[bool, typer.Option("--probe", help="Ask the drivers (bellows, zigpy-znp) which one answers on each candidate port.")] = False,
    all_ports: Annotated[bool, typer.Option("--all", help="List every serial port, not only coordinator candidates.")] = False,
    path: Annotated[list[str], typer.Option("--path", help="Probe this path (repeatable; e.g. socket://host:port); implies --probe.")] = [],  # noqa: B006
    timeout: Annotated[float, typer.Option("--timeout", help="Seconds each driver may take to answer a probe.")] = 60.0,
    json_out: JsonOption = False,
    verbose: VerboseOption = 0,
) -> None:
    """List the coordinator dongles plugged in (by USB id and product string), with the
    path, driver and serial settings to use. Exits 1 when no coordinator is found, so
    scripts can tell (the listing and a hint are still printed)."""
    from radios.detect import DetectedPort, answered, detect_ports, probe_detected

    _logging(verbose, json_out)
    ports = [DetectedPort(device=p) for p in path] if path else detect_ports(all_ports=all_ports)

    async def run() -> None:
        if probe or path:
            for port in ports:
                if port.match is not None or path:
                    await probe_detected(port, timeout=timeout)

    _run(run(), as_json=json_out)
    found = any(p.match is not None or p.radio or answered(p.probe) for p in ports)
    if json_out:
        typer.echo(json.dumps({"ports": [p.to_dict() for p in ports]}))
        if not found:
            raise typer.Exit(EXIT_FAILED)
        return
    hint = "no coordinator dongle found (han-ota radio detect --all lists every serial port; a dongle with an unknown product string may need a udev rule: see udev/README.md)"
    if not ports:
        typer.echo(hint)
        raise typer.Exit(EXIT_FAILED)
    for p in ports:
        if p.dongle:
            name = p.dongle.name
        elif answered(p.probe):
            name = f"{answered(p.probe)} coordinator (it answered the probe)"
        else:
            name = "unknown dongle" if p.match else "not a coordinator we know"
        typer.echo(f"{p.best_path}")
        usb = f"; usb {p.usb_id}; product {p.product!r}" if p.usb_id else ""
        typer.echo(f"    {name}{usb}; device {p.device}")
        if p.radio:
            flow = p.flow_control or "none"
            typer.echo(f"    use: --radio {p.radio} --path {p.best_path}" + (f" --baudrate {p.baudrate} --flow-control {flow}" if p.baudrate else ""))
        if p.note:
            typer.echo(f"    {p.note}")
        if p.probe:
            typer.echo("    probe: " + ", ".join(f"{k}: {'answered ' + json.dumps(v) if isinstance(v, dict) else ('no answer' if v is False else v)}" for k, v in p.probe.items()))
    if not found:
        typer.echo(hint)
        raise typer.Exit(EXIT_FAILED)


@radio_app.command("info")
def info(radio: RadioOption = None, path: PathOption = None, baudrate: BaudOption = None, flow_control: FlowOption = None,
         config: ConfigOption = None, json_out: JsonOption = False, verbose: VerboseOption = 0) -> None:
    """The coordinator (IEEE, firmware) and its network (channel, PAN ids, key fingerprints,
    known devices), read from the radio without starting the network."""
    from radios.network import read_info

    _logging(verbose, json_out)
    target = resolve_target(radio, path, baudrate, flow_control, config, as_json=json_out)
    _print_report(_run(read_info(target), as_json=json_out), json_out)


@radio_app.command("form")
def form(
    channel: Annotated[Optional[int], typer.Option("--channel", help="11..26 [default: the config's radio.channel, else an energy scan picks one].", show_default=False)] = None,
    pan_id: Annotated[Optional[str], typer.Option("--pan-id", help="0x0001..0xFFFE [default: random].", show_default=False)] = None,
    force: Annotated[bool, typer.Option("--force", help="Replace an existing network (every device must join again: back it up first).")] = False,
    radio: RadioOption = None, path: PathOption = None, baudrate: BaudOption = None, flow_control: FlowOption = None,
    config: ConfigOption = None, json_out: JsonOption = False, verbose: VerboseOption = 0,
) -> None:
    """Form a new network on the coordinator (random keys and extended PAN id)."""
    from radios.network import form as form_network

    _logging(verbose, json_out)
    target = resolve_target(radio, path, baudrate, flow_control, config, as_json=json_out)
    cfg = _config(config, json_out)
    pan: Optional[int] = None
    if pan_id is not None:
        try:
            pan = int(pan_id, 0)
        except ValueError:
            _fail(f"--pan-id {pan_id!r}: give a number such as 0x1A62", EXIT_USAGE, as_json=json_out)
    report = _run(form_network(target, channel=channel or cfg.radio.channel, pan_id=pan if pan is not None else cfg.radio.pan_id, force=force), as_json=json_out)
    if not json_out:
        typer.echo("formed a new network:")
    _print_report(report, json_out)


@radio_app.command("backup")
def backup(
    output: Annotated[Path, typer.Option("--output", "-o", help="Write the backup here (JSON; keep it secret: it holds the network key).")],
    fmt: Annotated[str, typer.Option("--format", help="zigpy (zigpy's NetworkBackup JSON) or open-coordinator (zigpy-znp / Zigbee2MQTT coordinator_backup.json).")] = "zigpy",
    radio: RadioOption = None, path: PathOption = None, baudrate: BaudOption = None, flow_control: FlowOption = None,
    config: ConfigOption = None, json_out: JsonOption = False, verbose: VerboseOption = 0,
) -> None:
    """Back the network up: keys, frame counters, device addresses and link keys."""
    import os

    from radios.network import BACKUP_FORMATS, backup as take_backup, backup_to_json

    _logging(verbose, json_out)
    if fmt not in BACKUP_FORMATS:
        _fail(f"--format {fmt!r}: give one of {', '.join(BACKUP_FORMATS)}", EXIT_USAGE, as_json=json_out)
    target = resolve_target(radio, path, baudrate, flow_control, config, as_json=json_out)
    saved = _run(take_backup(target), as_json=json_out)
    text = backup_to_json(saved, fmt)
    try:
        output.parent.mkdir(parents=True, exist_ok=True)
        tmp = output.with_name(output.name + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, output)
    except OSError as exc:
        _fail(f"cannot write the backup to {output}: {exc.strerror or exc}", EXIT_FAILED, as_json=json_out)
    net = saved.network_info
    summary = {"backup": str(output), "format": fmt, "radio": target.kind, "path": target.path, "extended_pan_id": str(net.extended_pan_id),
               "channel": net.channel, "pan_id": f"0x{int(net.pan_id):04X}", "devices": len(net.nwk_addresses), "link_keys": len(net.key_table)}
    if json_out:
        typer.echo(json.dumps(summary))
    else:
        typer.echo(f"backed up network {summary['extended_pan_id']} (channel {net.channel}, PAN id {summary['pan_id']}, {summary['devices']} device address(es), {summary['link_keys']} link key(s)) to {output} (mode 0600)")


@radio_app.command("restore")
def restore(
    backup_file: Annotated[Path, typer.Argument(help="A backup from han-ota radio backup (zigpy JSON) or an open coordinator backup.", show_default=False)],
    force: Annotated[bool, typer.Option("--force", help="Overwrite a different network on the radio, or once-only settings (EZSP IEEE).")] = False,
    radio: RadioOption = None, path: PathOption = None, baudrate: BaudOption = None, flow_control: FlowOption = None,
    config: ConfigOption = None, json_out: JsonOption = False, verbose: VerboseOption = 0,
) -> None:
    """Write a backup to the coordinator (e.g. onto a replacement dongle); frame counters
    move ahead so the devices accept it."""
    from radios.network import backup_from_json, restore as restore_backup
    from radios.select import RadioError

    _logging(verbose, json_out)
    try:
        text = backup_file.read_text()
    except OSError as exc:
        _fail(f"cannot read {backup_file}: {exc.strerror or exc}", EXIT_USAGE, as_json=json_out)
    try:
        saved = backup_from_json(text, str(backup_file))
    except RadioError as exc:
        _fail(str(exc), EXIT_USAGE, as_json=json_out)
    target = resolve_target(radio, path, baudrate, flow_control, config, as_json=json_out)
    report = _run(restore_backup(target, saved, force=force), as_json=json_out)
    if not json_out:
        typer.echo(f"restored {backup_file}:")
    _print_report(report, json_out)


# ------------------------------------------------------------------------------ emulate

LINKS = ("instant", "realistic")
HAN_START = ("up", "permit", "manual")


def parse_listen(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not host:
        raise ValueError(f"--listen {text!r}: give HOST:PORT, e.g. 127.0.0.1:9999 (port 0 picks a free one)")
    try:
        number = int(port)
    except ValueError:
        raise ValueError(f"--listen {text!r}: port {port!r} is not a number") from None
    if not 0 <= number <= 65535:
        raise ValueError(f"--listen {text!r}: port must be 0..65535")
    return host.strip("[]"), number


def _emulate(kind: str, listen: str, sim_device: list[str], fault: list[str], link: str, han_start: str, pty: bool, config: Optional[Path], json_out: bool, verbose: int,
             ezsp_version: Optional[int] = None,
             failure_timing: Optional[list[str]] = None) -> None:
    from radios.sim.link import LinkModel
    from radios.sim.spec import SimDeviceSpec, SimSpecError, parse_sim_device

    _logging(verbose, json_out)
    if link not in LINKS:
        _fail(f"--link {link!r}: give instant or realistic", EXIT_USAGE, as_json=json_out)
    if han_start not in HAN_START:
        _fail(f"--han-start {han_start!r}: give {', '.join(HAN_START)}", EXIT_USAGE, as_json=json_out)
    try:
        host, port = parse_listen(listen)
    except ValueError as exc:
        _fail(str(exc), EXIT_USAGE, as_json=json_out)
    specs: list[SimDeviceSpec] = []
    try:
        specs = [parse_sim_device(text) for text in sim_device]
        if config is not None:
            specs += [SimDeviceSpec.from_dict(table) for table in _config(config, json_out).sim_devices]
    except SimSpecError as exc:
        _fail(f"--sim-device: {exc}", EXIT_USAGE, as_json=json_out)
    try:
        faults = _faults(kind, fault)
    except ValueError as exc:
        _fail(f"--fault: {exc}", EXIT_USAGE, as_json=json_out)
    ncp_options: dict[str, Any] = {}
    if ezsp_version is not None:
        from radios.emulate.ezsp import SUPPORTED_VERSIONS

        if ezsp_version not in SUPPORTED_VERSIONS:
            _fail(f"--ezsp-version {ezsp_version}: give one of {', '.join(map(str, SUPPORTED_VERSIONS))}", EXIT_USAGE, as_json=json_out)
        ncp_options["protocol_version"] = ezsp_version
    model = LinkModel.instant() if link == "instant" else LinkModel.realistic()
    znp_options: dict[str, Any] = {}
    if failure_timing:
        # Each emulator's own model (its own names), read by one parser
        # (radios/emulate/failure_timing.py); the option goes where each takes it.
        from radios.emulate.failure_timing import TimingSpecError

        if kind == "znp":
            from radios.emulate.znp import FailureTiming as ZnpTiming

            timing_model: Any = ZnpTiming
        else:
            from radios.emulate.ezsp import FailureTiming as EzspTiming

            timing_model = EzspTiming
        try:
            timing = timing_model.parse(failure_timing, scale=model.scale)
        except TimingSpecError as exc:
            _fail(f"--failure-timing: {exc}", EXIT_USAGE, as_json=json_out)
        (znp_options if kind == "znp" else ncp_options)["failure_timing"] = timing
    try:
        asyncio.run(serve_emulator(kind, host, port, specs, model, faults, han_start=han_start, pty=pty, json_out=json_out,
                                   ncp_options=ncp_options, znp_options=znp_options))
    except OSError as exc:
        _fail(f"cannot listen on {listen}: {exc.strerror or exc}", EXIT_FAILED, as_json=json_out)
    except KeyboardInterrupt:
        pass


def _faults(kind: str, options: list[str]) -> Any:
    if kind == "znp":
        from radios.emulate.znp import Faults
    else:
        from radios.emulate.ezsp import Faults
    return Faults.parse(options or None)


async def serve_emulator(kind: str, host: str, port: int, specs: list[Any], link: Any, faults: Any, *, han_start: str = "up", pty: bool = False,
                         json_out: bool = False, ready: Optional[asyncio.Event] = None, stop: Optional[asyncio.Event] = None, out: Any = None,
                         ncp_options: Optional[dict[str, Any]] = None,
                         znp_options: Optional[dict[str, Any]] = None) -> None:
    """Run one emulator until SIGINT/SIGTERM (or ``stop``); print where it listens.
    ``ncp_options`` go to the EZSP emulator's NCP (``protocol_version``, ``failure_timing``), ``znp_options``
    to the Z-Stack emulator's coordinator (``failure_timing``)."""
    from radios.sim.han import SimHan

    out = out or sys.stdout
    han = SimHan(specs, link)
    starter: Optional[asyncio.Task[None]] = None
    if kind == "znp":
        from radios.emulate.znp import serve_znp, serve_znp_pty

        mode = {"up": "ready", "permit": "permit", "manual": "manual"}[han_start]
        options = znp_options or {}
        if pty:
            path, server = await serve_znp_pty(han, faults=faults, han_start=mode, **options)
        else:
            server = await serve_znp(host, port, han, faults=faults, han_start=mode, **options)
            path = server.url
    else:
        from radios.emulate.ezsp import serve_ezsp, serve_ezsp_pty

        # "up" is started here, not by the NCP's "network-up" mode: that one powers the
        # devices up as soon as networkInit brings the network up, before bellows and
        # zigpy finish starting, and zigpy never learns of those joins. Like the ZNP
        # emulator's "ready", we wait for the end of zigpy's start-up: its permit(0).
        mode = {"up": "manual", "permit": "permit", "manual": "manual"}[han_start]
        options = ncp_options or {}
        if pty:
            path, server = await serve_ezsp_pty(han, faults=faults, han_start=mode, **options)
        else:
            server = await serve_ezsp(host, port, han, faults=faults, han_start=mode, **options)
            path = server.path
        if han_start == "up":
            starter = asyncio.get_running_loop().create_task(_start_ezsp_han_when_host_ready(server.ncp), name="ezsp-han-start")
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(sig, stop.set)
    devices = [{"kind": s.kind, "ieee": str(s.ieee)} for s in specs]
    try:
        if json_out:
            print(json.dumps({"radio": kind, "path": path, "devices": devices}), file=out, flush=True)
        else:
            print(f"{kind.upper()} coordinator emulator ready at {path}", file=out)
            print(f"  use: han-ota push IMAGE --device IEEE --radio {kind} --path {path}", file=out)
            for d in devices:
                print(f"  simulated {d['kind']} {d['ieee']}", file=out)
            print("  Ctrl-C stops it.", file=out, flush=True)
        if ready is not None:
            ready.set()
        await stop.wait()
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                loop.remove_signal_handler(sig)
        if starter is not None:
            starter.cancel()
        await server.close()
        with contextlib.suppress(Exception):
            await han.stop()
        if not json_out:
            print(f"{kind.upper()} emulator stopped", file=out, flush=True)


async def _start_ezsp_han_when_host_ready(ncp: Any) -> None:
    """Power the simulated devices up once a host has started the network: zigpy's last
    start-up step is permit(0), the NCP's permitJoining."""
    while not (ncp.network_up and "permitJoining" in ncp.command_log):
        await asyncio.sleep(0.05)
    await ncp.start_han()


ListenOption = Annotated[str, typer.Option("--listen", help="HOST:PORT to listen on (port 0 picks a free one; the socket:// URL is printed).")]
SimDeviceOption = Annotated[list[str], typer.Option("--sim-device", help="A simulated device KIND:IEEE[:key=value...] behind the coordinator (repeatable); keys as in han-ota push --help.")]
LinkOption = Annotated[str, typer.Option("--link", help="instant, or realistic (the air and UART timing of a real HAN).")]
HanStartOption = Annotated[str, typer.Option("--han-start", help="When the devices power up and join: up (when the gateway starts the network), permit (when it permits joining), manual (never).")]
PtyOption = Annotated[bool, typer.Option("--pty", help="Serve on a pseudo-terminal (a /dev/pts path, like a USB dongle) instead of TCP.")]
EmulateJsonOption = Annotated[bool, typer.Option("--json", help="Print one JSON line {radio, path, devices} when ready.")]
ZnpFailureTimingOption = Annotated[list[str], typer.Option("--failure-timing", help="How long the stack takes to report a failed unicast, NAME=SECONDS (repeatable or comma-joined): mac_attempt, mac_retries, nwk_retries, nwk_retry_delay, aps_ack_wait, aps_retries, route_discovery, indirect_timeout [default: Z-Stack's own with --link realistic, none with instant].")]
ZnpFaultOption = Annotated[list[str], typer.Option("--fault", help="Inject a fault (repeatable or comma-joined): fail-deliveries=N[:STATUS], reset-after-frames=N, drop-after-frames=N.")]
EzspFaultOption = Annotated[list[str], typer.Option("--fault", help="Inject a fault (repeatable or comma-joined): fail-deliveries=N, reset-after-frames=N, drop-after-frames=N, error-after-frames=N.")]
EzspFailureTimingOption = Annotated[list[str], typer.Option("--failure-timing", help="How long the NCP takes to report a lost unicast, NAME=VALUE (repeatable or comma-joined): aps_ack_timeout_s, aps_transmissions, route_discovery_s [default: EmberZNet's own with --link realistic, none with instant].")]
EzspVersionOption = Annotated[Optional[int], typer.Option("--ezsp-version", help="EZSP protocol version the NCP speaks: 13 (EmberZNet 7.4), 14 (8.0), 16, 17, 18 or 19 [default: 13, what most lab dongles ship].", show_default=False)]


@emulate_app.command("znp")
def emulate_znp(listen: ListenOption = "127.0.0.1:0", sim_device: SimDeviceOption = [], fault: ZnpFaultOption = [],  # noqa: B006
                link: LinkOption = "instant", han_start: HanStartOption = "up", pty: PtyOption = False, config: ConfigOption = None,
                json_out: EmulateJsonOption = False, verbose: VerboseOption = 0,
                failure_timing: ZnpFailureTimingOption = []) -> None:  # noqa: B006
    """Run an emulated TI Z-Stack 3.30 coordinator (for zigpy-znp) with simulated PPMID/HCALCS
    devices behind it, until Ctrl-C: a virtual dongle to dry-run scripts against."""
    _emulate("znp", listen, sim_device, fault, link, han_start, pty, config, json_out, verbose, failure_timing=failure_timing)


@emulate_app.command("ezsp")
def emulate_ezsp(listen: ListenOption = "127.0.0.1:0", sim_device: SimDeviceOption = [], fault: EzspFaultOption = [],  # noqa: B006
                 link: LinkOption = "instant", han_start: HanStartOption = "up", pty: PtyOption = False, config: ConfigOption = None,
                 json_out: EmulateJsonOption = False, verbose: VerboseOption = 0, ezsp_version: EzspVersionOption = None,
                 failure_timing: EzspFailureTimingOption = []) -> None:  # noqa: B006
    """Run an emulated Silicon Labs EmberZNet NCP (EZSP over ASH, for bellows) with simulated
    PPMID/HCALCS devices behind it, until Ctrl-C: a virtual dongle to dry-run scripts against."""
    _emulate("ezsp", listen, sim_device, fault, link, han_start, pty, config, json_out, verbose, ezsp_version=ezsp_version,
             failure_timing=failure_timing)


# ------------------------------------------------------------------------------ mounting


def register(app: typer.Typer) -> None:
    """Add ``radio`` and ``emulate`` to the han-ota app."""
    app.add_typer(radio_app, name="radio", help="Find, inspect, form, back up and restore the Zigbee coordinator.")
    app.add_typer(emulate_app, name="emulate", help="Run an emulated coordinator (a virtual dongle) with simulated HAN devices behind it.")


standalone = new_app(name="han-ota")
register(standalone)

__all__ = ["emulate_app", "parse_listen", "radio_app", "register", "resolve_target", "serve_emulator", "standalone"]

if __name__ == "__main__":
    standalone()
