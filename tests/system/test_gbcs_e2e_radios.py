"""Issue 13 end to end through the daemon on both emulators (unmodified bellows, EZSP 13
by default, and zigpy-znp): the HCALCS flow of tests/system/test_gbcs_e2e.py. Push
sr11.1-firmware-image.bin -> the hub's CCS08 0x8F8A and the device's 0x8F72 receipt
alert; a CS06 for the real hash -> forwarded over the tunnel (APS-fragmented where the
stack must) -> the device activates by itself and its signed response (code 0, the new
version) is in the daemon's messages with signature "valid". The RTDS placeholder-hash
CS06 is refused by the gate and never reaches the device; a future-dated CS06 gives the
device's 0x00CA 0x8F66 alert at its time."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
from pathlib import Path
from typing import Any

import pytest
import zigpy.types as zt

from gateway.config import load_config
from gateway.image import load_image
from gateway.ota import events as ev
from han_ota.daemon import Daemon
from radios.emulate.ezsp.server import running_ezsp_emulator
from radios.emulate.znp.server import running_znp_emulator
from radios.sim.spec import parse_sim_device
from tests.han_ota.test_daemon import short_dir, wait_for  # noqa: F401 (short_dir: a fixture)
from tests.system.test_gbcs_e2e import DATA, HCALCS, HCALCS_SPEC, NEW, OLD, SUPPLIER, cli, content, cs06, gbcs_config, is_code, key, messages, wait_message  # noqa: F401 (key: a fixture)

IEEE = zt.EUI64.convert(HCALCS)
IMAGE = "sr11.1-firmware-image.bin"


@pytest.mark.parametrize("kind", ["ezsp", "znp"])
async def test_hcalcs_receipt_alerts_then_a_cs06_it_carries_out_itself(short_dir: Path, key: Any, kind: str) -> None:
    emulator: Any = running_ezsp_emulator if kind == "ezsp" else running_znp_emulator
    async with emulator([parse_sim_device(HCALCS_SPEC)]) as (path, server):
        device = (server.han if kind == "ezsp" else server.coordinator.han).devices[IEEE]
        (short_dir / "device.pem").write_text(device.gbcs_certificate_pem)
        cfg = load_config(gbcs_config(short_dir, HCALCS, "hcalcs", "tunnel", extra=f'[radio]\nkind = "{kind}"\npath = "{path}"\n'))
        daemon = Daemon(cfg)
        await daemon.start()
        try:
            await daemon.wait_radio(60)
            status, body = await daemon.api.push(str(DATA / IMAGE), HCALCS, None, False, None)
            assert status == 202, body
            engine = daemon.engine
            assert engine is not None
            await wait_for(lambda: (j := engine.job_for_device(IEEE)) is not None and j.state is ev.SessionState.HELD, 180, "the hold")
            # The hub's CCS08 (0x8F8A, response 0) and the device's own 0x8F72 with the hash it computed.
            ccs08 = await wait_message(daemon, HCALCS, is_code("hub", 0x0128), "CCS08", timeout=60)
            assert ccs08["signature"] == "valid" and ccs08["details"]["alert_code"] == "0x8F8A" and ccs08["details"]["response_code"] == 0
            fdra = await wait_message(daemon, HCALCS, is_code("in", 0x00CF, "alert"), "the device's 0x8F72", timeout=60)
            assert (fdra["signature"], fdra["originator"], fdra["recipient"]) == ("valid", "00DB1234567890A0", SUPPLIER)
            body = content(fdra)
            assert body[:5] == bytes.fromhex("0109018F72") and body[-34:] == b"\x09\x20" + load_image(DATA / IMAGE).manufacturer_image_hash

            assert device.current_file_version == OLD  # held, not yet running
            command = cs06(key, HCALCS, IMAGE, 5001)
            status, result = await daemon.api.activate(command.hex(), HCALCS)
            assert status == 200 and result["accepted"], result
            await wait_for(lambda: device.current_file_version == NEW, 60, "the device's own activation")
            job = engine.job_for_device(IEEE)
            await wait_for(lambda: job.state is ev.SessionState.CONFIRMED, 60, f"the job confirmed (it is {job.state.value}: {job.session.reason})")
            response = await wait_message(daemon, HCALCS, is_code("in", 0x0012, "response"), "the CS06 response", timeout=60)
            assert (response["signature"], response["counter"], response["originator"]) == ("valid", 5001, "00DB1234567890A0")
            assert content(response) == bytes.fromhex(f"30090201000404{NEW:08X}")
            # Each message once: the device's two, the hub's alert, the forward (unchanged).
            kept = [(m["direction"], m["code"]) for m in await messages(daemon, HCALCS)]
            assert sorted(kept) == [("hub", 0x0128), ("in", 0x0012), ("in", 0x00CF), ("out", 0x0012)], kept
            assert [m["hex"] for m in await messages(daemon, HCALCS) if m["direction"] == "out"] == [command.hex().upper()]
            assert device.tunnel_messages == [command]
            # As `han-ota messages` prints it.
            printed = await asyncio.to_thread(cli, "messages", "--config", str(cfg.source), "--device", HCALCS, "--json")
            assert printed.exit_code == 0, printed.output
            lines = [json.loads(line) for line in printed.output.splitlines()]
            assert (response["id"], "valid", response["hex"]) in [(m["id"], m["signature"], m["hex"]) for m in lines]
        finally:
            await daemon.stop()


@pytest.mark.parametrize("kind", ["ezsp", "znp"])
async def test_the_placeholder_command_never_reaches_the_device_and_a_future_dated_one_alerts_at_its_time(short_dir: Path, key: Any, kind: str) -> None:
    """The RTDS placeholder-hash CS06 is refused by the gate and never forwarded; a
    future-dated CS06 for the real hash is, and at its time the device sends its 0x00CA
    0x8F66 alert and activates. The later command is also the proof for the first: the
    tunnel carries messages in order, so had the refused one been forwarded, the device
    would have seen it before the one it did see."""
    emulator: Any = running_ezsp_emulator if kind == "ezsp" else running_znp_emulator
    async with emulator([parse_sim_device(HCALCS_SPEC)]) as (path, server):
        device = (server.han if kind == "ezsp" else server.coordinator.han).devices[IEEE]
        (short_dir / "device.pem").write_text(device.gbcs_certificate_pem)
        cfg = load_config(gbcs_config(short_dir, HCALCS, "hcalcs", "tunnel", extra=f'[radio]\nkind = "{kind}"\npath = "{path}"\n'))
        daemon = Daemon(cfg)
        await daemon.start()
        try:
            await daemon.wait_radio(60)
            status, body = await daemon.api.push(str(DATA / IMAGE), HCALCS, None, False, None)
            assert status == 202, body
            engine = daemon.engine
            assert engine is not None
            await wait_for(lambda: (j := engine.job_for_device(IEEE)) is not None and j.state is ev.SessionState.HELD, 180, "the hold")
            await wait_for(lambda: daemon.tunnels.state(IEEE)["state"] == "open", 60, "the tunnel")

            rtds = (DATA / "cs06-immediate-success-command.hex").read_text().strip()
            status, result = await daemon.api.activate(rtds, HCALCS)
            assert not result["accepted"] and result["response_code"] == 2, result  # hash mismatch

            at = dt.datetime.now(dt.timezone.utc).replace(microsecond=0) + dt.timedelta(seconds=5)
            command = cs06(key, HCALCS, IMAGE, 6001, execution_time=at)
            status, result = await daemon.api.activate(command.hex(), HCALCS)
            assert status == 200 and result["accepted"], result
            accepted = await wait_message(daemon, HCALCS, is_code("in", 0x0012, "response"), "the CS06 response", timeout=60)
            assert content(accepted) == b"\x05\x00" and accepted["signature"] == "valid"  # NULL: accepted, pending
            # The device side: one TransferData reached its GBCS handler, the future-dated command, never the refused one.
            assert device.tunnel_messages == [command]
            assert rtds.upper() not in [m["hex"] for m in await messages(daemon, HCALCS)]
            if dt.datetime.now(dt.timezone.utc) < at:
                assert device.current_file_version == OLD  # held until its time

            alert = await wait_message(daemon, HCALCS, is_code("in", 0x00CA, "alert"), "the 0x00CA alert", timeout=60)
            assert dt.datetime.now(dt.timezone.utc) >= at
            stamp = at.strftime("%Y%m%d%H%M%SZ").encode()
            expected = bytes.fromhex("30250203008F66180F") + stamp + bytes.fromhex(f"020217713009020100 0404{NEW:08X}".replace(" ", ""))
            assert content(alert) == expected and alert["signature"] == "valid" and alert["recipient"] == SUPPLIER
            await wait_for(lambda: device.current_file_version == NEW, 60, "the activation at its time")
            job = engine.job_for_device(IEEE)
            await wait_for(lambda: job.state is ev.SessionState.CONFIRMED, 60, f"the job confirmed (it is {job.state.value}: {job.session.reason})")
            assert device.tunnel_messages == [command]
            assert [m["hex"] for m in await messages(daemon, HCALCS) if m["direction"] == "out"] == [command.hex().upper()]
        finally:
            await daemon.stop()
