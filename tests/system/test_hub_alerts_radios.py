"""The hub's CCS08 through unmodified bellows and zigpy-znp: `han-ota push` of the SR 11.1
sample image to a simulated HCALCS behind `han-ota emulate ezsp|znp` prints the
signed 0x8F8A in its --json `messages`, and keeps it in the state directory."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path

import pytest

from gateway.gbcs.alerts import decode_transfer_alert
from gateway.gbcs.apdu import decode_general_signing
from gateway.gbcs.ids import EntityId
from gateway.gbcs.sign import generate_supplier_identity
from gateway.store import StateStore

ROOT = Path(__file__).resolve().parents[2]
SR11_1 = ROOT / "tests" / "data" / "gbcs" / "sr11.1-firmware-image.bin"
HCALCS = "00:db:12:34:56:78:90:a0"  # the sample image's destination
DEVICE = f"hcalcs:{HCALCS}:manufacturer_code=0x121D:image_type=0:file_version=0xACDCACDB:hardware_version=0x1111"
HUB_ID = "00DB1234567890A2"


@pytest.mark.parametrize("kind", ["ezsp", "znp"])
async def test_push_through_an_emulated_coordinator_emits_a_signed_8f8a(tmp_path: Path, kind: str) -> None:
    key_pem, cert_pem = generate_supplier_identity(EntityId.parse(HUB_ID), role="CHF")
    (tmp_path / "hub.key").write_bytes(key_pem)
    (tmp_path / "hub.pem").write_bytes(cert_pem)
    cfg = tmp_path / "config.toml"
    cfg.write_text(f'state_dir = "{tmp_path / "state"}"\n[hub]\nsigning_key = "hub.key"\ncertificate = "hub.pem"\n')
    han_ota = str(Path(sys.executable).with_name("han-ota"))
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    emulator = await asyncio.create_subprocess_exec(
        han_ota, "emulate", kind, "--listen", "127.0.0.1:0", "--json", "--sim-device", DEVICE,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL, cwd=ROOT, env=env,
    )
    try:
        assert emulator.stdout is not None
        async with asyncio.timeout(30):
            ready = json.loads((await emulator.stdout.readline()).decode())
        push = await asyncio.create_subprocess_exec(
            han_ota, "push", str(SR11_1), "--device", HCALCS, "--radio", kind, "--path", ready["path"],
            "--config", str(cfg), "--timeout", "90", "--json",
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, cwd=tmp_path, env=env,
        )
        async with asyncio.timeout(150):
            out, err = await push.communicate()
        assert push.returncode == 0, err.decode()[-2000:]
        result = json.loads(out.decode().strip().splitlines()[-1])
        assert result["state"] == "held"
        [message] = result["messages"]
        assert (message["direction"], message["code_hex"], message["cra"], message["signature"]) == ("hub", "0x0128", "alert", "valid")
        assert (message["originator"], message["recipient"], message["device"]) == (HUB_ID, "90B3D51F30000002", HCALCS)
        apdu, _ = decode_general_signing(bytes.fromhex(message["hex"]))
        alert, _ = decode_transfer_alert(apdu.content)
        assert (alert.alert_code, alert.response_code, alert.firmware_version, str(alert.entity_id)) == (0x8F8A, 0, 0xACDCACDC, "00DB1234567890A0")
        with StateStore.in_state_dir(tmp_path / "state") as store:
            assert [m.to_dict()["hex"] for m in store.list_messages()] == [message["hex"]]
    finally:
        if emulator.returncode is None:
            emulator.send_signal(2)
            async with asyncio.timeout(15):
                await emulator.wait()
