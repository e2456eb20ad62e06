"""EZSP frames as the NCP sees them: headers, frame IDs and parameter encoding.

Header formats (UG100 / UG600):

* legacy (EZSP v4 and the first ``version`` command of every session):
  ``sequence, frame control, frame ID``;
* legacy extended (v5-v7): ``sequence, frame control, 0xFF, 0x00, frame ID``;
* extended (v8+): ``sequence, frame control low, frame control high, frame ID (u16 LE)``.

Responses repeat the command's sequence number with the direction bit (0x80) set in the
low frame-control byte; asynchronous callbacks (how a UART NCP delivers them) also set
callback type "asynchronous" (0x10). The high byte carries frame format version 1.

Parameter layouts come from bellows' own command tables (``bellows.ezsp.vNN.commands``)
and are (de)serialised with ``bellows.types``. We import those *definitions* at run
time, and nothing of bellows' host logic, because the emulator is bellows' peer: the
bytes still cross the real driver's ASH and EZSP code. The honest cost: a field bellows
defines wrongly would be wrong here too, so a real-dongle bench run stays the last word.
"""

from __future__ import annotations

import dataclasses
import enum
import importlib
import logging
from typing import Any

import bellows.types as t

from .status import on_wire

LOGGER = logging.getLogger(__name__)

FC_RESPONSE = 0x80
FC_CALLBACK_ASYNC = 0x10
FC_HIGH_FORMAT_1 = 0x01

# Versions whose bellows command tables are used: 14 and later share every layout the
# emulator implements; 13 (EmberZNet 7.4) differs in status codes (status.py) and in
# the messaging frames' layouts (layouts.py). 12 and older are not emulated.
SUPPORTED_VERSIONS = (13, 14, 16, 17, 18, 19)


class FrameFormat(enum.Enum):
    LEGACY = "legacy"
    LEGACY_EXTENDED = "legacy-extended"
    EXTENDED = "extended"


@dataclasses.dataclass(frozen=True)
class HostFrame:
    """One EZSP command frame from the host."""

    seq: int
    fmt: FrameFormat
    frame_id: int
    params: bytes
    control: int


class EzspFrameError(ValueError):
    pass


def parse_host_frame(data: bytes) -> HostFrame:
    """Split a host EZSP frame into header fields and parameter bytes."""
    if len(data) < 3:
        raise EzspFrameError(f"EZSP frame too short: {data.hex()}")
    seq, control = data[0], data[1]
    if control & FC_RESPONSE:
        raise EzspFrameError(f"host frame has the response bit set: {data.hex()}")
    if data[2] == 0xFF and len(data) >= 5:
        return HostFrame(seq, FrameFormat.LEGACY_EXTENDED, data[4], data[5:], control)
    if data[2] == FC_HIGH_FORMAT_1 and len(data) >= 5:
        frame_id = int.from_bytes(data[3:5], "little")
        return HostFrame(seq, FrameFormat.EXTENDED, frame_id, data[5:], control)
    return HostFrame(seq, FrameFormat.LEGACY, data[2], data[3:], control)


def build_ncp_frame(
    seq: int, fmt: FrameFormat, frame_id: int, payload: bytes, *, callback: bool = False
) -> bytes:
    control = FC_RESPONSE | (FC_CALLBACK_ASYNC if callback else 0)
    if fmt is FrameFormat.EXTENDED:
        header = bytes((seq & 0xFF, control, FC_HIGH_FORMAT_1)) + frame_id.to_bytes(2, "little")
    elif fmt is FrameFormat.LEGACY_EXTENDED:
        header = bytes((seq & 0xFF, control, 0xFF, 0x00, frame_id & 0xFF))
    else:
        header = bytes((seq & 0xFF, control, frame_id & 0xFF))
    return header + payload


@dataclasses.dataclass(frozen=True)
class Command:
    name: str
    frame_id: int
    tx_schema: Any  # dict[str, type] of command parameters
    rx_schema: Any  # dict[str, type] of response fields, or a Struct class


class CommandTable:
    """The commands of one EZSP protocol version, by name and by frame ID."""

    def __init__(self, version: int) -> None:
        module = importlib.import_module(f"bellows.ezsp.v{version}.commands")
        self.version = version
        self.by_name: dict[str, Command] = {}
        self.by_id: dict[int, Command] = {}
        for name, (frame_id, tx_schema, rx_schema) in module.COMMANDS.items():
            cmd = Command(name, frame_id, tx_schema, rx_schema)
            self.by_name[name] = cmd
            self.by_id[frame_id] = cmd

    def __getitem__(self, name: str) -> Command:
        return self.by_name[name]


_TABLES: dict[int, CommandTable] = {}


def command_table(version: int) -> CommandTable:
    if version not in _TABLES:
        _TABLES[version] = CommandTable(version)
    return _TABLES[version]


def decode_params(cmd: Command, data: bytes) -> dict[str, Any]:
    schema = cmd.tx_schema
    if not isinstance(schema, dict):
        raise EzspFrameError(f"{cmd.name}: unsupported command schema {schema!r}")
    values, rest = t.deserialize_dict(data, schema)
    if rest:
        LOGGER.debug("EZSP %s: %d trailing parameter bytes ignored", cmd.name, len(rest))
    return values


def encode_fields(cmd: Command, fields: dict[str, Any]) -> bytes:
    """Serialise response or callback fields in the order the version defines."""
    schema = cmd.rx_schema
    if isinstance(schema, dict):
        missing = set(schema) - set(fields)
        if missing:
            raise EzspFrameError(f"{cmd.name}: missing response fields {sorted(missing)}")
        return b"".join(type_(on_wire(fields[name], type_)).serialize() for name, type_ in schema.items())
    # A Struct response (getTokenData since v9; its status is EmberStatus before v14)
    types = {field.name: field.type for field in schema.fields}
    return schema(**{name: on_wire(value, types[name]) for name, value in fields.items()}).serialize()
