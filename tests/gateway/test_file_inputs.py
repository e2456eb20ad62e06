"""Files users name (images, commands): FIFOs, directories and missing paths get clear
refusals, never a wedged daemon or a traceback; errors never echo a file's content;
concurrent pushes of one image each keep an intact copy (issue 16 items 4, 6, 8; issue 11 item 4)."""

from __future__ import annotations

import asyncio
import errno
import hashlib
import json
import os
import shutil
import sqlite3
import tempfile
import threading
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from gateway.config import Config
from gateway.image import ImageError, load_image, parse_image
from gateway.store import StoreError
from han_ota import cli, cli_gbcs, cli_image
from han_ota.client import Client, DaemonError
from han_ota.daemon import IMAGES_DIR, Daemon
from han_ota.daemon.images import keep_image
from radios.sim.testing import build_ota_image

HCALCS = "00:11:22:33:44:55:66:77"
CERT = Path(__file__).parents[1] / "data" / "gbcs" / "supplier-90b3d51f30010000-ds.pem"
runner = CliRunner()


def ota_bytes(size: int = 4000) -> bytes:
    return build_ota_image(0x121D, 0x0000, 2, bytes(i % 251 for i in range(size)), min_hw=0x1111, max_hw=0x1111)


def release(fifos: list[Path]) -> None:
    """Unblock any reader stuck opening these FIFOs (the old code), so a failing test ends."""
    for fifo in fifos:
        try:
            os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        except OSError:
            pass  # ENXIO: nobody is waiting on it


