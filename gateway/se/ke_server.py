"""The hub's side of Smart Energy key establishment: a sans-I/O responder.

Theory of operation
-------------------
One ``KeServer`` runs one exchange with one device; the hub is the responder (the
Key Establishment server, the trust center) and the device the initiator::

    IDLE ── Initiate Request, checks pass ──▶ IDENTIFYING  (Compute: ECQV + ephemeral key)
    IDENTIFYING ── Computed ──▶ AWAIT_EPHEMERAL           (Initiate Response sent)
    AWAIT_EPHEMERAL ── Ephemeral Data Request ──▶ AGREEING (Compute: ECMQV, KDF, MACs)
    AGREEING ── Computed ──▶ AWAIT_CONFIRM                (Ephemeral Data Response sent)
    AWAIT_CONFIRM ── Confirm Key Data Request, MACU right ──▶ ESTABLISHED
                                                          (Confirm Key Data Response sent)
    any live state ── refusal (our Terminate), device's Terminate, timeout ──▶ FAILED

ESTABLISHED and FAILED are the end states (``done``): the exchange is over, and an
Initiate that reaches a done machine is ignored; the driver starts a new ``KeServer``
for it (a device re-keys with a new exchange, e.g. after it rejoined). Other frames
in an end state are ignored too, not refused: a Terminate after success could make
the device drop the key it has just confirmed, and after a failure ours has been sent.

The heavy steps never run inside ``handle``: they leave as ``Compute(kind, ticket,
work)``, a zero-argument callable over ``gateway.se`` that the asyncio layer runs in an
executor, feeding back ``Computed(kind, ticket, result)`` or ``ComputeFailed(kind,
ticket, error)``. The ticket names the computation; a result for any other (one from
before a restart, one arriving after a failure) is stale and ignored.

Each device request gets one answer, sent when its work is done: the Initiate
Response once the device's certificate has given its public key (a point off the
curve is found there, before we commit), the Ephemeral Data Response once Z and both
MACs are known (a bad ephemeral point is refused as the reply to the frame that
carried it). The hub's EphemeralDataGenerateTime therefore covers the agreement too.

The checks a trust center makes on the Initiate, in order, each refused with
Terminate Key Establishment and its status:

* the suite field is not one suite this hub offers: UNSUPPORTED_SUITE (checked
  before the length, which depends on the suite);
* the frame is too short or too long for that suite: BAD_MESSAGE;
* the certificate does not parse (point prefix; for suite 2 type, curve, hash) or,
  for suite 2, its key usage lacks key agreement: INVALID_CERTIFICATE;
* its issuer is not a configured CA: UNKNOWN_ISSUER (before the subject check:
  a certificate from an unknown CA says nothing trustworthy about its subject);
* its subject is not the sender's EUI-64: INVALID_CERTIFICATE;
* for suite 2, it is not yet valid or has expired at the hub's time (the Initiate's
  ``FrameReceived.utc``; ``gateway.se.certificate.check_validity``): INVALID_CERTIFICATE,
  the status the cluster has for a certificate it cannot accept (it has none for
  expiry alone);
* ECQV finds its reconstruction point off the curve: INVALID_CERTIFICATE.

Later: a malformed Ephemeral Data or Confirm Key frame, a bad ephemeral point, and
every frame out of order (a request the exchange is not at) get BAD_MESSAGE; a MACU
that is not ours gets BAD_KEY_CONFIRM. A failed computation that is not the device's
fault, or one that outlives what the device will wait, gets NO_RESOURCES: the hub
cannot serve now, retry after the wait time. A Terminate from the device is never
answered: the exchange fails with side "device". A command the cluster does not
define gets the ZCL Default Response UNSUP_CLUSTER_COMMAND and changes nothing.

Repeats. A frame equal to the one the machine last answered (same TSN, command and
payload) while the machine is still where that answer left it gets the same answer
again (the first was lost on the air), and one equal to a request whose work is still
running is ignored (its answer is coming). Any other Initiate mid-exchange restarts
the exchange with fresh ephemeral keys, and is checked like the first, rather than
being refused NO_RESOURCES: that is the answer of a responder that cannot take an
exchange on (busy with *another* device, out of memory), which is the driver's
business, not this per-device machine's; an
initiator sends Initiate only to begin, so a new one from the same device means it
abandoned the old exchange (timed out, rebooted), and refusing it would only make it
wait out our wait time to try again.

Timeouts. The hub waits for the device's Ephemeral Data Request for the device's
EphemeralDataGenerateTime, and for its Confirm Key Data Request for the device's
ConfirmKeyGenerateTime, each plus ``KeConfig.margin_s`` (default 10 s: a choice of
this project, not a figure taken from the specification or a stack, none being at
hand; it covers delivery of our answer and of the device's request with APS retries
through a parent, several seconds for a polled end device). The device is silent, so nothing
is sent: the exchange fails with no status. A computation of ours gets the hub's own
EphemeralDataGenerateTime plus the margin; after that the device has given up, and
gets NO_RESOURCES for its pending request.

Every rule lives in ``TRANSITIONS``: state, then trigger, to the handler and the
states it may lead to. A missing cell is ignored with a ``Note``; ``_set_state``
refuses a move its cell does not list (a bug in this module), and the table's
handlers are checked at import.
"""

