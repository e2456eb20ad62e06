"""The OTA server session's states, transition table and errors.

Theory of operation
-------------------
One ``OtaSession`` pushes one image to one device. Its life::

    PENDING ── Query Next Image ok, or a block/page request ──▶ TRANSFERRING
    PENDING, TRANSFERRING ── Upgrade End Request (SUCCESS) ──▶ HELD
    HELD ── schedule ──▶ SCHEDULED ── unschedule ──▶ HELD
    HELD, SCHEDULED ── block/page request (the device lost its image) ──▶ TRANSFERRING
    HELD, SCHEDULED ── activate ──▶ ACTIVATED ── new version reported ──▶ CONFIRMED
    any live state ── mismatch, stall, failure status for this image, old version ──▶ FAILED
    any live state ── cancel ──▶ CANCELLED
    PENDING, TRANSFERRING, HELD, SCHEDULED ── supersede ──▶ SUPERSEDED

CONFIRMED, FAILED, CANCELLED and SUPERSEDED are the end states (``END_STATES``); the session
still answers every request in them.

Cancelling also gives the session a duty that no state shows: the device may hold
the image, complete, waiting for our word. So every Upgrade End Request naming it is
answered with Default Response ABORT, the ZCL answer that makes a client discard the
image and go back to normal operation (``OtaSession._discard``), never with anything
that activates. A push that follows a cancelled one to the same device inherits that
duty (the engine passes ``discard``), because it now answers the device; it ends when
the device downloads the same image from this push again. Cancelling never
activates; a cancelled device ends up without the image instead of holding it for
ever, and a new push to it can go through. ``supersede`` (a push of higher priority
takes the device) ends a push the same way, in its own end state so that status and
the report can tell the two apart; not from ACTIVATED, whose image the device is
already applying.

The device drives everything but the calls the caller makes: ``start`` (Image
Notify), ``activate`` and ``schedule``/``unschedule`` (the activation gate),
``cancel``, and ``park``/``resume`` around a radio outage. Time only passes through
``handle_timer``.

Park and resume are no states (a parked push is still, say, transferring): ``park``
freezes the timers while the radio is away (no stall can run out, no notify is due),
``resume`` re-arms them from the moment the radio is back, the stall timeout in full.
A transfer resumed that way stays silent if the device gave up meanwhile (it keeps its
partial image until its next periodic query, hours on some clients), so ``resume`` may
also arm nudges: while TRANSFERRING and hearing no request, an Image Notify every
``nudge_after_s``, up to ``nudges`` times, each counted in ``notifies_sent`` like any
other. Any request from the device ends them; held devices never get one.

Every frame the session returns is answered by one send outcome (``SEND_OUTCOMES``),
in every state: the session has counted the frame in flight on its pacer since it
returned it, and the outcome ends that count.

Every rule lives in ``TRANSITIONS`` below: for each state, each trigger (an event
type or a ``Call``) maps to a ``Cell``, naming the session method that handles it
and the states it may lead to. The session refuses to move anywhere a cell does
not list (a bug in the session, not in the device), so the table is the whole
truth about where a push can go, and the tests check every cell.

A lookup miss is deliberate, never an exception out of ``handle``:

* an event with no cell is ignored with ``Note(IGNORED)``. Only events that need
  no answer are ever missing (attribute results, in states where they no longer
  matter): every request from the device has a cell in every state,
  because a device left unanswered may act on its own (Silicon Labs' client applies
  a held image after ten unanswered Upgrade End Requests when its
  UpgradeTimeoutPolicy is 0);
* a call with no cell raises ``LocalProtocolError`` naming the call and the state,
  and changes nothing (h11 moves to ERROR on any refusal; we do not, because the
  caller is the activation gate and a mistimed call must not lose a held device);
* a timer with no cell does nothing: no timer is armed in those states.

Errors follow h11: ``OtaProtocolError`` is the base, ``LocalProtocolError`` is the
caller's mistake, ``RemoteProtocolError`` the device's. Each carries a class-level
ZCL ``status``, the status the session answers with when it refuses a request. The
session raises remote errors only inside itself, from its checks, and turns them
into answers in one place per request type; ``handle`` never raises.
"""

from __future__ import annotations

import enum
import typing
from dataclasses import dataclass
from typing import ClassVar

from gateway.ota.events import (
    AttributeReadFailed,
    Event,
    AttributesRead,
    BlockLimitSet,
    BlockTooLong,
    FrameDelivered,
    FrameNotDelivered,
    ImageBlockRequested,
    ImagePageRequested,
    MalformedFrameReceived,
    ManufacturerSpecificReceived,
    NotifyDelivered,
    NotifyFailed,
    QueryNextImageRequested,
    SessionState,
    Status,
    UnsupportedCommandReceived,
    UpgradeEndRequested,
)

# --------------------------------------------------------------------------- errors


