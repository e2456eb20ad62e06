"""ZCL bytes of the OTA Upgrade cluster <-> session events and actions.

Every Image Block Request and Response passes through here, so the OTA frames are
packed and unpacked with ``struct``: zigpy's schema classes cost hundreds of
microseconds per frame, most of what a hub serving many devices would spend. The
layouts are ZCL r8 11.13; the tests check every frame against zigpy's own schemas
(tests/zigpy_codec_reference.py) byte for byte. The rarely seen Report Attributes
still goes through zigpy. The session never sees bytes; the driver never sees layouts.
"""

from __future__ import annotations

import datetime as dt
import struct
from dataclasses import dataclass
from typing import NamedTuple

from zigpy.zcl import foundation

from gateway.ota import events as ev

OTA_CLUSTER_ID = 0x0019

# Zigbee UTCTime counts seconds from 2000-01-01T00:00:00Z (ZCL 2.6.2.9).
ZIGBEE_EPOCH = dt.datetime(2000, 1, 1, tzinfo=dt.timezone.utc)

#: A cluster command the server does not implement: an event, which the session
#: answers UNSUP_CLUSTER_COMMAND like any other refusal (the old name stays for callers).
Unsupported = ev.UnsupportedCommandReceived


@dataclass(frozen=True)
class NotForSession:
    """A well-formed frame the session has no use for (e.g. a Default Response)."""

    tsn: int
    command_id: int
    is_general: bool


@dataclass(frozen=True)
class Unparseable:
    """Not even a ZCL header could be read: nothing can be answered."""

    reason: str


Decoded = ev.Event | NotForSession | Unparseable


def to_zigbee_time(when: dt.datetime) -> int:
    if when.tzinfo is None:
        raise ValueError("activation times must be timezone-aware UTC datetimes")
    seconds = int((when - ZIGBEE_EPOCH).total_seconds())
    if not 0 <= seconds < 0xFFFFFFFF:
        raise ValueError(f"{when.isoformat()} is outside Zigbee UTCTime's range")
    return seconds


def from_zigbee_time(seconds: int) -> dt.datetime:
    return ZIGBEE_EPOCH + dt.timedelta(seconds=seconds)


# Frame control of every frame we send: server to client, default response disabled
# (ZCL 2.4.1.1); 0x01 marks a cluster-specific command, 0x00 a general one.
_FC_CLUSTER_REPLY = 0x19
_FC_GENERAL_REPLY = 0x18
_FC_FRAME_TYPE = 0x03
_FC_MANUFACTURER = 0x04
_FC_SERVER_TO_CLIENT = 0x08
_FC_DISABLE_DEFAULT_RESPONSE = 0x10
_REPORT_ATTRIBUTES = 0x0A
_DEFAULT_RESPONSE = 0x0B

# Device -> server payloads (little-endian, ZCL r8 11.13.4-11.13.6).
_QUERY = struct.Struct("<BHHI")  # field control, manufacturer, image type, current version
_BLOCK = struct.Struct("<BHHIIB")  # field control, manufacturer, type, version, offset, max size
_PAGE = struct.Struct("<BHHIIBHH")  # ... max size, page size, response spacing
_END = struct.Struct("<BHHI")  # status, manufacturer, image type, file version
_U16 = struct.Struct("<H")

# Server -> device frames, header included: frame control, TSN, command id, payload.
_NOTIFY = struct.Struct("<BBBBBHHI")
_QUERY_RSP_OK = struct.Struct("<BBBBHHII")
_STATUS_ONLY = struct.Struct("<BBBB")
_BLOCK_RSP = struct.Struct("<BBBBHHIIB")
_WAIT_RSP = struct.Struct("<BBBBIIH")
_END_RSP = struct.Struct("<BBBHHIII")
_DEFAULT_RSP = struct.Struct("<BBBBB")

_IEEE_LEN = 8
_NOTIFY_PAYLOAD_TYPE = 0x03  # jitter, manufacturer, image type and new file version


