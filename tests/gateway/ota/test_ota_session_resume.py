"""The session's park/resume, nudges and send outcomes (issue 17 item 1), without asyncio.

Park and resume used to be snapshots taken and restored by the daemon and by the
one-shot push's follower, and a nudge was an Image Notify the wiring built and sent past
the session. Here they are session calls and timers; these tests drive them with bare
times.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from gateway.ota import codec
from gateway.ota import events as ev
from gateway.ota.config import SessionConfig
from gateway.ota.events import NoteKind, SessionState, Status
from gateway.ota.pacing import Pacer
from gateway.ota.session import NOTIFY_QUERY_JITTER, OtaSession
from gateway.ota.state import LocalProtocolError
from tests.gateway.ota.test_ota_session import ALL_STATES, ITYPE, MFR, NEW, block, delivered, end, make, make_image, notes, of, only, query, session_in

P, T, H, S = SessionState.PENDING, SessionState.TRANSFERRING, SessionState.HELD, SessionState.SCHEDULED
A, C, F, X = SessionState.ACTIVATED, SessionState.CONFIRMED, SessionState.FAILED, SessionState.CANCELLED
NUDGE = ev.SendImageNotify(NOTIFY_QUERY_JITTER, MFR, ITYPE, NEW)


def transferring(now: float = 1.0, **kw: Any) -> OtaSession:
    """A session that served blocks up to 189 at ``now``."""
    s = make(1000, **kw)
    delivered(s, s.start(0.0), 0.0)
    delivered(s, s.handle(query(), now), now)
    for offset in (0, 63, 126):
        delivered(s, s.handle(block(offset), now), now)
    assert s.state is T and s.offset == 189
    return s


# --------------------------------------------------------------------------- park freezes, resume re-arms


def test_park_freezes_the_notify_timer_and_resume_rearms_what_was_left() -> None:
    s = make()
    s.start(0.0)
    assert s.get_timer() == 60.0
    assert s.park(10.0) == [] and s.parked
    assert s.get_timer() is None and s.handle_timer(1000.0) == []
    s.resume(500.0)
    assert not s.parked and s.get_timer() == pytest.approx(550.0)  # 50 s were left at the park
    assert of(s.handle_timer(550.0), ev.SendImageNotify) and s.notifies_sent == 2


def test_a_parked_transfer_does_not_stall_and_gets_its_stall_timeout_in_full() -> None:
    s = transferring(now=1.0)
    s.park(100.0)
    assert s.handle_timer(10_000.0) == [] and s.state is T  # far past the 120 s stall
    s.resume(10_000.0)
    assert s.get_timer() == pytest.approx(10_120.0)
    # The device's next request after the outage is a resume at its own offset.
    acts = s.handle(block(126), 10_001.0)
    assert notes(acts, NoteKind.RESUME) and s.position == 189
    assert of(s.handle_timer(10_121.1), ev.StateChanged)[0].new is F


def test_a_parked_session_ignores_the_device_and_refuses_calls_but_cancel() -> None:
    s = session_in(H)
    s.park(10.0)
    acts = s.handle(end(tsn=9), 11.0)
    assert [n.kind for n in notes(acts)] == [NoteKind.IGNORED] and not of(acts, ev.SendUpgradeEndResponse)
    assert "parked" in acts[0].message
    with pytest.raises(LocalProtocolError, match="parked"):
        s.activate(12.0)
    assert s.state is H
    acts = s.cancel(13.0, "operator")
    assert only(acts, ev.StateChanged).new is X
    s.resume(14.0, nudge_after_s=1.0, nudges=3)
    assert s.get_timer() is None  # nothing frozen comes back to a cancelled push


def test_cancelled_while_parked_pending_push_does_not_wake_to_a_notify() -> None:
    s = make()
    s.start(0.0)
    s.park(1.0)
    s.cancel(2.0, "timed out")
    s.resume(3.0)
    assert s.get_timer() is None and s.handle_timer(100.0) == []


def test_parking_twice_keeps_the_first_freeze() -> None:
    s = make()
    s.start(0.0)
    s.park(10.0)
    s.park(40.0)
    s.resume(100.0)
    assert s.get_timer() == pytest.approx(150.0)


@pytest.mark.parametrize("state", ALL_STATES)
def test_park_and_resume_are_allowed_in_every_state_and_move_none(state: SessionState) -> None:
    s = session_in(state)
    s.park(900.0)
    acts = s.resume(901.0, nudge_after_s=5.0, nudges=3)
    assert s.state is state and not of(acts, ev.StateChanged)


@pytest.mark.parametrize("args", [dict(nudge_after_s=-1.0), dict(nudge_after_s=float("nan")), dict(nudges=-1), dict(nudges=1.5)])
def test_resume_refuses_nonsense_nudges(args: dict[str, Any]) -> None:
    s = transferring()
    with pytest.raises(LocalProtocolError):
        s.resume(2.0, **args)


# --------------------------------------------------------------------------- nudges


def test_a_silent_resumed_transfer_is_nudged_up_to_n_times_then_left_to_the_stall() -> None:
    s = transferring(now=1.0)
    s.park(2.0)
    s.resume(100.0, nudge_after_s=5.0, nudges=3)
    before = s.notifies_sent
    sent = []
    now = 100.0
    while (due := s.get_timer()) is not None and due < 200.0:
        now = due
        acts = s.handle_timer(now)
        sent += [(now, a) for a in of(acts, ev.SendImageNotify)]
        assert [n.kind for n in notes(acts)] == ([NoteKind.NUDGE] if of(acts, ev.SendImageNotify) else [])
        delivered(s, acts, now)
    # The same unicast Image Notify a start sends (jitter 100, this image's ids), 5 s apart.
    assert sent == [(pytest.approx(105.0), NUDGE), (pytest.approx(110.0), NUDGE), (pytest.approx(115.0), NUDGE)]
    assert s.notifies_sent == before + 3 and s.nudge_attempt == 3
    assert s.get_timer() == pytest.approx(220.0)  # only the stall is left
    assert s.state is T


def test_any_request_from_the_device_ends_the_nudges() -> None:
    s = transferring(now=1.0)
    s.park(2.0)
    s.resume(100.0, nudge_after_s=5.0, nudges=3)
    acts = s.handle_timer(105.0)
    assert only(acts, ev.SendImageNotify) == NUDGE and s.nudge_attempt == 1
    # The nudge worked: the device queries, is offered the same image, and resumes.
    assert only(s.handle(query(tsn=7), 106.0), ev.SendQueryNextImageResponse).status is Status.SUCCESS
    assert s.get_timer() == pytest.approx(226.0)  # the stall, restarted by the query
    assert not of(s.handle_timer(110.0) + s.handle_timer(115.0), ev.SendImageNotify)
    acts = s.handle(block(189, tsn=8), 107.0)
    assert notes(acts, NoteKind.RESUME) and of(acts, ev.SendImageBlock)


def test_a_device_talking_before_the_first_nudge_is_never_nudged() -> None:
    s = transferring(now=1.0)
    s.park(2.0)
    s.resume(100.0, nudge_after_s=5.0, nudges=3)
    s.handle(block(189), 101.0)
    assert not of(s.handle_timer(105.0), ev.SendImageNotify) and s.nudge_attempt == 0


@pytest.mark.parametrize("state", [P, H, S, A, C, F, X])
def test_only_a_transfer_is_nudged(state: SessionState) -> None:
    s = session_in(state)
    timer_before = s.get_timer()
    s.park(900.0)
    s.resume(1000.0, nudge_after_s=1.0, nudges=3)
    for now in (1001.0, 1002.0, 1003.0):
        assert not notes(s.handle_timer(now), NoteKind.NUDGE)
    if timer_before is None:
        assert s.get_timer() is None


def test_nudges_stop_when_the_transfer_ends() -> None:
    s = transferring()
    s.resume(10.0, nudge_after_s=5.0, nudges=3)  # after a restore: not parked, still nudged
    s.handle(end(), 11.0)
    assert s.state is H and s.get_timer() is None


def test_resume_without_nudges_sends_none() -> None:
    s = transferring()
    s.park(2.0)
    s.resume(3.0)
    assert s.get_timer() == pytest.approx(123.0)
    assert not of(s.handle_timer(60.0), ev.SendImageNotify)


def test_a_nudge_outcome_is_noted_not_ignored() -> None:
    s = transferring()
    s.resume(10.0, nudge_after_s=5.0, nudges=1)
    s.handle_timer(15.0)
    for outcome, kind in ((ev.NotifyDelivered(), NoteKind.NOTIFY), (ev.NotifyFailed("no ack"), NoteKind.WARNING)):
        acts = s.handle(outcome, 15.1)
        assert [n.kind for n in notes(acts)] == [kind], acts
        assert "transferring" in acts[0].message or kind is NoteKind.NOTIFY


def test_nudges_survive_a_snapshot() -> None:
    s = transferring()
    s.resume(10.0, nudge_after_s=5.0, nudges=3)
    s.handle_timer(15.0)
    snap = json.loads(json.dumps(s.snapshot()))
    assert snap["nudges"] == {"left": 2, "every_s": 5.0, "attempt": 1} and snap["timers"]["nudge"] == pytest.approx(5.0)
    r = OtaSession.restore(snap, make_image(1000), SessionConfig(), now=100.0)
    assert r.notifies_sent == s.notifies_sent and r.nudge_attempt == 1
    assert only(r.handle_timer(105.0), ev.SendImageNotify) == NUDGE
    assert r.nudge_attempt == 2 and r.get_timer() == pytest.approx(110.0)


def test_a_parked_snapshot_keeps_the_frozen_timers() -> None:
    s = make()
    s.start(0.0)
    s.park(10.0)
    snap = s.snapshot()
    assert snap["timers"] == {"notify": pytest.approx(50.0)}
    r = OtaSession.restore(snap, make_image(1000), SessionConfig(), now=1000.0)
    assert r.get_timer() == pytest.approx(1050.0)


def test_a_snapshot_from_before_nudges_restores_without_them() -> None:
    snap = transferring().snapshot()
    del snap["nudges"]
    snap["timers"].pop("nudge", None)
    r = OtaSession.restore(snap, make_image(1000), SessionConfig(), now=5.0)
    assert r.nudge_attempt == 0 and r.get_timer() == pytest.approx(125.0)


# --------------------------------------------------------------------------- send outcomes and the pacer


def test_every_frame_is_in_flight_on_the_pacer_until_its_outcome() -> None:
    pacer = Pacer(bytes_per_s=10_000, burst_bytes=10_000, max_inflight=8)
    s = make(1000, pacer=pacer)
    acts = s.start(0.0) + s.handle(query(), 0.1) + s.handle(block(0), 0.2) + s.handle(block(63), 0.3)
    frames = of(acts, ev.SendImageNotify) + of(acts, ev.SendQueryNextImageResponse) + of(acts, ev.SendImageBlock)
    assert len(frames) == 4 and pacer.inflight == 4
    assert s.handle(ev.NotifyDelivered(), 0.4) and pacer.inflight == 3
    assert s.handle(ev.FRAME_DELIVERED, 0.5) == [] and pacer.inflight == 2
    assert s.handle(ev.FrameNotDelivered("no ack"), 0.6) == [] and pacer.inflight == 1
    assert s.state is T and s.offset == 126  # a lost frame changes nothing: the device asks again


def test_frames_in_flight_saturate_the_pacer_until_outcomes_come_back() -> None:
    pacer = Pacer(bytes_per_s=10_000, burst_bytes=10_000, max_inflight=2)
    s = make(1000, pacer=pacer)
    s.handle(query(), 0.0)
    s.handle(block(0), 0.0)
    assert pacer.inflight == 2
    wait = s.handle(block(63), 0.1)
    assert of(wait, ev.SendWaitForData)  # refused: two frames still on the radio
    for _ in range(3):
        s.handle(ev.FRAME_DELIVERED, 0.2)
    assert pacer.inflight == 0
    assert of(s.handle(block(63), 1.5), ev.SendImageBlock)


@pytest.mark.parametrize("state", ALL_STATES)
@pytest.mark.parametrize("outcome", [ev.FRAME_DELIVERED, ev.FrameNotDelivered("x"), ev.NotifyDelivered(), ev.NotifyFailed("x")], ids=lambda o: type(o).__name__)
def test_an_outcome_ends_its_frame_in_every_state_even_parked(state: SessionState, outcome: ev.Event) -> None:
    pacer = Pacer(bytes_per_s=10_000, burst_bytes=10_000, max_inflight=8)
    s = session_in(state, pacer=pacer)
    pacer.sent_finished(0.0)
    for _ in range(pacer.inflight):
        pacer.sent_finished(0.0)
    pacer.sent_started(0.0)  # one of its frames is on the radio
    s.park(900.0)
    s.handle(outcome, 901.0)
    assert pacer.inflight == 0 and s.state is state


# --------------------------------------------------------------------------- unsupported commands


def test_an_unsupported_command_is_decoded_to_an_event_the_session_answers() -> None:
    # Query Device Specific File (0x08), which this server does not implement.
    frame = bytes([0x01, 0x21, 0x08]) + bytes(20)
    decoded = codec.decode_device_frame(frame)
    assert decoded == ev.UnsupportedCommandReceived(0x21, 0x08)
    s = transferring()
    acts = s.handle(decoded, 5.0)
    answer = only(acts, ev.SendDefaultResponse)
    assert answer == ev.SendDefaultResponse(0x21, 0x08, Status.UNSUP_CLUSTER_COMMAND)
    assert notes(acts, NoteKind.IGNORED) and s.state is T
    # The bytes the driver used to build itself for it.
    assert codec.encode_action(answer, 0x21) == codec.encode_unsupported(decoded)
