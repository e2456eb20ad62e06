"""The simulated SE device's Key Establishment *client* (cluster 0x0800): the CBKE initiator.

Written from the ZCL/Smart Energy Key Establishment cluster and the annex's description
of the computation (se_keys.py), not from the gateway's responder: a simulated PPMID or
HCALCS agreeing with the hub on a link key is a real cross-check only if the two sides
share no code. Sans-I/O like ota_client.py: `KeyEstablishmentClient` is given cluster
commands (ZCL header already parsed by the device) and the time, and returns actions;
it keeps one timer (`get_timer` / `handle_timer`). Payloads have their own struct codec
here. The crypto runs inside `handle_command` (two scalar multiplications per step:
about 0.1 s for suite 1, 0.5 s for suite 2): a driver on an event loop should call it
from an executor.

Theory of operation
===================

One *attempt* is the four-step exchange; the client makes at most ``max_attempts``::

    IDLE                 deadline = start of the next attempt (first: ``start``)
    AWAIT_INITIATE       Initiate KE Request sent (suite, our generate times, our
                         certificate); deadline = response_timeout
    AWAIT_EPHEMERAL      responder certificate accepted, Ephemeral Data Request sent;
                         deadline = the responder's EphemeralDataGenerateTime + margin
    AWAIT_CONFIRM        Z, MacKey, KeyData derived, Confirm Key Data Request (MACU)
                         sent; deadline = the responder's ConfirmKeyGenerateTime + margin
    ESTABLISHED          MACV verified: `Established(key_data)`; terminal
    FAILED               attempts exhausted: `Leave`; terminal
    SILENT               fault "silent": Initiate sent, then nothing, ever; terminal

Checks on the Initiate KE Response, each ending the attempt with a Terminate of ours:
payload shorter than 4 or certificate of the wrong length, BAD_MESSAGE (3); suite not
the one offered, UNSUPPORTED_SUITE (5); issuer not our CA's, UNKNOWN_ISSUER (1);
subject not the trust center's EUI-64, a suite-2 type/curve/hash/key-usage field
wrong, a point off the curve, INVALID_CERTIFICATE (6). Ephemeral Data Response of the
wrong length or off the curve: BAD_MESSAGE. Confirm Key Data Response: wrong length
BAD_MESSAGE, MACV different from ours BAD_KEY_CONFIRM (2). A known command out of
sequence during an attempt: BAD_MESSAGE. Outside an attempt it is ignored (counted).

Choices, where the specification leaves room:

* Retries. SE asks a device whose key establishment fails to retry a limited number
  of times and then leave the network (and rejoin later, which is the device's
  business, not this machine's). The number is not fixed by the text at hand; 3
  attempts in all (the first and two retries) is the default, ``max_attempts``.
  Between attempts the client waits the wait time of a received Terminate (seconds,
  as the responder asks), and at least ``retry_delay`` (10 s) so that a peer that
  terminates with wait time 0 is not hammered.
* A timeout ends the attempt without a Terminate: the peer is not answering, and a
  late Terminate would only race its own.
* A received Terminate with UNSUPPORTED_SUITE whose suite field names another suite
  we hold makes the next attempt offer that one.
* A failure Default Response to one of our requests (no Key Establishment server on
  that endpoint, say) ends the attempt like a Terminate without wait time.
* The wait time we put in our own Terminate is ``terminate_wait`` (default 10 s).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
import enum
import random
import struct
from typing import Any, Final

from .se_curves import PointError
from .se_keys import (
    SUITES,
    CertificateError,
    Credentials,
    KeyPair,
    Suite,
    confirmation_macs,
    derive_keys,
    ecmqv,
    issue,
    keypair,
    keypair_from,
    macs_equal,
    make_ca,
    parse_certificate,
    reconstruct_public_key,
)

__all__ = [
    "CLUSTER_KEY_ESTABLISHMENT",
    "ClientState",
    "Established",
    "FAULTS",
    "InitiatorConfig",
    "KeyEstablishmentClient",
    "Leave",
    "Refuse",
    "SendCommand",
    "TerminateStatus",
    "device_credentials",
]

CLUSTER_KEY_ESTABLISHMENT: Final = 0x0800
ATTR_KEY_ESTABLISHMENT_SUITE: Final = 0x0000
MAC_LENGTH: Final = 16
UNSUP_CLUSTER_COMMAND: Final = 0x81  # ZCL status for a Default Response
FAULTS: Final = ("unknown-issuer", "bad-certificate", "bad-mac", "silent")


class Cmd(enum.IntEnum):
    """Command ids; the same numbers in both directions (client->server requests, server->client responses)."""

    INITIATE = 0x00
    EPHEMERAL_DATA = 0x01
    CONFIRM_KEY = 0x02
    TERMINATE = 0x03


class TerminateStatus(enum.IntEnum):
    UNKNOWN_ISSUER = 1
    BAD_KEY_CONFIRM = 2
    BAD_MESSAGE = 3
    NO_RESOURCES = 4
    UNSUPPORTED_SUITE = 5
    INVALID_CERTIFICATE = 6


class ClientState(enum.Enum):
    IDLE = "idle"
    AWAIT_INITIATE = "await_initiate_response"
    AWAIT_EPHEMERAL = "await_ephemeral_data_response"
    AWAIT_CONFIRM = "await_confirm_key_response"
    ESTABLISHED = "established"
    FAILED = "failed"
    SILENT = "silent"


_ACTIVE: Final = frozenset({ClientState.AWAIT_INITIATE, ClientState.AWAIT_EPHEMERAL, ClientState.AWAIT_CONFIRM})
_EXPECTED: Final = {
    ClientState.AWAIT_INITIATE: Cmd.INITIATE,
    ClientState.AWAIT_EPHEMERAL: Cmd.EPHEMERAL_DATA,
    ClientState.AWAIT_CONFIRM: Cmd.CONFIRM_KEY,
}


# -- actions -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SendCommand:
    """Send a Key Establishment cluster command, client -> server (SE profile, the
    server's endpoint). As I read SE's cluster security table, Key Establishment is the
    one SE cluster sent with NWK security only, never APS: the device must not require
    APS security on these frames either way."""

    command_id: int
    payload: bytes


@dataclass(frozen=True, slots=True)
class Established:
    """Key establishment succeeded: ``key_data`` is the device's new APS link key with the trust center."""

    suite: int
    key_data: bytes


@dataclass(frozen=True, slots=True)
class Leave:
    """Attempts exhausted: the device leaves the network."""

    reason: str


@dataclass(frozen=True, slots=True)
class Refuse:
    """Answer the received command with a Default Response carrying this ZCL status."""

    status: int


Action = SendCommand | Established | Leave | Refuse


@dataclass(frozen=True, slots=True)
class InitiatorConfig:
    ieee: bytes  # our EUI-64, certificate (display) order
    trust_center_ieee: bytes  # the responder's certificate subject must be this
    credentials: Sequence[Credentials]  # in order of preference; one per suite
    ephemeral_generate_time: int = 2  # seconds, what we announce (uint8)
    confirm_key_generate_time: int = 2
    response_timeout: float = 5.0  # for the Initiate KE Response: no generate time known yet
    response_margin: float = 3.0  # added to the responder's generate times (air, queues)
    max_attempts: int = 3
    retry_delay: float = 10.0
    terminate_wait: int = 10  # the wait time we ask of the responder in our Terminate
    fault: str | None = None  # "bad-mac" or "silent" act here; the others are in the credentials

    def __post_init__(self) -> None:
        if len(self.ieee) != 8 or len(self.trust_center_ieee) != 8:
            raise ValueError("ieee and trust_center_ieee are 8 bytes each")
        if not self.credentials:
            raise ValueError("key establishment needs at least one suite's credentials")
        if self.fault is not None and self.fault not in FAULTS:
            raise ValueError(f"fault {self.fault!r}, expected one of {', '.join(FAULTS)}")
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        for name in ("ephemeral_generate_time", "confirm_key_generate_time", "terminate_wait"):
            if not 0 <= getattr(self, name) <= 0xFF:
                raise ValueError(f"{name} is a uint8")


@dataclass
class Counters:
    attempts: int = 0
    terminates_sent: int = 0
    terminates_received: int = 0
    timeouts: int = 0
    ignored: int = 0


# -- payload codec -------------------------------------------------------------------


class MalformedPayload(ValueError):
    pass


def encode_initiate(suite: Suite, ephemeral_time: int, confirm_time: int, certificate: bytes) -> bytes:
    return struct.pack("<HBB", suite.bit, ephemeral_time, confirm_time) + certificate


def decode_initiate(payload: bytes) -> tuple[int, int, int, bytes]:
    """(suite bitmap, ephemeral generate time, confirm generate time, certificate)."""
    if len(payload) < 4:
        raise MalformedPayload(f"Initiate KE payload is {len(payload)} bytes, shorter than its 4-byte fixed part")
    suite_bits, eph, conf = struct.unpack_from("<HBB", payload)
    return suite_bits, eph, conf, payload[4:]


def encode_terminate(status: int, wait_time: int, suite_bits: int) -> bytes:
    return struct.pack("<BBH", status, wait_time, suite_bits)


def decode_terminate(payload: bytes) -> tuple[int, int, int]:
    """(status, wait time, suite bitmap)."""
    if len(payload) != 4:
        raise MalformedPayload(f"Terminate KE payload is {len(payload)} bytes, expected 4")
    status, wait, suite_bits = struct.unpack("<BBH", payload)
    return status, wait, suite_bits


def _issuer_of(suite: Suite, certificate: bytes) -> bytes:
    return certificate[30:38] if suite.number == 1 else certificate[11:19]


# -- provisioning (simulated devices and tests) ----------------------------------------


def device_credentials(
    suite_number: int,
    ieee: bytes,
    ca: KeyPair,
    issuer: bytes,
    rng: random.Random,
    fault: str | None = None,
) -> Credentials:
    """A device's certificate from the lab CA ``ca`` (issuer id ``issuer``), or, for the
    faults "unknown-issuer" (a CA of its own, issuer id flipped) and "bad-certificate"
    (subject not its EUI-64), the wrong one. The CA public key it trusts stays ``ca``'s."""
    suite = SUITES[suite_number]
    if fault == "unknown-issuer":
        rogue = make_ca(suite, rng)
        creds = issue(suite, rogue, ieee, bytes(b ^ 0xFF for b in issuer), rng)
        return Credentials(suite, creds.certificate, creds.private_key, ca.public_bytes(suite.curve), issuer)
    subject = ieee[:7] + bytes([ieee[7] ^ 0x01]) if fault == "bad-certificate" else ieee
    return issue(suite, ca, subject, issuer, rng)


# -- the state machine -------------------------------------------------------------------


class _AttemptFailed(Exception):
    def __init__(self, status: TerminateStatus, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


Recorder = Callable[..., None]


class KeyEstablishmentClient:
    """One device's CBKE initiator; RAM state (a rejoin makes a new one)."""

    def __init__(
        self,
        cfg: InitiatorConfig,
        rng: random.Random,
        record: Recorder = lambda kind, **detail: None,
        ephemeral_keys: Callable[[Suite], int] | None = None,
    ) -> None:
        self.cfg = cfg
        self.rng = rng
        self._record = record
        # Tests inject the ephemeral private key (the worked example's); devices draw it.
        self._ephemeral_keys = ephemeral_keys
        self.state = ClientState.IDLE
        self.counters = Counters()
        self.key_data: bytes | None = None
        self.suite: int | None = None
        self.last_failure: str | None = None
        self._held = {c.suite.number: c for c in cfg.credentials}
        self._next_suite = cfg.credentials[0].suite.number
        self._deadline: float | None = None
        self._creds: Credentials | None = None
        self._peer_static: Any = None
        self._ephemeral: KeyPair | None = None
        self._peer_times = (0, 0)
        self._macv = b""
        self._pending_key = b""

    @property
    def suite_bits(self) -> int:
        """The client attribute KeyEstablishmentSuite (0x0000): the suites this device holds."""
        bits = 0
        for number in self._held:
            bits |= SUITES[number].bit
        return bits

    # -- timer -----------------------------------------------------------------------------

    def get_timer(self) -> float | None:
        return self._deadline

    def handle_timer(self, now: float) -> list[Action]:
        if self._deadline is None or now < self._deadline:
            return []
        self._deadline = None
        if self.state is ClientState.IDLE:
            return self._initiate(now)
        if self.state in _ACTIVE:
            self.counters.timeouts += 1
            self._record("ke_timeout", waiting_for=self.state.value)
            return self._end_attempt(now, f"no answer in {self.state.value}", wait=0)
        return []

    def _set_state(self, state: ClientState, **detail: Any) -> None:
        old, self.state = self.state, state
        if state is not old:
            self._record("ke_state", old=old.value, new=state.value, **detail)

    # -- the steps -----------------------------------------------------------------------

    def start(self, now: float) -> list[Action]:
        """Begin key establishment (after joining with the install-code key)."""
        if self.state is not ClientState.IDLE or self.counters.attempts:
            raise RuntimeError(f"start() in {self.state.value} after {self.counters.attempts} attempts")
        return self._initiate(now)

    def _initiate(self, now: float) -> list[Action]:
        creds = self._held[self._next_suite]
        self._creds = creds
        self.counters.attempts += 1
        self._record("ke_initiate", suite=creds.suite.number, attempt=self.counters.attempts)
        payload = encode_initiate(
            creds.suite, self.cfg.ephemeral_generate_time, self.cfg.confirm_key_generate_time, creds.certificate
        )
        if self.cfg.fault == "silent":
            self._set_state(ClientState.SILENT)
            self._deadline = None
        else:
            self._set_state(ClientState.AWAIT_INITIATE, attempt=self.counters.attempts)
            self._deadline = now + self.cfg.response_timeout
        return [SendCommand(Cmd.INITIATE, payload)]

    def _on_initiate_response(self, payload: bytes, now: float) -> list[Action]:
        creds = self._creds
        if creds is None:  # pragma: no cover - set by _initiate before this state
            raise RuntimeError("no credentials for the attempt")
        suite = creds.suite
        try:
            suite_bits, eph_time, conf_time, cert_raw = decode_initiate(payload)
        except MalformedPayload as exc:
            raise _AttemptFailed(TerminateStatus.BAD_MESSAGE, str(exc)) from exc
        if suite_bits != suite.bit:
            raise _AttemptFailed(
                TerminateStatus.UNSUPPORTED_SUITE, f"responder chose suite bitmap 0x{suite_bits:04X}, offered 0x{suite.bit:04X}"
            )
        if len(cert_raw) != suite.cert_length:
            raise _AttemptFailed(
                TerminateStatus.BAD_MESSAGE,
                f"responder certificate at offset 4 is {len(cert_raw)} bytes, suite {suite.number} has {suite.cert_length}",
            )
        if _issuer_of(suite, cert_raw) != creds.ca_issuer:
            raise _AttemptFailed(
                TerminateStatus.UNKNOWN_ISSUER,
                f"responder certificate issuer {_issuer_of(suite, cert_raw).hex()} is not our CA {creds.ca_issuer.hex()}",
            )
        try:
            cert = parse_certificate(suite, cert_raw)
            if cert.subject != self.cfg.trust_center_ieee:
                raise CertificateError(
                    f"responder certificate subject {cert.subject.hex()} is not the trust center"
                    f" {self.cfg.trust_center_ieee.hex()}"
                )
            self._peer_static = reconstruct_public_key(cert, creds.ca_public_key)
        except CertificateError as exc:
            raise _AttemptFailed(TerminateStatus.INVALID_CERTIFICATE, str(exc)) from exc
        self._peer_times = (eph_time, conf_time)
        curve = suite.curve
        if self._ephemeral_keys is not None:
            self._ephemeral = keypair_from(curve, self._ephemeral_keys(suite))
        else:
            self._ephemeral = keypair(curve, self.rng)
        self._set_state(ClientState.AWAIT_EPHEMERAL)
        self._deadline = now + eph_time + self.cfg.response_margin
        return [SendCommand(Cmd.EPHEMERAL_DATA, curve.compress(self._ephemeral.public))]

    def _on_ephemeral_response(self, payload: bytes, now: float) -> list[Action]:
        creds, ours = self._creds, self._ephemeral
        if creds is None or ours is None:  # pragma: no cover - set before this state
            raise RuntimeError("no attempt in progress")
        curve = creds.suite.curve
        if len(payload) != curve.point_bytes:
            raise _AttemptFailed(
                TerminateStatus.BAD_MESSAGE, f"ephemeral data is {len(payload)} bytes, expected {curve.point_bytes}"
            )
        try:
            peer_eph = curve.decompress(payload)
            z = ecmqv(creds.suite, creds.private_key, ours, self._peer_static, peer_eph)
        except (PointError, CertificateError) as exc:
            raise _AttemptFailed(TerminateStatus.BAD_MESSAGE, f"responder ephemeral data: {exc}") from exc
        mac_key, key_data = derive_keys(z)
        macu, self._macv = confirmation_macs(
            mac_key, self.cfg.ieee, self.cfg.trust_center_ieee, curve.compress(ours.public), payload
        )
        if self.cfg.fault == "bad-mac":
            macu = bytes([macu[0] ^ 0x01]) + macu[1:]
        self._pending_key = key_data
        self._set_state(ClientState.AWAIT_CONFIRM)
        self._deadline = now + self._peer_times[1] + self.cfg.response_margin
        return [SendCommand(Cmd.CONFIRM_KEY, macu)]

    def _on_confirm_response(self, payload: bytes, now: float) -> list[Action]:
        if len(payload) != MAC_LENGTH:
            raise _AttemptFailed(TerminateStatus.BAD_MESSAGE, f"MACV is {len(payload)} bytes, expected {MAC_LENGTH}")
        if not macs_equal(payload, self._macv):
            raise _AttemptFailed(TerminateStatus.BAD_KEY_CONFIRM, "responder's MACV does not match ours")
        creds = self._creds
        if creds is None:  # pragma: no cover - set before this state
            raise RuntimeError("no attempt in progress")
        self.key_data, self.suite = self._pending_key, creds.suite.number
        self._deadline = None
        self._set_state(ClientState.ESTABLISHED, suite=self.suite)
        self._record("ke_established", suite=self.suite, attempt=self.counters.attempts)
        return [Established(self.suite, self.key_data)]

    # -- failures --------------------------------------------------------------------

    def _end_attempt(self, now: float, reason: str, *, wait: float) -> list[Action]:
        self.last_failure = reason
        self._ephemeral = None
        self._pending_key = b""
        if self.counters.attempts >= self.cfg.max_attempts:
            self._deadline = None
            self._set_state(ClientState.FAILED, reason=reason)
            self._record("ke_failed", attempts=self.counters.attempts, reason=reason)
            return [Leave(f"key establishment failed after {self.counters.attempts} attempts: {reason}")]
        self._set_state(ClientState.IDLE, reason=reason)
        self._deadline = now + max(wait, self.cfg.retry_delay)
        return []

    def _terminate(self, now: float, failure: _AttemptFailed) -> list[Action]:
        creds = self._creds
        bits = creds.suite.bit if creds is not None else 0
        self.counters.terminates_sent += 1
        self._record("ke_terminate_sent", status=failure.status.name, reason=failure.reason)
        send = SendCommand(Cmd.TERMINATE, encode_terminate(failure.status, self.cfg.terminate_wait, bits))
        return [send, *self._end_attempt(now, f"{failure.status.name}: {failure.reason}", wait=0)]

    def _on_terminate(self, payload: bytes, now: float) -> list[Action]:
        self.counters.terminates_received += 1
        try:
            status, wait, suite_bits = decode_terminate(payload)
        except MalformedPayload as exc:
            self._record("ke_terminate_received", malformed=str(exc))
            return self._end_attempt(now, f"responder terminated ({exc})", wait=0)
        try:
            name = TerminateStatus(status).name
        except ValueError:
            name = f"status {status}"
        self._record("ke_terminate_received", status=name, wait_time=wait, suite_bits=suite_bits)
        if status == TerminateStatus.UNSUPPORTED_SUITE:
            for number in self._held:
                if SUITES[number].bit & suite_bits:
                    self._next_suite = number
                    break
        return self._end_attempt(now, f"responder terminated: {name}", wait=wait)

    # -- received commands ---------------------------------------------------------

    def handle_command(self, command_id: int, payload: bytes, now: float) -> list[Action]:
        """A cluster-specific command from the server (direction server -> client)."""
        if command_id not in tuple(Cmd):
            return [Refuse(UNSUP_CLUSTER_COMMAND)]
        cmd = Cmd(command_id)
        if self.state not in _ACTIVE:
            self.counters.ignored += 1
            self._record("ke_ignored", command=cmd.name, state=self.state.value)
            return []
        if cmd is Cmd.TERMINATE:
            return self._on_terminate(payload, now)
        try:
            if cmd is not _EXPECTED[self.state]:
                raise _AttemptFailed(TerminateStatus.BAD_MESSAGE, f"{cmd.name} response in {self.state.value}")
            handler = {
                Cmd.INITIATE: self._on_initiate_response,
                Cmd.EPHEMERAL_DATA: self._on_ephemeral_response,
                Cmd.CONFIRM_KEY: self._on_confirm_response,
            }[cmd]
            return handler(payload, now)
        except _AttemptFailed as failure:
            return self._terminate(now, failure)

    def handle_default_response(self, command_id: int, status: int, now: float) -> list[Action]:
        """A Default Response from the server to one of our commands."""
        if status == 0 or self.state not in _ACTIVE:
            return []
        self._record("ke_refused", command_id=command_id, status=status)
        return self._end_attempt(now, f"server answered command 0x{command_id:02X} with status 0x{status:02X}", wait=0)
