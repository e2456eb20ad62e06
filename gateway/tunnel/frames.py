"""The Tunneling cluster's (0x0704) ZCL payloads, as typed frames, both directions.

Command ids as Wireshark's packet-zbee-zcl-se.c names them (Smart Energy 1.x, the
Tunneling cluster); fields are little-endian::

  client -> server                          server -> client
  0x00 RequestTunnel                        0x00 RequestTunnelResponse
       protocol u8 | manufacturer u16            tunnel id u16 | status u8
       | flow control bool | max in u16          | max incoming transfer size u16
  0x01 CloseTunnel       tunnel id u16      0x01 TransferData   tunnel id u16 | data
  0x02 TransferData      tunnel id u16|data 0x02 TransferDataError tunnel id | status u8
  0x03 TransferDataError tunnel id|status   0x06 TunnelClosureNotification tunnel id u16

AckTransferData, ReadyData and the supported-protocols pair belong to flow control,
which a GBCS tunnel does not use (GBCS 10.2.2.1: flow control support false): they are
refused as unsupported by the parsers, like any other id.

For ESME, HCALCS and PPMID the data of a TransferData is the bare GBCS message. Parsing
refuses short and long payloads alike with ``TunnelFrameError`` naming the command, the
field and its byte offset in the payload; constructors check only that values fit the
wire, so a test or a device can build a frame a parser refuses.
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass
from typing import ClassVar, cast

__all__ = [
    "CLUSTER_ID",
    "GB_HGRP_PROTOCOL",
    "MANUFACTURER_NONE",
    "MAX_TRANSFER_SIZE",
    "ClientCommand",
    "ClientFrame",
    "CloseTunnel",
    "RequestTunnel",
    "RequestTunnelResponse",
    "ServerCommand",
    "ServerFrame",
    "client_command_id",
    "TransferData",
    "TransferDataError",
    "TransferDataStatus",
    "TunnelClosureNotification",
    "TunnelFrameError",
    "TunnelStatus",
    "parse_client_frame",
    "parse_server_frame",
]

CLUSTER_ID = 0x0704
#: The protocol id of a GBCS tunnel ("GB-HGRP", GBCS 10.2.2.1).
GB_HGRP_PROTOCOL = 6
#: A standard (not manufacturer-defined) protocol.
MANUFACTURER_NONE = 0xFFFF
#: What a GBCS hub declares it takes in one TransferData (GBCS 10.2.2.1).
MAX_TRANSFER_SIZE = 1500


class ClientCommand(enum.IntEnum):
    """Commands the client (the hub) sends; the server receives them."""

    REQUEST_TUNNEL = 0x00
    CLOSE_TUNNEL = 0x01
    TRANSFER_DATA = 0x02
    TRANSFER_DATA_ERROR = 0x03


class ServerCommand(enum.IntEnum):
    """Commands the server (the device) sends; the client receives them."""

    REQUEST_TUNNEL_RESPONSE = 0x00
    TRANSFER_DATA = 0x01
    TRANSFER_DATA_ERROR = 0x02
    TUNNEL_CLOSURE_NOTIFICATION = 0x06


class TunnelStatus(enum.IntEnum):
    """RequestTunnelResponse's status."""

    SUCCESS = 0x00
    BUSY = 0x01
    NO_MORE_TUNNEL_IDS = 0x02
    PROTOCOL_NOT_SUPPORTED = 0x03
    FLOW_CONTROL_NOT_SUPPORTED = 0x04


class TransferDataStatus(enum.IntEnum):
    """TransferDataError's status."""

    NO_SUCH_TUNNEL = 0x00
    WRONG_DEVICE = 0x01
    DATA_OVERFLOW = 0x02


class TunnelFrameError(ValueError):
    """A Tunneling payload refused: names the command, the field and its offset."""

    def __init__(self, command: str, field: str, offset: int, why: str) -> None:
        self.command = command
        self.field = field
        self.offset = offset
        self.why = why
        super().__init__(f"{command}: {field} at offset {offset}: {why}")


# (name, struct code) of each fixed field, in wire order; TransferData's data is the rest.
_Layout = tuple[tuple[str, str], ...]
_TUNNEL_ID: _Layout = (("tunnel_id", "H"),)


class _Frame:
    """Packs and checks the fixed fields its subclass lists in ``FIELDS``."""

    __slots__ = ()
    NAME: ClassVar[str]
    FIELDS: ClassVar[_Layout]

    def __post_init__(self) -> None:
        for name, code in self.FIELDS:
            value, bits = int(getattr(self, name)), 8 * struct.calcsize("<" + code)
            if not 0 <= value < 1 << bits:
                raise ValueError(f"{name}={value} does not fit {bits} bits")

    def to_bytes(self) -> bytes:
        codes = "".join(code for _, code in self.FIELDS)
        return struct.pack("<" + codes, *(int(getattr(self, name)) for name, _ in self.FIELDS)) + self._rest()

    def _rest(self) -> bytes:
        return b""


