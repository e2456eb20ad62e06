"""APS security on the simulated air: the coordinator's key table (radios/sim/han.py),
the devices' side (radios/sim/device.py), and `radios.keys.install_link_key` through
the simulated radio."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import zigpy.types as t

import aps_test_support as aps
from radios.keys import LinkKeyError, install_link_key, radio_family
from radios.sim.app import start_sim_app
from radios.sim.han import WELL_KNOWN_TC_LINK_KEY, DeliveryResult, SimHan
from radios.sim.spec import parse_sim_device
from radios.sim.testing import HandCoordinator

KEY = bytes(range(16))


@pytest.fixture
async def hand() -> AsyncIterator[tuple[SimHan, HandCoordinator]]:
    han = SimHan(aps.device_specs())
    hc = HandCoordinator(han)
    await han.start()
    yield han, hc
    await han.stop()


def read(hc: HandCoordinator, nwk: int, tsn: int, *, secured: bool) -> t.ZigbeePacket:
    packet = hc.packet(nwk, aps.CLUSTER_OTA, aps.read_ota_attributes(tsn))
    if secured:
        packet = packet.replace(tx_options=t.TransmitOptions.APS_Encryption)
    return packet


async def test_secured_downlink_uses_the_table_key_else_the_tc_link_key(hand) -> None:
    han, hc = hand
    a, b = han.devices[aps.A_IEEE], han.devices[aps.B_IEEE]
    seen: list[tuple[t.EUI64, bytes | None]] = []
    for device in (a, b):
        deliver = device.deliver

        def spy(packet, *, broadcast=False, aps_key=None, _d=device, _deliver=deliver):
            seen.append((_d.ieee, aps_key))
            _deliver(packet, broadcast=broadcast, aps_key=aps_key)

        device.deliver = spy  # type: ignore[method-assign]
    han.install_link_key(aps.A_IEEE, KEY)
    a.aps_link_key = KEY
    assert (await han.send(read(hc, a.nwk, 1, secured=True))).ok
    assert (await han.send(read(hc, b.nwk, 2, secured=True))).ok
    assert (await han.send(read(hc, b.nwk, 3, secured=False))).ok
    await a.wait_for(lambda d: len(d.events("read_attributes")) == 1, timeout=5)
    await b.wait_for(lambda d: len(d.events("read_attributes")) == 2, timeout=5)
    assert seen == [(aps.A_IEEE, KEY), (aps.B_IEEE, WELL_KNOWN_TC_LINK_KEY), (aps.B_IEEE, None)]


async def test_device_with_its_own_key_drops_tc_key_and_unsecured_ota(hand) -> None:
    han, hc = hand
    a = han.devices[aps.A_IEEE]
    a.aps_link_key = KEY  # but the coordinator has no entry: it secures with its TC link key
    mark = len(a.history)
    # it cannot unsecure the frame, so it sends no APS ack
    assert await han.send(read(hc, a.nwk, 1, secured=True)) == DeliveryResult(False, "no aps ack")
    assert (await a.wait_for_event("aps_drop", timeout=5, since=mark)).detail["reason"] == "secured with another key"
    mark = len(a.history)
    # an unsecured frame is acked (APS security is fine), then refused by the device's policy
    assert (await han.send(read(hc, a.nwk, 2, secured=False))).ok
    assert (await a.wait_for_event("aps_drop", timeout=5, since=mark)).detail["reason"] == "not APS-secured"
    # Basic is not a secured cluster: an unsecured read there is answered
    assert not a.aps_required(0x0000) and a.aps_required(0x0019) and a.aps_required(0x0704)
    assert a.radio.aps_drops == 2 and not a.events("read_attributes")


async def test_device_without_a_key_takes_unsecured_and_tc_secured_frames(hand) -> None:
    han, hc = hand
    b = han.devices[aps.B_IEEE]
    assert b.aps_link_key is None and not b.aps_required(0x0019)
    for tsn, secured in ((1, False), (2, True)):
        mark = len(hc.heard)
        await han.send(read(hc, b.nwk, tsn, secured=secured))
        reply = await hc.expect(cluster=aps.CLUSTER_OTA, src=b.nwk, since=mark)
        # its answer goes unsecured: it holds no link key of its own
        assert reply.packet.tx_options == t.TransmitOptions.NONE and reply.hdr.tsn == tsn
    assert b.events("aps_drop") == [] and b.radio.aps_secured_received == 1


async def test_secured_uplink_passes_with_the_same_key_and_fails_the_mic_otherwise(hand) -> None:
    han, hc = hand
    a = han.devices[aps.A_IEEE]
    a.aps_link_key = KEY
    han.install_link_key(aps.A_IEEE, KEY)
    mark = len(hc.heard)
    await han.send(read(hc, a.nwk, 7, secured=True))
    reply = await hc.expect(cluster=aps.CLUSTER_OTA, src=a.nwk, since=mark)
    assert t.TransmitOptions.APS_Encryption in reply.packet.tx_options and a.radio.aps_secured_sent == 1

    # The coordinator's entry changes (a key establishment the device missed): the
    # device's own secured report (as it sends after an upgrade) fails the MIC check.
    han.install_link_key(aps.A_IEEE, bytes(16))
    mark_dev, mark = len(a.history), len(hc.heard)
    a._send_report_version()
    await a.wait_for_event("uplink_aps_rejected", timeout=5, since=mark_dev)
    assert han.aps_mic_failures == 1 and a.radio.aps_secured_sent == 2
    assert [h for h in hc.heard[mark:] if h.packet.cluster_id == aps.CLUSTER_OTA] == []
    # with the keys equal again, the same report reaches the coordinator, secured
    han.install_link_key(aps.A_IEEE, KEY)
    a._send_report_version()
    report = await hc.expect(cluster=aps.CLUSTER_OTA, src=a.nwk, since=mark)
    assert t.TransmitOptions.APS_Encryption in report.packet.tx_options and han.aps_mic_failures == 1


async def test_unsecured_frames_on_other_clusters_still_flow_for_a_keyed_device(hand) -> None:
    han, hc = hand
    a = han.devices[aps.A_IEEE]
    a.aps_link_key = KEY
    # Read Attributes on Basic (0x0000), client -> server: no APS security needed
    data = bytes([0x10, 0x05, 0x00]) + t.List[t.uint16_t]([0x0004]).serialize()
    mark = len(hc.heard)
    await han.send(hc.packet(a.nwk, 0x0000, data))
    reply = await hc.expect(cluster=0x0000, src=a.nwk, since=mark)
    assert reply.packet.tx_options == t.TransmitOptions.NONE and a.events("aps_drop") == []


async def test_explicit_cluster_rule_overrides_the_se_default(hand) -> None:
    han, hc = hand
    b = han.devices[aps.B_IEEE]
    b.aps_secured_clusters = frozenset({0x0019})  # insists although it holds no key
    mark = len(b.history)
    await han.send(read(hc, b.nwk, 1, secured=False))
    assert (await b.wait_for_event("aps_drop", timeout=5, since=mark)).detail["reason"] == "not APS-secured"


def test_key_table_refuses_a_short_key() -> None:
    han = SimHan(aps.device_specs())
    with pytest.raises(ValueError, match="16 bytes, not 15"):
        han.install_link_key(aps.A_IEEE, bytes(15))
    han.install_link_key(aps.A_IEEE, KEY)
    han.remove_link_key(aps.A_IEEE)
    assert han.link_key(aps.A_IEEE) is None


# -- through the simulated radio (zigpy app) ------------------------------------------


async def test_sim_app_install_link_key_then_secured_traffic_both_ways() -> None:
    app = await start_sim_app(aps.device_specs())
    try:
        assert radio_family(app) == "sim"
        # the air uses the network's own TC link key, as the app formed it
        assert app.han.tc_link_key == bytes(app.state.network_info.tc_link_key.key)
        await aps.two_keys_then_secured_traffic(app, app.han)
    finally:
        await app.shutdown()


async def test_install_link_key_refuses_an_unknown_radio() -> None:
    with pytest.raises(ValueError, match="no way to install an APS link key on a object"):
        await install_link_key(object(), aps.A_IEEE, t.KeyData(KEY))


def test_link_key_error_names_radio_device_and_status_but_not_the_key() -> None:
    err = LinkKeyError("ezsp", aps.A_IEEE, "the key table is full", "FAIL (0x01)")
    assert str(err) == (
        "ezsp: the coordinator did not take the APS link key for 00:db:12:34:56:78:aa:01:"
        " the key table is full (firmware status FAIL (0x01))"
    )
    assert (err.radio, err.ieee, err.status) == ("ezsp", aps.A_IEEE, "FAIL (0x01)")


async def test_sleepy_device_gets_the_key_its_queued_frame_was_secured_with() -> None:
    ppmid = t.EUI64.convert("00:db:12:34:56:78:aa:10")
    han = SimHan([parse_sim_device(f"ppmid:{ppmid}:sleepy_poll=0.2:{aps.QUIET}")])
    hc = HandCoordinator(han)
    await han.start()
    try:
        device = han.devices[ppmid]
        device.aps_link_key = KEY
        han.install_link_key(ppmid, KEY)
        mark = len(device.history)
        result = await han.send(read(hc, device.nwk, 5, secured=True))  # waits for a poll
        assert result.ok
        await device.wait_for_event("read_attributes", timeout=5, since=mark)
        assert device.radio.aps_secured_received == 1 and device.events("aps_drop") == []
        reply = await hc.expect(cluster=aps.CLUSTER_OTA, src=device.nwk)
        assert t.TransmitOptions.APS_Encryption in reply.packet.tx_options
    finally:
        await han.stop()
