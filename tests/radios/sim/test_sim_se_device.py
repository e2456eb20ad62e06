"""A simulated SE device (``security=se``) behind the simulated radio: it finds the Key
Establishment server, runs CBKE, takes the link key, and only then does OTA, APS-secured.

The hub's side is scaffolding kept small and in this file (the real hub service is
gateway/se/service.py's): a packet tap answers the device's Match_Desc for 0x0800 from
an SE endpoint (as coordinator firmware answers from its registered endpoints; zigpy
answers too, with an empty list) and feeds Key Establishment frames to the hub's
responder, gateway.se.ke_server.KeServer, running its Compute work in a thread and
installing the link key with radios.keys.install_link_key before the answer that
completes the exchange goes out.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
import dataclasses
import functools
import random
import threading
from typing import Any

import pytest
import zigpy.types as t
import zigpy.zdo.types as zdo_t
from zigpy.zcl import foundation

import aps_test_support as aps
from eui64 import Eui64
from gateway.se import ecqv
from gateway.se import ke_server as ks
from gateway.se.ke_frames import KeStatus
from gateway.se.suites import suite as hub_suite
from radios.keys import install_link_key
from radios.sim.app import DEFAULT_COORDINATOR_IEEE, SimControllerApplication
from radios.sim.device import SimDevice
from radios.sim.spec import SimDeviceSpec
from radios.tap import install_packet_tap

HUB_ENDPOINT = 10
PROFILE_SE = 0x0109
CLUSTER_KE = 0x0800
DEVICE = "00:db:12:34:56:78:5e:01"
DEVICE_IEEE = t.EUI64.convert(DEVICE)
OTHER = "00:db:12:34:56:78:5e:99"
ISSUER = b"LABTSTCA"
WAIT = 60.0  # generous: two cores shared with other work


# -- lab material (one CA per suite, as `han-ota cbke` would issue it) -------------------------


@dataclasses.dataclass(frozen=True)
class Lab:
    suite: int
    ca_public: bytes
    hub: ks.HubIdentity
    device_cert: bytes
    device_key: bytes
    other_cert: bytes  # issued to another EUI-64 (cbke_fail=bad-certificate)
    other_key: bytes


@functools.cache
def lab(number: int) -> Lab:
    rng = random.Random(0x5E00 + number)
    s = hub_suite(number)
    ca = ecqv.new_key_pair(s, rng.randbytes)
    hub_cert, hub_key = ecqv.issue(s, ca, Eui64.parse(DEFAULT_COORDINATOR_IEEE).written, ISSUER, rng.randbytes)
    dev_cert, dev_key = ecqv.issue(s, ca, Eui64.parse(DEVICE).written, ISSUER, rng.randbytes)
    other_cert, other_key = ecqv.issue(s, ca, Eui64.parse(OTHER).written, ISSUER, rng.randbytes)
    hub = ks.HubIdentity.load(number, hub_cert.raw, hub_key, [ca.public_key])
    return Lab(number, ca.public_key, hub, dev_cert.raw, dev_key, other_cert.raw, other_key)


def se_spec(number: int = 1, fault: str | None = None, **extra: Any) -> SimDeviceSpec:
    m = lab(number)
    cert, key = (m.other_cert, m.other_key) if fault == "bad-certificate" else (m.device_cert, m.device_key)
    options: dict[str, Any] = {
        "query_delay": 0.2,
        "query_interval": 3600.0,
        "ke_server_wait": 2.0,
        "ke_retry_delay": 0.2,
        "ke_attempts": 2,
        **extra,
    }
    return SimDeviceSpec(
        kind="ppmid",
        ieee=DEVICE_IEEE,
        security="se",
        cbke_suite=number,
        cbke_cert=cert.hex(),
        cbke_key=key.hex(),
        cbke_ca=m.ca_public.hex(),
        cbke_fail=fault,
        **options,
    )


def hub_config(*suites: int, **times: Any) -> ks.KeConfig:
    config = ks.KeConfig.build([lab(n).hub for n in suites], list(suites))
    return dataclasses.replace(config, **{"wait_time": 0, **times})


# -- the hub's side, as small as it can be ----------------------------------------------------


def _zcl(tsn: int, command_id: int, *, general: bool = False) -> bytes:
    return foundation.ZCLHeader(
        frame_control=foundation.FrameControl(
            frame_type=foundation.FrameType.GLOBAL_COMMAND if general else foundation.FrameType.CLUSTER_COMMAND,
            is_manufacturer_specific=False,
            direction=foundation.Direction.Server_to_Client,
            disable_default_response=True,
            reserved=0,
        ),
        tsn=tsn,
        command_id=command_id,
    ).serialize()


class Hub:
    """Answers Match_Desc for 0x0800, runs one KeServer per device, records every uplink."""

    def __init__(
        self, app: SimControllerApplication, config: ks.KeConfig, *, answer_match: bool = True, refuse_ke: bool = False
    ) -> None:
        self.app = app
        self.config = config
        self.answer_match = answer_match
        self.refuse_ke = refuse_ke  # answer every KE request with Default Response UNSUPPORTED_CLUSTER
        self.servers: dict[t.EUI64, ks.KeServer] = {}
        self.outcomes: list[tuple[t.EUI64, ks.Established | ks.Failed]] = []
        self.uplinks: list[t.ZigbeePacket] = []
        self._changed = asyncio.Event()
        self._lock = asyncio.Lock()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._timers: dict[t.EUI64, asyncio.TimerHandle] = {}
        self.remove = install_packet_tap(app, self._tap)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _tap(self, packet: t.ZigbeePacket) -> bool:
        self.uplinks.append(packet)
        self._changed.set()
        if packet.profile_id == 0 and packet.cluster_id == zdo_t.ZDOCmd.Match_Desc_req:
            hdr, rest = zdo_t.ZDOHeader.deserialize(packet.cluster_id, packet.data.serialize())
            _, profile, in_clusters, _ = t.deserialize(rest, zdo_t.CLUSTERS[zdo_t.ZDOCmd.Match_Desc_req][1])[0]
            if self.answer_match and profile == PROFILE_SE and CLUSTER_KE in in_clusters:
                payload = zdo_t.Status.SUCCESS.serialize() + t.NWK(0).serialize()
                payload += t.LVList[t.uint8_t, t.uint8_t]([HUB_ENDPOINT]).serialize()
                self._spawn(self._send(packet, 0, zdo_t.ZDOCmd.Match_Desc_rsp, t.uint8_t(hdr.tsn).serialize() + payload, profile=0))
            return False  # zigpy answers too (an empty list), as it does on every radio
        if packet.cluster_id == CLUSTER_KE:
            data = packet.data.serialize()
            hdr, payload = foundation.ZCLHeader.deserialize(data)
            if self.refuse_ke:
                body = bytes([hdr.command_id, foundation.Status.UNSUPPORTED_CLUSTER])
                self._spawn(self._send(packet, HUB_ENDPOINT, CLUSTER_KE, _zcl(hdr.tsn, 0x0B, general=True) + body))
                return True
            ieee = self._ieee(packet)
            server = self.servers.get(ieee)
            if server is None or (server.done and hdr.command_id == 0x00):
                server = self.servers[ieee] = ks.KeServer(self.config, ieee, rng=random.Random(7).randbytes)
            event = ks.FrameReceived(hdr.tsn, hdr.command_id, payload)
            self._spawn(self._feed(ieee, server, packet, lambda now: server.handle(event, now)))
            return True
        # The device's OTA frames stop here: zigpy's own Ota cluster would answer them.
        return packet.cluster_id == aps.CLUSTER_OTA and packet.profile_id != 0

    def _ieee(self, packet: t.ZigbeePacket) -> t.EUI64:
        assert packet.src is not None
        return self.app.get_device(nwk=packet.src.address).ieee

    async def _feed(self, ieee: t.EUI64, server: ks.KeServer, packet: t.ZigbeePacket, step: Callable[[float], list[ks.Action]]) -> None:
        async with self._lock:
            pending = step(asyncio.get_running_loop().time())
            while pending:
                # The link key goes in before the answer that completes the exchange.
                pending.sort(key=lambda a: not isinstance(a, ks.Established))
                action, *pending = pending
                if isinstance(action, ks.Compute):
                    try:
                        event: ks.Event = ks.Computed(action.kind, action.ticket, await asyncio.to_thread(action.work))
                    except Exception as exc:
                        event = ks.ComputeFailed(action.kind, action.ticket, exc)
                    pending += server.handle(event, asyncio.get_running_loop().time())
                elif isinstance(action, ks.Send):
                    await self._send(packet, HUB_ENDPOINT, CLUSTER_KE, _zcl(action.tsn, action.command_id) + action.payload)
                elif isinstance(action, ks.SendDefaultResponse):
                    body = bytes([action.command_id, action.status])
                    await self._send(packet, HUB_ENDPOINT, CLUSTER_KE, _zcl(action.tsn, 0x0B, general=True) + body)
                elif isinstance(action, ks.Established):
                    await install_link_key(self.app, ieee, t.KeyData(action.key_data))
                    self.outcomes.append((ieee, action))
                elif isinstance(action, ks.Failed):
                    self.outcomes.append((ieee, action))
            self._changed.set()
            self._rearm(ieee, server, packet)

    def _rearm(self, ieee: t.EUI64, server: ks.KeServer, packet: t.ZigbeePacket) -> None:
        old = self._timers.pop(ieee, None)
        if old is not None:
            old.cancel()
        deadline = server.get_timer()
        if deadline is not None:
            self._timers[ieee] = asyncio.get_running_loop().call_at(
                deadline, lambda: self._spawn(self._feed(ieee, server, packet, server.handle_timer))
            )

    async def _send(self, request: t.ZigbeePacket, src_ep: int, cluster: int, data: bytes, *, profile: int = PROFILE_SE) -> None:
        assert request.src is not None
        await self.app.send_packet(
            t.ZigbeePacket(
                src=t.AddrModeAddress(addr_mode=t.AddrMode.NWK, address=t.NWK(0x0000)),
                src_ep=src_ep,
                dst=t.AddrModeAddress(addr_mode=t.AddrMode.NWK, address=request.src.address),
                dst_ep=request.src_ep,
                tsn=data[0] if profile == 0 else data[1],
                profile_id=profile,
                cluster_id=cluster,
                data=t.SerializableBytes(data),
                tx_options=t.TransmitOptions.ACK,
            )
        )

    async def send_ke(self, device: SimDevice, *, tsn: int, command_id: int, payload: bytes = b"") -> None:
        """A Key Establishment frame of the test's own, server -> client."""
        request = t.ZigbeePacket(src=t.AddrModeAddress(addr_mode=t.AddrMode.NWK, address=device.nwk), src_ep=1)
        await self._send(request, HUB_ENDPOINT, CLUSTER_KE, _zcl(tsn, command_id) + payload)

    async def wait(self, predicate: Callable[[Hub], bool], timeout: float = WAIT) -> None:
        async with asyncio.timeout(timeout):
            while not predicate(self):
                self._changed.clear()
                await self._changed.wait()

    def ota_uplinks(self, device: SimDevice) -> list[t.ZigbeePacket]:
        return [p for p in self.uplinks if p.cluster_id == aps.CLUSTER_OTA and p.src is not None and p.src.address == device.nwk]

    def close(self) -> None:
        for timer in self._timers.values():
            timer.cancel()
        for task in self._tasks:
            task.cancel()