from __future__ import annotations

import enum
import hmac
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

from eui64 import Eui64, Eui64Error
from gateway.se.certificate import ImplicitCertificate, check_validity, parse_certificate, require_key_agreement
from gateway.se.ecmqv import Agreement, agree
from gateway.se.ecqv import KeyPair, Rng, new_key_pair, private_scalar, reconstruct_public_key
from gateway.se.errors import SeError
from gateway.se.ke_frames import (
    ClientCommand,
    ConfirmKeyDataRequest,
    ConfirmKeyDataResponse,
    EphemeralDataRequest,
    EphemeralDataResponse,
    InitiateKeyEstablishmentRequest,
    InitiateKeyEstablishmentResponse,
    KeFrameError,
    KeStatus,
    ServerFrame,
    TerminateKeyEstablishment,
    suite_bitmap,
    suite_for_bit,
)
from gateway.se.suites import Suite, suite

__all__ = [
    "Action",
    "Compute",
    "ComputeFailed",
    "ComputeKind",
    "Computed",
    "Established",
    "Event",
    "Failed",
    "FrameReceived",
    "HubIdentity",
    "KeConfig",
    "KeConfigError",
    "KeServer",
    "KeState",
    "Note",
    "NoteKind",
    "Send",
    "SendDefaultResponse",
    "TRANSITIONS",
    "TrustedCa",
    "UNSUP_CLUSTER_COMMAND",
]

#: ZCL status of a Default Response to a command the cluster does not define.
UNSUP_CLUSTER_COMMAND = 0x81


class KeConfigError(SeError):
    """The hub's key-establishment configuration cannot serve (the caller's mistake)."""


# --------------------------------------------------------------------------- configuration


@dataclass(frozen=True, slots=True)
class TrustedCa:
    """A certificate authority the hub trusts: the issuer field of the certificates it
    signs (8 bytes, certificate order) and its compressed public key."""

    issuer: bytes
    public_key: bytes


@dataclass(frozen=True, slots=True)
class HubIdentity:
    """The hub's own implicit certificate and private key for one suite, and the CAs
    whose devices it accepts under that suite."""

    certificate: ImplicitCertificate
    private_key: bytes = field(repr=False)
    trusted: tuple[TrustedCa, ...]

    def __post_init__(self) -> None:
        s = self.certificate.suite
        if len(self.private_key) != s.private_key_length:
            raise KeConfigError(f"suite {s.number} private key: {len(self.private_key)} bytes, needs {s.private_key_length}")
        if not self.trusted:
            raise KeConfigError(f"suite {s.number}: no trusted CA public key")
        for ca in self.trusted:
            if len(ca.issuer) != 8:
                raise KeConfigError(f"suite {s.number} CA issuer: {len(ca.issuer)} bytes, needs 8")
            if len(ca.public_key) != s.point_length or ca.public_key[:1] not in (b"\x02", b"\x03"):
                raise KeConfigError(f"suite {s.number} CA public key: not a {s.point_length}-byte compressed point")

    @property
    def suite(self) -> Suite:
        return self.certificate.suite

    @classmethod
    def load(
        cls,
        suite_number: int,
        certificate: bytes,
        private_key: bytes,
        ca_public_keys: Iterable[bytes | TrustedCa],
    ) -> HubIdentity:
        """From raw bytes. A bare CA public key is taken as the key of the CA that
        issued the hub's own certificate (its issuer field): a lab with one test CA
        needs nothing more; several CAs need their issuers (``TrustedCa``)."""
        try:
            s = suite(suite_number)
            cert = parse_certificate(bytes(certificate), s)
        except SeError as err:
            raise KeConfigError(f"hub certificate for suite {suite_number}: {err}") from err
        trusted = tuple(ca if isinstance(ca, TrustedCa) else TrustedCa(cert.issuer, bytes(ca)) for ca in ca_public_keys)
        return cls(cert, bytes(private_key), trusted)

    def check_key(self) -> None:
        """Raise ``KeConfigError`` unless the private key is the one the certificate
        gives under the trusted CA of its own issuer: a mismatch would otherwise show
        only as every device's BAD_KEY_CONFIRM. Heavy (two scalar multiplications):
        for start-up, off the event loop."""
        s = self.suite
        ca_public_key = self.ca_key(self.certificate.issuer)
        if ca_public_key is None:
            raise KeConfigError(f"suite {s.number}: no trusted CA for the hub certificate's issuer {_display(self.certificate.issuer)}")
        try:
            expected = reconstruct_public_key(self.certificate, ca_public_key)
            d = private_scalar(s, self.private_key, f"suite {s.number} private key")
        except SeError as err:
            raise KeConfigError(f"suite {s.number} hub identity: {err}") from err
        if s.curve.compress(s.curve.multiply_base(d)) != expected:
            raise KeConfigError(f"suite {s.number}: the private key is not the hub certificate's (under the CA of issuer {_display(self.certificate.issuer)})")

    def ca_key(self, issuer: bytes) -> bytes | None:
        for ca in self.trusted:
            if ca.issuer == issuer:
                return ca.public_key
        return None


