"""A look at received packets before zigpy parses them.

zigpy hands a received frame to application listeners and then parses it with its
ZCL schema classes, whatever a listener did with it. For the OTA cluster that parse
is most of the hub's CPU per Image Block (and zigpy's Ota handler would answer the
frame too). zigpy 2.4 has no hook that can take a frame away from that path, so the
tap wraps ``packet_received`` on the application instance: the entry point every
radio library (bellows, zigpy-znp, the sim) calls. A tap returns True when it has
consumed the packet; zigpy then never sees it.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

import zigpy.types as zt
from zigpy.application import ControllerApplication

LOGGER = logging.getLogger(__name__)

PacketTap = Callable[[zt.ZigbeePacket], bool]


def install_packet_tap(app: ControllerApplication, tap: PacketTap) -> Callable[[], None]:
    """Offer every received packet to ``tap`` first; returns the function that removes it.

    Taps stack: the one installed last is asked first. A tap that raises is logged
    and the packet goes on to zigpy, so a bug in a tap cannot silence the radio.
    """
    below = app.packet_received

    def packet_received(packet: zt.ZigbeePacket) -> None:
        try:
            if tap(packet):
                return None
        except Exception:
            LOGGER.exception("packet tap %r failed; zigpy handles the packet", tap)
        return below(packet)

    app.packet_received = packet_received  # type: ignore[method-assign]

    def remove() -> None:
        # Only when nothing was stacked on top since; otherwise leave the chain
        # intact and make this layer a pass-through.
        nonlocal tap
        if vars(app).get("packet_received") is packet_received:
            if getattr(below, "__self__", None) is app and getattr(below, "__func__", None) is type(app).packet_received:
                del app.packet_received
            else:
                app.packet_received = below  # type: ignore[method-assign]
        else:
            tap = _decline

    return remove


def _decline(packet: zt.ZigbeePacket) -> bool:
    return False


#: Given a packet about to be sent, returns the packet to send (the same, or one with
#: other transmit options), possibly after a wait; raises to refuse it.
SendFilter = Callable[[zt.ZigbeePacket], Awaitable[zt.ZigbeePacket]]


def install_send_filter(app: ControllerApplication, admit: SendFilter) -> Callable[[], None]:
    """Pass every packet through ``admit`` before the radio sends it. Every sender goes
    through ``send_packet``: our drivers and zigpy itself (its interview, its Ota
    cluster), which no other hook reaches. A refusal is best raised as
    `zigpy.exceptions.DeliveryError`, as an undeliverable packet would be. Returns the
    function that removes the filter."""
    below = app.send_packet

    async def send_packet(packet: zt.ZigbeePacket) -> None:
        await below(await admit(packet))

    app.send_packet = send_packet  # type: ignore[method-assign]

    def remove() -> None:
        if vars(app).get("send_packet") is send_packet:
            if getattr(below, "__self__", None) is app and getattr(below, "__func__", None) is type(app).send_packet:
                del app.send_packet
            else:
                app.send_packet = below  # type: ignore[method-assign]

    return remove
