"""radios/han_services.py: the hub's SE endpoint, Time server and install-code joining,
through the real zigpy-znp driver and the Z-Stack emulator (frames checked on the air)."""

from __future__ import annotations

import asyncio
import datetime as dt

import pytest
import zigpy.types as zt
from zigpy.zcl import foundation
from zigpy_znp.zigbee.application import ControllerApplication as ZnpApp

from radios.emulate.znp import running_znp_emulator
from radios.han_services import (
    HAN_ENDPOINT,
    SE_PROFILE,
    TimeServer,
    apply_han_config,
    han_zigpy_config,
    link_key_from_install_code,
    setup_han_services,
    zigbee_time,
)
from radios.select import open_app, zigpy_config
from radios.sim.spec import parse_sim_device

PPMID = zt.EUI64.convert("00:db:12:34:56:78:90:a1")
CLOCK = dt.datetime(2026, 3, 1, 12, 0, 5, tzinfo=dt.timezone.utc)
# The worked example of the Zigbee specification: install code + CRC, and its link key.
INSTALL_CODE = "83FED3407A939723A5C639B26916D505C3B5"
INSTALL_KEY = "66:b6:90:09:81:e1:ee:3c:a4:20:6b:6b:86:1c:02:bb"


def test_zigbee_time_and_install_code_key():
    assert zigbee_time(dt.datetime(2000, 1, 1, 0, 0, 10, tzinfo=dt.timezone.utc)) == 10
    with pytest.raises(ValueError):
        zigbee_time(dt.datetime(2026, 1, 1))
    assert str(link_key_from_install_code(INSTALL_CODE)) == INSTALL_KEY
    assert str(link_key_from_install_code("83:FE:D3:40 7A93-9723 A5C6 39B2 6916 D505 C3B5")) == INSTALL_KEY
    with pytest.raises(ValueError, match="CRC"):
        link_key_from_install_code(INSTALL_CODE[:-2] + "00")
    with pytest.raises(ValueError, match="not hex"):
        link_key_from_install_code("not an install code")


def test_config_merge_keeps_other_endpoints_and_znp_settings():
    base = {"additional_endpoints": [{"endpoint": 20, "profile": 0x0104, "device_type": 0, "device_version": 0, "input_clusters": [], "output_clusters": []}],
            "znp_config": {"tx_power": 5}}
    merged = apply_han_config(base, "znp")
    assert [e["endpoint"] for e in merged["additional_endpoints"]] == [20, HAN_ENDPOINT]
    assert merged["znp_config"] == {"tx_power": 5, "prefer_endpoint_1": False}
    assert "znp_config" not in han_zigpy_config("ezsp")
    assert han_zigpy_config()["additional_endpoints"][0]["input_clusters"] == [0x0000, 0x000A, 0x0019]


def test_time_response_frame():
    server = TimeServer(app=None, clock=lambda: CLOCK, last_set=CLOCK - dt.timedelta(seconds=5))
    hdr, payload = foundation.ZCLHeader.deserialize(server.response(0x33, [0x0000, 0x0001, 0x0007, 0x0099]))
    assert hdr.tsn == 0x33 and hdr.command_id == foundation.GeneralCommand.Read_Attributes_rsp
    assert hdr.direction == foundation.Direction.Server_to_Client and hdr.frame_control.disable_default_response
    rsp, _ = foundation.GENERAL_COMMANDS[foundation.GeneralCommand.Read_Attributes_rsp].schema.deserialize(payload)
    records = {r.attrid: r for r in rsp.status_records}
    assert records[0x0000].value.value == zigbee_time(CLOCK)
    assert records[0x0001].value.value == 0b1001  # Master | Superseding
    assert records[0x0007].value.value == zigbee_time(CLOCK)
    assert records[0x0099].status == foundation.Status.UNSUPPORTED_ATTRIBUTE


class AirSpy:
    """Every frame the coordinator puts on the simulated air (SimHan.send), for assertions."""

    def __init__(self, han) -> None:
        self.sent: list[zt.ZigbeePacket] = []
        self._send = han.send
        han.send = self._spy

    async def _spy(self, packet):
        self.sent.append(packet)
        return await self._send(packet)

    async def wait(self, cluster: int, timeout: float = 5.0) -> zt.ZigbeePacket:
        async with asyncio.timeout(timeout):
            while True:
                for packet in self.sent:
                    if packet.cluster_id == cluster:
                        return packet
                await asyncio.sleep(0.02)


