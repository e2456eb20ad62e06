"""The activation service: the asyncio side of the gate (``gateway.gate``).

It parses and verifies submitted CS06 commands against the configuration (trust
anchors, each device's responsible supplier), persists the accepted counter
*before* acting, and then releases, schedules or unschedules the held device through
the engine. It also turns job progress into GBCS outcomes (transfer, device
verification, activation) so every step is recorded with its response and alert code.

Flows:
- HCALCS (two steps): push leaves the device held; ``submit`` releases it.
- PPMID (one step): ``precheck`` verifies the command before any block is sent;
  ``arm`` submits it by itself when the device reaches the hold.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import zigpy.types as zt

from eui64 import Eui64
from gateway import gate
from gateway.config import Config
from gateway.crashpoint import crashpoint
from gateway.engine import Engine, Job, QueueChanged
from gateway.gbcs.codes import Reason
from gateway.gbcs.command import SignedCommand, decode_hex_text, parse_command
from gateway.gbcs.errors import GbcsError, GbcsUsageError
from gateway.gbcs.ids import EntityId
from gateway.gbcs.trust import SUPPLIER_ROLE, TrustStore, describe_role, read_anchor
from gateway.gbcs.verify import Verdict, verify_activation
from gateway.image import FirmwareImage, ImageForm, verify_image_signature
from gateway.store import Acceptance, accepted_for
from gateway.store import Verdict as StoredVerdict
from gateway.ota import events as ev

LOGGER = logging.getLogger("han_ota.activation")


class CounterStore(Protocol):
    """Where accepted counters, and the decisions they paid for, are kept."""

    def last_counter(self, originator: object) -> int | None: ...
    def last_counter_device(self, originator: object) -> str | None: ...
    def advance_counter(self, originator: object, counter: int, device: str | None = None) -> None: ...
    def accept(self, acceptance: Acceptance) -> None: ...
    def cancel_schedule(self, job_id: int) -> bool: ...


class MemoryCounters:
    """Counters for a process that keeps no state directory (tests, throwaway runs)."""

    def __init__(self) -> None:
        self._last: dict[str, int] = {}
        self._device: dict[str, str | None] = {}

    def last_counter(self, originator: object) -> int | None:
        return self._last.get(str(originator))

    def last_counter_device(self, originator: object) -> str | None:
        return self._device.get(str(originator))

    def advance_counter(self, originator: object, counter: int, device: str | None = None) -> None:
        last = self._last.get(str(originator))
        if last is not None and counter <= last:
            raise ValueError(f"counter {counter} is not above {last}{accepted_for(self._device.get(str(originator)))}")
        self._last[str(originator)] = counter
        self._device[str(originator)] = device

    def accept(self, acceptance: Acceptance) -> None:
        # Nothing outlives this process: the counter is all there is to keep.
        verdict = acceptance.verdict
        assert verdict.counter is not None
        self.advance_counter(verdict.originator, verdict.counter, verdict.device)

    def cancel_schedule(self, job_id: int) -> bool:
        return False


@dataclass(frozen=True)
class SubmitResult:
    """What became of one submitted command; ``to_dict`` is the ``--json`` object."""

    accepted: bool
    decision: str
    reason: str
    message: str
    device: str | None
    job: str | None
    response_code: int | None
    alert_code: int | None
    originator: str | None = None
    recipient: str | None = None
    counter: int | None = None
    hash: str | None = None
    execution_time: str | None = None

    @property
    def code(self) -> str:
        """The reason as `gbcs verify --json` names it (``HASH_MISMATCH``), for scripts."""
        return Reason(self.reason).name

    def record(self, job_id: int | None, at: dt.datetime) -> StoredVerdict:
        """The store's row for this result."""
        assert self.device is not None
        return StoredVerdict(
            device=self.device,
            accepted=self.accepted,
            reason=self.reason,
            at_utc=at,
            job_id=job_id,
            response_code=self.response_code,
            alert_code=self.alert_code,
            counter=self.counter,
            originator=self.originator,
            details=self.to_dict(),
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "valid": self.accepted,
            "accepted": self.accepted,
            "decision": self.decision,
            "reason": self.reason,
            "code": self.code,
            "message": self.message,
            "device": self.device,
            "job": self.job,
            "response_code": self.response_code,
            "alert_code": None if self.alert_code is None else f"0x{self.alert_code:04X}",
            "originator": self.originator,
            "recipient": self.recipient,
            "counter": self.counter,
            "hash": self.hash,
            "execution_time": self.execution_time,
        }


