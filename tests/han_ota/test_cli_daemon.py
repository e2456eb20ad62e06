"""`han-ota status | devices | cancel | log | config check | run` and the config resolution rule."""

from __future__ import annotations

import asyncio
import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from gateway.audit import AuditLog
from gateway.config import DEFAULT_CONFIG_PATH
from han_ota import cli_daemon
from han_ota.client import Client, builtin_config, resolve_config
from han_ota.daemon import Daemon
from radios.sim.testing import build_ota_image

runner = CliRunner()
HCALCS = "00:11:22:33:44:55:66:77"


def invoke(*args: str) -> Any:
    return runner.invoke(cli_daemon.standalone, list(args))


@pytest.fixture
def short_dir() -> Any:
    path = Path(tempfile.mkdtemp(prefix="hoc", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def write_config(root: Path, extra: str = "") -> Path:
    (root / "state").mkdir(exist_ok=True)
    path = root / "config.toml"
    path.write_text(f'state_dir = "state"\ncontrol_socket = "run/control.sock"\n{extra}')
    return path


# --------------------------------------------------------------------------- config check

GOOD = """
[radio]
kind = "sim"

[ota]
block_cap = 48
rate_bytes_per_s = 2000

[[device]]
ieee = "00:11:22:33:44:55:66:77"
kind = "hcalcs"

[[sim_device]]
kind = "hcalcs"
ieee = "00:11:22:33:44:55:66:77"
"""


def test_config_check_ok_prints_a_summary(short_dir: Path) -> None:
    path = write_config(short_dir, GOOD)
    result = invoke("config", "check", str(path))
    assert result.exit_code == 0, result.output
    assert f"{path}: OK" in result.output
    assert "blocks <= 48 B, 2000 B/s budget" in result.output
    assert "hcalcs:00:11:22:33:44:55:66:77" in result.output
    as_json = json.loads(invoke("config", "check", str(path), "--json").output)
    assert as_json["valid"] is True and as_json["ota"]["block_cap"] == 48 and as_json["warnings"] == []


@pytest.mark.parametrize(
    ("body", "words"),
    [
        ("colour = 1\n", ["colour", "unknown key", "allowed here"]),
        ('[radio]\nkind = "zigbee"\n', ["radio.kind", "'zigbee'", "expected one of sim, ezsp, znp"]),
        ('[radio]\nkind = "ezsp"\n', ["radio.path", "needs a path"]),
        ("[ota]\nblock_cap = 64\n", ["ota.block_cap", "64", "1 to 63"]),
        ('control_tcp = "8765"\n', ["control_tcp", "HOST:PORT"]),
        ("state_dir = [\n", ["not valid TOML"]),
        ('[[device]]\nieee = "0011"\nkind = "hcalcs"\n', ["device[0].ieee", "16 hex digits"]),
        ('[[sim_device]]\nkind = "meter"\nieee = "0011223344556677"\n', ["[[sim_device]] #1", "kind", "'meter'", "ppmid, hcalcs"]),
        ('[[sim_device]]\nkind = "hcalcs"\nieee = "0011223344556677"\nloss = 2\n', ["loss", "<= 1"]),
        ('[[supplier]]\nid = "90B3D51F30010000"\ncertificate = "missing.pem"\n', ["trust anchors", "missing.pem"]),
    ],
)
def test_config_check_names_the_key_the_value_and_what_is_allowed(short_dir: Path, body: str, words: list[str]) -> None:
    path = short_dir / "bad.toml"
    path.write_text(body)
    result = invoke("config", "check", str(path))
    assert result.exit_code == 1
    for word in words:
        assert word in result.output, (word, result.output)
    as_json = json.loads(invoke("config", "check", str(path), "--json").stdout.splitlines()[0])
    assert as_json["valid"] is False and words[0] in as_json["error"]


def test_config_check_missing_file_and_warnings(short_dir: Path) -> None:
    result = invoke("config", "check", str(short_dir / "none.toml"))
    assert result.exit_code == 1 and "no such file" in result.output
    path = short_dir / "c.toml"
    path.write_text('state_dir = "/nonexistent/state"\n')
    result = invoke("config", "check", str(path))
    assert result.exit_code == 0 and f"warning: state directory /nonexistent/state (state_dir in {path}) does not exist, nor does /nonexistent" in result.output
    path.write_text(f'state_dir = "{short_dir}/new"\n')
    result = invoke("config", "check", str(path))
    assert result.exit_code == 0 and "does not exist yet: han-ota creates it (mode 0700)" in result.output


# --------------------------------------------------------------------------- resolve_config


def test_resolve_config_rule(short_dir: Path) -> None:
    explicit = write_config(short_dir)
    cfg = resolve_config(explicit)
    assert cfg.source is not None and cfg.state_dir == short_dir / "state"
    # No --config and no /etc file: per-user built-in defaults.
    env = {"HOME": "/home/lab", "XDG_RUNTIME_DIR": "/run/user/1000"}
    cfg = resolve_config(None, default_path=short_dir / "absent.toml", env=env)
    assert cfg.source is None
    assert cfg.state_dir == Path("/home/lab/.local/state/han-ota")
    assert cfg.control_socket == Path("/run/user/1000/han-ota/control.sock")
    cfg = builtin_config({"HOME": "/home/lab", "XDG_STATE_HOME": "/x/state"})
    assert cfg.state_dir == Path("/x/state/han-ota")
    assert str(cfg.control_socket).startswith("/tmp/han-ota-") and cfg.control_socket.name == "control.sock"
    # The default file is used when it exists.
    cfg = resolve_config(None, default_path=explicit, env=env)
    assert cfg.source == explicit
    assert DEFAULT_CONFIG_PATH == Path("/etc/han-ota/config.toml")
    # An explicit path that does not exist is an error, never a silent fallback.
    result = invoke("status", "--config", str(short_dir / "absent.toml"))
    assert result.exit_code == 2 and "no such file" in result.output


def test_register_adds_the_commands() -> None:
    app = typer.Typer()
    cli_daemon.register(app)
    names = {c.name for c in app.registered_commands}
    assert names == {"run", "status", "devices", "cancel", "wait", "log"}
    assert [g.name for g in app.registered_groups] == ["config"]


# --------------------------------------------------------------------------- without a daemon


def test_commands_say_when_no_daemon_runs(short_dir: Path) -> None:
    path = write_config(short_dir)
    for command in (["status"], ["devices"], ["cancel", "1"]):
        result = invoke(*command, "--config", str(path))
        assert result.exit_code == 3, command
        assert "no han-ota daemon is running" in result.output and "run/control.sock" in result.output
    result = invoke("status", "--json", "--config", str(path))
    assert "error" in json.loads(result.stdout.splitlines()[0])


def test_run_refuses_a_missing_state_directory(short_dir: Path) -> None:
    path = short_dir / "config.toml"
    path.write_text(f'state_dir = "{short_dir}/missing/state"\ncontrol_socket = "c.sock"\n')
    result = invoke("run", "--config", str(path), "--sim-device", f"hcalcs:{HCALCS}")
    assert result.exit_code == 1
    assert f"state directory {short_dir}/missing/state (state_dir in {path})" in result.output and "install -d" in result.output


def test_run_refuses_a_bad_sim_device(short_dir: Path) -> None:
    path = write_config(short_dir)
    result = invoke("run", "--config", str(path), "--sim-device", "toaster:0011223344556677")
    assert result.exit_code == 1 and "--sim-device" in result.output and "toaster" in result.output


def test_log_reads_and_verifies_the_file_when_no_daemon_runs(short_dir: Path) -> None:
    path = write_config(short_dir)
    with AuditLog.in_state_dir(short_dir / "state") as log:
        log.append("daemon.start", version="t")
        log.append("job.accepted", device=HCALCS, job=1, size=10)
        log.append("job.accepted", device="00:11:22:33:44:55:66:88", job=2, size=20)
    result = invoke("log", "--config", str(path))
    assert result.exit_code == 0
    lines = result.output.splitlines()
    assert len(lines) == 3 and "job.accepted 00:11:22:33:44:55:66:77 job=1 size=10" in lines[1]
    result = invoke("log", "--device", "0011223344556677", "--json", "--config", str(path))
    records = [json.loads(line) for line in result.output.splitlines()]
    assert [r["seq"] for r in records] == [2] and records[0]["hash"]
    assert invoke("log", "--since", "2", "--json", "--config", str(path)).output.count("\n") == 1
    ok = invoke("log", "--verify", "--config", str(path))
    assert ok.exit_code == 0 and ok.output.startswith("audit log OK: 3 records")
    audit = short_dir / "state" / "audit.jsonl"
    audit.write_text(audit.read_text().replace('"size":20', '"size":21'))
    broken = invoke("log", "--verify", "--config", str(path))
    assert broken.exit_code == 1 and "BROKEN" in broken.output and "record 3" in broken.output
    assert invoke("log", "--device", "nope", "--config", str(path)).exit_code == 2


# --------------------------------------------------------------------------- with a daemon


async def test_status_devices_cancel_and_log_through_the_daemon(short_dir: Path) -> None:
    path = write_config(short_dir)
    cfg = resolve_config(path)
    fw = short_dir / "fw.ota"
    fw.write_bytes(build_ota_image(0x121D, 0x0000, 2, b"\x5a" * 60_000, min_hw=0x1111, max_hw=0x1111))
    daemon = Daemon(cfg, [f"hcalcs:{HCALCS}:query_delay=0.05:min_block_period_ms=20"])
    await daemon.start()
    await daemon.wait_radio(10)
    try:
        job = await asyncio.to_thread(Client(cfg.control_socket).push, fw, HCALCS)
        client = Client(cfg.control_socket)
        await asyncio.to_thread(client.wait_job, job["job"], ("transferring",), timeout=10)

        status = await asyncio.to_thread(invoke, "status", "--config", str(path))
        assert status.exit_code == 0, status.output
        header, table = status.output.splitlines()[0], status.output.splitlines()[1:]
        assert "radio sim up" in header
        assert table[0].split() == ["JOB", "DEVICE", "KIND", "STATE", "PROGRESS", "RATE", "ETA", "PRIORITY", "REASON"]  # every job has a priority (issue 15)
        assert table[1].split()[:4] == ["1", HCALCS, "hcalcs", "transferring"] and "%" in table[1] and table[1].split()[-1] == "5"
        as_json = json.loads((await asyncio.to_thread(invoke, "status", "--json", "--config", str(path))).output)
        assert as_json["jobs"][0]["state"] == "transferring" and as_json["daemon"]["radio"]["up"] is True

        devices = await asyncio.to_thread(invoke, "devices", "--config", str(path))
        assert devices.exit_code == 0 and HCALCS in devices.output and "transferring" in devices.output

        cancelled = await asyncio.to_thread(invoke, "cancel", "1", "--config", str(path))
        assert cancelled.exit_code == 0 and "job 1 (00:11:22:33:44:55:66:77): cancelled" in cancelled.output
        again = await asyncio.to_thread(invoke, "cancel", "1", "--json", "--config", str(path))
        assert again.exit_code == 1 and "already ended" in again.output

        log = await asyncio.to_thread(invoke, "log", "--device", HCALCS, "--json", "--config", str(path))
        events = [json.loads(line)["event"] for line in log.output.splitlines()]
        assert events[0] == "job.accepted" and "job.cancel_requested" in events and "ota.cancel" in events
        verify = await asyncio.to_thread(invoke, "log", "--verify", "--json", "--config", str(path))
        assert verify.exit_code == 0 and json.loads(verify.output)["ok"] is True
    finally:
        await daemon.stop("test")


def _follow(path: Path, *extra: str) -> Any:
    import subprocess
    import sys

    return subprocess.Popen(
        [sys.executable, "-m", "han_ota.cli_daemon", "log", "--follow", "--json", "--config", str(path), *extra],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def _read_lines(proc: Any, count: int, timeout: float = 10.0) -> list[dict[str, Any]]:
    import selectors
    import time

    lines: list[dict[str, Any]] = []
    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ)
    deadline = time.monotonic() + timeout
    while len(lines) < count and time.monotonic() < deadline:
        if sel.select(0.1):
            line = proc.stdout.readline()
            if line:
                lines.append(json.loads(line))
    return lines


async def test_log_follow_from_the_file_and_through_the_daemon(short_dir: Path) -> None:
    import signal

    path = write_config(short_dir)
    with AuditLog.in_state_dir(short_dir / "state") as log:
        log.append("daemon.start", version="t")
    proc = _follow(path)  # no daemon: follows the file
    try:
        first = await asyncio.to_thread(_read_lines, proc, 1)
        with AuditLog.in_state_dir(short_dir / "state") as log:
            log.append("job.accepted", device=HCALCS, job=1)
        second = await asyncio.to_thread(_read_lines, proc, 1)
        assert [r["event"] for r in first + second] == ["daemon.start", "job.accepted"]
    finally:
        proc.send_signal(signal.SIGINT)
        assert await asyncio.to_thread(proc.wait, 10) == 0  # Ctrl-C ends --follow quietly

    cfg = resolve_config(path)
    daemon = Daemon(cfg, [f"hcalcs:{HCALCS}"])
    await daemon.start()
    await daemon.wait_radio(10)
    proc = _follow(path, "--device", HCALCS, "--since", "2")
    try:
        fw = short_dir / "fw.ota"
        fw.write_bytes(build_ota_image(0x121D, 0x0000, 2, b"\x5a" * 500, min_hw=0x1111, max_hw=0x1111))
        await asyncio.to_thread(Client(cfg.control_socket).push, fw, HCALCS)
        records = await asyncio.to_thread(_read_lines, proc, 3)
        assert records[0]["event"] == "job.accepted" and all(r["device"] == HCALCS for r in records)
    finally:
        proc.send_signal(signal.SIGINT)
        await asyncio.to_thread(proc.wait, 10)
        await daemon.stop("test")


def test_config_check_refuses_a_certificate_whose_role_is_not_supplier(short_dir: Path) -> None:
    # An Access Control Broker's certificate (OU=04) must not become a supplier's anchor:
    # its key could then sign CS06 and activate firmware.
    from gateway.gbcs.ids import EntityId
    from gateway.gbcs.sign import generate_supplier_identity

    _, acb = generate_supplier_identity(EntityId.parse("90B3D51F30000002"), role="04")
    (short_dir / "acb.pem").write_bytes(acb)
    table = '[[supplier]]\nid = "90B3D51F30000002"\ncertificate = "acb.pem"\n'
    path = short_dir / "acb.toml"
    path.write_text(f'state_dir = "{short_dir}"\n' + table)
    result = invoke("config", "check", str(path))
    assert result.exit_code == 1, result.output
    assert "OU=04 (Access Control Broker), not Supplier (OU=02)" in result.output
    assert "allow_any_role = true" in result.output and "Traceback" not in result.output

    path.write_text(f'state_dir = "{short_dir}"\n' + table + "allow_any_role = true\n")
    result = invoke("config", "check", str(path), "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert any("allow_any_role" in w and "90B3D51F30000002" in w for w in summary["warnings"])


def test_log_into_a_closed_pipe_exits_quietly(short_dir: Path) -> None:
    """`han-ota log | head -1`: a reader that goes away is no error, and no traceback."""
    import os
    import subprocess
    import sys

    path = write_config(short_dir)
    with AuditLog.in_state_dir(short_dir / "state") as log:
        for i in range(5000):
            log.append("job.accepted", device=HCALCS, job=i, size=10)
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[2]))
    proc = subprocess.Popen(
        [sys.executable, "-c", "from han_ota.cli import main; main()", "log", "--config", str(path)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
    )
    assert proc.stdout is not None and proc.stderr is not None
    assert b"job.accepted" in proc.stdout.readline()
    proc.stdout.close()
    err = proc.stderr.read().decode()
    proc.wait(timeout=60)
    assert err == "", err
