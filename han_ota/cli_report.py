"""``han-ota report``: a trial's figures as HTML (with charts), JSON and CSV, offline.

Wiring only: it reads the state directory's audit log (and its store, for jobs whose
acceptance lies before ``--since``), hands the records to gateway/report for the
figures and to han_ota/report_html.py for the page, and writes the files. It reads
the files, not the control socket, so it works the same with the daemon running
(the log is append-only and the store is WAL) or stopped, or on a copy of a
state directory from another bench (``--state-dir``).

Exit codes: 0 written; 1 nothing to report or a file cannot be read or written (the
message names it and the fix); 2 bad usage or configuration.
"""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, NoReturn, Optional

import typer

from gateway.config import Config

if TYPE_CHECKING:
    from gateway.report.records import StoredJob, TrialRecord

EXIT_FAILED = 1
EXIT_USAGE = 2


def _fail(message: str, code: int = EXIT_FAILED) -> NoReturn:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def parse_when(text: str, option: str) -> dt.datetime:
    """``--since`` / ``--until``: ISO 8601, with a zone (``Z``, ``+01:00``) or without (local time)."""
    try:
        value = dt.datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        _fail(f"{option} {text!r} is not a time: use ISO 8601 such as 2026-12-04T01:00:00Z (without a zone: local time)", EXIT_USAGE)
    if value.tzinfo is None:
        value = value.astimezone()  # local time, as a person at the bench reads the clock
    return value.astimezone(dt.timezone.utc)


def report(
    output: Annotated[Path, typer.Option("-o", "--output", help="The HTML report to write (one self-contained file: opens offline).", metavar="FILE")],
    job: Annotated[list[int], typer.Option("--job", help="Only this job (repeatable; the numbers `han-ota status` shows). Default: every job in the window.", min=1, metavar="ID")] = [],  # noqa: B006 - typer reads the default
    since: Annotated[Optional[str], typer.Option("--since", help="Only records at or after TIME (ISO 8601; without a zone: local time).", metavar="TIME")] = None,
    until: Annotated[Optional[str], typer.Option("--until", help="Only records at or before TIME.", metavar="TIME")] = None,
    json_path: Annotated[Optional[Path], typer.Option("--json", help="Also write the figures as JSON to PATH.", metavar="PATH")] = None,
    csv_path: Annotated[Optional[Path], typer.Option("--csv", help="Also write one CSV row per device to PATH.", metavar="PATH")] = None,
    state_dir: Annotated[Optional[Path], typer.Option("--state-dir", help="Read this state directory (a daemon's, running or not, or a copy) instead of the config's.", metavar="DIR")] = None,
    config: Annotated[Optional[Path], typer.Option("--config", help="TOML configuration file: its state directory and [ota] rate_bytes_per_s (the channel capacity the shares are of).", metavar="PATH")] = None,
) -> None:
    """Write a trial report: per device image, block size and mode, transfer time, throughput, share of the channel, retries, WAIT_FOR_DATA, hold, activation latency and outcome with GBCS codes; charts of progress, throughput, states and background traffic."""
    from gateway.report.figures import NoTrialData, compute_trial
    from gateway.report.records import ReportInputError

    start = None if since is None else parse_when(since, "--since")
    end = None if until is None else parse_when(until, "--until")
    if start is not None and end is not None and start > end:
        _fail(f"--since {since} is after --until {until}: nothing can lie between them", EXIT_USAGE)
    cfg = _read_config(config)
    directory = _state_directory(cfg, state_dir)
    records, audit_status = _read_audit(directory)
    stored = _read_store(directory)
    wanted = sorted(set(job)) or None
    known = sorted({r.job for r in records if hasattr(r, "job")})
    missing = [j for j in (wanted or []) if j not in known]
    if missing:
        _fail(f"no job {', '.join(map(str, missing))} in the audit log of {directory}; jobs there: {_ranges(known) or 'none'}")
    try:
        trial = compute_trial(records, capacity_bps=cfg.ota.rate_bytes_per_s, stored=stored, jobs=wanted, since=start, until=end)
    except NoTrialData as exc:
        window = f" between {since or 'the start'} and {until or 'the end'}" if since or until else ""
        _fail(f"nothing to report{window} in {directory}: {exc} (jobs in the log: {_ranges(known) or 'none'})")
    except ReportInputError as exc:
        _fail(f"{directory / 'audit.jsonl'}: {exc}")

    from gateway.report.export import to_csv, to_json
    from han_ota.report_html import render

    selection = f"state directory {directory}; jobs: {', '.join(map(str, wanted)) if wanted else 'all'}"
    if since or until:
        selection += f"; records from {since or 'the start'} to {until or 'the end'}"
    page = render(trial, title=f"han-ota trial report: {len(trial.devices)} device(s)", selection=selection, audit_status=audit_status, generated=dt.datetime.now(dt.timezone.utc))
    _write(output, page)
    written = [str(output)]
    if json_path is not None:
        _write(json_path, to_json(trial))
        written.append(str(json_path))
    if csv_path is not None:
        _write(csv_path, to_csv(trial))
        written.append(str(csv_path))
    typer.echo(f"wrote {', '.join(written)}: {len(trial.devices)} device(s), {trial.span_s:.1f} s of trial, OTA busy {trial.ota_busy_s:.1f} s")