# (job or None, step, message, response code, alert code): one GBCS-terms record.
OutcomeHook = Callable[[Job | None, str, str, int | None, int | None], None]
# (job, command hex, the service's own act, "the kept decision is done"): how an
# accepted decision is carried out; the default runs the act. The daemon's hook
# releases and/or forwards over the tunnel, as the device's `activation` says.
CarryOutHook = Callable[[Job, str, Callable[[], None], Callable[[], None]], None]


@dataclass
class _Schedule:
    at: dt.datetime
    handle: asyncio.TimerHandle
    command_hex: str
    #: False for an immediate CS06 accepted before a restart and carried out after it.
    future: bool = True


@dataclass
class _Armed:
    command: bytes
    submitted: bool = False


def utc_now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc).replace(microsecond=0)


class ActivationService:
    def __init__(
        self,
        engine: Engine,
        config: Config,
        counters: CounterStore,
        *,
        trust: TrustStore | None = None,
        clock: Callable[[], dt.datetime] = utc_now,
        on_outcome: OutcomeHook | None = None,
        on_schedule: Callable[[Job, dt.datetime | None, str | None], None] | None = None,
        durable_job_id: Callable[[Job], int | None] | None = None,
        before_submit: Callable[[bytes | str, zt.EUI64 | None], None] | None = None,
        on_submitted: Callable[[SubmitResult], None] | None = None,
        carry_out: CarryOutHook | None = None,
        may_fire: Callable[[zt.EUI64], bool] | None = None,
    ) -> None:
        """The hooks, all optional, extend the service without subclassing it:
        ``before_submit``/``on_submitted`` see every submitted command and its result
        (armed one-step submits included); ``carry_out`` decides how an accepted
        decision is carried out; ``may_fire`` returning False holds a schedule that
        fell due back until ``fire_deferred``."""
        self.engine = engine
        self.config = config
        self.counters = counters
        self.trust = trust if trust is not None else load_trust(config)
        self._clock = clock
        self._on_outcome = on_outcome
        self._on_schedule = on_schedule
        # The counter store's id for a job it keeps (the daemon's); None for in-process jobs.
        self._durable_job_id = durable_job_id or (lambda job: None)
        self._before_submit = before_submit
        self._on_submitted = on_submitted
        self._carry_out = carry_out
        self._may_fire = may_fire
        self._deferred: set[zt.EUI64] = set()  # due while may_fire said no
        self._schedules: dict[zt.EUI64, _Schedule] = {}
        self._armed: dict[str, _Armed] = {}
        self._activated_by: dict[str, str] = {}  # job id -> "now" | "future"
        self._last_state: dict[str, ev.SessionState] = {}
        engine.add_observer(self._watch)

    # ------------------------------------------------------------------ commands

    def precheck(self, command: bytes | str, image: FirmwareImage, ieee: zt.EUI64) -> SubmitResult:
        """Verify a command against an image about to be distributed; persists nothing.

        The PPMID flow calls this before any block is sent, so refused commands cost
        no airtime.
        """
        try:
            cmd = parse_command(_as_bytes(command))
        except GbcsError as exc:
            return self._malformed(exc, ieee)
        verdict = self._verify(cmd, ieee, image.manufacturer_image_hash)
        decision = gate.decide(verdict, now=self._clock(), scheduled_at=None)
        return self._result(decision, verdict, ieee, None)

    def arm(self, job: Job, command: bytes | str) -> None:
        """Submit ``command`` by itself once ``job``'s device is held (PPMID one step)."""
        self._armed[job.id] = _Armed(_as_bytes(command))
        if job.state is ev.SessionState.HELD:
            self._submit_armed(job)

    def submit(self, command: bytes | str, *, device: zt.EUI64 | None = None) -> SubmitResult:
        """Verify a command for a held device and act on it."""
        if self._before_submit is not None:
            self._before_submit(command, device)
        result = self._submit(command, device)
        if self._on_submitted is not None:
            self._on_submitted(result)
        return result

    def _submit(self, command: bytes | str, device: zt.EUI64 | None) -> SubmitResult:
        try:
            cmd = parse_command(_as_bytes(command))
        except GbcsError as exc:
            result = self._malformed(exc, device)
            self._record(None, "command", result)
            return result
        ieee = device if device is not None else _eui64_of(cmd.recipient)
        job = self.engine.job_for_device(ieee)
        held = job.image.manufacturer_image_hash if job is not None and job.state in (ev.SessionState.HELD, ev.SessionState.SCHEDULED) else None
        verdict = self._discarded(self._verify(cmd, ieee, held), ieee)
        scheduled = self._schedules.get(ieee)
        now = self._clock()  # one instant for the decision and the record of it
        decision = gate.decide(verdict, now=now, scheduled_at=scheduled.at if scheduled else None)
        command_hex = _as_bytes(command).hex().upper()
        result = self._result(decision, decision.verdict, ieee, job)
        if decision.accepted and decision.counter is not None:
            crashpoint("submit.verified")
            try:
                # The counter, the verdict and the decision in one durable record, before
                # acting: a crash after it is carried out on restart, never replayed.
                job_id = self._durable_job_id(job) if job is not None else None
                activate_at = now if decision.kind is gate.DecisionKind.ACTIVATE_NOW else decision.at
                self.counters.accept(Acceptance(result.record(job_id, now), command_hex, activate_at))
            except Exception as exc:  # CounterNotIncreasing from a racing submit, or the disk
                refused = _verdict_like(verdict, Reason.REPLAYED_COUNTER, f"counter {decision.counter[1]} could not be recorded: {exc}")
                decision = gate.Decision(gate.DecisionKind.REFUSE, refused, f"refused: {refused.message}")
                result = self._result(decision, decision.verdict, ieee, job)
        self._record(job, "command", result)
        if decision.accepted and job is not None:
            crashpoint("submit.accepted")
            if self._carry_out is not None:
                self._carry_out(job, command_hex, lambda: self._act(job, decision, command_hex), lambda: self._carried_out(job))
            else:
                self._act(job, decision, command_hex)
            crashpoint("submit.acted")
        return result

    def _act(self, job: Job, decision: gate.Decision, command_hex: str) -> None:
        why = f"CS06 from {decision.counter[0] if decision.counter else '?'} counter {decision.counter[1] if decision.counter else '?'} verified"
        if decision.kind is gate.DecisionKind.ACTIVATE_NOW:
            # The kept row stays until the release is done: a crash in between leaves it due.
            self._drop_schedule(job, persist=False)
            self._activated_by[job.id] = "now"
            self.engine.activate(job.ieee, why=why)
            self._carried_out(job)
        elif decision.kind is gate.DecisionKind.SCHEDULE and decision.at is not None:
            self._set_schedule(job, decision.at, command_hex, why)
        elif decision.kind is gate.DecisionKind.UNSCHEDULE:
            self._drop_schedule(job)
            self.engine.unschedule(job.ieee, why=why)

    # ------------------------------------------------------------------ schedules

    def _set_schedule(self, job: Job, at: dt.datetime, command_hex: str, why: str, *, future: bool = True, persist: bool = True) -> None:
        self._drop_schedule(job, persist=False)
        loop = asyncio.get_running_loop()
        delay = max((at - self._clock()).total_seconds(), 0.0)
        handle = loop.call_later(delay, self._fire, job.ieee)
        self._schedules[job.ieee] = _Schedule(at, handle, command_hex, future)
        if future and job.state is ev.SessionState.HELD:
            self.engine.schedule(job.ieee, at, why=why)
        if persist and self._on_schedule is not None:
            self._on_schedule(job, at, command_hex)

    def restore_schedule(self, job: Job, at: dt.datetime, command_hex: str) -> None:
        """After a restart: carry out a kept decision (the daemon calls this).

        A future-dated CS06 keeps its time. An immediate one was accepted and made
        durable, but the daemon stopped before the device was released: it is due now.
        """
        try:
            body = parse_command(bytes.fromhex(command_hex)).activation
            future = body is not None and body.execution_time is not None
        except (GbcsError, ValueError):
            future = True  # it was verified when accepted; keep its time as stored
        self._set_schedule(job, at, command_hex, "restored after restart", future=future, persist=False)

    def _drop_schedule(self, job: Job, *, persist: bool = True) -> None:
        sched = self._schedules.pop(job.ieee, None)
        if sched is not None:
            sched.handle.cancel()
            if persist and self._on_schedule is not None:
                self._on_schedule(job, None, None)

    def _carried_out(self, job: Job) -> None:
        """The kept decision is done: drop its durable schedule."""
        job_id = self._durable_job_id(job)
        if job_id is not None:
            try:
                self.counters.cancel_schedule(job_id)
            except Exception as exc:  # the disk: a restart then finds the device past the hold
                LOGGER.warning("%s job=%s: the carried-out activation could not be cleared from the store: %s", job.ieee, job.id, exc)

    def scheduled_at(self, ieee: zt.EUI64) -> dt.datetime | None:
        sched = self._schedules.get(ieee)
        return None if sched is None else sched.at

    def fire_deferred(self) -> None:
        """Run the schedules that fell due while ``may_fire`` held them back."""
        due, self._deferred = self._deferred, set()
        for ieee in due:
            self._fire(ieee)

    def _fire(self, ieee: zt.EUI64) -> None:
        if self._may_fire is not None and not self._may_fire(ieee):
            self._deferred.add(ieee)
            return
        sched = self._schedules.pop(ieee, None)
        job = self.engine.job_for_device(ieee)
        if sched is None or job is None:
            return
        if not sched.future:
            if job.state in (ev.SessionState.HELD, ev.SessionState.SCHEDULED):
                self._activated_by[job.id] = "now"
                self.engine.activate(job.ieee, why="CS06 accepted before the daemon stopped, carried out after the restart")
            self._carried_out(job)  # or it was, before the stop: the device is past the hold
            return
        if self._on_schedule is not None:
            self._on_schedule(job, None, None)
        if job.state in (ev.SessionState.ACTIVATED, ev.SessionState.CONFIRMED):
            return  # released before a restart; the kept schedule outlived it
        if job.state not in (ev.SessionState.HELD, ev.SessionState.SCHEDULED):
            self._outcome(job, *gate_outcome(gate.activation_outcome(False, f"future-dated activation due at {sched.at.isoformat()} not actioned: device is {job.state.value}", future_dated=True)))
            return
        self._activated_by[job.id] = "future"
        self.engine.activate(job.ieee, why=f"future-dated CS06 reached its time {sched.at.isoformat()}")

    # ------------------------------------------------------------------ outcomes

    def _watch(self, job: Job, action: ev.Action | QueueChanged) -> None:
        if not isinstance(action, ev.StateChanged):
            return
        new = action.new
        if new is ev.SessionState.HELD and action.old is ev.SessionState.TRANSFERRING:
            self._outcome(job, *gate_outcome(gate.transfer_outcome(True, f"{job.image.size} bytes transferred")))
            self._outcome(job, *gate_outcome(gate.device_verification_outcome(True, "device verified the image and is held")))
            sched = self._schedules.get(job.ieee)
            if sched is not None:
                self.engine.schedule(job.ieee, sched.at, why="future-dated CS06 verified before the hold")
            if job.id in self._armed:
                asyncio.get_running_loop().call_soon(self._submit_armed, job)
        elif new is ev.SessionState.FAILED and action.old in (ev.SessionState.PENDING, ev.SessionState.TRANSFERRING):
            reason = action.reason or "transfer failed"
            if action.device_status == ev.Status.INVALID_IMAGE:
                self._outcome(job, *gate_outcome(gate.device_verification_outcome(False, reason)))
            self._outcome(job, *gate_outcome(gate.transfer_outcome(False, reason)))
        elif new in (ev.SessionState.CANCELLED, ev.SessionState.SUPERSEDED):
            # Its scheduled activation goes with it: kept by device, it would otherwise
            # release the next push's image at the old command's time (issue 15).
            self._drop_schedule(job)
        elif action.old is ev.SessionState.ACTIVATED and new in (ev.SessionState.CONFIRMED, ev.SessionState.FAILED):
            future = self._activated_by.pop(job.id, "now") == "future"
            confirmed = new is ev.SessionState.CONFIRMED
            why = f"device reports version 0x{job.session.device_file_version or 0:08X}" if confirmed else (action.reason or "activation failed")
            self._outcome(job, *gate_outcome(gate.activation_outcome(confirmed, why, future_dated=future)))

    def _submit_armed(self, job: Job) -> None:
        armed = self._armed.get(job.id)
        if armed is None or armed.submitted or job.state is not ev.SessionState.HELD:
            return
        armed.submitted = True
        result = self.submit(armed.command, device=job.ieee)
        LOGGER.info("%s job=%s one-step activation: %s", job.ieee, job.id, result.message)

    def _outcome(self, job: Job | None, step: str, message: str, response: int | None, alert: int | None) -> None:
        codes = " ".join(p for p in (f"response={response}" if response is not None else "", f"alert=0x{alert:04X}" if alert is not None else "") if p)
        LOGGER.info("%s job=%s %s: %s %s", job.ieee if job else "-", job.id if job else "-", step, message, codes)
        if self._on_outcome is not None:
            self._on_outcome(job, step, message, response, alert)

    def _record(self, job: Job | None, step: str, result: SubmitResult) -> None:
        # The message names the decision already ("refused: ...", "activating now ..."),
        # and the gbcs.verdict record carries the decision itself.
        self._outcome(job, step, result.message, result.response_code, result.alert_code)

    # ------------------------------------------------------------------ helpers

    def _verify(self, cmd: SignedCommand, ieee: zt.EUI64, held_hash: bytes | None) -> Verdict:
        addr = Eui64.from_air(ieee)
        device_cfg = self.config.device(addr)
        device_id = EntityId(addr.written)
        if device_cfg is None or device_cfg.supplier is None:
            return _verdict_for(cmd, Reason.NO_AUTHORITY, f"source does not have authority: no responsible supplier is configured for device {ieee}; {supplier_setup(self.config, ieee, cmd.originator)}")
        verdict = verify_activation(
            cmd,
            trust=self.trust,
            responsible_supplier=EntityId.parse(device_cfg.supplier),
            device_ieee=device_id,
            last_counter=self.counters.last_counter(str(cmd.originator)),
            held_image_hash=held_hash,
        )
        if verdict.reason is Reason.REPLAYED_COUNTER:
            # Counters are per originator across all devices: say which device the last
            # accepted one was for, or a refusal on a fresh device looks inexplicable.
            on = self.counters.last_counter_device(str(cmd.originator))
            if on is not None:
                verdict = _verdict_like(verdict, Reason.REPLAYED_COUNTER, verdict.message + accepted_for(on))
        return verdict

    def _discarded(self, verdict: Verdict, ieee: zt.EUI64) -> Verdict:
        """Say so when the command names the image of a push cancelled or superseded on
        this device: that made the device discard it (Default Response ABORT), so it is
        not held, whatever the device holds now."""
        body = verdict.command.activation if verdict.command is not None else None
        if body is None or verdict.reason not in (Reason.NO_IMAGE_HELD, Reason.HASH_MISMATCH):
            return verdict
        cancelled = [
            j for j in self.engine.jobs()
            if j.ieee == ieee and j.state in (ev.SessionState.CANCELLED, ev.SessionState.SUPERSEDED) and j.image.manufacturer_image_hash == body.image_hash
        ]
        if not cancelled:
            return verdict
        job = cancelled[-1]
        how = f"cancel of job {job.id}" if job.state is ev.SessionState.CANCELLED else f"job {job.id} being superseded by job {job.superseded_by}"
        why = (
            f"image {body.image_hash.hex().upper()} is no longer held: it was discarded by {how} "
            f"(the device is told to drop it); push it again to activate it"
        )
        return _verdict_like(verdict, verdict.reason, f"{why}; {verdict.message}")

    def _malformed(self, exc: GbcsError, ieee: zt.EUI64 | None) -> SubmitResult:
        verdict = _verdict_for(None, Reason.MALFORMED, str(exc))
        return SubmitResult(False, gate.DecisionKind.REFUSE.value, Reason.MALFORMED.value, f"refused: {exc}", str(ieee) if ieee else None, None, verdict.response_code, verdict.alert_code)

    def _result(self, decision: gate.Decision, verdict: Verdict, ieee: zt.EUI64, job: Job | None) -> SubmitResult:
        cmd = verdict.command
        body = cmd.activation if cmd is not None else None
        execution = None
        if body is not None and body.execution_time is not None:
            execution = body.execution_time.strftime("%Y-%m-%dT%H:%M:%SZ")
        return SubmitResult(
            accepted=decision.accepted,
            decision=decision.kind.value,
            reason=verdict.reason.value,
            message=decision.message,
            device=str(ieee),
            job=job.id if job else None,
            response_code=None if verdict.response_code is None else int(verdict.response_code),
            alert_code=None if verdict.alert_code is None else int(verdict.alert_code),
            originator=str(cmd.originator) if cmd else None,
            recipient=str(cmd.recipient) if cmd else None,
            counter=cmd.counter if cmd else None,
            hash=body.image_hash.hex().upper() if body else None,
            execution_time=execution,
        )


