"""Helpers for driving a `SimHan` by hand in tests: build OTA files, play the server.

`HandCoordinator` attaches to a `SimHan` in place of a coordinator and lets a test
send hand-built ZCL/ZDO frames (with zigpy's schemas) and wait for the devices'
frames. It has no OTA logic: every server answer is the test's own.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

import zigpy.types as t
from zigpy.ota.image import ElementTagId, FieldControl, HeaderString, OTAImage, OTAImageHeader, SubElement
from zigpy.zcl import foundation
from zigpy.zcl.clusters.general import Ota

from .han import DeliveryResult, SimHan

__all__ = ["HandCoordinator", "Heard", "build_ota_image"]


def build_ota_image(
    manufacturer_code: int,
    image_type: int,
    file_version: int,
    payload: bytes = b"firmware" * 16,
    *,
    min_hw: int | None = None,
    max_hw: int | None = None,
    destination: t.EUI64 | None = None,
    header_string: str = "han-ota-gateway sim test image",
) -> bytes:
    """A Zigbee OTA file (ZCL 11.4): header plus one upgrade-image sub-element."""
    field_control = FieldControl(0)
    if destination is not None:
        field_control |= FieldControl.DEVICE_SPECIFIC_FILE_PRESENT
    if min_hw is not None or max_hw is not None:
        field_control |= FieldControl.HARDWARE_VERSIONS_PRESENT
    header_length = 56 + (8 if destination is not None else 0) + (4 if min_hw is not None or max_hw is not None else 0)
    element = SubElement(tag_id=ElementTagId.UPGRADE_IMAGE, data=payload)
    image_size = header_length + len(element.serialize())
    fields: dict[str, Any] = {
        "upgrade_file_id": OTAImageHeader.MAGIC_VALUE,
        "header_version": 0x0100,
        "header_length": header_length,
        "field_control": field_control,
        "manufacturer_id": manufacturer_code,
        "image_type": image_type,
        "file_version": file_version,
        "stack_version": 0x0002,
        "header_string": HeaderString(header_string),
        "image_size": image_size,
    }
    if destination is not None:
        fields["upgrade_file_destination"] = destination
    if min_hw is not None or max_hw is not None:
        fields["minimum_hardware_version"] = min_hw if min_hw is not None else 0x0000
        fields["maximum_hardware_version"] = max_hw if max_hw is not None else 0xFFFF
    image = OTAImage(header=OTAImageHeader(**fields), subelements=[element])
    return image.serialize()


@dataclass(frozen=True)
class Heard:
    """A device's frame as the hand coordinator received it."""

    packet: t.ZigbeePacket
    hdr: foundation.ZCLHeader | None
    payload: bytes

    @property
    def command(self) -> Any:
        """The payload parsed with zigpy's OTA/foundation schema (ZCL frames only)."""
        if self.hdr is None:
            raise ValueError("not a ZCL frame")
        if self.hdr.frame_control.is_general:
            schema = foundation.GENERAL_COMMANDS[foundation.GeneralCommand(self.hdr.command_id)].schema
        else:
            schema = _ota_server_schema(self.hdr.command_id)
        cmd, _ = schema.deserialize(self.payload)
        return cmd


def _ota_server_schema(command_id: int) -> Any:
    for definition in Ota.ServerCommandDefs:
        if definition.id == command_id:
            return definition.schema
    raise KeyError(f"no OTA server command 0x{command_id:02X}")


