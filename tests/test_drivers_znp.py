"""The gateway through the REAL zigpy-znp 1.1.1 driver, against the Z-Stack emulator.

Every test opens the radio the way the gateway does (``radios.select.open_app("znp",
path="socket://127.0.0.1:PORT")``), with a fresh emulator (random free port) and a
simulated HCALCS behind it. Nothing in zigpy or zigpy-znp is patched.

Covered: start-up, the HCALCS joining and being interviewed; a full push with the
hold and a gated activation (Engine + ActivationService + a CS06 signed with a test
supplier key) ending in the device reporting the new version; the CLI path
(``han-ota emulate znp`` and ``han-ota push`` as subprocesses); and recovery from each
injected fault with the transfer finishing: lost deliveries (the device retries),
a coordinator reset and a dropped connection mid-transfer (``radios.supervisor``
reconnects, ``Engine.follow`` parks the job and resumes it on the new application).
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path

import pytest
import zigpy.types as zt

from gateway.activation import ActivationService, MemoryCounters
from gateway.engine import Engine
from gateway.gbcs.ids import EntityId
from gateway.gbcs.sign import sign_activation
from gateway.image_build import build_image
from gateway.ota.events import SessionState
from radios.emulate.znp import running_znp_emulator
from radios.select import open_app
from radios.supervisor import RadioSupervisor

import driver_test_support as support
from driver_test_support import FAST_DEVICE, MANUFACTURER, SUPPLIER, lab_supplier, wait_offset

HCALCS = "00:db:12:34:56:78:90:a0"
HCALCS_IEEE = zt.EUI64.convert(HCALCS)
ROOT = Path(__file__).resolve().parents[1]


def hcalcs_spec(extra: str = ""):
    return support.hcalcs_spec(HCALCS, extra)


async def wait_known(app, ieee: zt.EUI64 = HCALCS_IEEE, timeout: float = 15.0):
    return await support.wait_known(app, ieee, timeout)


@pytest.fixture(scope="module")
def supplier(tmp_path_factory):
    return lab_supplier(tmp_path_factory.mktemp("supplier"), HCALCS)


def make_image(key=None, size: int = 8192, version: int = 2):
    return support.make_image(key, size, version, step=7)


# ----------------------------------------------------------------------------- start-up


async def test_startup_hcalcs_joins_and_is_interviewed():
    async with running_znp_emulator([hcalcs_spec()]) as (path, server):
        assert path.startswith("socket://127.0.0.1:")
        app = await open_app("znp", path=path)
        try:
            device = await wait_known(app)
            sim = server.coordinator.han.devices[HCALCS_IEEE]
            assert app.state.node_info.model == "CC2652"  # zigpy-znp saw a Z-Stack 3.30 coordinator
            assert device.nwk == sim.nwk
            assert (device.manufacturer, device.model) == ("GFI", "HCALCS")
            assert device.node_desc.is_router  # an HCALCS is mains powered: a router
            assert 0x0019 in device.endpoints[1].out_clusters  # its OTA client
            assert server.coordinator.unimplemented == []
        finally:
            await app.shutdown()


# ----------------------------------------------------------------------------- full push


async def test_full_push_hold_then_verified_cs06_activates(supplier):
    key, config = supplier
    fw = make_image(key)
    async with running_znp_emulator([hcalcs_spec(FAST_DEVICE)]) as (path, server):
        app = await open_app("znp", path=path)
        engine = Engine(app, config.ota)
        outcomes: list[tuple[str, int | None, int | None]] = []
        service = ActivationService(engine, config, MemoryCounters(), on_outcome=lambda job, step, msg, rc, alert: outcomes.append((step, rc, alert)))
        try:
            await wait_known(app)
            sim = server.coordinator.han.devices[HCALCS_IEEE]
            job = engine.push(fw, HCALCS_IEEE, activation="command")
            assert await engine.wait(job, {SessionState.HELD}, timeout=30) is SessionState.HELD
            # Held: the device verified the whole image and waits for the server's word.
            assert job.session.offset == fw.size
            await sim.wait_for(lambda d: d.state == "holding", timeout=5)
            assert sim.current_file_version == 1 and sim.counters.holds >= 1

            # The hold answers repeated Upgrade End Requests (wait_interval=0.5 s) and never releases.
            await sim.wait_for(lambda d: d.counters.upgrade_end_answered >= 3, timeout=10)
            assert job.session.held_requests >= 3 and sim.counters.upgrade_end_unanswered == 0
            assert sim.current_file_version == 1 and sim.counters.activations == 0
            assert job.state is SessionState.HELD

            # A CS06 naming another image's hash is refused; the device stays held.
            wrong = service.submit(sign_activation(key, originator=EntityId.parse(SUPPLIER), device=EntityId.parse(HCALCS), image_hash=bytes(32), counter=10))
            assert not wrong.accepted and wrong.response_code == 2  # hash mismatch
            assert job.state is SessionState.HELD and sim.current_file_version == 1

            cmd = sign_activation(key, originator=EntityId.parse(SUPPLIER), device=EntityId.parse(HCALCS), image_hash=fw.manufacturer_image_hash, counter=11)
            good = service.submit(cmd)
            assert good.accepted, good.message
            assert await engine.wait(job, {SessionState.CONFIRMED}, timeout=30) is SessionState.CONFIRMED
            assert sim.current_file_version == 2 == job.session.device_file_version
            assert [rc for step, rc, _ in outcomes if step == "activation"] == [0]
            # The replayed command is refused (its counter was used).
            assert not service.submit(cmd).accepted
            assert server.coordinator.unimplemented == []
        finally:
            await engine.close()
            await app.shutdown()


async def test_push_to_a_device_behind_a_relay_in_blocks_that_fit_the_source_routed_frame(supplier):
    """Behind one relay, Z-Stack's frame carries a source route (2 + 2 bytes): 78 bytes of
    payload, so a 63-byte block (80 bytes of Image Block Response) is refused with
    INVALID_PARAMETER and a 61-byte one fits. The route is the stack's: learnt from the
    device's route records (ZDO.SrcRtgInd to the host)."""
    import dataclasses

    from radios.emulate.znp import firmware

    key, config = supplier
    fw = make_image(key, size=2048)
    relay = 0x7001
    assert firmware.af_mtu(aps_secure=False, relays=1) == 78 < 17 + 63
    # Firmware without APS fragmentation: the too-long block is refused, not fragmented
    async with running_znp_emulator([hcalcs_spec(FAST_DEVICE)], aps_fragmentation=False) as (path, server):
        coord = server.coordinator
        # the HAN's optional hops extra: every device is behind the relay
        coord.han.relays_of = lambda nwk: (relay,)
        app = await open_app("znp", path=path)
        # No block_cap: the gateway sizes blocks from Z-Stack's limit for the device
        # (radios/limits.py, 82 - 2 - 2 - 17 = 61 behind one relay; issue 14).
        engine = Engine(app, config.ota)
        try:
            device = await wait_known(app)
            job = engine.push(fw, HCALCS_IEEE, activation="command")
            assert await engine.wait(job, {SessionState.HELD}, timeout=30) is SessionState.HELD
            assert job.session.offset == fw.size
            # the concentrator's table holds the route (zigpy may hear the first route record
            # before it knows the device; the stack sends with the route either way)
            assert coord.source_routes[int(device.nwk)] == (relay,)
            # The first route record may reach zigpy before the device does (then zigpy
            # keeps no relays): the first 63-byte block is refused with INVALID_PARAMETER
            # and the session shrinks to 61; never more than that one refusal.
            assert coord.payloads_refused <= 1
            assert job.session.radio_block_limit == 61
            assert coord.unimplemented == []
        finally:
            await engine.close()
            await app.shutdown()


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


