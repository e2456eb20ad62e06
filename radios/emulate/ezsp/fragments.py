"""APS fragmentation through the emulated NCP, as EmberZNet splits the work.

EmberZNet's NCP does not fragment by itself: fragmentation is a host library (Silicon
Labs' fragmentation plugin, gecko_sdk protocol/zigbee/app/framework/plugin/fragmentation/
fragmentation.c and fragmentation-host.c). What the stack on the NCP does, and we do:

* Outgoing: the host sends each block with ``sendUnicast`` and
  ``EMBER_APS_OPTION_FRAGMENT``, the apsFrame's ``groupId`` carrying
  ``HIGH_LOW_TO_INT(fragmentCount, blockIndex)`` (sendNextFragments), a window of
  ``EZSP_CONFIG_FRAGMENT_WINDOW_SIZE`` blocks at a time; every block of one message has
  one APS counter: the host passes back the sequence the first ``sendUnicast`` returned
  (emAfPluginFragmentationSend writes it into its apsFrame), so the stack takes a later
  block's sequence from the apsFrame. The stack puts each block on the air behind the
  APS extended header, collects the receiver's window ack, resends lost blocks
  (apscMaxFrameRetries), and confirms every block with ``messageSentHandler``; the host
  sends the next window once the whole window is confirmed and gives up at the first
  failure (emAfFragmentationMessageSent).  We put a window on the air once the host has
  handed us all of it (the host submits them back to back), through the air's
  ``SimHan.send_fragment_window``.
* Incoming: the stack hands every block to the host as it lands, in
  ``incomingMessageHandler`` with ``EMBER_APS_OPTION_FRAGMENT`` and ``groupId`` = block
  count (high byte; the first block's extended header is the only one that carries it,
  Zigbee 2.2.5.1.8) and block number (low byte); the host reassembles (bellows:
  ezsp/fragmentation.py) and acks with ``sendReply`` and the fragment option,
  ``groupId`` = ack mask (high) and window base (low) (emAfPluginFragmentationSendReply).
  The air acks each window itself (han.py models the receiving APS); the host's acks
  are kept in ``host_acks`` so a test can see them.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

import bellows.types as t
import zigpy.types as zt

from radios.sim.aps_fragments import Fragment

LOGGER = logging.getLogger(__name__)

#: EMBER_AF_APS_FRAGMENTATION_OVERHEAD (af.h): the extended header a block carries
FRAGMENTATION_OVERHEAD = 2


def fragment_group(block: int, total: int | None) -> int:
    """The apsFrame groupId of a block handed to the host (count unknown: 0)."""
    return ((total or 0) & 0xFF) << 8 | (block & 0xFF)


@dataclasses.dataclass
class _Block:
    index: int
    tag: int
    message: bytes
    aps: t.EmberApsFrame
    message_type: Any
    nwk_field: int


@dataclasses.dataclass
class _Outgoing:
    count: int
    pending: list[_Block] = dataclasses.field(default_factory=list)


class NcpFragments:
    """The stack's side of the host's fragmented unicasts, one per NCP (volatile)."""

    def __init__(self, ncp: Any) -> None:  # the EmberNcp (ncp.py imports this module)
        self.ncp = ncp
        self._outgoing: dict[tuple[int, int], _Outgoing] = {}
        #: (sender, APS sequence, groupId) of every fragment ack the host sent
        self.host_acks: list[tuple[int, int, int]] = []
        self.blocks_from_host = 0  # sendUnicast calls with the fragment option

    @staticmethod
    def is_fragment(aps: t.EmberApsFrame) -> bool:
        return t.EmberApsOption.APS_OPTION_FRAGMENT in t.EmberApsOption(aps.options)

    @staticmethod
    def later_block(aps: t.EmberApsFrame) -> bool:
        """A block after the first: it keeps the first block's APS counter."""
        return NcpFragments.is_fragment(aps) and int(aps.groupId) & 0xFF != 0

    def submit(self, message_type: Any, nwk_field: int, destination: int, aps: t.EmberApsFrame, tag: int,
               message: bytes) -> None:
        """One block the host gave ``sendUnicast`` (already answered OK, sequence set)."""
        self.blocks_from_host += 1
        count, index = int(aps.groupId) >> 8, int(aps.groupId) & 0xFF
        key = (destination, int(aps.sequence))
        entry = self._outgoing.get(key)
        if entry is None or index == 0:
            entry = self._outgoing[key] = _Outgoing(count)
        entry.pending.append(_Block(index, tag, message, aps, message_type, nwk_field))
        window = max(1, int(self.ncp.config.get("CONFIG_FRAGMENT_WINDOW_SIZE", 1)))
        if len(entry.pending) >= window or index >= entry.count - 1:
            blocks, entry.pending = entry.pending, []
            if index >= entry.count - 1:
                del self._outgoing[key]
            self.ncp._spawn(self._send_window(destination, entry.count, blocks), f"fragments to 0x{destination:04x}")

    async def _send_window(self, destination: int, count: int, blocks: list[_Block]) -> None:
        ncp = self.ncp
        first = blocks[0]
        ok = False
        send_window = getattr(ncp.han, "send_fragment_window", None)
        if ncp.faults.take_delivery_failure(destination, int(first.aps.clusterId)):
            LOGGER.info("EZSP NCP: injected delivery failure to 0x%04x (fragment window)", destination)
        elif send_window is None:
            LOGGER.warning("EZSP NCP: the HAN takes no host-cut fragments; window to 0x%04x fails", destination)
        else:
            dst = zt.AddrModeAddress(addr_mode=zt.AddrMode.NWK, address=destination)
            packet = ncp._outgoing_packet(dst, first.aps, b"")
            try:
                result = await send_window(packet, [Fragment(b.index, count, b.message) for b in blocks])
            except Exception:  # noqa: BLE001 - the air does not raise into the NCP
                LOGGER.exception("EZSP NCP: HAN fragment window to 0x%04x raised", destination)
            else:
                ok = bool(result.ok)
        if not ncp.network_up:
            return  # the NCP reset meanwhile: the confirmations are lost with it
        status = t.sl_Status.OK if ok else t.sl_Status.ZIGBEE_DELIVERY_FAILED
        for block in blocks:
            ncp._count(t.EmberCounterType.COUNTER_APS_DATA_TX_UNICAST_SUCCESS if ok
                       else t.EmberCounterType.COUNTER_APS_DATA_TX_UNICAST_FAILED)
            ncp.callback("messageSentHandler", status=status, message_type=block.message_type, nwk=block.nwk_field,
                         aps_frame=block.aps, message_tag=block.tag, message=ncp._message_in_callback(block.message))

    def incoming(self, packet: zt.ZigbeePacket, block: int, total: int | None) -> None:
        """A block of a fragmented uplink, landed (SimHan's ``on_fragment``)."""
        self.ncp._receive(packet, fragment_group=fragment_group(block, total))

    def send_reply(self, sender: int, aps: t.EmberApsFrame, message: bytes) -> dict[str, Any]:
        """``sendReply``: the host's fragment ack; other replies are not emulated."""
        if not self.is_fragment(aps):
            LOGGER.warning("EZSP NCP: sendReply without the fragment option not emulated")
            return {"status": t.sl_Status.INVALID_STATE}
        self.host_acks.append((int(sender), int(aps.sequence), int(aps.groupId)))
        return {"status": t.sl_Status.OK}


__all__ = ["FRAGMENTATION_OVERHEAD", "NcpFragments", "fragment_group"]
