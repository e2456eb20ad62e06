"""`han-ota report`: offline from a state directory to HTML, JSON and CSV; errors that name the fix (issue 15 part 3)."""

from __future__ import annotations

import csv
import datetime as dt
import json
import re
import shutil
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from gateway.audit import AuditLog
from gateway.ota.events import SessionState
from gateway.store import ActivationRequest, JobKind, JobRecord, StateStore
from han_ota.cli import _mount, app
from han_ota.cli_report import _ranges

DATA = Path(__file__).parents[1] / "data" / "report"
runner = CliRunner()


@pytest.fixture(autouse=True)
def mounted() -> None:
    _mount()


@pytest.fixture
def bench(tmp_path: Path) -> Path:
    """A copy of the real trial's state directory and a config with its channel capacity."""
    state = tmp_path / "state"
    state.mkdir()
    shutil.copy(DATA / "trial10.audit.jsonl", state / "audit.jsonl")
    (tmp_path / "config.toml").write_text('state_dir = "state"\ncontrol_socket = "c.sock"\n[ota]\nrate_bytes_per_s = 2500\n')
    return tmp_path


def report(bench: Path, *args: str) -> Any:
    return runner.invoke(app, ["report", "--config", str(bench / "config.toml"), *args])


def test_html_json_and_csv_from_a_state_directory(bench: Path) -> None:
    out = bench / "out"
    out.mkdir()
    result = report(bench, "-o", str(out / "r.html"), "--json", str(out / "r.json"), "--csv", str(out / "r.csv"))
    assert result.exit_code == 0, result.output
    assert result.output.startswith(f"wrote {out / 'r.html'}, {out / 'r.json'}, {out / 'r.csv'}: 10 device(s)")
    page = (out / "r.html").read_text()
    assert page.startswith("<!DOCTYPE html>") and page.count("<svg") == 4  # progress, throughput, states, traffic
    assert "hash chain verified, 694 records" in page and "no background traffic recorded" in page
    # Self-contained: nothing to fetch at view time (url(#...) are the SVG's own clip paths;
    # the namespaces are names, not fetches).
    assert not re.search(r"<script|<link|<img|<iframe|\bsrc=|url\((?!#)|@import", page)
    assert set(re.findall(r"https?://[^\"' )<]+", page)) <= {"http://www.w3.org/2000/svg", "http://www.w3.org/1999/xlink"}
    figures = json.loads((out / "r.json").read_text())
    assert [d["job"] for d in figures["devices"]] == list(range(1, 11)) and figures["trial"]["capacity_bps"] == 2500
    rows = list(csv.DictReader((out / "r.csv").read_text().splitlines()))
    assert [r["state"] for r in rows].count("confirmed") == 8 and rows[5]["outcome"] == "cancelled: cancelled by the user"
    # --state-dir reads another directory, whatever the config says.
    elsewhere = runner.invoke(app, ["report", "--state-dir", str(bench / "state"), "-o", str(out / "s.html"), "--job", "3", "--job", "4"])
    assert elsewhere.exit_code == 0, elsewhere.output
    assert "2 device(s)" in elsewhere.output and "jobs: 3, 4" in (out / "s.html").read_text()


