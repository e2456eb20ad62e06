"""The daemon in process, on the simulated radio: start, push, hold, resume, radio loss, full disk.

Most tests own the `SimHan` (the air and the devices) and hand the daemon an
``open_radio`` that builds a fresh zigpy app over it, so a daemon restart or a
radio reconnect finds the devices as a real hub would: still running, with their
flash (and partial downloads) intact. The subprocess SIGKILL test is in
test_daemon_restart.py.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import shutil
import socket
import sqlite3
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import zigpy.types as zt

from gateway.audit import read_records, verify_log
from gateway.config import Config
from gateway.store import StateStore, StoreError
from han_ota import sdnotify
from han_ota.client import Client, DaemonError
from han_ota.daemon import Daemon, DaemonStartError, run_daemon
from radios.sim.app import SimControllerApplication, SimNvram
from radios.sim.han import SimHan
from radios.sim.spec import parse_sim_device
from radios.sim.testing import build_ota_image

HCALCS = "00:11:22:33:44:55:66:77"
HCALCS2 = "00:11:22:33:44:55:66:88"
FAST = "query_delay=0.05:wait_interval=0.2:reboot_time=0.05:response_timeout=0.5"


@pytest.fixture
def short_dir() -> Any:
    # Unix socket paths are limited to 108 bytes; pytest's tmp_path can be longer.
    path = Path(tempfile.mkdtemp(prefix="hod", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def make_config(root: Path, **changes: Any) -> Config:
    state = root / "state"
    state.mkdir(exist_ok=True)
    cfg = dataclasses.replace(Config(), source=root / "config.toml", state_dir=state, control_socket=root / "run" / "control.sock")
    return dataclasses.replace(cfg, **changes)


def image(root: Path, size: int = 4000, version: int = 2, name: str = "fw.ota") -> Path:
    path = root / name
    path.write_bytes(build_ota_image(0x121D, 0x0000, version, bytes(i % 251 for i in range(size)), min_hw=0x1111, max_hw=0x1111))
    return path


class Bench:
    """A SimHan that outlives daemons and radio reconnects, and an opener over it.

    Without ``database`` a new zigpy app knows no devices, so reopening reboots them
    (they rejoin; their flash is kept). With one, zigpy remembers them, as a daemon's
    zigbee.db does, and the devices carry on undisturbed."""

    def __init__(self, *specs: str, database: Path | None = None) -> None:
        self.han = SimHan([parse_sim_device(s) for s in specs])
        self.nvram = SimNvram()
        self.database = database
        self.opens = 0
        self.fail_opens: set[int] = set()
        # Keep rebooted devices off until the test powers them on (power_on_held): a
        # device resuming before the daemon has re-attached its session is answered by
        # zigpy (ABORT), which a test of the resume itself must not race against.
        self.hold_reboots = False

    async def open(self) -> SimControllerApplication:
        self.opens += 1
        if self.opens in self.fail_opens:
            raise RuntimeError(f"dongle unplugged (open #{self.opens})")
        app = SimControllerApplication.new_sim([], han=self.han, nvram=self.nvram, database_path=None if self.database is None else str(self.database))
        await app._load_db()
        await app.startup(auto_form=True)
        if self.opens > 1 and self.database is None:
            for device in self.han.devices.values():
                if self.hold_reboots:
                    device.power_off("reboot held by the test")
                else:
                    device.power_cycle()
        if not self.hold_reboots or self.opens == 1 or self.database is not None:
            await app.wait_initialized(timeout=30)
        return app

    async def power_on_held(self) -> None:
        for device in self.han.devices.values():
            await device.power_on()

    def device(self, ieee: str) -> Any:
        return self.han.devices[zt.EUI64.convert(ieee)]

    async def close(self) -> None:
        await self.han.stop()


@pytest.fixture
async def bench() -> AsyncIterator[Bench]:
    b = Bench(f"hcalcs:{HCALCS}:{FAST}:min_block_period_ms=2", f"hcalcs:{HCALCS2}:{FAST}")
    yield b
    await b.close()


async def started(cfg: Config, bench: Bench | None = None, **kwargs: Any) -> Daemon:
    if bench is not None:
        kwargs.setdefault("open_radio", bench.open)
    daemon = Daemon(cfg, **kwargs)
    await daemon.start()
    await daemon.wait_radio(10)
    return daemon


async def call(fn: Any, *args: Any, **kwargs: Any) -> Any:
    return await asyncio.to_thread(fn, *args, **kwargs)


async def wait_for(predicate: Any, timeout: float = 15.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


def events(cfg: Config, since: int = 0) -> list[Any]:
    return list(read_records(cfg.state_dir / "audit.jsonl", since_seq=since))


# --------------------------------------------------------------------------- start, push, hold


class NotifyListener:
    """systemd's end of NOTIFY_SOCKET, read as datagrams arrive (a full queue would block the sender)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.messages: list[str] = []
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.setblocking(False)
        asyncio.get_running_loop().add_reader(self.sock.fileno(), lambda: self.messages.append(self.sock.recv(4096).decode()))

    def notifier(self) -> sdnotify.Notifier:
        return sdnotify.Notifier({"NOTIFY_SOCKET": str(self.path)})

    def close(self) -> None:
        asyncio.get_running_loop().remove_reader(self.sock.fileno())
        self.sock.close()


