"""The gateway through the REAL bellows 1.2.1 driver, against the EZSP NCP emulator: what
is particular to it. The driver tests every radio shares (start-up, join and install
codes, a full push with the hold and a gated activation, lost deliveries, a watchdog
reset signalled as the firmware does and a dropped link, a device that gave up in an
outage nudged back, a device two hops away, the CLI path) are tests/radios/emulate/test_drivers.py,
run on EZSP 13 and 14 and on Z-Stack.

Here, each on EZSP 13 (EmberZNet 7.4, the emulator's default) and 14 (8.0) (the
``radio`` fixture): the payload limit behind a relay the NCP learnt (MESSAGE_TOO_LONG
at once) and a session shrinking its blocks after MESSAGE_TOO_LONG; retries and the
stall timeout at EmberZNet's failure timing (scaled); and the CLI's refusal of an EZSP
version it does not emulate. The emulated NCP starts with a formed network so bellows
does not spend ~8 s forming one per test.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import subprocess
import sys
from pathlib import Path

import bellows.types as bt
import pytest
import zigpy.types as zt

from gateway.engine import Engine
from gateway.ota import events as ev
from gateway.ota.events import SessionState
from radios.emulate.ezsp import AshConfig, NetworkSettings, running_ezsp_emulator

import driver_test_support as support
from driver_test_support import FAST_DEVICE, HCALCS, HCALCS_IEEE, Radio, lab_supplier, wait_offset

EXIT_USAGE = 2  # han-ota: a usage error
ROOT = Path(__file__).resolve().parents[3]


def hcalcs_spec(extra: str = ""):
    return support.hcalcs_spec(HCALCS, extra)


def formed() -> NetworkSettings:
    return NetworkSettings(channel=20, pan_id=0x4D2B)


@pytest.fixture(params=["ezsp13", "ezsp14"])
def radio(request) -> Radio:
    """EmberZNet 7.4 (EZSP 13, the default) and 8.0 (14): bellows runs different code for each."""
    return Radio(request.param)


@pytest.fixture(scope="module")
def supplier(tmp_path_factory):
    return lab_supplier(tmp_path_factory.mktemp("supplier"), HCALCS)


def make_image(key=None, size: int = 8192, version: int = 2):
    return support.make_image(key, size, version, step=11)


# ----------------------------------------------------------------------------- CLI path


def test_cli_emulate_refuses_an_ezsp_version_it_does_not_emulate():
    done = subprocess.run(
        [str(Path(sys.executable).with_name("han-ota")), "emulate", "ezsp", "--ezsp-version", "12", "--json"],
        capture_output=True, timeout=60, cwd=ROOT,
    )
    assert done.returncode == EXIT_USAGE
    assert "--ezsp-version 12: give one of 13, 14, 16, 17, 18, 19" in (done.stdout + done.stderr).decode()


# ----------------------------------------------------------------------------- payload limits


async def test_a_device_behind_a_relay_gets_frames_that_fit_its_source_route(radio):
    """The NCP learns the device's source route (a Route Record; bellows passes it to
    zigpy as the device's relays) and refuses at once, with MESSAGE_TOO_LONG, an APS
    payload longer than 82 less the route's 2 + 2 per relay: an Image Block Response
    with 63 data bytes (80 bytes) no longer fits, one with 61 (78 bytes) does."""
    import zigpy.exceptions

    async with radio.emulator([hcalcs_spec()]) as (path, server):
        app = await radio.open_and_join(path)
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
async def engine_on_emulator(radio: Radio, ota):
    """(server, app, engine, sent): an engine on bellows on a fresh emulator with the
    HCALCS joined; ``sent`` gets (offset, data bytes) of every Image Block Response the
    radio took, as the engine saw them."""
    async with radio.emulator([hcalcs_spec(FAST_DEVICE)]) as (path, server):
        app = await radio.open_and_join(path)
        engine = Engine(app, ota)
        sent: list[tuple[int, int]] = []
        engine.add_observer(lambda job, action: sent.append((action.file_offset, len(action.data))) if isinstance(action, ev.SendImageBlock) else None)
        try:
            yield server, app, engine, sent
        finally:
            await engine.close()
            await app.shutdown()


async def test_message_too_long_mid_transfer_shrinks_the_block_and_the_transfer_completes(supplier, radio, caplog):
    """The NCP learns a two-relay route mid-transfer that the host never hears of: the next
    63-byte block is refused with MESSAGE_TOO_LONG, the session shrinks (a relay assumed
    at a time: 61, still refused, then 59) and serves the same request again; the rest
    of the image goes in 59-byte blocks and the push reaches HELD."""
    _, config = supplier
    fw = make_image(size=9000)
    async with engine_on_emulator(radio, config.ota) as (server, app, engine, sent):
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


async def test_retries_and_stall_timeout_hold_at_real_failure_timing(supplier, radio):
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
    async with running_ezsp_emulator([hcalcs_spec(FAST_DEVICE)], link, network=formed(), protocol_version=radio.ezsp_version,
                                     ash_config=AshConfig(reboot_delay=0.1)) as (path, server):
        assert server.ncp.failure_timing == FailureTiming(scale=scale)
        app = await radio.open_and_join(path)
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
