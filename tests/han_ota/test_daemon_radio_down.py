"""A daemon whose dongle is away stops on the first SIGTERM (issue 11 item 2).

Under systemd a stop that ignores SIGTERM ends in SIGKILL after TimeoutStopSec, at
every stop while the dongle is unplugged. Two ways a dongle is away: nothing at the
address (refused), and something that accepts but never answers (a hung dongle).
"""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.audit import read_records


@pytest.fixture
def root() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="hod", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def silent_dongle() -> Iterator[int]:
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(server.accept()[0])  # keep it open, never answer
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield int(server.getsockname()[1])
    stop.set()
    thread.join(5)
    for conn in held:
        conn.close()
    server.close()


def refused_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])  # closed again: nothing listens there


def wait_for(predicate, timeout: float, what: str):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.mark.parametrize("kind", ["znp", "ezsp"])
@pytest.mark.parametrize("away", ["refused", "silent"])
def test_first_sigterm_stops_a_daemon_whose_radio_is_down(root: Path, silent_dongle: int, kind: str, away: str) -> None:
    port = silent_dongle if away == "silent" else refused_port()
    (root / "config.toml").write_text(f'state_dir = "state"\ncontrol_socket = "c.sock"\n[radio]\nkind = "{kind}"\npath = "socket://127.0.0.1:{port}"\n')
    log = open(root / "daemon.log", "wb")  # noqa: SIM115 - the process owns it
    proc = subprocess.Popen([sys.executable, "-m", "han_ota.cli", "run", "--config", str(root / "config.toml")], stdout=log, stderr=subprocess.STDOUT)
    try:
        audit = root / "state" / "audit.jsonl"
        # Started: its first attempt to open the radio is under way (a silent dongle
        # keeps it there). Stop it then, as systemd would.
        wait_for(lambda: audit.exists() and any(r.event == "daemon.start" for r in read_records(audit)), 60, "the daemon to start")
        proc.send_signal(signal.SIGTERM)
        try:
            code = proc.wait(60)  # generous: a slow machine; a daemon ignoring SIGTERM never exits
        except subprocess.TimeoutExpired:
            pytest.fail(f"{kind} daemon with its radio {away} ignored SIGTERM: {(root / 'daemon.log').read_text()[-2000:]}")
        assert code == 0, (root / "daemon.log").read_text()[-2000:]
        events = [r.event for r in read_records(audit)]
        assert events[-1] == "daemon.stop" and "radio.up" not in events
        assert "Traceback" not in (root / "daemon.log").read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        log.close()