@pytest.fixture
async def bench() -> AsyncIterator[Callable[..., Any]]:
    made: list[tuple[SimControllerApplication, Hub]] = []

    async def start(spec: SimDeviceSpec, config: ks.KeConfig, **hub_options: Any) -> tuple[SimControllerApplication, Hub, SimDevice]:
        app = SimControllerApplication.new_sim([spec])
        hub = Hub(app, config, **hub_options)  # before the network starts: the device joins at once
        made.append((app, hub))
        await app._load_db()
        await app.startup(auto_form=True)
        return app, hub, app.han.devices[spec.ieee]

    yield start
    for app, hub in made:
        hub.close()
        await app.shutdown()


def first_outcome(hub: Hub) -> ks.Established | ks.Failed:
    return hub.outcomes[0][1]


# -- the tests ----------------------------------------------------------------------------------


async def test_se_device_registers_then_queries_for_an_image_only_aps_secured(bench) -> None:
    app, hub, device = await bench(se_spec(1), hub_config(1))
    established = await device.wait_for_event("ke_established", timeout=WAIT)
    outcome = first_outcome(hub)
    assert isinstance(outcome, ks.Established) and outcome.suite.number == 1
    assert established.detail["suite"] == 1 and established.detail["seconds"] > 0
    # one link key on both sides of the air, and in the coordinator's table
    assert device.aps_link_key == outcome.key_data == app.han.link_key(DEVICE_IEEE)
    assert device.events("ke_server")[0].detail["endpoint"] == HUB_ENDPOINT
    # its endpoint offers Key Establishment as a client cluster (zigpy's interview
    # reads its OTA attributes unsecured, which it now drops: no waiting for that)
    assert CLUSTER_KE in device.simple_descriptor().output_clusters

    # Only now does it ask for an image, and APS-secured.
    await hub.wait(lambda h: bool(h.ota_uplinks(device)))
    first = hub.ota_uplinks(device)[0]
    assert t.TransmitOptions.APS_Encryption in first.tx_options
    assert first.data.serialize()[2] == 0x01  # Query Next Image Request
    assert device.events("query")[0].time >= established.time
    # Before the key only zigpy's interview spoke OTA (a Read Attributes), and was dropped.
    early = [bytes.fromhex(e.detail["data"]) for e in device.events("ota_before_key")]
    assert all(d[0] & 0x03 == 0x00 and d[2] == 0x00 for d in early), early

    # An unsecured OTA frame to it is dropped; the same frame secured is answered.
    mark = len(device.history)
    await aps.send_ota_read(app, device, 0x51, secured=False)
    assert (await device.wait_for_event("aps_drop", timeout=WAIT, since=mark)).detail["reason"] == "not APS-secured"
    await aps.send_ota_read(app, device, 0x52, secured=True)
    await hub.wait(lambda h: any(p.data.serialize()[1:3] == bytes([0x52, 0x01]) for p in h.ota_uplinks(device)))
    reply = next(p for p in hub.ota_uplinks(device) if p.data.serialize()[1:3] == bytes([0x52, 0x01]))
    assert t.TransmitOptions.APS_Encryption in reply.tx_options
    assert not any(p.data.serialize()[1] == 0x51 for p in hub.ota_uplinks(device))

    # Rebooting with the key in flash: no key establishment, straight to OTA.
    mark = len(device.history)
    app.han.power_cycle(DEVICE_IEEE, off_time=0)
    await device.wait_for_event("ke_skipped", timeout=WAIT, since=mark)
    await device.wait_for_event("query", timeout=WAIT, since=mark)
    assert not [e for e in device.history[mark:] if e.kind in ("ke_discovery", "ke_initiate")]
    assert len(hub.outcomes) == 1