class OtaProtocolError(Exception):
    """Base of every OTA session error. ``status`` is the ZCL status it maps to."""

    status: ClassVar[Status] = Status.FAILURE

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class LocalProtocolError(OtaProtocolError):
    """The caller asked for something the session cannot do in its state."""


class RemoteProtocolError(OtaProtocolError):
    """The device asked for something it should not have."""


class ImageMismatch(RemoteProtocolError):
    """Query Next Image from a device the image is not for (ZCL OTA, Query Next Image Response)."""

    status = Status.NO_IMAGE_AVAILABLE


class NotAuthorized(RemoteProtocolError):
    """A device-specific image queried by another device (ZCL OTA, Query Next Image Response)."""

    status = Status.NOT_AUTHORIZED


class WrongImageRequested(RemoteProtocolError):
    """A block or page request naming another image: the download is aborted."""

    status = Status.ABORT


class MalformedRequest(RemoteProtocolError):
    """A request whose fields cannot be served (offset past the end, zero sizes)."""

    status = Status.MALFORMED_COMMAND


# --------------------------------------------------------------------------- table


class Call(enum.Enum):
    """Triggers that come from the caller rather than the device."""

    START = "start"
    ACTIVATE = "activate"
    SCHEDULE = "schedule"
    UNSCHEDULE = "unschedule"
    CANCEL = "cancel"
    SUPERSEDE = "supersede"
    PARK = "park"
    RESUME = "resume"
    TIMER = "timer"


Trigger = type | Call


@dataclass(frozen=True)
class Cell:
    """One cell of the table: the session method that handles the trigger in this
    state, and the states that handling may lead to (staying put is always allowed)."""

    handler: str
    next_states: frozenset[SessionState] = frozenset()


P = SessionState.PENDING
T = SessionState.TRANSFERRING
H = SessionState.HELD
S = SessionState.SCHEDULED
A = SessionState.ACTIVATED
C = SessionState.CONFIRMED
F = SessionState.FAILED
X = SessionState.CANCELLED
V = SessionState.SUPERSEDED


def _cell(handler: str, *next_states: SessionState) -> Cell:
    return Cell(handler, frozenset(next_states))


# The device's requests, answered in every state.
_QUERY: dict[SessionState, Cell] = {
    # ZCL OTA, Query Next Image Request, effect on receipt: check the image fits,
    # answer SUCCESS with the size, or
    # NO_IMAGE_AVAILABLE / NOT_AUTHORIZED and fail the push.
    P: _cell("_offer_image", T, F),
    T: _cell("_offer_image", F),
    # A held device that queries lost its image (reboot) or polls out of habit: offer
    # it again but stay held. One reporting the image version activated by itself,
    # unless it was sent its own activation command (release_by_command): confirmed.
    H: _cell("_offer_image_while_held", F, C),
    S: _cell("_offer_image_while_held", F, C),
    # After activation, the query's current version is the confirmation.
    A: _cell("_confirm_by_query", C, F),
    C: _cell("_refuse_query"),
    F: _cell("_refuse_query"),
    X: _cell("_refuse_query"),
    V: _cell("_refuse_query"),
}

# Devices resume at any offset (power cycle, gateway restart), even without a new
# query: serve blocks from PENDING and from HELD/SCHEDULED (the device lost its image).
_BLOCK: dict[SessionState, Cell] = {
    P: _cell("_serve_block", T),
    T: _cell("_serve_block"),
    H: _cell("_serve_block", T),
    S: _cell("_serve_block", T),
    A: _cell("_abort_block"),
    C: _cell("_abort_block"),
    F: _cell("_abort_block"),
    X: _cell("_abort_block"),
    V: _cell("_abort_block"),
}
_PAGE: dict[SessionState, Cell] = {
    P: _cell("_serve_page", T),
    T: _cell("_serve_page"),
    H: _cell("_serve_page", T),
    S: _cell("_serve_page", T),
    A: _cell("_abort_block"),
    C: _cell("_abort_block"),
    F: _cell("_abort_block"),
    X: _cell("_abort_block"),
    V: _cell("_abort_block"),
}

# ZCL OTA, Upgrade End Request, effect on receipt: a SUCCESS end request gets an
# Upgrade End Response (here: hold, until the gate activates); a failure status gets
# a Default Response. In every state, a SUCCESS end request naming an image in the
# session's ``discard_images`` (cancelled) gets Default Response ABORT instead: the
# device drops it. That is an answer, not a move, so no cell lists a state for it.
_END: dict[SessionState, Cell] = {
    P: _cell("_end_transfer", H, F),
    T: _cell("_end_transfer", H, F),
    H: _cell("_end_while_held", F),
    S: _cell("_end_while_held", F),
    A: _cell("_end_after_activation", F),
    C: _cell("_end_after_activation"),
    F: _cell("_end_after_close"),
    X: _cell("_end_after_close"),
    V: _cell("_end_after_close"),
}

_ALL_STATES = (P, T, H, S, A, C, F, X, V)