async def test_starts_with_the_sim_radio_and_answers_status_within_2s(short_dir: Path) -> None:
    cfg = make_config(short_dir)
    listener = NotifyListener(short_dir / "notify.sock")
    t0 = time.monotonic()
    daemon = Daemon(cfg, [f"hcalcs:{HCALCS}"], notifier=listener.notifier())
    await daemon.start()
    try:
        body = await call(Client(cfg.control_socket, timeout=5).status)
        assert time.monotonic() - t0 < 2.0
        assert body["daemon"]["radio"]["kind"] == "sim"
        assert body["jobs"] == [] and body["holds"] == [] and body["schedules"] == []
        await daemon.wait_radio(5)
        body = await call(Client(cfg.control_socket).status)
        assert body["daemon"]["radio"]["up"] is True
        devices = await call(Client(cfg.control_socket).devices)
        assert [(d["ieee"], d["kind"], d["model"]) for d in devices] == [(HCALCS, "hcalcs", "HCALCS")]
    finally:
        await daemon.stop("test")
        await wait_for(lambda: any(m.startswith("STOPPING=1") for m in listener.messages), 30, "STOPPING=1")
        listener.close()
    messages = listener.messages
    assert messages[0].startswith("READY=1\nSTATUS=radio sim down")
    assert "STATUS=radio sim up; 0 transferring, 0 pending, 0 held, 0 scheduled" in messages
    assert messages[-1].startswith("STOPPING=1")
    assert not cfg.control_socket.exists()


async def test_push_through_the_client_reaches_held_and_status_shows_it(short_dir: Path, bench: Bench) -> None:
    cfg = make_config(short_dir)
    fw = image(short_dir)
    daemon = await started(cfg, bench)
    client = Client(cfg.control_socket, timeout=5)
    try:
        job = await call(client.push, fw, HCALCS)
        assert job["job"] == "1" and job["state"] in ("pending", "transferring") and job["kind"] == "hcalcs"
        held = await call(client.wait_job, "1", ("held",), timeout=20)
        assert held["state"] == "held" and held["bytes"] == held["size"] == fw.stat().st_size
        await wait_for(lambda: bench.device(HCALCS).counters.holds >= 2, what="a second hold answer")
        body = await call(client.status)
        assert [(j["job"], j["device"], j["state"]) for j in body["jobs"]] == [("1", HCALCS, "held")]
        assert body["holds"][0]["job"] == "1" and body["holds"][0]["held_requests"] >= 2
        assert bench.device(HCALCS).current_file_version == 1  # held: never activated
        assert (await call(client.devices))[0]["state"] == "held"
        # A second push to the same device is refused while the first is active.
        with pytest.raises(DaemonError, match="already has job 1") as err:
            await call(client.push, fw, HCALCS)
        assert err.value.status == 409
        with pytest.raises(DaemonError, match="not on this network"):
            await call(client.push, fw, "00:00:00:00:00:00:00:99")
        with pytest.raises(DaemonError, match="relative"):
            await call(client._call, "POST", "/v1/push", {"image": "fw.ota", "device": HCALCS})
    finally:
        await daemon.stop("test")
    stored = StateStore.in_state_dir(cfg.state_dir).get_job(1)
    assert stored.state.value == "held" and stored.offset == fw.stat().st_size
    assert stored.session_snapshot is not None and stored.session_snapshot["state"] == "held"
    assert Path(stored.record.image_path).parent == cfg.state_dir / "images"  # a copy the job owns
    kinds = [r.event for r in events(cfg)]
    for wanted in ("daemon.start", "radio.up", "job.accepted", "ota.notify", "ota.query", "ota.transfer_start", "job.progress", "ota.end_request", "ota.hold", "gbcs.transfer", "daemon.stop"):
        assert wanted in kinds, wanted
    assert verify_log(cfg.state_dir / "audit.jsonl").ok


