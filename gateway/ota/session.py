"""The sans-I/O OTA server session: one device, one image.

``OtaSession`` turns events from one device (``gateway.ota.events``) into actions
for the driver, and keeps the state of the push: see ``gateway.ota.state`` for the
theory of operation and the transition table. It never sends, sleeps or reads a
clock: time comes in as ``now`` (monotonic seconds), timers go out through
``get_timer``, and ``handle_timer(now)`` runs them.

The one promise above all others: no device activates the image until ``activate``
is called. Every Upgrade End Request with status SUCCESS is answered, in every state
before activation (failed pushes included), with upgrade time 0xFFFFFFFF ("wait for
the server"), because a client whose requests go unanswered may apply the image by
itself (Silicon Labs' ota-client counts unanswered requests and runs the upgrade at
its threshold when UpgradeTimeoutPolicy is 0).

The one exception is an image the device must discard (``discard_images``): the
image of a cancelled push, and, for a push that follows a cancelled one to the same
device, the image that push left behind. An Upgrade End Request naming it is
answered with a Default Response ABORT, which makes the client drop the image and
return to normal operation (querying): an answer, so it counts against no timeout,
and never one that activates.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import math
from collections.abc import Hashable, Iterable
from dataclasses import dataclass, replace
from typing import Any

from eui64 import Eui64
from gateway.ota.config import ImageInfo, SessionConfig
from gateway.ota.events import (
    END_STATES,
    Action,
    Attribute,
    AttributeReadFailed,
    AttributesRead,
    BlockLimitSet,
    BlockTooLong,
    FRAME_ACTION_TYPES,
    SEND_OUTCOMES,
    DeviceCommand,
    Event,
    FrameDelivered,
    FrameNotDelivered,
    ImageBlockRequested,
    ImagePageRequested,
    MalformedFrameReceived,
    ManufacturerSpecificReceived,
    Note,
    NoteKind,
    NotifyDelivered,
    NotifyFailed,
    Progress,
    QueryNextImageRequested,
    ReadAttributes,
    SendAbort,
    SendDefaultResponse,
    SendImageBlock,
    SendImageNotify,
    SendQueryNextImageResponse,
    SendUpgradeEndResponse,
    SendWaitForData,
    SessionState,
    StateChanged,
    Status,
    UnsupportedCommandReceived,
    UpgradeEndRequested,
)
from gateway.ota.pacing import Pacer
from gateway.ota.state import (
    TRANSITIONS,
    A,
    F,
    H,
    P,
    S,
    T,
    Call,
    Cell,
    ImageMismatch,
    LocalProtocolError,
    MalformedRequest,
    NotAuthorized,
    OtaProtocolError,
    RemoteProtocolError,
    WrongImageRequested,
    call_cell,
    event_cell,
)

__all__ = [
    "ImageInfo",
    "LocalProtocolError",
    "OtaProtocolError",
    "OtaSession",
    "RemoteProtocolError",
    "SessionConfig",
]

SNAPSHOT_FORMAT = 1
#: (manufacturer code, image type, file version): how Upgrade End Requests name an image.
ImageIds = tuple[int, int, int]
#: Image Notify query jitter: 100 asks every client that hears it to query.
NOTIFY_QUERY_JITTER = 100
#: The device's requests: hearing any of them ends the nudges of a resumed transfer.
_REQUESTS = (QueryNextImageRequested, ImageBlockRequested, ImagePageRequested, UpgradeEndRequested)
#: Timer names in snapshots and frozen (parked) timers, with the states they run in.
_TIMER_STATES = {
    "notify": frozenset({P}),
    "stall": frozenset({T}),
    "nudge": frozenset({T}),
    "read": frozenset({A}),
    "confirm": frozenset({A}),
    "grace": frozenset({A}),
}
#: What the session reads once per push before the transfer (ZCL OTA client attributes).
TRANSFER_START_ATTRIBUTES = (
    int(Attribute.UPGRADE_ACTIVATION_POLICY),
    int(Attribute.UPGRADE_TIMEOUT_POLICY),
    int(Attribute.CURRENT_FILE_VERSION),
)


# --------------------------------------------------------------------------- helpers


def _status_name(code: int) -> str:
    try:
        return Status(code).name
    except ValueError:
        return f"status 0x{code:02X}"


def _v(version: int | None) -> str:
    return "none" if version is None else f"0x{version:08X}"


@dataclass
class _Page:
    """The unsolicited blocks still owed for an Image Page Request."""

    next_offset: int
    end: int
    cap: int
    spacing_s: float
    due: float


# --------------------------------------------------------------------------- session


class OtaSession:
    """One push of one image to one device. See the module and ``gateway.ota.state``."""

    def __init__(
        self,
        device_ieee: Eui64 | bytes | str,
        image: ImageInfo,
        config: SessionConfig,
        pacer: Pacer | None = None,
        *,
        device_key: Hashable | None = None,
        allow_downgrade: bool = False,
        discard: Iterable[ImageIds] = (),
        priority: int = 0,
    ) -> None:
        #: Over-the-air order, as ``bytes(zigpy EUI64)`` and image destinations hold it
        #: (``Eui64.of``: bytes are over-the-air order, text is written order).
        self.device_ieee = Eui64.of(device_ieee).air
        self.image = image
        self.config = config
        self.pacer = pacer
        #: Serve a device that runs a newer version than the image (asked for per push).
        self.allow_downgrade = allow_downgrade
        #: The key of this device's share of the pacer (default: its IEEE bytes).
        self.device_key: Hashable = device_key if device_key is not None else self.device_ieee
        #: The push's priority (gateway.ota.priority): the pacer serves higher ones first.
        self.priority = priority

        self.state = SessionState.PENDING
        #: Why the session is in its state (the reason of the last StateChanged).
        self.reason: str | None = None
        #: High-water mark: the image has been sent up to this offset.
        self.offset = 0
        #: Where the device is: the end of the last block served, or the offset it
        #: resumed from. Below ``offset`` after a device restarts or resumes earlier.
        self.position = 0
        #: The device's last reported CurrentFileVersion (query or attribute).
        self.device_file_version: int | None = None
        #: Upgrade End Requests answered with hold (upgrade time 0xFFFFFFFF).
        self.held_requests = 0
        #: Image Notify frames sent: start, re-notifies while PENDING, and nudges.
        self.notifies_sent = 0
        #: Nudges (Image Notify to a silent resumed transfer) since the last ``resume``.
        self.nudge_attempt = 0
        #: The device's MinimumBlockPeriod (ms) from its last block request.
        self.minimum_block_period_ms: int | None = None
        #: The activation time sent with activate() (None: now), once activated.
        self.upgrade_at: dt.datetime | None = None
        #: The activation time set by schedule(), while SCHEDULED.
        self.scheduled_at: dt.datetime | None = None
        #: Images the device may still hold and must drop: an Upgrade End Request
        #: naming one gets Default Response ABORT. ``cancel`` adds this push's image;
        #: ``discard`` hands over those of the cancelled push before this one.
        self.discard_images: frozenset[ImageIds] = frozenset((int(m), int(t), int(v)) for m, t, v in discard)
        #: Upgrade End Requests answered with ABORT.
        self.discard_requests = 0

        self._attributes_requested = False
        self._was_held = False
        #: The device was sent a verified activation command to carry out itself (a CS06
        #: over the GBCS tunnel, issue 13): reporting the image's version while held is
        #: then its confirmation, not a device that activated by itself.
        self.released_by_command = False
        # True until the first block/page request after entering TRANSFERRING (or a
        # restore): such a request at an offset above 0 is a resume.
        self._fresh = True
        # Timers (monotonic seconds) and the page being sent.
        self._notify_at: float | None = None
        self._stall_at: float | None = None
        self._page: _Page | None = None
        self._read_at: float | None = None
        self._confirm_by: float | None = None
        self._grace_until: float | None = None
        # Nudges armed by resume(): the next one, how many are left, how far apart.
        self._nudge_at: float | None = None
        self._nudges_left = 0
        self._nudge_every = 0.0
        # Remaining seconds per timer of a restored session not yet given a `now`, or of
        # a parked one (frozen until resume).
        self._rebase: dict[str, float] | None = None
        self._parked = False

        self._image_sha256 = hashlib.sha256(image.data).hexdigest()  # for snapshots
        self._now = 0.0
        self._cell: Cell | None = None
        self._out: list[Action] = []
        #: The radio's limit for this device's blocks (BlockLimitSet, BlockTooLong), and why.
        self.radio_block_limit: int | None = None
        self.radio_block_why: str | None = None
        self._block_cap = config.effective_block_cap

    def __repr__(self) -> str:
        return (
            f"<OtaSession {Eui64.from_air(self.device_ieee)} image 0x{self.image.manufacturer_code:04X}/"
            f"0x{self.image.image_type:04X}/{_v(self.image.file_version)} {self.state.value} "
            f"offset {self.offset}/{self.image.size}>"
        )

    # ------------------------------------------------------------------ public API

    def start(self, now: float) -> list[Action]:
        """Send Image Notify (and re-send it while PENDING, as configured)."""
        return self._call(Call.START, now)

    def handle(self, event: Event, now: float) -> list[Action]:
        """Feed one event from the device, or a send outcome. Never raises: a device must
        not crash the gateway. Every request gets its answer among the returned actions."""
        kind = type(event)
        if self._parked and kind not in SEND_OUTCOMES:
            # Nothing reaches a parked session but the outcomes of frames it sent before.
            return [Note(NoteKind.IGNORED, f"{kind.__name__} ignored: the push is parked while the radio is away", self._offset_or_none())]
        self._tick(now)
        cell = event_cell(self.state, kind)
        if cell is None:
            return [Note(NoteKind.IGNORED, f"{kind.__name__} ignored: the push is {self.state.value}", self._offset_or_none())]
        if self._nudge_at is not None and kind in _REQUESTS:
            self._stop_nudging()  # the device is talking again
        return self._run(cell, event)

    @property
    def parked(self) -> bool:
        """Between ``park`` and ``resume``: timers frozen, the device out of reach."""
        return self._parked

    def get_timer(self) -> float | None:
        """The monotonic time at which ``handle_timer`` must next be called, or None."""
        if self._parked:
            return None
        if self._rebase:
            return self._now  # a restored session: call handle_timer at once to re-arm
        times = [t for t in (self._notify_at, self._stall_at, self._read_at, self._confirm_by, self._nudge_at) if t is not None]
        if self._page is not None:
            times.append(self._page.due)
        return min(times) if times else None

    def handle_timer(self, now: float) -> list[Action]:
        """Run whatever is due at ``now``. Calling it early or late is harmless."""
        if self._parked:
            return []  # frozen until resume
        self._tick(now)
        cell = TRANSITIONS[self.state].get(Call.TIMER)
        if cell is None:
            return []  # nothing is ever armed in this state
        return self._run(cell)

    def activate(self, now: float, at: dt.datetime | None = None, *, utc_now: dt.datetime | None = None) -> list[Action]:
        """Tell the held device to apply the image: at ``at`` (UTC), or now if None.

        Only from HELD or SCHEDULED; anything else raises ``LocalProtocolError``
        naming the state, and changes nothing. The confirmation clock starts at the
        activation time: pass ``utc_now`` with a future ``at`` so that the session
        can tell how far ahead it is; without it the activation time is ``now``.
        """
        cell = call_cell(self.state, Call.ACTIVATE)
        for name, value in (("at", at), ("utc_now", utc_now)):
            if value is not None and (not isinstance(value, dt.datetime) or value.utcoffset() is None):
                raise LocalProtocolError(f"{name} must be a timezone-aware UTC datetime, not {value!r}")
        return self._call(Call.ACTIVATE, now, at, utc_now, cell=cell)

    def schedule(self, now: float, at: dt.datetime) -> list[Action]:
        """HELD -> SCHEDULED: the device stays held; the gate calls activate at ``at``.
        From SCHEDULED, moves the time."""
        cell = call_cell(self.state, Call.SCHEDULE)
        if not isinstance(at, dt.datetime) or at.utcoffset() is None:
            raise LocalProtocolError(f"at must be a timezone-aware UTC datetime, not {at!r}")
        return self._call(Call.SCHEDULE, now, at, cell=cell)

    def unschedule(self, now: float) -> list[Action]:
        """SCHEDULED -> HELD."""
        return self._call(Call.UNSCHEDULE, now)

    def release_by_command(self, now: float, why: str) -> list[Action]:
        """The held device was sent a verified activation command it carries out itself
        (a CS06 forwarded over the GBCS tunnel): the hold stays (every Upgrade End Request
        still gets "hold"), and the device reporting the image's version, by Query Next
        Image or attribute read, confirms the push instead of failing it. Only from HELD or
        SCHEDULED (``LocalProtocolError`` otherwise); no state change, a Note."""
        if self.state not in (SessionState.HELD, SessionState.SCHEDULED):
            raise LocalProtocolError(f"release_by_command: the push is {self.state.value}, not held")
        self._tick(now)
        self.released_by_command = True
        self._out = []
        self._note(NoteKind.ACTIVATION, f"the device carries out its activation command itself ({why}); the hold stays")
        return self._out

    def cancel(self, now: float, reason: str) -> list[Action]:
        """End the push and make the device drop the image. Later block requests get
        ABORT, queries NO_IMAGE_AVAILABLE, and an Upgrade End Request for the image a
        Default Response ABORT (the client discards the image): cancelling never
        lets a device activate. Raises ``LocalProtocolError`` in an end state."""
        return self._call(Call.CANCEL, now, reason)

    def supersede(self, now: float, reason: str) -> list[Action]:
        """End the push because a push of higher priority takes the device: as ``cancel``
        (block requests ABORT, the image discarded on the device's next Upgrade End),
        ending SUPERSEDED. Only before activation: raises ``LocalProtocolError`` from
        ACTIVATED and the end states."""
        return self._call(Call.SUPERSEDE, now, reason)

    def park(self, now: float) -> list[Action]:
        """The radio is going away: freeze every timer (as seconds left) until ``resume``.

        No stall timeout runs out and no notify falls due while the device cannot be
        reached; an unfinished page is dropped (the device asks again for what it
        missed). Until ``resume`` only the outcomes of frames already returned are
        taken (others are ignored with a Note) and only ``cancel`` among the calls.
        Allowed in every state; parking a parked push changes nothing.
        """
        return self._call(Call.PARK, now)

    def resume(self, now: float, *, nudge_after_s: float = 0.0, nudges: int = 0) -> list[Action]:
        """The radio is back (or the gateway restarted): re-arm the timers from ``now``.

        A parked transfer gets its stall timeout in full (the outage was not the
        device's fault), and its next request at an offset above 0 is noted as a resume.
        With ``nudges`` > 0, a TRANSFERRING push that hears no request for
        ``nudge_after_s`` sends Image Notify (counted in ``notifies_sent``), up to
        ``nudges`` times that far apart; any request from the device ends them. Other
        states get none: a held device keeps asking Upgrade End by itself.
        """
        if not (isinstance(nudge_after_s, (int, float)) and math.isfinite(nudge_after_s) and nudge_after_s >= 0):
            raise LocalProtocolError(f"nudge_after_s must be a number of seconds, not {nudge_after_s!r}")
        if not isinstance(nudges, int) or nudges < 0:
            raise LocalProtocolError(f"nudges must be a whole number, not {nudges!r}")
        return self._call(Call.RESUME, now, float(nudge_after_s), nudges)

    def set_aps_encryption(self, on: bool) -> None:
        """APS link-key security came into force for the device (or went): later blocks,
        those of an unfinished page included, fit the APS-encrypted frame budget (56).

        A device's key may be established after its push was accepted, so the cap is
        the session's to change, not only its config's. Blocks already sent stay as
        they were; the device asks for the rest by offset.
        """
        self.config = replace(self.config, aps_encryption=on)
        self._apply_block_cap()

    def _apply_block_cap(self) -> None:
        # The configured frame budget and the radio's limit, whichever is smaller.
        cap = self.config.effective_block_cap
        if self.radio_block_limit is not None:
            cap = min(cap, self.radio_block_limit)
        self._block_cap = cap
        if self._page is not None:
            self._page.cap = min(self._page.cap, cap)

    # ------------------------------------------------------------------ persistence

    def snapshot(self) -> dict[str, Any]:
        """A JSON-safe record of the push, for the daemon's store.

        Timers are kept as seconds remaining after the last ``now`` the session saw;
        the stall timer is not kept (a restored transfer gets a full stall timeout:
        the gateway's downtime is not the device's fault), nor is an unfinished page
        (the device asks again for what it missed).
        """

        if self._rebase is not None:
            timers = {k: v for k, v in self._rebase.items() if k != "stall"}
        else:
            timers = self._timers_left()
        return {
            "format": SNAPSHOT_FORMAT,
            "device_ieee": str(Eui64.from_air(self.device_ieee)),
            "image": {
                "manufacturer_code": self.image.manufacturer_code,
                "image_type": self.image.image_type,
                "file_version": self.image.file_version,
                "size": self.image.size,
                "sha256": self._image_sha256,
            },
            "state": self.state.value,
            "reason": self.reason,
            "offset": self.offset,
            "device_file_version": self.device_file_version,
            "held_requests": self.held_requests,
            "notifies_sent": self.notifies_sent,
            "nudges": {"left": self._nudges_left, "every_s": self._nudge_every, "attempt": self.nudge_attempt},
            "minimum_block_period_ms": self.minimum_block_period_ms,
            "attributes_requested": self._attributes_requested,
            "was_held": self._was_held,
            "released_by_command": self.released_by_command,
            "allow_downgrade": self.allow_downgrade,
            "upgrade_at": None if self.upgrade_at is None else self.upgrade_at.isoformat(),
            "scheduled_at": None if self.scheduled_at is None else self.scheduled_at.isoformat(),
            "discard": [list(ids) for ids in sorted(self.discard_images)],
            "discard_requests": self.discard_requests,
            "timers": timers,
        }

    @classmethod
    def restore(
        cls,
        snap: dict[str, Any],
        image: ImageInfo,
        config: SessionConfig,
        pacer: Pacer | None = None,
        *,
        device_key: Hashable | None = None,
        now: float | None = None,
    ) -> OtaSession:
        """Rebuild a session from ``snapshot()``, for the same image.

        Timers are re-armed relative to ``now`` when given; otherwise ``get_timer``
        returns a time already due and the first ``handle_timer(now)`` re-arms them.
        Do not call ``start`` again: a restored PENDING session keeps notifying.
        Raises ``LocalProtocolError`` for a malformed snapshot or another image.
        """
        try:
            if snap["format"] != SNAPSHOT_FORMAT:
                raise LocalProtocolError(f"snapshot format {snap['format']!r} is not {SNAPSHOT_FORMAT}")
            kept = snap["image"]
            ours = {
                "manufacturer_code": image.manufacturer_code,
                "image_type": image.image_type,
                "file_version": image.file_version,
                "size": image.size,
                "sha256": hashlib.sha256(image.data).hexdigest(),
            }
            for key, value in ours.items():
                if kept[key] != value:
                    raise LocalProtocolError(f"snapshot is for another image: its {key} is {kept[key]!r}, this image's {value!r}")
            session = cls(snap["device_ieee"], image, config, pacer, device_key=device_key)
            session.state = SessionState(snap["state"])
            session.reason = snap["reason"]
            session.offset = int(snap["offset"])
            if not 0 <= session.offset <= image.size:
                raise LocalProtocolError(f"snapshot offset {session.offset} is outside the {image.size}-byte image")
            session.position = session.offset  # until the device says where it is
            session.device_file_version = snap["device_file_version"]
            session.held_requests = int(snap["held_requests"])
            session.notifies_sent = int(snap["notifies_sent"])
            nudges = snap.get("nudges") or {}  # absent before nudges were the session's
            session._nudges_left = int(nudges.get("left", 0))
            session._nudge_every = float(nudges.get("every_s", 0.0))
            session.nudge_attempt = int(nudges.get("attempt", 0))
            session.minimum_block_period_ms = snap["minimum_block_period_ms"]
            session._attributes_requested = bool(snap["attributes_requested"])
            session._was_held = bool(snap["was_held"])
            session.released_by_command = bool(snap.get("released_by_command", False))  # absent before issue 13's tunnel
            session.allow_downgrade = bool(snap.get("allow_downgrade", False))  # absent before it existed
            for name in ("upgrade_at", "scheduled_at"):
                value = snap[name]
                setattr(session, name, None if value is None else dt.datetime.fromisoformat(value))
            if "discard" in snap:
                session.discard_images = frozenset((int(m), int(t), int(v)) for m, t, v in snap["discard"])
            elif session.state is SessionState.CANCELLED:
                # Kept before cancelling discarded: a cancelled push's image is dropped now.
                session.discard_images = frozenset({session._image_ids()})
            session.discard_requests = int(snap.get("discard_requests", 0))
            rebase = {str(k): float(v) for k, v in snap["timers"].items()}
        except OtaProtocolError:
            raise
        except (KeyError, TypeError, ValueError, AttributeError) as err:
            raise LocalProtocolError(f"snapshot is malformed: {type(err).__name__}: {err}") from err
        if session.state is T:
            rebase["stall"] = config.stall_timeout_s
        session._rebase = rebase
        if now is not None:
            session._tick(now)
        return session

    # ------------------------------------------------------------------ machinery

    def _timers_left(self) -> dict[str, float]:
        """Seconds left on each armed timer but the stall and a page's (neither is kept:
        see ``snapshot``), by the names snapshots use."""
        timers = {
            "notify": self._notify_at,
            "read": self._read_at,
            "confirm": self._confirm_by,
            "grace": self._grace_until,
            "nudge": self._nudge_at,
        }
        return {name: max(0.0, at - self._now) for name, at in timers.items() if at is not None}

    def _tick(self, now: float) -> None:
        self._now = now
        if self._rebase is not None and not self._parked:
            rebase, self._rebase = self._rebase, None
            # Only the timers of the state the push is in now: one cancelled while parked
            # must not wake up to a notify.
            at = {name: now + seconds for name, seconds in rebase.items() if self.state in _TIMER_STATES.get(name, ())}
            self._notify_at = at.get("notify")
            self._stall_at = at.get("stall")
            self._read_at = at.get("read")
            self._confirm_by = at.get("confirm")
            self._grace_until = at.get("grace")
            self._nudge_at = at.get("nudge")
            if self._nudge_at is None:
                self._nudges_left = 0

    def _call(self, call: Call, now: float, *args: Any, cell: Cell | None = None) -> list[Action]:
        if cell is None:
            cell = call_cell(self.state, call)  # raises before anything changes
        if self._parked and call not in (Call.PARK, Call.RESUME, Call.CANCEL, Call.SUPERSEDE):
            raise LocalProtocolError(f"cannot {call.value} a parked push (the radio is away): it resumes when the radio is back")
        self._tick(now)
        return self._run(cell, *args)

    def _run(self, cell: Cell, *args: Any) -> list[Action]:
        self._cell = cell
        self._out = []
        try:
            getattr(self, cell.handler)(*args)
            return self._out
        finally:
            self._cell = None
            self._out = []

    def _emit(self, *actions: Action) -> None:
        pacer = self.pacer
        if pacer is not None:
            for action in actions:
                if isinstance(action, FRAME_ACTION_TYPES):
                    # In flight from now until its send outcome comes back (SEND_OUTCOMES).
                    pacer.sent_started(self._now)
        self._out.extend(actions)

    def _note(self, kind: NoteKind, message: str, offset: int | None = None, *, warning: bool = False) -> None:
        self._out.append(Note(kind, message, offset, warning or kind is NoteKind.WARNING or kind is NoteKind.FAILURE))

    def _offset_or_none(self) -> int | None:
        return self.offset if self.offset or self.state is T else None

    def _may_become(self, state: SessionState) -> bool:
        return self._cell is not None and state in self._cell.next_states

    def _set_state(self, new: SessionState, reason: str, device_status: int | None = None) -> None:
        if new is self.state:
            return
        if not self._may_become(new):
            handler = self._cell.handler if self._cell else "no handler"
            raise RuntimeError(f"bug: {handler} moved a {self.state.value} push to {new.value}, which its table cell does not allow")
        old, self.state, self.reason = self.state, new, reason
        now = self._now
        if new is not P:
            self._notify_at = None
        if new is not T:
            self._stop_nudging()
        if new is T:
            self._stall_at = now + self.config.stall_timeout_s
            self._fresh = True
        else:
            self._stall_at = None
            self._page = None
        if new is not A:
            self._read_at = self._confirm_by = self._grace_until = None
        if new is not S:
            self.scheduled_at = None
        if new is H:
            self._was_held = True
        if new in END_STATES and self.pacer is not None:
            self.pacer.forget(self.device_key)
        self._emit(StateChanged(old, new, reason, device_status))
        if new is T:
            self._note(NoteKind.TRANSFER_START, f"transferring {self.image.size} bytes, sent up to offset {self.offset}", self.offset)

    def _fail(self, reason: str, device_status: int | None = None) -> None:
        self._set_state(F, reason, device_status)
        self._note(NoteKind.FAILURE, reason, self._offset_or_none())

    # ------------------------------------------------------------------ checks

    def _image_ids(self) -> tuple[int, int, int]:
        return (self.image.manufacturer_code, self.image.image_type, self.image.file_version)

    def _check_query(self, ev: QueryNextImageRequested) -> None:
        """Raise ``ImageMismatch``/``NotAuthorized`` if the image is not for this device.

        ZCL OTA, Query Next Image Request, effect on receipt: the server answers
        NO_IMAGE_AVAILABLE when it has no suitable image (manufacturer, image type,
        hardware version, or the device already runs it) and NOT_AUTHORIZED when it
        may not upgrade this client (a device-specific file for another device).
        """
        image = self.image
        if ev.manufacturer_code != image.manufacturer_code:
            raise ImageMismatch(f"device manufacturer 0x{ev.manufacturer_code:04X} does not match image 0x{image.manufacturer_code:04X}")
        if ev.image_type != image.image_type:
            raise ImageMismatch(f"device image type 0x{ev.image_type:04X} does not match image 0x{image.image_type:04X}")
        if image.destination is not None and image.destination != self.device_ieee:
            raise NotAuthorized(
                f"device {Eui64.from_air(self.device_ieee)} does not match image destination {Eui64.from_air(image.destination)}"
            )
        low, high = image.min_hardware_version, image.max_hardware_version
        if (low is not None or high is not None) and ev.hardware_version is not None:
            if (low is not None and ev.hardware_version < low) or (high is not None and ev.hardware_version > high):
                span = f"{'any' if low is None else f'0x{low:04X}'}..{'any' if high is None else f'0x{high:04X}'}"
                raise ImageMismatch(f"device hardware version 0x{ev.hardware_version:04X} is outside image range {span}")
        if ev.current_file_version == image.file_version:
            raise ImageMismatch(f"device already runs file version {_v(ev.current_file_version)}, the image's version")
        if ev.current_file_version > image.file_version and not self.allow_downgrade:
            # ZCL leaves the choice to the server; an older image on a bench is far more
            # often a wrong file than an intended rollback.
            raise ImageMismatch(
                f"downgrade refused: device runs file version {_v(ev.current_file_version)}, newer than the image's "
                f"{_v(image.file_version)}; push again with --allow-downgrade to install the older image"
            )

    def _check_request(self, ev: ImageBlockRequested | ImagePageRequested) -> None:
        """Raise ``WrongImageRequested`` (answer ABORT) or ``MalformedRequest``."""
        asked = (ev.manufacturer_code, ev.image_type, ev.file_version)
        if asked != self._image_ids():
            raise WrongImageRequested(
                "device asks for manufacturer 0x{:04X}, image type 0x{:04X}, version 0x{:08X}".format(*asked)
                + "; this push serves 0x{:04X}, 0x{:04X}, 0x{:08X}".format(*self._image_ids())
            )
        if self.image.destination is not None and self.image.destination != self.device_ieee:
            raise WrongImageRequested(
                f"device {Eui64.from_air(self.device_ieee)} does not match image destination {Eui64.from_air(self.image.destination)}"
            )
        # ZCL OTA, Image Block Request: an offset at or past the end of the image cannot
        # be served. zigpy answers an Image Block Response carrying MALFORMED_COMMAND
        # and ends its whole session; we answer a Default Response MALFORMED_COMMAND
        # (the general ZCL answer to a command whose fields are out of range) and keep
        # the push, since the device can still query, resume or end.
        if not 0 <= ev.file_offset < self.image.size:
            raise MalformedRequest(f"offset {ev.file_offset} is outside the {self.image.size}-byte image")
        if ev.maximum_data_size <= 0:
            raise MalformedRequest(f"maximum data size {ev.maximum_data_size}")
        if isinstance(ev, ImagePageRequested) and ev.page_size <= 0:
            raise MalformedRequest(f"page size {ev.page_size}")

    def _is_our_image(self, ev: UpgradeEndRequested) -> bool:
        return (ev.manufacturer_code, ev.image_type, ev.file_version) == self._image_ids()

    # ------------------------------------------------------------------ start, notify

    def _start(self) -> None:
        self._send_notify()

    def _emit_notify(self) -> None:
        """Unicast Image Notify, payload type 3 (this image's ids): every Image Notify
        the session sends, counted."""
        self.notifies_sent += 1
        self._emit(SendImageNotify(NOTIFY_QUERY_JITTER, *self._image_ids()))

    def _send_notify(self) -> None:
        self._emit_notify()
        if self.notifies_sent < self.config.notify_attempts:
            self._notify_at = self._now + self.config.notify_interval_s
            then = f"again in {self.config.notify_interval_s:g} s unless the device queries"
        else:
            self._notify_at = None
            then = "no more notifies: waiting for the device to query by itself"
        self._note(NoteKind.NOTIFY, f"Image Notify #{self.notifies_sent} of {self.config.notify_attempts}; {then}")

    def _timer_pending(self) -> None:
        if self._notify_at is not None and self._now >= self._notify_at:
            self._send_notify()

    def _note_notify_delivered(self, ev: NotifyDelivered) -> None:
        self._frame_done(ev)
        self._note(NoteKind.NOTIFY, "Image Notify delivered; waiting for the device's Query Next Image")

    def _note_notify_failed(self, ev: NotifyFailed) -> None:
        self._frame_done(ev)
        # A lost notify never fails the push: a sleepy device is reached only when it polls.
        self._note(NoteKind.WARNING, f"Image Notify not delivered ({ev.reason}); the push stays {self.state.value} until the device queries")

    def _note_notify_late(self, ev: NotifyDelivered | NotifyFailed) -> None:
        self._frame_done(ev)
        outcome = "delivered" if isinstance(ev, NotifyDelivered) else f"not delivered ({ev.reason})"
        self._note(NoteKind.IGNORED, f"Image Notify {outcome} after the push moved on: it is {self.state.value}", self._offset_or_none())

    def _frame_done(self, ev: NotifyDelivered | NotifyFailed | FrameDelivered | FrameNotDelivered | BlockTooLong) -> None:
        # The frame's count in flight ends (it began when the session returned it). A
        # lost frame changes nothing else: the device asks again for what it missed.
        if self.pacer is not None:
            self.pacer.sent_finished(self._now)

    # ------------------------------------------------------------------ block size (issue 14)

    def _set_block_limit(self, ev: BlockLimitSet) -> None:
        first = self.radio_block_limit is None
        before = self._block_cap
        self.radio_block_limit, self.radio_block_why = max(1, ev.limit), ev.why
        self._apply_block_cap()
        if first or self._block_cap != before:
            self._note(NoteKind.BLOCK_SIZE, self._block_size_reason(), self._offset_or_none())

    def _block_size_reason(self) -> str:
        cap = self._block_cap
        if self.radio_block_limit is not None and cap == self.radio_block_limit:
            return f"blocks of at most {self.radio_block_why}"
        return f"blocks of at most {cap} bytes: the configured cap (the radio allows {self.radio_block_why})"

    def _block_too_long(self, ev: BlockTooLong) -> None:
        self._frame_done(ev)
        limit = max(1, min(ev.limit, ev.size - 1))
        self.radio_block_limit = limit if self.radio_block_limit is None else min(self.radio_block_limit, limit)
        self.radio_block_why = ev.why
        self._apply_block_cap()
        self._note(
            NoteKind.BLOCK_SIZE,
            f"block of {ev.size} bytes at offset {ev.file_offset} refused by the radio as too long; {self._block_size_reason()}",
            ev.file_offset,
            warning=True,
        )
        size = min(self._block_cap, self.image.size - ev.file_offset)
        if self.state is not T or self._parked or not 0 < size < ev.size:
            return  # the device asks again for what it missed
        # The refused frame never left the radio: answer the same request with the
        # smaller block, paced as any other; a page goes on from the refused block.
        if self.offset == ev.file_offset + ev.size:
            self.offset = ev.file_offset  # the refused block's bytes were never sent
        page = self._page
        if ev.tsn is None and page is not None and page.next_offset == ev.file_offset + ev.size:
            page.next_offset = ev.file_offset
            self._send_page_block()
            return
        if self._grant(size) > 0:
            return
        data = self.image.data[ev.file_offset : ev.file_offset + size]
        self._emit(SendImageBlock(ev.tsn, *self._image_ids(), ev.file_offset, data))
        self._sent(ev.file_offset, data)

    # ------------------------------------------------------------------ park, resume, nudges

    def _park(self) -> None:
        if self._parked:
            return
        self._rebase = self._timers_left()
        self._notify_at = self._stall_at = self._read_at = self._confirm_by = self._grace_until = self._nudge_at = None
        self._page = None
        self._parked = True

    def _resume(self, nudge_after_s: float, nudges: int) -> None:
        if self._parked:
            self._parked = False
            rebase = self._rebase or {}
            if self.state is T:
                rebase["stall"] = self.config.stall_timeout_s
            self._rebase = rebase
            self._tick(self._now)
            # As after a restore: the device says where it is with its next request.
            self.position = self.offset
            self._fresh = True
        if self.state is T and nudges > 0 and nudge_after_s > 0:
            self._nudges_left, self._nudge_every, self.nudge_attempt = nudges, nudge_after_s, 0
            self._nudge_at = self._now + nudge_after_s

    def _stop_nudging(self) -> None:
        self._nudge_at = None
        self._nudges_left = 0

    def _nudge(self) -> None:
        """A resumed transfer silent for ``nudge_after_s``: Image Notify, so that the
        device queries, is offered the same image and resumes at its offset."""
        self._nudges_left -= 1
        self.nudge_attempt += 1
        self._emit_notify()
        self._nudge_at = self._now + self._nudge_every if self._nudges_left > 0 else None
        self._note(
            NoteKind.NUDGE,
            f"silent at offset {self.offset} since the radio came back: Image Notify #{self.notifies_sent} "
            f"(nudge {self.nudge_attempt}, {self._nudges_left} left) so that it resumes",
            self.offset,
        )

    # ------------------------------------------------------------------ queries

    def _note_query(self, ev: QueryNextImageRequested) -> None:
        self.device_file_version = ev.current_file_version
        hw = "" if ev.hardware_version is None else f", hardware version 0x{ev.hardware_version:04X}"
        self._note(
            NoteKind.QUERY,
            f"Query Next Image: manufacturer 0x{ev.manufacturer_code:04X}, image type 0x{ev.image_type:04X}, "
            f"current version {_v(ev.current_file_version)}{hw}",
        )

    def _offer(self, tsn: int) -> None:
        self._emit(SendQueryNextImageResponse(tsn, Status.SUCCESS, *self._image_ids(), image_size=self.image.size))

    def _warn_missing_hardware_version(self, ev: QueryNextImageRequested) -> None:
        image = self.image
        if ev.hardware_version is None and (image.min_hardware_version is not None or image.max_hardware_version is not None):
            self._note(NoteKind.WARNING, "device sent no hardware version but the image has a hardware range: allowing it")

    def _offer_image(self, ev: QueryNextImageRequested) -> None:
        self._note_query(ev)
        try:
            self._check_query(ev)
        except RemoteProtocolError as err:
            self._emit(SendQueryNextImageResponse(ev.tsn, err.status))
            self._fail(err.message)
            return
        self._warn_missing_hardware_version(ev)
        if ev.current_file_version > self.image.file_version:
            self._note(NoteKind.WARNING, f"downgrade: device runs file version {_v(ev.current_file_version)}, the image is the older {_v(self.image.file_version)} (allowed for this push)", 0)
        self._offer(ev.tsn)
        if self.state is P:
            self._set_state(T, "device queried; image offered")
        else:
            self._stall_at = self._now + self.config.stall_timeout_s
        self._request_attributes_once()

    def _offer_image_while_held(self, ev: QueryNextImageRequested) -> None:
        self._note_query(ev)
        if ev.current_file_version == self.image.file_version:
            self._emit(SendQueryNextImageResponse(ev.tsn, Status.NO_IMAGE_AVAILABLE))
            if self.released_by_command:
                self._version_reported(ev.current_file_version, "Query Next Image", NoteKind.QUERY)
            else:
                self._fail(self._activated_by_itself(ev.current_file_version))
            return
        try:
            self._check_query(ev)
        except RemoteProtocolError as err:
            self._emit(SendQueryNextImageResponse(ev.tsn, err.status))
            self._note(NoteKind.WARNING, f"{err.message}; the device stays {self.state.value}")
            return
        # It may have lost the image (a reboot): offer it again. It stays held until
        # it actually asks for blocks.
        self._warn_missing_hardware_version(ev)
        self._offer(ev.tsn)

    def _activated_by_itself(self, version: int) -> str:
        return f"device reports file version {_v(version)}, the image's, while {self.state.value}: it activated the image by itself"

    def _confirm_by_query(self, ev: QueryNextImageRequested) -> None:
        self._note_query(ev)
        # Up to date or waiting to be: either way nothing new to download.
        self._emit(SendQueryNextImageResponse(ev.tsn, Status.NO_IMAGE_AVAILABLE))
        self._version_reported(ev.current_file_version, "Query Next Image", NoteKind.QUERY)

    def _refuse_query(self, ev: QueryNextImageRequested) -> None:
        self._note_query(ev)
        self._emit(SendQueryNextImageResponse(ev.tsn, Status.NO_IMAGE_AVAILABLE))
        self._note(NoteKind.QUERY, f"answered NO_IMAGE_AVAILABLE: the push is {self.state.value}")

    def _version_reported(self, version: int, via: str, kind: NoteKind) -> None:
        expected = self.image.file_version
        if version == expected:
            self._set_state(SessionState.CONFIRMED, f"device runs file version {_v(version)}")
            self._note(NoteKind.CONFIRMATION, f"device reports file version {_v(version)} via {via}: activation confirmed")
        elif self._grace_until is not None and self._now < self._grace_until:
            self._note(kind, f"device still reports {_v(version)} via {via}; too early to judge, it may not have rebooted yet")
        else:
            self._fail(f"device still reports {_v(version)}, expected {_v(expected)}")

    # ------------------------------------------------------------------ attributes

    def _request_attributes_once(self) -> None:
        if self._attributes_requested:
            return
        self._attributes_requested = True
        self._emit(ReadAttributes(TRANSFER_START_ATTRIBUTES))
        self._note(NoteKind.ATTRIBUTES, "reading UpgradeActivationPolicy, UpgradeTimeoutPolicy and CurrentFileVersion")

    def _note_attributes(self, ev: AttributesRead) -> None:
        shown = ", ".join(f"0x{k:04X}={v}" for k, v in sorted(ev.values.items())) or "no supported attributes"
        self._note(NoteKind.ATTRIBUTES, f"attributes read: {shown}")

    def _record_attributes(self, ev: AttributesRead) -> None:
        self._note_attributes(ev)
        values = ev.values
        risks = []
        if values.get(Attribute.UPGRADE_TIMEOUT_POLICY) == 0:
            risks.append("UpgradeTimeoutPolicy 0 (apply after timeout)")
        if values.get(Attribute.UPGRADE_ACTIVATION_POLICY) == 1:
            risks.append("UpgradeActivationPolicy 1 (out of band)")
        if risks:
            self._note(
                NoteKind.WARNING,
                f"device may activate by itself: {' and '.join(risks)}; every Upgrade End Request will be answered with hold",
            )
        # MinimumBlockPeriod (0x0009) is not taken from here: its unit is seconds in
        # cluster revision 2 and milliseconds otherwise. The block request field is ms.
        version = values.get(Attribute.CURRENT_FILE_VERSION)
        if version is None:
            return
        self.device_file_version = version
        if version == self.image.file_version:
            if self.released_by_command and self._may_become(SessionState.CONFIRMED):
                self._version_reported(version, "attributes", NoteKind.ATTRIBUTES)
            elif self._may_become(F):
                self._fail(self._activated_by_itself(version))
            else:
                self._note(NoteKind.WARNING, f"device reports file version {_v(version)}, the image's own")

    def _confirm_by_attributes(self, ev: AttributesRead) -> None:
        self._note_attributes(ev)
        version = ev.values.get(Attribute.CURRENT_FILE_VERSION)
        if version is not None:
            self.device_file_version = version
            self._version_reported(version, "attribute CurrentFileVersion", NoteKind.ATTRIBUTES)

    def _note_read_failed(self, ev: AttributeReadFailed) -> None:
        if self.state is A:
            self._note(NoteKind.ATTRIBUTES, f"attribute read failed ({ev.reason}); the device may be rebooting, will read again")
        else:
            self._note(NoteKind.WARNING, f"attribute read failed: {ev.reason}")

    # ------------------------------------------------------------------ blocks and pages

    def _refuse_request(self, ev: ImageBlockRequested | ImagePageRequested, err: RemoteProtocolError) -> None:
        command = DeviceCommand.IMAGE_PAGE if isinstance(ev, ImagePageRequested) else DeviceCommand.IMAGE_BLOCK
        if err.status is Status.ABORT:
            self._emit(SendAbort(ev.tsn))
        else:
            self._emit(SendDefaultResponse(ev.tsn, int(command), err.status))
        self._note(NoteKind.WARNING, f"{command.name.lower().replace('_', ' ')} request refused ({err.status.name}): {err.message}", ev.file_offset)
        if self.state is P and isinstance(err, WrongImageRequested):
            # The device was downloading another image (a push this one superseded) and
            # drops it on this ABORT: tell it of ours now, not at the next notify interval
            # (ZCL OTA: a client that hears a unicast Image Notify queries).
            self._send_notify()

    def _enter_transfer(self, ev: ImageBlockRequested | ImagePageRequested) -> None:
        if self.state is P:
            self._set_state(T, f"device requested data at offset {ev.file_offset} without a query in this session")
        elif self.state in (H, S):
            dropped = "" if self.scheduled_at is None else f"; the activation scheduled for {self.scheduled_at.isoformat()} is dropped"
            self._note(
                NoteKind.WARNING,
                f"{self.state.value} device requested data at offset {ev.file_offset}: it lost its image and downloads again{dropped}",
                ev.file_offset,
            )
            self._set_state(T, f"{self.state.value} device is downloading again")

    def _note_request_start(self, offset: int) -> None:
        if self._fresh or offset == 0:
            self.position = offset
        if offset == 0:
            again = " (again: the device restarted its download)" if self.offset else ""
            self._note(NoteKind.FIRST_BLOCK, f"first block requested{again}", 0)
        elif self._fresh:
            self._note(NoteKind.RESUME, f"device resumes at offset {offset} (sent up to {self.offset} before)", offset)
        self._fresh = False

    def _grant(self, nbytes: int) -> float:
        return 0.0 if self.pacer is None else self.pacer.grant(self.device_key, nbytes, self._now, self.priority)

    def _sent(self, offset: int, data: bytes) -> None:
        end = offset + len(data)
        self.offset = max(self.offset, end)
        self.position = end
        self._emit(Progress(self.offset, self.image.size))
        if end == self.image.size:
            self._note(NoteKind.LAST_BLOCK, f"last block sent: {len(data)} bytes at offset {offset}", offset)

    def _serve_block(self, ev: ImageBlockRequested) -> None:
        try:
            self._check_request(ev)
        except RemoteProtocolError as err:
            self._refuse_request(ev, err)
            return
        self._downloading_again()
        if ev.minimum_block_period_ms is not None:
            self.minimum_block_period_ms = ev.minimum_block_period_ms
        if self._page is not None:
            self._note(NoteKind.WARNING, f"block request supersedes the unfinished page at offset {self._page.next_offset}", ev.file_offset)
            self._page = None
        self._enter_transfer(ev)
        self._stall_at = self._now + self.config.stall_timeout_s
        self._note_request_start(ev.file_offset)

        # ZCL OTA, Image Block Response: at most the requested maximum data size; here
        # also at most the frame budget (63, 56 with APS encryption) and the config cap.
        size = min(ev.maximum_data_size, self._block_cap, self.image.size - ev.file_offset)
        wait = self._grant(size)
        if wait > 0:
            # ZCL OTA, Image Block Response WAIT_FOR_DATA (11.13.8.1): ask again after
            # request time, and no faster than the minimum block period suggested. Never
            # as long as half the stall timeout: a long pause (a closed traffic window)
            # must not fail the push by our own doing.
            cap = min(self.config.max_wait_for_data_s, max(1, int(self.config.stall_timeout_s // 2)))
            delay = min(cap, max(1, math.ceil(wait)))
            period = self._suggested_period_ms(size)
            self._emit(SendWaitForData(ev.tsn, delay, period))
            self._note(
                NoteKind.PACING,
                f"radio budget spent: WAIT_FOR_DATA {delay} s at offset {ev.file_offset}, suggested MinimumBlockPeriod {period} ms",
                ev.file_offset,
            )
            return
        data = self.image.data[ev.file_offset : ev.file_offset + size]
        self._emit(SendImageBlock(ev.tsn, *self._image_ids(), ev.file_offset, data))
        self._sent(ev.file_offset, data)
        self._request_attributes_once()

    def _suggested_period_ms(self, nbytes: int) -> int:
        fair = 0 if self.pacer is None else self.pacer.suggested_period_ms(self.device_key, nbytes, self._now)
        return min(0xFFFF, max(fair, self.minimum_block_period_ms or 0))

    def _serve_page(self, ev: ImagePageRequested) -> None:
        try:
            self._check_request(ev)
        except RemoteProtocolError as err:
            self._refuse_request(ev, err)
            return
        self._downloading_again()
        if self._page is not None:
            self._note(NoteKind.WARNING, f"page request supersedes the unfinished page at offset {self._page.next_offset}", ev.file_offset)
        self._enter_transfer(ev)
        self._note_request_start(ev.file_offset)
        # ZCL OTA, Image Page Request: the server sends Image Block Responses for
        # [offset, offset + page size) without further requests, response spacing
        # apart. A page stops at the end of the file exactly.
        spacing_ms = max(ev.response_spacing_ms, self.minimum_block_period_ms or 0, self.config.page_spacing_floor_ms)
        end = min(ev.file_offset + ev.page_size, self.image.size)
        cap = min(ev.maximum_data_size, self._block_cap)
        self._page = _Page(ev.file_offset, end, cap, spacing_ms / 1000.0, self._now)
        self._note(
            NoteKind.PAGE,
            f"page request: {end - ev.file_offset} bytes from offset {ev.file_offset} in blocks of at most {cap}, {spacing_ms} ms apart",
            ev.file_offset,
        )
        self._send_page_block()
        self._request_attributes_once()

    def _send_page_block(self) -> None:
        page = self._page
        if page is None:
            return
        size = min(page.cap, page.end - page.next_offset)
        wait = self._grant(size)
        if wait > 0:
            page.due = self._now + wait
            # The device waits for our blocks: our deferral (a paused pacer) is not its silence.
            self._stall_at = max(self._stall_at or 0.0, page.due + self.config.stall_timeout_s)
            self._note(NoteKind.PACING, f"radio budget spent: page block at offset {page.next_offset} deferred {wait:.3f} s", page.next_offset)
            return
        data = self.image.data[page.next_offset : page.next_offset + size]
        self._emit(SendImageBlock(None, *self._image_ids(), page.next_offset, data))
        self._sent(page.next_offset, data)
        self._stall_at = self._now + self.config.stall_timeout_s
        page.next_offset += size
        if page.next_offset >= page.end:
            self._page = None
        else:
            page.due = self._now + page.spacing_s

    def _abort_block(self, ev: ImageBlockRequested | ImagePageRequested) -> None:
        self._emit(SendAbort(ev.tsn))
        self._note(NoteKind.WARNING, f"data request at offset {ev.file_offset} answered ABORT: the push is {self.state.value}", ev.file_offset)

    def _timer_transferring(self) -> None:
        if self._page is not None and self._now >= self._page.due:
            self._send_page_block()
        if self._nudge_at is not None and self._now >= self._nudge_at:
            self._nudge()
        if self._stall_at is not None and self._now >= self._stall_at:
            self._fail(f"stalled at offset {self.offset}: no request from the device for {self.config.stall_timeout_s:g} s")

    # ------------------------------------------------------------------ upgrade end

    def _note_end(self, ev: UpgradeEndRequested) -> None:
        self._note(
            NoteKind.END_REQUEST,
            f"Upgrade End Request {_status_name(ev.status)} for manufacturer 0x{ev.manufacturer_code:04X}, "
            f"image type 0x{ev.image_type:04X}, version {_v(ev.file_version)}",
            self.offset,
        )

    def _hold(self, ev: UpgradeEndRequested) -> None:
        """Upgrade End Response with upgrade time 0xFFFFFFFF: wait for the server.

        For our image, with its identifiers; for another image the device reports as
        complete, with the device's own, so that it matches and holds that one too.
        """
        ids = self._image_ids() if self._is_our_image(ev) else (ev.manufacturer_code, ev.image_type, ev.file_version)
        self._emit(SendUpgradeEndResponse(ev.tsn, *ids, hold=True))
        self.held_requests += 1
        if not self._is_our_image(ev):
            self._note(
                NoteKind.WARNING,
                "device reports another image complete: held with its own identifiers so that it cannot activate it",
            )

    def _discard(self, ev: UpgradeEndRequested) -> bool:
        """Answer a SUCCESS Upgrade End Request for an image the device must drop.

        ZCL OTA, Upgrade End Request, effect on receipt: a server that does not want
        the client to upgrade answers a Default Response with status ABORT, and the
        client discards the downloaded image and goes back to normal operation. Our
        OTA notes (zigbee-ota-notes.md) list ABORT 0x95 and give a Default Response
        as the answer to a failed end, but not this rule; it is what Silicon Labs'
        ota-server sends when its end-request callback says no, and what its
        ota-client takes as "Server aborted upgrade" (the download is finished as
        aborted and the image dropped). Never an Upgrade End Response: that could
        only ever hold or activate.
        """
        ids = (ev.manufacturer_code, ev.image_type, ev.file_version)
        if ids not in self.discard_images:
            return False
        self._emit(SendDefaultResponse(ev.tsn, int(DeviceCommand.UPGRADE_END), Status.ABORT))
        self.discard_requests += 1
        ended = "superseded" if self.state is SessionState.SUPERSEDED else "cancelled"
        whose = f"this push's image, {ended}" if ids == self._image_ids() else "the image of a cancelled or superseded push"
        self._note(
            NoteKind.DISCARD,
            "device holds {}: Upgrade End answered ABORT (#{}) so that it discards manufacturer 0x{:04X}, "
            "image type 0x{:04X}, version 0x{:08X} and queries again".format(whose, self.discard_requests, *ids),
            self._offset_or_none(),
        )
        if self.state is P:
            # It goes back to normal operation now: tell it of our image at once.
            self._send_notify()
        return True

    def _downloading_again(self) -> None:
        """The device downloads our image from us again: if it was one to discard (the
        same image pushed again after a cancel), its next complete download is ours."""
        ids = self._image_ids()
        if ids in self.discard_images:
            self.discard_images = self.discard_images - {ids}
            self._note(NoteKind.DISCARD, "device downloads the image again: its Upgrade End will be answered for this push")

    def _end_failure(self, ev: UpgradeEndRequested) -> None:
        # ZCL OTA, Upgrade End Request with a failure status: the server answers a
        # Default Response (SUCCESS), not an Upgrade End Response.
        self._emit(SendDefaultResponse(ev.tsn, int(DeviceCommand.UPGRADE_END), Status.SUCCESS))
        if not self._is_our_image(ev):
            # A failure about an image this push does not serve (an older download, a
            # garbled frame) says nothing about ours. The answer stays the same: the
            # notes give a failure status a Default Response whatever the image, and
            # an unanswered request counts against the device's timeout.
            self._note(
                NoteKind.WARNING,
                f"device reported {_status_name(ev.status)} for another image: not its word on this push, "
                "which serves manufacturer 0x{:04X}, image type 0x{:04X}, version 0x{:08X}".format(*self._image_ids()),
                self._offset_or_none(),
            )
            return
        when = {
            P: "at end of transfer",
            T: "at end of transfer",
            H: "while held",
            S: "while held",
            A: "after activation",
        }.get(self.state, f"after the push was {self.state.value}")
        reason = f"device reported {_status_name(ev.status)} {when}"
        if self._may_become(F):
            self._fail(reason, ev.status)
        else:
            self._note(NoteKind.WARNING, reason)

    def _end_transfer(self, ev: UpgradeEndRequested) -> None:
        self._note_end(ev)
        if ev.status != Status.SUCCESS:
            self._end_failure(ev)
            return
        if self._discard(ev):
            return
        if not self._is_our_image(ev):
            self._hold(ev)
            return
        if self.offset < self.image.size:
            self._note(
                NoteKind.WARNING,
                f"device ended with the image sent only up to offset {self.offset} of {self.image.size}; accepting its word",
                self.offset,
            )
        self._hold(ev)
        self._set_state(H, "device verified the image; holding it until activation")
        self._note(NoteKind.HOLD, f"image held: Upgrade End Response with upgrade time 0xFFFFFFFF (#{self.held_requests})", self.offset)

    def _end_while_held(self, ev: UpgradeEndRequested) -> None:
        self._note_end(ev)
        if ev.status != Status.SUCCESS:
            self._end_failure(ev)
            return
        if self._discard(ev):
            return
        self._hold(ev)
        self._note(NoteKind.HOLD, f"{self.state.value} device asked again: hold #{self.held_requests}", self.offset)

    def _end_after_activation(self, ev: UpgradeEndRequested) -> None:
        self._note_end(ev)
        if ev.status != Status.SUCCESS:
            self._end_failure(ev)
            return
        if self._discard(ev):
            return
        if not self._is_our_image(ev):
            self._hold(ev)
            return
        self._emit(SendUpgradeEndResponse(ev.tsn, *self._image_ids(), hold=False, upgrade_at=self.upgrade_at))
        when = "now" if self.upgrade_at is None else self.upgrade_at.isoformat()
        self._note(NoteKind.ACTIVATION, f"device asked again: activation answer repeated ({when})", self.offset)

    def _end_after_close(self, ev: UpgradeEndRequested) -> None:
        self._note_end(ev)
        if ev.status != Status.SUCCESS:
            self._end_failure(ev)
            return
        if self._discard(ev):
            return
        # The brief for a failed push was "answer a Default Response". We answer hold
        # instead: a device holding a complete image that gets no
        # Upgrade End Response counts the request as unanswered and, at its threshold,
        # may apply the image by itself. Only activate() may ever let it.
        self._hold(ev)
        self._note(
            NoteKind.HOLD,
            f"the push is {self.state.value}, but the device reports a complete image: answered hold so that it cannot activate",
            self.offset,
            warning=True,
        )

    # ------------------------------------------------------------------ malformed frames

    def _answer_malformed(self, ev: MalformedFrameReceived) -> None:
        self._emit(SendDefaultResponse(ev.tsn, ev.command_id, Status.MALFORMED_COMMAND))
        self._note(NoteKind.WARNING, f"malformed frame (command 0x{ev.command_id:02X}): {ev.reason}", self._offset_or_none())

    def _refuse_unsupported(self, ev: UnsupportedCommandReceived) -> None:
        # ZCL 2.5.12: a cluster command the receiver does not implement gets Default
        # Response UNSUP_CLUSTER_COMMAND, an error, so whatever the frame's
        # disable-default-response bit says.
        self._emit(SendDefaultResponse(ev.tsn, ev.command_id, Status.UNSUP_CLUSTER_COMMAND))
        self._note(
            NoteKind.IGNORED,
            f"command 0x{ev.command_id:02X} refused as unsupported (UNSUP_CLUSTER_COMMAND); the push stays {self.state.value}",
            self._offset_or_none(),
        )

    def _refuse_manufacturer_specific(self, ev: ManufacturerSpecificReceived) -> None:
        # ZCL 2.5.12 (Default Response): a manufacturer-specific command the receiver
        # does not implement gets UNSUP_MANUF_CLUSTER_COMMAND. That is an error, so it
        # is answered whatever the frame's disable-default-response bit says (that bit
        # only waives the Default Response to a command that succeeded).
        self._emit(SendDefaultResponse(ev.tsn, ev.command_id, Status.UNSUP_MANUF_CLUSTER_COMMAND))
        self._note(
            NoteKind.IGNORED,
            f"manufacturer-specific command 0x{ev.command_id:02X} of manufacturer 0x{ev.manufacturer_code:04X} "
            f"({len(ev.payload)} payload bytes) refused as unsupported; the push stays {self.state.value}",
            self._offset_or_none(),
        )

    # ------------------------------------------------------------------ the gate's calls

    def _activate(self, at: dt.datetime | None, utc_now: dt.datetime | None) -> None:
        lead = 0.0
        if at is not None and utc_now is not None:
            lead = max(0.0, (at - utc_now).total_seconds())
        # The unsolicited Upgrade End Response: current time 0 and upgrade time 0 for
        # "now", or an absolute UTC time (ZCL OTA, Upgrade End Response; the codec
        # encodes upgrade_at).
        self._emit(SendUpgradeEndResponse(None, *self._image_ids(), hold=False, upgrade_at=at))
        self.upgrade_at = at
        when = "now" if at is None else f"at {at.isoformat()}"
        self._set_state(A, f"activation sent: apply {when}")
        activation = self._now + lead
        self._grace_until = activation + self.config.confirm_read_after_s
        self._read_at = self._grace_until
        self._confirm_by = activation + self.config.confirm_timeout_s
        self._note(
            NoteKind.ACTIVATION,
            f"activation sent (apply {when}); reading CurrentFileVersion {self.config.confirm_read_after_s:g} s after it, "
            f"failing after {self.config.confirm_timeout_s:g} s without the new version",
            self.offset,
        )

    def _timer_activated(self) -> None:
        if self._confirm_by is not None and self._now >= self._confirm_by:
            self._fail(
                f"no report of file version {_v(self.image.file_version)} within {self.config.confirm_timeout_s:g} s "
                f"of activation (last reported {_v(self.device_file_version)})"
            )
            return
        if self._read_at is not None and self._now >= self._read_at:
            self._emit(ReadAttributes((int(Attribute.CURRENT_FILE_VERSION),)))
            self._note(NoteKind.ATTRIBUTES, "reading CurrentFileVersion to confirm the activation")
            self._read_at = self._now + self.config.confirm_read_after_s

    def _schedule(self, at: dt.datetime) -> None:
        if self.state is H:
            self._set_state(S, f"activation scheduled for {at.isoformat()}")
        self.scheduled_at = at
        self._note(NoteKind.SCHEDULE, f"activation scheduled for {at.isoformat()}; the device stays held until then", self.offset)

    def _unschedule(self) -> None:
        self._set_state(H, "activation schedule withdrawn")
        self._note(NoteKind.SCHEDULE, "activation schedule withdrawn; the device stays held", self.offset)

    def _cancel(self, reason: str) -> None:
        if self.state is A:
            self._note(NoteKind.WARNING, "activation was already sent: cancelling stops the confirmation, not the device")
        self._end_discarding(SessionState.CANCELLED, "cancelled", reason)

    def _supersede(self, reason: str) -> None:
        self._end_discarding(SessionState.SUPERSEDED, "superseded", reason)

    def _end_discarding(self, state: SessionState, verb: str, reason: str) -> None:
        """Cancel and supersede: the push ends and the device is to drop the image."""
        self._set_state(state, reason)
        self.discard_images = self.discard_images | {self._image_ids()}
        then = "; its next Upgrade End Request for the image will be answered ABORT, so that it discards it" if self._was_held else ""
        self._note(NoteKind.CANCEL, f"push {verb}: {reason}{then}", self._offset_or_none())


def _check_table() -> None:
    """Every handler the table names exists (checked at import: a typo fails fast)."""
    for cells in TRANSITIONS.values():
        for cell in cells.values():
            if not callable(getattr(OtaSession, cell.handler, None)):
                raise ImportError(f"transition table names {cell.handler}, which OtaSession lacks")


_check_table()
