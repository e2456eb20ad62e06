"""The tunnel service on the simulated radio: a simulated HCALCS's Tunneling server,
opened after the interview, messages both ways, the device's faults end to end."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
import zigpy.types as zt

from gateway.se.security import KeyState, SecurityMode, SecurityRegistry
from gateway.tunnel import client as tc
from gateway.tunnel.service import TunnelSendError, TunnelService
from radios.sim.app import SimControllerApplication, start_sim_app
from radios.sim.han import SimHan
from radios.sim.spec import parse_sim_device

HCALCS = "00:db:12:34:56:78:90:a3"
IEEE = zt.EUI64.convert(HCALCS)
CS06 = bytes.fromhex("dd000000000000000000") + bytes(range(40))


async def until(predicate: Callable[[], bool], timeout: float = 20.0) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.01)


async def sim(*options: str) -> SimControllerApplication:
    spec = ":".join([f"hcalcs:{HCALCS}:query_delay=3600", *options])
    return await start_sim_app([parse_sim_device(spec)], timeout=20)


class Seen:
    def __init__(self) -> None:
        self.messages: list[tuple[str, zt.EUI64, bytes]] = []

    def __call__(self, direction: str, ieee: zt.EUI64, data: bytes) -> None:
        self.messages.append((direction, ieee, data))


@pytest.fixture
async def bench() -> AsyncIterator[tuple[SimControllerApplication, TunnelService, Seen]]:
    app = await sim()
    seen = Seen()
    service = TunnelService(app, SecurityRegistry(), on_message=seen)
    await service.start()
    try:
        yield app, service, seen
    finally:
        await service.close()
        await app.shutdown()


async def test_the_tunnel_opens_after_the_interview_and_carries_a_message_both_ways(bench: Any) -> None:
    app, service, seen = bench
    device = app.han.devices[IEEE]
    device.tunnel_handler = lambda data: [b"\xdf" + data[1:]]
    await until(lambda: service.tunnel_state(IEEE)["state"] == "open")
    assert service.tunnel_state(IEEE)["endpoint"] == 2  # the device's SE endpoint
    reply = await service.request(IEEE, CS06, timeout=20)
    assert reply == b"\xdf" + CS06[1:]
    assert seen.messages == [("out", IEEE, CS06), ("in", IEEE, reply)]
    # The RequestTunnel on the air as GBCS asks for it.
    rx = [e for e in device.events("tunnel_rx") if e.detail["command_id"] == 0x00]
    assert rx and device.tunnel.owner is not None


async def test_an_alert_the_device_originates_reaches_on_message(bench: Any) -> None:
    app, service, seen = bench
    await until(lambda: service.tunnel_state(IEEE)["state"] == "open")
    app.han.devices[IEEE].tunnel_send(b"\xdf\x09alert")
    await until(lambda: ("in", IEEE, b"\xdf\x09alert") in seen.messages)


async def test_close_sends_close_tunnel() -> None:
    app = await sim()
    service = TunnelService(app, SecurityRegistry())
    await service.start()
    try:
        await until(lambda: service.tunnel_state(IEEE)["state"] == "open")
        device = app.han.devices[IEEE]
        await service.close()
        await until(lambda: any(e.detail["command_id"] == 0x01 for e in device.events("tunnel_rx")))
        assert device.tunnel.tunnel is None
        with pytest.raises(TunnelSendError, match="not running"):
            await service.send(IEEE, CS06)
    finally:
        await app.shutdown()


async def fast(app: SimControllerApplication, **config: Any) -> tuple[TunnelService, Seen]:
    seen = Seen()
    service = TunnelService(app, SecurityRegistry(), on_message=seen, config=tc.TunnelConfig(**config))
    await service.start()
    return service, seen


async def test_busy_then_retry_after_the_configured_wait() -> None:
    app = await sim("tunnel_busy=1")
    service, _ = await fast(app, busy_retry=0.2)
    try:
        await until(lambda: service.tunnel_state(IEEE)["state"] == "open")
        statuses = [e for e in app.han.devices[IEEE].tunnel.log if "refused" in e]
        assert statuses == ["RequestTunnel refused with status 1"]
    finally:
        await service.close()
        await app.shutdown()


async def test_no_more_tunnel_ids_then_retry_after_the_configured_wait() -> None:
    app = await sim("tunnel_no_ids=2")
    service, _ = await fast(app, no_ids_retry=0.1)
    try:
        await service.send(IEEE, CS06, timeout=20)
        log = app.han.devices[IEEE].tunnel.log
        assert log[:2] == ["RequestTunnel refused with status 2"] * 2 and app.han.devices[IEEE].tunnel_messages == [CS06]
    finally:
        await service.close()
        await app.shutdown()


async def test_a_forgotten_tunnel_is_reopened_and_the_message_resent() -> None:
    app = await sim("tunnel_drop=1")
    service, seen = await fast(app)
    try:
        await until(lambda: service.tunnel_state(IEEE)["state"] == "open")
        await service.send(IEEE, CS06, timeout=20)
        device = app.han.devices[IEEE]
        assert device.tunnel_messages == [CS06]  # received once, on the new tunnel
        assert device.tunnel.tunnel == 2
        assert seen.messages == [("out", IEEE, CS06)]
    finally:
        await service.close()
        await app.shutdown()


@pytest.mark.parametrize(("refuse", "name"), [("protocol", "PROTOCOL_NOT_SUPPORTED"), ("flow-control", "FLOW_CONTROL_NOT_SUPPORTED")])
async def test_a_refused_tunnel_fails_messages_with_the_reason(refuse: str, name: str) -> None:
    app = await sim(f"tunnel_refuse={refuse}")
    service, _ = await fast(app)
    try:
        await until(lambda: service.tunnel_state(IEEE)["state"] == "failed")
        with pytest.raises(TunnelSendError, match=f"the device refused the tunnel: {name}"):
            await service.send(IEEE, CS06, timeout=20)
    finally:
        await service.close()
        await app.shutdown()


async def test_a_device_without_a_tunneling_server_gets_no_tunnel() -> None:
    app = await sim()
    service, _ = await fast(app)
    try:
        device = app.han.devices[IEEE]
        await until(lambda: service.tunnel_state(IEEE)["state"] == "open")
        # As if it had none: forget the endpoint and make its endpoint 2 go away.
        device.tunnel_endpoint = 1  # endpoint 1 is HA: Match_Desc on SE finds nothing
        service._peers.clear()
        with pytest.raises(TunnelSendError, match="no Tunneling server"):
            await service.send(IEEE, CS06, timeout=20)
        assert service.tunnel_state(IEEE)["state"] == "no-server"
    finally:
        await service.close()
        await app.shutdown()


async def test_a_radio_reconnect_reopens_the_tunnel() -> None:
    han = SimHan([parse_sim_device(f"hcalcs:{HCALCS}:query_delay=3600")])
    app = SimControllerApplication.new_sim([], han=han)  # the HAN outlives its apps
    await app.startup(auto_form=True)
    await app.wait_initialized(timeout=20)
    service, _ = await fast(app)
    second = None
    device = han.devices[IEEE]

    def requests() -> int:
        return sum(1 for e in device.events("tunnel_rx") if e.detail["command_id"] == 0)

    try:
        await until(lambda: service.tunnel_state(IEEE)["state"] == "open")
        assert requests() == 1
        await app.shutdown()
        second = SimControllerApplication.new_sim([], han=han, nvram=app.nvram)
        await second.startup(auto_form=False)
        second.add_device(IEEE, device.nwk)  # zigpy's database would have kept it
        await service.rebind(second)
        await service.send(IEEE, CS06, timeout=20)
        assert requests() == 2 and device.tunnel.log == ["tunnel 1 open", "tunnel 1 open"]  # the same id again
        assert device.tunnel_messages == [CS06]
    finally:
        await service.close()
        if second is not None:
            await second.shutdown()
        await han.stop()


async def test_a_rebooted_device_is_reopened_on_its_rejoin() -> None:
    app = await sim("reboot_time=0")
    service, _ = await fast(app)
    try:
        await until(lambda: service.tunnel_state(IEEE)["state"] == "open")
        device = app.han.devices[IEEE]
        device.power_cycle()
        await until(lambda: device.powered and device.tunnel.tunnel is not None)
        await service.send(IEEE, CS06, timeout=20)
        assert device.tunnel_messages == [CS06]
    finally:
        await service.close()
        await app.shutdown()


async def test_an_se_device_gets_its_tunnel_only_once_keyed_and_aps_secured() -> None:
    app = await sim()
    registry = SecurityRegistry({IEEE: SecurityMode.SE})
    service = TunnelService(app, registry)
    await service.start()
    try:
        await asyncio.sleep(0.2)
        assert service.tunnel_state(IEEE)["state"] == "none"  # not registered yet
        key = bytes(range(16))
        app.han.install_link_key(IEEE, key)
        app.han.devices[IEEE].aps_link_key = key
        registry.update(IEEE, state=KeyState.ESTABLISHED, suite=1)
        await until(lambda: service.tunnel_state(IEEE)["state"] == "open")
        device = app.han.devices[IEEE]
        await service.send(IEEE, CS06, timeout=20)
        assert device.tunnel_messages == [CS06] and device.radio.aps_drops == 0
        assert device.radio.aps_secured_received > 0
        # An unsecured Tunneling uplink from the keyed device is ignored.
        device.aps_secured_clusters = frozenset()
        device.tunnel_send(b"\xdf forged")
        await until(lambda: service.unsecured_frames > 0)
    finally:
        await service.close()
        await app.shutdown()


async def test_an_se_device_that_keys_with_the_hub_gets_its_tunnel_aps_encrypted(tmp_path: Any) -> None:
    # The whole registration: the simulated SE PPMID runs CBKE with the hub's service
    # as it joins; only then does the hub ask for its tunnel, under the new link key.
    from gateway.config import load_config
    from han_ota.security import close_key_establishment, start_key_establishment
    from radios.select import open_app
    from tests.system.test_se_push import PPMID, lab

    config_path, spec = lab(tmp_path, 1)
    config = load_config(config_path)
    registry = SecurityRegistry(config.security_modes())
    ieee = zt.EUI64.convert(PPMID)
    parts: dict[str, Any] = {}

    async def on_started(app: Any) -> None:
        parts["ke"] = await start_key_establishment(app, config, registry, lambda *a, **k: None)
        parts["tunnel"] = service = TunnelService(app, registry)
        await service.start()

    app = await open_app("sim", sim_devices=[parse_sim_device(spec)], key_establishment=True, on_started=on_started)
    service = parts["tunnel"]
    try:
        await until(lambda: service.tunnel_state(ieee)["state"] == "open", timeout=60)
        assert registry.get(ieee).aps
        # Asked for once, after the key (not before it, not lost to the key's arrival).
        requests = [e for e in app.han.devices[ieee].events("tunnel_rx") if e.detail["command_id"] == 0]
        assert len(requests) == 1
        device = app.han.devices[ieee]
        await service.send(ieee, CS06, timeout=20)
        assert device.tunnel_messages == [CS06]
        # (zigpy's own OTA frames are the guard's, not installed here: only ours count)
        assert [e for e in device.events("aps_drop") if e.detail["cluster"] == 0x0704] == []
        assert device.radio.aps_secured_received > 0
    finally:
        await service.close()
        await close_key_establishment(parts.get("ke"))
        await app.shutdown()