@dataclass(frozen=True, slots=True)
class KeConfig:
    """What every exchange of this hub shares; built once by the daemon."""

    identities: Mapping[int, HubIdentity]
    #: Offered suite numbers, in order of preference.
    suites: tuple[int, ...]
    #: The hub's own times, sent in the Initiate Response (seconds, uint8).
    ephemeral_data_generate_time: int = 10
    confirm_key_generate_time: int = 10
    #: Added to every time the hub waits on (see the module's "Timeouts").
    margin_s: float = 10.0
    #: Terminate's wait time: seconds before the device may try again.
    wait_time: int = 10

    def __post_init__(self) -> None:
        if not self.suites:
            raise KeConfigError("no key establishment suite offered")
        if len(set(self.suites)) != len(self.suites):
            raise KeConfigError(f"suites {list(self.suites)} name one twice")
        for number in self.suites:
            identity = self.identities.get(number)
            if identity is None:
                raise KeConfigError(f"suite {number} is offered but has no certificate and key")
            if identity.suite.number != number:
                raise KeConfigError(f"the identity given for suite {number} is a suite {identity.suite.number} one")
        for name in ("ephemeral_data_generate_time", "confirm_key_generate_time", "wait_time"):
            value = getattr(self, name)
            if not isinstance(value, int) or not 0 <= value <= 0xFF:
                raise KeConfigError(f"{name} must be 0..255 seconds, not {value!r}")
        if not self.margin_s >= 0:
            raise KeConfigError(f"margin_s must be >= 0, not {self.margin_s!r}")

    @classmethod
    def build(cls, identities: Iterable[HubIdentity], suites: Sequence[int]) -> KeConfig:
        """With the default times; ``dataclasses.replace`` sets others."""
        return cls({identity.suite.number: identity for identity in identities}, tuple(suites))

    @property
    def suite_bitmap(self) -> int:
        """The KeyEstablishmentSuite attribute value (and Terminate's suite field)."""
        return suite_bitmap(suite(n) for n in self.suites)

    def offers(self, value: int) -> Suite | None:
        """The offered suite an Initiate's suite field names, or None."""
        found = suite_for_bit(value)
        return found if found is not None and found.number in self.suites else None


# --------------------------------------------------------------------------- events


@dataclass(frozen=True, slots=True)
class FrameReceived:
    """A Key Establishment command from the device (client to server), as received:
    the payload after the ZCL header. The machine parses it (its sizes depend on the
    exchange's suite)."""

    tsn: int
    command_id: int
    payload: bytes
    #: The hub's wall-clock time at arrival (Unix seconds, UTC), against which a suite-2
    #: certificate's validity is checked; None when the hub has no clock it trusts
    #: (validity then unchecked). ``now`` stays the monotonic time of the timers.
    utc: float | None = None


class ComputeKind(enum.Enum):
    #: ECQV reconstruction of the device's public key + the hub's ephemeral key pair.
    IDENTIFY = "identify"
    #: ECMQV, the KDF and both MACs.
    AGREE = "agree"


@dataclass(frozen=True, slots=True)
class Computed:
    """The result of a ``Compute`` (whatever its ``work`` returned)."""

    kind: ComputeKind
    ticket: int
    result: object


@dataclass(frozen=True, slots=True)
class ComputeFailed:
    """A ``Compute`` whose ``work`` raised ``error``."""

    kind: ComputeKind
    ticket: int
    error: BaseException


Event = FrameReceived | Computed | ComputeFailed


# --------------------------------------------------------------------------- actions


@dataclass(frozen=True, slots=True)
class Send:
    """Send ``frame`` (server to client) to the device, with the TSN of the device's
    request it answers."""

    tsn: int
    frame: ServerFrame

    @property
    def command_id(self) -> int:
        return self.frame.command_id

    @property
    def payload(self) -> bytes:
        return self.frame.to_bytes()


