"""The struct codec against zigpy's own ZCL schemas (tests/zigpy_codec_reference.py).

gateway/ota/codec.py packs frames by hand for speed; these tests make sure that it
reads and writes exactly what zigpy's Ota cluster definitions do, for every command
and field combination, and for arbitrary bytes.
"""

from __future__ import annotations

import datetime as dt

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.ota import codec
from gateway.ota import events as ev

import zigpy_codec_reference as ref

u8 = st.integers(0, 0xFF)
u16 = st.integers(0, 0xFFFF)
u32 = st.integers(0, 0xFFFFFFFF)


def same(a: object, b: object) -> bool:
    """Equal events; for malformed frames only the TSN and command must match (the
    reasons are worded differently)."""
    if isinstance(a, ev.MalformedFrameReceived) and isinstance(b, ev.MalformedFrameReceived):
        return (a.tsn, a.command_id) == (b.tsn, b.command_id)
    if isinstance(a, codec.Unparseable) and isinstance(b, codec.Unparseable):
        return True
    return a == b


@st.composite
def device_frames(draw: st.DrawFn) -> bytes:
    """Well-formed and nearly well-formed OTA frames from a device."""
    fc = draw(st.sampled_from([0x01, 0x11, 0x05, 0x09, 0x00, 0x10, 0x02, 0x03]) | u8)
    head = bytes([fc]) + (draw(u16).to_bytes(2, "little") if fc & 0x04 else b"")
    command = draw(st.sampled_from([0x01, 0x03, 0x04, 0x06, 0x08, 0x0A, 0x0B, 0x02, 0x05]) | u8)
    field_control = draw(st.sampled_from([0, 1, 2, 3]) | u8)
    body = draw(st.sampled_from([
        # query next image
        bytes([field_control]) + draw(st.binary(min_size=8, max_size=8)) + draw(st.binary(max_size=3)),
        # image block / page request, with and without optional fields
        bytes([field_control]) + draw(st.binary(min_size=13, max_size=13)) + draw(st.binary(max_size=12)),
        bytes([field_control]) + draw(st.binary(min_size=17, max_size=17)) + draw(st.binary(max_size=10)),
        # upgrade end request
        draw(st.binary(min_size=9, max_size=9)),
        draw(st.binary(max_size=30)),
    ]))
    cut = draw(st.integers(0, len(body)))
    body = body[:cut] if draw(st.booleans()) else body
    return head + bytes([draw(u8), command]) + body


@settings(max_examples=3000, deadline=None)
@given(device_frames())
def test_decoding_agrees_with_zigpy(data: bytes) -> None:
    ours, theirs = codec.decode_device_frame(data), ref.decode_device_frame(data)
    assert same(ours, theirs), (data.hex(), ours, theirs)


@settings(max_examples=1000, deadline=None)
@given(st.binary(max_size=40))
def test_decoding_arbitrary_bytes_agrees_with_zigpy(data: bytes) -> None:
    ours, theirs = codec.decode_device_frame(data), ref.decode_device_frame(data)
    assert same(ours, theirs), (data.hex(), ours, theirs)


def test_the_generator_reaches_every_command_and_optional_field() -> None:
    # Not chance: the frames below decode to each event kind with each optional field.
    cases = {
        "01 07 01 01 1d12 0000 01000000 1111": ev.QueryNextImageRequested,
        "01 07 03 03 1d12 0000 01000000 40000000 3f 0102030405060708 f401": ev.ImageBlockRequested,
        "01 07 04 01 1d12 0000 01000000 00010000 32 0001 1400 0102030405060708": ev.ImagePageRequested,
        "01 07 06 00 1d12 0000 01000000": ev.UpgradeEndRequested,
    }
    for hex_, kind in cases.items():
        data = bytes.fromhex(hex_.replace(" ", ""))
        ours = codec.decode_device_frame(data)
        assert isinstance(ours, kind)
        assert ours == ref.decode_device_frame(data)
    block = codec.decode_device_frame(bytes.fromhex(next(iter(h for h in cases if h.startswith("01 07 03"))).replace(" ", "")))
    assert isinstance(block, ev.ImageBlockRequested)
    assert (block.request_node_addr, block.minimum_block_period_ms) == (bytes(range(1, 9)), 500)


actions = st.one_of(
    st.builds(ev.SendImageNotify, query_jitter=st.integers(1, 100), manufacturer_code=u16, image_type=u16, file_version=u32),
    st.builds(ev.SendQueryNextImageResponse, tsn=u8, status=st.sampled_from([ev.Status.NO_IMAGE_AVAILABLE, ev.Status.NOT_AUTHORIZED])),
    st.builds(ev.SendQueryNextImageResponse, tsn=u8, status=st.just(ev.Status.SUCCESS), manufacturer_code=u16,
              image_type=u16, file_version=u32, image_size=u32),
    st.builds(ev.SendImageBlock, tsn=u8, manufacturer_code=u16, image_type=u16, file_version=u32, file_offset=u32,
              data=st.binary(max_size=255)),
    st.builds(ev.SendWaitForData, tsn=u8, delay_s=u32, minimum_block_period_ms=u16),
    st.builds(ev.SendAbort, tsn=u8),
    st.builds(ev.SendUpgradeEndResponse, tsn=u8, manufacturer_code=u16, image_type=u16, file_version=u32,
              hold=st.booleans()),
    st.builds(ev.SendDefaultResponse, tsn=u8, command_id=u8,
              status=st.sampled_from([ev.Status.SUCCESS, ev.Status.MALFORMED_COMMAND, ev.Status.UNSUP_CLUSTER_COMMAND])),
)


@settings(max_examples=2000, deadline=None)
@given(actions, u8)
def test_encoding_agrees_with_zigpy(action: ev.Action, tsn: int) -> None:
    assert codec.encode_action(action, tsn) == ref.encode_action(action, tsn)


def test_a_scheduled_activation_carries_both_times() -> None:
    at = dt.datetime(2026, 12, 1, 2, 0, tzinfo=dt.timezone.utc)
    now = dt.datetime(2026, 11, 21, 9, 0, tzinfo=dt.timezone.utc)
    action = ev.SendUpgradeEndResponse(None, 0x121D, 0, 2, upgrade_at=at)
    ours = codec.encode_action(action, 9, now=now)
    theirs = ref.encode_action(action, 9)  # stamps the wall clock: compare all but current_time
    assert ours[:11] == theirs[:11] and ours[15:] == theirs[15:]
    assert int.from_bytes(ours[11:15], "little") == codec.to_zigbee_time(now)
    assert int.from_bytes(ours[15:19], "little") == codec.to_zigbee_time(at)


@given(u8, u8)
def test_unsupported_answer_agrees_with_zigpy(tsn: int, command: int) -> None:
    item = codec.Unsupported(tsn, command)
    assert codec.encode_unsupported(item) == ref.encode_unsupported(item)


def test_out_of_range_fields_are_refused_with_value_error() -> None:
    with pytest.raises(ValueError, match="at most 255"):
        codec.encode_action(ev.SendImageBlock(1, 0, 0, 0, 0, bytes(256)), 1)
    with pytest.raises(ValueError, match="SendWaitForData"):
        codec.encode_action(ev.SendWaitForData(1, 2**32, 0), 1)
