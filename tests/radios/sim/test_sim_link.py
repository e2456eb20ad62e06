"""Link model arithmetic (link.py) and how SimHan spends it on the shared channel."""

from __future__ import annotations

import asyncio
import random

import pytest
import zigpy.types as t

from radios.sim.han import SimHan
from radios.sim.link import (
    ZCL_BLOCK_REQUEST_LEN,
    ZCL_BLOCK_RESPONSE_OVERHEAD,
    ZCL_QUERY_REQUEST_LEN,
    ZCL_QUERY_RESPONSE_LEN,
    ZCL_UPGRADE_END_REQUEST_LEN,
    ZCL_UPGRADE_END_RESPONSE_LEN,
    Channel,
    LinkModel,
)
from radios.sim.spec import SimDeviceSpec

R = LinkModel.realistic()


def test_air_time_of_a_full_frame() -> None:
    assert R.frame_air_time(127) == pytest.approx(4.256e-3)  # (127 + 6) bytes * 32 us
    assert R.frame_air_time(5) == pytest.approx(352e-6)  # a MAC ack: 11 bytes on air


def test_frame_overheads_and_fragments() -> None:
    assert R.data_overhead == 45 and R.max_aps_payload == 82
    assert R.data_psdus(17 + 64) == [126]
    assert R.data_psdus(82) == [127]
    assert R.data_psdus(83) == [127, 46]
    assert R.data_psdus(200) == [127, 127, 81]


def test_exchange_backoff_uart_flash() -> None:
    assert R.average_backoff == pytest.approx(3.5 * 320e-6)  # (2^3 - 1) / 2 units
    assert R.exchange_busy_time(127) == pytest.approx(4.256e-3 + 192e-6 + 352e-6)
    assert R.mac_exchange_time(127) == pytest.approx(1.12e-3 + 128e-6 + 4.256e-3 + 192e-6 + 352e-6)
    assert R.uart_time(70) == pytest.approx((70 + 30) * 10 / 115200)
    assert LinkModel.realistic(uart_baud=None).uart_time(70) == 0.0
    assert R.flash_time(64) == pytest.approx(3e-3)
    assert R.poll_time() == pytest.approx(R.mac_exchange_time(12))
    assert R.persistence == 7.68


def test_downlink_and_uplink_compose_the_parts() -> None:
    payload = ZCL_BLOCK_RESPONSE_OVERHEAD + 64
    air = R.mac_exchange_time(payload + 45) + R.mac_exchange_time(45)
    assert R.unicast_air_time(payload) == pytest.approx(air)
    assert R.downlink_time(payload) == pytest.approx(R.uart_time(payload) + air + R.uart_time(0))
    assert R.uplink_time(ZCL_BLOCK_REQUEST_LEN) == pytest.approx(
        R.mac_exchange_time(ZCL_BLOCK_REQUEST_LEN + 45) + R.mac_exchange_time(45) + R.uart_time(ZCL_BLOCK_REQUEST_LEN)
    )


def test_command_sizes() -> None:
    assert (ZCL_QUERY_REQUEST_LEN, ZCL_QUERY_RESPONSE_LEN) == (14, 16)
    assert (ZCL_BLOCK_REQUEST_LEN, ZCL_BLOCK_RESPONSE_OVERHEAD) == (17, 17)
    assert (ZCL_UPGRADE_END_REQUEST_LEN, ZCL_UPGRADE_END_RESPONSE_LEN) == (12, 19)


def test_instant_is_zero_and_scale_scales() -> None:
    i = LinkModel.instant()
    assert i.is_instant
    assert i.frame_air_time(127) == i.downlink_time(81) == i.uplink_time(17) == i.flash_time(64) == 0.0
    assert i.lower_bound_seconds(10_000, 64, devices=50) == 0.0
    assert i.persistence == 7.68  # a timeout, not a delay
    assert LinkModel.instant(indirect_persistence=0.2).persistence == 0.2
    half = LinkModel.realistic(scale=0.5)
    assert half.frame_air_time(127) == pytest.approx(R.frame_air_time(127) / 2)
    assert half.downlink_time(81) == pytest.approx(R.downlink_time(81) / 2)
    assert half.persistence == pytest.approx(3.84)
    with pytest.raises(ValueError, match="scale"):
        LinkModel.realistic(scale=0)