@dataclass(frozen=True, slots=True)
class SendDefaultResponse:
    """ZCL Default Response to a command the cluster does not define."""

    tsn: int
    command_id: int
    status: int = UNSUP_CLUSTER_COMMAND


@dataclass(frozen=True, slots=True)
class Compute:
    """Run ``work()`` off the event loop and feed back ``Computed`` or
    ``ComputeFailed`` with this kind and ticket."""

    kind: ComputeKind
    ticket: int
    work: Callable[[], object] = field(repr=False)


@dataclass(frozen=True, slots=True)
class Established:
    """The exchange succeeded: ``key_data`` is the device's new APS link key (never
    log it). ``peer_ieee`` is the device's EUI-64 in zigpy's (over-the-air) order."""

    suite: Suite
    key_data: bytes = field(repr=False)
    peer_ieee: bytes
    #: From the Initiate that started this exchange to now.
    seconds: float


@dataclass(frozen=True, slots=True)
class Failed:
    """The exchange ended without a key. ``status`` is the Terminate status sent
    (side "hub") or received (side "device"); None for a timeout or a malformed
    Terminate, where no status changed hands."""

    status: int | None
    side: Literal["hub", "device"]
    why: str


class NoteKind(enum.Enum):
    STARTED = "started"
    RESTARTED = "restarted"
    REPEATED = "repeated"  # a repeat, answered again or left to its pending answer
    IGNORED = "ignored"
    STALE = "stale"  # a computation's result nobody waits for any more


@dataclass(frozen=True, slots=True)
class Note:
    """For the audit log and the debug log; changes nothing."""

    kind: NoteKind
    text: str


Action = Send | SendDefaultResponse | Compute | Established | Failed | Note


# --------------------------------------------------------------------------- table


class KeState(enum.Enum):
    IDLE = "idle"
    IDENTIFYING = "identifying"
    AWAIT_EPHEMERAL = "await-ephemeral"
    AGREEING = "agreeing"
    AWAIT_CONFIRM = "await-confirm"
    ESTABLISHED = "established"
    FAILED = "failed"


END_STATES = frozenset({KeState.ESTABLISHED, KeState.FAILED})


class Trigger(enum.Enum):
    INITIATE = "Initiate Key Establishment Request"
    EPHEMERAL = "Ephemeral Data Request"
    CONFIRM = "Confirm Key Data Request"
    TERMINATE = "Terminate Key Establishment"
    UNKNOWN_COMMAND = "unknown command"
    COMPUTED = "computed"
    COMPUTE_FAILED = "compute failed"
    TIMER = "timer"


_COMMAND_TRIGGER = {
    ClientCommand.INITIATE_KEY_ESTABLISHMENT_REQUEST: Trigger.INITIATE,
    ClientCommand.EPHEMERAL_DATA_REQUEST: Trigger.EPHEMERAL,
    ClientCommand.CONFIRM_KEY_DATA_REQUEST: Trigger.CONFIRM,
    ClientCommand.TERMINATE_KEY_ESTABLISHMENT: Trigger.TERMINATE,
}


@dataclass(frozen=True, slots=True)
class Cell:
    """The handler of a trigger in a state and the states it may move to."""

    handler: str
    next_states: frozenset[KeState] = frozenset()


def _cell(handler: str, *next_states: KeState) -> Cell:
    return Cell(handler, frozenset(next_states))


_I, _D, _E, _G, _C, _OK, _F = (
    KeState.IDLE,
    KeState.IDENTIFYING,
    KeState.AWAIT_EPHEMERAL,
    KeState.AGREEING,
    KeState.AWAIT_CONFIRM,
    KeState.ESTABLISHED,
    KeState.FAILED,
)
_LIVE = (_I, _D, _E, _G, _C)

TRANSITIONS: dict[KeState, dict[Trigger, Cell]] = {state: {} for state in KeState}
for _state in _LIVE:
    # A new Initiate starts (IDLE) or restarts the exchange, checked like the first.
    TRANSITIONS[_state][Trigger.INITIATE] = _cell("_initiate", _D, _F)
    TRANSITIONS[_state][Trigger.EPHEMERAL] = _cell("_out_of_order", _F)
    TRANSITIONS[_state][Trigger.CONFIRM] = _cell("_out_of_order", _F)
    TRANSITIONS[_state][Trigger.TERMINATE] = _cell("_device_terminated", _F)
for _state in KeState:
    TRANSITIONS[_state][Trigger.UNKNOWN_COMMAND] = _cell("_unknown_command")
