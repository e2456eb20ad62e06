"""Shared by the emulator tunnel tests: a hub's tunnel to a simulated HCALCS behind the
EZSP emulator (unmodified bellows) or the Z-Stack emulator (unmodified zigpy-znp)."""

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


def fragmented(device: Any, downlink: bool) -> list[Any]:
    """The device's fragmented exchanges one way (han.py's "aps_fragmented" records)."""
    return [e.detail for e in device.events("aps_fragmented") if e.detail["downlink"] is downlink]