async def test_a_sleepy_se_device_registers_through_its_parents_indirect_queue(bench) -> None:
    # No fast polling after the join: it polls after each of its own frames and while
    # it registers, not every 600 s.
    spec = se_spec(1, sleepy_poll=600.0, fast_poll=0.1, join_fast_poll=0.0)
    app, hub, device = await bench(spec, hub_config(1))
    # At one poll per 600 s its three answers would take half an hour to arrive.
    await device.wait_for_event("ke_established", timeout=WAIT)
    assert device.aps_link_key is not None and device.aps_link_key == app.han.link_key(DEVICE_IEEE)
    delivered = [e for e in device.events("poll_delivered") if e.detail["cluster"] == CLUSTER_KE]
    assert len(delivered) == 3  # Initiate, Ephemeral Data and Confirm Key responses, each at a poll


async def test_ota_frames_before_the_key_are_dropped_and_a_silent_device_times_the_hub_out(bench) -> None:
    spec = se_spec(1, "silent", ke_timeout=5.0)
    app, hub, device = await bench(spec, hub_config(1, margin_s=1.0))
    await device.wait_for_event("ke_initiate", timeout=WAIT)
    await aps.send_ota_read(app, device, 0x61, secured=False)
    await aps.send_ota_read(app, device, 0x62, secured=True)  # with the TC link key it joined with

    def mine(d: SimDevice) -> set[int]:
        return {bytes.fromhex(e.detail["data"])[1] for e in d.events("ota_before_key")} & {0x61, 0x62}

    await device.wait_for(lambda d: mine(d) == {0x61, 0x62}, timeout=WAIT)
    assert device.client is None and [e for e in device.events("read_attributes") if e.detail["cluster"] == aps.CLUSTER_OTA] == []
    # A command the cluster does not define gets the Default Response the client asks for.
    mark = len(device.history)
    await hub.send_ke(device, tsn=0x63, command_id=0x07)
    refused = await device.wait_for_event("default_response", timeout=WAIT, since=mark)
    assert refused.detail == {"cluster": CLUSTER_KE, "command_id": 0x07, "status": "UNSUP_CLUSTER_COMMAND"}

    await hub.wait(lambda h: bool(h.outcomes))
    failed = first_outcome(hub)
    assert isinstance(failed, ks.Failed) and failed.status is None and failed.side == "hub" and "timeout" in failed.why
    gave_up = await device.wait_for_event("ke_failed", timeout=WAIT)
    assert "no key after 5 s" in gave_up.detail["reason"]
    await device.wait_for_event("power_off", timeout=WAIT)
    assert device.events("leave")[0].detail == {"rejoin": False}
    assert device.aps_link_key is None and app.han.link_key(DEVICE_IEEE) is None
    assert hub.ota_uplinks(device) == []