# ----------------------------------------------------------------------------- faults


async def test_lost_deliveries_mid_transfer_device_retries_and_transfer_finishes(supplier):
    _, config = supplier
    fw = make_image(size=12000)
    async with running_znp_emulator([hcalcs_spec(FAST_DEVICE)]) as (path, server):
        app = await open_app("znp", path=path)
        engine = Engine(app, config.ota)
        try:
            await wait_known(app)
            sim = server.coordinator.han.devices[HCALCS_IEEE]
            job = engine.push(fw, HCALCS_IEEE)
            await wait_offset(job, 3000)
            # The next 4 unicasts fail (AF.DataConfirm MAC_NO_ACK, nothing reaches the air):
            # lost block responses. The gateway does not resend; the device asks again.
            server.faults.fail_next_deliveries(4, "MAC_NO_ACK")
            assert await engine.wait(job, {SessionState.HELD}, timeout=45) is SessionState.HELD
            assert server.faults.deliveries_failed == 4
            assert sim.counters.retries >= 1  # the device asked again for what it missed
            assert job.session.offset == fw.size
            await sim.wait_for(lambda d: d.state == "holding", timeout=5)
        finally:
            await engine.close()
            await app.shutdown()


@pytest.mark.parametrize("fault", ["reset", "drop"])
async def test_coordinator_fault_mid_transfer_gateway_reconnects_and_transfer_finishes(supplier, tmp_path, fault):
    """A watchdog reset (SYS.ResetInd, which zigpy-znp ignores) or a dropped link mid-transfer:
    the supervisor reopens the radio, the engine follows, the device resumes."""
    _, config = supplier
    fw = make_image(size=16000)
    async with running_znp_emulator([hcalcs_spec(FAST_DEVICE)]) as (path, server):
        database = tmp_path / "zigbee.db"  # the new application object must know the device
        supervisor = RadioSupervisor(lambda: open_app("znp", path=path, database=database), name="znp", backoff=(0.2, 0.5, 1.0))
        app = await supervisor.start()
        engine = Engine(app, config.ota)
        engine.follow(supervisor)
        try:
            await wait_known(app)
            sim = server.coordinator.han.devices[HCALCS_IEEE]
            job = engine.push(fw, HCALCS_IEEE)
            await wait_offset(job, 4000)
            before = job.session.offset
            assert not job.done
            if fault == "reset":
                server.inject_reset()
            else:
                server.drop_connection()
            new_app = await supervisor.reconnected(1, timeout=30)
            assert new_app is not app and engine.app is new_app and engine.rebinds == 1
            assert HCALCS_IEEE in new_app.devices  # from the zigpy database
            assert await engine.wait(job, {SessionState.HELD}, timeout=45) is SessionState.HELD
            assert job.session.offset == fw.size > before
            await sim.wait_for(lambda d: d.state == "holding", timeout=5)
            assert sim.current_file_version == 1
            kinds = [e.kind for e in supervisor.events]
            assert kinds[:3] == ["up", "lost", "reconnected"]
            lost = next(e for e in supervisor.events if e.kind == "lost")
            assert ("SYS.ResetInd" in lost.detail) if fault == "reset" else ("connection lost" in lost.detail)
            assert server.connections_made == 2
            assert server.coordinator.unimplemented == []
        finally:
            await engine.close()
            await supervisor.close()