@pytest.fixture
def short_dir() -> Iterator[Path]:
    # Unix socket paths are limited to 108 bytes; pytest's tmp_path can be longer.
    path = Path(tempfile.mkdtemp(prefix="hof", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def make_config(root: Path) -> Config:
    state = root / "state"
    state.mkdir(exist_ok=True)
    return replace(Config(), source=root / "config.toml", state_dir=state, control_socket=root / "run" / "control.sock")


@pytest.fixture
async def daemon(short_dir: Path) -> AsyncIterator[Daemon]:
    d = Daemon(make_config(short_dir), [f"hcalcs:{HCALCS}:file_version=1"])
    await d.start()
    try:
        await d.wait_radio(10)
        yield d
    finally:
        async with asyncio.timeout(30):
            await d.stop("test")


# --------------------------------------------------------------------------- 16.4 FIFO in the daemon


async def test_pushing_fifos_is_refused_and_leaves_the_daemon_working(daemon: Daemon, short_dir: Path) -> None:
    fifos = [short_dir / f"fifo{i}.ota" for i in range(8)]
    for fifo in fifos:
        os.mkfifo(fifo)
    client = Client(daemon.config.control_socket, timeout=30)
    calls: list[Future[Any]] = []
    # The client calls get threads of their own: the daemon's worker threads are what is tested.
    with ThreadPoolExecutor(max_workers=10) as pool:

        def call(fn: Any, *args: Any) -> Any:
            calls.append(pool.submit(fn, *args))
            return asyncio.wrap_future(calls[-1])

        try:
            async with asyncio.timeout(30):
                refusals = await asyncio.gather(*(call(client.push, fifo, HCALCS) for fifo in fifos), return_exceptions=True)
                for fifo, refusal in zip(fifos, refusals):
                    assert isinstance(refusal, DaemonError), refusal
                    assert refusal.status == 400
                    assert f"{fifo} is not a regular file (a FIFO)" in str(refusal)
                fw = short_dir / "fw.ota"
                fw.write_bytes(ota_bytes())
                job = await call(client.push, fw, HCALCS)
                assert job["state"] in ("pending", "transferring")
                status = await call(client.status)
                assert [j["job"] for j in status["jobs"]] == [job["job"]]
                assert (await call(client.log_verify))["ok"] is True
        finally:
            # With the old code daemon threads sit in open(), and queued ones start
            # later: keep releasing until every push has its answer, so the test ends.
            async with asyncio.timeout(120):
                while not all(c.done() for c in calls):
                    release(fifos)
                    await asyncio.wait([asyncio.wrap_future(c) for c in calls if not c.done()], timeout=0.2)


async def test_a_directory_as_image_is_refused_as_not_a_regular_file(daemon: Daemon, short_dir: Path) -> None:
    client = Client(daemon.config.control_socket, timeout=30)
    async with asyncio.timeout(30):
        with pytest.raises(DaemonError) as err:
            await asyncio.to_thread(client.push, short_dir, HCALCS)
    assert err.value.status == 400 and f"{short_dir} is not a regular file (a directory)" in str(err.value)


# --------------------------------------------------------------------------- 16.8 concurrent copies, 507 only when full


def test_fifty_concurrent_copies_of_one_image_all_succeed_intact(short_dir: Path) -> None:
    d = Daemon(make_config(short_dir))
    data = ota_bytes(1_000_000)
    digest = hashlib.sha256(data).hexdigest()
    start = threading.Barrier(50)

    def keep() -> Path:
        start.wait(timeout=30)
        return keep_image(d.config.state_dir, data, digest)

    with ThreadPoolExecutor(max_workers=50) as pool:
        results = [f.result(timeout=60) for f in [pool.submit(keep) for _ in range(50)]]
    target = short_dir / "state" / IMAGES_DIR / f"{digest}.ota"
    assert set(results) == {target}
    assert hashlib.sha256(target.read_bytes()).hexdigest() == digest
    assert target.stat().st_mode & 0o777 == 0o640
    assert sorted(p.name for p in target.parent.iterdir()) == [target.name]  # no temp file left


async def test_stale_temp_copies_of_both_namings_are_removed_at_start(short_dir: Path) -> None:
    cfg = make_config(short_dir)
    images = cfg.state_dir / IMAGES_DIR
    images.mkdir()
    stale = [images / f".{'a' * 64}.4242.tmp", images / f".{'b' * 64}.k2j3h4g5.tmp"]
    for path in stale:
        path.write_bytes(b"half a copy")
    d = Daemon(cfg, [f"hcalcs:{HCALCS}"])
    await d.start()
    try:
        await d.wait_radio(10)
        assert not any(p.exists() for p in stale)
    finally:
        await d.stop("test")


@pytest.mark.parametrize(
    ("error", "status", "free_space"),
    [(OSError(errno.ENOSPC, "No space left on device"), 507, True), (PermissionError(errno.EACCES, "Permission denied"), 500, False)],
)
async def test_an_image_copy_error_is_507_only_when_the_disk_is_full(
    daemon: Daemon, short_dir: Path, monkeypatch: pytest.MonkeyPatch, error: OSError, status: int, free_space: bool
) -> None:
    def mkstemp(*_args: Any, **_kwargs: Any) -> Any:
        raise error

    monkeypatch.setattr(tempfile, "mkstemp", mkstemp)
    fw = short_dir / "fw.ota"
    fw.write_bytes(ota_bytes())
    client = Client(daemon.config.control_socket, timeout=30)
    async with asyncio.timeout(30):
        with pytest.raises(DaemonError) as err:
            await asyncio.to_thread(client.push, fw, HCALCS)
    assert err.value.status == status and str(error.strerror) in str(err.value)
    assert ("free space" in str(err.value)) is free_space


async def test_a_store_error_whose_text_says_full_is_not_taken_for_a_full_disk(daemon: Daemon, short_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert daemon.store is not None

    def create_job(_record: Any, **_options: Any) -> int:
        try:
            raise sqlite3.OperationalError("disk I/O error")
        except sqlite3.Error as exc:
            raise StoreError("state store /srv/fullstack/state.db: disk I/O error (check the storage device)") from exc

    monkeypatch.setattr(daemon.store, "create_job", create_job)
    fw = short_dir / "fw.ota"
    fw.write_bytes(ota_bytes())
    client = Client(daemon.config.control_socket, timeout=30)
    async with asyncio.timeout(30):
        with pytest.raises(DaemonError) as err:
            await asyncio.to_thread(client.push, fw, HCALCS)
    assert err.value.status == 500 and "NOT accepted" in str(err.value)


# --------------------------------------------------------------------------- 16.6 no file content in errors


def test_a_file_that_is_no_image_is_named_and_its_bytes_are_not_echoed(tmp_path: Path) -> None:
    secret = tmp_path / "shadow"
    secret.write_bytes(b"root:$6$saltsalt$hash:19000:0:99999:7:::\n")
    with pytest.raises(ImageError) as err:
        load_image(secret)
    message = str(err.value)
    assert message.startswith(f"{secret}: not an OTA image") and "1E F1 EE 0B" in message
    rest = message.removeprefix(f"{secret}: ").lower()  # the path itself holds "root"
    for leak in ("root", "0x746f6f72", "746f6f72", "72 6f 6f 74"):
        assert leak not in rest
    assert (err.value.field, err.value.offset) == ("magic", 0)
    with pytest.raises(ImageError) as raw:
        parse_image(b"\xde\xad\xbe\xef" + bytes(100))
    assert "not an OTA image" in str(raw.value) and "DEADBEEF" not in str(raw.value).upper()


# --------------------------------------------------------------------------- 11.4 CLI file arguments


def invoke(app: Any, *args: object, fifos: tuple[Path, ...] = ()) -> Any:
    """Run a command with a bound: the old code blocked forever opening a FIFO."""
    with ThreadPoolExecutor(max_workers=1) as pool:
        future = pool.submit(runner.invoke, app, [str(a) for a in args])
        try:
            return future.result(timeout=30)
        except FutureTimeout:
            release(list(fifos))
            raise AssertionError(f"{args} blocked for 30 s") from None


def no_daemon_config(root: Path) -> Path:
    (root / "state").mkdir(exist_ok=True)
    path = root / "config.toml"
    path.write_text('state_dir = "state"\ncontrol_socket = "run/control.sock"\n')
    return path


@pytest.mark.parametrize("kind", ["missing", "directory", "fifo"])
@pytest.mark.parametrize("as_json", [False, True])
def test_push_of_a_path_that_is_no_file_is_a_clear_error(short_dir: Path, kind: str, as_json: bool) -> None:
    path = short_dir / "fw.ota"
    if kind == "directory":
        path.mkdir()
    elif kind == "fifo":
        os.mkfifo(path)
    json_flag = ["--json"] if as_json else []
    result = invoke(cli.app, "push", path, "--device", HCALCS, "--config", no_daemon_config(short_dir), *json_flag, fifos=(path,))
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit), result.exception
    expected = {
        "missing": f"cannot read image {path}: No such file or directory",
        "directory": f"{path} is not a regular file (a directory)",
        "fifo": f"{path} is not a regular file (a FIFO)",
    }[kind]
    assert expected in result.stderr and "Traceback" not in result.output
    if as_json:
        lines = result.stdout.strip().splitlines()
        assert len(lines) == 1
        report = json.loads(lines[0])
        assert expected in report["error"] and report["state"] == "failed" and report["device"] == HCALCS


@pytest.mark.parametrize("kind", ["missing", "directory", "fifo"])
def test_activate_and_push_activation_with_a_command_path_that_is_no_file(short_dir: Path, kind: str) -> None:
    path = short_dir / "cmd.hex"
    if kind == "directory":
        path.mkdir()
    elif kind == "fifo":
        os.mkfifo(path)
    config = no_daemon_config(short_dir)
    result = invoke(cli.app, "activate", path, "--config", config, "--json", fifos=(path,))
    assert result.exit_code == 1 and str(path) in result.stderr
    assert str(path) in json.loads(result.stdout.strip().splitlines()[-1])["error"]
    fw = short_dir / "fw.ota"
    fw.write_bytes(ota_bytes())
    result = invoke(cli.app, "push", fw, "--device", HCALCS, "--activation", path, "--config", config, "--json", fifos=(path,))
    assert result.exit_code == 1 and str(path) in result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert str(path) in report["error"] and report["state"] == "failed"


@pytest.mark.parametrize("kind", ["missing", "directory", "fifo"])
def test_image_inspect_and_gbcs_verify_with_a_path_that_is_no_file(short_dir: Path, kind: str) -> None:
    path = short_dir / "input"
    if kind == "directory":
        path.mkdir()
    elif kind == "fifo":
        os.mkfifo(path)
    inspected = invoke(cli_image.app, "inspect", path, "--json", fifos=(path,))
    assert inspected.exit_code == 1 and str(path) in json.loads(inspected.stdout)["error"]
    verified = invoke(cli_gbcs.app, "verify", path, "--trust", CERT, "--json", fifos=(path,))
    assert verified.exit_code == 1, verified.output
    report = json.loads(verified.stdout.strip().splitlines()[-1])
    assert report["valid"] is False and str(path) in report["error"]
