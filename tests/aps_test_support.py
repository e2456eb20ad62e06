"""What the APS-security tests share across radios (test_sim_aps.py, test_keys.py): two
simulated HCALCS, frames sent as the gateway's driver sends them
(``app.send_packet``), and a look at what zigpy receives (a packet tap)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import zigpy.exceptions
import zigpy.types as t
from zigpy.zcl import foundation

from radios.keys import install_link_key
from radios.sim.device import SimDevice
from radios.tap import install_packet_tap

A = "00:db:12:34:56:78:aa:01"
B = "00:db:12:34:56:78:aa:02"
A_IEEE = t.EUI64.convert(A)
B_IEEE = t.EUI64.convert(B)
KEY_A = t.KeyData(bytes(range(0x10, 0x20)))
KEY_B = t.KeyData(bytes(range(0x40, 0x50)))
OTHER_KEY = bytes(range(0x70, 0x80))
CLUSTER_OTA = 0x0019
QUIET = "query_delay=3600"  # no OTA chatter of the devices' own


def device_specs() -> list[Any]:
    from radios.sim.spec import parse_sim_device

    return [parse_sim_device(f"hcalcs:{ieee}:{QUIET}") for ieee in (A, B)]


def read_ota_attributes(tsn: int) -> bytes:
    """Read Attributes (CurrentFileVersion) on the device's OTA client, server -> client."""
    hdr = foundation.ZCLHeader(
        frame_control=foundation.FrameControl(
            frame_type=foundation.FrameType.GLOBAL_COMMAND,
            is_manufacturer_specific=False,
            direction=foundation.Direction.Server_to_Client,
            disable_default_response=True,
            reserved=0,
        ),
        tsn=tsn,
        command_id=foundation.GeneralCommand.Read_Attributes,
    )
    return hdr.serialize() + t.List[t.uint16_t]([0x0002]).serialize()


async def send_ota_read(app: Any, device: SimDevice, tsn: int, *, secured: bool) -> None:
    options = t.TransmitOptions.ACK | (t.TransmitOptions.APS_Encryption if secured else t.TransmitOptions.NONE)
    await app.send_packet(
        t.ZigbeePacket(
            src=t.AddrModeAddress(addr_mode=t.AddrMode.NWK, address=t.NWK(0x0000)),
            src_ep=1,
            dst=t.AddrModeAddress(addr_mode=t.AddrMode.NWK, address=device.nwk),
            dst_ep=1,
            tsn=tsn,
            profile_id=0x0104,
            cluster_id=CLUSTER_OTA,
            data=t.SerializableBytes(read_ota_attributes(tsn)),
            tx_options=options,
        )
    )


class Received:
    """Every packet the app receives, before zigpy parses it (zigpy still gets them)."""

    def __init__(self, app: Any) -> None:
        self.packets: list[t.ZigbeePacket] = []
        self._new = asyncio.Event()
        self.remove = install_packet_tap(app, self._tap)

    def _tap(self, packet: t.ZigbeePacket) -> bool:
        self.packets.append(packet)
        self._new.set()
        return False

    async def ota_reply(self, device: SimDevice, tsn: int, timeout: float = 10.0) -> t.ZigbeePacket:
        """The device's Read Attributes Response to ``tsn`` on the OTA cluster."""

        def match(p: t.ZigbeePacket) -> bool:
            data = p.data.serialize()
            return (
                p.src is not None
                and p.src.address == device.nwk
                and p.cluster_id == CLUSTER_OTA
                and len(data) >= 3
                and data[1] == tsn
                and data[2] == foundation.GeneralCommand.Read_Attributes_rsp
            )

        async with asyncio.timeout(timeout):
            while True:
                for packet in self.packets:
                    if match(packet):
                        return packet
                self._new.clear()
                await self._new.wait()


async def two_keys_then_secured_traffic(app: Any, han: Any, tsn_base: int = 0x40) -> None:
    """The scenario every radio runs, on two joined devices A and B:

    both keys go into the coordinator at once; an APS-secured read reaches each device
    holding its own key, and each secured answer reaches zigpy with APS_Encryption; a
    device holding another key drops the secured frame (and the send fails: no APS
    ack); a device that insists drops an unsecured frame on OTA.
    """
    a, b = han.devices[A_IEEE], han.devices[B_IEEE]
    await install_link_key(app, A_IEEE, KEY_A)
    await install_link_key(app, B_IEEE, KEY_B)
    # Both entries at once: an importer writing index 0, 1, ... per call would have
    # replaced A's key with B's, and A would then drop what follows.
    assert (han.link_key(A_IEEE), han.link_key(B_IEEE)) == (bytes(KEY_A), bytes(KEY_B))
    a.aps_link_key, b.aps_link_key = bytes(KEY_A), bytes(KEY_B)

    received = Received(app)
    try:
        for n, device in enumerate((a, b)):
            tsn = tsn_base + n
            mark = len(device.history)
            await send_ota_read(app, device, tsn, secured=True)
            # its answer (matched by TSN) came back secured, and nothing of ours was
            # dropped (zigpy's own unsecured reads of the OTA cluster, still under way
            # after the interview, may be: a device that insists does that)
            reply = await received.ota_reply(device, tsn)
            assert not [e for e in device.history[mark:] if e.kind == "aps_drop" and e.detail["reason"] != "not APS-secured"]
            assert t.TransmitOptions.APS_Encryption in reply.tx_options
        assert (a.radio.aps_secured_received, b.radio.aps_secured_received) == (1, 1)

        # B now holds another key than the coordinator's entry for it: B drops the frame
        b.aps_link_key = OTHER_KEY
        mark = len(b.history)
        # ... and sends no APS ack: the radio library reports the delivery failed
        with pytest.raises(zigpy.exceptions.DeliveryError):
            await send_ota_read(app, b, tsn_base + 2, secured=True)
        drop = await b.wait_for_event("aps_drop", timeout=10, since=mark)
        assert drop.detail == {"cluster": CLUSTER_OTA, "reason": "secured with another key"}
        assert not [e for e in b.history[mark:] if e.kind == "read_attributes"]

        # A insists on APS security for OTA: an unsecured frame is dropped
        mark = len(a.history)
        await send_ota_read(app, a, tsn_base + 3, secured=False)
        drop = await a.wait_for_event("aps_drop", timeout=10, since=mark)
        assert drop.detail == {"cluster": CLUSTER_OTA, "reason": "not APS-secured"}
        assert not [e for e in a.history[mark:] if e.kind == "read_attributes"]
    finally:
        received.remove()