@pytest.mark.parametrize(
    ("fault", "status"),
    [
        ("unknown-issuer", KeStatus.UNKNOWN_ISSUER),
        ("bad-certificate", KeStatus.INVALID_CERTIFICATE),
        ("bad-mac", KeStatus.BAD_KEY_CONFIRM),
    ],
)
async def test_each_cbke_fault_ends_in_the_hubs_status_and_the_device_leaving(bench, fault: str, status: int) -> None:
    app, hub, device = await bench(se_spec(1, fault), hub_config(1))
    failed = await device.wait_for_event("ke_failed", timeout=WAIT)
    await device.wait_for_event("power_off", timeout=WAIT)
    assert "after 2 attempts" in failed.detail["reason"]
    hub_side = [o for _, o in hub.outcomes]
    assert len(hub_side) == 2 and all(isinstance(o, ks.Failed) and (o.status, o.side) == (status, "hub") for o in hub_side)
    assert [e.detail["status"] for e in device.events("ke_terminate_received")] == [status.name] * 2
    assert device.aps_link_key is None and app.han.link_key(DEVICE_IEEE) is None
    assert device.events("leave") and hub.ota_uplinks(device) == [] and device.events("query") == []


async def test_a_device_with_no_key_establishment_server_leaves(bench) -> None:
    app, hub, device = await bench(se_spec(1, ke_server_wait=0.5), hub_config(1), answer_match=False)
    none = await device.wait_for_event("ke_no_server", timeout=WAIT)
    await device.wait_for_event("power_off", timeout=WAIT)
    # Three requests, and zigpy answered them with an empty list: not a server.
    assert len(device.events("ke_discovery")) == none.detail["requests"] == 3
    assert device.events("ke_discovery_empty") and none.detail["empty_answers"] >= 1
    assert device.events("ke_initiate") == [] and hub.outcomes == [] and device.events("leave")


