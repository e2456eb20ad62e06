"""The OTA driver's receive and send paths against zigpy (sim radio, instant link).

Requests from a device with a session are taken before zigpy parses them (the packet
tap); everything else on the OTA cluster still goes through zigpy. A device's next
answer never waits for the radio to confirm the previous frame.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import zigpy.config as zconf
import zigpy.types as zt

from gateway.ota import events as ev
from gateway.ota.driver import LAST_SEEN_EVERY_S, OtaDriver, _Binding
from radios.select import open_app
from radios.tap import install_packet_tap
from tests.system.test_engine_e2e import IEEE, PPMID, image, network, spec, until

OTA = 0x0019


def spy_zigpy_device(app: Any, ieee: zt.EUI64) -> list[bytes]:
    """The OTA payloads zigpy's Device.packet_received (its parse) gets for ``ieee``."""
    device = app.get_device(ieee=ieee)
    seen: list[bytes] = []
    original = device.packet_received

    def packet_received(packet: zt.ZigbeePacket) -> Any:
        if packet.cluster_id == OTA:
            seen.append(packet.data.serialize())
        return original(packet)

    device.packet_received = packet_received
    return seen


def requests(frames: list[bytes]) -> list[bytes]:
    """Cluster-specific client-to-server frames (Query, Block, Page, Upgrade End)."""
    return [f for f in frames if f and f[0] & 0x0B == 0x01]


async def test_session_requests_never_reach_zigpy_but_read_responses_do() -> None:
    async with network() as (app, engine, _seen):
        to_zigpy = spy_zigpy_device(app, IEEE)
        job = engine.push(image(3000), IEEE)
        assert await engine.wait(job, {ev.SessionState.HELD}, timeout=30) is ev.SessionState.HELD
        engine.activate(IEEE, why="test")
        assert await engine.wait(job, {ev.SessionState.CONFIRMED}, timeout=30) is ev.SessionState.CONFIRMED
        sim = app.han.devices[IEEE]
        assert sim.counters.blocks_received >= 3000 // 63
        assert requests(to_zigpy) == [], "zigpy parsed a request that the session owned"
        # The session reads the device's version back through zigpy (Read Attributes
        # Response: a general frame), and that reply must still be matched by zigpy.
        assert any(f[0] & 0x03 == 0x00 for f in to_zigpy), "no general OTA frame reached zigpy"


async def test_last_seen_is_kept_without_an_update_per_block() -> None:
    # With a zigpy database every last_seen update queues an SQL UPDATE: the tap must
    # keep last_seen current without one per block.
    async with network() as (app, engine, _seen):
        device = app.get_device(ieee=IEEE)
        updates: list[Any] = []
        original = device.listener_event

        def listener_event(name: str, *args: Any) -> Any:
            if name == "device_last_seen_updated":
                updates.append(args[0])
            return original(name, *args)

        device.listener_event = listener_event
        before = device.last_seen
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        job = engine.push(image(6000), IEEE)
        assert await engine.wait(job, {ev.SessionState.HELD}, timeout=30) is ev.SessionState.HELD
        took = loop.time() - t0
        blocks = app.han.devices[IEEE].counters.blocks_received
        assert blocks >= 6000 // 63
        most = 2 + int(took / LAST_SEEN_EVERY_S)  # one per interval, and the read response's
        assert 1 <= len(updates) <= most < blocks, f"{len(updates)} last_seen updates for {blocks} blocks in {took:.1f} s"
        assert device.last_seen is not None and (before is None or device.last_seen > before)