async def _joined(app, ieee, timeout=15.0):
    async with asyncio.timeout(timeout):
        while ieee not in app.devices or not app.devices[ieee].is_initialized:
            await asyncio.sleep(0.05)


def read_time_from(sim) -> None:
    """The device asks the hub's SE endpoint for the time (as a GBCS device does after joining)."""
    sim._send_zcl(0x000A, general=True, command_id=foundation.GeneralCommand.Read_Attributes, direction=foundation.Direction.Client_to_Server,
                  payload=zt.List[zt.uint16_t]([0x0000, 0x0001]).serialize(), tsn=0x5A, dst_ep=HAN_ENDPOINT)


async def test_se_endpoint_from_config_time_answered_on_se_profile():
    spec = parse_sim_device(f"ppmid:{PPMID}:profile=se:query_delay=3600")
    async with running_znp_emulator([spec]) as (path, server):
        han = server.coordinator.han
        air = AirSpy(han)
        config = apply_han_config(zigpy_config("znp", path=path, baudrate=None, flow_control=None, database=None), "znp")
        app = await ZnpApp.new(config=config, auto_form=True, start_radio=True)
        try:
            # the firmware registered the SE endpoint at start-up, with our clusters
            ep = server.coordinator.endpoints[HAN_ENDPOINT]
            assert ep.profile == SE_PROFILE and sorted(ep.input_clusters) == [0x0000, 0x000A, 0x0019]
            services = await setup_han_services(app, clock=lambda: CLOCK)
            assert services.endpoint_status == "registered" and services.warnings == []
            # the stack describes it (Simple_Desc_req answered by the firmware; the firmware
            # answers devices' Match_Desc_req from the same registration)
            (status, _nwk, desc) = await app._device.zdo.Simple_Desc_req(0x0000, HAN_ENDPOINT)
            assert status == 0 and desc.profile == SE_PROFILE and desc.device_type == 0x0500
            assert list(desc.input_clusters) == [0x0000, 0x000A, 0x0019]

            sim = han.devices[PPMID]
            await sim.wait_for(lambda d: d.online, timeout=10)
            await _joined(app, PPMID)
            read_time_from(sim)
            packet = await air.wait(0x000A)
            # SE profile, from the SE endpoint, to the device's endpoint, same TSN
            assert (packet.profile_id, packet.src_ep, packet.dst_ep) == (SE_PROFILE, HAN_ENDPOINT, 1)
            hdr, payload = foundation.ZCLHeader.deserialize(packet.data.serialize())
            assert hdr.tsn == 0x5A and hdr.command_id == foundation.GeneralCommand.Read_Attributes_rsp
            rsp, _ = foundation.GENERAL_COMMANDS[foundation.GeneralCommand.Read_Attributes_rsp].schema.deserialize(payload)
            assert [(r.attrid, r.value.value) for r in rsp.status_records] == [(0x0000, zigbee_time(CLOCK)), (0x0001, 0b1001)]
            assert services.time_server.answered == 1
            services.close()
        finally:
            await app.shutdown()


async def test_endpoint_added_at_run_time_warns_about_endpoint_1_and_install_code_permit():
    spec = parse_sim_device(f"ppmid:{PPMID}:profile=se:query_delay=3600")
    async with running_znp_emulator([spec]) as (path, server):
        app = await open_app("znp", path=path, han_endpoint=False)  # no HAN config: zigpy-znp's defaults
        try:
            assert HAN_ENDPOINT not in server.coordinator.endpoints
            services = await setup_han_services(app)
            assert services.endpoint_status == "added"  # Z-Stack takes AF.Register at any time
            assert server.coordinator.endpoints[HAN_ENDPOINT].profile == SE_PROFILE
            assert HAN_ENDPOINT in app._device.endpoints and app._device.endpoints[HAN_ENDPOINT].profile_id == SE_PROFILE
            assert any("endpoint 1" in w for w in services.warnings)
            # ...and that warning is true: with prefer_endpoint_1 the answer leaves endpoint 1 (HA)
            air = AirSpy(server.coordinator.han)
            sim = server.coordinator.han.devices[PPMID]
            await _joined(app, PPMID)
            read_time_from(sim)
            packet = await air.wait(0x000A)
            assert (packet.profile_id, packet.src_ep) == (0x0104, 1)

            newcomer = zt.EUI64.convert("00:db:12:34:56:78:90:ff")
            # zigpy-znp holds the install-code-only window for time_s, then reverts it
            key = await services.permit(newcomer, INSTALL_CODE, time_s=1)
            assert str(key) == INSTALL_KEY
            assert server.coordinator.install_codes[newcomer] == key.serialize()
            assert server.coordinator.requests["AppConfig.BDBSetJoinUsesInstallCodeKey"] == 2
            assert server.coordinator.join_uses_install_code is False
            services.close()
        finally:
            await app.shutdown()


