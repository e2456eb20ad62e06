"""The GBCS tunnel through the EZSP and Z-Stack emulators with unmodified bellows and
zigpy-znp: a message that fits one frame crosses both ways, and so does a 1,400-byte
one, APS-fragmented as each stack does it (radios/fragmentation.py on the host,
radios/emulate/*/fragments.py in the firmware)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from tunnel_emulator_support import IEEE, RADIOS, fragmented, reversing, tunnel_through


@pytest.mark.parametrize("kind", ["ezsp", "znp"])
async def test_a_short_gbcs_message_crosses_the_tunnel_both_ways(kind: str) -> None:
    async with tunnel_through(kind, {}) as (service, device, _):
        reversing(device)
        message = b"\xdd" + bytes(range(1, 40))  # 40 bytes: one frame with the headers
        reply = await service.request(IEEE, message, timeout=30)
        assert reply == b"\xdf" + message[1:][::-1]
        assert service.tunnel_state(IEEE)["endpoint"] == 2
        assert not device.events("aps_fragmented")


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

