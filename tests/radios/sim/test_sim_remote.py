"""The simulated HAN in a child process (radios/sim/remote.py) behind an unchanged zigpy
app: interview, a real push, and no simulation process outliving its hub."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
import signal
import subprocess
import sys
import textwrap
import time
from typing import Any

import pytest
import zigpy.config as conf
import zigpy.exceptions
import zigpy.types as zt

from gateway.config import OtaConfig
from gateway.engine import Engine
from gateway.image import FirmwareImage, parse_image
from gateway.image_build import build_image
from gateway.ota import events as ev
from radios.sim.link import LinkModel
from radios.sim.remote import (
    GONE,
    RemoteHan,
    RemoteSimControllerApplication,
    decode_packet,
    encode_packet,
    start_remote_sim_app,
)
from radios.sim.spec import SimDeviceSpec, parse_sim_device

ROOT = Path(__file__).resolve().parents[3]
A, B = "00:db:12:34:56:78:90:a0", "00:db:12:34:56:78:90:a1"
FAST_OTA = OtaConfig(rate_bytes_per_s=10_000_000, burst_bytes=1_000_000, max_inflight=8, stall_timeout_s=20)
QUICK = dict(confirm_read_after_s=0.2, confirm_timeout_s=20)
REPORTED = ("upgrade_end_request", "activate")


def hcalcs(ieee: str, extra: str = "") -> SimDeviceSpec:
    return parse_sim_device(
        f"hcalcs:{ieee}:manufacturer_code=0x121D:image_type=0:file_version=1:hardware_version=0x1111:reboot_time=0.1" + extra
    )


def image(size: int) -> FirmwareImage:
    payload = bytes((i * 7 + 3) & 0xFF for i in range(size))
    return parse_image(build_image(payload, manufacturer_code=0x121D, image_type=0, file_version=2, min_hw=0x1111, max_hw=0x1211))


def sim_children(include_zombies: bool = True) -> list[int]:
    """This process's child processes running the remote HAN (zombies count: not reaped
    is not gone)."""
    me = os.getpid()
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
        except OSError:
            continue
        state, ppid = stat.rsplit(")", 1)[1].split()[:2]
        if int(ppid) == me and (b"radios.sim.remote" in cmdline or state == "Z") and (include_zombies or state != "Z"):
            found.append(int(entry))
    return found


def alive(pid: int) -> bool:
    """Running (neither gone nor a zombie awaiting its reaper)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


async def until(predicate: Any, timeout: float = 10.0) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.01)


@pytest.fixture(autouse=True)
def no_leftover_children() -> Any:
    assert sim_children() == [], "a remote HAN from an earlier test is still around"
    yield
    assert sim_children() == [], "this test left a remote HAN process (or an unreaped one) behind"


def test_packet_frames_round_trip() -> None:
    NWK, IEEE = zt.AddrMode.NWK, zt.AddrMode.IEEE
    packets = [
        zt.ZigbeePacket(
            src=zt.AddrModeAddress(addr_mode=NWK, address=0xD437), src_ep=1,
            dst=zt.AddrModeAddress(addr_mode=NWK, address=0x0000), dst_ep=1,
            tsn=0x9A, profile_id=0x0104, cluster_id=0x0019, data=zt.SerializableBytes(b"\x01\x9a\x03" + bytes(range(200))),
            lqi=230, rssi=-47,
        ),
        zt.ZigbeePacket(
            dst=zt.AddrModeAddress(addr_mode=IEEE, address=zt.EUI64.convert(B)), dst_ep=0,
            tsn=3, profile_id=0, cluster_id=0x0031, data=zt.SerializableBytes(b""),
            tx_options=zt.TransmitOptions.ACK | zt.TransmitOptions.APS_Encryption, radius=30,
        ),
        zt.ZigbeePacket(
            src=zt.AddrModeAddress(addr_mode=NWK, address=0), src_ep=1,
            dst=zt.AddrModeAddress(addr_mode=zt.AddrMode.Broadcast, address=zt.BroadcastAddress.RX_ON_WHEN_IDLE), dst_ep=0xFF,
            tsn=255, profile_id=0x0109, cluster_id=0x0019, data=zt.SerializableBytes(b"\x19\x01\x00"),
        ),
        zt.ZigbeePacket(dst=zt.AddrModeAddress(addr_mode=zt.AddrMode.Group, address=0x1234), cluster_id=6,
                        data=zt.SerializableBytes(b"\x01\x02\x01")),
    ]
    for packet in packets:
        back = decode_packet(encode_packet(packet))
        assert back == packet  # ZigbeePacket compares every field but the timestamp
        assert back.src_ep == packet.src_ep and back.lqi == packet.lqi and back.rssi == packet.rssi