async def test_a_device_without_a_session_is_left_to_zigpy() -> None:
    # The PPMID stays quiet (no query of its own at boot or after the interview's Image
    # Notify), so the injected query is the only request zigpy can see from it.
    quiet = spec("query_delay=3600:notify_delay=3600", ieee=PPMID, kind="ppmid")
    async with network(spec(), quiet) as (app, engine, _seen):
        other = zt.EUI64.convert(PPMID)
        to_zigpy = spy_zigpy_device(app, other)
        job = engine.push(image(2000), IEEE)
        assert await engine.wait(job, {ev.SessionState.HELD}, timeout=30) is ev.SessionState.HELD
        # A Query Next Image from the other device, as its radio would deliver it.
        nwk = app.get_device(ieee=other).nwk
        query = bytes.fromhex("01 2a 01 00 1d12 0000 01000000".replace(" ", ""))
        app.packet_received(zt.ZigbeePacket(
            src=zt.AddrModeAddress(addr_mode=zt.AddrMode.NWK, address=nwk), src_ep=1,
            dst=zt.AddrModeAddress(addr_mode=zt.AddrMode.NWK, address=0x0000), dst_ep=1,
            tsn=0x2A, profile_id=0x0104, cluster_id=OTA, data=zt.SerializableBytes(query), lqi=200, rssi=-50,
        ))
        assert requests(to_zigpy) == [query]


async def test_next_answer_does_not_wait_for_the_previous_confirmation() -> None:
    async with network() as (app, engine, _seen):
        release = asyncio.Event()
        pending = 0
        most = 0
        original = app.send_packet

        async def send_packet(packet: zt.ZigbeePacket) -> Any:
            # Deliver at once but hold the confirmation, as a radio waiting for the
            # APS ack of a block the device already has.
            nonlocal pending, most
            result = await original(packet)
            if packet.cluster_id == OTA:
                pending += 1
                most = max(most, pending)
                try:
                    await release.wait()
                finally:
                    pending -= 1
            return result

        app.send_packet = send_packet
        job = engine.push(image(1500), IEEE)
        await until(lambda: app.han.devices[IEEE].counters.blocks_received >= 5, timeout=20)
        assert most >= 5, f"only {most} frames were in flight at once"
        release.set()
        assert await engine.wait(job, {ev.SessionState.HELD}, timeout=30) is ev.SessionState.HELD


@pytest.mark.parametrize("aps", [False, True], ids=["plain", "aps-encrypted"])
@pytest.mark.parametrize("source_routing", [False, True], ids=["routed", "source-routed"])
async def test_frames_are_the_packets_zigpy_request_would_hand_the_radio(aps: bool, source_routing: bool) -> None:
    app = await open_app("sim", sim_devices=[spec()])
    try:
        app.config[zconf.CONF_SOURCE_ROUTING] = source_routing
        device = app.get_device(ieee=IEEE)
        device.relays = [0x2222, 0x3333]
        driver = OtaDriver(app, aps_encryption=aps)
        handed: list[zt.ZigbeePacket] = []

        async def send_packet(packet: zt.ZigbeePacket) -> None:
            handed.append(packet)

        app.send_packet = send_packet
        # Endpoints learnt from the device's requests; then before any request (an Image
        # Notify: the device's OTA client endpoint from zigpy's interview).
        learnt = _Binding(session=None, profile=0x0109, device_ep=2, server_ep=1)  # type: ignore[arg-type]
        fresh = _Binding(session=None)  # type: ignore[arg-type]
        client_ep = next(i for i, ep in device.endpoints.items() if i and OTA in ep.out_clusters)
        profile = device.endpoints[client_ep].profile_id
        steps = [(learnt, 0x0109, 2, 7, None, None), (learnt, 0x0109, 2, 8, None, None),
                 (learnt, 0x0109, 2, 9, 0x4444, None),  # the device rejoined elsewhere
                 (learnt, 0x0109, 2, 10, None, 0x0001),  # our own NWK address changed
                 (fresh, profile, client_ep, 11, None, None)]
        try:
            for binding, prof, dst_ep, seq, nwk, own in steps:
                if nwk is not None:
                    device.nwk = zt.NWK(nwk)
                if own is not None:
                    app.state.node_info.nwk = zt.NWK(own)
                data = bytes([0x19, seq, 0x05, 0x00])
                assert await driver._send(IEEE, binding, data, seq) is None
                await app.request(device, prof, OTA, 1, dst_ep, seq, data, expect_reply=False, aps_encryption=aps)
                ours, zigpys = handed[-2:]
                assert ours == zigpys  # every field but the timestamp
                assert (ours.source_route is not None) == source_routing
        finally:
            await driver.close()
    finally:
        await app.shutdown()