async def test_cancel_and_job_lookup(short_dir: Path, bench: Bench) -> None:
    cfg = make_config(short_dir)
    daemon = await started(cfg, bench)
    client = Client(cfg.control_socket, timeout=5)
    try:
        await call(client.push, image(short_dir, 60_000), HCALCS)
        cancelled = await call(client.cancel, "1")
        assert cancelled["state"] == "cancelled"
        with pytest.raises(DaemonError, match="already ended") as err:
            await call(client.cancel, "1")
        assert err.value.status == 409
        with pytest.raises(DaemonError, match="no job 99"):
            await call(client.job, "99")
        with pytest.raises(DaemonError, match="job ids are numbers"):
            await call(client.job, "J0001")
    finally:
        await daemon.stop("test")
    assert StateStore.in_state_dir(cfg.state_dir).get_job(1).state.value == "cancelled"


async def test_activate_now_confirms_and_a_bad_command_is_refused_and_recorded(short_dir: Path, bench: Bench) -> None:
    cfg = make_config(short_dir)
    daemon = await started(cfg, bench)
    client = Client(cfg.control_socket, timeout=5)
    try:
        await call(lambda: client.push(image(short_dir), HCALCS2, activate_now=True))
        done = await call(client.wait_job, "1", ("confirmed",), timeout=20)
        assert done["state"] == "confirmed" and done["activation"] == "now"
        assert bench.device(HCALCS2).current_file_version == 2
        result = await call(client.activate, "DD00FF", HCALCS)
        assert result["accepted"] is False and result["reason"].startswith("malformed")
    finally:
        await daemon.stop("test")
    records = events(cfg)
    assert any(r.event == "job.activate_now" and r.fields["warning"] for r in records)
    assert any(r.event == "gbcs.verdict" and r.fields["accepted"] is False for r in records)
    assert StateStore.in_state_dir(cfg.state_dir).list_verdicts(HCALCS)[0].accepted is False


async def test_garbage_on_the_socket_during_a_transfer_loses_nothing(short_dir: Path, bench: Bench) -> None:
    cfg = make_config(short_dir)
    daemon = await started(cfg, bench)
    client = Client(cfg.control_socket, timeout=5)
    try:
        await call(client.push, image(short_dir, 30_000), HCALCS)
        rng = __import__("random").Random(7)

        def garbage(data: bytes) -> bytes:
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.settimeout(5)
            s.connect(str(cfg.control_socket))
            try:
                s.sendall(data)
                s.shutdown(socket.SHUT_WR)
                return s.recv(65536)
            except OSError:
                return b""
            finally:
                s.close()

        replies = [await call(garbage, rng.randbytes(rng.randrange(1, 4000))) for _ in range(40)]
        replies.append(await call(garbage, b"POST /v1/push HTTP/1.1\r\nContent-Length: 9\r\n\r\n{\"image\":"))
        replies.append(await call(garbage, b"GET /v1/jobs/1/../../etc HTTP/1.1\r\n\r\n"))
        for reply in replies:
            assert reply == b"" or reply.startswith(b"HTTP/1.1 4"), reply[:80]
        assert (await call(client.job, "1"))["state"] in ("pending", "transferring", "held")
        held = await call(client.wait_job, "1", ("held",), timeout=30)
        assert held["state"] == "held"
    finally:
        await daemon.stop("test")
    assert verify_log(cfg.state_dir / "audit.jsonl").ok


# --------------------------------------------------------------------------- refusing to start


async def test_missing_state_directory_is_a_clear_error(short_dir: Path) -> None:
    missing = short_dir / "nope" / "state"
    cfg = dataclasses.replace(Config(), source=short_dir / "config.toml", state_dir=missing, state_dir_from="config", control_socket=short_dir / "c.sock")
    with pytest.raises(DaemonStartError) as err:
        await run_daemon(cfg, [f"hcalcs:{HCALCS}"])
    message = str(err.value)
    assert str(missing) in message and "state_dir" in message and "install -d" in message and "StateDirectory=" in message
    assert not missing.exists() and not (short_dir / "c.sock").exists()


async def test_built_in_defaults_create_their_per_user_state_dir(short_dir: Path) -> None:
    cfg = dataclasses.replace(Config(), source=None, state_dir=short_dir / "user" / "state", state_dir_from="per-user", control_socket=short_dir / "u.sock")
    daemon = await started(cfg, sim_devices=[f"hcalcs:{HCALCS}"])
    await daemon.stop("test")
    assert (short_dir / "user" / "state" / "audit.jsonl").exists()


