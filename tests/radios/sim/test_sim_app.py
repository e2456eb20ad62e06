"""`SimControllerApplication`: zigpy over the simulated HAN, and zigpy's own OTA on it."""

from __future__ import annotations

import asyncio

import pytest
import zigpy.device
import zigpy.exceptions
import zigpy.types as t
from zigpy.ota import OtaImageWithMetadata
from zigpy.ota.image import parse_ota_image
from zigpy.ota.providers import BaseOtaImageMetadata
from zigpy.zcl import foundation
from zigpy.zcl.clusters.general import Ota

from radios.sim.app import SimControllerApplication, SimNvram, SimStartError, start_sim_app
from radios.sim.link import LinkModel
from radios.sim.spec import PROFILE_SE, SimDeviceSpec
from radios.sim.testing import build_ota_image

H1 = t.EUI64.convert("00:11:22:33:44:55:66:01")
P1 = t.EUI64.convert("00:11:22:33:44:55:66:02")
P2 = t.EUI64.convert("00:11:22:33:44:55:66:03")
FAST = {"query_delay": 100.0, "notify_delay": 0.0, "response_timeout": 0.5, "reboot_time": 0.05}


async def test_devices_join_and_zigpy_interviews_them() -> None:
    specs = [
        SimDeviceSpec(kind="hcalcs", ieee=H1, **FAST),
        SimDeviceSpec(kind="ppmid", ieee=P1, **FAST),
        SimDeviceSpec(kind="ppmid", ieee=P2, sleepy_poll=2.0, fast_poll=0.02, **FAST),
    ]
    app = await start_sim_app(specs, timeout=10)
    try:
        assert app.state.node_info.nwk == 0x0000
        assert app.state.node_info.ieee == app.han.coordinator_ieee
        assert 11 <= app.state.network_info.channel <= 26
        assert app.state.network_info.pan_id not in (0x0000, 0xFFFE)
        assert app.state.network_info.network_key.key != t.KeyData([0] * 16)
        coordinator = app._device
        assert coordinator.is_initialized and coordinator.node_desc.is_coordinator
        for spec in specs:
            dev = app.devices[spec.ieee]
            sim = app.han.devices[spec.ieee]
            assert dev.is_initialized
            assert dev.nwk == sim.nwk
            assert dev.model == spec.model and dev.manufacturer == "GFI"
            assert dev.node_desc.is_router == spec.is_router
            assert dev.node_desc.is_receiver_on_when_idle == (not spec.is_sleepy)
            ep = dev.endpoints[1]
            assert ep.profile_id == 0x0104
            assert set(ep.in_clusters) == {0x0000, 0x0003} and set(ep.out_clusters) == {0x000A, 0x0019}
            # The interview read CurrentFileVersion from the OTA client.
            assert ep.out_clusters[0x0019].get("current_file_version") == 1
        # Consistent network info on reload, and the devices as children / addresses.
        await app.load_network_info(load_devices=True)
        assert app.state.network_info.nwk_addresses[H1] == app.han.devices[H1].nwk
        assert set(app.state.network_info.children) == {P1, P2}
    finally:
        await app.shutdown()


async def test_requests_through_zigpy_and_delivery_errors() -> None:
    specs = [SimDeviceSpec(kind="hcalcs", ieee=H1, **FAST)]
    app = await start_sim_app(specs, timeout=5)
    try:
        dev = app.devices[H1]
        ota = dev.endpoints[1].out_clusters[Ota.cluster_id]
        success, failure = await ota.read_attributes(["image_upgrade_status", "upgrade_timeout_policy", "image_stamp"])
        assert success == {"image_upgrade_status": Ota.ImageUpgradeStatus.Normal, "upgrade_timeout_policy": 0}
        assert failure == {"image_stamp": foundation.Status.UNSUPPORTED_ATTRIBUTE}
        # The device is switched off: zigpy gets the radio's DeliveryError, with a status.
        app.han.power_cycle(H1, off_time=5.0)
        with pytest.raises(zigpy.exceptions.DeliveryError) as info:
            await dev.zdo.Node_Desc_req(dev.nwk, retries=0)
        assert info.value.status == t.MACStatus.MAC_NO_ACK
        assert "no ack" in str(info.value)
    finally:
        await app.shutdown()