async def test_interview_push_hold_confirm_then_child_gone() -> None:
    specs = [hcalcs(A), hcalcs(B)]
    img = image(20_000)
    app = await start_remote_sim_app(specs, LinkModel.instant(), report_events=REPORTED, timeout=20)
    han = app.han
    assert isinstance(han, RemoteHan) and han.pid != os.getpid() and alive(han.pid)
    try:
        # zigpy interviewed both through the child: descriptors and Basic came over the socket.
        for spec in specs:
            dev = app.devices[spec.ieee]
            assert dev.nwk == han.devices[spec.ieee].nwk and han.devices[spec.ieee].online
            assert dev.model == "HCALCS" and dev.manufacturer == spec.manufacturer_name
            assert 0x0019 in dev.endpoints[1].out_clusters
        engine = Engine(app, FAST_OTA, session_overrides=QUICK)
        try:
            jobs = [engine.push(img, s.ieee) for s in specs]
            for job in jobs:
                assert await engine.wait(job, {ev.SessionState.HELD}, timeout=20) is ev.SessionState.HELD
            report = await han.report()
            assert report["pid"] == han.pid
            for spec in specs:
                d = report["devices"][str(spec.ieee)]
                assert d["counters"]["downloads_completed"] == 1 and d["counters"]["invalid_images"] == 0
                assert d["counters"]["bytes_received"] == img.size
                assert d["current_file_version"] == 1, "held: still on the old image"
            ends = [e for e in han.events if e.kind == "upgrade_end_request"]
            assert {e.ieee for e in ends} == {s.ieee for s in specs} and all(e.detail["status"] == "SUCCESS" for e in ends)
            # The child's loop time is CLOCK_MONOTONIC, comparable with ours.
            assert all(0 <= asyncio.get_running_loop().time() - e.time < 20 for e in ends)
            for spec in specs:
                engine.activate(spec.ieee, why="test")
            for job in jobs:
                assert await engine.wait(job, {ev.SessionState.CONFIRMED}, timeout=20) is ev.SessionState.CONFIRMED
                assert job.session.device_file_version == img.file_version
            report = await han.report()
            assert all(report["devices"][str(s.ieee)]["current_file_version"] == 2 for s in specs)
            assert report["devices"][str(A)]["events"]["activate"] == 1
        finally:
            await engine.close()
    finally:
        await app.shutdown()
    assert han.returncode == 0, "a clean shutdown lets the child stop its devices and exit by itself"
    assert not alive(han.pid)


async def test_child_killed_mid_transfer_fails_sends_and_nothing_hangs() -> None:
    app = await start_remote_sim_app([hcalcs(A)], LinkModel.instant(), timeout=20)
    han = app.han
    lost: list[Exception] = []

    class Listener:
        def connection_lost(self, exc: Exception) -> None:
            lost.append(exc)

    app.add_listener(Listener())
    engine = Engine(app, OtaConfig(rate_bytes_per_s=40_000, burst_bytes=4096, stall_timeout_s=20), session_overrides=QUICK)
    try:
        job = engine.push(image(200_000), zt.EUI64.convert(A))
        await until(lambda: job.session.offset > 5_000)
        os.kill(han.pid, signal.SIGKILL)
        await until(lambda: bool(lost), timeout=5)
        assert "gone" in str(lost[0]) and not han.connected
        assert han.returncode == -signal.SIGKILL
        offset = job.session.offset
        with pytest.raises(zigpy.exceptions.DeliveryError):
            await app.send_packet(zt.ZigbeePacket(
                dst=zt.AddrModeAddress(addr_mode=zt.AddrMode.NWK, address=han.devices[zt.EUI64.convert(A)].nwk),
                dst_ep=1, src_ep=1, profile_id=0x0104, cluster_id=0x0000, data=zt.SerializableBytes(b"\x00\x01\x00\x00\x00"),
            ))
        result = await han.send(zt.ZigbeePacket(dst=zt.AddrModeAddress(addr_mode=zt.AddrMode.NWK, address=0x1234)))
        assert not result.ok and GONE in result.reason
        await asyncio.sleep(0.2)
        assert job.session.offset == offset, "no block reaches a device whose HAN is gone"
    finally:
        await asyncio.wait_for(engine.close(), 10)
        await asyncio.wait_for(app.shutdown(), 10)