async def test_a_failure_default_response_to_its_requests_ends_each_attempt(bench) -> None:
    app, hub, device = await bench(se_spec(1), hub_config(1), refuse_ke=True)
    failed = await device.wait_for_event("ke_failed", timeout=WAIT)
    await device.wait_for_event("power_off", timeout=WAIT)
    refused = device.events("ke_refused")
    assert [(e.detail["command_id"], e.detail["status"]) for e in refused] == [(0x00, 0xC3)] * 2
    assert "status 0xC3" in failed.detail["reason"] and device.aps_link_key is None


async def test_suite_2_off_the_event_loop(bench, monkeypatch: pytest.MonkeyPatch) -> None:
    """The hub and the device each spend about 0.5 s per step of suite 2 in the same
    process: every step of the device's client runs on a worker thread, never on the
    event loop they share (the loop's lateness is the benchmark's to measure, not a
    timed assertion here)."""
    from radios.sim import se_join

    loop_thread = threading.get_ident()
    threads: list[int] = []
    call = se_join.SeJoin._call

    def spy(client: Any, item: Any, now: float) -> list[Any]:
        threads.append(threading.get_ident())
        return call(client, item, now)

    monkeypatch.setattr(se_join.SeJoin, "_call", staticmethod(spy))
    app, hub, device = await bench(se_spec(2), hub_config(2))
    established = await device.wait_for_event("ke_established", timeout=WAIT)
    outcome = first_outcome(hub)
    assert isinstance(outcome, ks.Established) and outcome.suite.number == 2 == established.detail["suite"]
    assert device.aps_link_key == outcome.key_data == app.han.link_key(DEVICE_IEEE)
    # start, Initiate Response, Ephemeral Data Response, Confirm Key Response at least
    assert len(threads) >= 4 and loop_thread not in threads
