"""Z-Stack Monitor-and-Test (MT) framing over a UART, written for the emulator.

A frame on the wire is::

    SOF(0xFE) | LEN | CMD0 | CMD1 | DATA[LEN] | FCS

where ``CMD0 = (type << 5) | subsystem``, ``CMD1`` is the command id and ``FCS`` is the
XOR of LEN, CMD0, CMD1 and DATA.  ``LEN`` never exceeds 250.

The framing below is our own (an independent implementation, so that the real driver's
framing is checked against it).  The *payload* schemas are not re-invented: we import
zigpy-znp's command definitions (``zigpy_znp.commands``) and use them only to parse the
host's requests and to serialise our replies.  Those definitions are data, not behaviour;
every byte still crosses zigpy-znp's real UART code.
"""

from __future__ import annotations

import dataclasses
import enum
import logging

import zigpy_znp.commands as c  # command schemas only (see module docstring)
import zigpy_znp.types as zt  # CommandHeader and friends, for the schemas above

LOGGER = logging.getLogger(__name__)

SOF = 0xFE
MAX_DATA_LEN = 250

#: Z-Stack 3.30 on CC26x2 packs C structs with natural alignment (32-bit ARM).
ALIGN_STRUCTS = True


class CmdType(enum.IntEnum):
    POLL = 0
    SREQ = 1
    AREQ = 2
    SRSP = 3


def fcs(data: bytes) -> int:
    value = 0
    for byte in data:
        value ^= byte
    return value


@dataclasses.dataclass(frozen=True)
class MtFrame:
    """One MT frame: ``cmd0``/``cmd1`` and the raw payload."""

    cmd0: int
    cmd1: int
    data: bytes

    @property
    def type(self) -> int:
        return self.cmd0 >> 5

    @property
    def subsystem(self) -> int:
        return self.cmd0 & 0x1F

    @property
    def header(self) -> int:
        """The 16-bit header as zigpy-znp's ``CommandHeader`` packs it (cmd0 low byte)."""
        return self.cmd0 | (self.cmd1 << 8)

    def encode(self) -> bytes:
        if len(self.data) > MAX_DATA_LEN:
            raise ValueError(f"MT payload too long: {len(self.data)} > {MAX_DATA_LEN}")
        body = bytes([len(self.data), self.cmd0, self.cmd1]) + self.data
        return bytes([SOF]) + body + bytes([fcs(body)])

    def __repr__(self) -> str:
        try:
            kind = CmdType(self.type).name
        except ValueError:
            kind = f"type{self.type}"
        return f"MtFrame({kind} subsys=0x{self.subsystem:02X} id=0x{self.cmd1:02X} data={self.data.hex()})"


class MtParser:
    """Incremental frame extractor: feed bytes, get whole frames back.

    Garbage before a SOF is skipped; a frame with a bad FCS is logged and dropped (the
    parser resynchronises on the next SOF), as the real firmware does.
    """

    def __init__(self) -> None:
        self._buf = bytearray()
        self.bad_frames = 0
        self.skipped_bytes = 0

    def feed(self, data: bytes) -> list[MtFrame]:
        self._buf += data
        frames: list[MtFrame] = []

        while True:
            sof = self._buf.find(SOF)
            if sof < 0:
                self.skipped_bytes += len(self._buf)
                self._buf.clear()
                break
            if sof > 0:
                self.skipped_bytes += sof
                del self._buf[:sof]

            if len(self._buf) < 5:
                break

            length = self._buf[1]
            if length > MAX_DATA_LEN:
                LOGGER.error("MT: length byte %d > %d, resynchronising", length, MAX_DATA_LEN)
                self.bad_frames += 1
                del self._buf[:1]
                continue

            if len(self._buf) < length + 5:
                break

            body = bytes(self._buf[1 : 4 + length])
            checksum = self._buf[4 + length]
            if fcs(body) != checksum:
                LOGGER.error("MT: bad FCS 0x%02X (want 0x%02X) for %s, dropping", checksum, fcs(body), body.hex())
                self.bad_frames += 1
                del self._buf[:1]
                continue

            del self._buf[: length + 5]
            frames.append(MtFrame(cmd0=body[1], cmd1=body[2], data=body[3:]))

        return frames


class _SchemaFrame:
    """The two attributes zigpy-znp's ``CommandBase.from_frame`` reads."""

    __slots__ = ("header", "data")

    def __init__(self, header: int, data: bytes) -> None:
        self.header = zt.CommandHeader(header)
        self.data = data


def lookup_command(frame: MtFrame):
    """The zigpy-znp command class (Req/Rsp/Callback) for this header, or None."""
    return c.COMMANDS_BY_ID.get(zt.CommandHeader(frame.header))


def decode(frame: MtFrame):
    """Parse a frame into a zigpy-znp command object. Raises KeyError/ValueError."""
    cls = lookup_command(frame)
    if cls is None:
        raise KeyError(f"unknown MT command {frame!r}")
    return cls.from_frame(_SchemaFrame(frame.header, frame.data), align=ALIGN_STRUCTS)


def encode(command) -> MtFrame:
    """Serialise a zigpy-znp command object (our SRSP or AREQ) into an MtFrame."""
    general = command.to_frame(align=ALIGN_STRUCTS)
    header = int(general.header)
    return MtFrame(cmd0=header & 0xFF, cmd1=(header >> 8) & 0xFF, data=bytes(general.data))


def rpc_error(frame: MtFrame, code: int) -> MtFrame:
    """The SRSP Z-Stack sends for an SREQ it cannot handle (RPC_SYS_... error).

    Payload: ErrorCode, then the offending request's cmd0 and cmd1.
    """
    return MtFrame(cmd0=(CmdType.SRSP << 5) | 0x00, cmd1=0x00, data=bytes([code, frame.cmd0, frame.cmd1]))


class RpcErrorCode(enum.IntEnum):
    INVALID_SUBSYSTEM = 0x01
    INVALID_COMMAND_ID = 0x02
    INVALID_PARAMETER = 0x03
    INVALID_LENGTH = 0x04