async def test_zigpy_update_firmware_end_to_end(monkeypatch: pytest.MonkeyPatch) -> None:
    """zigpy's own OTA (what ZHA uses) against a simulated HCALCS on this radio."""
    monkeypatch.setattr(zigpy.device, "AFTER_OTA_ATTR_READ_DELAY", 0.2)
    spec = SimDeviceSpec(kind="hcalcs", ieee=H1, **FAST)
    app = await start_sim_app([spec], timeout=5)
    try:
        dev = app.devices[H1]
        sim = app.han.devices[H1]
        # The interview's Image Notify made the device ask once; zigpy said no image.
        await sim.wait_for(lambda d: d.events("query_response") and d.state == "idle", 3)
        data = build_ota_image(spec.manufacturer_code, spec.image_type, 0x00000002, payload=bytes(range(256)) * 3)
        firmware, rest = parse_ota_image(data)
        assert rest == b""
        image = OtaImageWithMetadata(
            metadata=BaseOtaImageMetadata(
                file_version=2, manufacturer_id=spec.manufacturer_code, image_type=spec.image_type
            ),
            firmware=firmware,
        )
        progress: list[tuple[int, int]] = []
        async with asyncio.timeout(15):
            result = await dev.update_firmware(image, progress_callback=lambda c, n, p: progress.append((c, n)))
        assert result == foundation.Status.SUCCESS
        assert sim.current_file_version == 2
        assert sim.counters.activations == 1 and sim.counters.self_activations == 0
        # zigpy caps blocks at 50 bytes; the device took them all.
        assert sim.counters.blocks_received == -(-len(data) // 50)
        assert progress[-1] == (len(data), len(data))
        ota = app.devices[H1].endpoints[1].out_clusters[Ota.cluster_id]
        assert ota.get("current_file_version") == 2
    finally:
        await app.shutdown()


async def test_restart_on_same_nvram_and_han_keeps_devices() -> None:
    from radios.sim.han import SimHan

    han = SimHan([SimDeviceSpec(kind="hcalcs", ieee=H1, **FAST)])
    nvram = SimNvram()
    app = await start_sim_app([], han=han, nvram=nvram, timeout=30)
    pan = app.state.network_info.pan_id
    # The interview ends with an Image Notify: the device's Query Next Image Request must
    # be answered by this app, or it reaches app2 and makes zigpy learn the device early.
    sim = han.devices[H1]
    await sim.wait_for(lambda d: d.events("query_response") and d.state == "idle", 30)
    await app.shutdown()
    assert han.devices[H1].online  # the app did not own the han: devices keep running
    app2 = SimControllerApplication.new_sim([], han=han, nvram=nvram)
    await app2.startup(auto_form=False)
    try:
        assert app2.state.network_info.pan_id == pan
        assert H1 not in app2.devices  # no database: zigpy does not know it yet...
        han.power_cycle(H1, off_time=0.01)  # ...until it reboots and announces itself
        await app2.wait_initialized(timeout=30)
        assert app2.devices[H1].is_initialized
    finally:
        await app2.shutdown()
        await han.stop()


async def test_not_formed_without_auto_form() -> None:
    app = SimControllerApplication.new_sim([SimDeviceSpec(kind="hcalcs", ieee=H1, **FAST)])
    with pytest.raises(zigpy.exceptions.NetworkNotFormed):
        await app.startup(auto_form=False)


async def test_start_error_names_the_device() -> None:
    # Smart Energy profile: zigpy 2.4 drops ZCL frames that are not HA/ZLL, so its
    # interview cannot read Basic and the device never initialises.
    spec = SimDeviceSpec(kind="ppmid", ieee=P1, profile=PROFILE_SE, **FAST)
    with pytest.raises(SimStartError) as info:
        await start_sim_app([spec], timeout=0.5)
    message = str(info.value)
    assert str(P1) in message and "ppmid" in message and "node_desc=yes" in message
    assert "model=None" in message and "interview still running" in message


async def test_from_zigpy_config_with_sim_table() -> None:
    config = {
        "device": {"path": "sim://"},
        "network": {"channel": 20},
        "ota": {"enabled": False},
        "topology_scan_enabled": False,
        "sim": {
            "devices": [{"kind": "hcalcs", "ieee": "00:11:22:33:44:55:66:01", "query_delay": 100}],
            "link": {"mode": "realistic", "scale": 0.01},
            "coordinator_ieee": "00:0d:6f:ff:fe:00:00:01",
        },
    }
    app = await SimControllerApplication.new(config, auto_form=True)
    try:
        await app.wait_initialized(timeout=5)
        assert app.state.node_info.ieee == t.EUI64.convert("00:0d:6f:ff:fe:00:00:01")
        assert app.state.network_info.channel == 20
        assert app.han.link.timed and app.han.link.scale == 0.01
        assert app.devices[H1].is_initialized
    finally:
        await app.shutdown()
    # Not a sim path: refused at connect (so zigpy's probe says no).
    assert await SimControllerApplication.probe({"path": "/dev/ttyUSB0"}) is False


async def test_realistic_link_interview_takes_air_time() -> None:
    link = LinkModel.realistic()
    app = await start_sim_app([SimDeviceSpec(kind="hcalcs", ieee=H1, **FAST)], link, timeout=10)
    try:
        # Each interview request and answer crossed the UART and the air.
        assert app.han.channel.busy_total > 10 * link.exchange_busy_time(45)
        assert app.han.uart_tx.busy_total > 0 and app.han.uart_rx.busy_total > 0
    finally:
        await app.shutdown()