# No exchange yet: a Terminate ends nothing, and is never answered.
TRANSITIONS[_I][Trigger.TERMINATE] = _cell("_ignore_terminate")
TRANSITIONS[_E][Trigger.EPHEMERAL] = _cell("_ephemeral", _G, _F)
TRANSITIONS[_C][Trigger.CONFIRM] = _cell("_confirm", _OK, _F)
TRANSITIONS[_D][Trigger.COMPUTED] = _cell("_identified", _E, _F)
TRANSITIONS[_G][Trigger.COMPUTED] = _cell("_agreed", _C, _F)
for _state in (_D, _G):
    TRANSITIONS[_state][Trigger.COMPUTE_FAILED] = _cell("_compute_failed", _F)
for _state in (_D, _E, _G, _C):
    TRANSITIONS[_state][Trigger.TIMER] = _cell("_timeout", _F)
# ESTABLISHED and FAILED: only repeats of their last answer (handled before the table)
# and unknown commands; everything else is ignored with a Note. Computed results in
# states that await none are stale, also a Note.


# --------------------------------------------------------------------------- helpers


def _display(written: bytes) -> str:
    """An EUI-64 (subject, issuer) in certificate order, as people write it."""
    return str(Eui64(bytes(written)))


@dataclass(frozen=True, slots=True)
class _Identified:
    """What IDENTIFY computes."""

    peer_static_public: bytes
    ephemeral: KeyPair


@dataclass(frozen=True, slots=True)
class _Exchange:
    """The exchange a checked Initiate started."""

    suite: Suite
    identity: HubIdentity
    request: InitiateKeyEstablishmentRequest
    certificate: ImplicitCertificate
    ca_public_key: bytes


class _Refusal(Exception):
    """Inside the machine only: refuse the frame being handled with this status."""

    def __init__(self, status: KeStatus, why: str) -> None:
        super().__init__(why)
        self.status = status
        self.why = why


# --------------------------------------------------------------------------- machine


