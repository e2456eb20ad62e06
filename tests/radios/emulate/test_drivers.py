"""The gateway through the REAL radio libraries against the emulators: one body of tests
for bellows 1.2.1 on EZSP 13 (EmberZNet 7.4) and 14 (8.0), and zigpy-znp 1.1.1 on the
Z-Stack 3.30 emulator (issue 14: "parametrized over one body of tests rather than
copies per radio").

Every test opens the radio as the gateway does (``radios.select.open_app``) on a fresh
emulator with a simulated HCALCS behind it; nothing in bellows, zigpy-znp or zigpy is
patched. What differs between the emulators (start-up, fault injection, what each
reports) is `driver_test_support.Radio`; the ``radio`` fixture runs each test on each.

Covered: start-up, join and interview; a full push with the hold and a CS06-gated
activation confirmed by the device; lost deliveries; a radio reset (signalled as the
firmware does) and a dropped link mid-transfer, recovered by
``radios.supervisor.RadioSupervisor`` with the engine following; a device that gave up
during a long outage nudged back by the session; a push to a device two hops away
(``hops=2``: behind one relay, every frame source-routed) in blocks that fit; the CLI
path (``han-ota emulate`` and ``han-ota push`` as subprocesses, on EZSP 14 and Z-Stack).
Radio-specific behaviour (ASH, the EZSP payload limit checks, NV, MT) stays in
tests/radios/emulate/test_drivers_ezsp.py and the emulator tests.
"""

from __future__ import annotations

import asyncio
import json
import logging
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
from gateway.ota import events as ev
from gateway.ota.events import SessionState
from radios.han_services import permit_with_install_code
from radios.supervisor import RadioSupervisor

import driver_test_support as support
from driver_test_support import FAST_DEVICE, HCALCS, HCALCS_IEEE, MANUFACTURER, RADIOS, SUPPLIER, Radio, lab_supplier, wait_offset

ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture(params=RADIOS)
def radio(request) -> Radio:
    """bellows on EZSP 13 and 14 (it runs different code for each), zigpy-znp on Z-Stack."""
    return Radio(request.param)


@pytest.fixture(scope="module")
def supplier(tmp_path_factory):
    return lab_supplier(tmp_path_factory.mktemp("supplier"), HCALCS)


def hcalcs_spec(extra: str = ""):
    return support.hcalcs_spec(HCALCS, extra)


def make_image(key=None, size: int = 8192, version: int = 2):
    return support.make_image(key, size, version, step=11)


# ----------------------------------------------------------------------------- start-up


async def test_startup_hcalcs_joins_and_is_interviewed(radio):
    async with radio.emulator([hcalcs_spec()]) as (path, server):
        assert path.startswith("socket://127.0.0.1:")
        app = await radio.open_and_join(path)
        try:
            radio.assert_identity(app)
            device = app.devices[HCALCS_IEEE]
            sim = radio.han(server).devices[HCALCS_IEEE]
            assert device.nwk == sim.nwk and (device.manufacturer, device.model) == ("GFI", "HCALCS")
            assert device.node_desc.is_router  # an HCALCS is mains powered: a router
            assert 0x0019 in device.endpoints[1].out_clusters  # its OTA client
            if radio.family == "ezsp":
                # Install-code joining for the next device: bellows hands the NCP the
                # derived key (by different commands on EZSP 13 and 14).
                newcomer = zt.EUI64.convert("00:db:12:34:56:78:90:bf")
                key = await permit_with_install_code(app, newcomer, "83FED3407A939723A5C639B26916D505C3B5", time_s=30)
                assert str(key) == "66:b6:90:09:81:e1:ee:3c:a4:20:6b:6b:86:1c:02:bb"
                assert server.ncp.transient_keys[newcomer] == key
                assert "trustCenterJoinHandler" in server.ncp.callback_log
            assert radio.unhandled(server) == []
        finally:
            await app.shutdown()


