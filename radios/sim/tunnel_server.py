"""A simulated GBCS device's Tunneling server (Smart Energy cluster 0x0704), sans-I/O.

Written from the Smart Energy Tunneling cluster definition (server side) and GBCS
10.2.2.1 as the notes in /work/shared quote it, apart from the hub's client on purpose:
the two meet only in bytes. ZCL integers little-endian. What the server takes
(client -> server) and sends (server -> client)::

    in  0x00 RequestTunnel     protocol u8, manufacturer u16, flow control u8, max in u16
    in  0x01 CloseTunnel       tunnel id u16
    in  0x02 TransferData      tunnel id u16, data
    in  0x03 TransferDataError tunnel id u16, status u8
    out 0x00 RequestTunnelResponse  tunnel id u16, status u8, max in u16
    out 0x01 TransferData           tunnel id u16, data
    out 0x02 TransferDataError      tunnel id u16, status u8
    out 0x06 TunnelClosureNotification tunnel id u16

The device is a GBCS Type 1 device: it serves protocol 6 (GB-HGRP), manufacturer
0xFFFF, without flow control, and holds one tunnel (with its hub). A client asking
again gets the tunnel it has (GBCS: "the same tunnel ID"); another client, while one is
held, gets NO_MORE_TUNNEL_IDS. TransferData on a tunnel the device does not hold gets
TransferDataError NO_SUCH_TUNNEL, from a client that does not own it WRONG_DEVICE,
above 1500 bytes DATA_OVERFLOW; accepted data is answered with Default Response SUCCESS
(when asked for), then each message the handler returns goes back in a TransferData.
Messages the device originates (``originate``, its alerts) wait for a tunnel if none is
open. A failed RequestTunnel answers with tunnel id 0xFFFF (no tunnel).

Faults for the client's paths (spec keys, radios/sim/spec.py): ``busy`` answers BUSY to
that many RequestTunnels; ``no_ids`` NO_MORE_TUNNEL_IDS to that many; ``drop`` forgets
the tunnel when the TransferData with that number (1 = the first) arrives, which then
gets NO_SUCH_TUNNEL; ``refuse`` ("protocol" or "flow-control") answers every request
with PROTOCOL_NOT_SUPPORTED or FLOW_CONTROL_NOT_SUPPORTED.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import Final

__all__ = ["Answer", "TunnelFaults", "TunnelServer", "TunnelServerSend"]

PROTOCOL_GB_HGRP: Final = 6
MANUFACTURER_STANDARD: Final = 0xFFFF
MAX_INCOMING: Final = 1500
NO_TUNNEL: Final = 0xFFFF

# Received (client -> server) command ids.
RX_REQUEST_TUNNEL: Final = 0x00
RX_CLOSE_TUNNEL: Final = 0x01
RX_TRANSFER_DATA: Final = 0x02
RX_TRANSFER_DATA_ERROR: Final = 0x03
# Sent (server -> client) command ids.
TX_REQUEST_TUNNEL_RESPONSE: Final = 0x00
TX_TRANSFER_DATA: Final = 0x01
TX_TRANSFER_DATA_ERROR: Final = 0x02
TX_TUNNEL_CLOSURE_NOTIFICATION: Final = 0x06

# RequestTunnelResponse statuses
SUCCESS: Final = 0
BUSY: Final = 1
NO_MORE_TUNNEL_IDS: Final = 2
PROTOCOL_NOT_SUPPORTED: Final = 3
FLOW_CONTROL_NOT_SUPPORTED: Final = 4
# TransferDataError statuses
NO_SUCH_TUNNEL: Final = 0
WRONG_DEVICE: Final = 1
DATA_OVERFLOW: Final = 2
# ZCL statuses of a Default Response
ZCL_SUCCESS: Final = 0x00
ZCL_MALFORMED_COMMAND: Final = 0x80
ZCL_UNSUP_CLUSTER_COMMAND: Final = 0x81

Handler = Callable[[bytes], list[bytes]]


@dataclass(frozen=True)
class TunnelServerSend:
    """A cluster command server -> client (``to``: the client it goes to)."""

    to: Hashable
    command_id: int
    payload: bytes
    #: A TransferData asks for the client's Default Response; answers do not.
    wants_default_response: bool = False


@dataclass(frozen=True)
class Answer:
    """A Default Response to the client's frame ``tsn``."""

    to: Hashable
    tsn: int
    command_id: int
    status: int


Out = TunnelServerSend | Answer


@dataclass
class TunnelFaults:
    busy: int = 0
    no_ids: int = 0
    drop: int = 0  # 0: never
    refuse: str | None = None  # "protocol" | "flow-control"


