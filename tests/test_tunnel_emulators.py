"""The GBCS tunnel through the EZSP and Z-Stack emulators with unmodified bellows and
zigpy-znp: a message that fits one frame crosses both ways, and so does a 1,400-byte
one, APS-fragmented as each stack does it (radios/fragmentation.py on the host,
radios/emulate/*/fragments.py in the firmware)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import pytest
import zigpy.types as zt

from gateway.se.security import SecurityRegistry
from gateway.tunnel.service import TunnelService
from radios.emulate.ezsp.server import running_ezsp_emulator
from radios.emulate.znp.server import running_znp_emulator
from radios.select import open_app
from radios.sim.spec import parse_sim_device

HCALCS = "00:db:12:34:56:78:90:a3"
IEEE = zt.EUI64.convert(HCALCS)
RADIOS = [
    pytest.param("ezsp", {}, id="ezsp13"),
    pytest.param("ezsp", {"protocol_version": 14}, id="ezsp14"),
    pytest.param("znp", {}, id="znp"),
]


@contextlib.asynccontextmanager
async def tunnel_through(kind: str, options: dict[str, Any]) -> AsyncIterator[tuple[TunnelService, Any, Any]]:
    """(the hub's tunnel service, the simulated HCALCS, the emulator) with the tunnel's
    server found and the device interviewed."""
    emulator = running_ezsp_emulator if kind == "ezsp" else running_znp_emulator
    async with emulator([parse_sim_device(f"hcalcs:{HCALCS}:query_delay=3600")], **options) as (path, server):
        app = await open_app(kind, path=path)
        service = TunnelService(app, SecurityRegistry())
        try:
            await app.permit(60)
            async with asyncio.timeout(20):
                while not ((d := app.devices.get(IEEE)) is not None and d.is_initialized and d.model):
                    await asyncio.sleep(0.05)
            await service.start()
            han = server.han if kind == "ezsp" else server.coordinator.han
            yield service, han.devices[IEEE], server
        finally:
            await service.close()
            await app.shutdown()


def reversing(device: Any) -> list[bytes]:
    """The device answers each message with its body reversed (and keeps what it got)."""
    received: list[bytes] = []

    def handler(data: bytes) -> list[bytes]:
        received.append(data)
        return [b"\xdf" + data[1:][::-1]]

    device.tunnel_handler = handler
    return received


@pytest.mark.parametrize("kind", ["ezsp", "znp"])
async def test_a_short_gbcs_message_crosses_the_tunnel_both_ways(kind: str) -> None:
    async with tunnel_through(kind, {}) as (service, device, _):
        reversing(device)
        message = b"\xdd" + bytes(range(1, 40))  # 40 bytes: one frame with the headers
        reply = await service.request(IEEE, message, timeout=30)
        assert reply == b"\xdf" + message[1:][::-1]
        assert service.tunnel_state(IEEE)["endpoint"] == 2
        assert not device.events("aps_fragmented")


def fragmented(device: Any, downlink: bool) -> list[Any]:
    return [e.detail for e in device.events("aps_fragmented") if e.detail["downlink"] is downlink]


@pytest.mark.parametrize(("kind", "options"), RADIOS)
async def test_a_1400_byte_gbcs_message_crosses_the_tunnel_both_ways(kind: str, options: dict[str, Any]) -> None:
    async with tunnel_through(kind, options) as (service, device, server):
        received = reversing(device)
        message = b"\xdd" + bytes(i % 251 for i in range(1, 1400))
        reply = await service.request(IEEE, message, timeout=60)
        assert received == [message]
        assert reply == b"\xdf" + message[1:][::-1]
        # Both ways on the air as APS fragments, every block in
        (down,) = fragmented(device, downlink=True)
        (up,) = fragmented(device, downlink=False)
        assert down["delivered"] and up["delivered"]
        assert down["length"] > 1400 and up["length"] > 1400  # the tunnel's ZCL header too
        if kind == "ezsp":
            ncp = server.ncp
            # EmberZNet's host cut the downlink and acked the uplink block by block
            assert down["blocks"] == -(-down["length"] // 80)
            async with asyncio.timeout(30):  # bellows sends its acks after handing the message up
                while len(ncp.fragments.host_acks) < up["blocks"]:
                    await asyncio.sleep(0.05)
            assert len({seq for _, seq, _ in ncp.fragments.host_acks}) == 1
            assert sorted(g & 0xFF for _, _, g in ncp.fragments.host_acks) == list(range(up["blocks"]))
        else:
            coordinator = server.coordinator
            assert coordinator.requests["AF.DataStore"] >= 2 and coordinator.requests["AF.DataRetrieve"] >= 2
            assert not coordinator.unimplemented
