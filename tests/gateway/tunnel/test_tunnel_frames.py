"""The Tunneling cluster's payloads: exact bytes both ways, refusals by field and offset."""

from __future__ import annotations

import pytest

from gateway.tunnel import frames as tf


def test_request_tunnel_is_the_gbcs_request() -> None:
    # protocol 6, manufacturer 0xFFFF, no flow control, 1500 (0x05DC) bytes in
    assert tf.RequestTunnel().to_bytes() == bytes.fromhex("06ffff00dc05")
    assert tf.parse_client_frame(0x00, bytes.fromhex("06ffff00dc05")) == tf.RequestTunnel()


@pytest.mark.parametrize(
    ("command_id", "frame", "wire"),
    [
        (0x00, tf.RequestTunnelResponse(0x1234, 0, 1500), "341200dc05"),
        (0x01, tf.TransferData(7, b"\xdd\x00\x01"), "0700dd0001"),
        (0x02, tf.TransferDataError(7, 2), "070002"),
        (0x06, tf.TunnelClosureNotification(0xBEEF), "efbe"),
    ],
)
def test_server_frames_round_trip(command_id: int, frame: tf.ServerFrame, wire: str) -> None:
    assert frame.to_bytes().hex() == wire
    assert tf.parse_server_frame(command_id, bytes.fromhex(wire)) == frame


@pytest.mark.parametrize(
    ("frame", "command_id", "wire"),
    [
        (tf.CloseTunnel(3), 0x01, "0300"),
        (tf.TransferData(3, b""), 0x02, "0300"),
        (tf.TransferDataError(3, 0), 0x03, "030000"),
    ],
)
def test_client_frames_round_trip(frame: tf.ClientFrame, command_id: int, wire: str) -> None:
    assert tf.client_command_id(frame) == command_id
    assert frame.to_bytes().hex() == wire
    assert tf.parse_client_frame(command_id, bytes.fromhex(wire)) == frame


@pytest.mark.parametrize(
    ("parse", "command_id", "wire", "message"),
    [
        (tf.parse_server_frame, 0x00, "3412", "RequestTunnelResponse: status at offset 2: truncated: needs 1 bytes, 0 left"),
        (tf.parse_server_frame, 0x00, "341200dc0500", "RequestTunnelResponse: end at offset 5: 1 trailing bytes"),
        (tf.parse_server_frame, 0x01, "07", "TransferData: tunnel_id at offset 0: truncated: needs 2 bytes, 1 left"),
        (tf.parse_server_frame, 0x03, "0700", "server command 0x03: command id at offset 0: not a GBCS tunnel command"),
        (tf.parse_client_frame, 0x00, "06ffff02dc05", "RequestTunnel: flow_control at offset 3: 0x02 is not a boolean (0 or 1)"),
        (tf.parse_client_frame, 0x04, "0000", "client command 0x04: command id at offset 0: not a GBCS tunnel command"),
        (tf.parse_client_frame, 0x03, "0300", "TransferDataError: status at offset 2: truncated: needs 1 bytes, 0 left"),
    ],
)
def test_refusals_name_field_and_offset(parse: object, command_id: int, wire: str, message: str) -> None:
    with pytest.raises(tf.TunnelFrameError) as err:
        parse(command_id, bytes.fromhex(wire))  # type: ignore[operator]
    assert str(err.value) == message


def test_constructors_refuse_values_the_wire_cannot_carry() -> None:
    with pytest.raises(ValueError, match="tunnel_id=65536"):
        tf.TransferData(0x10000, b"")
    with pytest.raises(ValueError, match="status=256"):
        tf.TransferDataError(1, 256)
