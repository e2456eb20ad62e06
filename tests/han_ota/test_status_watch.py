"""`han-ota status --watch`: a table of all jobs redrawn until Ctrl-C, which exits 0 (issue 15 part 4)."""

from __future__ import annotations

import asyncio
import io
import json
import selectors
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from han_ota.cli_daemon import format_status, watch_status
from han_ota.client import Client, DaemonError, resolve_config
from han_ota.daemon import Daemon
from radios.sim.testing import build_ota_image
from tests.han_ota.test_cli_daemon import HCALCS, short_dir, write_config  # noqa: F401 - short_dir is a fixture



def body(*jobs: dict[str, Any]) -> dict[str, Any]:
    daemon = {
        "version": "t",
        "pid": 1,
        "uptime_s": 5,
        "radio": {"kind": "sim", "up": True},
        "store": {"ok": True, "error": None},
        "audit": {"ok": True, "error": None, "chain_error": None, "warning": None},
    }
    return {"daemon": daemon, "jobs": list(jobs), "schedules": []}


JOB = {"job": "1", "device": HCALCS, "kind": "hcalcs", "state": "transferring", "size": 1000, "bytes": 250, "rate_bytes_per_s": 100.0, "eta_seconds": 7.0}


class Interrupt:
    """A sleep that lets ``frames`` redraws happen, then is Ctrl-C."""

    def __init__(self, frames: int) -> None:
        self.left = frames
        self.slept: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.left -= 1
        if self.left <= 0:
            raise KeyboardInterrupt


def test_redraws_until_interrupted_and_exits_0() -> None:
    answers = iter([body(JOB), body({**JOB, "bytes": 500}), body({**JOB, "state": "held", "bytes": 1000})])
    out = io.StringIO()
    sleep = Interrupt(3)
    assert watch_status(lambda: next(answers), 0.5, out, sleep=sleep) == 0
    assert sleep.slept == [0.5, 0.5, 0.5]
    frames = out.getvalue().strip().split("\n\n")  # not a terminal: frames a blank line apart, no escapes
    assert len(frames) == 3 and "\x1b" not in out.getvalue()
    assert all(f.splitlines()[0].endswith("every 0.5 s; Ctrl-C to stop") for f in frames)
    rows = [f.splitlines()[3].split() for f in frames]
    assert [r[:5] for r in rows] == [["1", HCALCS, "hcalcs", "transferring", "25.0%"], ["1", HCALCS, "hcalcs", "transferring", "50.0%"], ["1", HCALCS, "hcalcs", "held", "100.0%"]]
    assert rows[0][5:7] == ["100", "B/s"] and rows[0][7] == "0:07"  # rate, ETA


def test_a_daemon_that_stops_answering_is_said_and_asked_again() -> None:
    answers: list[Any] = [body(JOB), DaemonError("connection refused"), body(JOB)]

    def fetch() -> dict[str, Any]:
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    out = io.StringIO()
    assert watch_status(fetch, 2, out, sleep=Interrupt(3)) == 0
    frames = out.getvalue().strip().split("\n\n")
    assert frames[1].splitlines()[1] == "daemon not answering: connection refused; asking again every 2 s"
    assert "transferring" in frames[2]


def test_json_is_one_status_object_per_redraw() -> None:
    out = io.StringIO()
    assert watch_status(lambda: body(JOB), 1, out, as_json=True, sleep=Interrupt(2)) == 0
    objects = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [o["jobs"][0]["state"] for o in objects] == ["transferring", "transferring"]


def test_a_terminal_gets_each_frame_drawn_over_the_last() -> None:
    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    out = Tty()
    watch_status(lambda: body(JOB), 1, out, sleep=Interrupt(2))
    assert out.getvalue().count("\x1b[H\x1b[2J") == 2


def test_priority_column_appears_once_jobs_have_one() -> None:
    assert "PRIORITY" not in format_status(body(JOB))[1]
    lines = format_status(body({**JOB, "priority": "high"}, {**JOB, "job": "2", "priority": None}))
    assert lines[1].split() == ["JOB", "DEVICE", "KIND", "STATE", "PROGRESS", "RATE", "ETA", "PRIORITY", "REASON"]
    assert lines[2].split()[8] == "high" and lines[3].split()[8] == "-"  # after RATE ("100 B/s") and ETA


# --------------------------------------------------------------------------- against a daemon


def _frames_seen(proc: subprocess.Popen[str], want: int, timeout: float = 30.0) -> list[str]:
    """Lines of output until ``want`` frames have begun (each starts with the header line)."""
    assert proc.stdout is not None
    lines: list[str] = []
    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ)
    deadline = time.monotonic() + timeout
    while sum("Ctrl-C to stop" in line for line in lines) < want + 1 and time.monotonic() < deadline:
        if sel.select(0.2):
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line)
    return lines


async def test_watch_against_a_daemon_then_ctrl_c(short_dir: Path) -> None:
    path = write_config(short_dir)
    cfg = resolve_config(path)
    fw = short_dir / "fw.ota"
    fw.write_bytes(build_ota_image(0x121D, 0x0000, 2, b"\x5a" * 60_000, min_hw=0x1111, max_hw=0x1111))
    daemon = Daemon(cfg, [f"hcalcs:{HCALCS}:query_delay=0.05:min_block_period_ms=20"])
    await daemon.start()
    await daemon.wait_radio(10)
    proc = None
    try:
        job = await asyncio.to_thread(Client(cfg.control_socket).push, fw, HCALCS)
        await asyncio.to_thread(Client(cfg.control_socket).wait_job, job["job"], ("transferring",), timeout=20)
        proc = subprocess.Popen(
            [sys.executable, "-m", "han_ota.cli_daemon", "status", "--watch", "--interval", "0.2", "--config", str(path)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        lines = await asyncio.to_thread(_frames_seen, proc, 2)
        frames = "".join(lines).split("\n\n")
        assert len(frames) >= 2, "".join(lines)
        for frame in frames[:2]:
            rows = frame.strip().splitlines()
            assert rows[1].startswith("han-ota ") and "radio sim up" in rows[1], frame
            assert rows[2].split()[:4] == ["JOB", "DEVICE", "KIND", "STATE"], frame
            assert rows[3].split()[:2] == ["1", HCALCS], frame
        proc.send_signal(signal.SIGINT)
        assert await asyncio.to_thread(proc.wait, 20) == 0  # Ctrl-C ends the watch, not in error
        assert proc.stderr is not None and "Traceback" not in proc.stderr.read()
    finally:
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()
        await daemon.stop("test")