# ----------------------------------------------------------------------------- full push


async def test_full_push_hold_then_verified_cs06_activates(supplier, radio):
    key, config = supplier
    fw = make_image(key)
    async with radio.emulator([hcalcs_spec(FAST_DEVICE)]) as (path, server):
        app = await radio.open_and_join(path)
        engine = Engine(app, config.ota)
        outcomes: list[tuple[str, int | None]] = []
        service = ActivationService(engine, config, MemoryCounters(), on_outcome=lambda job, step, msg, rc, alert: outcomes.append((step, rc)))
        try:
            sim = radio.han(server).devices[HCALCS_IEEE]
            job = engine.push(fw, HCALCS_IEEE, activation="command")
            assert await engine.wait(job, {SessionState.HELD}, timeout=30) is SessionState.HELD
            # Held: the device verified the whole image and waits for the server's word.
            assert job.session.offset == fw.size
            await sim.wait_for(lambda d: d.state == "holding", timeout=5)
            # The hold answers repeated Upgrade End Requests (wait_interval=0.5 s) and never releases.
            await sim.wait_for(lambda d: d.counters.upgrade_end_answered >= 3, timeout=10)
            assert job.session.held_requests >= 3 and sim.counters.upgrade_end_unanswered == 0
            assert sim.current_file_version == 1 and sim.counters.activations == 0 and job.state is SessionState.HELD

            # A CS06 naming another image's hash is refused; the device stays held.
            wrong = service.submit(sign_activation(key, originator=EntityId.parse(SUPPLIER), device=EntityId.parse(HCALCS), image_hash=bytes(32), counter=10))
            assert not wrong.accepted and wrong.response_code == 2  # hash mismatch
            assert job.state is SessionState.HELD and sim.current_file_version == 1

            cmd = sign_activation(key, originator=EntityId.parse(SUPPLIER), device=EntityId.parse(HCALCS), image_hash=fw.manufacturer_image_hash, counter=11)
            good = service.submit(cmd)
            assert good.accepted, good.message
            assert await engine.wait(job, {SessionState.CONFIRMED}, timeout=30) is SessionState.CONFIRMED
            assert sim.current_file_version == 2 == job.session.device_file_version
            assert [rc for step, rc in outcomes if step == "activation"] == [0]
            assert not service.submit(cmd).accepted  # the replay: its counter was used
            assert radio.unhandled(server) == []
        finally:
            await engine.close()
            await app.shutdown()


# ----------------------------------------------------------------------------- a device two hops away


async def test_push_to_a_device_two_hops_away_completes_in_blocks_that_fit(supplier, radio, caplog):
    """``hops=2``: the HCALCS is behind one relay (SimHan.relays_of), so the stack sends
    every frame to it with a source route (2 + 2 bytes) and takes at most 78 bytes of
    APS payload: 61-byte blocks. The emulators report the route as the firmware does
    (EZSP incomingRouteRecordHandler, ZDO.SrcRtgInd); the gateway sizes its blocks from
    the radio's limit for the device (radios/limits.py) and says so in the log. zigpy
    may hear the first route record before it knows the device: then one 63-byte
    block is refused as too long and the session shrinks to 61, never more than once
    (Z-Stack built without APS fragmentation, or it would fragment that block)."""
    key, config = supplier
    fw = make_image(key, size=4096)
    async with radio.emulator([hcalcs_spec(FAST_DEVICE + ":hops=2")], refuse_too_long=True) as (path, server):
        han = radio.han(server)
        app = await radio.open_and_join(path)
        engine = Engine(app, config.ota)
        sent: list[int] = []
        engine.add_observer(lambda job, action: sent.append(len(action.data)) if isinstance(action, ev.SendImageBlock) else None)
        try:
            sim = han.devices[HCALCS_IEEE]
            assert len(han.relays_of(sim.nwk)) == 1
            with caplog.at_level(logging.INFO):
                job = engine.push(fw, HCALCS_IEEE, activation="command")
                assert await engine.wait(job, {SessionState.HELD}, timeout=60) is SessionState.HELD
            assert job.session.offset == fw.size
            await sim.wait_for(lambda d: d.state == "holding", timeout=5)
            assert radio.refused_too_long(server) <= 1
            # Every block the radio took fits the source-routed frame; the rest are 61.
            delivered = sent[radio.refused_too_long(server):]
            assert max(delivered) == 61 and set(delivered[:-1]) == {61}
            messages = [r.getMessage() for r in caplog.records]
            assert any("blocks of at most 61 bytes: NWK security only, 1 relay" in m and f"{radio.limit_name} limit 82" in m
                       for m in messages), messages
            assert radio.unhandled(server) == []
        finally:
            await engine.close()
            await app.shutdown()


