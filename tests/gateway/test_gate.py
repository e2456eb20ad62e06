"""The activation gate without an event loop: verdicts and schedules in, decisions out."""

from __future__ import annotations

import datetime as dt

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from gateway import gate
from gateway.gbcs.codes import AlertCode, Reason, ResponseCode
from gateway.gbcs.command import parse_command
from gateway.gbcs.ids import EntityId
from gateway.gbcs.sign import sign_activation
from gateway.gbcs.trust import TrustStore
from gateway.gbcs.verify import verify_activation

SUPPLIER = EntityId.parse("90B3D51F30010000")
DEVICE = EntityId.parse("00DB1234567890A0")
HASH = bytes(range(32))
NOW = dt.datetime(2030, 1, 1, 12, 0, tzinfo=dt.timezone.utc)


@pytest.fixture(scope="module")
def key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def verdict(key: ec.EllipticCurvePrivateKey, *, counter: int = 5, last: int | None = None, held: bytes | None = HASH, **kw: object):
    cmd = parse_command(sign_activation(key, originator=SUPPLIER, device=DEVICE, image_hash=HASH, counter=counter, **kw))  # type: ignore[arg-type]
    return verify_activation(
        cmd,
        trust=TrustStore({SUPPLIER: key.public_key()}),
        responsible_supplier=SUPPLIER,
        device_ieee=DEVICE,
        last_counter=last,
        held_image_hash=held,
    )


def test_immediate_command_activates_now_and_names_the_counter(key) -> None:
    d = gate.decide(verdict(key), now=NOW, scheduled_at=None)
    assert d.kind is gate.DecisionKind.ACTIVATE_NOW
    assert d.counter == (str(SUPPLIER), 5)
    assert d.accepted and d.response_code is ResponseCode.SUCCESS


def test_future_dated_command_schedules_and_keeps_the_hold(key) -> None:
    at = NOW + dt.timedelta(hours=1)
    d = gate.decide(verdict(key, execution_time=at), now=NOW, scheduled_at=None)
    assert d.kind is gate.DecisionKind.SCHEDULE
    assert d.at == at
    assert "stays held" in d.message


def test_past_execution_time_activates_now(key) -> None:
    d = gate.decide(verdict(key, execution_time=NOW - dt.timedelta(seconds=1)), now=NOW, scheduled_at=None)
    assert d.kind is gate.DecisionKind.ACTIVATE_NOW
    assert "has passed" in d.message


def test_cancellation_removes_a_schedule(key) -> None:
    d = gate.decide(verdict(key, cancel=True), now=NOW, scheduled_at=NOW + dt.timedelta(hours=2))
    assert d.kind is gate.DecisionKind.UNSCHEDULE
    assert d.counter == (str(SUPPLIER), 5)


def test_cancellation_without_a_schedule_is_accepted_but_does_nothing(key) -> None:
    d = gate.decide(verdict(key, cancel=True), now=NOW, scheduled_at=None)
    assert d.kind is gate.DecisionKind.NOTHING_TO_CANCEL
    assert d.accepted


@pytest.mark.parametrize(
    ("kw", "reason"),
    [
        (dict(last=5), Reason.REPLAYED_COUNTER),
        (dict(held=None), Reason.NO_IMAGE_HELD),
        (dict(held=bytes(32)), Reason.HASH_MISMATCH),
    ],
)
def test_refusals_never_carry_a_counter_to_persist(key, kw, reason) -> None:
    d = gate.decide(verdict(key, **kw), now=NOW, scheduled_at=None)
    assert d.kind is gate.DecisionKind.REFUSE
    assert d.verdict.reason is reason
    assert d.counter is None
    assert not d.accepted


def test_due() -> None:
    assert gate.due(NOW, NOW)
    assert not gate.due(NOW + dt.timedelta(seconds=1), NOW)
    assert not gate.due(None, NOW)


def test_outcomes_carry_gbcs_codes() -> None:
    assert gate.transfer_outcome(True, "x").alert_code is AlertCode.FIRMWARE_TRANSFER_SUCCESS
    assert gate.transfer_outcome(False, "x").alert_code is AlertCode.FIRMWARE_TRANSFER_FAILURE
    assert gate.device_verification_outcome(False, "x").alert_code is AlertCode.FIRMWARE_VERIFICATION_FAILURE
    ok = gate.activation_outcome(True, "x", future_dated=False)
    assert (ok.response_code, ok.alert_code) == (ResponseCode.SUCCESS, AlertCode.EXECUTING_FIRMWARE_VERSION_CHANGED)
    late = gate.activation_outcome(True, "x", future_dated=True)
    assert late.alert_code is AlertCode.FUTURE_DATED_ACTIONED
    bad = gate.activation_outcome(False, "x", future_dated=True)
    assert (bad.response_code, bad.alert_code) == (ResponseCode.ACTIVATION_FAILURE, AlertCode.FUTURE_DATED_NOT_ACTIONED)
