"""``han-ota run | status | devices | cancel | log | config check``: the daemon's commands.

Wiring only. ``register(app)`` adds them to the main ``han-ota`` app; running this
module (``python -m han_ota.cli_daemon ...``) gives the same commands on their own.

Every command takes ``--config PATH`` and resolves it with
``han_ota.client.resolve_config`` (the one rule: explicit path, else
/etc/han-ota/config.toml if it exists, else per-user built-in defaults).

Exit codes: 0 ok; 1 refused or failed (the daemon's message is printed); 2 bad
configuration or usage; 3 (status, devices, cancel) no daemon is running.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sys
import time
from pathlib import Path
from collections.abc import Callable
from typing import Annotated, Any, NoReturn, Optional, TextIO

import typer

from eui64 import Eui64, Eui64Error
from gateway.config import Config, ConfigError, load_config
from gateway.ota.priority import priority_label
from han_ota.cli_app import new_app, print_json
from han_ota.client import Client, DaemonError, elsewhere, find_daemon, resolve_config
from han_ota.statedir import describe, with_state_dir
from han_ota.security import security_cell

EXIT_FAILED = 1
EXIT_CONFIG = 2
EXIT_NOT_RUNNING = 3
EXIT_USAGE = 2

ConfigOption = Annotated[
    Optional[Path],
    typer.Option("--config", help="TOML configuration file [default: /etc/han-ota/config.toml, or per-user built-in defaults when it does not exist]", show_default=False),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON instead of text.")]


def _fail(message: str, code: int = EXIT_FAILED, *, as_json: bool = False) -> NoReturn:
    if as_json:
        typer.echo(json.dumps({"error": message}))
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def _config(path: Path | None, *, as_json: bool = False) -> Config:
    try:
        return resolve_config(path)
    except ConfigError as exc:
        _fail(str(exc), EXIT_CONFIG, as_json=as_json)


def _client(cfg: Config, *, as_json: bool = False) -> Client:
    try:
        client = find_daemon(cfg)
    except DaemonError as exc:
        _fail(str(exc), EXIT_FAILED, as_json=as_json)
    if client is None:
        others = elsewhere(cfg)
        if others:
            where = "; ".join(f"one answers on {sock}" + (f" (config {conf}): pass --config {conf}" if conf else " (built-in defaults)") for sock, conf in others)
            _fail(f"no han-ota daemon answers on {cfg.control_socket}, the socket of {cfg.source or 'the built-in defaults'}; {where}", EXIT_NOT_RUNNING, as_json=as_json)
        _fail(
            f"no han-ota daemon is running (nothing answers on {cfg.control_socket}); start it with "
            "`systemctl start han-ota` or `han-ota run`",
            EXIT_NOT_RUNNING,
            as_json=as_json,
        )
    return client


# --------------------------------------------------------------------------- run


def run(
    config: ConfigOption = None,
    sim_device: Annotated[list[str], typer.Option("--sim-device", help="A simulated device KIND:IEEE[:key=value...] (repeatable; added to the config's [[sim_device]] tables). See `han-ota push --help` for the keys.")] = [],  # noqa: B006 - typer reads the default
    sim_traffic: Annotated[list[str], typer.Option("--sim-traffic", help="Background traffic on the simulated HAN, KIND:PERIOD[:size=N][:device=IEEE|all] (KIND metering, price or tunnel; repeatable; added to the config's [[sim_traffic]] tables).")] = [],  # noqa: B006 - typer reads the default
    verbose: Annotated[int, typer.Option("--verbose", "-v", count=True, help="More log output (-vv includes the radio libraries).")] = 0,
) -> None:
    """Run the gateway daemon: radio, jobs, activation gate and the control socket."""
    import dataclasses

    from gateway.config import ConfigError, parse_sim_traffic
    from han_ota.daemon import DaemonStartError, run_daemon

    cfg = _config(config)
    try:
        cfg = dataclasses.replace(cfg, sim_traffic=cfg.sim_traffic + tuple(parse_sim_traffic(text) for text in sim_traffic))
    except ConfigError as exc:
        _fail(str(exc), EXIT_FAILED)
    _setup_logging(verbose)
    try:
        code = asyncio.run(run_daemon(cfg, sim_device))
    except DaemonStartError as exc:
        _fail(str(exc), EXIT_FAILED)
    except KeyboardInterrupt:  # a second Ctrl-C during shutdown
        raise typer.Exit(130) from None
    raise typer.Exit(code)


def _setup_logging(verbose: int) -> None:
    # Under systemd the journal stamps each line; elsewhere the time helps.
    stamp = "" if os.environ.get("JOURNAL_STREAM") else "%(asctime)s "
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, stream=sys.stderr, format=stamp + "%(levelname)s %(name)s: %(message)s")
    for noisy in ("zigpy", "bellows", "zigpy_znp", "aiosqlite", "radios"):
        logging.getLogger(noisy).setLevel(logging.DEBUG if verbose > 1 else logging.WARNING)


# --------------------------------------------------------------------------- status


def status(
    config: ConfigOption = None,
    as_json: JsonOption = False,
    watch: Annotated[bool, typer.Option("--watch", help="Redraw the table of all jobs every --interval seconds until interrupted (Ctrl-C exits 0). With --json: one status object per line.")] = False,
    interval: Annotated[float, typer.Option("--interval", help="Seconds between redraws with --watch.", min=0.1)] = 2.0,
) -> None:
    """Jobs, holds and schedules of the running daemon, and its radio."""
    cfg = _config(config, as_json=as_json)
    client = _client(cfg, as_json=as_json)
    if watch:
        raise typer.Exit(watch_status(client.status, interval, sys.stdout, as_json=as_json))
    try:
        body = client.status()
    except DaemonError as exc:
        _fail(str(exc), as_json=as_json)
    if as_json:
        print_json(body)
        return
    for line in format_status(body):
        typer.echo(line)


def watch_status(
    fetch: Callable[[], dict[str, Any]],
    interval: float,
    out: TextIO,
    *,
    as_json: bool = False,
    sleep: Callable[[float], None] = time.sleep,
) -> int:
    """``status --watch``: redraw until Ctrl-C, then exit 0.

    On a terminal each frame replaces the last (clear screen, cursor home); into a
    pipe or file frames follow one another, a blank line apart, so a log of them reads
    back. A daemon that stops answering is said in the frame and asked again: a watch
    outlives a daemon restart.
    """
    redraw = "\x1b[H\x1b[2J" if out.isatty() and not as_json else ""
    frames = 0
    try:
        while True:
            try:
                body = fetch()
            except DaemonError as exc:
                body, lines = None, [f"daemon not answering: {exc}; asking again every {interval:g} s"]
            else:
                lines = format_status(body)
            if as_json:
                out.write(json.dumps(body if body is not None else {"error": lines[0]}) + "\n")
            else:
                head = f"{time.strftime('%H:%M:%S')}  every {interval:g} s; Ctrl-C to stop"
                out.write(redraw + ("\n" if frames and not redraw else "") + "\n".join([head, *lines]) + "\n")
            out.flush()
            frames += 1
            sleep(interval)
    except KeyboardInterrupt:
        if not as_json:
            out.write("\n")
            out.flush()
        return 0


def format_status(body: dict[str, Any]) -> list[str]:
    from han_ota.progress import human_bytes, human_seconds

    d = body["daemon"]
    radio = d["radio"]
    lines = [
        f"han-ota {d['version']} (pid {d['pid']}), up {human_seconds(d['uptime_s'])}; radio {radio['kind']} "
        f"{'up' if radio['up'] else 'DOWN'}" + (f" ({radio['last_error']})" if not radio["up"] and radio.get("last_error") else ""),
    ]
    if not d["store"]["ok"]:
        lines.append(f"STATE STORE WRITES FAILING: {d['store']['error']}")
    if d["audit"].get("chain_error"):
        lines.append(f"AUDIT CHAIN BROKEN: {d['audit']['chain_error']}")
    elif not d["audit"]["ok"]:
        lines.append(f"AUDIT LOG WRITES FAILING: {d['audit']['error']}")
    if d["audit"].get("warning"):
        lines.append(f"warning at start: {d['audit']['warning']}")
    jobs = body["jobs"]
    if not jobs:
        lines.append("no jobs")
        return lines
    # PRIORITY once jobs carry one (issue 15 part 1); until then the table keeps its columns.
    priorities = any(j.get("priority") is not None for j in jobs)
    rows = [("JOB", "DEVICE", "KIND", "STATE", "PROGRESS", "RATE", "ETA", *(("PRIORITY",) if priorities else ()), "REASON")]
    for j in jobs:
        size = j.get("size") or 0
        done = j.get("bytes") or 0
        pct = f"{100 * done / size:5.1f}%" if size else "-"
        rate = j.get("rate_bytes_per_s")
        rate_s = f"{human_bytes(rate)}/s" if rate and j["state"] == "transferring" else "-"
        eta = j.get("eta_seconds")
        eta_s = human_seconds(eta) if eta is not None and j["state"] == "transferring" else "-"
        reason = j.get("reason") or ""
        if j["state"] == "scheduled" and j.get("scheduled_at"):
            reason = f"activation at {j['scheduled_at']}" + (f"; {reason}" if reason else "")
        priority = (str(j["priority"]) if j.get("priority") is not None else "-",) if priorities else ()
        rows.append((str(j["job"]), j["device"], j.get("kind") or "-", j["state"], pct, rate_s, eta_s, *priority, reason))
    lines += _table(rows)
    if body.get("schedules"):
        lines.append("")
        lines.append("scheduled activations:")
        for s in body["schedules"]:
            lines.append(f"  job {s['job']} {s.get('device') or ''} at {s['at']}")
    return lines


def _table(rows: list[tuple[str, ...]]) -> list[str]:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    out = []
    for r in rows:
        cells = [c.ljust(w) for c, w in zip(r[:-1], widths[:-1])] + [r[-1]]
        out.append("  ".join(cells).rstrip())
    return out


# --------------------------------------------------------------------------- devices


def devices(config: ConfigOption = None, as_json: JsonOption = False) -> None:
    """Devices on the daemon's network, with their job state."""
    cfg = _config(config, as_json=as_json)
    client = _client(cfg, as_json=as_json)
    try:
        listing = client.devices()
    except DaemonError as exc:
        _fail(str(exc), as_json=as_json)
    if as_json:
        print_json(listing)
        return
    if not listing:
        typer.echo("no devices on the network (is the radio up? see han-ota status)")
        return
    rows = [("IEEE", "NWK", "KIND", "MODEL", "MANUFACTURER", "SECURITY", "JOB", "STATE")]
    for d in listing:
        rows.append((d["ieee"], d["nwk"], d.get("kind") or "-", d.get("model") or "-", d.get("manufacturer") or "-",
                     security_cell(d.get("security")), d.get("job") or "-", d.get("state") or "-"))
    for line in _table(rows):
        typer.echo(line)