class ZclHeader(NamedTuple):
    """The ZCL frame header (ZCL r8 2.4.1). A NamedTuple: built for every block request."""

    #: 0 general (foundation) command, 1 cluster-specific; 2 and 3 are reserved.
    frame_type: int
    #: The manufacturer code when the manufacturer-specific bit is set, else None.
    manufacturer_code: int | None
    server_to_client: bool
    disable_default_response: bool
    tsn: int
    command_id: int
    #: Header bytes: the payload starts here (3, or 5 with a manufacturer code).
    length: int


def parse_header(data: bytes) -> ZclHeader | Unparseable:
    """The ZCL header of ``data``, or why there is none. Never raises."""
    if not data:
        return Unparseable("ZCL header: empty frame")
    fc = data[0]
    if fc & _FC_MANUFACTURER:
        if len(data) < 5:
            return Unparseable(f"ZCL header: {len(data)} bytes, needs 5 with a manufacturer code")
        return ZclHeader(fc & _FC_FRAME_TYPE, data[1] | data[2] << 8, bool(fc & _FC_SERVER_TO_CLIENT),
                         bool(fc & _FC_DISABLE_DEFAULT_RESPONSE), data[3], data[4], 5)
    if len(data) < 3:
        return Unparseable(f"ZCL header: {len(data)} bytes, needs 3")
    return ZclHeader(fc & _FC_FRAME_TYPE, None, bool(fc & _FC_SERVER_TO_CLIENT),
                     bool(fc & _FC_DISABLE_DEFAULT_RESPONSE), data[1], data[2], 3)


def decode_device_frame(data: bytes, header: ZclHeader | None = None) -> Decoded:
    """Decode an APS payload a device sent on cluster 0x0019. Never raises.

    ``header`` is ``parse_header(data)`` when the caller has it already (the tap does).
    """
    if header is None:
        parsed = parse_header(data)
        if isinstance(parsed, Unparseable):
            return parsed
        header = parsed
    tsn, command_id, start = header.tsn, header.command_id, header.length
    if header.frame_type == 0:
        # A manufacturer-specific general command is about that manufacturer's
        # attributes, whose ids are not the OTA cluster's: zigpy's to match, not ours.
        if command_id == _REPORT_ATTRIBUTES and header.manufacturer_code is None:
            return _decode_report(tsn, data[start:])
        return NotForSession(tsn, command_id, is_general=True)
    # Frame types 2 and 3 are reserved; like zigpy we read them as cluster-specific.
    if header.server_to_client:
        return NotForSession(tsn, command_id, is_general=False)
    if header.manufacturer_code is not None:
        return ev.ManufacturerSpecificReceived(tsn, header.manufacturer_code, command_id, bytes(data[start:]))
    # Trailing bytes are tolerated: later ZCL revisions append optional fields.
    if command_id == ev.DeviceCommand.IMAGE_BLOCK:
        return _decode_block(tsn, data, start)
    if command_id == ev.DeviceCommand.IMAGE_PAGE:
        return _decode_page(tsn, data, start)
    if command_id == ev.DeviceCommand.QUERY_NEXT_IMAGE:
        return _decode_query(tsn, data, start)
    if command_id == ev.DeviceCommand.UPGRADE_END:
        if len(data) - start < _END.size:
            return _short(tsn, ev.DeviceCommand.UPGRADE_END, len(data) - start, _END.size)
        status, manufacturer, image_type, version = _END.unpack_from(data, start)
        return ev.UpgradeEndRequested(tsn, status, manufacturer, image_type, version)
    return Unsupported(tsn, command_id)


def _short(tsn: int, command: ev.DeviceCommand, have: int, need: int) -> ev.MalformedFrameReceived:
    return ev.MalformedFrameReceived(tsn, int(command), f"{command.name}: payload of {have} bytes, needs {need}")


