"""The gateway through the REAL bellows 1.2.1 driver, against the EZSP NCP emulator: what
is particular to it. The driver tests every radio shares (start-up, join and install
codes, a full push with the hold and a gated activation, lost deliveries, a watchdog
reset signalled as the firmware does and a dropped link, a device two hops away) are
tests/test_drivers.py, run on EZSP 13 and 14 and on Z-Stack.

Here, each on EZSP 13 (EmberZNet 7.4, the emulator's default) and 14 (8.0) but the CLI
ones (the ``ezsp_version`` fixture): ``han-ota emulate ezsp`` + ``han-ota push --radio
ezsp`` as subprocesses; a device that gave up during a long outage being brought back
by the session's Image Notify (a nudge); the payload limit behind a relay the NCP
learnt (MESSAGE_TOO_LONG at once) and a session shrinking its blocks after
MESSAGE_TOO_LONG; retries and the stall timeout at EmberZNet's failure timing (scaled).
The emulated NCP starts with a formed network so bellows does not spend ~8 s forming
one per test (the CLI test forms one, as a new dongle would).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import bellows.types as bt
import pytest
import zigpy.types as zt

from gateway.engine import Engine
from gateway.image_build import build_image
from gateway.ota import events as ev
from gateway.ota.events import SessionState
from radios.emulate.ezsp import AshConfig, NetworkSettings, running_ezsp_emulator
from radios.select import open_app
from radios.supervisor import RadioSupervisor

import driver_test_support as support
from driver_test_support import FAST_DEVICE, MANUFACTURER, lab_supplier, wait_offset

EXIT_USAGE = 2  # han-ota: a usage error
HCALCS = "00:db:12:34:56:78:90:b0"
HCALCS_IEEE = zt.EUI64.convert(HCALCS)
ROOT = Path(__file__).resolve().parents[1]


def hcalcs_spec(extra: str = ""):
    return support.hcalcs_spec(HCALCS, extra)


def formed() -> NetworkSettings:
    return NetworkSettings(channel=20, pan_id=0x4D2B)


@pytest.fixture(params=[13, 14], ids=lambda version: f"ezsp{version}")
def ezsp_version(request) -> int:
    """Every driver test runs against EmberZNet 7.4 (EZSP 13, the default) and 8.0 (14):
    bellows runs different code for each."""
    return request.param


def emulator(ezsp_version: int, specs, *, reboot_delay: float = 0.1):
    """The NCP reboots in ``reboot_delay`` (the firmware's 1 s where timing matters)."""
    return running_ezsp_emulator(specs, network=formed(), protocol_version=ezsp_version,
                                 ash_config=AshConfig(reboot_delay=reboot_delay))


async def open_and_join(path: str, **kwargs):
    """Open the radio like the gateway, let the HCALCS join, wait for zigpy's interview."""
    app = await open_app("ezsp", path=path, **kwargs)
    await app.permit(60)
    await wait_known(app)
    return app


async def wait_known(app, ieee: zt.EUI64 = HCALCS_IEEE, timeout: float = 15.0):
    return await support.wait_known(app, ieee, timeout)


@pytest.fixture(scope="module")
def supplier(tmp_path_factory):
    return lab_supplier(tmp_path_factory.mktemp("supplier"), HCALCS)


def make_image(key=None, size: int = 8192, version: int = 2):
    return support.make_image(key, size, version, step=11)


# ----------------------------------------------------------------------------- CLI path


async def test_cli_emulate_then_push_leaves_device_held(tmp_path):
    image = tmp_path / "hcalcs-v2.ota"
    image.write_bytes(build_image(bytes(range(256)) * 12, manufacturer_code=MANUFACTURER, image_type=0, file_version=2, min_hw=0x1111, max_hw=0x1211))
    cfg = tmp_path / "config.toml"
    cfg.write_text(f'state_dir = "{tmp_path / "state"}"\ncontrol_socket = "{tmp_path / "control.sock"}"\n')
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    emulator = await asyncio.create_subprocess_exec(
        str(Path(sys.executable).with_name("han-ota")), "emulate", "ezsp", "--listen", "127.0.0.1:0", "--json", "--ezsp-version", "14",
        "--sim-device", f"hcalcs:{HCALCS}:file_version=1:hardware_version=0x1111",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL, cwd=ROOT, env=env,
    )
    try:
        async with asyncio.timeout(20):
            ready = json.loads((await emulator.stdout.readline()).decode())
        assert ready["radio"] == "ezsp" and ready["path"].startswith("socket://127.0.0.1:")
        push = await asyncio.create_subprocess_exec(
            str(Path(sys.executable).with_name("han-ota")), "push", str(image), "--device", HCALCS, "--radio", "ezsp",
            "--path", ready["path"], "--config", str(cfg), "--timeout", "60", "--json",
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, cwd=tmp_path, env=env,
        )
        async with asyncio.timeout(90):
            out, err = await push.communicate()
        assert push.returncode == 0, err.decode()[-2000:]
        result = json.loads(out.decode().strip().splitlines()[-1])
        assert result["state"] == "held" and result["device"] == HCALCS
        assert result["bytes"] == result["size"] == image.stat().st_size and result["held_requests"] >= 1
    finally:
        if emulator.returncode is None:
            emulator.send_signal(2)
            async with asyncio.timeout(10):
                assert await emulator.wait() == 0


def test_cli_emulate_refuses_an_ezsp_version_it_does_not_emulate():
    done = subprocess.run(
        [str(Path(sys.executable).with_name("han-ota")), "emulate", "ezsp", "--ezsp-version", "12", "--json"],
        capture_output=True, timeout=60, cwd=ROOT,
    )
    assert done.returncode == EXIT_USAGE
    assert "--ezsp-version 12: give one of 13, 14, 16, 17, 18, 19" in (done.stdout + done.stderr).decode()


# ----------------------------------------------------------------------------- faults


async def test_device_that_gave_up_during_a_long_outage_is_nudged_back(supplier, tmp_path, ezsp_version):
    """The radio is away longer than the device keeps retrying (here 0.2 s x 2): the device
    goes idle with its partial image; after the reconnect the session's Image Notify (a nudge) makes
    it query, and it resumes at its offset instead of starting over."""
    _, config = supplier
    fw = make_image(size=16000)
    spec = hcalcs_spec("response_timeout=0.2:max_retries=2:query_delay=3600:notify_delay=0")
    async with emulator(ezsp_version, [spec]) as (path, server):
        database = tmp_path / "zigbee.db"
        first = await open_and_join(path, database=database)
        made = [first]
        away = asyncio.Event()

        async def factory():
            if made:
                return made.pop()
            await away.wait()  # the dongle is still unplugged
            return await open_app("ezsp", path=path, database=database)

        supervisor = RadioSupervisor(factory, name="ezsp", backoff=(0.2,))
        app = await supervisor.start()
        engine = Engine(app, config.ota)
        engine.follow(supervisor)
        engine.nudge_after_s = 0.5
        try:
            sim = server.han.devices[HCALCS_IEEE]
            job = engine.push(fw, HCALCS_IEEE)
            await wait_offset(job, 4000)
            server.faults.drop_now()
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


# ----------------------------------------------------------------------------- payload limits


async def test_a_device_behind_a_relay_gets_frames_that_fit_its_source_route(ezsp_version):
    """The NCP learns the device's source route (a Route Record; bellows passes it to
    zigpy as the device's relays) and refuses at once, with MESSAGE_TOO_LONG, an APS
    payload longer than 82 less the route's 2 + 2 per relay: an Image Block Response
    with 63 data bytes (80 bytes) no longer fits, one with 61 (78 bytes) does."""
    import zigpy.exceptions

    async with emulator(ezsp_version, [hcalcs_spec()]) as (path, server):
        app = await open_and_join(path)
        try:
            device = app.devices[HCALCS_IEEE]
            server.ncp.learn_source_route(device.nwk, [0x7A01])
            await support.wait_until(lambda: device.relays == [0x7A01])

            def packet(size: int) -> zt.ZigbeePacket:
                return zt.ZigbeePacket(
                    src=zt.AddrModeAddress(addr_mode=zt.AddrMode.NWK, address=0x0000), src_ep=1,
                    dst=zt.AddrModeAddress(addr_mode=zt.AddrMode.NWK, address=device.nwk), dst_ep=1,
                    tsn=0x10, profile_id=0x0104, cluster_id=0x0019, data=zt.SerializableBytes(bytes(size)),
                    tx_options=zt.TransmitOptions.ACK, radius=0,
                )

            with pytest.raises(zigpy.exceptions.DeliveryError) as refused:
                await app.send_packet(packet(17 + 63))
            assert refused.value.status == bt.sl_Status.MESSAGE_TOO_LONG
            await app.send_packet(packet(17 + 61))  # delivered: messageSentHandler OK
            assert server.ncp.max_payload(bt.EmberApsFrame(
                profileId=0x0104, clusterId=0x0019, sourceEndpoint=1, destinationEndpoint=1,
                options=bt.EmberApsOption.APS_OPTION_ENCRYPTION, groupId=0, sequence=0), device.nwk) == 69
        finally:
            await app.shutdown()


@contextlib.asynccontextmanager
async def engine_on_emulator(ezsp_version: int, ota):
    """(server, app, engine, sent): an engine on bellows on a fresh emulator with the
    HCALCS joined; ``sent`` gets (offset, data bytes) of every Image Block Response the
    radio took, as the engine saw them."""
    async with emulator(ezsp_version, [hcalcs_spec(FAST_DEVICE)]) as (path, server):
        app = await open_and_join(path)
        engine = Engine(app, ota)
        sent: list[tuple[int, int]] = []
        engine.add_observer(lambda job, action: sent.append((action.file_offset, len(action.data))) if isinstance(action, ev.SendImageBlock) else None)
        try:
            yield server, app, engine, sent
        finally:
            await engine.close()
            await app.shutdown()


async def test_message_too_long_mid_transfer_shrinks_the_block_and_the_transfer_completes(supplier, ezsp_version, caplog):
    """The NCP learns a two-relay route mid-transfer that the host never hears of: the next
    63-byte block is refused with MESSAGE_TOO_LONG, the session shrinks (a relay assumed
    at a time: 61, still refused, then 59) and serves the same request again; the rest
    of the image goes in 59-byte blocks and the push reaches HELD."""
    _, config = supplier
    fw = make_image(size=9000)
    async with engine_on_emulator(ezsp_version, config.ota) as (server, app, engine, sent):
        device = app.devices[HCALCS_IEEE]
        with caplog.at_level(logging.INFO):
            job = engine.push(fw, HCALCS_IEEE)
            await wait_offset(job, 3000)
            server.ncp.learn_source_route(device.nwk, [0x7A01, 0x7A02], announce=False)
            assert await engine.wait(job, {SessionState.HELD}, timeout=45) is SessionState.HELD
        assert job.session.offset == fw.size and device.relays is None
        refused = [length - 17 for _, length, _ in server.ncp.refused_too_long]
        assert refused == [63, 61]  # each refused size once: the session never re-sends one
        sizes = [n for _, n in sent]
        assert 63 in sizes and sizes[-2] == 59 and set(sizes[sizes.index(59):-1]) == {59}
        assert job.session.radio_block_limit == 59
        messages = [r.getMessage() for r in caplog.records]
        assert any("block of 63 bytes at offset" in m and "refused by the radio as too long" in m for m in messages)
        assert any("blocks of at most 59 bytes: NWK security only, 2 relays assumed (direct known), EZSP limit 82" in m for m in messages)


# ----------------------------------------------------------------------------- realistic failure timing


async def test_retries_and_stall_timeout_hold_at_real_failure_timing(supplier, ezsp_version):
    """Issue 14: on a timed link the NCP reports lost unicasts after EmberZNet's APS
    retries and route discoveries (6.3 s at scale 1), not at once. Everything scaled by
    0.1 (the air, the NCP's failure timing, the gateway's 120 s stall timeout): the
    device re-asks long before the NCP reports each loss, the session serves it while
    the lost frame is still in flight, and the push reaches HELD without stalling."""
    from radios.emulate.ezsp import FailureTiming
    from radios.sim.link import LinkModel

    scale = 0.1
    _, config = supplier
    ota = dataclasses.replace(config.ota, stall_timeout_s=120.0 * scale)
    fw = make_image(size=9000)
    link = LinkModel.realistic(scale=scale, uart_baud=None)
    async with running_ezsp_emulator([hcalcs_spec(FAST_DEVICE)], link, network=formed(), protocol_version=ezsp_version,
                                     ash_config=AshConfig(reboot_delay=0.1)) as (path, server):
        assert server.ncp.failure_timing == FailureTiming(scale=scale)
        app = await open_and_join(path)
        engine = Engine(app, ota)
        try:
            sim = server.han.devices[HCALCS_IEEE]
            job = engine.push(fw, HCALCS_IEEE)
            await wait_offset(job, 3000, timeout=60)
            server.faults.fail_next_deliveries(4, nwk=sim.nwk, cluster=0x0019)
            assert await engine.wait(job, {SessionState.HELD}, timeout=90) is SessionState.HELD
            delays = [after for nwk, after in server.ncp.failed_unicasts if nwk == sim.nwk]
            assert len(delays) == 4 and min(delays) >= FailureTiming(scale=scale).failure_delay_s
            assert sim.counters.retries >= 4 and job.session.offset == fw.size
            # Every lost frame's late outcome came back (the hold answers come and go).
            await support.wait_until(lambda: engine.pacer.inflight == 0, timeout=10)
        finally:
            await engine.close()
            await app.shutdown()