# --------------------------------------------------------------------------- cancel


def cancel(
    job_id: Annotated[str, typer.Argument(metavar="JOB_ID", help="The job number `han-ota status` shows.")],
    config: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """Cancel a job. Cancelling never activates an image: a held device is told to discard it (at its next Upgrade End Request), and a new push to it can follow at once."""
    cfg = _config(config, as_json=as_json)
    client = _client(cfg, as_json=as_json)
    try:
        job = client.cancel(job_id)
    except DaemonError as exc:
        _fail(str(exc), as_json=as_json)
    if as_json:
        print_json(job)
    else:
        typer.echo(f"job {job['job']} ({job['device']}): {job['state']}" + (f" ({job['reason']})" if job.get("reason") else ""))


# --------------------------------------------------------------------------- wait


def wait(
    job_id: Annotated[str, typer.Argument(metavar="JOB_ID", help="The job number `han-ota status` shows.")],
    until: Annotated[str, typer.Option("--until", help="The state to wait for: held, scheduled or confirmed (an end state always ends the wait).")] = "held",
    timeout: Annotated[Optional[float], typer.Option("--timeout", help="Stop waiting after this many seconds (the job goes on).")] = None,
    config: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """Follow a daemon's job with a progress bar until it reaches --until; exit 0 if it did."""
    from han_ota.follow import follow_job

    if until not in ("held", "scheduled", "confirmed"):
        _fail(f"--until {until!r}: use held, scheduled or confirmed", EXIT_USAGE, as_json=as_json)
    cfg = _config(config, as_json=as_json)
    client = _client(cfg, as_json=as_json)
    try:
        job = client.job(job_id)
    except DaemonError as exc:
        _fail(str(exc), as_json=as_json)
    raise typer.Exit(follow_job(client, job, until, timeout=timeout, json_out=as_json, config=config))


# --------------------------------------------------------------------------- log


def log(
    device: Annotated[Optional[str], typer.Option("--device", help="Only this device's records (IEEE address).")] = None,
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Keep printing new records as they are written.")] = False,
    verify: Annotated[bool, typer.Option("--verify", help="Check the hash chain instead of printing records; exit 1 if it is broken.")] = False,
    since: Annotated[Optional[int], typer.Option("--since", help="Only records after this sequence number.", min=0)] = None,
    seal: Annotated[bool, typer.Option("--seal", help="Recover from a broken or cut log, with the daemon stopped: keep it as audit.sealed-<time>.jsonl, recover anti-replay counters from its sound part, and start a new chain that records why.")] = False,
    config: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """The audit log: through the daemon when it runs, else straight from the state directory."""
    cfg = _config(config, as_json=as_json)
    if seal:
        if verify or follow or device is not None or since is not None:
            _fail("--seal takes no --verify, --follow, --device or --since", EXIT_CONFIG, as_json=as_json)
        _seal(cfg, config, as_json)
        return
    if device is not None:
        try:
            device = str(Eui64.parse(device, "--device"))
        except Eui64Error as exc:
            _fail(str(exc), EXIT_CONFIG, as_json=as_json)
    try:
        client = find_daemon(cfg)
    except DaemonError:
        client = None  # not allowed on the socket: the file may still be readable
    source: _LogSource = _DaemonLog(client) if client is not None else _FileLog(cfg.state_dir / "audit.jsonl")
    try:
        if verify:
            result = source.verify()
            if as_json:
                print_json(result)
            elif result["ok"]:
                typer.echo(f"audit log OK: {result['records']} records, chain intact, head {result['head_hash']}")
            else:
                typer.echo(f"audit log BROKEN: {result['reason']} ({result['records']} records before it verify)")
            raise typer.Exit(0 if result["ok"] else EXIT_FAILED)
        last = since
        for record in source.read(device, since):
            _print_record(record, as_json)
            last = record["seq"]
        if follow:
            try:
                source.follow(device, last, lambda r: _print_record(r, as_json))
            except KeyboardInterrupt:
                pass
    except BrokenPipeError:
        raise  # `han-ota log | head -1`: the reader left; main() exits quietly
    except (DaemonError, OSError) as exc:
        _fail(str(exc), as_json=as_json)
    except Exception as exc:  # AuditError, AuditCorrupt: the message names the file and the fix
        from gateway.audit import AuditError

        if isinstance(exc, AuditError):
            _fail(str(exc), as_json=as_json)
        raise


def _seal(cfg: Config, config: Path | None, as_json: bool) -> None:
    from gateway.audit import AuditError
    from gateway.integrity import NothingToSeal, seal_log
    from gateway.store import StateStore, StoreError

    try:
        running = find_daemon(cfg)
    except DaemonError as exc:  # something listens but we may not ask it: assume it runs
        _fail(f"cannot tell whether the daemon is running: {exc}", as_json=as_json)
    if running is not None:
        _fail(
            f"the daemon is running (it answers on {cfg.control_socket}): stop it first (systemctl stop han-ota), "
            "then run han-ota log --seal" + (f" --config {config}" if config else ""),
            as_json=as_json,
        )
    if not cfg.state_dir.is_dir():
        _fail(f"state directory {cfg.state_dir} does not exist: there is no audit log to seal", as_json=as_json)
    try:
        with StateStore.in_state_dir(cfg.state_dir) as store:
            result = seal_log(cfg.state_dir, store)
    except NothingToSeal as exc:
        if as_json:
            typer.echo(json.dumps({"sealed": False, "message": str(exc)}))
        else:
            typer.echo(str(exc))
        return
    except (AuditError, StoreError, OSError) as exc:
        _fail(str(exc), as_json=as_json)
    if as_json:
        typer.echo(json.dumps(result.to_dict()))
        return
    kept = f"kept as {cfg.state_dir / result.sealed_file}" if result.sealed_file else "there was no log file"
    typer.echo(f"sealed the broken audit log ({result.reason}); {kept}")
    typer.echo(f"  last good record {result.last_good_seq} ({result.last_good_hash})")
    raised = ", ".join(f"{o} to {c}" for o, c in result.counters_raised.items()) or "none needed raising"
    typer.echo(f"  anti-replay counters recovered from its sound part: {raised}")
    typer.echo(f"  new chain started: record {result.record.seq} {result.record.event}; the daemon can start")


def _print_record(record: dict[str, Any], as_json: bool) -> None:
    if as_json:
        typer.echo(json.dumps(record, sort_keys=True, separators=(",", ":")))
        return
    reserved = {"seq", "ts", "event", "device", "job", "prev", "hash"}
    parts = [f"{record['seq']:>6}", record["ts"], record["event"]]
    if record.get("device"):
        parts.append(record["device"])
    if record.get("job") is not None:
        parts.append(f"job={record['job']}")
    for key in sorted(k for k in record if k not in reserved):
        value = record[key]
        if value is None:
            continue
        text = value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))
        if isinstance(value, str) and (not value or any(c.isspace() for c in value)):
            text = json.dumps(value, ensure_ascii=False)
        parts.append(f"{key}={text}")
    typer.echo(" ".join(parts))


class _LogSource:
    def verify(self) -> dict[str, Any]: ...
    def read(self, device: str | None, since: int | None) -> Any: ...
    def follow(self, device: str | None, since: int | None, emit: Any) -> None: ...


class _DaemonLog(_LogSource):
    PAGE = 1000

    def __init__(self, client: Client) -> None:
        self.client = client

    def verify(self) -> dict[str, Any]:
        return self.client.log_verify()

    def read(self, device: str | None, since: int | None) -> Any:
        cursor = since
        while True:
            page = self.client.log(device=device, since=cursor, limit=self.PAGE)
            for record in page["records"]:
                yield record
                cursor = record["seq"]
            if len(page["records"]) < self.PAGE:
                return

    def follow(self, device: str | None, since: int | None, emit: Any) -> None:
        cursor = since
        while True:
            page = self.client.log(device=device, since=cursor, limit=self.PAGE)
            for record in page["records"]:
                emit(record)
                cursor = record["seq"]
            if len(page["records"]) < self.PAGE:
                time.sleep(0.5)


class _FileLog(_LogSource):
    def __init__(self, path: Path) -> None:
        self.path = path

    def verify(self) -> dict[str, Any]:
        import dataclasses

        from gateway.audit import verify_log
        from gateway.store import DEFAULT_FILENAME, read_audit_anchor

        # The store's note of the head shows records cut off the end, as the daemon's check does.
        anchor = read_audit_anchor(self.path.with_name(DEFAULT_FILENAME))
        return dataclasses.asdict(verify_log(self.path, expect_head=anchor)) | {"path": str(self.path)}

    def read(self, device: str | None, since: int | None) -> Any:
        from gateway.audit import read_records

        for record in read_records(self.path, device=device, since_seq=since):
            yield record.as_dict()

    def follow(self, device: str | None, since: int | None, emit: Any) -> None:
        from gateway.audit import follow_records

        async def go() -> None:
            async for record in follow_records(self.path, device=device, since_seq=since):
                emit(record.as_dict())

        asyncio.run(go())


# --------------------------------------------------------------------------- config check

config_app = new_app(help="Check the configuration file.")


@config_app.command("check")
def config_check(
    path: Annotated[Path, typer.Argument(metavar="PATH", help="The TOML configuration file to check.")],
    as_json: JsonOption = False,
) -> None:
    """Validate PATH as `han-ota run` would read it; print a summary, or the first error (exit 1)."""
    from han_ota.daemon import DaemonStartError, sim_specs
    from han_ota.hub_alerts import hub_summary

    try:
        cfg = with_state_dir(load_config(path))
        specs = sim_specs(cfg) if cfg.radio.kind == "sim" else []
        from gateway.activation import load_trust

        try:
            load_trust(cfg)
        except Exception as exc:  # the trust store's own error names the file
            raise DaemonStartError(f"{path}: [[supplier]] trust anchors cannot be loaded: {exc}") from None
    except (ConfigError, DaemonStartError) as exc:
        if as_json:
            typer.echo(json.dumps({"valid": False, "error": str(exc), "key": getattr(exc, "key", None)}))
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(EXIT_FAILED) from None
    warnings = []
    if not cfg.state_dir.is_dir():
        if cfg.state_dir.parent.is_dir() or cfg.state_dir_from == "per-user":
            warnings.append(f"state directory {describe(cfg)} does not exist yet: han-ota creates it (mode 0700) when it first needs it")
        else:
            warnings.append(f"state directory {describe(cfg)} does not exist, nor does {cfg.state_dir.parent}: create it, or let systemd's StateDirectory= do it")
    for s in cfg.suppliers:
        if s.allow_any_role:
            warnings.append(f"supplier {s.id}: allow_any_role = true, a certificate of any GBCS role is accepted as this supplier's (lab use only)")
    if cfg.radio.kind != "sim" and cfg.sim_devices:
        warnings.append(f"[[sim_device]] tables are ignored with radio.kind = {cfg.radio.kind!r}")
    summary = {
        "valid": True,
        "path": str(path),
        "state_dir": str(cfg.state_dir),
        "state_dir_from": cfg.state_dir_from,
        "control_socket": str(cfg.control_socket),
        "control_tcp": cfg.control_tcp,
        "radio": {"kind": cfg.radio.kind, "path": cfg.radio.path, "baudrate": cfg.radio.baudrate, "flow_control": cfg.radio.flow_control},
        "ota": {
            "block_cap": cfg.ota.block_cap,
            "aps_encryption": cfg.ota.aps_encryption,
            "stall_timeout_s": cfg.ota.stall_timeout_s,
            "rate_bytes_per_s": cfg.ota.rate_bytes_per_s,
            "burst_bytes": cfg.ota.burst_bytes,
            "max_inflight": cfg.ota.max_inflight,
            "han_share": cfg.ota.han_share,
            "windows": list(cfg.ota.windows),
            "priority_ppmid": cfg.ota.priority_ppmid,
            "priority_hcalcs": cfg.ota.priority_hcalcs,
        },
        "suppliers": [{"id": s.id, "anchor": str(s.anchor)} for s in cfg.suppliers],
        "devices": [{"ieee": str(d.ieee), "kind": d.kind, "supplier": d.supplier} for d in cfg.devices],
        "sim_devices": [{"ieee": str(s.ieee), "kind": s.kind} for s in specs],
        "hub": hub_summary(cfg),
        "warnings": warnings,
    }
    if as_json:
        print_json(summary)
        return
    typer.echo(f"{path}: OK")
    typer.echo(f"  state_dir       {describe(cfg)}")
    typer.echo(f"  control_socket  {cfg.control_socket}" + (f" and tcp {cfg.control_tcp}" if cfg.control_tcp else ""))
    radio = cfg.radio.kind + (f" at {cfg.radio.path}" if cfg.radio.path else "") + (f", {cfg.radio.baudrate} baud" if cfg.radio.baudrate else "")
    typer.echo(f"  radio           {radio}")
    o = cfg.ota
    budget = f"{o.rate_bytes_per_s:g} B/s budget" if o.han_share == 1 else f"{o.budget_bytes_per_s:g} B/s budget ({o.han_share:g} of {o.rate_bytes_per_s:g} B/s)"
    typer.echo(f"  ota             blocks <= {o.block_cap} B, {budget}, stall timeout {o.stall_timeout_s:g} s, APS encryption {'on' if o.aps_encryption else 'off'}")
    typer.echo(f"  windows         {', '.join(o.windows) or 'none (transfers at any time)'}")
    typer.echo(f"  priorities      ppmid {priority_label(o.priority_ppmid)}, hcalcs {priority_label(o.priority_hcalcs)} by default")
    typer.echo(f"  suppliers       {', '.join(s.id for s in cfg.suppliers) or 'none (no activation command can be verified)'}")
    typer.echo(f"  devices         {len(cfg.devices)} configured" + "".join(f"\n                  {str(d.ieee)} {d.kind} supplier {d.supplier or '-'}" for d in cfg.devices))
    if cfg.radio.kind == "sim":
        typer.echo(f"  sim devices     {', '.join(f'{s.kind}:{s.ieee}' for s in specs) or 'none'}")
    hub = summary["hub"]
    typer.echo(f"  hub             entity {hub['entity_id']}, alerts to {hub['acb_id']} {hub['alerts']}" + (f", GFI feed on {hub['gfi_feed']}" if hub["gfi_feed"] else ""))
    for warning in warnings:
        typer.echo(f"warning: {warning}", err=True)


# --------------------------------------------------------------------------- mounting


def register(app: typer.Typer) -> None:
    """Add run, status, devices, cancel, wait, log and `config check` to the han-ota app."""
    app.command("run")(run)
    app.command("status")(status)
    app.command("devices")(devices)
    app.command("cancel")(cancel)
    app.command("wait")(wait)
    app.command("log")(log)
    app.add_typer(config_app, name="config", help="Check the configuration file.")


standalone = new_app(name="han-ota")
register(standalone)

__all__ = ["config_app", "format_status", "register", "standalone", "watch_status"]

if __name__ == "__main__":
    standalone()