class KeServer:
    """The responder for one exchange with one device. See the module docstring."""

    def __init__(self, config: KeConfig, peer_ieee: bytes | Sequence[int] | str, *, rng: Rng = os.urandom) -> None:
        self.config = config
        #: The device's EUI-64 in zigpy's order (``bytes(EUI64)``), and in certificate order.
        try:
            peer = Eui64.of(peer_ieee, "peer IEEE address")
        except Eui64Error as err:  # the caller's mistake, in this module's terms
            raise KeConfigError(str(err)) from None
        self.peer_ieee = peer.air
        self._peer_subject = peer.written
        self._rng = rng
        self.state = KeState.IDLE
        #: Why the machine is where it is (the last Failed's why, or the last step).
        self.reason: str | None = None

        self._exchange: _Exchange | None = None
        self._peer_static: bytes | None = None
        self._own_ephemeral: KeyPair | None = None
        self._peer_ephemeral: bytes | None = None
        self._agreement: Agreement | None = None
        self._started_at = 0.0
        # The computation being waited for (kind, ticket) and the request it answers.
        self._ticket = 0
        self._pending: tuple[ComputeKind, int] | None = None
        self._pending_tsn = 0
        # The frame last answered (or being worked on), its answer (None while the
        # work runs), and the state that answer left the machine in.
        self._last_key: tuple[int, int, bytes] | None = None
        self._last_answer: Send | None = None
        self._last_state: KeState | None = None
        self._deadline: float | None = None
        self._deadline_what = ""
        self._cell: Cell | None = None
        self._now = 0.0

    def __repr__(self) -> str:
        return f"<KeServer {_display(self._peer_subject)} {self.state.value}>"

    @property
    def done(self) -> bool:
        """ESTABLISHED or FAILED: a new exchange needs a new ``KeServer``."""
        return self.state in END_STATES

    @property
    def suite(self) -> Suite | None:
        """The suite of the exchange, once an Initiate has been accepted."""
        return None if self._exchange is None else self._exchange.suite

    # ------------------------------------------------------------------ public API

    def handle(self, event: Event, now: float) -> list[Action]:
        """Feed one event. Never raises and never computes: heavy work leaves as a
        ``Compute`` action."""
        self._now = now
        if isinstance(event, FrameReceived):
            return self._frame(event)
        if isinstance(event, (Computed, ComputeFailed)):
            trigger = Trigger.COMPUTED if isinstance(event, Computed) else Trigger.COMPUTE_FAILED
            cell = TRANSITIONS[self.state].get(trigger)
            if cell is None or self._pending != (event.kind, event.ticket):
                return [Note(NoteKind.STALE, f"{event.kind.value} result {event.ticket} ignored: the exchange is {self.state.value}")]
            return self._run(cell, event)
        return [Note(NoteKind.IGNORED, f"{type(event).__name__} is not a key establishment event")]

    def get_timer(self) -> float | None:
        """When ``handle_timer`` must next be called, or None."""
        return self._deadline

    def handle_timer(self, now: float) -> list[Action]:
        """Run what is due at ``now``; early or late calls are harmless."""
        self._now = now
        if self._deadline is None or now < self._deadline:
            return []
        cell = TRANSITIONS[self.state].get(Trigger.TIMER)
        if cell is None:  # no timer is armed in such a state; defensive
            self._deadline = None
            return []
        return self._run(cell, None)

    # ------------------------------------------------------------------ dispatch

    def _frame(self, event: FrameReceived) -> list[Action]:
        key = (event.tsn, event.command_id, bytes(event.payload))
        if key == self._last_key and self.state is self._last_state:
            if self._last_answer is None:
                return [Note(NoteKind.REPEATED, f"{self._name(event.command_id)} repeated while its answer is being computed: ignored")]
            return [Note(NoteKind.REPEATED, f"{self._name(event.command_id)} repeated: answered again"), self._last_answer]
        try:
            trigger = _COMMAND_TRIGGER[ClientCommand(event.command_id)]
        except ValueError:
            trigger = Trigger.UNKNOWN_COMMAND
        cell = TRANSITIONS[self.state].get(trigger)
        if cell is None:
            return [Note(NoteKind.IGNORED, f"{trigger.value} ignored: the exchange is {self.state.value}")]
        return self._run(cell, event)

    def _run(self, cell: Cell, event: Event | None) -> list[Action]:
        self._cell = cell
        handler: Callable[[Event | None], list[Action]] = getattr(self, cell.handler)
        try:
            return handler(event)
        finally:
            self._cell = None

    def _set_state(self, state: KeState) -> None:
        if state is not self.state and (self._cell is None or state not in self._cell.next_states):
            raise AssertionError(f"key establishment: no move {self.state.value} -> {state.value} in this cell")  # a bug here
        self.state = state

    # ------------------------------------------------------------------ handlers

    def _initiate(self, event: Event | None) -> list[Action]:
        assert isinstance(event, FrameReceived)
        out: list[Action] = []
        if self.state is not _I:
            out.append(Note(NoteKind.RESTARTED, f"a new Initiate from {self._who()} restarts the exchange that was {self.state.value}"))
        self._forget()
        self._remember(event)
        try:
            exchange = self._check_initiate(event.payload, event.utc)
        except _Refusal as refusal:
            return out + self._refuse(event.tsn, refusal.status, refusal.why)
        self._exchange = exchange
        self._started_at = self._now
        self.reason = f"checking {self._who()}'s certificate (issuer {_display(exchange.certificate.issuer)})"
        out.append(Note(NoteKind.STARTED, f"key establishment started by {self._who()}: suite {exchange.suite.number}, issuer {_display(exchange.certificate.issuer)}"))
        self._set_state(_D)
        cert, ca_key, s, rng = exchange.certificate, exchange.ca_public_key, exchange.suite, self._rng

        def identify() -> _Identified:
            return _Identified(reconstruct_public_key(cert, ca_key), new_key_pair(s, rng))

        out.append(self._compute(ComputeKind.IDENTIFY, identify, event.tsn))
        return out

    def _check_initiate(self, payload: bytes, utc: float | None) -> _Exchange:
        name = InitiateKeyEstablishmentRequest.name
        try:
            value = InitiateKeyEstablishmentRequest.peek_suite(payload)
        except KeFrameError as err:
            raise _Refusal(KeStatus.BAD_MESSAGE, str(err)) from None
        s = self.config.offers(value)
        if s is None:
            raise _Refusal(KeStatus.UNSUPPORTED_SUITE, f"{name}: suite 0x{value:04X} is not offered (offered: 0x{self.config.suite_bitmap:04X})")
        try:
            request = InitiateKeyEstablishmentRequest.from_bytes(payload)
        except KeFrameError as err:
            raise _Refusal(KeStatus.BAD_MESSAGE, str(err)) from None
        try:
            cert = parse_certificate(request.identity, s)
            require_key_agreement(cert)
        except SeError as err:
            raise _Refusal(KeStatus.INVALID_CERTIFICATE, f"device certificate: {err}") from None
        identity = self.config.identities[s.number]
        ca_key = identity.ca_key(cert.issuer)
        if ca_key is None:
            raise _Refusal(KeStatus.UNKNOWN_ISSUER, f"device certificate: issuer {_display(cert.issuer)} is not a configured CA")
        if cert.subject != self._peer_subject:
            raise _Refusal(
                KeStatus.INVALID_CERTIFICATE,
                f"device certificate: subject {_display(cert.subject)} is not the sender {_display(self._peer_subject)}",
            )
        if utc is not None:
            try:
                check_validity(cert, utc)
            except SeError as err:
                raise _Refusal(KeStatus.INVALID_CERTIFICATE, f"device certificate: {err}") from None
        return _Exchange(s, identity, request, cert, ca_key)

    def _identified(self, event: Event | None) -> list[Action]:
        assert isinstance(event, Computed) and self._exchange is not None
        result = event.result
        if not isinstance(result, _Identified):
            return self._compute_failed(ComputeFailed(event.kind, event.ticket, TypeError(f"identify returned {type(result).__name__}")))
        self._pending = None
        self._deadline = None
        self._peer_static = result.peer_static_public
        self._own_ephemeral = result.ephemeral
        ex = self._exchange
        answer = Send(
            self._pending_tsn,
            InitiateKeyEstablishmentResponse(
                ex.suite.bit,
                self.config.ephemeral_data_generate_time,
                self.config.confirm_key_generate_time,
                ex.identity.certificate.raw,
            ),
        )
        self._set_state(_E)
        self._answered(answer)
        self._wait_for(ex.request.ephemeral_data_generate_time, "the device's Ephemeral Data Request")
        self.reason = "waiting for the device's ephemeral data"
        return [answer]

    def _ephemeral(self, event: Event | None) -> list[Action]:
        assert isinstance(event, FrameReceived) and self._exchange is not None
        assert self._own_ephemeral is not None and self._peer_static is not None
        self._remember(event)
        ex = self._exchange
        try:
            request = EphemeralDataRequest.from_bytes(event.payload, ex.suite)
        except KeFrameError as err:
            return self._refuse(event.tsn, KeStatus.BAD_MESSAGE, str(err))
        self._peer_ephemeral = request.data
        self._deadline = None
        self._set_state(_G)
        self.reason = "computing the shared secret"
        s, identity, eph, peer_static = ex.suite, ex.identity, self._own_ephemeral, self._peer_static
        peer_eph, peer_subject = request.data, self._peer_subject

        def agreement() -> Agreement:
            return agree(
                s,
                initiator=False,
                own_static_private=identity.private_key,
                own_ephemeral_private=eph.private_key,
                own_ephemeral_public=eph.public_key,
                own_ieee=identity.certificate.subject,
                peer_static_public=peer_static,
                peer_ephemeral_public=peer_eph,
                peer_ieee=peer_subject,
            )

        return [self._compute(ComputeKind.AGREE, agreement, event.tsn)]

    def _agreed(self, event: Event | None) -> list[Action]:
        assert isinstance(event, Computed) and self._exchange is not None and self._own_ephemeral is not None
        result = event.result
        if not isinstance(result, Agreement):
            return self._compute_failed(ComputeFailed(event.kind, event.ticket, TypeError(f"agree returned {type(result).__name__}")))
        self._pending = None
        self._deadline = None
        self._agreement = result
        answer = Send(self._pending_tsn, EphemeralDataResponse(self._own_ephemeral.public_key))
        self._set_state(_C)
        self._answered(answer)
        self._wait_for(self._exchange.request.confirm_key_generate_time, "the device's Confirm Key Data Request")
        self.reason = "waiting for the device's key confirmation"
        return [answer]

    def _confirm(self, event: Event | None) -> list[Action]:
        assert isinstance(event, FrameReceived) and self._exchange is not None and self._agreement is not None
        self._remember(event)
        try:
            request = ConfirmKeyDataRequest.from_bytes(event.payload)
        except KeFrameError as err:
            return self._refuse(event.tsn, KeStatus.BAD_MESSAGE, str(err))
        agreement = self._agreement
        if not hmac.compare_digest(request.mac, agreement.macu):
            return self._refuse(event.tsn, KeStatus.BAD_KEY_CONFIRM, "the device's MACU is not the one our shared secret gives")
        answer = Send(event.tsn, ConfirmKeyDataResponse(agreement.macv))
        self._deadline = None
        self._set_state(_OK)
        self._answered(answer)
        seconds = self._now - self._started_at
        s = self._exchange.suite
        self.reason = f"established: suite {s.number}"
        self._drop_secrets()
        return [answer, Established(s, agreement.key_data, self.peer_ieee, seconds)]

    def _out_of_order(self, event: Event | None) -> list[Action]:
        assert isinstance(event, FrameReceived)
        self._remember(event)
        return self._refuse(event.tsn, KeStatus.BAD_MESSAGE, f"{self._name(event.command_id)} out of order: the exchange is {self.state.value}")

    def _device_terminated(self, event: Event | None) -> list[Action]:
        assert isinstance(event, FrameReceived)
        was = self.state.value
        self._deadline = None
        self._pending = None
        self._set_state(_F)
        self._drop_secrets()
        try:
            frame = TerminateKeyEstablishment.from_bytes(event.payload)
        except KeFrameError as err:
            self.reason = f"the device ended the exchange (it was {was}) with a malformed Terminate: {err}"
            return [Failed(None, "device", self.reason)]
        known = frame.known_status
        name = known.name if known is not None else f"status 0x{frame.status:02X}"
        self.reason = f"the device terminated the exchange (it was {was}): {name}, wait time {frame.wait_time} s"
        return [Failed(frame.status, "device", self.reason)]

    def _ignore_terminate(self, event: Event | None) -> list[Action]:
        return [Note(NoteKind.IGNORED, "Terminate Key Establishment with no exchange: ignored (a Terminate is never answered)")]

    def _unknown_command(self, event: Event | None) -> list[Action]:
        assert isinstance(event, FrameReceived)
        return [
            Note(NoteKind.IGNORED, f"client command 0x{event.command_id:02X} is not a Key Establishment command"),
            SendDefaultResponse(event.tsn, event.command_id),
        ]

    def _compute_failed(self, event: Event | None) -> list[Action]:
        assert isinstance(event, ComputeFailed)
        self._pending = None
        err = event.error
        if isinstance(err, SeError):
            # The device's data: a certificate point off the curve, a bad ephemeral point.
            if event.kind is ComputeKind.IDENTIFY:
                return self._refuse(self._pending_tsn, KeStatus.INVALID_CERTIFICATE, f"device certificate: {err}")
            return self._refuse(self._pending_tsn, KeStatus.BAD_MESSAGE, f"device ephemeral data: {err}")
        return self._refuse(self._pending_tsn, KeStatus.NO_RESOURCES, f"the hub's {event.kind.value} computation failed: {type(err).__name__}: {err}")

    def _timeout(self, event: Event | None) -> list[Action]:
        what = self._deadline_what
        self._deadline = None
        if self._pending is not None:
            kind = self._pending[0]
            self._pending = None
            return self._refuse(self._pending_tsn, KeStatus.NO_RESOURCES, f"timeout: the hub's {kind.value} computation outlived {what}")
        self._set_state(_F)
        self._drop_secrets()
        self.reason = f"timeout: waited in vain for {what}"
        return [Failed(None, "hub", self.reason)]

    # ------------------------------------------------------------------ steps

    def _refuse(self, tsn: int, status: KeStatus, why: str) -> list[Action]:
        answer = Send(tsn, TerminateKeyEstablishment(int(status), self.config.wait_time, self.config.suite_bitmap))
        self._deadline = None
        self._pending = None
        self._set_state(_F)
        self._answered(answer)
        self._drop_secrets()
        self.reason = why
        return [answer, Failed(status, "hub", why)]

    def _compute(self, kind: ComputeKind, work: Callable[[], object], tsn: int) -> Compute:
        self._ticket += 1
        self._pending = (kind, self._ticket)
        self._pending_tsn = tsn
        # A repeat of the request now waits for this work's answer.
        self._last_state = self.state
        self._wait_for(self.config.ephemeral_data_generate_time, "the hub's EphemeralDataGenerateTime")
        return Compute(kind, self._ticket, work)

    def _wait_for(self, seconds: int, what: str) -> None:
        self._deadline = self._now + seconds + self.config.margin_s
        self._deadline_what = f"{what} ({seconds} s + {self.config.margin_s:g} s margin)"

    def _remember(self, event: FrameReceived) -> None:
        """The frame being handled; ``_compute`` or ``_answered`` says where a repeat
        of it is recognised."""
        self._last_key = (event.tsn, event.command_id, bytes(event.payload))
        self._last_answer = None
        self._last_state = None

    def _answered(self, answer: Send) -> None:
        """Record the answer: a repeat of the frame, in the state it left, gets it again."""
        self._last_answer = answer
        self._last_state = self.state

    def _forget(self) -> None:
        self._exchange = None
        self._drop_secrets()
        self._pending = None
        self._deadline = None

    def _drop_secrets(self) -> None:
        # Nothing secret outlives the exchange in this object.
        self._own_ephemeral = None
        self._agreement = None
        self._peer_static = None
        self._peer_ephemeral = None

    def _who(self) -> str:
        return _display(self._peer_subject)

    @staticmethod
    def _name(command_id: int) -> str:
        try:
            return _COMMAND_TRIGGER[ClientCommand(command_id)].value
        except ValueError:
            return f"command 0x{command_id:02X}"


def _check_table() -> None:
    for state, cells in TRANSITIONS.items():
        for trigger, cell in cells.items():
            if not callable(getattr(KeServer, cell.handler, None)):
                raise AssertionError(f"{state.value}/{trigger.value}: no handler {cell.handler}")
            if state in END_STATES and cell.next_states:
                raise AssertionError(f"{state.value}/{trigger.value}: an end state moves")


_check_table()