def test_a_window_of_time(bench: Path) -> None:
    out = bench / "w.json"
    # Job 10 was accepted at 02:00:10.229 UTC and job 6 cancelled at 02:00:17.978: in between, all ten transfer.
    result = report(bench, "-o", str(bench / "w.html"), "--json", str(out), "--until", "2026-12-04T02:00:12Z")
    assert result.exit_code == 0, result.output
    devices = json.loads(out.read_text())["devices"]
    assert len(devices) == 10 and all(d["state"] == "transferring" for d in devices)
    # From 02:00 UTC (03:00+01:00) on, jobs 1-6 were accepted before the window: only a store names them.
    window = ("--since", "2026-12-04T03:00:00+01:00", "--until", "2026-12-04T02:00:30Z")
    late = report(bench, "-o", str(bench / "l.html"), *window, "--json", str(out))
    assert late.exit_code == 1 and "job 1: its job.accepted record is outside the selection and the state store does not have it" in late.output
    with StateStore.in_state_dir(bench / "state") as store:
        for row in map(json.loads, (DATA / "trial10.audit.jsonl").read_text().splitlines()):
            if row["event"] == "job.accepted":
                image = {k: row[k] for k in ("manufacturer_code", "image_type", "file_version", "size")}
                when = dt.datetime.fromisoformat(row["ts"].replace("Z", "+00:00"))
                record = JobRecord(row["device"], row["image"], row["sha256"], **image, kind=JobKind(row["kind"]), activation=ActivationRequest.none(), created_utc=when)
                assert store.create_job(record) == row["job"]
                store.update_job(row["job"], state=SessionState.CANCELLED, reason="test")
    late = report(bench, "-o", str(bench / "l.html"), *window, "--json", str(out))
    assert late.exit_code == 0, late.output
    devices = json.loads(out.read_text())["devices"]
    assert [d["job"] for d in devices] == list(range(1, 11)) and devices[0]["image_size"] == 12122


@pytest.mark.parametrize(
    ("args", "code", "words"),
    [
        (["--job", "99"], 1, ["no job 99 in the audit log of", "jobs there: 1-10"]),
        (["--since", "soon"], 2, ["--since 'soon' is not a time", "2026-12-04T01:00:00Z"]),
        (["--since", "2026-12-04T03:00:00Z", "--until", "2026-12-04T02:00:00Z"], 2, ["is after --until"]),
        (["--since", "2027-01-01T00:00:00Z"], 1, ["nothing to report between 2027-01-01T00:00:00Z and the end", "jobs in the log: 1-10"]),
        (["--state-dir", "/nonexistent/state"], 1, ["--state-dir /nonexistent/state is not a directory", "han-ota config check"]),
    ],
)
def test_errors_name_the_problem_and_the_fix(bench: Path, args: list[str], code: int, words: list[str]) -> None:
    result = report(bench, "-o", str(bench / "r.html"), *args)
    assert result.exit_code == code, result.output
    for word in words:
        assert word in result.output, (word, result.output)
    assert not (bench / "r.html").exists()