def gate_outcome(o: gate.Outcome) -> tuple[str, str, int | None, int | None]:
    return o.step, o.message, None if o.response_code is None else int(o.response_code), None if o.alert_code is None else int(o.alert_code)


def _verdict_for(cmd: SignedCommand | None, reason: Reason, message: str) -> Verdict:
    from gateway.gbcs.codes import REASON_CODES

    response, alert = REASON_CODES[reason]
    return Verdict(reason, message, response, alert, cmd)


def _verdict_like(verdict: Verdict, reason: Reason, message: str) -> Verdict:
    return _verdict_for(verdict.command, reason, message)


def _as_bytes(command: bytes | str) -> bytes:
    """Raw APDU bytes from hex text or raw bytes (a raw APDU starts DD or DF)."""
    if isinstance(command, bytes) and command[:1] in (b"\xdd", b"\xdf"):
        return command
    return decode_hex_text(command)


def _eui64_of(entity: EntityId) -> zt.EUI64:
    return zt.EUI64(Eui64(entity.raw).air)


@dataclass(frozen=True)
class SignatureCheck:
    """Whether an image may be distributed to a device, as far as its supplier signature goes.

    ``verdict``: ``verified`` (GBCS form, signed by the device's responsible supplier),
    ``refused`` (GBCS form, the signature does not verify for that supplier),
    ``not_checked`` (GBCS form, but the config names no responsible supplier for the
    device, or none with a trust anchor) or ``unsigned`` (Zigbee or unsigned form:
    nothing to check).
    """

    verdict: str
    message: str
    supplier: str | None = None

    @property
    def refused(self) -> bool:
        return self.verdict == "refused"

    def to_dict(self) -> dict[str, Any]:
        return {"verdict": self.verdict, "message": self.message, "supplier": self.supplier}