async def test_pending_send_answered_when_child_dies() -> None:
    # A sleepy PPMID polling every 30 s: a unicast waits at its parent, so it is still
    # pending in the hub when the child is killed.
    ppmid = parse_sim_device(f"ppmid:{B}:sleepy_poll=30:join_fast_poll=0:response_timeout=0.2:query_delay=3600")
    han = await RemoteHan.spawn([ppmid], LinkModel.instant())
    try:
        han.attach(lambda packet: None)
        await han.start()
        await until(lambda: han.devices[ppmid.ieee].online)
        await asyncio.sleep(0.6)  # its fast polls after the Device_annce are over
        send = asyncio.ensure_future(han.send(zt.ZigbeePacket(
            dst=zt.AddrModeAddress(addr_mode=zt.AddrMode.NWK, address=han.devices[ppmid.ieee].nwk),
            dst_ep=1, src_ep=1, profile_id=0x0104, cluster_id=0x0000, data=zt.SerializableBytes(b"\x00\x01\x00\x00\x00"),
        )))
        await asyncio.sleep(0.3)
        assert not send.done(), "the frame should be waiting for the device's poll"
        os.kill(han.pid, signal.SIGKILL)
        result = await asyncio.wait_for(send, 5)
        assert not result.ok and GONE in result.reason
    finally:
        await han.close()
    assert not alive(han.pid)


async def test_cancelled_hub_leaves_no_child() -> None:
    started: list[int] = []

    async def hub() -> None:
        app = await start_remote_sim_app([hcalcs(A)], LinkModel.instant(), timeout=20)
        started.append(app.han.pid)
        engine = Engine(app, OtaConfig(rate_bytes_per_s=40_000, burst_bytes=4096, stall_timeout_s=20), session_overrides=QUICK)
        try:
            job = engine.push(image(500_000), zt.EUI64.convert(A))
            await engine.wait(job, {ev.SessionState.HELD}, timeout=60)
        finally:
            await engine.close()
            await app.shutdown()

    task = asyncio.ensure_future(hub())
    await until(lambda: bool(started), timeout=20)
    await asyncio.sleep(0.3)  # mid-transfer
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert not alive(started[0])

    # Cancelled while the child is still starting (before any app exists).
    task = asyncio.ensure_future(start_remote_sim_app([hcalcs(A)], LinkModel.instant(), timeout=20))
    await until(lambda: bool(sim_children()), timeout=5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task

    # Cancelled inside close() itself: the child is killed and reaped, not left behind.
    han = await RemoteHan.spawn([hcalcs(A)], LinkModel.instant())
    closing = asyncio.ensure_future(han.close())
    await asyncio.sleep(0)
    closing.cancel()
    with pytest.raises(asyncio.CancelledError):
        await closing
    assert han.returncode is not None and not alive(han.pid)


async def test_zigpy_new_builds_its_own_child_from_config() -> None:
    config = {
        conf.CONF_DEVICE: {conf.CONF_DEVICE_PATH: "sim://"},
        conf.CONF_DATABASE: None,
        conf.CONF_NWK: {conf.CONF_NWK_CHANNEL: 15},
        conf.CONF_OTA: {conf.CONF_OTA_ENABLED: False},
        conf.CONF_TOPO_SCAN_ENABLED: False,
        conf.CONF_NWK_BACKUP_ENABLED: False,
        "sim": {"devices": [hcalcs(A).to_dict()], "link": "instant"},
    }
    app = await RemoteSimControllerApplication.new(config, auto_form=True)
    try:
        await app.wait_initialized(timeout=20)
        han = app.han
        assert isinstance(han, RemoteHan) and alive(han.pid)
        assert app.devices[zt.EUI64.convert(A)].model == "HCALCS"
    finally:
        await app.shutdown()
    assert han.returncode == 0


def test_child_exits_when_its_hub_is_killed() -> None:
    # A hub process SIGKILLed runs no cleanup at all: the child must notice the closed
    # connection by itself.
    script = textwrap.dedent(
        f"""
        import asyncio, sys
        sys.path.insert(0, {str(ROOT)!r})
        from radios.sim.remote import RemoteHan
        from radios.sim.spec import parse_sim_device

        async def main():
            han = await RemoteHan.spawn([parse_sim_device("hcalcs:{A}")])
            han.attach(lambda packet: None)
            await han.start()
            print(han.pid, flush=True)
            await asyncio.sleep(60)

        asyncio.run(main())
        """
    )
    hub = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert hub.stdout is not None
        child = int(hub.stdout.readline())
        assert alive(child)
        hub.kill()
        hub.wait(5)
        deadline = time.monotonic() + 5
        while alive(child) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert not alive(child), "the simulation outlived its hub"
    finally:
        if hub.poll() is None:
            hub.kill()
            hub.wait()
        if hub.stdout is not None:
            hub.stdout.close()