def test_no_audit_log_and_an_unwritable_output(bench: Path, tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    result = runner.invoke(app, ["report", "--state-dir", str(empty), "-o", str(tmp_path / "r.html")])
    assert result.exit_code == 1 and f"no audit log in {empty} (audit.jsonl)" in result.output
    result = report(bench, "-o", str(bench / "missing" / "r.html"))
    assert result.exit_code == 1 and f"cannot write {bench / 'missing' / 'r.html'}" in result.output and "directory exists" in result.output


def test_a_broken_chain_is_said_and_figures_still_made(bench: Path) -> None:
    audit = bench / "state" / "audit.jsonl"
    audit.write_text(audit.read_text().replace('"percent":10', '"percent":11', 1))
    result = report(bench, "-o", str(bench / "r.html"))
    assert result.exit_code == 0 and "warning:" in result.output and "HASH CHAIN BROKEN at record" in result.output
    assert "HASH CHAIN BROKEN" in (bench / "r.html").read_text()


def test_text_from_the_records_is_escaped(tmp_path: Path) -> None:
    clock = iter(dt.datetime(2026, 12, 4, 0, 0, s, tzinfo=dt.timezone.utc) for s in range(60))
    with AuditLog.in_state_dir(tmp_path, clock=lambda: next(clock)) as log:
        fields = {"size": 100, "manufacturer_code": 1, "image_type": 0, "file_version": 2, "sha256": "ab" * 32, "activation": "none"}
        log.append("job.accepted", device="00:11:22:33:44:55:66:77", job=1, kind="<i>hcalcs</i>", **fields)
        log.append("job.state", device="00:11:22:33:44:55:66:77", job=1, old="pending", new="failed", reason="<script>alert(1)</script> & more", offset=0)
    result = runner.invoke(app, ["report", "--state-dir", str(tmp_path), "-o", str(tmp_path / "r.html")])
    assert result.exit_code == 0, result.output
    page = (tmp_path / "r.html").read_text()
    assert "<script>" not in page and "<i>hcalcs" not in page
    assert "failed: &lt;script&gt;alert(1)&lt;/script&gt; &amp; more" in page and "&lt;i&gt;hcalcs&lt;/i&gt;" in page


def test_ranges() -> None:
    assert _ranges([1, 2, 3, 5, 7, 8]) == "1-3, 5, 7-8" and _ranges([]) == ""


async def test_a_report_of_what_a_daemon_just_wrote(tmp_path: Path) -> None:
    """The figures read the records the daemon writes today, not only the kept fixture."""
    import asyncio
    import tempfile

    from han_ota.client import Client, resolve_config
    from han_ota.daemon import Daemon
    from radios.sim.testing import build_ota_image

    short = Path(tempfile.mkdtemp(prefix="hor", dir="/tmp"))  # a Unix socket path must be short
    try:
        (short / "state").mkdir()
        path = short / "config.toml"
        path.write_text('state_dir = "state"\ncontrol_socket = "run/c.sock"\n[ota]\nrate_bytes_per_s = 4000\n')
        cfg = resolve_config(path)
        fw = short / "fw.ota"
        fw.write_bytes(build_ota_image(0x121D, 0x0000, 2, b"\x5a" * 3000, min_hw=0x1111, max_hw=0x1111))
        one, two = "00:11:22:33:44:55:66:01", "00:11:22:33:44:55:66:02"
        daemon = Daemon(cfg, [f"hcalcs:{one}:query_delay=0.05", f"hcalcs:{two}:query_delay=0.05"])
        await daemon.start()
        await daemon.wait_radio(10)
        try:
            client = Client(cfg.control_socket)
            first = await asyncio.to_thread(client.push, fw, one, activate_now=True)
            second = await asyncio.to_thread(client.push, fw, two)
            assert (await asyncio.to_thread(client.wait_job, first["job"], ("confirmed",), timeout=60))["state"] == "confirmed"
            assert (await asyncio.to_thread(client.wait_job, second["job"], ("held",), timeout=60))["state"] == "held"
        finally:
            await daemon.stop("test")
        out = tmp_path / "r.json"
        result = await asyncio.to_thread(runner.invoke, app, ["report", "--config", str(path), "-o", str(tmp_path / "r.html"), "--json", str(out)])
        assert result.exit_code == 0, result.output
        a, b = json.loads(out.read_text())["devices"]
        size = a["image_size"]
        assert (a["state"], a["mode"], a["block_size"], a["bytes_sent"]) == ("confirmed", "block", 63, size)
        assert a["transfer_s"] > 0 and a["throughput_bps"] == pytest.approx(size / a["transfer_s"], rel=0.01)  # rounded in JSON
        assert a["activation_latency_s"] is not None and "activation response 0 alert 0x8F43" in a["gbcs_codes"]
        assert (b["state"], b["outcome"], b["activation_latency_s"]) == ("held", "held: waiting for a CS06 Activate Firmware", None)
        assert b["hold_s"] > 0 and "device_verification alert 0x8F72" in b["gbcs_codes"]
    finally:
        shutil.rmtree(short, ignore_errors=True)


def test_an_output_behind_a_link_is_written_through_it(bench: Path) -> None:
    """`--csv /dev/stdout` must write to standard output, never replace the link with a file."""
    target = bench / "target.csv"
    target.write_text("old")
    link = bench / "link.csv"
    link.symlink_to(target)
    result = report(bench, "-o", str(bench / "r.html"), "--csv", str(link))
    assert result.exit_code == 0, result.output
    assert link.is_symlink() and target.read_text().startswith("job,device,kind")


def test_the_daemon_and_the_cli_never_load_matplotlib() -> None:
    """Only `han-ota report` draws charts; a hub's daemon must not pay for a plotting library."""
    import subprocess
    import sys

    code = "import sys, han_ota.cli as c, han_ota.daemon, gateway.report.figures; c._mount(); print('matplotlib' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "False"
