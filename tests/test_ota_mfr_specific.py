"""Frames that are not this push's business must not decide it (issue 16 item 7).

A manufacturer-specific OTA command (ZCL frame control bit 2) is another
manufacturer's extension: its 0x06 is not an Upgrade End Request. An Upgrade End
Request about another image is not the device's word on ours. And frames with no
readable ZCL header are dropped before zigpy, which would raise on them.
"""

from __future__ import annotations

import pytest

from gateway.ota import codec
from gateway.ota import events as ev
from gateway.ota.events import SessionState, Status
from test_ota_session import ITYPE, MFR, NEW, OLD, H, T, answers, notes, only, session_in

OTHER_MFR = 0x1234
# Another manufacturer's command 0x06 with first payload byte 0x80, the frame seen on
# the bench: read as a standard Upgrade End Request it says MALFORMED_COMMAND.
MFR_SPECIFIC_06 = bytes([0x05, 0x34, 0x12, 0x2A, 0x06, 0x80]) + bytes.fromhex("1d12 0100 02000000")


# --------------------------------------------------------------------------- codec


def test_the_header_is_parsed_fully() -> None:
    got = codec.parse_header(bytes([0x15, 0x34, 0x12, 0x2A, 0x06]))
    assert got == codec.ZclHeader(
        frame_type=1, manufacturer_code=0x1234, server_to_client=False, disable_default_response=True,
        tsn=0x2A, command_id=0x06, length=5,
    )
    plain = codec.parse_header(bytes([0x18, 7, 0x0B, 0x06, 0x00]))
    assert plain == codec.ZclHeader(0, None, True, True, 7, 0x0B, 3)
    for short in (b"", b"\x01\x02", b"\x05\x34\x12\x2a"):
        assert isinstance(codec.parse_header(short), codec.Unparseable)


def test_a_manufacturer_specific_command_is_its_own_value_with_the_code() -> None:
    got = codec.decode_device_frame(MFR_SPECIFIC_06)
    assert got == ev.ManufacturerSpecificReceived(0x2A, OTHER_MFR, 0x06, MFR_SPECIFIC_06[5:])
    # Whatever the command id: none of the standard OTA commands applies.
    for command in (0x01, 0x03, 0x04, 0x08, 0x42):
        frame = bytes([0x05, 0x1D, 0x12, 9, command]) + bytes(20)
        assert codec.decode_device_frame(frame) == ev.ManufacturerSpecificReceived(9, 0x121D, command, bytes(20))


def test_a_manufacturer_specific_attribute_report_is_not_read_as_ours() -> None:
    # 0x0002 in that manufacturer's attribute space is not CurrentFileVersion.
    report = bytes([0x04, 0x34, 0x12, 3, 0x0A]) + bytes.fromhex("0200 23 02000000")
    assert codec.decode_device_frame(report) == codec.NotForSession(3, 0x0A, is_general=True)
    standard = bytes([0x00, 3, 0x0A]) + bytes.fromhex("0200 23 02000000")
    assert codec.decode_device_frame(standard) == ev.AttributesRead({0x0002: 2})


# --------------------------------------------------------------------------- session


def mfr_06(tsn: int = 0x2A) -> ev.ManufacturerSpecificReceived:
    return ev.ManufacturerSpecificReceived(tsn, OTHER_MFR, 0x06, MFR_SPECIFIC_06[5:])


@pytest.mark.parametrize("state", [T, H], ids=["running", "held"])
def test_a_manufacturer_specific_0x06_with_0x80_leaves_the_job_as_it_was(state: SessionState) -> None:
    s = session_in(state)
    acts = s.handle(mfr_06(), 500.0)
    assert s.state is state and s.reason != "device reported MALFORMED_COMMAND"
    assert not [a for a in acts if isinstance(a, ev.StateChanged)]
    answer = only(answers(acts), ev.SendDefaultResponse)
    assert answer == ev.SendDefaultResponse(0x2A, 0x06, Status.UNSUP_MANUF_CLUSTER_COMMAND)
    assert notes(acts, ev.NoteKind.IGNORED)
    # And it goes on as before: a held device still gets hold, a running one its blocks.
    if state is H:
        after = s.handle(ev.UpgradeEndRequested(5, Status.SUCCESS, MFR, ITYPE, NEW), 501.0)
        assert only(after, ev.SendUpgradeEndResponse).hold is True
    else:
        assert only(s.handle(ev.ImageBlockRequested(5, MFR, ITYPE, NEW, 0, 50), 501.0), ev.SendImageBlock)
    assert s.state is state


@pytest.mark.parametrize("state", [T, H], ids=["running", "held"])
@pytest.mark.parametrize(
    "ids",
    [(MFR, ITYPE, OLD), (MFR, 0x0002, NEW), (OTHER_MFR, ITYPE, NEW)],
    ids=["other-version", "other-image-type", "other-manufacturer"],
)
def test_a_failure_about_another_image_does_not_fail_the_job(state: SessionState, ids: tuple[int, int, int]) -> None:
    s = session_in(state)
    acts = s.handle(ev.UpgradeEndRequested(7, Status.MALFORMED_COMMAND, *ids), 500.0)
    assert s.state is state
    assert not [a for a in acts if isinstance(a, ev.StateChanged)]
    # Answered as the notes say for a failure status (a Default Response), so the
    # device does not count it unanswered.
    assert only(answers(acts), ev.SendDefaultResponse) == ev.SendDefaultResponse(7, 0x06, Status.SUCCESS)
    assert any("another image" in n.message for n in notes(acts, ev.NoteKind.WARNING))


@pytest.mark.parametrize("state", [T, H], ids=["running", "held"])
def test_a_failure_about_our_image_still_fails_the_job(state: SessionState) -> None:
    s = session_in(state)
    s.handle(ev.UpgradeEndRequested(7, Status.INVALID_IMAGE, MFR, ITYPE, NEW), 500.0)
    assert s.state is SessionState.FAILED
    assert s.reason is not None and "INVALID_IMAGE" in s.reason
