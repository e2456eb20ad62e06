"""SIGKILL the daemon mid-transfer and mid-activation, with the HAN outliving it.

On a bench the devices (and the coordinator) do not die with the gateway process.
Here the coordinator is the emulated Z-Stack dongle (`han-ota emulate znp`) in its own
process with a simulated HCALCS behind it, and the daemon drives it through unmodified
zigpy-znp. Killing the daemon therefore leaves the device's partial download and its
held image where a real device would keep them.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import pytest

from gateway.audit import verify_log
from gateway.config import load_config
from gateway.crashpoint import ENV as CRASH_ENV
from gateway.crashpoint import SUBMIT_POINTS
from gateway.gbcs.ids import EntityId
from gateway.gbcs.sign import generate_supplier_identity, load_signing_key, sign_activation
from gateway.image_build import build_image
from gateway.store import StateStore
from han_ota.client import Client, DaemonError, find_daemon

HCALCS = "00:11:22:33:44:55:66:88"
SUPPLIER = "90B3D51F30010000"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def bench(tmp_path_factory: pytest.TempPathFactory) -> Any:
    # Short path: the control socket's path must fit in sun_path.
    root = Path(tempfile.mkdtemp(prefix="hok", dir="/tmp"))
    (root / "state").mkdir()
    port = free_port()
    key_pem, cert_pem = generate_supplier_identity(EntityId.parse(SUPPLIER))
    (root / "supplier.pem").write_bytes(cert_pem)
    (root / "supplier.key").write_bytes(key_pem)
    (root / "config.toml").write_text(
        f"""\
