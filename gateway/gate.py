"""The activation gate, sans-I/O: what a verified (or refused) CS06 lets a held device do.

Theory of operation. A device that has verified an image is *held* by its OTA
session: every Upgrade End Request is answered 0xFFFFFFFF. Only this gate turns a
held device into an activating one, and only for a command that
``gateway.gbcs.verify.verify_activation`` accepted for that device and that exact
image. The gate itself decides nothing cryptographic; it maps a verdict and the
device's schedule to one ``Decision``:

    refused verdict                       -> REFUSE       (device stays held)
    OK, no execution time                 -> ACTIVATE_NOW
    OK, execution time <= now             -> ACTIVATE_NOW (the moment has passed)
    OK, execution time in the future      -> SCHEDULE     (hold continues until then)
    OK, 9999-12-31T23:59:59Z, scheduled   -> UNSCHEDULE   (back to a plain hold)
    OK, 9999-12-31T23:59:59Z, nothing set -> NOTHING_TO_CANCEL

Every accepting decision carries the (originator, counter) that the caller must
persist durably *before* acting on it, so a crash between the two can never let the
same counter be used again. The asyncio side (``gateway.activation``) does the I/O.
"""

from __future__ import annotations

import datetime as dt
import enum
from dataclasses import dataclass

from gateway.gbcs.codes import AlertCode, Reason, ResponseCode
from gateway.gbcs.cs06 import iso_utc
from gateway.gbcs.verify import Verdict


class DecisionKind(enum.Enum):
    REFUSE = "refuse"
    ACTIVATE_NOW = "activate_now"
    SCHEDULE = "schedule"
    UNSCHEDULE = "unschedule"
    NOTHING_TO_CANCEL = "nothing_to_cancel"


@dataclass(frozen=True)
class Decision:
    kind: DecisionKind
    verdict: Verdict
    message: str
    at: dt.datetime | None = None
    #: (originator entity id, counter) to persist before acting; None when refused.
    counter: tuple[str, int] | None = None

    @property
    def accepted(self) -> bool:
        return self.kind is not DecisionKind.REFUSE

    @property
    def response_code(self) -> ResponseCode | None:
        return self.verdict.response_code

    @property
    def alert_code(self) -> AlertCode | None:
        return self.verdict.alert_code


def decide(verdict: Verdict, *, now: dt.datetime, scheduled_at: dt.datetime | None) -> Decision:
    """The one decision for ``verdict`` given the time and the device's schedule."""
    if not verdict.ok:
        return Decision(DecisionKind.REFUSE, verdict, f"refused: {verdict.message}")
    body = verdict.activation
    cmd = verdict.command
    if body is None or cmd is None:  # verify guarantees both for OK; keep the type checker honest
        raise ValueError("an OK verdict without a CS06 body")
    counter = (str(cmd.originator), cmd.counter)
    if body.cancels:
        if scheduled_at is None:
            return Decision(DecisionKind.NOTHING_TO_CANCEL, verdict, "cancellation accepted; no activation was scheduled", counter=counter)
        return Decision(DecisionKind.UNSCHEDULE, verdict, f"activation scheduled for {iso_utc(scheduled_at)} cancelled; the device stays held", counter=counter)
    at = body.execution_time
    if at is None or at <= now:
        why = "immediate" if at is None else f"execution time {iso_utc(at)} has passed"
        return Decision(DecisionKind.ACTIVATE_NOW, verdict, f"activating now ({why})", counter=counter)
    return Decision(DecisionKind.SCHEDULE, verdict, f"activation scheduled for {iso_utc(at)}; the device stays held until then", at=at, counter=counter)


def due(scheduled_at: dt.datetime | None, now: dt.datetime) -> bool:
    return scheduled_at is not None and scheduled_at <= now


@dataclass(frozen=True)
class Outcome:
    """A flow step in GBCS terms, for the record: response and alert codes where one applies."""

    step: str
    message: str
    response_code: ResponseCode | None = None
    alert_code: AlertCode | None = None


def transfer_outcome(succeeded: bool, why: str) -> Outcome:
    if succeeded:
        return Outcome("transfer", why, alert_code=AlertCode.FIRMWARE_TRANSFER_SUCCESS)
    return Outcome("transfer", why, alert_code=AlertCode.FIRMWARE_TRANSFER_FAILURE)


def device_verification_outcome(succeeded: bool, why: str) -> Outcome:
    """The device's own check of the image (Upgrade End SUCCESS or INVALID_IMAGE)."""
    if succeeded:
        return Outcome("device_verification", why, alert_code=AlertCode.FIRMWARE_VERIFICATION_SUCCESS)
    return Outcome("device_verification", why, alert_code=AlertCode.FIRMWARE_VERIFICATION_FAILURE)


def activation_outcome(confirmed: bool, why: str, *, future_dated: bool) -> Outcome:
    """After a release: the device runs the new version (0x8F43) or it does not (code 3)."""
    if confirmed:
        done = AlertCode.FUTURE_DATED_ACTIONED if future_dated else AlertCode.EXECUTING_FIRMWARE_VERSION_CHANGED
        return Outcome("activation", why, ResponseCode.SUCCESS, done)
    failed = AlertCode.FUTURE_DATED_NOT_ACTIONED if future_dated else None
    return Outcome("activation", why, ResponseCode.ACTIVATION_FAILURE, failed)


def refusal_is_authority(verdict: Verdict) -> bool:
    return verdict.reason in (Reason.NO_AUTHORITY, Reason.UNKNOWN_SUPPLIER, Reason.BAD_SIGNATURE, Reason.UNSIGNED)
