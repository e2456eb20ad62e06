"""Priorities without asyncio (issue 15): names and numbers, who gives way, and the
session's supersede (cancel's discard path, its own end state)."""

from __future__ import annotations

import pytest

from gateway.ota import events as ev
from gateway.ota.config import ImageInfo, SessionConfig
from gateway.ota.events import NoteKind, SessionState, Status
from gateway.ota.priority import DEFAULT_PRIORITY, Admission, PriorityError, admit, parse_priority, priority_label
from gateway.ota.session import LocalProtocolError, OtaSession
from tests.gateway.ota.test_ota_session import ALL_STATES, MFR, ITYPE, NEW, OLD, answers, block, end, notes, only, query, session_in


@pytest.mark.parametrize(
    "value, number",
    [("high", 9), ("HIGH", 9), (" normal ", 5), ("low", 1), ("0", 0), ("9", 9), (7, 7), (0, 0)],
)
def test_names_and_numbers(value: object, number: int) -> None:
    assert parse_priority(value) == number


@pytest.mark.parametrize("value", ["urgent", "10", "-1", 10, -1, True, 2.5, None, ""])
def test_everything_else_is_refused_with_the_choices(value: object) -> None:
    with pytest.raises(PriorityError, match=r"--priority .* give 0 to 9 \(higher is more important\) or one of low \(1\), normal \(5\), high \(9\)"):
        parse_priority(value, "--priority")


def test_labels_and_default() -> None:
    assert DEFAULT_PRIORITY == 5
    assert [priority_label(n) for n in (9, 5, 1, 3)] == ["high (9)", "normal (5)", "low (1)", "3"]


def test_admission_table_every_pair() -> None:
    for new in range(10):
        assert admit(new, None) is Admission.START
        for current in range(10):
            for replace in (False, True):
                got = admit(new, current, replace=replace)
                if new > current or (new == current and replace):
                    assert got is Admission.SUPERSEDE
                elif new < current:
                    assert got is Admission.QUEUE
                else:
                    assert got is Admission.REFUSE
                # A job whose activation was sent never yields: the new push queues.
                assert admit(new, current, replace=replace, current_can_yield=False) is Admission.QUEUE


# --------------------------------------------------------------------------- the session


@pytest.mark.parametrize("state", [SessionState.PENDING, SessionState.TRANSFERRING, SessionState.HELD, SessionState.SCHEDULED])
def test_supersede_ends_the_push_as_cancel_does(state: SessionState) -> None:
    s = session_in(state)
    acts = s.supersede(5000.0, "superseded by job 7")
    assert s.state is SessionState.SUPERSEDED and s.reason == "superseded by job 7"
    assert only(acts, ev.StateChanged) == ev.StateChanged(state, SessionState.SUPERSEDED, "superseded by job 7")
    assert any("push superseded" in n.message for n in notes(acts, NoteKind.CANCEL))
    assert s.discard_images == {(MFR, ITYPE, NEW)} and s.get_timer() is None
    # A transfer in progress: the next block request is aborted (the ZCL OTA abort answer).
    assert only(s.handle(block(0, tsn=1), 5001.0), ev.SendAbort).tsn == 1
    assert only(s.handle(query(tsn=3), 5001.0), ev.SendQueryNextImageResponse).status is Status.NO_IMAGE_AVAILABLE
    # A held image: Default Response ABORT to its Upgrade End, never a hold or a release.
    acts = s.handle(end(tsn=4), 5002.0)
    assert answers(acts) == [ev.SendDefaultResponse(4, 0x06, Status.ABORT)]
    assert "superseded" in notes(acts, NoteKind.DISCARD)[0].message


@pytest.mark.parametrize("state", [s for s in ALL_STATES if s not in (SessionState.PENDING, SessionState.TRANSFERRING, SessionState.HELD, SessionState.SCHEDULED)])
def test_supersede_refused_after_activation_and_in_end_states(state: SessionState) -> None:
    s = session_in(state)
    before = s.snapshot()
    with pytest.raises(LocalProtocolError, match=f"cannot supersede a push that is {state.value}"):
        s.supersede(5000.0, "x")
    assert s.snapshot() == before


def test_superseded_session_snapshot_keeps_the_discard() -> None:
    s = session_in(SessionState.HELD)
    s.supersede(600.0, "superseded")
    back = OtaSession.restore(s.snapshot(), s.image, SessionConfig())
    assert back.state is SessionState.SUPERSEDED and back.discard_images == {(MFR, ITYPE, NEW)}


def test_a_pending_push_notifies_at_once_after_aborting_another_download() -> None:
    s = OtaSession(bytes(8), ImageInfo(MFR, ITYPE, NEW, bytes(100)), SessionConfig(notify_interval_s=60.0, notify_attempts=5))
    s.start(0.0)
    assert s.notifies_sent == 1
    acts = s.handle(ev.ImageBlockRequested(2, MFR, ITYPE, OLD, 300, 63), 1.0)  # the superseded image
    frames = [a for a in acts if isinstance(a, ev.FRAME_ACTION_TYPES)]
    assert [type(a) for a in frames] == [ev.SendAbort, ev.SendImageNotify] and s.notifies_sent == 2
    assert s.state is SessionState.PENDING


def test_a_pending_push_notifies_at_once_after_a_discard() -> None:
    old = (MFR, ITYPE, OLD)
    s = OtaSession(bytes(8), ImageInfo(MFR, ITYPE, NEW, bytes(100)), SessionConfig(), discard={old})
    s.start(0.0)
    acts = s.handle(ev.UpgradeEndRequested(7, Status.SUCCESS, *old), 1.0)
    frames = [a for a in acts if isinstance(a, ev.FRAME_ACTION_TYPES)]
    assert frames == [ev.SendDefaultResponse(7, 0x06, Status.ABORT), ev.SendImageNotify(100, MFR, ITYPE, NEW)]