state_dir = "state"
control_socket = "control.sock"
[radio]
kind = "znp"
path = "socket://127.0.0.1:{port}"
[ota]
stall_timeout = 60
[[supplier]]
id = "{SUPPLIER}"
certificate = "supplier.pem"
[[device]]
ieee = "{HCALCS}"
kind = "hcalcs"
supplier = "{SUPPLIER}"
"""
    )
    log = open(root / "emulator.log", "wb")  # noqa: SIM115 - the process owns it
    emulator = subprocess.Popen(
        [sys.executable, "-m", "han_ota.cli", "emulate", "znp", "--listen", f"127.0.0.1:{port}", "--han-start", "permit",
         "--link", "realistic",
         "--sim-device", f"hcalcs:{HCALCS}:file_version=1:hardware_version=0x1111:query_delay=0.2:response_timeout=1:wait_interval=0.5"],
        stdout=log, stderr=subprocess.STDOUT,
    )
    try:
        wait_until(lambda: _listening(port), 20, "the emulator to listen", emulator)
        yield root
    finally:
        emulator.send_signal(signal.SIGINT)
        try:
            emulator.wait(10)
        except subprocess.TimeoutExpired:
            emulator.kill()
        shutil.rmtree(root, ignore_errors=True)


def _listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def wait_until(predicate: Any, timeout: float, what: str, proc: subprocess.Popen[bytes] | None = None) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"a process exited ({proc.returncode}) while waiting for {what}")
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def start_daemon(root: Path, name: str, crash_at: str | None = None) -> subprocess.Popen[bytes]:
    log = open(root / name, "wb")  # noqa: SIM115
    env = {k: v for k, v in os.environ.items() if k != CRASH_ENV}
    if crash_at is not None:
        env[CRASH_ENV] = crash_at
    return subprocess.Popen([sys.executable, "-m", "han_ota.cli", "run", "--config", str(root / "config.toml")], stdout=log, stderr=subprocess.STDOUT, env=env)


def radio_up(cfg: Any) -> Client | None:
    client = find_daemon(cfg)
    try:
        return client if client is not None and client.status()["daemon"]["radio"]["up"] else None
    except DaemonError:
        return None


def job_state(client: Client, job: str) -> dict[str, Any] | None:
    try:
        return client.job(job)
    except (DaemonError, OSError):
        return None


def test_sigkill_mid_transfer_and_mid_activation_with_the_han_outliving_the_daemon(bench: Path) -> None:
    cfg = load_config(bench / "config.toml")
    image = bench / "fw.ota"
    image.write_bytes(build_image(bytes(range(256)) * 60, manufacturer_code=0x121D, image_type=0, file_version=2, min_hw=0x1111, max_hw=0x1211))

    daemon = start_daemon(bench, "daemon1.log")
    try:
        client = wait_until(lambda: radio_up(cfg), 30, "the radio to come up", daemon)
        job = client.push(image, HCALCS)["job"]
        # Kill in the middle of the transfer.
        wait_until(lambda: (j := job_state(client, job)) and j["state"] == "transferring" and 3000 < j["bytes"] < 12000, 60, "mid-transfer", daemon)
        daemon.send_signal(signal.SIGKILL)
        daemon.wait(10)

        daemon = start_daemon(bench, "daemon2.log")
        client = wait_until(lambda: radio_up(cfg), 30, "the radio after restart", daemon)
        held = wait_until(lambda: (j := job_state(client, job)) and j["state"] in ("held", "failed") and j, 90, "held after restart", daemon)
        assert held["state"] == "held", held

        # Kill in the middle of the activation: right after the command was accepted.
        command = sign_activation(
            load_signing_key((bench / "supplier.key").read_bytes()),
            originator=EntityId.parse(SUPPLIER), device=EntityId.parse(HCALCS),
            image_hash=bytes.fromhex(held["manufacturer_image_hash"]), counter=42,
        )
        result = client.activate(command.hex().upper())
        assert result["accepted"], result
        daemon.send_signal(signal.SIGKILL)
        daemon.wait(10)

        daemon = start_daemon(bench, "daemon3.log")
        client = wait_until(lambda: radio_up(cfg), 30, "the radio after the second restart", daemon)
        final = wait_until(lambda: (j := job_state(client, job)) and j["state"] in ("confirmed", "failed") and j, 90, "confirmation after restart", daemon)
        assert final["state"] == "confirmed", final
        assert final["device_file_version"] == 2
        # The counter was persisted before the activation was acted on: never again.
        replay = client.activate(command.hex().upper())
        assert not replay["accepted"] and replay["reason"] == "replayed counter", replay
        daemon.send_signal(signal.SIGTERM)
        assert daemon.wait(20) == 0
    finally:
        if daemon.poll() is None:
            daemon.kill()
    with StateStore.in_state_dir(bench / "state") as store:
        assert store.last_counter(SUPPLIER) == 42
    verdict = verify_log(bench / "state" / "audit.jsonl")
    assert verdict.ok, verdict
    assert json.dumps(final)  # the job summary stays JSON-clean across restarts
    assert os.path.exists(bench / "state" / "state.sqlite3")


@pytest.mark.timeout(900)  # eight kill-and-restart cycles: well past the per-test default on a slow machine
def test_a_kill_at_every_step_of_a_submit_ends_activated_or_scheduled(bench: Path) -> None:
    """Issue 11 item 1: the counter, the verdict and the decision are one durable record.

    For each step of accepting a CS06, immediate and future-dated: push a new version,
    let the device hold it, start a daemon that dies at that step during ``activate``,
    restart it, and see the device released (or its activation kept for its time). A
    kill before the record is written leaves the command unspent: sent again, it is
    accepted, not refused as a replay.
    """
    cfg = load_config(bench / "config.toml")
    key = load_signing_key((bench / "supplier.key").read_bytes())
    counter = 100
    cases = [(point, future) for point in SUBMIT_POINTS for future in (False, True)]
    for number, (point, future) in enumerate(cases):
        version = 2 + number
        image = bench / f"fw{version}.ota"
        image.write_bytes(build_image(bytes([version]) * 1024, manufacturer_code=0x121D, image_type=0, file_version=version, min_hw=0x1111, max_hw=0x1211))
        daemon = start_daemon(bench, f"kill-{number}-a.log", crash_at=point)
        try:
            client = wait_until(lambda: radio_up(cfg), 60, "the radio to come up", daemon)
            job = client.push(image, HCALCS)["job"]
            held = wait_until(lambda: (j := job_state(client, job)) and j["state"] in ("held", "failed") and j, 120, f"v{version} held", daemon)
            assert held["state"] == "held", held
            counter += 1
            at = dt.datetime.now(dt.timezone.utc).replace(microsecond=0) + dt.timedelta(seconds=3) if future else None
            command = sign_activation(
                key, originator=EntityId.parse(SUPPLIER), device=EntityId.parse(HCALCS),
                image_hash=bytes.fromhex(held["manufacturer_image_hash"]), counter=counter, execution_time=at,
            ).hex().upper()
            with pytest.raises((DaemonError, OSError)):
                client.activate(command)  # the daemon dies while it answers
            assert daemon.wait(30) == 137, f"{point}: the daemon did not stop at its crash point"
        finally:
            if daemon.poll() is None:
                daemon.kill()
        with StateStore.in_state_dir(bench / "state") as store:
            kept = {s.job_id: s.at_utc for s in store.list_schedules()}
            state = store.get_job(int(job)).state.value
        if point == "submit.verified":
            assert (kept, state) == ({}, "held"), point  # nothing was kept yet
        elif future:
            assert kept == {int(job): at}, (point, kept)  # the decision is on disk with its time
        else:
            assert int(job) in kept or state == "activated", (point, kept, state)  # due now, or done
        daemon = start_daemon(bench, f"kill-{number}-b.log")
        try:
            client = wait_until(lambda: radio_up(cfg), 60, "the radio after the restart", daemon)
            if point == "submit.verified":
                # Killed before anything was kept: the command is not spent.
                assert wait_until(lambda: job_state(client, job), 30, "the job after restart", daemon)["state"] == "held"
                again = client.activate(command)
                assert again["accepted"], (point, again)
            final = wait_until(lambda: (j := job_state(client, job)) and j["state"] in ("confirmed", "failed", "cancelled") and j, 120, f"{point} future={future}: release after restart", daemon)
            assert final["state"] == "confirmed" and final["device_file_version"] == version, (point, future, final)
            replay = client.activate(command)
            assert not replay["accepted"] and replay["reason"] == "replayed counter", (point, replay)
            daemon.send_signal(signal.SIGTERM)
            assert daemon.wait(30) == 0
        finally:
            if daemon.poll() is None:
                daemon.kill()
    with StateStore.in_state_dir(bench / "state") as store:
        assert store.last_counter(SUPPLIER) == counter
        assert store.list_schedules() == []  # every kept decision was carried out
    verdict = verify_log(bench / "state" / "audit.jsonl")
    assert verdict.ok, verdict
