"""The hub's side of one device's GBCS tunnel: a sans-I/O Tunneling client.

Theory of operation. For ESME, HCALCS and PPMID the hub is the tunnel client (GBCS
10.2.2.1, as Silicon Labs' comms-hub-function plugin quotes it). Once the device is
registered the hub asks for a tunnel (``open``: RequestTunnel, protocol 6 "GB-HGRP",
manufacturer 0xFFFF, no flow control, 1500 bytes in) and keeps it: the device needs it
to send its alerts too. Bare GBCS messages then go both ways in TransferData, each
answered with a ZCL Default Response.

States (``TunnelState``)::

    IDLE --open--> OPENING --SUCCESS--> OPEN --close--> CLOSED
                     |  ^                 |
        busy/no ids/ |  | timer           | NO_SUCH_TUNNEL, closure notification,
        no answer    v  |                 | reset (radio reconnect, daemon restart)
                  RETRY_WAIT              +--> OPENING (the message in flight resent)
    OPENING --protocol/flow control not supported--> FAILED (reason)

RequestTunnelResponse statuses as the notes quote GBCS through Silicon Labs' tunnel
manager: BUSY retries after 180 s; NO_MORE_TUNNEL_IDS closes the tunnel this client
held before a reset (the device may still count it), then retries after 5 s;
PROTOCOL_NOT_SUPPORTED and FLOW_CONTROL_NOT_SUPPORTED fail the tunnel with that reason.
An unanswered or undelivered RequestTunnel is asked again after ``open_retry``.

Outgoing messages wait in one queue and go one at a time (no flow control: the next
TransferData waits for the Default Response to the previous one, so a TransferDataError,
which names only the tunnel, is about the one in flight). NO_SUCH_TUNNEL reopens and
resends it; WRONG_DEVICE and DATA_OVERFLOW fail it; a Default Response other than
SUCCESS fails it; no answer (or an undelivered frame) sends it again, ``max_attempts``
times in all. A message larger than the device's maximum incoming transfer size fails
without being sent.

Received TransferData on our tunnel is handed up (``MessageReceived``) and answered with
Default Response SUCCESS when the sender asked for one; on any other tunnel id it gets
TransferDataError NO_SUCH_TUNNEL, and one larger than we declared DATA_OVERFLOW.

Time is an argument: ``get_timer()`` says when ``handle_timer(now)`` is due. The client
numbers its own frames (``tsn``) to match Default Responses to them.
"""

from __future__ import annotations

import enum
from collections import deque
from dataclasses import dataclass, field

from gateway.tunnel import frames as tf

__all__ = [
    "DefaultResponseReceived",
    "Event",
    "FrameReceived",
    "MessageFailed",
    "MessageReceived",
    "MessageSent",
    "Note",
    "SendDefaultResponse",
    "SendFailed",
    "SendFrame",
    "StateChanged",
    "TunnelClient",
    "TunnelConfig",
    "TunnelState",
    "TunnelUsageError",
]

_ZCL_SUCCESS = 0x00
_ZCL_MALFORMED_COMMAND = 0x80


class TunnelState(enum.Enum):
    IDLE = "idle"  # not asked to open yet
    OPENING = "opening"  # RequestTunnel sent, waiting for its response
    RETRY_WAIT = "retry-wait"  # asking again at a set time
    OPEN = "open"
    CLOSED = "closed"  # closed by us (shutdown)
    FAILED = "failed"  # the device refused the tunnel for good; ``reason`` says why


S = TunnelState
#: Where each state may go; ``_set_state`` refuses anything else.
TRANSITIONS: dict[TunnelState, frozenset[TunnelState]] = {
    S.IDLE: frozenset({S.OPENING, S.CLOSED}),
    S.OPENING: frozenset({S.OPEN, S.RETRY_WAIT, S.FAILED, S.CLOSED, S.OPENING}),
    S.RETRY_WAIT: frozenset({S.OPENING, S.CLOSED}),
    S.OPEN: frozenset({S.OPENING, S.CLOSED}),
    S.CLOSED: frozenset({S.OPENING}),
    S.FAILED: frozenset({S.OPENING, S.CLOSED}),
}