def check_image_signature(image: FirmwareImage, ieee: zt.EUI64, config: Config, trust: TrustStore) -> SignatureCheck:
    """The one check, before any block is sent, that a GBCS image is its supplier's.

    A device only takes firmware its responsible supplier signed; pushing a tampered
    image would cost the airtime of a whole transfer only for the device to refuse it
    (or, for a device that does not check, to hold it). Without a responsible supplier
    in the config the push is allowed, with a warning: a lab bench may push images
    signed by any key.
    """
    if image.form is not ImageForm.GBCS:
        return SignatureCheck("unsigned", f"{image.form.value} form: no supplier signature to check")
    device_cfg = config.device(Eui64.from_air(ieee))
    supplier = device_cfg.supplier if device_cfg is not None else None
    key = trust.get(EntityId.parse(supplier)) if supplier is not None else None
    if supplier is None or key is None:
        why = (
            f"no responsible supplier is configured for device {ieee}; {supplier_setup(config, ieee, None)}"
            if supplier is None
            else f"supplier {supplier} has no trust anchor loaded"
        )
        return SignatureCheck("not_checked", f"the GBCS image's supplier signature was not checked: {why}", supplier)
    anchor = config.supplier(supplier)
    where = f" ({anchor.anchor})" if anchor is not None else ""
    if verify_image_signature(image, key):
        return SignatureCheck("verified", f"GBCS image signature verified for device {ieee}'s responsible supplier {supplier}", supplier)
    return SignatureCheck(
        "refused",
        f"the GBCS image's supplier signature does not verify with the trust anchor of device {ieee}'s "
        f"responsible supplier {supplier}{where}: the image was altered or signed by another supplier; "
        "nothing was sent (check it with han-ota image inspect FILE --trust CERT)",
        supplier,
    )