@dataclass(frozen=True, slots=True)
class RequestTunnel(_Frame):
    NAME: ClassVar[str] = "RequestTunnel"
    FIELDS: ClassVar[_Layout] = (("protocol_id", "B"), ("manufacturer_code", "H"), ("flow_control", "B"), ("max_incoming_transfer_size", "H"))
    protocol_id: int = GB_HGRP_PROTOCOL
    manufacturer_code: int = MANUFACTURER_NONE
    flow_control: bool = False
    max_incoming_transfer_size: int = MAX_TRANSFER_SIZE


@dataclass(frozen=True, slots=True)
class RequestTunnelResponse(_Frame):
    NAME: ClassVar[str] = "RequestTunnelResponse"
    FIELDS: ClassVar[_Layout] = (*_TUNNEL_ID, ("status", "B"), ("max_incoming_transfer_size", "H"))
    tunnel_id: int
    status: int
    max_incoming_transfer_size: int = MAX_TRANSFER_SIZE


@dataclass(frozen=True, slots=True)
class CloseTunnel(_Frame):
    NAME: ClassVar[str] = "CloseTunnel"
    FIELDS: ClassVar[_Layout] = _TUNNEL_ID
    tunnel_id: int


@dataclass(frozen=True, slots=True)
class TunnelClosureNotification(_Frame):
    NAME: ClassVar[str] = "TunnelClosureNotification"
    FIELDS: ClassVar[_Layout] = _TUNNEL_ID
    tunnel_id: int


@dataclass(frozen=True, slots=True)
class TransferData(_Frame):
    """Either direction: the command id says which (0x02 client's, 0x01 server's)."""

    NAME: ClassVar[str] = "TransferData"
    FIELDS: ClassVar[_Layout] = _TUNNEL_ID
    tunnel_id: int
    data: bytes

    def _rest(self) -> bytes:
        return bytes(self.data)


@dataclass(frozen=True, slots=True)
class TransferDataError(_Frame):
    """Either direction: the command id says which (0x03 client's, 0x02 server's)."""

    NAME: ClassVar[str] = "TransferDataError"
    FIELDS: ClassVar[_Layout] = (*_TUNNEL_ID, ("status", "B"))
    tunnel_id: int
    status: int


ClientFrame = RequestTunnel | CloseTunnel | TransferData | TransferDataError
ServerFrame = RequestTunnelResponse | TransferData | TransferDataError | TunnelClosureNotification

_CLIENT: dict[int, type[_Frame]] = {
    ClientCommand.REQUEST_TUNNEL: RequestTunnel,
    ClientCommand.CLOSE_TUNNEL: CloseTunnel,
    ClientCommand.TRANSFER_DATA: TransferData,
    ClientCommand.TRANSFER_DATA_ERROR: TransferDataError,
}
_SERVER: dict[int, type[_Frame]] = {
    ServerCommand.REQUEST_TUNNEL_RESPONSE: RequestTunnelResponse,
    ServerCommand.TRANSFER_DATA: TransferData,
    ServerCommand.TRANSFER_DATA_ERROR: TransferDataError,
    ServerCommand.TUNNEL_CLOSURE_NOTIFICATION: TunnelClosureNotification,
}


def _parse(table: dict[int, type[_Frame]], side: str, command_id: int, payload: bytes) -> _Frame:
    cls = table.get(command_id)
    if cls is None:
        raise TunnelFrameError(f"{side} command 0x{command_id:02X}", "command id", 0, "not a GBCS tunnel command")
    name = cls.NAME
    payload = bytes(payload)
    fields: dict[str, object] = {}
    offset = 0
    for field, fmt in cls.FIELDS:
        size = struct.calcsize("<" + fmt)
        if len(payload) < offset + size:
            raise TunnelFrameError(name, field, offset, f"truncated: needs {size} bytes, {len(payload) - offset} left")
        (value,) = struct.unpack_from("<" + fmt, payload, offset)
        if field == "flow_control":
            if value > 1:
                raise TunnelFrameError(name, field, offset, f"0x{value:02X} is not a boolean (0 or 1)")
            value = bool(value)
        fields[field] = value
        offset += size
    if cls is TransferData:
        fields["data"] = payload[offset:]
    elif offset != len(payload):
        raise TunnelFrameError(name, "end", offset, f"{len(payload) - offset} trailing bytes")
    return cls(**fields)


def parse_client_frame(command_id: int, payload: bytes) -> ClientFrame:
    """What a client sent (the server's view). Raises ``TunnelFrameError``."""
    return cast(ClientFrame, _parse(_CLIENT, "client", command_id, payload))


def parse_server_frame(command_id: int, payload: bytes) -> ServerFrame:
    """What a server sent (the client's view). Raises ``TunnelFrameError``."""
    return cast(ServerFrame, _parse(_SERVER, "server", command_id, payload))


def client_command_id(frame: ClientFrame) -> ClientCommand:
    """The command id a client sends ``frame`` with."""
    return {RequestTunnel: ClientCommand.REQUEST_TUNNEL, CloseTunnel: ClientCommand.CLOSE_TUNNEL,
            TransferData: ClientCommand.TRANSFER_DATA, TransferDataError: ClientCommand.TRANSFER_DATA_ERROR}[type(frame)]