def _decode_query(tsn: int, data: bytes, at: int) -> Decoded:
    have = len(data) - at
    if have < _QUERY.size:
        return _short(tsn, ev.DeviceCommand.QUERY_NEXT_IMAGE, have, _QUERY.size)
    fc, manufacturer, image_type, version = _QUERY.unpack_from(data, at)
    need = _QUERY.size + (2 if fc & 0x01 else 0)
    if have < need:
        return _short(tsn, ev.DeviceCommand.QUERY_NEXT_IMAGE, have, need)
    hardware = _U16.unpack_from(data, at + _QUERY.size)[0] if fc & 0x01 else None
    return ev.QueryNextImageRequested(tsn, manufacturer, image_type, version, hardware)


def _decode_block(tsn: int, data: bytes, at: int) -> Decoded:
    have = len(data) - at
    if have < _BLOCK.size:
        return _short(tsn, ev.DeviceCommand.IMAGE_BLOCK, have, _BLOCK.size)
    fc, manufacturer, image_type, version, offset, max_size = _BLOCK.unpack_from(data, at)
    need = _BLOCK.size + (_IEEE_LEN if fc & 0x01 else 0) + (2 if fc & 0x02 else 0)
    if have < need:
        return _short(tsn, ev.DeviceCommand.IMAGE_BLOCK, have, need)
    at += _BLOCK.size
    node = period = None
    if fc & 0x01:
        node = bytes(data[at : at + _IEEE_LEN])
        at += _IEEE_LEN
    if fc & 0x02:
        (period,) = _U16.unpack_from(data, at)
    return ev.ImageBlockRequested(tsn, manufacturer, image_type, version, offset, max_size, period, node)


def _decode_page(tsn: int, data: bytes, at: int) -> Decoded:
    have = len(data) - at
    if have < _PAGE.size:
        return _short(tsn, ev.DeviceCommand.IMAGE_PAGE, have, _PAGE.size)
    fc, manufacturer, image_type, version, offset, max_size, page, spacing = _PAGE.unpack_from(data, at)
    need = _PAGE.size + (_IEEE_LEN if fc & 0x01 else 0)
    if have < need:
        return _short(tsn, ev.DeviceCommand.IMAGE_PAGE, have, need)
    node = bytes(data[at + _PAGE.size : at + need]) if fc & 0x01 else None
    return ev.ImagePageRequested(tsn, manufacturer, image_type, version, offset, max_size, page, spacing, node)


def _decode_report(tsn: int, payload: bytes) -> Decoded:
    try:
        cmd, _ = foundation.GENERAL_COMMANDS[foundation.GeneralCommand.Report_Attributes].schema.deserialize(payload)
        reports = cmd.attribute_reports  # type: ignore[attr-defined]  # zigpy builds the schema's fields at run time
        values = {int(r.attrid): int(r.value.value) for r in reports if isinstance(r.value.value, int)}
    except (ValueError, KeyError, IndexError, TypeError, AttributeError) as exc:
        return ev.MalformedFrameReceived(tsn, _REPORT_ATTRIBUTES, f"Report_Attributes: {exc}")
    return ev.AttributesRead(values)


def is_client_request(data: bytes) -> bool:
    """A cluster-specific frame from client to server (Query Next Image, Image Block or
    Page Request, Upgrade End Request, ...): what an OTA server answers. The rest
    (attribute reports and read responses, Default Responses) is zigpy's to match."""
    return bool(data) and data[0] & (_FC_FRAME_TYPE | _FC_SERVER_TO_CLIENT) == 0x01


def encode_action(action: ev.Action, tsn: int, now: dt.datetime | None = None) -> bytes:
    """ZCL bytes for a Send* action; ``tsn`` is the one to put in the header.

    The driver passes the request's TSN for answers and a fresh one for unsolicited
    frames (Image Notify, page blocks, the activation itself). ``now`` (UTC) is the
    current time a scheduled Upgrade End Response carries; the wall clock by default.
    Raises ValueError for a field that does not fit its ZCL type.
    """
    try:
        return _encode(action, tsn, now)
    except struct.error as exc:
        raise ValueError(f"{type(action).__name__}: {exc}") from None


