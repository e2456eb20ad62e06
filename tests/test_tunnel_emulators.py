"""The GBCS tunnel through the EZSP and Z-Stack emulators with unmodified bellows and
zigpy-znp: a message that fits one frame crosses both ways. (Longer ones need the
emulators' APS fragmentation, a later part of issue 13: both radio libraries refuse
to serialize them today, and the tunnel reports that reason.)"""

from __future__ import annotations

import asyncio

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


@pytest.mark.parametrize("kind", ["ezsp", "znp"])
async def test_a_short_gbcs_message_crosses_the_tunnel_both_ways(kind: str) -> None:
    emulator = running_ezsp_emulator if kind == "ezsp" else running_znp_emulator
    async with emulator([parse_sim_device(f"hcalcs:{HCALCS}:query_delay=3600")]) as (path, server):
        app = await open_app(kind, path=path)
        service = TunnelService(app, SecurityRegistry())
        try:
            await app.permit(60)
            async with asyncio.timeout(20):
                while not ((d := app.devices.get(IEEE)) is not None and d.is_initialized and d.model):
                    await asyncio.sleep(0.05)
            await service.start()
            han = server.han if kind == "ezsp" else server.coordinator.han
            device = han.devices[IEEE]
            device.tunnel_handler = lambda data: [b"\xdf" + data[1:][::-1]]
            message = b"\xdd" + bytes(range(1, 40))  # 40 bytes: one frame with the headers
            reply = await service.request(IEEE, message, timeout=30)
            assert reply == b"\xdf" + message[1:][::-1]
            assert service.tunnel_state(IEEE)["endpoint"] == 2
        finally:
            await service.close()
            await app.shutdown()