# ----------------------------------------------------------------------------- faults


async def test_lost_deliveries_mid_transfer_device_retries_and_transfer_finishes(supplier, radio):
    _, config = supplier
    fw = make_image(size=12000)
    async with radio.emulator([hcalcs_spec(FAST_DEVICE)]) as (path, server):
        app = await radio.open_and_join(path)
        engine = Engine(app, config.ota)
        try:
            sim = radio.han(server).devices[HCALCS_IEEE]
            job = engine.push(fw, HCALCS_IEEE)
            await wait_offset(job, 3000)
            # The next 4 OTA unicasts fail in the stack (nothing reaches the air): lost
            # block responses. The gateway does not resend; the device asks again.
            radio.fail_deliveries(server, 4, sim.nwk)
            assert await engine.wait(job, {SessionState.HELD}, timeout=45) is SessionState.HELD
            assert radio.deliveries_failed(server) == 4
            assert sim.counters.retries >= 1 and job.session.offset == fw.size
            await sim.wait_for(lambda d: d.state == "holding", timeout=5)
        finally:
            await engine.close()
            await app.shutdown()


@pytest.mark.parametrize("fault", ["reset", "drop"])
async def test_radio_fault_mid_transfer_gateway_reconnects_and_transfer_finishes(supplier, tmp_path, fault, radio):
    """A watchdog reset, signalled as the firmware does (EZSP: Cancel + ERROR(0x03) after
    its 1 s reboot, then silence until the host's RST, no RSTACK by itself; Z-Stack:
    SYS.ResetInd, which zigpy-znp ignores), or a dropped link mid-transfer: the
    supervisor reopens the radio, the engine follows, the device resumes."""
    _, config = supplier
    fw = make_image(size=16000)
    async with radio.emulator([hcalcs_spec(FAST_DEVICE)], reboot_delay=1.0 if fault == "reset" else 0.1) as (path, server):
        database = tmp_path / "zigbee.db"  # the new application object must know the device
        made = [await radio.open_and_join(path, database=database)]

        async def factory():
            return made.pop() if made else await radio.open(path, database=database)

        supervisor = RadioSupervisor(factory, name=radio.family, backoff=(0.2, 0.5, 1.0))
        app = await supervisor.start()
        engine = Engine(app, config.ota)
        engine.follow(supervisor)
        try:
            sim = radio.han(server).devices[HCALCS_IEEE]
            job = engine.push(fw, HCALCS_IEEE)
            await wait_offset(job, 4000)
            before = job.session.offset
            assert not job.done
            radio.inject(server, fault)
            new_app = await supervisor.reconnected(1, timeout=30)
            assert new_app is not app and engine.app is new_app and engine.rebinds == 1
            assert HCALCS_IEEE in new_app.devices  # from the zigpy database
            assert await engine.wait(job, {SessionState.HELD}, timeout=45) is SessionState.HELD
            assert job.session.offset == fw.size > before
            await sim.wait_for(lambda d: d.state == "holding", timeout=5)
            assert sim.current_file_version == 1
            assert [e.kind for e in supervisor.events][:3] == ["up", "lost", "reconnected"]
            radio.assert_reset_signalled(server, supervisor, fault)
            assert radio.connections(server) == 2 and radio.unhandled(server) == []
        finally:
            await engine.close()
            await supervisor.close()


