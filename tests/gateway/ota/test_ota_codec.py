"""The OTA codec: device bytes in, session events out; actions in, ZCL bytes out."""

from __future__ import annotations

import datetime as dt

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.ota import codec
from gateway.ota import events as ev


def frame(fc: int, tsn: int, cmd: int, payload: str) -> bytes:
    return bytes([fc, tsn, cmd]) + bytes.fromhex(payload.replace(" ", ""))


# Frame control 0x01: cluster-specific, client to server; 0x19 the server's answers.
def test_query_next_image_with_hardware_version() -> None:
    got = codec.decode_device_frame(frame(0x01, 7, 0x01, "01 1d12 0000 01000000 1111"))
    assert got == ev.QueryNextImageRequested(7, 0x121D, 0x0000, 1, 0x1111)


def test_query_next_image_without_hardware_version() -> None:
    got = codec.decode_device_frame(frame(0x01, 7, 0x01, "00 1d12 8400 01000000"))
    assert got == ev.QueryNextImageRequested(7, 0x121D, 0x0084, 1, None)


def test_image_block_with_minimum_block_period() -> None:
    got = codec.decode_device_frame(frame(0x01, 9, 0x03, "02 1d12 0000 dcacdcac 40000000 3f f401"))
    assert got == ev.ImageBlockRequested(9, 0x121D, 0, 0xACDCACDC, 64, 63, minimum_block_period_ms=500)


def test_image_page_request() -> None:
    got = codec.decode_device_frame(frame(0x01, 3, 0x04, "00 1d12 0000 dcacdcac 00010000 32 0004 6400"))
    assert got == ev.ImagePageRequested(3, 0x121D, 0, 0xACDCACDC, 256, 50, 1024, 100)


def test_upgrade_end_request() -> None:
    got = codec.decode_device_frame(frame(0x01, 4, 0x06, "96 1d12 0000 dcacdcac"))
    assert got == ev.UpgradeEndRequested(4, 0x96, 0x121D, 0, 0xACDCACDC)


def test_truncated_block_request_is_malformed_not_an_exception() -> None:
    got = codec.decode_device_frame(frame(0x01, 5, 0x03, "00 1d12 0000"))
    assert isinstance(got, ev.MalformedFrameReceived)
    assert (got.tsn, got.command_id) == (5, 0x03)
    assert "IMAGE_BLOCK" in got.reason


def test_unknown_command_is_unsupported() -> None:
    assert codec.decode_device_frame(frame(0x01, 5, 0x42, "")) == codec.Unsupported(5, 0x42)


def test_no_header_is_unparseable() -> None:
    assert isinstance(codec.decode_device_frame(b"\x01"), codec.Unparseable)


def test_server_direction_frames_are_not_for_the_session() -> None:
    got = codec.decode_device_frame(frame(0x09, 5, 0x05, "95"))
    assert got == codec.NotForSession(5, 0x05, is_general=False)


def test_attribute_report_becomes_attributes_read() -> None:
    # Report Attributes (0x0A): attr 0x0002, type uint32 (0x23), value 0xACDCACDC.
    got = codec.decode_device_frame(frame(0x18, 1, 0x0A, "0200 23 dcacdcac"))
    assert got == ev.AttributesRead({0x0002: 0xACDCACDC})


def test_encode_block_response_bytes() -> None:
    data = codec.encode_action(ev.SendImageBlock(5, 0x121D, 0, 1, 10, b"abc"), 5)
    assert data == bytes.fromhex("19 05 05 00 1d12 0000 01000000 0a000000 03 616263".replace(" ", ""))


def test_encode_hold_is_all_ones_upgrade_time() -> None:
    data = codec.encode_action(ev.SendUpgradeEndResponse(8, 0x121D, 0, 1, hold=True), 8)
    assert data == bytes.fromhex("19 08 07 1d12 0000 01000000 00000000 ffffffff".replace(" ", ""))


def test_encode_activate_now_is_zero_offset() -> None:
    data = codec.encode_action(ev.SendUpgradeEndResponse(None, 0x121D, 0, 1), 9)
    assert data[-8:] == bytes(8)


def test_encode_activate_at_absolute_time() -> None:
    at = dt.datetime(2030, 1, 15, 9, 0, tzinfo=dt.timezone.utc)
    data = codec.encode_action(ev.SendUpgradeEndResponse(None, 0x121D, 0, 1, upgrade_at=at), 9)
    assert int.from_bytes(data[-4:], "little") == codec.to_zigbee_time(at)
    assert codec.from_zigbee_time(codec.to_zigbee_time(at)) == at
    assert int.from_bytes(data[-8:-4], "little") > 0  # current time given: both absolute


def test_naive_datetime_refused() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        codec.to_zigbee_time(dt.datetime(2030, 1, 1))


def test_encode_wait_for_data_and_abort() -> None:
    wait = codec.encode_action(ev.SendWaitForData(3, 5, 250), 3)
    assert wait == bytes.fromhex("19 03 05 97 00000000 05000000 fa00".replace(" ", ""))
    assert codec.encode_action(ev.SendAbort(3), 3) == bytes.fromhex("190305 95".replace(" ", ""))


def test_encode_query_responses() -> None:
    ok = codec.encode_action(ev.SendQueryNextImageResponse(2, ev.Status.SUCCESS, 0x121D, 0, 1, 361), 2)
    assert ok == bytes.fromhex("19 02 02 00 1d12 0000 01000000 69010000".replace(" ", ""))
    none = codec.encode_action(ev.SendQueryNextImageResponse(2, ev.Status.NO_IMAGE_AVAILABLE), 2)
    assert none == bytes.fromhex("190202 98".replace(" ", ""))


def test_encode_default_response_is_a_general_command() -> None:
    data = codec.encode_action(ev.SendDefaultResponse(4, 0x06, ev.Status.SUCCESS), 4)
    assert data == bytes.fromhex("18 04 0b 06 00".replace(" ", ""))
    unsup = codec.encode_unsupported(codec.Unsupported(4, 0x42))
    assert unsup == bytes.fromhex("18 04 0b 42 81".replace(" ", ""))


def test_notify_payload_type_3() -> None:
    data = codec.encode_action(ev.SendImageNotify(100, 0x121D, 0x84, 2), 1)
    assert data == bytes.fromhex("19 01 00 03 64 1d12 8400 02000000".replace(" ", ""))


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=80))
def test_decode_never_raises(data: bytes) -> None:
    codec.decode_device_frame(data)


@settings(max_examples=200, deadline=None)
@given(st.sampled_from([0x01, 0x03, 0x04, 0x06]), st.binary(max_size=40))
def test_decode_any_payload_of_known_commands(cmd: int, payload: bytes) -> None:
    got = codec.decode_device_frame(bytes([0x01, 0x10, cmd]) + payload)
    assert isinstance(got, (ev.QueryNextImageRequested, ev.ImageBlockRequested, ev.ImagePageRequested, ev.UpgradeEndRequested, ev.MalformedFrameReceived))


@pytest.mark.parametrize(
    ("frame_control", "expected"),
    [(0x01, True), (0x05, True), (0x11, True), (0x15, True),  # cluster-specific, client to server
     (0x00, False), (0x10, False),  # general (reports, read responses, Default Responses)
     (0x09, False), (0x19, False), (0x18, False)],  # server to client
)
def test_is_client_request_by_frame_control(frame_control: int, expected: bool) -> None:
    assert codec.is_client_request(bytes([frame_control, 0x01, 0x03])) is expected


def test_is_client_request_refuses_an_empty_frame() -> None:
    assert codec.is_client_request(b"") is False
