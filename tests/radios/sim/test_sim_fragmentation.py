"""APS fragmentation on the simulated radio (radios/sim/aps_fragments.py, han.py): the
extended header's bytes, windows and acks, lost blocks resent, both directions, and a
1,400-byte GBCS message over the tunnel both ways."""

from __future__ import annotations

import asyncio
import math
import struct

import pytest
import zigpy.types as t

from gateway.se.security import SecurityRegistry
from gateway.tunnel.service import TunnelService
from radios.sim import aps_fragments as af
from radios.sim.app import start_sim_app
from radios.sim.han import DeliveryResult, SimHan
from radios.sim.link import LinkModel
from radios.sim.spec import parse_sim_device
from radios.sim.testing import HandCoordinator

HCALCS = "00:db:12:34:56:78:90:a3"
IEEE = t.EUI64.convert(HCALCS)
BIG = b"\xdd" + bytes((i * 7) & 0xFF for i in range(1399))  # 1,400 bytes


# -- the fragments' bytes ------------------------------------------------------------


def test_fragments_carry_the_extended_header_and_reassemble() -> None:
    fragments = af.split(BIG, 80)
    assert len(fragments) == 18
    first, second, last = fragments[0].to_bytes(), fragments[1].to_bytes(), fragments[-1].to_bytes()
    assert first[:2] == bytes([0b01, 18]) and first[2:] == BIG[:80]  # first: the block count
    assert second[:2] == bytes([0b10, 1]) and second[2:] == BIG[80:160]  # later: its number
    assert last[:2] == bytes([0b10, 17]) and len(last) == 2 + 1400 - 17 * 80
    rx = af.Reassembly()
    for fragment in reversed(fragments):
        assert rx.complete() is None
        rx.receive(fragment.to_bytes())
    assert rx.complete() == BIG


def test_the_ack_bitfield_names_the_blocks_of_the_window() -> None:
    rx = af.Reassembly()
    fragments = af.split(BIG, 80)
    for n in (4, 6, 7):
        rx.receive(fragments[n].to_bytes())
    ack = rx.ack(4, 4)
    assert ack.to_bytes() == bytes([0b10, 4, 0b1101])
    assert af.FragmentAck.parse(ack.to_bytes()).blocks() == {4, 6, 7}
    assert rx.ack(0, 1).to_bytes() == bytes([0b01, 0, 0])


@pytest.mark.parametrize(
    ("frame", "message"),
    [
        (b"\x01", "APS fragment: 1 bytes, the extended header at offset 0 needs 2"),
        (b"\x01\x00", "APS fragment: block number (the block count) 0 at offset 1"),
        (b"\x02\x00", "APS fragment: block number 0 at offset 1 in a later fragment"),
        (b"\x00\x05", "APS fragment: extended frame control 0x00 at offset 0 names no fragment"),
    ],
)
def test_unreadable_fragments_are_refused(frame: bytes, message: str) -> None:
    with pytest.raises(af.FragmentError) as err:
        af.Reassembly().receive(frame)
    assert str(err.value) == message


def test_split_limits() -> None:
    assert af.split(b"", 10) == [af.Fragment(0, 1, b"")]
    with pytest.raises(ValueError, match="more than 255"):
        af.split(bytes(256 * 2), 2)
    with pytest.raises(ValueError, match="window"):
        LinkModel.instant(aps_window=9)


def test_frame_capacity_and_part_sizes() -> None:
    link = LinkModel.instant()
    assert (link.frame_capacity(False), link.frame_capacity(True)) == (82, 73)
    assert (link.fragment_part_size(False), link.fragment_part_size(True)) == (80, 71)
    assert link.fragment_psdu(80, False) == 127 and link.fragment_psdu(71, True) == 127


# -- on the air ----------------------------------------------------------------------


async def air(**link: object) -> tuple[SimHan, HandCoordinator]:
    spec = parse_sim_device(f"hcalcs:{HCALCS}:query_delay=3600" + (":loss=0.7:seed=7" if link.pop("lossy", False) else ""))
    han = SimHan([spec], LinkModel.instant(**link))  # type: ignore[arg-type]
    hc = HandCoordinator(han)
    await han.start()
    return han, hc


