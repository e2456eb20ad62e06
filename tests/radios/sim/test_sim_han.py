"""`SimHan`: joins, ZDO in real bytes, addressing, loss, sleepy (indirect) delivery."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
import zigpy.types as t
import zigpy.zdo.types as zdo_t
from zigpy.zcl import foundation

from radios.sim.han import DeliveryResult, SimHan
from radios.sim.link import LinkModel
from radios.sim.spec import SimDeviceSpec
from radios.sim.testing import HandCoordinator

H1 = t.EUI64.convert("00:11:22:33:44:55:66:01")
P1 = t.EUI64.convert("00:11:22:33:44:55:66:02")
QUIET = {"query_delay": 1000.0}  # no OTA chatter in these tests


@pytest.fixture
async def han_factory() -> AsyncIterator[object]:
    hans: list[SimHan] = []

    async def make(*specs: SimDeviceSpec, link: LinkModel | None = None) -> tuple[SimHan, HandCoordinator]:
        han = SimHan(list(specs), link)
        hc = HandCoordinator(han)
        hans.append(han)
        await han.start()
        return han, hc

    yield make
    for han in hans:
        await han.stop()


def zdo_args(heard, command: zdo_t.ZDOCmd) -> list:
    data = heard.packet.data.serialize()
    args, rest = t.deserialize(data[1:], zdo_t.CLUSTERS[command][1])
    assert rest == b""
    return args


async def zdo(hc: HandCoordinator, nwk: int, command: zdo_t.ZDOCmd, *fields, tsn: int = 0x21, broadcast: int | None = None):
    mark = len(hc.heard)
    data = bytes([tsn]) + b"".join(f.serialize() for f in fields)
    result = await hc.send(nwk, command, data, profile=0, src_ep=0, dst_ep=0, broadcast=broadcast)
    return result, mark


async def test_start_joins_and_announces(han_factory) -> None:
    han, hc = await han_factory(
        SimDeviceSpec(kind="hcalcs", ieee=H1, nwk=0x1001, **QUIET),
        SimDeviceSpec(kind="ppmid", ieee=P1, sleepy_poll=1.0, **QUIET),
    )
    assert hc.joins[0] == (H1, 0x1001)
    assert han.device_by_nwk(0x1001) is han.devices[H1]
    assert han.device_by_nwk(0x4242) is None
    p1 = han.devices[P1]
    assert hc.joins[1] == (P1, p1.nwk) and p1.nwk not in (0x0000, 0x1001)
    for ieee, capability in ((H1, 0x8E), (P1, 0x80)):  # router+mains+rx-on / sleepy end device
        dev = han.devices[ieee]
        annce = await hc.expect(cluster=zdo_t.ZDOCmd.Device_annce, src=dev.nwk)
        p = annce.packet
        assert (p.src.addr_mode, p.dst.address, p.src_ep, p.dst_ep, p.profile_id) == (t.AddrMode.NWK, 0x0000, 0, 0, 0)
        nwk, ieee_, cap = zdo_args(annce, zdo_t.ZDOCmd.Device_annce)
        assert (nwk, ieee_, cap) == (dev.nwk, ieee, capability)
        assert p.lqi == 255 and p.rssi is not None


async def test_interview_requests_answered_in_real_bytes(han_factory) -> None:
    han, hc = await han_factory(SimDeviceSpec(kind="hcalcs", ieee=H1, **QUIET))
    dev = han.devices[H1]
    C = zdo_t.ZDOCmd
    res, mark = await zdo(hc, dev.nwk, C.Node_Desc_req, dev.nwk)
    assert res.ok
    status, nwk, desc = zdo_args(await hc.expect(cluster=C.Node_Desc_rsp, since=mark), C.Node_Desc_rsp)
    assert status == zdo_t.Status.SUCCESS and nwk == dev.nwk
    assert desc.is_router and desc.is_mains_powered and desc.manufacturer_code == 0x121D

    _, mark = await zdo(hc, dev.nwk, C.Active_EP_req, dev.nwk)
    # Endpoint 2: the Smart Energy endpoint of the Tunneling server (issue 13), beside HA's 1.
    assert zdo_args(await hc.expect(cluster=C.Active_EP_rsp, since=mark), C.Active_EP_rsp)[2] == [1, 2]

    _, mark = await zdo(hc, dev.nwk, C.Simple_Desc_req, dev.nwk, t.uint8_t(1))
    status, _, sd = zdo_args(await hc.expect(cluster=C.Simple_Desc_rsp, since=mark), C.Simple_Desc_rsp)
    assert status == zdo_t.Status.SUCCESS
    assert (sd.endpoint, sd.profile, sd.device_type) == (1, 0x0104, 0x0505)
    assert list(sd.input_clusters) == [0x0000, 0x0003] and list(sd.output_clusters) == [0x000A, 0x0019]

    _, mark = await zdo(hc, dev.nwk, C.Simple_Desc_req, dev.nwk, t.uint8_t(2))
    status, _, sd = zdo_args(await hc.expect(cluster=C.Simple_Desc_rsp, since=mark), C.Simple_Desc_rsp)
    assert (status, sd.profile, list(sd.input_clusters), list(sd.output_clusters)) == (zdo_t.Status.SUCCESS, 0x0109, [0x0704], [])

    _, mark = await zdo(hc, dev.nwk, C.Simple_Desc_req, dev.nwk, t.uint8_t(3))
    assert zdo_args(await hc.expect(cluster=C.Simple_Desc_rsp, since=mark), C.Simple_Desc_rsp)[0] == zdo_t.Status.NOT_ACTIVE

    _, mark = await zdo(hc, dev.nwk, C.IEEE_addr_req, dev.nwk, zdo_t.AddrRequestType.Single, t.uint8_t(0))
    status, ieee, nwk, *_ = zdo_args(await hc.expect(cluster=C.IEEE_addr_rsp, since=mark), C.IEEE_addr_rsp)
    assert (status, ieee, nwk) == (zdo_t.Status.SUCCESS, H1, dev.nwk)

    # NWK_addr_req is a broadcast by nature: only the owner answers.
    _, mark = await zdo(hc, 0, C.NWK_addr_req, H1, zdo_t.AddrRequestType.Single, t.uint8_t(0), broadcast=0xFFFD)
    status, ieee, nwk, *_ = zdo_args(await hc.expect(cluster=C.NWK_addr_rsp, since=mark), C.NWK_addr_rsp)
    assert (ieee, nwk) == (H1, dev.nwk)

    _, mark = await zdo(hc, dev.nwk, C.Mgmt_Lqi_req, t.uint8_t(0))
    status, neighbors = zdo_args(await hc.expect(cluster=C.Mgmt_Lqi_rsp, since=mark), C.Mgmt_Lqi_rsp)
    assert status == zdo_t.Status.SUCCESS and neighbors.NeighborTableList[0].nwk == 0x0000

    # Unsupported request: NOT_SUPPORTED in the matching response.
    _, mark = await zdo(hc, dev.nwk, C.Mgmt_Bind_req, t.uint8_t(0))
    rsp = await hc.expect(cluster=C.Mgmt_Bind_rsp, since=mark)
    assert rsp.packet.data.serialize() == bytes([0x21, zdo_t.Status.NOT_SUPPORTED])

    # Basic reads: model and manufacturer (what zigpy's interview asks).
    h = foundation.ZCLHeader.general(tsn=9, command_id=0x00)
    await hc.send(dev.nwk, 0x0000, h.serialize() + t.List[t.uint16_t]([4, 5, 0x4242]).serialize())
    rsp = await hc.expect(cluster=0x0000, command_id=0x01, general=True)
    records = rsp.command.status_records
    assert [r.value.value for r in records[:2]] == ["GFI", "HCALCS"]
    assert records[2].status == foundation.Status.UNSUPPORTED_ATTRIBUTE


async def test_addressing_ieee_unknown_group_broadcast(han_factory) -> None:
    han, hc = await han_factory(
        SimDeviceSpec(kind="hcalcs", ieee=H1, **QUIET),
        SimDeviceSpec(kind="ppmid", ieee=P1, **QUIET),
    )
    dev = han.devices[H1]
    pkt = hc.packet(0, 0x0002, b"\x05" + dev.nwk.serialize(), profile=0, src_ep=0, dst_ep=0)
    pkt = pkt.replace(dst=t.AddrModeAddress(addr_mode=t.AddrMode.IEEE, address=H1))
    mark = len(hc.heard)
    assert (await han.send(pkt)).ok
    await hc.expect(cluster=zdo_t.ZDOCmd.Node_Desc_rsp, src=dev.nwk, since=mark)

    unknown = await hc.send(0x7777, 0x0002, b"\x05\x77\x77", profile=0, src_ep=0, dst_ep=0)
    assert unknown == DeliveryResult(False, "unknown destination")
    group = pkt.replace(dst=t.AddrModeAddress(addr_mode=t.AddrMode.Group, address=0x0042))
    assert (await han.send(group)).ok

    # 0xFFFC (routers only): the HCALCS hears it, the PPMID (end device) does not.
    h = foundation.ZCLHeader.general(tsn=3, command_id=0x00)
    mark = len(hc.heard)
    res = await hc.send(0, 0x0000, h.serialize() + t.List[t.uint16_t]([5]).serialize(), broadcast=0xFFFC)
    assert res.ok
    await hc.expect(cluster=0x0000, command_id=0x01, general=True, since=mark)
    # Who hears a broadcast is decided when it is sent: the end device's own record says
    # it never got it (no waiting for an answer that should not come).
    assert not han.devices[P1].events("read_attributes")
    senders = {x.packet.src.address for x in hc.heard[mark:]}
    assert senders == {dev.nwk}


async def test_loss_with_mac_retries_surfaces_some_failures(han_factory) -> None:
    han, hc = await han_factory(SimDeviceSpec(kind="hcalcs", ieee=H1, loss=0.5, seed=3, **QUIET))
    dev = han.devices[H1]
    outcomes = []
    for i in range(200):
        res, _ = await zdo(hc, dev.nwk, zdo_t.ZDOCmd.Node_Desc_req, dev.nwk, tsn=i & 0xFF)
        outcomes.append(res)
    failures = [r for r in outcomes if not r.ok]
    # Per frame p(lost after 4 attempts) = 1/16, the data frame or its APS ack: ~12 %.
    assert 5 <= len(failures) <= 50
    assert {r.reason for r in failures} == {"no ack"}
    lost = len(dev.events("downlink_lost"))
    acks_lost = len(dev.events("aps_ack_lost"))
    assert lost + acks_lost == len(failures)
    # Frames whose APS ack was lost were delivered all the same (the duplicate case).
    await dev.wait_for(lambda d: d.radio.zdo_requests >= 200 - lost, 30)
    assert dev.radio.zdo_requests == 200 - lost
    assert dev.radio.uplink_lost > 0  # its answers are lost sometimes too


async def test_offline_device_gives_no_ack(han_factory) -> None:
    han, hc = await han_factory(SimDeviceSpec(kind="hcalcs", ieee=H1, reboot_time=0.2, **QUIET))
    dev = han.devices[H1]
    han.power_cycle(H1)
    res, _ = await zdo(hc, dev.nwk, zdo_t.ZDOCmd.Node_Desc_req, dev.nwk)
    assert res == DeliveryResult(False, "no ack")
    await dev.wait_for(lambda d: d.online, 1)
    assert dev.radio.boots == 2 and dev.radio.power_cycles == 1
    assert len(hc.joins) == 2


async def test_sleepy_device_receives_only_when_it_polls(han_factory) -> None:
    spec = SimDeviceSpec(kind="ppmid", ieee=P1, sleepy_poll=0.3, join_fast_poll=0, response_timeout=0.01, **QUIET)
    han, hc = await han_factory(spec)
    dev = han.devices[P1]
    # Polls held: the frame waits at the parent however long the test takes to look.
    dev.hold_polls()
    polls_before = dev.radio.polls
    mark = len(dev.history)
    task = asyncio.ensure_future(zdo(hc, dev.nwk, zdo_t.ZDOCmd.Node_Desc_req, dev.nwk))
    queued = await dev.wait_for_event("indirect_queued", 30, since=mark)
    assert not task.done() and dev.radio.zdo_requests == 0  # queued, not heard
    assert dev.radio.polls == polls_before
    dev.hold_polls(False)
    async with asyncio.timeout(30):
        res, hmark = await task
    assert res.ok
    assert dev.radio.polls > polls_before  # delivered because it polled...
    delivered = dev.events("poll_delivered")[-1]
    assert delivered.time >= queued.time and delivered.detail["waited"] > 0  # ...not before
    assert dev.radio.zdo_requests == 1
    rsp = await hc.expect(cluster=zdo_t.ZDOCmd.Node_Desc_rsp, since=hmark, timeout=30)
    status, _, desc = zdo_args(rsp, zdo_t.ZDOCmd.Node_Desc_rsp)
    assert desc.is_end_device and not desc.is_receiver_on_when_idle


async def test_indirect_frames_expire(han_factory) -> None:
    spec = SimDeviceSpec(kind="ppmid", ieee=P1, sleepy_poll=0.3, join_fast_poll=0, response_timeout=0.01, **QUIET)
    han, hc = await han_factory(spec, link=LinkModel.instant(indirect_persistence=0.2))
    dev = han.devices[P1]
    # No poll until the persistence time is over, whatever the machine's load.
    dev.hold_polls()
    polls_before = dev.radio.polls
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    async with asyncio.timeout(30):
        res, _ = await zdo(hc, dev.nwk, zdo_t.ZDOCmd.Node_Desc_req, dev.nwk)
    assert (res.ok, res.reason) == (False, "indirect timeout")
    (queued,) = dev.events("indirect_queued")
    (expired,) = dev.events("indirect_timeout")
    assert expired.time - queued.time >= 0.2 - 1e-3 and loop.time() - t0 >= 0.2 - 1e-3  # not before
    assert dev.radio.polls == polls_before and not dev.events("poll_delivered")
    # A poll after expiry finds nothing: the frame was dropped, not kept for later.
    dev.hold_polls(False)
    await dev.wait_for(lambda d: d.radio.polls > polls_before, 30)
    assert not dev.events("poll_delivered")
    assert dev.radio.zdo_requests == 0  # it never heard it


async def test_uplink_before_attach_and_stop_fails_pending(han_factory) -> None:
    han = SimHan([SimDeviceSpec(kind="ppmid", ieee=P1, sleepy_poll=5.0, join_fast_poll=0, response_timeout=0.05, **QUIET)])
    await han.start()  # nobody attached: the announcement is dropped, nothing breaks
    dev = han.devices[P1]
    hc = HandCoordinator(han)
    dev.hold_polls()  # the frame stays queued until the stop, however slow the machine
    mark = len(dev.history)
    task = asyncio.ensure_future(hc.send(dev.nwk, 0x0002, b"\x01" + dev.nwk.serialize(), profile=0, src_ep=0, dst_ep=0))
    await dev.wait_for_event("indirect_queued", 30, since=mark)
    await han.stop()
    res = await task
    assert (res.ok, res.reason) == (False, "stopped")
    assert dev.state == "off"