async def test_ezsp_endpoint_only_through_config_and_time_answered_on_se_profile():
    """EmberZNet takes addEndpoint only before its stack runs: at run time bellows refuses
    (StackAlreadyRunning); through the config the endpoint is there and SE frames leave it."""
    from bellows.zigbee.application import ControllerApplication as EzspApp

    from radios.emulate.ezsp import NetworkSettings, running_ezsp_emulator

    spec = parse_sim_device(f"ppmid:{PPMID}:profile=se:query_delay=3600")
    async with running_ezsp_emulator([spec], network=NetworkSettings(channel=15, pan_id=0x3C3C)) as (path, server):
        plain = await open_app("ezsp", path=path, han_endpoint=False)
        try:
            refused = await setup_han_services(plain)
            assert refused.endpoint_status.startswith("unavailable: StackAlreadyRunning")
            assert HAN_ENDPOINT not in server.ncp.endpoints
            refused.close()
        finally:
            await plain.shutdown()

        config = apply_han_config(zigpy_config("ezsp", path=path, baudrate=None, flow_control=None, database=None), "ezsp")
        app = await EzspApp.new(config=config, auto_form=False, start_radio=True)
        try:
            assert server.ncp.endpoints[HAN_ENDPOINT].profile == SE_PROFILE
            services = await setup_han_services(app, clock=lambda: CLOCK)
            assert services.endpoint_status == "registered" and services.warnings == []
            air = AirSpy(server.han)
            await app.permit(60)
            await _joined(app, PPMID)
            read_time_from(server.han.devices[PPMID])
            packet = await air.wait(0x000A)
            assert (packet.profile_id, packet.src_ep, packet.dst_ep) == (SE_PROFILE, HAN_ENDPOINT, 1)
            hdr, _ = foundation.ZCLHeader.deserialize(packet.data.serialize())
            assert hdr.tsn == 0x5A and hdr.command_id == foundation.GeneralCommand.Read_Attributes_rsp
            services.close()
        finally:
            await app.shutdown()


async def test_se_profile_device_upgraded_to_the_hold_through_the_se_endpoint():
    """With the HAN config, a PPMID that speaks only the SE profile is served end to end:
    every OTA frame to it leaves the SE endpoint on profile 0x0109."""
    from gateway.config import OtaConfig
    from gateway.engine import Engine
    from gateway.image import parse_image
    from gateway.image_build import build_image
    from gateway.ota.events import SessionState

    spec = parse_sim_device(f"ppmid:{PPMID}:profile=se:file_version=1:response_timeout=0.5:wait_interval=0.5:query_delay=3600")
    async with running_znp_emulator([spec]) as (path, server):
        air = AirSpy(server.coordinator.han)
        config = apply_han_config(zigpy_config("znp", path=path, baudrate=None, flow_control=None, database=None), "znp")
        app = await ZnpApp.new(config=config, auto_form=True, start_radio=True)
        engine = Engine(app, OtaConfig(stall_timeout_s=30, rate_bytes_per_s=1_000_000, burst_bytes=1 << 20))
        try:
            services = await setup_han_services(app)
            await _joined(app, PPMID)
            fw = parse_image(build_image(bytes(range(256)) * 8, manufacturer_code=0x121D, image_type=0x0084, file_version=2, min_hw=0x1111, max_hw=0x1211))
            job = engine.push(fw, PPMID)
            assert await engine.wait(job, {SessionState.HELD}, timeout=30) is SessionState.HELD
            ota = [p for p in air.sent if p.cluster_id == 0x0019]
            assert len(ota) > fw.size // 64  # notify, query response, every block, the hold
            assert {(p.profile_id, p.src_ep) for p in ota} == {(SE_PROFILE, HAN_ENDPOINT)}
            services.close()
        finally:
            await engine.close()
            await app.shutdown()