# --------------------------------------------------------------------------- inputs


def _read_config(path: Optional[Path]) -> Config:
    from gateway.config import ConfigError
    from han_ota.client import resolve_config

    try:
        return resolve_config(path)
    except ConfigError as exc:
        _fail(str(exc), EXIT_USAGE)


def _state_directory(cfg: Config, given: Optional[Path]) -> Path:
    from han_ota.statedir import describe, with_state_dir

    if given is not None:
        if not given.is_dir():
            _fail(f"--state-dir {given} is not a directory: give the daemon's state directory (`han-ota config check` names it) or a copy of it")
        return given
    cfg = with_state_dir(cfg)
    if not cfg.state_dir.is_dir():
        _fail(f"state directory {describe(cfg)} does not exist: pass --state-dir DIR, or the daemon's --config")
    return cfg.state_dir


def _read_audit(directory: Path) -> tuple[list[TrialRecord], str]:
    from gateway.audit import DEFAULT_FILENAME, AuditError, read_records, verify_log
    from gateway.report.records import ReportInputError, parse_records
    from gateway.store import DEFAULT_FILENAME as STORE_FILENAME
    from gateway.store import read_audit_anchor

    path = directory / DEFAULT_FILENAME
    if not path.is_file():
        _fail(f"no audit log in {directory} ({DEFAULT_FILENAME}): is it a han-ota state directory? Give --state-dir the daemon's state directory")
    try:
        records = parse_records(r.as_dict() for r in read_records(path))
        check = verify_log(path, expect_head=read_audit_anchor(directory / STORE_FILENAME))
    except (AuditError, OSError) as exc:
        _fail(f"cannot read the audit log {path}: {exc}")
    except ReportInputError as exc:
        _fail(f"{path}: {exc}")
    if check.ok:
        status = f"{path}: hash chain verified, {check.records} records"
    else:
        status = f"{path}: HASH CHAIN BROKEN at record {check.first_bad_seq}: {check.reason} (figures from the records as they are)"
        typer.echo(f"warning: {status}; `han-ota log --verify` says more", err=True)
    return records, status


def _read_store(directory: Path) -> list[StoredJob]:
    """The store's jobs, when there is a store: they name jobs accepted before --since."""
    from gateway.report.records import ImageRef, JobIdentity, StoredJob
    from gateway.store import DEFAULT_FILENAME, StateStore, StoreError

    path = directory / DEFAULT_FILENAME
    if not path.is_file() or not os.access(path, os.R_OK):
        return []
    try:
        with StateStore(path) as store:
            jobs = store.list_jobs()
    except StoreError as exc:
        typer.echo(f"warning: {exc}; the report uses the audit log alone", err=True)
        return []
    out = []
    for j in jobs:
        r = j.record
        image = ImageRef(r.manufacturer_code, r.image_type, r.file_version, r.size, r.image_sha256)
        identity = JobIdentity(r.device, r.kind.value, image, r.activation.mode.value, str(r.priority))
        out.append(StoredJob(j.job_id, identity, "queued" if j.queued else j.state.value, j.reason, r.created_utc))
    return out


def _write(path: Path, text: str) -> None:
    # Written in place, not through a renamed temporary file: a rename would replace a
    # link (e.g. /dev/stdout) or a device with a regular file instead of writing to it.
    try:
        with open(path, "w", encoding="utf-8") as f:
            f.write(text)
    except OSError as exc:
        _fail(f"cannot write {path}: {exc.strerror or exc}; check that its directory exists and is writable")


def _ranges(numbers: list[int]) -> str:
    """1, 2, 3, 5 -> "1-3, 5"."""
    out: list[str] = []
    for n in numbers:
        if out and out[-1].split("-")[-1] == str(n - 1):
            out[-1] = f"{out[-1].split('-')[0]}-{n}"
        else:
            out.append(str(n))
    return ", ".join(out)


def register(app: typer.Typer) -> None:
    app.command("report")(report)