TRANSITIONS: dict[SessionState, dict[Trigger, Cell]] = {state: {} for state in _ALL_STATES}
for _state in _ALL_STATES:
    TRANSITIONS[_state][QueryNextImageRequested] = _QUERY[_state]
    TRANSITIONS[_state][ImageBlockRequested] = _BLOCK[_state]
    TRANSITIONS[_state][ImagePageRequested] = _PAGE[_state]
    TRANSITIONS[_state][UpgradeEndRequested] = _END[_state]
    TRANSITIONS[_state][MalformedFrameReceived] = _cell("_answer_malformed")
    # Another manufacturer's command: refused in every state, and no next state, so
    # it can never move a push (its 0x06 is not our Upgrade End Request).
    TRANSITIONS[_state][ManufacturerSpecificReceived] = _cell("_refuse_manufacturer_specific")
    # A command this server does not implement: refused in every state, never a move.
    TRANSITIONS[_state][UnsupportedCommandReceived] = _cell("_refuse_unsupported")
    # Send outcomes end a frame's count on the pacer whatever the state.
    TRANSITIONS[_state][FrameDelivered] = _cell("_frame_done")
    TRANSITIONS[_state][FrameNotDelivered] = _cell("_frame_done")
    # The radio's block limit (issue 14): taken in every state, never a move; a block
    # refused as too long ends its count too, and is served again smaller if transferring.
    TRANSITIONS[_state][BlockLimitSet] = _cell("_set_block_limit")
    TRANSITIONS[_state][BlockTooLong] = _cell("_block_too_long")
    # The radio went away and came back: every push, ended ones included (their
    # devices may still ask), is parked and resumed.
    TRANSITIONS[_state][Call.PARK] = _cell("_park")
    TRANSITIONS[_state][Call.RESUME] = _cell("_resume")

for _state in (P, T, H, S, A):
    TRANSITIONS[_state][AttributeReadFailed] = _cell("_note_read_failed")
    TRANSITIONS[_state][Call.CANCEL] = _cell("_cancel", X)
for _state in (P, T, H, S):
    TRANSITIONS[_state][Call.SUPERSEDE] = _cell("_supersede", V)
TRANSITIONS[P][AttributesRead] = _cell("_record_attributes")
TRANSITIONS[T][AttributesRead] = _cell("_record_attributes")
TRANSITIONS[H][AttributesRead] = _cell("_record_attributes", F, C)
TRANSITIONS[S][AttributesRead] = _cell("_record_attributes", F, C)
TRANSITIONS[A][AttributesRead] = _cell("_confirm_by_attributes", C, F)
# Attribute results in CONFIRMED/FAILED/CANCELLED are deliberately missing: late
# news, ignored with a Note. Notify outcomes are not: a notify goes out while PENDING
# (start, re-notify) and TRANSFERRING (a nudge), and after that it is late news, but
# its frame still ends its count on the pacer.
for _state in (P, T):
    TRANSITIONS[_state][NotifyDelivered] = _cell("_note_notify_delivered")
    TRANSITIONS[_state][NotifyFailed] = _cell("_note_notify_failed")
for _state in (H, S, A, C, F, X, V):
    TRANSITIONS[_state][NotifyDelivered] = _cell("_note_notify_late")
    TRANSITIONS[_state][NotifyFailed] = _cell("_note_notify_late")

TRANSITIONS[P][Call.START] = _cell("_start")
TRANSITIONS[H][Call.ACTIVATE] = _cell("_activate", A)
TRANSITIONS[S][Call.ACTIVATE] = _cell("_activate", A)
TRANSITIONS[H][Call.SCHEDULE] = _cell("_schedule", S)
TRANSITIONS[S][Call.SCHEDULE] = _cell("_schedule")
TRANSITIONS[S][Call.UNSCHEDULE] = _cell("_unschedule", H)
# Timers: re-notify while PENDING; page blocks, nudges and the stall timeout while
# TRANSFERRING; version reads and the confirm timeout while ACTIVATED. HELD and
# SCHEDULED never time out: the device waits for the gate, however long it takes.
TRANSITIONS[P][Call.TIMER] = _cell("_timer_pending")
TRANSITIONS[T][Call.TIMER] = _cell("_timer_transferring", F)
TRANSITIONS[A][Call.TIMER] = _cell("_timer_activated", F)

#: Every device event type, in the order of the ``Event`` union.
EVENT_TYPES: tuple[type, ...] = typing.get_args(Event)


def event_cell(state: SessionState, event_type: type) -> Cell | None:
    """The cell for a device event, or None: the event is ignored with a Note."""
    return TRANSITIONS[state].get(event_type)


def call_cell(state: SessionState, call: Call) -> Cell:
    """The cell for a caller's request; a miss is the caller's mistake."""
    cell = TRANSITIONS[state].get(call)
    if cell is None:
        raise LocalProtocolError(f"cannot {call.value} a push that is {state.value}")
    return cell