def supplier_setup(config: Config, ieee: object, originator: object | None) -> str:
    """What a user must add, and where, for a device to have a responsible supplier."""
    where = str(config.source) if config.source is not None else "a config file (then pass --config, or put it at /etc/han-ota/config.toml)"
    supplier = str(originator) if originator is not None else "SUPPLIER_ID"
    return (
        f"add to {where} a [[device]] table (ieee = \"{ieee}\", kind, supplier = \"{supplier}\") and a "
        f"[[supplier]] table (id = \"{supplier}\", certificate = \"PATH.pem\"); the daemon reads them at start"
    )


def load_trust(config: Config) -> TrustStore:
    """Trust anchors from the [[supplier]] tables, keyed by entity id.

    A certificate must carry the GBCS Supplier role (OU=02): any other party's key
    (an ACB's, say) would otherwise be able to sign CS06 and activate firmware.
    ``allow_any_role = true`` on the [[supplier]] lifts that for lab use, with a warning.
    A bare public key carries no role and is taken as configured.
    """
    if not config.suppliers:
        return TrustStore()
    # Each file read and parsed once; a refusal names the file (gateway.gbcs.keys).
    anchors = {EntityId.parse(s.id): read_anchor(s.anchor) for s in config.suppliers}
    for i, s in enumerate(config.suppliers):
        if s.certificate is None:
            continue
        anchor = anchors[EntityId.parse(s.id)]
        if anchor.role == SUPPLIER_ROLE:
            continue
        what = f"supplier[{i}] {s.id}: certificate {s.certificate} has {describe_role(anchor.role)}, not Supplier (OU={SUPPLIER_ROLE})"
        if not s.allow_any_role:
            raise GbcsUsageError(f"{what}; configure the supplier's own digital-signing certificate, or set allow_any_role = true on this [[supplier]] for lab use")
        LOGGER.warning("%s; accepted because allow_any_role = true (lab use only)", what)
    return TrustStore.from_anchors(anchors)


__all__ = ["ActivationService", "CounterStore", "MemoryCounters", "SignatureCheck", "SubmitResult", "check_image_signature", "load_trust", "utc_now"]