def _encode(action: ev.Action, tsn: int, now: dt.datetime | None) -> bytes:
    if isinstance(action, ev.SendImageBlock):  # by far the most frequent: tested first
        data = action.data
        if len(data) > 0xFF:
            raise ValueError(f"SendImageBlock: {len(data)} bytes of data, at most 255 fit")
        return _BLOCK_RSP.pack(
            _FC_CLUSTER_REPLY, tsn, ev.ServerCommand.IMAGE_BLOCK_RESPONSE, ev.Status.SUCCESS,
            action.manufacturer_code, action.image_type, action.file_version, action.file_offset, len(data),
        ) + bytes(data)
    if isinstance(action, ev.SendWaitForData):
        # current_time 0 makes request_time an offset in seconds.
        return _WAIT_RSP.pack(
            _FC_CLUSTER_REPLY, tsn, ev.ServerCommand.IMAGE_BLOCK_RESPONSE, ev.Status.WAIT_FOR_DATA,
            0, action.delay_s, action.minimum_block_period_ms,
        )
    if isinstance(action, ev.SendAbort):
        return _STATUS_ONLY.pack(_FC_CLUSTER_REPLY, tsn, ev.ServerCommand.IMAGE_BLOCK_RESPONSE, ev.Status.ABORT)
    if isinstance(action, ev.SendQueryNextImageResponse):
        command = ev.ServerCommand.QUERY_NEXT_IMAGE_RESPONSE
        if action.status != ev.Status.SUCCESS:
            return _STATUS_ONLY.pack(_FC_CLUSTER_REPLY, tsn, command, action.status)
        return _QUERY_RSP_OK.pack(
            _FC_CLUSTER_REPLY, tsn, command, ev.Status.SUCCESS,
            action.manufacturer_code, action.image_type, action.file_version, action.image_size,
        )
    if isinstance(action, ev.SendUpgradeEndResponse):
        if action.hold:
            current, upgrade = 0, ev.UPGRADE_TIME_WAIT
        elif action.upgrade_at is None:
            current, upgrade = 0, 0  # offset 0 seconds: now
        else:
            # Both absolute: the device compares against the current time we give it.
            current = to_zigbee_time(now or dt.datetime.now(dt.timezone.utc))
            upgrade = to_zigbee_time(action.upgrade_at)
        return _END_RSP.pack(
            _FC_CLUSTER_REPLY, tsn, ev.ServerCommand.UPGRADE_END_RESPONSE,
            action.manufacturer_code, action.image_type, action.file_version, current, upgrade,
        )
    if isinstance(action, ev.SendImageNotify):
        return _NOTIFY.pack(
            _FC_CLUSTER_REPLY, tsn, ev.ServerCommand.IMAGE_NOTIFY, _NOTIFY_PAYLOAD_TYPE,
            action.query_jitter, action.manufacturer_code, action.image_type, action.file_version,
        )
    if isinstance(action, ev.SendDefaultResponse):
        return _DEFAULT_RSP.pack(_FC_GENERAL_REPLY, tsn, _DEFAULT_RESPONSE, action.command_id, action.status)
    raise TypeError(f"{type(action).__name__} is not a frame to send")


def encode_unsupported(item: Unsupported) -> bytes:
    """The session's answer to ``item`` (Default Response UNSUP_CLUSTER_COMMAND), encoded."""
    return encode_action(ev.SendDefaultResponse(item.tsn, item.command_id, ev.Status.UNSUP_CLUSTER_COMMAND), item.tsn)


def reply_tsn(action: ev.Action) -> int | None:
    """The TSN an answer must carry, or None when the frame is unsolicited."""
    return getattr(action, "tsn", None)


__all__ = [
    "OTA_CLUSTER_ID",
    "Decoded",
    "NotForSession",
    "Unparseable",
    "Unsupported",
    "ZclHeader",
    "decode_device_frame",
    "encode_action",
    "encode_unsupported",
    "from_zigbee_time",
    "is_client_request",
    "parse_header",
    "reply_tsn",
    "to_zigbee_time",
]