class HandCoordinator:
    """Stand in for a coordinator on a `SimHan`: send raw frames, await the devices'."""

    def __init__(self, han: SimHan) -> None:
        self.han = han
        self.heard: list[Heard] = []
        self.joins: list[tuple[t.EUI64, t.NWK]] = []
        self._new = asyncio.Event()
        self._tsn = 0
        han.attach(self._uplink, self._join)

    def _uplink(self, packet: t.ZigbeePacket) -> None:
        data = packet.data.serialize()
        hdr: foundation.ZCLHeader | None = None
        payload = data
        if packet.profile_id != 0:
            try:
                hdr, payload = foundation.ZCLHeader.deserialize(data)
            except ValueError:
                hdr = None
        self.heard.append(Heard(packet, hdr, payload))
        self._new.set()

    def _join(self, ieee: t.EUI64, nwk: t.NWK) -> None:
        self.joins.append((ieee, nwk))

    def next_tsn(self) -> int:
        self._tsn = (self._tsn + 1) & 0xFF
        return self._tsn

    async def expect(
        self,
        *,
        cluster: int | None = None,
        command_id: int | None = None,
        general: bool | None = None,
        src: int | None = None,
        since: int = 0,
        timeout: float = 5.0,
    ) -> Heard:
        """The first frame at index >= ``since`` matching the filters."""

        def match(h: Heard) -> bool:
            if src is not None and h.packet.src.address != src:
                return False
            if cluster is not None and h.packet.cluster_id != cluster:
                return False
            if command_id is not None and (h.hdr is None or h.hdr.command_id != command_id):
                return False
            if general is not None and (h.hdr is None or h.hdr.frame_control.is_general != general):
                return False
            return True

        async with asyncio.timeout(timeout):
            while True:
                for h in self.heard[since:]:
                    if match(h):
                        return h
                self._new.clear()
                await self._new.wait()

    def count(self, *, cluster: int, command_id: int, src: int | None = None, general: bool = False) -> int:
        return sum(
            1
            for h in self.heard
            if h.packet.cluster_id == cluster
            and h.hdr is not None
            and h.hdr.command_id == command_id
            and h.hdr.frame_control.is_general == general
            and (src is None or h.packet.src.address == src)
        )

    def packet(
        self,
        nwk: int,
        cluster: int,
        data: bytes,
        *,
        profile: int = 0x0104,
        src_ep: int = 1,
        dst_ep: int = 1,
        broadcast: int | None = None,
    ) -> t.ZigbeePacket:
        if broadcast is not None:
            dst = t.AddrModeAddress(addr_mode=t.AddrMode.Broadcast, address=t.BroadcastAddress(broadcast))
        else:
            dst = t.AddrModeAddress(addr_mode=t.AddrMode.NWK, address=t.NWK(nwk))
        return t.ZigbeePacket(
            src=t.AddrModeAddress(addr_mode=t.AddrMode.NWK, address=t.NWK(0x0000)),
            src_ep=src_ep,
            dst=dst,
            dst_ep=dst_ep,
            tsn=0,
            profile_id=profile,
            cluster_id=cluster,
            data=t.SerializableBytes(data),
        )

    def ota_frame(
        self,
        command_id: int,
        *,
        tsn: int | None = None,
        disable_default_response: bool = True,
        **fields: Any,
    ) -> bytes:
        """An OTA server->client command, built with zigpy's Ota.ClientCommandDefs schema."""
        definition = next(d for d in Ota.ClientCommandDefs if d.id == command_id)
        hdr = foundation.ZCLHeader(
            frame_control=foundation.FrameControl(
                frame_type=foundation.FrameType.CLUSTER_COMMAND,
                is_manufacturer_specific=False,
                direction=foundation.Direction.Server_to_Client,
                disable_default_response=disable_default_response,
                reserved=0,
            ),
            tsn=self.next_tsn() if tsn is None else tsn,
            command_id=command_id,
        )
        return hdr.serialize() + definition.schema(**fields).serialize()

    async def send(self, nwk: int, cluster: int, data: bytes, **kwargs: Any) -> DeliveryResult:
        return await self.han.send(self.packet(nwk, cluster, data, **kwargs))

    async def send_ota(self, nwk: int, command_id: int, *, tsn: int | None = None, **fields: Any) -> DeliveryResult:
        ddr = fields.pop("disable_default_response", True)
        data = self.ota_frame(command_id, tsn=tsn, disable_default_response=ddr, **fields)
        return await self.send(nwk, 0x0019, data)