async def test_a_second_daemon_on_the_same_state_dir_refuses_and_names_the_first(short_dir: Path) -> None:
    cfg = make_config(short_dir)
    first = await started(cfg, sim_devices=[f"hcalcs:{HCALCS}"])
    try:
        other_socket = dataclasses.replace(cfg, control_socket=short_dir / "other.sock")
        with pytest.raises(DaemonStartError) as err:
            await run_daemon(other_socket, [f"hcalcs:{HCALCS}"])
        message = str(err.value)
        assert f"in use by another han-ota daemon (pid {os.getpid()}, control socket {cfg.control_socket})" in message
        assert "give this one its own state_dir" in message
        assert not (short_dir / "other.sock").exists()
        assert (await call(Client(cfg.control_socket).status))["jobs"] == []  # the first is untouched
    finally:
        await first.stop("test")
    # The lock goes with the daemon: the next one starts.
    again = await started(dataclasses.replace(cfg, control_socket=short_dir / "other.sock"), sim_devices=[f"hcalcs:{HCALCS}"])
    await again.stop("test")


async def test_a_second_daemon_on_the_same_socket_refuses_to_start(short_dir: Path) -> None:
    cfg = make_config(short_dir)
    first = await started(cfg, sim_devices=[f"hcalcs:{HCALCS}"])
    try:
        with pytest.raises(DaemonStartError, match="already listening"):
            await run_daemon(dataclasses.replace(cfg, state_dir=short_dir / "state2"), [f"hcalcs:{HCALCS}"])
        assert (await call(Client(cfg.control_socket).status))["daemon"]["pid"] == os.getpid()
    finally:
        await first.stop("test")


# --------------------------------------------------------------------------- a full disk


T0 = "2020-01-01T00:00:00.000000Z"


def fill_store(store: StateStore) -> int:
    """Make the database as full as a full disk makes it (SQLite reports SQLITE_FULL).

    max_page_count caps the file; filler rows (ended jobs of made-up devices, which
    nothing resumes) then take the last free bytes of the jobs table's pages."""
    conn = store._conn
    pages = conn.execute("PRAGMA page_count").fetchone()[0]
    conn.execute(f"PRAGMA max_page_count = {pages + 2}")
    fillers = 0
    for size in (2000, 200, 20, 1):
        while True:
            try:
                conn.execute(
                    "INSERT INTO jobs (device, image_path, image_sha256, manufacturer_code, image_type, file_version, size, kind, "
                    "activation, created_utc, state, updated_utc) VALUES (?, ?, ?, 0, 0, 0, 0, 'hcalcs', ?, ?, 'failed', ?)",
                    (f"ff:ff:ff:ff:ff:ff:{fillers >> 8 & 0xFF:02x}:{fillers & 0xFF:02x}", "x" * size, "0" * 64, '{"mode": "none"}', T0, T0),
                )
            except sqlite3.OperationalError as exc:
                assert "full" in str(exc)
                break
            fillers += 1
    return fillers


async def test_full_disk_refuses_new_jobs_clearly_and_keeps_acknowledged_ones(short_dir: Path, bench: Bench) -> None:
    cfg = make_config(short_dir)
    daemon = await started(cfg, bench)
    client = Client(cfg.control_socket, timeout=5)
    try:
        await call(client.push, image(short_dir), HCALCS)
        await call(client.wait_job, "1", ("held",), timeout=20)
        assert daemon.store is not None
        fill_store(daemon.store)
        with pytest.raises(DaemonError) as err:
            await call(client.push, image(short_dir, version=3, name="fw3.ota"), HCALCS2)
        assert err.value.status == 507
        assert "NOT accepted" in str(err.value) and "disk is full" in str(err.value) and "free space" in str(err.value)
        body = await call(client.status)
        assert [(j["job"], j["state"]) for j in body["jobs"]] == [("1", "held")]
        assert body["daemon"]["store"]["ok"] is False and "disk is full" in body["daemon"]["store"]["error"]
        assert [j.job_id for j in daemon.store.list_jobs() if not j.record.device.startswith("ff:")] == [1]
        # Space comes back: the same push is accepted.
        daemon.store._conn.execute("PRAGMA max_page_count = 1073741823")
        job = await call(client.push, image(short_dir, version=3, name="fw3.ota"), HCALCS2)
        await call(client.wait_job, job["job"], ("held",), timeout=20)
    finally:
        await daemon.stop("test")
    store = StateStore.in_state_dir(cfg.state_dir)
    ours = [(j.record.device, j.state.value) for j in store.list_jobs() if not j.record.device.startswith("ff:")]
    assert ours == [(HCALCS, "held"), (HCALCS2, "held")]