class TunnelUsageError(RuntimeError):
    """The caller asked the client for something its state does not allow."""


@dataclass(frozen=True, slots=True)
class TunnelConfig:
    busy_retry: float = 180.0  # RequestTunnelResponse BUSY (GBCS, via Silicon Labs)
    no_ids_retry: float = 5.0  # NO_MORE_TUNNEL_IDS
    open_retry: float = 30.0  # no RequestTunnelResponse, or the request undelivered
    response_timeout: float = 10.0  # for a RequestTunnelResponse or a Default Response
    resend_delay: float = 2.0  # after the radio could not deliver a TransferData
    max_attempts: int = 3  # sends of one TransferData before it fails
    max_incoming: int = tf.MAX_TRANSFER_SIZE  # what we declare and accept

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError(f"TunnelConfig: max_attempts={self.max_attempts} must be at least 1")
        for name in ("busy_retry", "no_ids_retry", "open_retry", "response_timeout", "resend_delay"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"TunnelConfig: {name}={getattr(self, name)!r} must be >= 0")


# ---------------------------------------------------------------------- events in


@dataclass(frozen=True, slots=True)
class FrameReceived:
    """A cluster-specific frame the device (server) sent on the Tunneling cluster."""

    tsn: int
    command_id: int
    payload: bytes
    wants_default_response: bool = True


@dataclass(frozen=True, slots=True)
class DefaultResponseReceived:
    tsn: int
    command_id: int
    status: int


@dataclass(frozen=True, slots=True)
class SendFailed:
    """The radio could not deliver the frame we sent with ``tsn``."""

    tsn: int
    reason: str


Event = FrameReceived | DefaultResponseReceived | SendFailed

# ---------------------------------------------------------------------- actions out


@dataclass(frozen=True, slots=True)
class SendFrame:
    """Send ``frame`` client -> server with ``tsn``; ``default_response``: ask for one."""

    tsn: int
    frame: tf.ClientFrame
    default_response: bool

    @property
    def command_id(self) -> int:
        return tf.client_command_id(self.frame)


@dataclass(frozen=True, slots=True)
class SendDefaultResponse:
    tsn: int
    command_id: int
    status: int


@dataclass(frozen=True, slots=True)
class MessageReceived:
    """A GBCS message the device sent over the tunnel."""

    data: bytes


@dataclass(frozen=True, slots=True)
class MessageSent:
    """The device acknowledged message ``ticket`` (Default Response SUCCESS)."""

    ticket: int
    data: bytes


@dataclass(frozen=True, slots=True)
class MessageFailed:
    ticket: int
    data: bytes
    reason: str


@dataclass(frozen=True, slots=True)
class StateChanged:
    old: TunnelState
    new: TunnelState
    reason: str | None = None


@dataclass(frozen=True, slots=True)
class Note:
    text: str


Action = SendFrame | SendDefaultResponse | MessageReceived | MessageSent | MessageFailed | StateChanged | Note


@dataclass(slots=True)
class _Outgoing:
    ticket: int
    data: bytes
    attempts: int = 0
    tsn: int | None = None  # of the TransferData in flight
    due: float | None = None  # resend or give up then


