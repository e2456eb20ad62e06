"""Reference OTA codec built on zigpy's own ZCL schemas, for tests only.

gateway/ota/codec.py packs and unpacks the OTA frames with ``struct`` because
zigpy's schema classes cost hundreds of microseconds per frame. This module is the
codec as it was before (zigpy.zcl.clusters.general.Ota and zigpy.zcl.foundation doing
all the work), kept as the oracle that the fast codec must agree with byte for byte.
"""

from __future__ import annotations

import datetime as dt

from zigpy.zcl import foundation
from zigpy.zcl.clusters.general import Ota

from gateway.ota import events as ev
from gateway.ota.codec import NotForSession, Unparseable, Unsupported, to_zigbee_time

_DEVICE_SCHEMAS = {
    ev.DeviceCommand.QUERY_NEXT_IMAGE: Ota.ServerCommandDefs.query_next_image.schema,
    ev.DeviceCommand.IMAGE_BLOCK: Ota.ServerCommandDefs.image_block.schema,
    ev.DeviceCommand.IMAGE_PAGE: Ota.ServerCommandDefs.image_page.schema,
    ev.DeviceCommand.UPGRADE_END: Ota.ServerCommandDefs.upgrade_end.schema,
}


Decoded = ev.Event | Unsupported | NotForSession | Unparseable


def decode_device_frame(data: bytes) -> Decoded:
    """Decode an APS payload a device sent on cluster 0x0019. Never raises."""
    try:
        hdr, payload = foundation.ZCLHeader.deserialize(data)
    except (ValueError, KeyError, IndexError) as exc:
        return Unparseable(f"ZCL header: {exc}")

    tsn, command_id = int(hdr.tsn), int(hdr.command_id)
    mfr_specific = bool(hdr.frame_control.is_manufacturer_specific)
    if hdr.frame_control.is_general:
        if command_id == foundation.GeneralCommand.Report_Attributes and not mfr_specific:
            return _decode_report(tsn, payload)
        return NotForSession(tsn, command_id, is_general=True)
    if hdr.direction != foundation.Direction.Client_to_Server:
        return NotForSession(tsn, command_id, is_general=False)
    if mfr_specific:
        return ev.ManufacturerSpecificReceived(tsn, int(hdr.manufacturer), command_id, bytes(payload))
    try:
        command = ev.DeviceCommand(command_id)
        schema = _DEVICE_SCHEMAS[command]
    except (ValueError, KeyError):
        return Unsupported(tsn, command_id)
    try:
        # Trailing bytes are tolerated: later ZCL revisions append optional fields.
        cmd, _rest = schema.deserialize(payload)
    except (ValueError, KeyError, IndexError, AttributeError) as exc:
        return ev.MalformedFrameReceived(tsn, command_id, f"{command.name}: {exc}")
    return _to_event(tsn, command, cmd)


def _to_event(tsn: int, command: ev.DeviceCommand, cmd: foundation.CommandSchema) -> ev.Event:
    if command is ev.DeviceCommand.QUERY_NEXT_IMAGE:
        hw = getattr(cmd, "hardware_version", None)
        return ev.QueryNextImageRequested(
            tsn=tsn,
            manufacturer_code=int(cmd.manufacturer_code),
            image_type=int(cmd.image_type),
            current_file_version=int(cmd.current_file_version),
            hardware_version=None if hw is None else int(hw),
        )
    if command is ev.DeviceCommand.IMAGE_BLOCK:
        mbp = getattr(cmd, "minimum_block_period", None)
        node = getattr(cmd, "request_node_addr", None)
        return ev.ImageBlockRequested(
            tsn=tsn,
            manufacturer_code=int(cmd.manufacturer_code),
            image_type=int(cmd.image_type),
            file_version=int(cmd.file_version),
            file_offset=int(cmd.file_offset),
            maximum_data_size=int(cmd.maximum_data_size),
            minimum_block_period_ms=None if mbp is None else int(mbp),
            request_node_addr=None if node is None else bytes(node.serialize()),
        )
    if command is ev.DeviceCommand.IMAGE_PAGE:
        node = getattr(cmd, "request_node_addr", None)
        return ev.ImagePageRequested(
            tsn=tsn,
            manufacturer_code=int(cmd.manufacturer_code),
            image_type=int(cmd.image_type),
            file_version=int(cmd.file_version),
            file_offset=int(cmd.file_offset),
            maximum_data_size=int(cmd.maximum_data_size),
            page_size=int(cmd.page_size),
            response_spacing_ms=int(cmd.response_spacing),
            request_node_addr=None if node is None else bytes(node.serialize()),
        )
    return ev.UpgradeEndRequested(
        tsn=tsn,
        status=int(cmd.status),
        manufacturer_code=int(cmd.manufacturer_code),
        image_type=int(cmd.image_type),
        file_version=int(cmd.file_version),
    )


