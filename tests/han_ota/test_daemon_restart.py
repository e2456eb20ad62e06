"""`han-ota run` as a real process: SIGKILL in the middle of a transfer, restart, finish.

Limitation of the simulated radio: its devices live inside the daemon process, so a
killed daemon takes its simulated HCALCS (and the partial download in its "flash")
with it. After the restart the device boots fresh and downloads from offset 0; what
this test checks is the gateway side -- the job is restored from the store as
TRANSFERRING at the offset it had reached, without a new Image Notify, and runs to
HELD. Resuming at the device's own offset (flash kept) is covered in process by
test_daemon.py::test_restart_resumes_a_transfer_from_the_devices_offset.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import pytest

from gateway.audit import read_records, verify_log
from gateway.config import load_config
from gateway.store import StateStore
from han_ota.client import Client, DaemonError, find_daemon
from radios.sim.testing import build_ota_image

HCALCS = "00:11:22:33:44:55:66:77"
CONFIG = """\
state_dir = "state"
control_socket = "run/control.sock"

[[sim_device]]
kind = "hcalcs"
ieee = "00:11:22:33:44:55:66:77"
query_delay = 0.1
response_timeout = 0.5
wait_interval = 0.3
min_block_period_ms = 3
"""


@pytest.fixture
def bench_dir() -> Any:
    path = Path(tempfile.mkdtemp(prefix="hor", dir="/tmp"))
    (path / "state").mkdir()
    (path / "config.toml").write_text(CONFIG)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def cli(*args: str, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "han_ota.cli_daemon", *args], capture_output=True, text=True, timeout=30, **kwargs)


def start(root: Path, log_name: str) -> subprocess.Popen[bytes]:
    log = open(root / log_name, "wb")  # noqa: SIM115 - the process owns it
    return subprocess.Popen([sys.executable, "-m", "han_ota.cli_daemon", "run", "--config", str(root / "config.toml")], stdout=log, stderr=subprocess.STDOUT)


def wait_until(predicate: Any, timeout: float, what: str, proc: subprocess.Popen[bytes] | None = None) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"the daemon exited ({proc.returncode}) while waiting for {what}")
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def radio_up(cfg: Any) -> Client | None:
    client = find_daemon(cfg)
    if client is None:
        return None
    try:
        return client if client.status()["daemon"]["radio"]["up"] else None
    except DaemonError:
        return None


def test_sigkill_mid_transfer_then_restart_finishes_held_and_the_log_verifies(bench_dir: Path) -> None:
    cfg = load_config(bench_dir / "config.toml")
    fw = bench_dir / "fw.ota"
    fw.write_bytes(build_ota_image(0x121D, 0x0000, 2, os.urandom(30_000), min_hw=0x1111, max_hw=0x1111))
    size = fw.stat().st_size

    first = start(bench_dir, "first.log")
    try:
        client = wait_until(lambda: radio_up(cfg), 15, "the first daemon's radio", first)
        job = client.push(fw, HCALCS)
        assert job["job"] == "1"
        # Kill once the store has recorded real progress (it writes every 4 KiB / 2 s).
        wait_until(lambda: StateStore.in_state_dir(cfg.state_dir).get_job(1).offset >= 8192, 20, "persisted progress", first)
        at_kill = client.job("1")
        assert at_kill["state"] == "transferring" and at_kill["bytes"] < size
    finally:
        first.kill()  # SIGKILL: no goodbye, no final snapshot
        first.wait(10)
    assert first.returncode == -signal.SIGKILL

    kept = StateStore.in_state_dir(cfg.state_dir).get_job(1)
    assert kept.state.value == "transferring" and 8192 <= kept.offset < size
    assert cfg.control_socket.exists()  # stale: the restart must replace it
    seq_at_kill = list(read_records(cfg.state_dir / "audit.jsonl"))[-1].seq

    second = start(bench_dir, "second.log")
    try:
        client = wait_until(lambda: radio_up(cfg), 15, "the second daemon's radio", second)
        held = client.wait_job("1", ("held",), timeout=30)
        assert held["state"] == "held" and held["bytes"] == size
        status = client.status()
        assert [(j["job"], j["state"]) for j in status["jobs"]] == [("1", "held")]

        verified = cli("log", "--verify", "--config", str(bench_dir / "config.toml"))
        assert verified.returncode == 0, verified.stderr
        assert verified.stdout.startswith("audit log OK:")
        second.send_signal(signal.SIGTERM)
        assert second.wait(15) == 0
    finally:
        if second.poll() is None:
            second.kill()
            second.wait(10)

    after = list(read_records(cfg.state_dir / "audit.jsonl", since_seq=seq_at_kill))
    restored = next(r for r in after if r.event == "job.restored")
    assert restored.fields["state"] == "transferring" and restored.fields["offset"] >= 8192 and restored.fields["notify"] is False
    assert not any(r.event == "ota.notify" for r in after)
    assert after[-1].event == "daemon.stop" and after[-1].fields["reason"] == "signal SIGTERM"
    assert StateStore.in_state_dir(cfg.state_dir).get_job(1).state.value == "held"
    assert not cfg.control_socket.exists()
    # With the daemon gone, --verify reads the file itself.
    offline = cli("log", "--verify", "--json", "--config", str(bench_dir / "config.toml"))
    assert offline.returncode == 0 and '"ok": true' in offline.stdout
    assert verify_log(cfg.state_dir / "audit.jsonl").ok
