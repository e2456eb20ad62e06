"""Key Establishment cluster frames: every frame round-trips, every truncation and
extension is refused naming the field and its offset (gateway/se/ke_frames.py)."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.se import ke_frames as kf
from gateway.se.errors import SeError
from gateway.se.suites import SUITE_1, SUITE_2, Suite

CERT = {1: bytes(range(48)), 2: bytes(range(100, 174))}
POINT = {1: b"\x03" + bytes(range(1, 22)), 2: b"\x02" + bytes(range(1, 37))}
MAC = bytes(range(0xA0, 0xB0))

# (frame, parser, suite the parser is given, the payload's fields as (name, size))
CASES: list[tuple[Any, Any, Suite | None, list[tuple[str, int]]]] = []
for _s in (SUITE_1, SUITE_2):
    _initiate_fields = [("suite", 2), ("ephemeral_data_generate_time", 1), ("confirm_key_generate_time", 1), ("identity", _s.certificate_length)]
    CASES += [
        (kf.InitiateKeyEstablishmentRequest(_s.bit, 7, 9, CERT[_s.number]), kf.parse_client_frame, None, _initiate_fields),
        (kf.InitiateKeyEstablishmentResponse(_s.bit, 12, 250, CERT[_s.number]), kf.parse_server_frame, None, _initiate_fields),
        (kf.EphemeralDataRequest(POINT[_s.number]), kf.parse_client_frame, _s, [("data", _s.point_length)]),
        (kf.EphemeralDataResponse(POINT[_s.number]), kf.parse_server_frame, _s, [("data", _s.point_length)]),
    ]
_terminate_fields = [("status", 1), ("wait_time", 1), ("suite", 2)]
CASES += [
    (kf.ConfirmKeyDataRequest(MAC), kf.parse_client_frame, None, [("mac", 16)]),
    (kf.ConfirmKeyDataResponse(MAC), kf.parse_server_frame, None, [("mac", 16)]),
    (kf.TerminateKeyEstablishment(kf.KeStatus.UNKNOWN_ISSUER, 30, 0x0003), kf.parse_client_frame, None, _terminate_fields),
    (kf.TerminateKeyEstablishment(kf.KeStatus.BAD_KEY_CONFIRM, 0, 0x0001), kf.parse_server_frame, None, _terminate_fields),
]
IDS = [f"{type(c[0]).__name__}-{'suite' + str(c[2].number) if c[2] else len(c[0].to_bytes())}" for c in CASES]


def _field_at(fields: list[tuple[str, int]], cut: int) -> tuple[str, int]:
    """The field a payload cut to ``cut`` bytes runs short in, and where it starts."""
    start = 0
    for name, size in fields:
        if cut < start + size:
            return name, start
        start += size
    raise AssertionError("not a truncation")


@pytest.mark.parametrize(("frame", "parse", "suite", "fields"), CASES, ids=IDS)
def test_every_frame_round_trips(frame: Any, parse: Any, suite: Suite | None, fields: list[tuple[str, int]]) -> None:
    payload = frame.to_bytes()
    assert len(payload) == sum(size for _, size in fields)
    again = parse(frame.command_id, payload, suite)
    assert again == frame and type(again) is type(frame)
    assert again.to_bytes() == payload


@pytest.mark.parametrize(("frame", "parse", "suite", "fields"), CASES, ids=IDS)
def test_every_truncation_is_refused_naming_the_short_field(frame: Any, parse: Any, suite: Suite | None, fields: list[tuple[str, int]]) -> None:
    payload = frame.to_bytes()
    for cut in range(len(payload)):
        name, offset = _field_at(fields, cut)
        with pytest.raises(kf.KeFrameError) as caught:
            parse(frame.command_id, payload[:cut], suite)
        err = caught.value
        assert (err.command, err.field, err.offset) == (frame.name, name, offset), cut
        assert err.reason.startswith("truncated: needs ")
        assert str(err) == f"{frame.name}: {name} at offset {offset}: {err.reason}"


@pytest.mark.parametrize(("frame", "parse", "suite", "fields"), CASES, ids=IDS)
def test_every_extension_is_refused_at_the_end_of_the_last_field(frame: Any, parse: Any, suite: Suite | None, fields: list[tuple[str, int]]) -> None:
    payload = frame.to_bytes()
    for extra in (b"\x00", b"\xff\xff", bytes(40)):
        with pytest.raises(kf.KeFrameError) as caught:
            parse(frame.command_id, payload + extra, suite)
        err = caught.value
        assert (err.command, err.field, err.offset) == (frame.name, "end", len(payload))
        assert err.reason == f"{len(extra)} byte{'s' if len(extra) > 1 else ''} after the last field"


def test_zcl_integers_are_little_endian_and_the_identity_raw() -> None:
    frame = kf.InitiateKeyEstablishmentRequest(0x0002, 0x11, 0x22, CERT[2])
    assert frame.to_bytes() == b"\x02\x00\x11\x22" + CERT[2]
    assert kf.TerminateKeyEstablishment(0x06, 0x0A, 0x0102).to_bytes() == b"\x06\x0a\x02\x01"


def test_command_ids_are_the_clusters() -> None:
    assert [c.command_id for c in (kf.InitiateKeyEstablishmentRequest, kf.EphemeralDataRequest, kf.ConfirmKeyDataRequest, kf.TerminateKeyEstablishment)] == [0, 1, 2, 3]
    assert [c.command_id for c in (kf.InitiateKeyEstablishmentResponse, kf.EphemeralDataResponse, kf.ConfirmKeyDataResponse)] == [0, 1, 2]
    assert kf.CLUSTER_ID == 0x0800 and kf.KEY_ESTABLISHMENT_SUITE_ATTRIBUTE == 0x0000
    assert {s.name: int(s) for s in kf.KeStatus} == {
        "UNKNOWN_ISSUER": 1, "BAD_KEY_CONFIRM": 2, "BAD_MESSAGE": 3,
        "NO_RESOURCES": 4, "UNSUPPORTED_SUITE": 5, "INVALID_CERTIFICATE": 6,
    }  # fmt: skip


def test_the_initiate_identity_is_sized_by_its_own_suite_field() -> None:
    # A suite-2 certificate under a suite-1 suite field is 26 bytes too long, and back.
    long = kf.InitiateKeyEstablishmentRequest(SUITE_1.bit, 1, 1, CERT[2]).to_bytes()
    with pytest.raises(kf.KeFrameError) as caught:
        kf.parse_client_frame(0, long)
    assert (caught.value.field, caught.value.offset) == ("end", 52)
    short = kf.InitiateKeyEstablishmentRequest(SUITE_2.bit, 1, 1, CERT[1]).to_bytes()
    with pytest.raises(kf.KeFrameError) as caught:
        kf.parse_client_frame(0, short)
    assert (caught.value.field, caught.value.offset, caught.value.reason) == ("identity", 4, "truncated: needs 74 bytes, 48 left")


@pytest.mark.parametrize("suite_field", [0x0000, 0x0003, 0x0004, 0x8000, 0xFFFF])
def test_an_initiate_naming_no_single_known_suite_is_its_own_refusal(suite_field: int) -> None:
    payload = kf.InitiateKeyEstablishmentRequest(suite_field, 1, 1, CERT[1]).to_bytes()
    with pytest.raises(kf.KeUnknownSuite) as caught:
        kf.parse_client_frame(0, payload)
    assert (caught.value.field, caught.value.offset, caught.value.suite) == ("suite", 0, suite_field)
    assert isinstance(caught.value, kf.KeFrameError) and isinstance(caught.value, SeError)


def test_later_frames_take_the_exchanges_suite() -> None:
    point1 = POINT[1]
    assert kf.parse_client_frame(1, point1, SUITE_1) == kf.EphemeralDataRequest(point1)
    with pytest.raises(kf.KeFrameError) as caught:
        kf.parse_client_frame(1, point1, SUITE_2)
    assert (caught.value.field, caught.value.offset) == ("data", 0)
    with pytest.raises(kf.KeFrameError) as caught:
        kf.parse_server_frame(1, POINT[2], None)
    assert caught.value.field == "data" and "none was given" in caught.value.reason


@pytest.mark.parametrize("parse", [kf.parse_client_frame, kf.parse_server_frame])
@pytest.mark.parametrize("command_id", [0x04, 0x05, 0x0B, 0xFF])
def test_unknown_commands_are_refused(parse: Any, command_id: int) -> None:
    with pytest.raises(kf.KeUnknownCommand) as caught:
        parse(command_id, b"")
    assert caught.value.command_id == command_id and caught.value.field == "command id"


def test_constructors_refuse_what_the_wire_cannot_carry() -> None:
    with pytest.raises(ValueError, match="suite must be a uint16"):
        kf.InitiateKeyEstablishmentRequest(0x10000, 1, 1, CERT[1])
    with pytest.raises(ValueError, match="ephemeral_data_generate_time must be a uint8"):
        kf.InitiateKeyEstablishmentResponse(1, 256, 1, CERT[1])
    with pytest.raises(ValueError, match="confirm_key_generate_time must be a uint8"):
        kf.InitiateKeyEstablishmentResponse(1, 1, -1, CERT[1])
    with pytest.raises(ValueError, match="identity must be bytes"):
        kf.InitiateKeyEstablishmentRequest(1, 1, 1, bytearray(48))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="status must be a uint8"):
        kf.TerminateKeyEstablishment(True, 1, 1)
    with pytest.raises(ValueError, match="mac must be bytes"):
        kf.ConfirmKeyDataRequest("00" * 16)  # type: ignore[arg-type]
    # What the parser would refuse can still be built (a simulated device's bad frame).
    assert len(kf.EphemeralDataRequest(b"\x02" * 5).to_bytes()) == 5


def test_a_terminate_keeps_an_unknown_status_as_sent() -> None:
    frame = kf.parse_client_frame(3, b"\x09\x00\x01\x00")
    assert isinstance(frame, kf.TerminateKeyEstablishment)
    assert frame.status == 9 and frame.known_status is None
    assert kf.TerminateKeyEstablishment(4, 0, 1).known_status is kf.KeStatus.NO_RESOURCES


def test_suite_bitmaps() -> None:
    assert kf.suite_bitmap([SUITE_2, SUITE_1]) == 0x0003
    assert kf.suites_in_bitmap(0x0003) == (SUITE_2, SUITE_1)
    assert kf.suites_in_bitmap(0x0001 | 0x0100) == (SUITE_1,)
    assert kf.suite_for_bit(0x0002) is SUITE_2 and kf.suite_for_bit(0x0003) is None


@settings(max_examples=150, deadline=None)
@given(
    command_id=st.integers(0, 5),
    payload=st.binary(max_size=90),
    suite=st.sampled_from([None, SUITE_1, SUITE_2]),
    server=st.booleans(),
)
def test_any_bytes_parse_or_are_refused_as_frame_errors(command_id: int, payload: bytes, suite: Suite | None, server: bool) -> None:
    parse = kf.parse_server_frame if server else kf.parse_client_frame
    try:
        frame = parse(command_id, payload, suite)
    except kf.KeFrameError as err:
        assert 0 <= err.offset <= len(payload)
        return
    assert frame.command_id == command_id and frame.to_bytes() == payload
