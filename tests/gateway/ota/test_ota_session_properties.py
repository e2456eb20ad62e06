"""Property tests: random device behaviour never crashes the session or lets a device
activate before activate(); misused calls raise only LocalProtocolError."""

from __future__ import annotations

import datetime as dt
import json
import math
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.ota import events as ev
from gateway.ota.config import ImageInfo, SessionConfig
from gateway.ota.events import END_STATES
from gateway.ota.pacing import Pacer
from eui64 import Eui64
from gateway.ota.session import OtaSession
from gateway.ota.state import LocalProtocolError, OtaProtocolError

MFR, ITYPE, OLD, NEW = 0x121D, 0x0001, 0x00000001, 0x00000002
IEEE = "00:0d:6f:00:0a:bc:de:f0"
UTC = dt.timezone.utc
BASE_UTC = dt.datetime(2030, 1, 1, tzinfo=UTC)

tsns = st.integers(0, 255)
# Mostly what a well-behaved device sends, sometimes not, so that runs get far.
mfrs = st.sampled_from([MFR] * 9 + [0x1234])
itypes = st.sampled_from([ITYPE] * 9 + [0x0002])
versions = st.sampled_from([NEW] * 8 + [OLD, 0x00000009])


def events(size: int) -> st.SearchStrategy[Any]:
    offsets = st.one_of(st.integers(0, size - 1), st.integers(0, size + 8), st.sampled_from([0, size - 1, size]))
    return st.one_of(
        st.builds(
            ev.QueryNextImageRequested,
            tsns,
            mfrs,
            itypes,
            st.sampled_from([OLD] * 6 + [NEW, NEW, 0x00000009]),
            st.sampled_from([None, None, 3, 3, 0, 0xFFFF]),
        ),
        st.builds(
            ev.ImageBlockRequested,
            tsns,
            mfrs,
            itypes,
            versions,
            offsets,
            st.integers(0, 255),
            st.one_of(st.none(), st.integers(0, 5000)),
        ),
        st.builds(
            ev.ImagePageRequested,
            tsns,
            mfrs,
            itypes,
            versions,
            offsets,
            st.integers(0, 255),
            st.integers(0, 600),
            st.integers(0, 2000),
        ),
        st.builds(
            ev.UpgradeEndRequested,
            tsns,
            st.sampled_from([0x00] * 8 + [0x95, 0x96, 0x99, 0x42]),
            mfrs,
            itypes,
            versions,
        ),
        st.builds(ev.MalformedFrameReceived, tsns, st.integers(0, 255), st.text(max_size=10)),
        # Another manufacturer's commands, including its 0x06 with a failure status.
        st.builds(ev.ManufacturerSpecificReceived, tsns, mfrs, st.sampled_from([0x06, 0x06, 0x01, 0x03, 0x42]),
                  st.binary(max_size=12) | st.just(bytes([0x80, 0x1D, 0x12, 0x01, 0x00, 0x02, 0, 0, 0]))),
        st.builds(
            ev.AttributesRead,
            st.dictionaries(st.sampled_from([0x0002, 0x0009, 0x000B, 0x000C]), st.sampled_from([0, 1, 2, OLD, NEW]), max_size=4),
        ),
        st.builds(ev.AttributeReadFailed, st.text(max_size=10)),
        st.just(ev.NotifyDelivered()),
        st.builds(ev.NotifyFailed, st.text(max_size=10)),
        st.builds(ev.UnsupportedCommandReceived, tsns, st.sampled_from([0x08, 0x0A, 0x42])),
        st.just(ev.FRAME_DELIVERED),
        st.builds(ev.FrameNotDelivered, st.text(max_size=10)),
        # The radio's block limit and a block refused as too long (issue 14).
        st.builds(ev.BlockLimitSet, st.integers(1, 80), st.text(max_size=10)),
        st.builds(ev.BlockTooLong, tsns | st.none(), offsets, st.integers(1, 70), st.integers(1, 80), st.text(max_size=10)),
    )


CALLS = ["timer", "timer", "start", "activate", "activate", "activate_at", "schedule", "unschedule", "cancel", "snapshot", "park", "resume"]


