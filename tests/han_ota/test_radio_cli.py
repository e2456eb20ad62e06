"""``han-ota radio ...`` and ``han-ota emulate ...`` (han_ota/cli_radio.py) end to end.

The commands run in this process through typer's runner (``register(app)`` mounts them
on any typer app, as han_ota/cli.py does); the emulated coordinator they talk to runs
on its own event loop in a thread, like a dongle on the other end of a cable.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from han_ota.cli_radio import parse_listen, register

ROOT = Path(__file__).resolve().parents[2]
runner = CliRunner()


def app() -> typer.Typer:
    main = typer.Typer(no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)
    register(main)
    return main


def run(*args: str):
    result = runner.invoke(app(), list(args))
    return result


def last_json(output: str) -> dict:
    return json.loads([line for line in output.splitlines() if line.startswith("{")][-1])


class ThreadedEmulator:
    """A ZNP emulator on its own loop in a thread (the CLI calls asyncio.run itself)."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        from radios.emulate.znp import serve_znp

        self.server = asyncio.run_coroutine_threadsafe(serve_znp("127.0.0.1", 0, None), self.loop).result(10)
        self.url = self.server.url

    def close(self) -> None:
        asyncio.run_coroutine_threadsafe(self.server.close(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


@pytest.fixture
def emulator():
    emu = ThreadedEmulator()
    try:
        yield emu
    finally:
        emu.close()


@pytest.fixture
def no_config(tmp_path, monkeypatch):
    """A config naming no radio, so nothing falls back to /etc/han-ota/config.toml."""
    cfg = tmp_path / "config.toml"
    cfg.write_text(f'state_dir = "{tmp_path / "state"}"\n')
    return str(cfg)


def test_form_info_backup_restore_through_the_cli(emulator, no_config, tmp_path):
    common = ["--radio", "znp", "--path", emulator.url, "--config", no_config]
    blank = run("radio", "info", *common, "--json")
    assert blank.exit_code == 0, blank.output
    assert last_json(blank.output)["formed"] is False

    formed = run("radio", "form", "--channel", "15", "--pan-id", "0x1234", *common, "--json")
    assert formed.exit_code == 0, formed.output
    first = last_json(formed.output)["network"]
    assert first["channel"] == 15 and first["pan_id"] == "0x1234"

    again = run("radio", "form", *common)
    assert again.exit_code == 1
    assert "already has a network" in again.output and "--force" in again.output

    text = run("radio", "info", *common)
    assert text.exit_code == 0 and "channel 15, PAN id 0x1234" in text.output and "network key #0" in text.output

    out = tmp_path / "backups" / "net.json"
    saved = run("radio", "backup", "-o", str(out), *common, "--json")
    assert saved.exit_code == 0, saved.output
    assert last_json(saved.output)["extended_pan_id"] == first["extended_pan_id"]
    assert (out.stat().st_mode & 0o777) == 0o600  # it holds the network key
    assert json.loads(out.read_text())["network_info"]["channel"] == 15

    assert run("radio", "form", "--force", "--channel", "20", *common).exit_code == 0
    refused = run("radio", "restore", str(out), *common)
    assert refused.exit_code == 1 and "another network" in refused.output
    restored = run("radio", "restore", str(out), "--force", *common, "--json")
    assert restored.exit_code == 0, restored.output
    assert last_json(restored.output)["network"]["extended_pan_id"] == first["extended_pan_id"]

    oc = tmp_path / "coordinator_backup.json"
    assert run("radio", "backup", "-o", str(oc), "--format", "open-coordinator", *common).exit_code == 0
    assert json.loads(oc.read_text())["metadata"]["format"] == "zigpy/open-coordinator-backup"


def test_detect_probe_given_path(emulator):
    result = run("radio", "detect", "--path", emulator.url, "--json", "--timeout", "20")
    assert result.exit_code == 0, result.output
    (port,) = last_json(result.output)["ports"]
    assert port["device"] == emulator.url and port["radio"] == "znp"
    assert port["probe"]["znp"]["path"] == emulator.url
    text = run("radio", "detect", "--path", emulator.url, "--timeout", "20")
    assert "znp coordinator (it answered the probe)" in text.output and "a znp" not in text.output


def test_detect_on_a_machine_without_dongles_says_so(monkeypatch):
    monkeypatch.setattr("radios.detect.list_serial_ports", lambda: [])
    result = run("radio", "detect")
    # Non-zero, so `han-ota radio detect && ...` in a script stops here.
    assert result.exit_code == 1 and "no coordinator dongle found" in result.output
    as_json = run("radio", "detect", "--json")
    assert as_json.exit_code == 1 and last_json(as_json.output) == {"ports": []}


def test_errors_name_the_port_and_the_fix(no_config, tmp_path, monkeypatch):
    missing = run("radio", "info", "--radio", "znp", "--path", str(tmp_path / "ttyGONE"), "--config", no_config, "--json")
    assert missing.exit_code == 1
    assert "ttyGONE" in missing.output and "plugged in" in missing.output
    assert "error" in last_json(missing.output)
    bad = run("radio", "info", "--radio", "sim", "--path", "x", "--config", no_config)
    assert bad.exit_code == 2 and "ezsp or znp" in bad.output
    monkeypatch.setattr("radios.detect.list_serial_ports", lambda: [])
    which = run("radio", "info", "--config", no_config)
    assert which.exit_code == 2 and "which radio?" in which.output and "none found" in which.output
    nobackup = run("radio", "restore", str(tmp_path / "nope.json"), "--radio", "znp", "--path", "socket://127.0.0.1:9", "--config", no_config)
    assert nobackup.exit_code == 2 and "nope.json" in nobackup.output


def test_emulate_option_errors():
    assert "HOST:PORT" in run("emulate", "znp", "--listen", "9999").output
    bad_fault = run("emulate", "znp", "--fault", "explode=1")
    assert bad_fault.exit_code == 2 and "explode" in bad_fault.output
    bad_dev = run("emulate", "ezsp", "--sim-device", "toaster:0011223344556677")
    assert bad_dev.exit_code == 2 and "--sim-device" in bad_dev.output
    assert run("emulate", "znp", "--link", "warp").exit_code == 2
    assert parse_listen("[::1]:0") == ("::1", 0) and parse_listen("0.0.0.0:8123") == ("0.0.0.0", 8123)


def test_emulate_runs_until_ctrl_c_and_prints_the_url():
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([str(Path(sys.executable).with_name("han-ota")), "emulate", "ezsp", "--listen", "127.0.0.1:0",
                             "--sim-device", "ppmid:00:db:12:34:56:78:90:a1", "--fault", "fail-deliveries=2"],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, cwd=ROOT, env=env)
    try:
        first = proc.stdout.readline()
        assert first.startswith("EZSP coordinator emulator ready at socket://127.0.0.1:"), first
        url = first.rsplit(" ", 1)[1].strip()
        assert f"--radio ezsp --path {url}" in proc.stdout.readline()
        assert "simulated ppmid 00:db:12:34:56:78:90:a1" in proc.stdout.readline()
    finally:
        proc.send_signal(signal.SIGINT)
        assert proc.wait(10) == 0
    assert "EZSP emulator stopped" in proc.stdout.read()


def refused_url() -> str:
    """A socket:// URL whose port nobody listens on (bound once, then closed)."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"socket://127.0.0.1:{port}"


@pytest.mark.parametrize("kind, where", [("znp", "/dev/ttyUSB-han-ota-absent"), ("ezsp", None)])
def test_push_exits_when_the_radio_does_not_start(tmp_path: Path, kind: str, where: str | None):
    # zigpy's failed startup() left its aiosqlite thread (not a daemon thread) running:
    # the error was printed, then the process hung until killed.
    path = where or refused_url()
    (tmp_path / "config.toml").write_text(f'state_dir = "{tmp_path / "state"}"\n')
    image = ROOT / "tests" / "data" / "gbcs" / "sr11.1-firmware-image.bin"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-m", "han_ota.cli", "push", str(image), "--device", "00:11:22:33:44:55:66:77",
                           "--radio", kind, "--path", path, "--config", str(tmp_path / "config.toml")],
                          capture_output=True, text=True, cwd=tmp_path, env=env, timeout=30)
    assert proc.returncode == 1, proc.stderr
    assert f"could not start the {kind} radio at {path}" in proc.stderr
    assert "Traceback" not in proc.stderr
    if kind == "ezsp":  # zigpy's empty TransientConnectionError: the cause is named too
        assert "ConnectionRefusedError" in proc.stderr


def test_open_app_failure_closes_the_zigpy_database(tmp_path: Path):
    from radios.select import RadioError, open_app

    async def attempt() -> None:
        with pytest.raises(RadioError, match="could not start the znp radio"):
            await open_app("znp", path="/dev/ttyUSB-han-ota-absent", database=tmp_path / "zigbee.db")

    asyncio.run(attempt())
    assert not [t for t in threading.enumerate() if t.is_alive() and "_connection_worker_thread" in repr(getattr(t, "_target", None))]