@dataclass
class TunnelClient:
    """One device's tunnel (see the module docstring)."""

    config: TunnelConfig = field(default_factory=TunnelConfig)
    tsn: int = 0
    state: TunnelState = TunnelState.IDLE
    reason: str | None = None
    tunnel_id: int | None = None
    #: The device's maximum incoming transfer size, from its RequestTunnelResponse.
    peer_max: int = tf.MAX_TRANSFER_SIZE
    _queue: deque[_Outgoing] = field(default_factory=deque)
    _in_flight: _Outgoing | None = None
    _open_tsn: int | None = None
    _open_due: float | None = None
    _retry_at: float | None = None
    _stale_id: int | None = None  # held before a reset: the device may still count it
    _tickets: int = 0

    # ------------------------------------------------------------------ the caller's

    def open(self, now: float) -> list[Action]:
        """Ask for the tunnel (the device is registered). Harmless when already open
        or opening."""
        if self.state in (S.OPEN, S.OPENING, S.RETRY_WAIT):
            return []
        return self._request(now, "device registered")

    def send(self, data: bytes, now: float) -> tuple[int, list[Action]]:
        """Queue a bare GBCS message; returns its ticket and what to do now."""
        self._tickets += 1
        message = _Outgoing(self._tickets, bytes(data))
        if self.state is S.FAILED:
            return message.ticket, [MessageFailed(message.ticket, message.data, f"tunnel failed: {self.reason}")]
        if self.state is S.CLOSED:
            return message.ticket, [MessageFailed(message.ticket, message.data, "tunnel closed")]
        self._queue.append(message)
        return message.ticket, self._pump(now)

    def close(self, now: float) -> list[Action]:
        """Shutdown: CloseTunnel if one is open; everything queued fails."""
        actions: list[Action] = []
        if self.state is S.CLOSED:
            return actions
        if self.state is S.OPEN and self.tunnel_id is not None:
            actions.append(SendFrame(self._next_tsn(), tf.CloseTunnel(self.tunnel_id), default_response=False))
        actions += self._fail_all("tunnel closed")
        self.tunnel_id = None
        self._clear_open()
        actions += self._set_state(S.CLOSED, "closed by the hub")
        return actions

    def reset(self, now: float, why: str) -> list[Action]:
        """The hub lost the tunnel's state (radio reconnect, the device rejoined, a
        restart): ask again. Nothing happens before the first ``open``."""
        if self.state in (S.IDLE, S.CLOSED):
            return []
        if self.tunnel_id is not None:
            self._stale_id = self.tunnel_id
        return self._reopen(now, why)

    def abandon(self, reason: str) -> list[Action]:
        """Fail every queued message, state unchanged (the hub found no tunnel server
        to open a tunnel with)."""
        return self._fail_all(reason)

    def get_timer(self) -> float | None:
        times = [t for t in (self._open_due, self._retry_at) if t is not None]
        if self._in_flight is not None and self._in_flight.due is not None:
            times.append(self._in_flight.due)
        return min(times) if times else None

    def handle_timer(self, now: float) -> list[Action]:
        """Run what is due at ``now``; early or late calls are harmless."""
        actions: list[Action] = []
        if self.state is S.RETRY_WAIT and self._retry_at is not None and now >= self._retry_at:
            actions += self._request(now, "retrying")
        elif self.state is S.OPENING and self._open_due is not None and now >= self._open_due:
            self._clear_open()
            actions += self._wait(now + self.config.open_retry, "no RequestTunnelResponse")
        flight = self._in_flight
        if self.state is S.OPEN and flight is not None and flight.due is not None and now >= flight.due:
            actions += self._retry_flight(now, "no Default Response to TransferData")
        return actions

    @property
    def queued(self) -> int:
        return len(self._queue) + (self._in_flight is not None)

    # ------------------------------------------------------------------ events

    def handle(self, event: Event, now: float) -> list[Action]:
        if isinstance(event, DefaultResponseReceived):
            return self._default_response(event, now)
        if isinstance(event, SendFailed):
            return self._send_failed(event, now)
        try:
            frame = tf.parse_server_frame(event.command_id, event.payload)
        except tf.TunnelFrameError as err:
            actions: list[Action] = [Note(f"refused a frame from the device: {err}")]
            if event.wants_default_response:
                actions.append(SendDefaultResponse(event.tsn, event.command_id, _ZCL_MALFORMED_COMMAND))
            return actions
        if isinstance(frame, tf.RequestTunnelResponse):
            return self._response(event.tsn, frame, now)
        if isinstance(frame, tf.TransferData):
            return self._data(event, frame)
        if isinstance(frame, tf.TransferDataError):
            return self._data_error(frame, now)
        return self._closure(frame, now)

    def _response(self, tsn: int, frame: tf.RequestTunnelResponse, now: float) -> list[Action]:
        if self.state is not S.OPENING or tsn != self._open_tsn:
            return [Note(f"RequestTunnelResponse (tsn {tsn}, status {frame.status}) answers no request of ours: ignored")]
        self._clear_open()
        status = frame.status
        if status == tf.TunnelStatus.SUCCESS:
            self.tunnel_id = frame.tunnel_id
            self.peer_max = frame.max_incoming_transfer_size
            self._stale_id = None
            actions = self._set_state(S.OPEN, f"tunnel {frame.tunnel_id}")
            return actions + self._pump(now)
        if status == tf.TunnelStatus.BUSY:
            return self._wait(now + self.config.busy_retry, "the device is busy")
        if status == tf.TunnelStatus.NO_MORE_TUNNEL_IDS:
            actions = []
            if self._stale_id is not None:
                actions.append(SendFrame(self._next_tsn(), tf.CloseTunnel(self._stale_id), default_response=False))
                self._stale_id = None
            return actions + self._wait(now + self.config.no_ids_retry, "the device has no more tunnel ids")
        try:
            name = tf.TunnelStatus(status).name
        except ValueError:
            name = f"status 0x{status:02X}"
        return self._failed(f"the device refused the tunnel: {name}")

    def _data(self, event: FrameReceived, frame: tf.TransferData) -> list[Action]:
        if self.state is not S.OPEN or frame.tunnel_id != self.tunnel_id:
            error = tf.TransferDataError(frame.tunnel_id, tf.TransferDataStatus.NO_SUCH_TUNNEL)
            return [
                Note(f"TransferData on tunnel {frame.tunnel_id}, which is not ours: NO_SUCH_TUNNEL"),
                SendFrame(self._next_tsn(), error, default_response=False),
            ]
        if len(frame.data) > self.config.max_incoming:
            error = tf.TransferDataError(frame.tunnel_id, tf.TransferDataStatus.DATA_OVERFLOW)
            return [
                Note(f"TransferData of {len(frame.data)} bytes, above our {self.config.max_incoming}: DATA_OVERFLOW"),
                SendFrame(self._next_tsn(), error, default_response=False),
            ]
        actions: list[Action] = [MessageReceived(frame.data)]
        if event.wants_default_response:
            actions.append(SendDefaultResponse(event.tsn, event.command_id, _ZCL_SUCCESS))
        return actions

    def _data_error(self, frame: tf.TransferDataError, now: float) -> list[Action]:
        if frame.tunnel_id != self.tunnel_id or self.state is not S.OPEN:
            return [Note(f"TransferDataError {frame.status} for tunnel {frame.tunnel_id}, not ours: ignored")]
        if frame.status == tf.TransferDataStatus.NO_SUCH_TUNNEL:
            return self._reopen(now, "the device knows no such tunnel")
        flight = self._in_flight
        try:
            name = tf.TransferDataStatus(frame.status).name
        except ValueError:
            name = f"status 0x{frame.status:02X}"
        if flight is None:
            return [Note(f"TransferDataError {name} with no message in flight: ignored")]
        self._in_flight = None
        return [MessageFailed(flight.ticket, flight.data, f"the device answered TransferDataError {name}"), *self._pump(now)]

    def _closure(self, frame: tf.TunnelClosureNotification, now: float) -> list[Action]:
        if self.state is not S.OPEN or frame.tunnel_id != self.tunnel_id:
            return [Note(f"TunnelClosureNotification for tunnel {frame.tunnel_id}, not ours: ignored")]
        self.tunnel_id = None  # closed by the device: nothing stale to close
        return self._reopen(now, "the device closed the tunnel")

    def _default_response(self, event: DefaultResponseReceived, now: float) -> list[Action]:
        if event.command_id == tf.ClientCommand.REQUEST_TUNNEL and self.state is S.OPENING and event.tsn == self._open_tsn:
            if event.status == _ZCL_SUCCESS:
                return []
            self._clear_open()
            return self._failed(f"the device answered RequestTunnel with Default Response status 0x{event.status:02X}")
        flight = self._in_flight
        if flight is None or event.tsn != flight.tsn or event.command_id != tf.ClientCommand.TRANSFER_DATA:
            return []
        self._in_flight = None
        if event.status == _ZCL_SUCCESS:
            return [MessageSent(flight.ticket, flight.data), *self._pump(now)]
        reason = f"the device answered TransferData with Default Response status 0x{event.status:02X}"
        return [MessageFailed(flight.ticket, flight.data, reason), *self._pump(now)]

    def _send_failed(self, event: SendFailed, now: float) -> list[Action]:
        if self.state is S.OPENING and event.tsn == self._open_tsn:
            self._clear_open()
            return self._wait(now + self.config.open_retry, f"RequestTunnel not delivered: {event.reason}")
        flight = self._in_flight
        if self.state is S.OPEN and flight is not None and event.tsn == flight.tsn:
            if flight.attempts >= self.config.max_attempts:
                return self._retry_flight(now, f"not delivered: {event.reason}")
            flight.due = now + self.config.resend_delay
            return [Note(f"TransferData not delivered ({event.reason}): again in {self.config.resend_delay:g} s")]
        return []

    # ------------------------------------------------------------------ internals

    def _next_tsn(self) -> int:
        tsn = self.tsn
        self.tsn = (self.tsn + 1) & 0xFF
        return tsn

    def _request(self, now: float, why: str) -> list[Action]:
        self._retry_at = None
        self._open_tsn = self._next_tsn()
        self._open_due = now + self.config.response_timeout
        request = tf.RequestTunnel(max_incoming_transfer_size=self.config.max_incoming)
        actions = self._set_state(S.OPENING, why)
        # Its answer is the RequestTunnelResponse: no Default Response wanted.
        actions.append(SendFrame(self._open_tsn, request, default_response=False))
        return actions

    def _reopen(self, now: float, why: str) -> list[Action]:
        flight = self._in_flight
        if flight is not None:
            self._in_flight = None
            flight.tsn = flight.due = None
            self._queue.appendleft(flight)  # resent first, once the new tunnel opens
        self.tunnel_id = None
        return self._request(now, why)

    def _wait(self, when: float, why: str) -> list[Action]:
        self._retry_at = when
        return self._set_state(S.RETRY_WAIT, why)

    def _failed(self, reason: str) -> list[Action]:
        self.tunnel_id = None
        actions = self._set_state(S.FAILED, reason)
        return actions + self._fail_all(f"tunnel failed: {reason}")

    def _clear_open(self) -> None:
        self._open_tsn = self._open_due = self._retry_at = None

    def _fail_all(self, reason: str) -> list[Action]:
        pending = ([self._in_flight] if self._in_flight is not None else []) + list(self._queue)
        self._in_flight = None
        self._queue.clear()
        return [MessageFailed(m.ticket, m.data, reason) for m in pending]

    def _retry_flight(self, now: float, why: str) -> list[Action]:
        flight = self._in_flight
        assert flight is not None  # callers check
        self._in_flight = None
        if flight.attempts >= self.config.max_attempts:
            reason = f"{why} ({flight.attempts} attempts)"
            return [MessageFailed(flight.ticket, flight.data, reason), *self._pump(now)]
        self._queue.appendleft(flight)
        return [Note(f"{why}: sending again"), *self._pump(now)]

    def _pump(self, now: float) -> list[Action]:
        """Send the next queued message if the tunnel is open and nothing is in flight."""
        actions: list[Action] = []
        while self.state is S.OPEN and self._in_flight is None and self._queue and self.tunnel_id is not None:
            message = self._queue.popleft()
            if len(message.data) > self.peer_max:
                reason = f"{len(message.data)} bytes, above the device's maximum incoming transfer size {self.peer_max}"
                actions.append(MessageFailed(message.ticket, message.data, reason))
                continue
            message.attempts += 1
            message.tsn = self._next_tsn()
            message.due = now + self.config.response_timeout
            self._in_flight = message
            actions.append(SendFrame(message.tsn, tf.TransferData(self.tunnel_id, message.data), default_response=True))
        return actions

    def _set_state(self, new: TunnelState, reason: str | None) -> list[Action]:
        old = self.state
        if new not in TRANSITIONS[old]:
            raise TunnelUsageError(f"tunnel: {old.value} -> {new.value} is not a move this client makes ({reason})")
        self.state = new
        self.reason = reason
        return [StateChanged(old, new, reason)]
