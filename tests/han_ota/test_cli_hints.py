"""Hints name commands that exist, with the --config given; Ctrl-C on a wait says the job goes on (issue 11 items 16, 17)."""

from __future__ import annotations

import asyncio
import json
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from han_ota import cli, cli_daemon
from han_ota.client import Client, resolve_config
from han_ota.daemon import Daemon
from han_ota.follow import EXIT_INTERRUPTED, follow_job
from radios.sim.testing import build_ota_image

HCALCS = "00:11:22:33:44:55:66:77"


@pytest.fixture
def short_dir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="hoh", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def write_config(root: Path, name: str) -> Path:
    (root / name).mkdir()
    path = root / name / "config.toml"
    path.write_text('state_dir = "."\ncontrol_socket = "control.sock"\n')
    return path


async def test_push_hint_wait_and_the_daemon_under_another_config(short_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write_config(short_dir, "a")
    cfg = resolve_config(path)
    # This daemon listens where a user's default config would look.
    monkeypatch.setattr("han_ota.client.user_control_socket", lambda *a, **k: cfg.control_socket)
    fw = short_dir / "fw.ota"
    fw.write_bytes(build_ota_image(0x121D, 0x0000, 2, b"\x5a" * 3000, min_hw=0x1111, max_hw=0x1111))
    daemon = Daemon(cfg, [f"hcalcs:{HCALCS}:query_delay=0.05"])
    await daemon.start()
    await daemon.wait_radio(30)
    cli._mount()
    runner = CliRunner()
    try:
        pushed = await asyncio.to_thread(runner.invoke, cli.app, ["push", str(fw), "--device", HCALCS, "--config", str(path)])
        assert pushed.exit_code == 0, pushed.output
        assert f"`han-ota wait 1 --config {path}`" in pushed.output and f"`han-ota status --config {path}`" in pushed.output

        waited = await asyncio.to_thread(runner.invoke, cli.app, ["wait", "1", "--timeout", "60", "--json", "--config", str(path)])
        assert waited.exit_code == 0, waited.output
        assert json.loads(waited.output.strip().splitlines()[-1])["state"] == "held"

        other = write_config(short_dir, "b")
        result = await asyncio.to_thread(runner.invoke, cli_daemon.standalone, ["status", "--config", str(other)])
        assert result.exit_code == 3
        assert f"one answers on {cfg.control_socket} (config {path}): pass --config {path}" in result.output
    finally:
        await daemon.stop("test")


class InterruptedClient:
    def wait_job(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        raise KeyboardInterrupt


def test_ctrl_c_while_waiting_says_the_job_goes_on(capsys: pytest.CaptureFixture[str]) -> None:
    job = {"job": "7", "device": HCALCS, "state": "transferring", "size": 100}
    code = follow_job(InterruptedClient(), job, "held", timeout=None, json_out=False, config=Path("/etc/lab.toml"))  # type: ignore[arg-type]
    err = capsys.readouterr().err
    assert code == EXIT_INTERRUPTED
    assert "job 7 goes on in the daemon" in err
    assert "`han-ota cancel 7 --config /etc/lab.toml`" in err and "`han-ota wait 7 --config /etc/lab.toml`" in err
    code = follow_job(InterruptedClient(), job, "held", timeout=None, json_out=True, config=None)  # type: ignore[arg-type]
    out = capsys.readouterr().out
    assert code == EXIT_INTERRUPTED and "`han-ota cancel 7`" in json.loads(out.strip().splitlines()[-1])["error"]


def test_errors_blame_what_the_user_gave(tmp_path: Path) -> None:
    config = tmp_path / "lab.toml"
    missing = tmp_path / "ttyACM9"
    config.write_text(f'[radio]\nkind = "znp"\npath = "{missing}"\n')
    image = Path(__file__).parents[1] / "data" / "gbcs" / "sr11.1-firmware-image.bin"
    cli._mount()
    runner = CliRunner()
    result = runner.invoke(cli.app, ["push", str(image), "--device", HCALCS, "--sim-device", f"hcalcs:{HCALCS}", "--config", str(config)])
    assert result.exit_code == 2
    assert f"--sim-device needs the simulated radio, but radio.kind in {config} is 'znp'" in result.output
    result = runner.invoke(cli.app, ["push", str(image), "--device", HCALCS, "--config", str(config), "--timeout", "30"])
    assert result.exit_code == 1
    assert str(missing) in result.output and f"the one [radio] in {config} names" in result.output


async def test_a_downgrade_through_the_daemon_needs_allow_downgrade(short_dir: Path) -> None:
    path = write_config(short_dir, "d")
    cfg = resolve_config(path)
    fw = short_dir / "old.ota"
    fw.write_bytes(build_ota_image(0x121D, 0x0000, 2, b"\x5a" * 800, min_hw=0x1111, max_hw=0x1111))
    daemon = Daemon(cfg, [f"hcalcs:{HCALCS}:query_delay=0.05:file_version=9:hardware_version=0x1111"])
    await daemon.start()
    await daemon.wait_radio(30)
    try:
        client = Client(cfg.control_socket)
        refused = await asyncio.to_thread(client.push, fw, HCALCS)
        failed = await asyncio.to_thread(client.wait_job, refused["job"], ("held",), timeout=60)
        assert failed["state"] == "failed" and "--allow-downgrade" in failed["reason"]
        allowed = await asyncio.to_thread(client.push, fw, HCALCS, allow_downgrade=True)
        held = await asyncio.to_thread(client.wait_job, allowed["job"], ("held",), timeout=60)
        assert held["state"] == "held" and any("downgrade" in w for w in held["warnings"])
    finally:
        await daemon.stop("test")


async def test_the_daemons_own_hints_carry_its_config(short_dir: Path) -> None:
    path = write_config(short_dir, "h")
    cfg = resolve_config(path)
    fw = short_dir / "fw.ota"
    fw.write_bytes(build_ota_image(0x121D, 0x0000, 2, b"\x5a" * 800, min_hw=0x1111, max_hw=0x1111))
    daemon = Daemon(cfg, [f"hcalcs:{HCALCS}:query_delay=0.05"])
    await daemon.start()
    await daemon.wait_radio(30)
    try:
        client = Client(cfg.control_socket)
        job = await asyncio.to_thread(client.push, fw, HCALCS)
        from han_ota.client import DaemonError

        with pytest.raises(DaemonError) as err:
            await asyncio.to_thread(client.push, fw, HCALCS)
        assert f"`han-ota cancel {job['job']} --config {path}`" in str(err.value)
        assert f"`han-ota wait {job['job']} --config {path}`" in str(err.value)
    finally:
        await daemon.stop("test")