async def test_device_that_gave_up_during_a_long_outage_is_nudged_back(supplier, tmp_path, radio):
    """The radio is away longer than the device keeps retrying (here 0.2 s x 2): the device
    goes idle with its partial image; after the reconnect the session's Image Notify (a nudge) makes
    it query, and it resumes at its offset instead of starting over."""
    _, config = supplier
    fw = make_image(size=16000)
    spec = hcalcs_spec("response_timeout=0.2:max_retries=2:query_delay=3600:notify_delay=0")
    async with radio.emulator([spec]) as (path, server):
        database = tmp_path / "zigbee.db"
        made = [await radio.open_and_join(path, database=database)]
        away = asyncio.Event()

        async def factory():
            if made:
                return made.pop()
            await away.wait()  # the dongle is still unplugged
            return await radio.open(path, database=database)

        supervisor = RadioSupervisor(factory, name=radio.family, backoff=(0.2,))
        app = await supervisor.start()
        engine = Engine(app, config.ota)
        engine.follow(supervisor)
        engine.nudge_after_s = 0.5
        try:
            sim = radio.han(server).devices[HCALCS_IEEE]
            job = engine.push(fw, HCALCS_IEEE)
            await wait_offset(job, 4000)
            radio.inject(server, "drop")
            await sim.wait_for(lambda d: d.counters.gave_up >= 1, timeout=10)
            partial = sim.file_offset
            assert partial >= 3000 and sim.state == "idle"  # (the block in flight at the drop is lost)
            away.set()
            await supervisor.reconnected(1, timeout=30)
            assert await engine.wait(job, {SessionState.HELD}, timeout=30) is SessionState.HELD
            assert job.session.nudge_attempt >= 1  # the session's Image Notify after the silence
            assert sim.counters.resumed >= 1  # picked up at its offset, did not start over
            assert job.session.offset == fw.size
        finally:
            await engine.close()
            await supervisor.close()


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


@pytest.mark.parametrize(("kind", "options"), [("ezsp", ["--ezsp-version", "14"]), ("znp", [])], ids=["ezsp14", "znp"])
async def test_cli_emulate_then_push_leaves_device_held(tmp_path, kind, options):
    """`han-ota emulate KIND` and `han-ota push ... --radio KIND --path socket://...`, both
    as subprocesses: the way a lab dry-runs a script against a virtual dongle (the EZSP
    NCP forms its network first, as a new dongle would)."""
    image = tmp_path / "hcalcs-v2.ota"
    image.write_bytes(build_image(bytes(range(256)) * 12, manufacturer_code=MANUFACTURER, image_type=0, file_version=2, min_hw=0x1111, max_hw=0x1211))
    cfg = tmp_path / "config.toml"
    cfg.write_text(f'state_dir = "{tmp_path / "state"}"\ncontrol_socket = "{tmp_path / "control.sock"}"\n')
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    han_ota = str(Path(sys.executable).with_name("han-ota"))
    emulator = await asyncio.create_subprocess_exec(
        han_ota, "emulate", kind, "--listen", "127.0.0.1:0", "--json", *options,
        "--sim-device", f"hcalcs:{HCALCS}:file_version=1:hardware_version=0x1111",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL, cwd=ROOT, env=env,
    )
    try:
        ready = await _read_json_line(emulator.stdout)
        assert ready["radio"] == kind and ready["path"].startswith("socket://127.0.0.1:")
        assert ready["devices"] == [{"kind": "hcalcs", "ieee": HCALCS}]
        push = await asyncio.create_subprocess_exec(
            han_ota, "push", str(image), "--device", HCALCS, "--radio", kind, "--path", ready["path"],
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