async def test_failing_progress_writes_are_retried_and_nothing_is_lost(short_dir: Path, bench: Bench, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = make_config(short_dir)
    daemon = await started(cfg, bench, tick_s=0.05, progress_seconds=0.1)
    client = Client(cfg.control_socket, timeout=5)
    assert daemon.store is not None
    real_update = daemon.store.update_job
    failing = {"on": True, "refused": 0}

    def update_job(*args: Any, **kwargs: Any) -> Any:
        if failing["on"]:
            failing["refused"] += 1
            raise StoreError(f"state store {daemon.store.path}: database or disk is full (free space on the filesystem holding the state directory; nothing of this call was written)")
        return real_update(*args, **kwargs)

    try:
        await call(client.push, image(short_dir, 20_000), HCALCS)
        monkeypatch.setattr(daemon.store, "update_job", update_job)
        held = await call(client.wait_job, "1", ("held",), timeout=30)
        assert held["state"] == "held"  # the transfer does not stop for a full disk
        body = await call(client.status)
        assert body["daemon"]["store"]["ok"] is False and "STORE WRITE FAILING" in body["daemon"]["summary"]
        assert failing["refused"] > 0
        assert StateStore.in_state_dir(cfg.state_dir).get_job(1).state.value != "held"
        failing["on"] = False
        await wait_for(lambda: daemon.store_error is None, what="the store to recover")
        assert StateStore.in_state_dir(cfg.state_dir).get_job(1).state.value == "held"
    finally:
        await daemon.stop("test")


# --------------------------------------------------------------------------- restarts and the radio going away


async def test_restart_resumes_a_transfer_from_the_devices_offset(short_dir: Path, bench: Bench) -> None:
    cfg = make_config(short_dir)
    fw = image(short_dir, 24_000)
    bench.hold_reboots = True
    first = await started(cfg, bench)
    client = Client(cfg.control_socket, timeout=5)
    await call(client.push, fw, HCALCS)
    await wait_for(lambda: bench.device(HCALCS).file_offset > 6_000, what="a quarter of the image")
    await first.stop("test restart")
    kept = StateStore.in_state_dir(cfg.state_dir).get_job(1)
    assert kept.state.value == "transferring" and kept.offset > 6_000
    mark = events(cfg)[-1].seq

    # A nudge (Image Notify after 5 s of silence) would hide whether the device resumed by itself.
    second = await started(cfg, bench, nudge_after_s=60)
    try:
        await wait_for(lambda: any(r.event == "job.restored" for r in events(cfg, mark)), 30, "the job restored")
        await bench.power_on_held()  # the device reboots with its partial image in flash
        held = await call(client.wait_job, "1", ("held",), timeout=30)
        assert held["state"] == "held" and held["bytes"] == fw.stat().st_size
    finally:
        await second.stop("test")
    later = events(cfg, mark)
    restored = next(r for r in later if r.event == "job.restored")
    assert restored.fields["state"] == "transferring" and restored.fields["offset"] > 6_000
    resume = next(r for r in later if r.event == "ota.resume")
    assert resume.fields["offset"] >= 6_000  # the device asked from where its flash ended
    assert not any(r.event == "ota.first_block" for r in later)
    assert bench.device(HCALCS).counters.resumed >= 1


async def test_restart_keeps_a_held_device_held_without_a_new_image_notify(short_dir: Path, bench: Bench) -> None:
    cfg = make_config(short_dir)
    first = await started(cfg, bench)
    client = Client(cfg.control_socket, timeout=5)
    await call(client.push, image(short_dir), HCALCS)
    await call(client.wait_job, "1", ("held",), timeout=20)
    await first.stop("test restart")
    mark = events(cfg)[-1].seq
    holds_before = bench.device(HCALCS).counters.holds

    second = await started(cfg, bench)
    try:
        await wait_for(lambda: bench.device(HCALCS).counters.holds >= holds_before + 2, what="hold answers after restart")
        job = await call(client.job, "1")
        assert job["state"] == "held"
    finally:
        await second.stop("test")
    later = events(cfg, mark)
    assert next(r for r in later if r.event == "job.restored").fields["notify"] is False
    assert not any(r.event == "ota.notify" or (r.event == "ota.sent" and r.fields["command"] == "SendImageNotify") for r in later)
    assert any(r.event == "ota.hold" for r in later)
    assert bench.device(HCALCS).current_file_version == 1


async def test_a_cancelled_hold_is_still_answered_after_a_restart_and_old_images_go(short_dir: Path, bench: Bench) -> None:
    cfg = make_config(short_dir)
    first = await started(cfg, bench)
    client = Client(cfg.control_socket, timeout=5)
    await call(client.push, image(short_dir), HCALCS)
    await call(client.wait_job, "1", ("held",), timeout=20)
    # Off while the gateway restarts: its next Upgrade End Request for the cancelled
    # image reaches the restored session (issue 11 item 5).
    device = bench.device(HCALCS)
    device.power_off("unplugged across the restart")
    await call(client.cancel, "1")
    await call(lambda: client.push(image(short_dir, version=3, name="fw3.ota"), HCALCS2, activate_now=True))
    await call(client.wait_job, "2", ("confirmed",), timeout=20)
    await first.stop("test restart")
    assert len(list((cfg.state_dir / "images").iterdir())) == 2
    assert device.counters.server_aborts == 0 and device.flash.target is not None

    second = await started(cfg, bench)
    try:
        await device.power_on()
        # The cancelled push is attached again and answers ABORT: the device drops the image.
        await device.wait_for(lambda d: d.counters.server_aborts == 1, timeout=15)
        assert device.flash.target is None
        body = await call(client.status)
        # The cancelled job is attached again; the confirmed job has nothing left to do.
        assert [(j["job"], j["state"]) for j in body["jobs"]] == [("1", "cancelled")]
    finally:
        await second.stop("test")
    assert device.current_file_version == 1
    assert any(r.event == "ota.discard" for r in events(cfg, 0))
    kept = {p.name for p in (cfg.state_dir / "images").iterdir()}
    assert kept == {Path(StateStore.in_state_dir(cfg.state_dir).get_job(1).record.image_path).name}


async def test_an_image_changed_on_disk_fails_its_job_on_restart(short_dir: Path, bench: Bench) -> None:
    cfg = make_config(short_dir)
    first = await started(cfg, bench)
    client = Client(cfg.control_socket, timeout=5)
    await call(client.push, image(short_dir), HCALCS)
    await call(client.wait_job, "1", ("held",), timeout=20)
    await first.stop("test restart")
    kept = Path(StateStore.in_state_dir(cfg.state_dir).get_job(1).record.image_path)
    kept.write_bytes(kept.read_bytes()[:-1] + b"\x00")

    second = await started(cfg, bench)
    try:
        job = await call(client.job, "1")
        assert job["state"] == "failed"
        assert "has changed since the job was accepted" in job["reason"] and "push the image again" in job["reason"]
        # The device is free for a new job.
        await call(client.push, image(short_dir, version=3, name="fw3.ota"), HCALCS)
    finally:
        await second.stop("test")
    assert any(r.event == "job.resume_failed" for r in events(cfg))


async def test_radio_lost_mid_transfer_reconnects_with_backoff_and_completes(short_dir: Path, bench: Bench) -> None:
    cfg = make_config(short_dir)
    fw = image(short_dir, 24_000)
    bench.fail_opens = {2, 3}  # the first two reopen attempts fail
    bench.hold_reboots = True
    # A nudge (Image Notify after 5 s of silence) would hide whether the device resumed by itself.
    daemon = await started(cfg, bench, backoff=(0.05, 0.1, 0.2), nudge_after_s=60)
    client = Client(cfg.control_socket, timeout=5)
    try:
        await call(client.push, fw, HCALCS)
        await wait_for(lambda: bench.device(HCALCS).file_offset > 6_000, what="a quarter of the image")
        assert daemon.app is not None
        daemon.app.connection_lost(RuntimeError("USB device disconnected"))
        await wait_for(lambda: not daemon.radio.up, what="radio down")
        body = await call(client.status)
        assert body["daemon"]["radio"]["up"] is False and body["daemon"]["radio"]["last_error"]
        assert body["jobs"][0]["parked"] is True
        with pytest.raises(DaemonError, match="not up") as err:
            await call(client.push, fw, HCALCS2)
        assert err.value.status == 503
        with pytest.raises(DaemonError, match="parked") as err:
            await call(client.cancel, "1")
        assert err.value.status == 503
        await wait_for(lambda: any(r.event == "job.reattached" for r in events(cfg)), 30, "the job re-attached")
        await bench.power_on_held()  # the device reboots with its partial image in flash
        held = await call(client.wait_job, "1", ("held",), timeout=30)
        assert held["state"] == "held" and held["bytes"] == fw.stat().st_size
        assert daemon.radio.up and daemon.radio.reconnects == 1 and bench.opens == 4
    finally:
        await daemon.stop("test")
    records = events(cfg)
    kinds = [r.event for r in records]
    assert "USB device disconnected" in next(r for r in records if r.event == "radio.down").fields["reason"]
    assert kinds.count("radio.open_failed") == 2
    # The first reopen is immediate; failures wait 0.05 s, then 0.1 s.
    assert [r.fields["retry_in_s"] for r in records if r.event == "radio.open_failed"] == [0.05, 0.1]
    assert kinds.index("radio.down") < kinds.index("job.reattached") < kinds.index("ota.resume")
    assert not any(r.event == "ota.notify" for r in records[kinds.index("radio.down") :])
    assert verify_log(cfg.state_dir / "audit.jsonl").ok


# --------------------------------------------------------------------------- future-dated activation across a restart


SUPPLIER = "90B3D51F30010000"


def supplier_bench(short_dir: Path) -> tuple[Config, Any]:
    """A config with one supplier responsible for HCALCS, and a signer for its commands."""
    import datetime as dt

    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    from gateway.config import DeviceConfig, SupplierConfig, parse_eui64
    from gateway.gbcs.ids import EntityId
    from gateway.gbcs.sign import generate_supplier_identity, sign_activation
    from gateway.image import parse_image

    key_pem, cert_pem = generate_supplier_identity(EntityId.parse(SUPPLIER))
    (short_dir / "supplier.pem").write_bytes(cert_pem)
    cfg = make_config(
        short_dir,
        suppliers=(SupplierConfig(id=SUPPLIER, certificate=short_dir / "supplier.pem"),),
        devices=(DeviceConfig(ieee=parse_eui64(HCALCS), kind="hcalcs", supplier=SUPPLIER),),
    )
    key = load_pem_private_key(key_pem, None)

    def sign(fw: Path, counter: int, at: dt.datetime | None = None, *, image_hash: bytes | None = None) -> str:
        return sign_activation(
            key,  # type: ignore[arg-type]
            originator=EntityId.parse(SUPPLIER),
            device=EntityId.parse(HCALCS),
            image_hash=image_hash if image_hash is not None else parse_image(fw.read_bytes()).manufacturer_image_hash,
            counter=counter,
            execution_time=at,
        ).hex()

    return cfg, sign


async def test_a_one_step_activation_sent_with_the_push(short_dir: Path, bench: Bench) -> None:
    cfg, sign = supplier_bench(short_dir)
    fw = image(short_dir)
    daemon = await started(cfg, bench)
    client = Client(cfg.control_socket, timeout=5)
    try:
        # A command for another image is refused before any block is sent, and no job is made.
        with pytest.raises(DaemonError, match="refused before any block was sent") as err:
            await call(lambda: client.push(fw, HCALCS, activation=sign(fw, 5, image_hash=b"\x11" * 32)))
        assert err.value.status == 422 and bench.device(HCALCS).counters.blocks_received == 0
        assert daemon.store is not None and daemon.store.list_jobs() == []
        job = await call(lambda: client.push(fw, HCALCS, activation=sign(fw, 6)))
        assert job["activation"] == "command"
        done = await call(client.wait_job, job["job"], ("confirmed",), timeout=20)
        assert done["state"] == "confirmed" and bench.device(HCALCS).current_file_version == 2
    finally:
        await daemon.stop("test")
    verdicts = StateStore.in_state_dir(cfg.state_dir).list_verdicts(HCALCS)
    assert [(v.accepted, v.counter, v.job_id) for v in verdicts] == [(True, 6, int(job["job"]))]
    kinds = [r.event for r in events(cfg)]
    assert "gbcs.precheck_refused" in kinds and "gbcs.activation" in kinds


async def test_a_one_step_command_is_armed_again_after_a_restart_mid_transfer(short_dir: Path, bench: Bench) -> None:
    cfg, sign = supplier_bench(short_dir)
    fw = image(short_dir, 24_000)
    first = await started(cfg, bench)
    client = Client(cfg.control_socket, timeout=5)
    await call(lambda: client.push(fw, HCALCS, activation=sign(fw, 7)))
    await wait_for(lambda: bench.device(HCALCS).file_offset > 6_000, what="a quarter of the image")
    await first.stop("test restart")
    assert StateStore.in_state_dir(cfg.state_dir).list_verdicts() == []  # not submitted yet

    second = await started(cfg, bench)
    try:
        done = await call(client.wait_job, "1", ("confirmed",), timeout=30)
        assert done["state"] == "confirmed"
    finally:
        await second.stop("test")
    verdicts = StateStore.in_state_dir(cfg.state_dir).list_verdicts(HCALCS)
    assert [(v.accepted, v.counter) for v in verdicts] == [(True, 7)]


async def test_a_future_dated_activation_keeps_its_time_across_a_restart(short_dir: Path, bench: Bench) -> None:
    import datetime as dt

    cfg, sign = supplier_bench(short_dir)
    fw = image(short_dir)
    first = await started(cfg, bench)
    client = Client(cfg.control_socket, timeout=5)
    await call(client.push, fw, HCALCS)
    await call(client.wait_job, "1", ("held",), timeout=20)
    at = (dt.datetime.now(dt.timezone.utc) + dt.timedelta(seconds=3)).replace(microsecond=0)
    command = sign(fw, 1000, at)
    result = await call(client.activate, command, HCALCS)
    assert result["accepted"] is True and result["decision"] == "schedule", result
    assert (await call(client.job, "1"))["state"] == "scheduled"
    await first.stop("test restart")
    stored = StateStore.in_state_dir(cfg.state_dir)
    assert [(s.job_id, s.at_utc) for s in stored.list_schedules()] == [(1, at)]
    assert stored.last_counter(SUPPLIER) == 1000

    second = await started(cfg, bench)
    try:
        status = await call(client.status)
        assert status["jobs"][0]["state"] == "scheduled"
        assert status["schedules"] == [{"job": "1", "device": HCALCS, "at": at.isoformat(), "created": status["schedules"][0]["created"]}]
        assert bench.device(HCALCS).current_file_version == 1  # not before its time
        done = await call(client.wait_job, "1", ("confirmed",), timeout=20)
        assert done["state"] == "confirmed"
        assert dt.datetime.now(dt.timezone.utc) >= at
        # The same command again is a replay: the counter survived the restart.
        again = await call(client.activate, command, HCALCS)
        assert again["accepted"] is False
    finally:
        await second.stop("test")
    assert bench.device(HCALCS).current_file_version == 2
    kinds = [r.event for r in events(cfg)]
    assert "job.schedule_restored" in kinds and kinds.count("gbcs.verdict") == 2


async def test_watchdog_pings_at_the_interval_systemd_asks_for(short_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    listener = NotifyListener(short_dir / "notify.sock")
    monkeypatch.setenv("WATCHDOG_USEC", "100000")  # 0.1 s: ping every 0.05 s
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
    try:
        t0 = time.monotonic()
        daemon = await started(make_config(short_dir), sim_devices=[f"hcalcs:{HCALCS}"], notifier=listener.notifier())
        await wait_for(lambda: listener.messages.count("WATCHDOG=1") >= 4, 30, "4 watchdog pings")
        await daemon.stop("test")
        elapsed = time.monotonic() - t0
        await wait_for(lambda: any(m.startswith("STOPPING=1") for m in listener.messages), 30, "STOPPING=1")
    finally:
        listener.close()
    # At the interval asked for, not faster (a busy machine may make them later, never sooner).
    pings = listener.messages.count("WATCHDOG=1")
    assert 4 <= pings <= elapsed / 0.05 + 3, listener.messages
    assert listener.messages[0].startswith("READY=1") and listener.messages[-1].startswith("STOPPING=1")


async def test_a_device_that_gave_up_during_an_outage_is_nudged_back(short_dir: Path) -> None:
    # Two retries 0.2 s apart, then the device goes idle until its next query (300 s).
    bench = Bench(f"hcalcs:{HCALCS}:query_delay=0.05:min_block_period_ms=2:response_timeout=0.2:max_retries=1", database=short_dir / "zigbee.db")
    cfg = make_config(short_dir)
    fw = image(short_dir, 24_000)
    bench.fail_opens = {2, 3}
    daemon = await started(cfg, bench, backoff=(0.5,), nudge_after_s=0.3)
    client = Client(cfg.control_socket, timeout=5)
    try:
        await call(client.push, fw, HCALCS)
        await wait_for(lambda: bench.device(HCALCS).file_offset > 6_000, what="a quarter of the image")
        assert daemon.app is not None
        daemon.app.connection_lost(RuntimeError("USB device disconnected"))
        await wait_for(lambda: bench.device(HCALCS).counters.gave_up >= 1, what="the device to give up")
        held = await call(client.wait_job, "1", ("held",), timeout=30)
        assert held["state"] == "held" and held["bytes"] == fw.stat().st_size
        assert bench.device(HCALCS).radio.power_cycles == 0  # nobody rebooted it
    finally:
        await daemon.stop("test")
        await bench.close()
    later = events(cfg)
    kinds = [r.event for r in later]
    assert kinds.index("radio.up", kinds.index("radio.down")) < kinds.index("job.nudge") < kinds.index("ota.query", kinds.index("job.nudge"))
    resumed = [r for r in later[kinds.index("job.nudge") :] if r.event == "ota.resume"]
    assert resumed and resumed[0].fields["offset"] > 6_000