@dataclass
class TunnelServer:
    """One device's tunnel server; ``handler`` gets each GBCS message received."""

    handler: Handler
    faults: TunnelFaults = field(default_factory=TunnelFaults)
    next_id: int = 1
    owner: Hashable | None = None
    tunnel: int | None = None
    transfers: int = 0  # TransferData received, every one counted (for ``drop``)
    log: list[str] = field(default_factory=list)
    _pending: list[bytes] = field(default_factory=list)

    def receive(self, client: Hashable, tsn: int, command_id: int, payload: bytes, wants_default_response: bool) -> list[Out]:
        """A cluster command from ``client``; returns what the device sends."""
        payload = bytes(payload)
        if command_id == RX_REQUEST_TUNNEL:
            return self._request(client, tsn, payload, wants_default_response)
        if command_id == RX_CLOSE_TUNNEL:
            return self._close(client, tsn, payload, wants_default_response)
        if command_id == RX_TRANSFER_DATA:
            return self._transfer(client, tsn, payload, wants_default_response)
        if command_id == RX_TRANSFER_DATA_ERROR:
            if len(payload) != 3:
                return self._malformed(client, tsn, command_id, wants_default_response)
            tunnel, status = struct.unpack("<HB", payload)
            self.log.append(f"the client reported TransferDataError {status} on tunnel {tunnel}")
            return self._ok(client, tsn, command_id, wants_default_response)
        # An error is answered whatever the disable-default-response bit says (ZCL 2.5.12.2).
        return [Answer(client, tsn, command_id, ZCL_UNSUP_CLUSTER_COMMAND)]

    def originate(self, data: bytes) -> list[Out]:
        """A message of the device's own (an alert): sent now, or once a tunnel opens."""
        if self.tunnel is None or self.owner is None:
            self._pending.append(bytes(data))
            return []
        return [self._data(bytes(data))]

    def forget(self) -> None:
        """Power lost: RAM holds the tunnel (messages waiting for one go too)."""
        self.owner = self.tunnel = None
        self._pending.clear()

    # -- commands ----------------------------------------------------------------

    def _request(self, client: Hashable, tsn: int, payload: bytes, wants_dr: bool) -> list[Out]:
        if len(payload) != 6:
            return self._malformed(client, tsn, RX_REQUEST_TUNNEL, wants_dr)
        protocol, manufacturer, flow_control, _their_max = struct.unpack("<BHBH", payload)
        status = self._admit(client, protocol, manufacturer, flow_control)
        if status != SUCCESS:
            self.log.append(f"RequestTunnel refused with status {status}")
            return [self._response(client, NO_TUNNEL, status)]
        if self.owner != client or self.tunnel is None:
            self.owner, self.tunnel = client, self.next_id
            self.next_id = self.next_id % 0xFFFE + 1  # never 0xFFFF
        self.log.append(f"tunnel {self.tunnel} open")
        out: list[Out] = [self._response(client, self.tunnel, SUCCESS)]
        pending, self._pending = self._pending, []
        out += [self._data(data) for data in pending]
        return out

    def _admit(self, client: Hashable, protocol: int, manufacturer: int, flow_control: int) -> int:
        if self.faults.busy > 0:
            self.faults.busy -= 1
            return BUSY
        if self.faults.no_ids > 0:
            self.faults.no_ids -= 1
            return NO_MORE_TUNNEL_IDS
        if self.faults.refuse == "protocol" or protocol != PROTOCOL_GB_HGRP or manufacturer != MANUFACTURER_STANDARD:
            return PROTOCOL_NOT_SUPPORTED
        if self.faults.refuse == "flow-control" or flow_control:
            return FLOW_CONTROL_NOT_SUPPORTED
        if self.owner is not None and self.owner != client:
            return NO_MORE_TUNNEL_IDS  # one tunnel, and another client holds it
        return SUCCESS

    def _close(self, client: Hashable, tsn: int, payload: bytes, wants_dr: bool) -> list[Out]:
        if len(payload) != 2:
            return self._malformed(client, tsn, RX_CLOSE_TUNNEL, wants_dr)
        (tunnel,) = struct.unpack("<H", payload)
        if tunnel == self.tunnel and client == self.owner:
            self.log.append(f"tunnel {tunnel} closed by the client")
            self.owner = self.tunnel = None
        return self._ok(client, tsn, RX_CLOSE_TUNNEL, wants_dr)

    def _transfer(self, client: Hashable, tsn: int, payload: bytes, wants_dr: bool) -> list[Out]:
        if len(payload) < 2:
            return self._malformed(client, tsn, RX_TRANSFER_DATA, wants_dr)
        (tunnel,) = struct.unpack_from("<H", payload)
        data = payload[2:]
        self.transfers += 1
        if self.faults.drop and self.transfers == self.faults.drop and self.tunnel is not None:
            self.log.append(f"tunnel {self.tunnel} forgotten (fault drop={self.faults.drop})")
            self.owner = self.tunnel = None
        if tunnel != self.tunnel:
            return [self._error(client, tunnel, NO_SUCH_TUNNEL)]
        if client != self.owner:
            return [self._error(client, tunnel, WRONG_DEVICE)]
        if len(data) > MAX_INCOMING:
            return [self._error(client, tunnel, DATA_OVERFLOW)]
        out: list[Out] = self._ok(client, tsn, RX_TRANSFER_DATA, wants_dr)
        out += [self._data(reply) for reply in self.handler(data)]
        return out

    # -- frames ------------------------------------------------------------------

    def _response(self, client: Hashable, tunnel: int, status: int) -> TunnelServerSend:
        return TunnelServerSend(client, TX_REQUEST_TUNNEL_RESPONSE, struct.pack("<HBH", tunnel, status, MAX_INCOMING))

    def _error(self, client: Hashable, tunnel: int, status: int) -> TunnelServerSend:
        self.log.append(f"TransferData on tunnel {tunnel}: error {status}")
        return TunnelServerSend(client, TX_TRANSFER_DATA_ERROR, struct.pack("<HB", tunnel, status))

    def _data(self, data: bytes) -> TunnelServerSend:
        assert self.tunnel is not None and self.owner is not None  # callers hold a tunnel
        return TunnelServerSend(self.owner, TX_TRANSFER_DATA, struct.pack("<H", self.tunnel) + data, wants_default_response=True)

    @staticmethod
    def _ok(client: Hashable, tsn: int, command_id: int, wants_dr: bool) -> list[Out]:
        return [Answer(client, tsn, command_id, ZCL_SUCCESS)] if wants_dr else []

    @staticmethod
    def _malformed(client: Hashable, tsn: int, command_id: int, wants_dr: bool) -> list[Out]:
        return [Answer(client, tsn, command_id, ZCL_MALFORMED_COMMAND)]  # an error: answered always