@st.composite
def scenarios(draw: st.DrawFn) -> tuple[OtaSession, list[tuple[float, Any]]]:
    size = draw(st.sampled_from([1, 63, 64, 100, 257]))
    image_kw: dict[str, Any] = {}
    if draw(st.booleans()):
        image_kw["min_hardware_version"] = 1
        image_kw["max_hardware_version"] = 4
    if draw(st.integers(0, 4)) == 0:
        image_kw["destination"] = Eui64.parse(draw(st.sampled_from([IEEE, "00:0d:6f:00:00:00:00:01"]))).air
    image = ImageInfo(MFR, ITYPE, NEW, bytes(range(256)) * (size // 256) + bytes(range(size % 256)), **image_kw)
    config = SessionConfig(
        block_cap=draw(st.sampled_from([63, 40, 1])),
        aps_encryption=draw(st.booleans()),
        stall_timeout_s=draw(st.sampled_from([20.0, 120.0])),
        confirm_timeout_s=draw(st.sampled_from([30.0, 300.0])),
        confirm_read_after_s=draw(st.sampled_from([1.0, 15.0])),
        page_spacing_floor_ms=draw(st.sampled_from([0, 100])),
    )
    pacer = draw(st.sampled_from([None, Pacer(bytes_per_s=100, burst_bytes=63, max_inflight=2)]))
    # Sometimes the push follows a cancelled one whose image the device may still hold
    # (another version, or this very image pushed again).
    discard = draw(st.sampled_from([(), (), ((MFR, ITYPE, OLD),), ((MFR, ITYPE, NEW),)]))
    session = OtaSession(IEEE, image, config, pacer, discard=discard)
    steps = draw(
        st.lists(
            st.tuples(
                st.one_of(st.floats(0, 2, allow_nan=False), st.floats(0, 2, allow_nan=False), st.floats(0, 400, allow_nan=False)),
                st.one_of(events(size), st.sampled_from(CALLS)),
            ),
            max_size=60,
        )
    )
    return session, steps


@st.composite
def guided(draw: st.DrawFn) -> tuple[OtaSession, list[tuple[float, Any]]]:
    """A well-behaved push (query, every block, end, holds, schedule, activate,
    confirmation) with random steps inserted and some dropped: reaches every state."""
    size = draw(st.sampled_from([1, 100, 257]))
    image = ImageInfo(MFR, ITYPE, NEW, bytes(range(256)) * (size // 256) + bytes(range(size % 256)))
    pacer = draw(st.sampled_from([None, Pacer(bytes_per_s=200, burst_bytes=126, max_inflight=2)]))
    session = OtaSession(IEEE, image, SessionConfig(), pacer)
    base: list[Any] = ["start", ev.QueryNextImageRequested(1, MFR, ITYPE, OLD)]
    base += [ev.ImageBlockRequested(2, MFR, ITYPE, NEW, offset, 63) for offset in range(0, size, 63)]
    base += [ev.UpgradeEndRequested(3, 0, MFR, ITYPE, NEW)] * 3
    base += ["schedule", ev.UpgradeEndRequested(4, 0, MFR, ITYPE, NEW), "activate"]
    base += [ev.UpgradeEndRequested(5, 0, MFR, ITYPE, NEW), "timer", ev.QueryNextImageRequested(6, MFR, ITYPE, NEW)]
    base += [ev.AttributesRead({0x0002: NEW}), ev.UpgradeEndRequested(7, 0, MFR, ITYPE, NEW)]
    steps: list[tuple[float, Any]] = [(draw(st.floats(0, 1.5)), step) for step in base]
    for _ in range(draw(st.integers(0, 3))):
        if steps:
            del steps[draw(st.integers(0, len(steps) - 1))]
    for _ in range(draw(st.integers(0, 8))):
        extra = draw(st.one_of(events(size), st.sampled_from(CALLS)))
        steps.insert(draw(st.integers(0, len(steps))), (draw(st.floats(0, 30)), extra))
    return session, steps


REQUESTS = (
    ev.QueryNextImageRequested,
    ev.ImageBlockRequested,
    ev.UpgradeEndRequested,
    ev.MalformedFrameReceived,
    ev.ManufacturerSpecificReceived,
    ev.UnsupportedCommandReceived,
)
ANSWERS = (
    ev.SendQueryNextImageResponse,
    ev.SendImageBlock,
    ev.SendWaitForData,
    ev.SendAbort,
    ev.SendUpgradeEndResponse,
    ev.SendDefaultResponse,
)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(scenarios(), guided()))
def test_random_sequences(scenario: tuple[OtaSession, list[tuple[float, Any]]]) -> None:
    s, steps = scenario
    now = 0.0
    activated = False
    high_water = 0
    cancelled = False
    for dt_s, step in steps:
        now += dt_s
        before = s.state
        if isinstance(step, str):
            if step == "snapshot":
                snap = s.snapshot()
                assert json.loads(json.dumps(snap)) == snap
                restored = OtaSession.restore(snap, s.image, s.config, s.pacer, now=s._now)
                assert restored.snapshot() == snap
                continue
            try:
                if step == "timer":
                    acts = s.handle_timer(now)
                    assert not (s.parked and acts), acts  # a parked push's timers are frozen
                elif step == "start":
                    acts = s.start(now)
                elif step == "activate":
                    acts = s.activate(now)
                elif step == "activate_at":
                    acts = s.activate(now, BASE_UTC + dt.timedelta(seconds=30), utc_now=BASE_UTC)
                elif step == "schedule":
                    acts = s.schedule(now, BASE_UTC)
                elif step == "unschedule":
                    acts = s.unschedule(now)
                elif step == "park":
                    acts = s.park(now)
                elif step == "resume":
                    acts = s.resume(now, nudge_after_s=1.0, nudges=2)
                else:
                    acts = s.cancel(now, "random")
            except OtaProtocolError as err:
                assert isinstance(err, LocalProtocolError), err
                assert step != "timer"
                assert s.state is before
                continue
            if step.startswith("activate"):
                activated = True
            if step == "cancel":
                cancelled = True
        else:
            parked = s.parked
            acts = s.handle(step, now)  # must never raise
            tsn_answers = [a for a in acts if isinstance(a, ANSWERS) and a.tsn is not None]
            if parked and not isinstance(step, ev.SEND_OUTCOMES):
                # The radio is away: nothing is heard, nothing is answered.
                assert [type(a) for a in acts] == [ev.Note] and acts[0].kind is ev.NoteKind.IGNORED, (step, acts)
            elif isinstance(step, REQUESTS):
                # Never leave a request unanswered, never answer it twice.
                assert len(tsn_answers) == 1, (step, acts)
                assert tsn_answers[0].tsn == step.tsn
            elif isinstance(step, ev.ImagePageRequested):
                assert len(tsn_answers) <= 1
            elif isinstance(step, ev.BlockTooLong):
                # At most the refused block again, to the same request, and smaller.
                assert all(isinstance(a, ev.SendImageBlock) and a.tsn == step.tsn and a.file_offset == step.file_offset
                           and len(a.data) < step.size for a in tsn_answers), (step, acts)
            else:
                assert tsn_answers == []

        for a in acts:
            if isinstance(a, ev.SendUpgradeEndResponse) and not a.hold:
                # The promise: nothing but activate() ever lets a device apply the image.
                assert activated, (step, acts)
            if isinstance(a, ev.SendImageBlock):
                assert 1 <= len(a.data) <= s.config.effective_block_cap
                assert s.radio_block_limit is None or len(a.data) <= s.radio_block_limit, (step, a)
                assert a.data == s.image.data[a.file_offset : a.file_offset + len(a.data)]
                assert (a.manufacturer_code, a.image_type, a.file_version) == (MFR, ITYPE, NEW)
            if isinstance(a, ev.SendWaitForData):
                assert 1 <= a.delay_s <= s.config.max_wait_for_data_s
                assert 0 <= a.minimum_block_period_ms <= 0xFFFF
        if isinstance(step, ev.UpgradeEndRequested) and step.status == 0:
            named = (step.manufacturer_code, step.image_type, step.file_version)
            if cancelled and named == (MFR, ITYPE, NEW):
                # A cancelled push makes the device drop its image: ABORT, nothing else.
                assert [a for a in acts if isinstance(a, ANSWERS)] == [ev.SendDefaultResponse(step.tsn, 0x06, ev.Status.ABORT)], acts
            if named in s.discard_images:
                assert not any(isinstance(a, ev.SendUpgradeEndResponse) for a in acts), acts
        changes = [a for a in acts if isinstance(a, ev.StateChanged)]
        state = before
        for change in changes:
            assert change.old is state and change.new is not state
            state = change.new
        assert state is s.state
        if isinstance(step, ev.ManufacturerSpecificReceived) or (
            isinstance(step, ev.UpgradeEndRequested) and (step.manufacturer_code, step.image_type, step.file_version) != (MFR, ITYPE, NEW)
        ):
            assert s.state is before, (step, acts)  # neither is the device's word on this push
        if before in END_STATES:
            assert s.state is before  # end states are final
        assert 0 <= s.offset <= s.image.size and s.offset >= high_water
        high_water = s.offset
        timer = s.get_timer()
        assert timer is None or math.isfinite(timer)
