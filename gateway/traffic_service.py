"""The asyncio side of the background-traffic measure (gateway/traffic.py holds the rules).

`TrafficService(app, on_sample, tunnel_send=None)`: a packet tap takes the stamped
Metering reports before zigpy parses them (they are the bench's, no use to zigpy) and
meters them on arrival; `send(kind, ieee, seq, size)` sends one of the hub's messages and
times it: a PublishPrice through the radio as zigpy's ``request(expect_reply=False)``
would, to the radio's confirmation; a tunnel message through ``tunnel_send(ieee, data)``
(the daemon's TunnelService.send), to the tunnel's acknowledgement. `rebind(app)` after a
reconnect; `close()` removes the tap. ``on_sample`` gets every `Sample`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
import logging
import time

import zigpy.exceptions
import zigpy.types as zt
from zigpy.application import ControllerApplication

from eui64 import Eui64
from gateway.traffic import (
    CLUSTER_PRICE,
    BackgroundFrameError,
    Sample,
    StampedReport,
    TrafficMeter,
    is_stamped_report,
    publish_price,
    tunnel_message,
)
from gateway.tunnel.service import TunnelSendError
from radios.tap import install_packet_tap

__all__ = ["TrafficService"]

LOGGER = logging.getLogger(__name__)
HA_PROFILE = 0x0104
TUNNEL_TIMEOUT_S = 30.0  # a tunnel message not acknowledged by then is lost

TunnelSend = Callable[[zt.EUI64, bytes], Awaitable[None]]


class TrafficService:
    def __init__(self, app: ControllerApplication, on_sample: Callable[[Sample], None], tunnel_send: TunnelSend | None = None) -> None:
        self.app = app
        self.on_sample = on_sample
        self.tunnel_send = tunnel_send
        self.meter = TrafficMeter()
        self.refused = 0  # stamped-looking reports that did not parse
        self._remove_tap: Callable[[], None] | None = None

    def start(self) -> None:
        if self._remove_tap is None:
            self._remove_tap = install_packet_tap(self.app, self._tap)

    def rebind(self, app: ControllerApplication) -> None:
        self.close()
        self.app = app
        self.start()

    def close(self) -> None:
        if self._remove_tap is not None:
            self._remove_tap()
            self._remove_tap = None

    def _tap(self, packet: zt.ZigbeePacket) -> bool:
        data = packet.data.serialize()
        if not is_stamped_report(int(packet.cluster_id), data):
            return False
        received_ms = time.time_ns() / 1e6
        device = self._device_of(packet)
        try:
            report = StampedReport.parse(data)
        except BackgroundFrameError as exc:
            self.refused += 1
            LOGGER.info("background report from %s refused: %s", device, exc)
            return True
        for sample in self.meter.report(device, report, received_ms):
            self.on_sample(sample)
        return True

    def _device_of(self, packet: zt.ZigbeePacket) -> str:
        src = packet.src
        if src is None or src.addr_mode != zt.AddrMode.NWK or not isinstance(src.address, int):
            return "unknown"
        try:
            return str(Eui64.from_air(self.app.get_device(nwk=zt.NWK(src.address)).ieee))
        except KeyError:
            return f"nwk:0x{src.address:04X}"

    async def send(self, kind: str, ieee: zt.EUI64, seq: int, size: int) -> Sample:
        """One of the hub's messages (``price`` or ``tunnel``) to ``ieee``; its sample
        (also given to ``on_sample``)."""
        loop = asyncio.get_running_loop()
        device_text = str(Eui64.from_air(ieee))
        sent = loop.time()
        if kind == "price":
            delivered = await self._price(ieee, device_text, seq, size)
        elif kind == "tunnel":
            delivered = await self._tunnel(ieee, device_text, seq, size)
        else:
            raise ValueError(f"TrafficService.send: kind {kind!r} is not the hub's to send")
        sample = self.meter.confirmed(device_text, kind, seq, sent * 1000, loop.time() * 1000, delivered)
        self.on_sample(sample)
        return sample

    async def _tunnel(self, ieee: zt.EUI64, device_text: str, seq: int, size: int) -> bool:
        if self.tunnel_send is None:
            LOGGER.info("tunnel message to %s not sent: no tunnel service", device_text)
            return False
        try:
            async with asyncio.timeout(TUNNEL_TIMEOUT_S):
                await self.tunnel_send(ieee, tunnel_message(seq, size))
        except (TunnelSendError, TimeoutError) as exc:
            LOGGER.info("tunnel message to %s (seq %d) not carried: %s", device_text, seq, exc or "timeout")
            return False
        return True

    async def _price(self, ieee: zt.EUI64, device_text: str, seq: int, size: int) -> bool:
        try:
            device = self.app.get_device(ieee=ieee)
            tsn = self.app.get_sequence()
            packet = zt.ZigbeePacket(
                src=zt.AddrModeAddress(addr_mode=zt.AddrMode.NWK, address=self.app.state.node_info.nwk),
                src_ep=zt.uint8_t(1),
                dst=zt.AddrModeAddress(addr_mode=zt.AddrMode.NWK, address=device.nwk),
                dst_ep=zt.uint8_t(1),
                tsn=zt.uint8_t(tsn),
                profile_id=zt.uint16_t(HA_PROFILE),
                cluster_id=zt.uint16_t(CLUSTER_PRICE),
                data=zt.SerializableBytes(publish_price(tsn, seq, size, int(time.time()))),
                tx_options=zt.TransmitOptions.NONE,
                priority=zt.PacketPriority.NORMAL,
            )
            await self.app.send_packet(packet)
        except KeyError:
            LOGGER.info("price to %s not sent: the radio does not know the device", device_text)
            return False
        except (zigpy.exceptions.DeliveryError, asyncio.TimeoutError, zigpy.exceptions.ZigbeeException) as exc:
            LOGGER.info("price to %s (seq %d) not delivered: %s", device_text, seq, exc)
            return False
        return True