def test_lower_bound_by_hand() -> None:
    size, block = 300, 64
    per_block = [64, 64, 64, 64, 44]
    want = R.uplink_time(14) + R.downlink_time(16)
    for b in per_block:
        want += R.uplink_time(17) + R.downlink_time(17 + b) + R.flash_time(b)
    want += R.uplink_time(12) + R.downlink_time(19)
    assert R.lower_bound_seconds(size, block) == pytest.approx(want)
    # A long MinimumBlockPeriod dominates each block.
    assert R.lower_bound_seconds(size, block, min_block_period_ms=1000, include_query=False, include_upgrade_end=False) == (
        pytest.approx(5 * 1.0)
    )
    # Many devices: the shared channel bounds it, not one device's chain.
    one = R.lower_bound_seconds(200_000, 64)
    fifty = R.lower_bound_seconds(200_000, 64, devices=50)
    assert fifty > 10 * one
    assert R.lower_bound_seconds(200_000, 64, page_size=1024, response_spacing_ms=0) < one


def test_channel_serialises_bookings() -> None:
    ch = Channel()
    assert ch.reserve(1.0, 0.5) == 1.0
    assert ch.reserve(1.2, 0.5) == 1.5  # busy until 1.5
    assert ch.reserve(5.0, 0.1) == 5.0
    assert ch.busy_until == pytest.approx(5.1) and ch.busy_total == pytest.approx(1.1)


def test_mac_retries_and_loss_are_seeded() -> None:
    def run(seed: int) -> list[tuple[bool, int]]:
        rng = random.Random(seed)
        return [(a.delivered, a.attempts) for a in (R.mac_transmit(Channel(), 0.0, 60, 0.5, rng) for _ in range(200))]

    first = run(7)
    assert first == run(7)
    attempts = [n for _, n in first]
    assert set(attempts) <= {1, 2, 3, 4}
    assert 3 in attempts or 4 in attempts  # retried
    failures = sum(1 for ok, _ in first if not ok)
    assert 0 < failures < 40  # p = 0.5^4 = 6 %
    assert all(n == 4 for ok, n in first if not ok)
    # No loss: one attempt, booked on the channel for frame + turnaround + ack.
    ch = Channel()
    a = R.mac_transmit(ch, 10.0, 127, 0.0, random.Random(1))
    assert a.delivered and a.attempts == 1
    assert ch.busy_total == pytest.approx(R.exchange_busy_time(127))
    assert a.end >= 10.0 + 128e-6 + R.exchange_busy_time(127)


async def test_devices_contend_for_one_channel() -> None:
    specs = [
        SimDeviceSpec(kind="hcalcs", ieee=t.EUI64([i, 0, 0, 0, 0, 0, 0x11, 0x22]), query_delay=1000)
        for i in range(1, 21)
    ]
    link = LinkModel.realistic(uart_baud=None)
    han = SimHan(specs, link)
    han.attach(lambda p: None)
    await han.start()
    await asyncio.sleep(0.05)  # the announcements
    loop = asyncio.get_running_loop()
    start = loop.time()
    busy_before = han.channel.busy_total
    packets = []
    for dev in han.devices.values():
        data = b"\x01" + dev.nwk.serialize()
        packets.append(
            t.ZigbeePacket(
                src=t.AddrModeAddress(addr_mode=t.AddrMode.NWK, address=0x0000), src_ep=0,
                dst=t.AddrModeAddress(addr_mode=t.AddrMode.NWK, address=dev.nwk), dst_ep=0,
                profile_id=0, cluster_id=0x0002, data=t.SerializableBytes(data),
            )
        )
    results = await asyncio.gather(*(han.send(p) for p in packets))
    elapsed = loop.time() - start
    assert all(r.ok for r in results)
    one = link.exchange_busy_time(len(packets[0].data.serialize()) + 45) + link.exchange_busy_time(45)
    # 20 simultaneous unicasts (plus the 20 Node_Desc_rsp they trigger) share the air:
    assert elapsed >= 20 * one
    assert han.channel.busy_total - busy_before >= 20 * one
    await han.stop()


def test_spec_link_key_picks_the_model_unless_one_is_given() -> None:
    a = SimDeviceSpec(kind="hcalcs", ieee=t.EUI64.convert("00:00:00:00:00:00:00:01"))
    b = SimDeviceSpec(kind="ppmid", ieee=t.EUI64.convert("00:00:00:00:00:00:00:02"), link="realistic")
    assert SimHan([a]).link.is_instant
    assert SimHan([a, b]).link.timed and SimHan([a, b]).link.scale == 1.0
    assert SimHan([a, b], LinkModel.instant()).link.is_instant