def basic_read(tsn: int, padding: int) -> bytes:
    # Read Attributes of Basic with the attribute list padded out: a long ZCL frame
    # whose answer is checkable (every id answered, unsupported ones included).
    return bytes([0x00, tsn, 0x00]) + struct.pack(f"<{padding}H", *range(padding))


@pytest.mark.parametrize("window", [1, 4, 8])
async def test_a_long_downlink_is_fragmented_and_reassembled(window: int) -> None:
    han, hc = await air(aps_window=window)
    try:
        device = han.devices[IEEE]
        data = basic_read(5, 300)  # 603 bytes
        assert await hc.send(device.nwk, 0x0000, data) == DeliveryResult(True)
        done = await device.wait_for_event("aps_fragmented", timeout=5)
        assert done.detail == {"downlink": True, "blocks": math.ceil(603 / 80), "length": 603, "delivered": True}
        read = await device.wait_for_event("read_attributes", timeout=5)
        assert read.detail["ids"] == list(range(300))
        # and the answer (300 records, ~900 bytes) comes back up fragmented too
        heard = await hc.expect(cluster=0x0000, command_id=0x01, general=True, timeout=5)
        assert len(heard.payload) > 82
        up = [e for e in device.events("aps_fragmented") if not e.detail["downlink"]]
        assert up and up[0].detail["delivered"]
    finally:
        await han.stop()


async def test_lost_blocks_are_resent_and_the_message_still_arrives() -> None:
    han, hc = await air(aps_window=4, lossy=True)
    try:
        device = han.devices[IEEE]
        results = [await hc.send(device.nwk, 0x0000, basic_read(n, 300)) for n in range(1, 6)]
        assert any(r.ok for r in results)
        assert device.events("aps_fragment_retry")  # 70 % per attempt, 24 % per frame after MAC retries: windows resent
        delivered = [e for e in device.events("aps_fragmented") if e.detail["downlink"] and e.detail["delivered"]]
        await device.wait_for(lambda d: len(d.events("read_attributes")) == len(delivered), timeout=5)
    finally:
        await han.stop()


async def test_an_offline_device_gets_no_fragment() -> None:
    han, hc = await air()
    try:
        device = han.devices[IEEE]
        device.power_off()
        assert await hc.send(device.nwk, 0x0000, basic_read(1, 100)) == DeliveryResult(False, "no ack")
    finally:
        await han.stop()


async def test_a_long_broadcast_is_refused() -> None:
    han, hc = await air()
    try:
        result = await han.send(hc.packet(0, 0x0000, basic_read(1, 100), broadcast=0xFFFF))
        assert result == DeliveryResult(False, "message too long")
    finally:
        await han.stop()


async def test_an_aps_secured_long_frame_goes_in_71_byte_blocks() -> None:
    han, hc = await air()
    try:
        device = han.devices[IEEE]
        packet = hc.packet(device.nwk, 0x0000, basic_read(1, 100)).replace(tx_options=t.TransmitOptions.APS_Encryption)
        assert (await han.send(packet)).ok
        done = await device.wait_for_event("aps_fragmented", timeout=5)
        assert done.detail["blocks"] == math.ceil(203 / 71)
    finally:
        await han.stop()


# -- a 1,400-byte GBCS message over the tunnel, both ways ------------------------------


async def test_a_1400_byte_gbcs_message_crosses_the_tunnel_both_ways() -> None:
    app = await start_sim_app([parse_sim_device(f"hcalcs:{HCALCS}:query_delay=3600")], timeout=20)
    seen: list[tuple[str, bytes]] = []
    service = TunnelService(app, SecurityRegistry(), on_message=lambda d, _i, data: seen.append((d, data)))
    await service.start()
    try:
        device = app.han.devices[IEEE]
        answer = b"\xdf" + BIG[::-1][:1399]
        device.tunnel_handler = lambda data: [answer] if data == BIG else []
        reply = await service.request(IEEE, BIG, timeout=30)
        assert reply == answer and len(reply) == 1400
        assert seen == [("out", BIG), ("in", answer)]
        fragmented = {e.detail["downlink"]: e.detail for e in device.events("aps_fragmented") if e.detail["length"] > 1400}
        assert fragmented[True]["delivered"] and fragmented[False]["delivered"]
        assert fragmented[True]["blocks"] == math.ceil((3 + 2 + 1400) / 80)  # ZCL header, tunnel id, message
    finally:
        await service.close()
        await app.shutdown()
        await asyncio.sleep(0)