def _decode_report(tsn: int, payload: bytes) -> Decoded:
    try:
        cmd, _ = foundation.GENERAL_COMMANDS[foundation.GeneralCommand.Report_Attributes].schema.deserialize(payload)
        values = {int(r.attrid): int(r.value.value) for r in cmd.attribute_reports if isinstance(r.value.value, int)}
    except (ValueError, KeyError, IndexError, TypeError, AttributeError) as exc:
        return ev.MalformedFrameReceived(tsn, int(foundation.GeneralCommand.Report_Attributes), f"Report_Attributes: {exc}")
    return ev.AttributesRead(values)


def _header(tsn: int, command: int, *, general: bool = False) -> foundation.ZCLHeader:
    direction = foundation.Direction.Server_to_Client
    if general:
        return foundation.ZCLHeader.general(tsn, command, direction=direction)
    return foundation.ZCLHeader.cluster(tsn, command, direction=direction)


def encode_action(action: ev.Action, tsn: int) -> bytes:
    """ZCL bytes for a Send* action; ``tsn`` is the one to put in the header.

    The driver passes the request's TSN for answers and a fresh one for unsolicited
    frames (Image Notify, page blocks, the activation itself).
    """
    command: int
    fields: dict[str, object]
    general = False
    if isinstance(action, ev.SendImageNotify):
        command = ev.ServerCommand.IMAGE_NOTIFY
        schema = Ota.ClientCommandDefs.image_notify.schema
        fields = dict(
            payload_type=Ota.ImageNotifyCommand.PayloadType.QueryJitter_ManufacturerCode_ImageType_NewFileVersion,
            query_jitter=action.query_jitter,
            manufacturer_code=action.manufacturer_code,
            image_type=action.image_type,
            new_file_version=action.file_version,
        )
    elif isinstance(action, ev.SendQueryNextImageResponse):
        command = ev.ServerCommand.QUERY_NEXT_IMAGE_RESPONSE
        schema = Ota.ClientCommandDefs.query_next_image_response.schema
        fields = dict(status=foundation.Status(action.status))
        if action.status == ev.Status.SUCCESS:
            fields.update(
                manufacturer_code=action.manufacturer_code,
                image_type=action.image_type,
                file_version=action.file_version,
                image_size=action.image_size,
            )
    elif isinstance(action, ev.SendImageBlock):
        command = ev.ServerCommand.IMAGE_BLOCK_RESPONSE
        schema = Ota.ClientCommandDefs.image_block_response.schema
        fields = dict(
            status=foundation.Status.SUCCESS,
            manufacturer_code=action.manufacturer_code,
            image_type=action.image_type,
            file_version=action.file_version,
            file_offset=action.file_offset,
            image_data=action.data,
        )
    elif isinstance(action, ev.SendWaitForData):
        command = ev.ServerCommand.IMAGE_BLOCK_RESPONSE
        schema = Ota.ClientCommandDefs.image_block_response.schema
        fields = dict(
            status=foundation.Status.WAIT_FOR_DATA,
            current_time=0,  # 0 makes request_time an offset in seconds
            request_time=action.delay_s,
            minimum_block_period=action.minimum_block_period_ms,
        )
    elif isinstance(action, ev.SendAbort):
        command = ev.ServerCommand.IMAGE_BLOCK_RESPONSE
        schema = Ota.ClientCommandDefs.image_block_response.schema
        fields = dict(status=foundation.Status.ABORT)
    elif isinstance(action, ev.SendUpgradeEndResponse):
        command = ev.ServerCommand.UPGRADE_END_RESPONSE
        schema = Ota.ClientCommandDefs.upgrade_end_response.schema
        if action.hold:
            current, upgrade = 0, ev.UPGRADE_TIME_WAIT
        elif action.upgrade_at is None:
            current, upgrade = 0, 0  # offset 0 seconds: now
        else:
            # Both absolute: the device compares against the current time we give it.
            current = to_zigbee_time(dt.datetime.now(dt.timezone.utc))
            upgrade = to_zigbee_time(action.upgrade_at)
        fields = dict(
            manufacturer_code=action.manufacturer_code,
            image_type=action.image_type,
            file_version=action.file_version,
            current_time=current,
            upgrade_time=upgrade,
        )
    elif isinstance(action, ev.SendDefaultResponse):
        command = foundation.GeneralCommand.Default_Response
        schema = foundation.GENERAL_COMMANDS[foundation.GeneralCommand.Default_Response].schema
        fields = dict(command_id=action.command_id, status=foundation.Status(action.status))
        general = True
    else:
        raise TypeError(f"{type(action).__name__} is not a frame to send")
    payload = schema(**fields).serialize()
    return _header(tsn, command, general=general).serialize() + payload


def encode_unsupported(item: Unsupported) -> bytes:
    schema = foundation.GENERAL_COMMANDS[foundation.GeneralCommand.Default_Response].schema
    payload = schema(command_id=item.command_id, status=foundation.Status.UNSUP_CLUSTER_COMMAND).serialize()
    return _header(item.tsn, foundation.GeneralCommand.Default_Response, general=True).serialize() + payload
