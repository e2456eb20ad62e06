"""The daemon's start-up integrity (issue 16 items 1 and 2).

A broken or cut audit log refuses the start, naming the first bad record and
`han-ota log --seal`; sealing keeps the damaged log aside and starts a new chain
that verifies. A state store deleted or emptied beside a full audit log gets its
anti-replay counters back from the log before any command is taken, so a CS06
accepted before is refused as a replay.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from gateway.audit import read_records, verify_log
from gateway.config import Config, load_config
from gateway.store import StateStore
from han_ota.cli_daemon import standalone
from han_ota.client import Client
from han_ota.daemon import Daemon, DaemonStartError
from tests.han_ota.test_daemon import HCALCS, SUPPLIER, Bench, call, image, started, supplier_bench

CONFIG = 'state_dir = "state"\ncontrol_socket = "run/control.sock"\n'


@pytest.fixture
def root() -> Any:
    path = Path(tempfile.mkdtemp(prefix="hoi", dir="/tmp"))  # unix socket paths are short
    (path / "state").mkdir()
    (path / "config.toml").write_text(CONFIG)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def cfg_of(root: Path) -> Config:
    return load_config(root / "config.toml")


def audit_path(cfg: Config) -> Path:
    return cfg.state_dir / "audit.jsonl"


async def run_once(cfg: Config) -> None:
    daemon = await started(cfg)
    await daemon.stop("test")


def cli(*args: str) -> Any:
    return CliRunner().invoke(standalone, list(args))


# --------------------------------------------------------------------------- damage


def flip_a_byte(lines: list[bytes], index: int = 2) -> tuple[list[bytes], int]:
    line = lines[index]
    at = line.index(b'"ts":"') + 8  # a digit of the year: still JSON, no longer the hashed record
    lines[index] = line[:at] + (b"1" if line[at : at + 1] != b"1" else b"2") + line[at + 1 :]
    return lines, index + 1


def delete_a_record(lines: list[bytes]) -> tuple[list[bytes], int]:
    del lines[2]
    return lines, 3


def change_last_hash(lines: list[bytes]) -> tuple[list[bytes], int]:
    last = json.loads(lines[-1])
    last["hash"] = "f" * 64
    lines[-1] = json.dumps(last, sort_keys=True, separators=(",", ":")).encode()
    return lines, len(lines)


def cut_last_records(lines: list[bytes]) -> tuple[list[bytes], int]:
    # The chain that is left is intact: only the store's anchor shows the cut.
    return lines[:-2], len(lines) - 1


DAMAGE: dict[str, Callable[[list[bytes]], tuple[list[bytes], int]]] = {
    "flip a byte": flip_a_byte,
    "delete a record": delete_a_record,
    "change the last hash": change_last_hash,
    "cut the last records": cut_last_records,
}


@pytest.mark.parametrize("damage", DAMAGE)
async def test_a_damaged_log_refuses_the_start_then_seal_and_start_again(root: Path, damage: str) -> None:
    cfg = cfg_of(root)
    await run_once(cfg)
    path = audit_path(cfg)
    lines, bad_seq = DAMAGE[damage](path.read_bytes().split(b"\n")[:-1])
    damaged = b"".join(line + b"\n" for line in lines)
    path.write_bytes(damaged)

    daemon = Daemon(cfg)
    with pytest.raises(DaemonStartError) as refused:
        await daemon.start()
    await daemon.stop("start-up failed")
    message = str(refused.value)
    assert f"broken at record {bad_seq}" in message, message
    assert f"han-ota log --seal --config {root / 'config.toml'}" in message, message
    assert path.read_bytes() == damaged, "a refused start must not append to the broken chain"

    # The offline check names the same record.
    verified = cli("log", "--verify", "--json", "--config", str(root / "config.toml"))
    assert verified.exit_code == 1 and json.loads(verified.stdout)["first_bad_seq"] == bad_seq

    sealed = cli("log", "--seal", "--json", "--config", str(root / "config.toml"))
    assert sealed.exit_code == 0, sealed.output
    summary = json.loads(sealed.stdout.strip().splitlines()[-1])
    assert summary["sealed"] is True and summary["last_good_seq"] == bad_seq - 1
    kept = cfg.state_dir / summary["sealed_file"]
    assert kept.read_bytes() == damaged, "the damaged log is kept, byte for byte"
    first = next(read_records(path))
    assert first.seq == 1 and first.event == "audit.sealed"
    assert first.fields["sealed_file"] == kept.name and first.fields["last_good_seq"] == bad_seq - 1

    await run_once(cfg)
    result = verify_log(path, expect_head=StateStore.in_state_dir(cfg.state_dir).audit_anchor())
    assert result.ok and result.records > 2
    events = [r.event for r in read_records(path)]
    assert events[0] == "audit.sealed" and "daemon.start" in events and events[-1] == "daemon.stop"
    assert cli("log", "--verify", "--config", str(root / "config.toml")).exit_code == 0


async def test_a_start_verifies_from_its_checkpoint_and_the_older_records_in_the_background(root: Path) -> None:
    cfg = cfg_of(root)
    await run_once(cfg)
    checked = StateStore.in_state_dir(cfg.state_dir).audit_checkpoint()
    assert checked == (0, "0" * 64, 0)  # the first start found an empty log
    await run_once(cfg)  # verifies the first run's records, checkpoints after them
    checkpoint = StateStore.in_state_dir(cfg.state_dir).audit_checkpoint()
    assert checkpoint is not None and checkpoint[0] >= 2
    path = audit_path(cfg)
    lines, _ = flip_a_byte(path.read_bytes().split(b"\n")[:-1], 1)  # record 2: before the checkpoint
    path.write_bytes(b"".join(line + b"\n" for line in lines))

    daemon = await started(cfg)  # the start checks only what came after the checkpoint ...
    try:
        async with asyncio.timeout(30):  # ... and the rest right after
            while daemon.chain_error is None:
                await asyncio.sleep(0.02)
        audit = (await daemon.api.status())[1]["daemon"]["audit"]
        assert audit["ok"] is False and "broken at record 2" in audit["chain_error"]
        assert "han-ota log --seal" in audit["chain_error"]
    finally:
        await daemon.stop("test")
    # The next start sees the break through its fallback to a whole-chain check.
    with pytest.raises(DaemonStartError, match="broken at record 2"):
        daemon = Daemon(cfg)
        try:
            await daemon.start()
        finally:
            await daemon.stop("start-up failed")


async def test_the_store_anchors_the_head_on_every_append(root: Path) -> None:
    cfg = cfg_of(root)
    daemon = await started(cfg)
    try:
        assert daemon.audit is not None and daemon.store is not None
        assert daemon.store.audit_anchor() == daemon.audit.head()
        status = (await daemon.api.status())[1]["daemon"]["audit"]
        assert status["ok"] is True and status["warning"] is None
    finally:
        await daemon.stop("test")
    last = list(read_records(audit_path(cfg)))[-1]
    assert StateStore.in_state_dir(cfg.state_dir).audit_anchor() == (last.seq, last.hash)


async def test_seal_refuses_while_the_daemon_runs_and_a_sound_log_needs_none(root: Path) -> None:
    cfg = cfg_of(root)
    daemon = await started(cfg)
    try:
        running = await call(cli, "log", "--seal", "--config", str(root / "config.toml"))
        assert running.exit_code == 1 and "stop it first" in running.output
    finally:
        await daemon.stop("test")
    sound = cli("log", "--seal", "--json", "--config", str(root / "config.toml"))
    assert sound.exit_code == 0 and json.loads(sound.stdout.strip().splitlines()[-1])["sealed"] is False
    assert not list(cfg.state_dir.glob("audit.sealed-*"))


# --------------------------------------------------------------------------- a lost store


def lose_store(state_dir: Path, how: str) -> None:
    for suffix in ("-wal", "-shm"):
        (state_dir / f"state.sqlite3{suffix}").unlink(missing_ok=True)
    if how == "delete":
        (state_dir / "state.sqlite3").unlink()
    else:
        (state_dir / "state.sqlite3").write_bytes(b"")


@pytest.mark.parametrize("how", ["delete", "empty"])
async def test_a_lost_store_gets_its_counters_back_and_an_accepted_cs06_is_a_replay(short_dir: Path, how: str) -> None:
    cfg, sign = supplier_bench(short_dir)
    bench = Bench(f"hcalcs:{HCALCS}:query_delay=0.05:wait_interval=0.2:reboot_time=0.05:response_timeout=0.5")
    fw = image(short_dir)
    # Future-dated, so the device stays held and the same image can be pushed again.
    command = sign(fw, 1000, (dt.datetime.now(dt.timezone.utc) + dt.timedelta(hours=1)).replace(microsecond=0))
    client = Client(cfg.control_socket, timeout=5)
    try:
        first = await started(cfg, bench)
        try:
            await call(client.push, fw, HCALCS)
            await call(client.wait_job, "1", ("held",), timeout=30)
            accepted = await call(client.activate, command, HCALCS)
            assert accepted["accepted"] is True, accepted
        finally:
            await first.stop("test")
        lose_store(cfg.state_dir, how)

        second = await started(cfg, bench)
        try:
            job = await call(client.push, fw, HCALCS)
            await call(client.wait_job, job["job"], ("held",), timeout=30)
            again = await call(client.activate, command, HCALCS)
            assert again["accepted"] is False and again["reason"] == "replayed counter", again
            assert second.store is not None and second.store.last_counter(SUPPLIER) == 1000
            warning = (await call(client.status))["daemon"]["audit"].get("warning")
            assert warning and "Recovered 1 anti-replay counter" in warning
        finally:
            await second.stop("test")
    finally:
        await bench.close()
    records = list(read_records(cfg.state_dir / "audit.jsonl"))
    recovered = [r for r in records if r.event == "store.recovered"]
    assert len(recovered) == 1 and recovered[0].fields["raised"] == {SUPPLIER.lower(): 1000}
    # The recovery record sits before the second daemon.start: nothing was taken before it.
    starts = [r.seq for r in records if r.event == "daemon.start"]
    assert starts[0] < recovered[0].seq < starts[1]
    assert verify_log(cfg.state_dir / "audit.jsonl", expect_head=StateStore.in_state_dir(cfg.state_dir).audit_anchor()).ok


@pytest.fixture
def short_dir() -> Any:
    path = Path(tempfile.mkdtemp(prefix="hoi", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)