class _DeadlineSession:
    """A session that only has a timer: ``deadline`` is what get_timer says."""

    state = ev.SessionState.TRANSFERRING

    def __init__(self) -> None:
        self.deadline: float | None = None
        self.fired: list[float] = []

    def start(self, now: float) -> list[ev.Action]:
        return []

    def handle(self, event: ev.Event, now: float) -> list[ev.Action]:
        return []

    def get_timer(self) -> float | None:
        return self.deadline

    def handle_timer(self, now: float) -> list[ev.Action]:
        self.fired.append(now)
        self.deadline = None
        return []


async def test_session_timer_runs_at_its_latest_deadline_never_early() -> None:
    app = await open_app("sim", sim_devices=[spec()])
    loop = asyncio.get_running_loop()
    driver = OtaDriver(app)
    session = _DeadlineSession()
    try:
        t0 = loop.time()
        session.deadline = t0 + 0.05
        driver.attach(IEEE, session, start=False)  # type: ignore[arg-type]
        # Each block moves the stall deadline later; the timer must follow.
        for later in (0.10, 0.15, 0.20):
            session.deadline = t0 + later
            driver.run(IEEE, lambda now: [])
        await until(lambda: session.fired, timeout=5)
        assert session.fired[0] >= t0 + 0.20, "handle_timer ran before the session's deadline"
        await asyncio.sleep(0.1)
        assert len(session.fired) == 1
        # A deadline brought forward is honoured then, not at the older time.
        t1 = loop.time()
        session.deadline = t1 + 5.0
        driver.run(IEEE, lambda now: [])
        session.deadline = t1 + 0.03
        driver.run(IEEE, lambda now: [])
        await until(lambda: len(session.fired) == 2, timeout=3)
        assert t1 + 0.03 <= session.fired[1] < t1 + 5.0
        # No deadline: nothing runs.
        session.deadline = t1 + 0.05
        driver.run(IEEE, lambda now: [])
        session.deadline = None
        driver.run(IEEE, lambda now: [])
        await asyncio.sleep(0.15)
        assert len(session.fired) == 2
    finally:
        await driver.close()
        await app.shutdown()


class _App:
    def __init__(self) -> None:
        self.got: list[str] = []

    def packet_received(self, packet: Any) -> None:
        self.got.append(packet)


def test_taps_stack_consume_and_come_off_in_any_order() -> None:
    app = _App()
    order: list[str] = []

    def tap(name: str, take: str) -> Any:
        def fn(packet: str) -> bool:
            order.append(name)
            return packet == take
        return fn

    remove_a = install_packet_tap(app, tap("a", "x"))  # type: ignore[arg-type]
    remove_b = install_packet_tap(app, tap("b", "y"))  # type: ignore[arg-type]
    for p in ("x", "y", "z"):
        app.packet_received(p)
    assert app.got == ["z"]
    assert order == ["b", "a", "b", "b", "a"]
    remove_a()  # under b: becomes a pass-through
    order.clear()
    app.packet_received("x")
    assert app.got == ["z", "x"] and order == ["b"]
    remove_b()
    app.packet_received("y")
    assert app.got == ["z", "x", "y"]


def test_removing_the_only_tap_restores_the_class_method() -> None:
    app = _App()
    remove = install_packet_tap(app, lambda p: True)  # type: ignore[arg-type]
    app.packet_received("x")
    assert app.got == []
    remove()
    assert "packet_received" not in vars(app)
    app.packet_received("x")
    assert app.got == ["x"]


def test_a_failing_tap_hands_the_packet_to_zigpy(caplog: Any) -> None:
    app = _App()

    def broken(packet: Any) -> bool:
        raise RuntimeError("bug")

    install_packet_tap(app, broken)  # type: ignore[arg-type]
    app.packet_received("x")
    assert app.got == ["x"]
    assert "packet tap" in caplog.text
