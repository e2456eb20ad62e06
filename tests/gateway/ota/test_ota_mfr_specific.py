"""Frames that are not this push's business must not decide it (issue 16 item 7).

A manufacturer-specific OTA command (ZCL frame control bit 2) is another
manufacturer's extension: its 0x06 is not an Upgrade End Request. An Upgrade End
Request about another image is not the device's word on ours. And frames with no
readable ZCL header are dropped before zigpy, which would raise on them.
"""

from __future__ import annotations

import asyncio
import logging
import random
import struct
from typing import Any

import pytest
import zigpy.types as zt

from gateway.ota import codec
from gateway.ota import events as ev
from gateway.ota.events import SessionState, Status
from tests.system.test_engine_e2e import IEEE, PPMID, image, network, spec, until
from tests.gateway.ota.test_ota_driver import spy_zigpy_device
from tests.gateway.ota.test_ota_session import ITYPE, MFR, NEW, OLD, H, T, answers, notes, only, session_in

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


# --------------------------------------------------------------------------- driver and tap


def fuzzed_frames(rng: random.Random, n: int) -> list[tuple[str, bytes]]:
    """Malformed and foreign OTA frames, none of them a well-formed standard request
    (a well-formed query for another image is a real refusal, not noise)."""

    def junk(most: int) -> bytes:
        return rng.randbytes(rng.randrange(most + 1))

    out: list[tuple[str, bytes]] = []
    for _ in range(n):
        kind = rng.choice(["no-header", "mfr-header-cut", "mfr-command", "truncated-request", "foreign-end", "not-a-request"])
        if kind == "no-header":
            data = junk(2)
        elif kind == "mfr-header-cut":
            data = bytes([rng.choice([0x04, 0x05, 0x15, 0x0C])]) + junk(3)
        elif kind == "mfr-command":
            fc = 0x05 | rng.choice([0x00, 0x10])  # with and without disable-default-response
            data = bytes([fc]) + rng.randbytes(2) + bytes([rng.randrange(256), rng.choice([0x06, 0x06, 0x01, 0x03, 0x04, 0x42])])
            data += bytes([0x80]) + junk(20) if rng.random() < 0.5 else junk(30)
        elif kind == "truncated-request":
            command, need = rng.choice([(0x01, 9), (0x03, 14), (0x04, 18), (0x06, 9)])
            data = bytes([0x01, rng.randrange(256), command]) + rng.randbytes(rng.randrange(need))
        elif kind == "foreign-end":
            # A failure status for an image that is not the one being pushed.
            status = rng.choice([0x80, 0x95, 0x96, 0x99, 0x01])
            version = rng.choice([OLD, 0x00000009, rng.randrange(3, 1 << 32)])
            data = bytes([0x01, rng.randrange(256), 0x06, status]) + struct.pack("<HHI", 0x121D, 0, version)
        else:
            # Server-to-client frames, general commands other than reports: zigpy's.
            fc = rng.choice([0x08, 0x09, 0x18, 0x19, 0x00, 0x10])
            command = rng.choice([0x01, 0x04, 0x07, 0x0B, 0x02, 0x05]) if fc & 0x08 else rng.choice([0x01, 0x04, 0x07, 0x0B])
            data = bytes([fc, rng.randrange(256), command]) + junk(12)
        out.append((kind, data))
    return out


def _packet(app: Any, ieee: zt.EUI64, data: bytes) -> zt.ZigbeePacket:
    device = app.get_device(ieee=ieee)
    return zt.ZigbeePacket(
        src=zt.AddrModeAddress(addr_mode=zt.AddrMode.NWK, address=device.nwk), src_ep=1,
        dst=zt.AddrModeAddress(addr_mode=zt.AddrMode.NWK, address=0x0000), dst_ep=1,
        tsn=data[1] if len(data) > 1 else 0, profile_id=0x0104, cluster_id=0x0019,
        data=zt.SerializableBytes(data), lqi=200, rssi=-50,
    )


async def test_fuzzed_frames_log_no_traceback_and_fail_no_job(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    # zigpy's own debug lines are its business (and off unless -vv); ours and the
    # radio path's are not.
    caplog.set_level(logging.WARNING, logger="zigpy")
    held_ieee, running_ieee = IEEE, zt.EUI64.convert(PPMID)
    slow = spec("min_block_period_ms=500", ieee=PPMID, kind="ppmid")  # stays TRANSFERRING for ~30 s
    async with network(spec(), slow) as (app, engine, _seen):
        held = engine.push(image(2000), held_ieee)
        assert await engine.wait(held, {SessionState.HELD}, timeout=30) is SessionState.HELD
        running = engine.push(image(4000), running_ieee)
        await until(lambda: running.session.state is SessionState.TRANSFERRING and running.session.offset > 0, timeout=30)
        zigpy_saw = {ieee: spy_zigpy_device(app, ieee) for ieee in (held_ieee, running_ieee)}
        caplog.clear()

        frames = fuzzed_frames(random.Random(0x16_07), 400)
        loop = asyncio.get_running_loop()
        for i, (_kind, data) in enumerate(frames):
            # As a radio library delivers them: from its own callbacks, so that anything
            # raised reaches asyncio's handler (which logs the traceback).
            loop.call_soon(app.packet_received, _packet(app, (held_ieee, running_ieee)[i % 2], data))
        delivered = loop.create_future()
        loop.call_soon(delivered.set_result, None)  # callbacks run in order: after all of them
        await delivered
        await until(lambda: not any(b.sends for b in engine.driver._bindings.values()), timeout=30)

        unreadable = sum(1 for kind, data in frames if isinstance(codec.parse_header(data), codec.Unparseable))
        assert unreadable > 50 and engine.driver.unparseable_frames == unreadable
        assert held.session.state is SessionState.HELD, held.session.reason
        assert running.session.state is SessionState.TRANSFERRING, running.session.reason
        for ieee, seen in zigpy_saw.items():
            assert all(not isinstance(codec.parse_header(d), codec.Unparseable) for d in seen), ieee
        tracebacks = [r for r in caplog.records if r.exc_info]
        assert tracebacks == [], tracebacks[0].getMessage()
        dropped = [r for r in caplog.records if "no readable ZCL header" in r.getMessage()]
        assert [r.levelno for r in dropped].count(logging.WARNING) == 1
