"""The gateway through the REAL zigpy-znp 1.1.1 driver, against the Z-Stack emulator:
what is particular to it. The driver tests every radio shares (start-up, join, a full
push with the hold and a gated activation, lost deliveries, a reset and a dropped link,
a device two hops away) are tests/test_drivers.py, run on Z-Stack and on EZSP 13 and 14.

Here: the CLI path (``han-ota emulate znp`` and ``han-ota push`` as subprocesses).
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path

from gateway.image_build import build_image

from driver_test_support import MANUFACTURER

HCALCS = "00:db:12:34:56:78:90:a0"
ROOT = Path(__file__).resolve().parents[1]


# ----------------------------------------------------------------------------- CLI path


async def _read_json_line(stream: asyncio.StreamReader, timeout: float = 20.0) -> dict:
    async with asyncio.timeout(timeout):
        while True:
            line = await stream.readline()
            if not line:
                raise AssertionError("the emulator exited before printing where it listens")
            text = line.decode().strip()
            if text.startswith("{"):
                return json.loads(text)


async def test_cli_emulate_then_push_leaves_device_held(tmp_path):
    """`han-ota emulate znp` and `han-ota push ... --radio znp --path socket://...`, both as
    subprocesses: the way a lab dry-runs a script against a virtual dongle."""
    image = tmp_path / "hcalcs-v2.ota"
    image.write_bytes(build_image(bytes(range(256)) * 12, manufacturer_code=MANUFACTURER, image_type=0, file_version=2, min_hw=0x1111, max_hw=0x1211))
    cfg = tmp_path / "config.toml"
    cfg.write_text(f'state_dir = "{tmp_path / "state"}"\ncontrol_socket = "{tmp_path / "control.sock"}"\n')
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    emulator = await asyncio.create_subprocess_exec(
        str(Path(sys.executable).with_name("han-ota")), "emulate", "znp", "--listen", "127.0.0.1:0", "--json",
        "--sim-device", f"hcalcs:{HCALCS}:file_version=1:hardware_version=0x1111",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL, cwd=ROOT, env=env,
    )
    try:
        ready = await _read_json_line(emulator.stdout)
        assert ready["radio"] == "znp" and ready["path"].startswith("socket://127.0.0.1:")
        assert ready["devices"] == [{"kind": "hcalcs", "ieee": HCALCS}]
        han_ota = str(Path(sys.executable).with_name("han-ota"))
        push = await asyncio.create_subprocess_exec(
            han_ota, "push", str(image), "--device", HCALCS, "--radio", "znp", "--path", ready["path"],
            "--config", str(cfg), "--timeout", "60", "--json",
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, cwd=tmp_path, env=env,
        )
        async with asyncio.timeout(90):
            out, err = await push.communicate()
        assert push.returncode == 0, err.decode()[-2000:]
        result = json.loads(out.decode().strip().splitlines()[-1])
        assert result["state"] == "held"
        assert result["device"] == HCALCS and result["bytes"] == result["size"] == image.stat().st_size
        assert result["held_requests"] >= 1 and result["file_version"] == 2
    finally:
        if emulator.returncode is None:
            emulator.send_signal(2)  # Ctrl-C: the emulator closes and exits 0
            async with asyncio.timeout(10):
                assert await emulator.wait() == 0
