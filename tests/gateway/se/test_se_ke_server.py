"""The hub's key-establishment responder (gateway/se/ke_server.py): the specification's
suite-1 worked example end to end, suite 2 against keys issued here, every refusal with
its status, repeats, restarts, timeouts, and a property test over random frames."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.se import ke_server as ks
from gateway.se.certificate import NO_EXPIRY, ZIGBEE_EPOCH_UNIX, parse_certificate
from gateway.se.ecmqv import Agreement, agree
from gateway.se.ecqv import KeyPair, issue, new_key_pair, reconstruct_public_key
from gateway.se.errors import PointError
from gateway.se.ke_frames import (
    ConfirmKeyDataRequest,
    ConfirmKeyDataResponse,
    EphemeralDataRequest,
    EphemeralDataResponse,
    InitiateKeyEstablishmentRequest,
    InitiateKeyEstablishmentResponse,
    KeStatus,
    TerminateKeyEstablishment,
)
from gateway.se.suites import SUITE_1, SUITE_2, Suite

H = bytes.fromhex
VECTOR = json.loads((Path(__file__).parents[2] / "data/se_cbke/suite1_worked_example.json").read_text())
CA = H(VECTOR["ca_public_key"])
RESP = {k: H(v) for k, v in VECTOR["responder"].items()}  # V: the hub here
INIT = {k: H(v) for k, v in VECTOR["initiator"].items()}  # U: the device
#: The device's EUI-64 as zigpy gives it (over-the-air order): certificates hold display order.
PEER = INIT["ieee"][::-1]
DEVICE_TIMES = (5, 6)  # the device's EphemeralDataGenerateTime, ConfirmKeyGenerateTime


def rng_yielding(suite: Suite, private_key: bytes) -> Callable[[int], bytes]:
    """An rng whose first draw makes new_key_pair produce ``private_key``: the key is
    drawn as the top bits of the random bytes (checked by the tests that use it)."""
    shift = 8 * suite.private_key_length - suite.curve.n.bit_length()
    value = int.from_bytes(private_key, "big") << shift
    return lambda n: value.to_bytes(n, "big")


def config(suites: tuple[int, ...] = (1,), identities: list[ks.HubIdentity] | None = None, **times: Any) -> ks.KeConfig:
    ids = identities if identities is not None else [ks.HubIdentity.load(1, RESP["certificate"], RESP["static_private_key"], [CA])]
    return dataclasses.replace(ks.KeConfig.build(ids, suites), **times)


def server(cfg: ks.KeConfig | None = None, peer: bytes = PEER, rng: Callable[[int], bytes] | None = None) -> ks.KeServer:
    return ks.KeServer(cfg or config(), peer, rng=rng or rng_yielding(SUITE_1, RESP["ephemeral_private_key"]))


def frame(tsn: int, f: Any) -> ks.FrameReceived:
    return ks.FrameReceived(tsn, f.command_id, f.to_bytes())


def initiate(cert: bytes = INIT["certificate"], suite: Suite = SUITE_1, tsn: int = 1) -> ks.FrameReceived:
    return frame(tsn, InitiateKeyEstablishmentRequest(suite.bit, *DEVICE_TIMES, cert))


def settle(ke: ks.KeServer, actions: list[ks.Action], now: float) -> list[ks.Action]:
    """Do what the asyncio layer does with Compute actions, in order, at once."""
    out: list[ks.Action] = []
    queue = list(actions)
    while queue:
        action = queue.pop(0)
        out.append(action)
        if isinstance(action, ks.Compute):
            try:
                event: ks.Event = ks.Computed(action.kind, action.ticket, action.work())
            except Exception as err:
                event = ks.ComputeFailed(action.kind, action.ticket, err)
            queue.extend(ke.handle(event, now))
    return out


def sends(actions: list[ks.Action]) -> list[ks.Send]:
    return [a for a in actions if isinstance(a, ks.Send)]


def refusal(actions: list[ks.Action]) -> tuple[KeStatus, str]:
    """The one Terminate the hub sent and its Failed: (status, why)."""
    sent = sends(actions)
    assert len(sent) == 1 and isinstance(sent[0].frame, TerminateKeyEstablishment), actions
    failed = [a for a in actions if isinstance(a, ks.Failed)]
    assert len(failed) == 1 and failed[0].side == "hub", actions
    assert failed[0].status == sent[0].frame.status
    return KeStatus(sent[0].frame.status), failed[0].why


def initiator_agreement(responder_ephemeral: bytes) -> Agreement:
    """The device's side of the worked example (U), from its own keys and our answers."""
    hub_static = reconstruct_public_key(parse_certificate(RESP["certificate"], SUITE_1), CA)
    return agree(
        SUITE_1,
        initiator=True,
        own_static_private=INIT["static_private_key"],
        own_ephemeral_private=INIT["ephemeral_private_key"],
        own_ephemeral_public=INIT["ephemeral_public_key"],
        own_ieee=INIT["ieee"],
        peer_static_public=hub_static,
        peer_ephemeral_public=responder_ephemeral,
        peer_ieee=RESP["ieee"],
    )


@pytest.fixture(scope="module")
def device_agreement() -> Agreement:
    return initiator_agreement(RESP["ephemeral_public_key"])


def to_confirm(ke: ks.KeServer) -> None:
    """Run the worked example up to AWAIT_CONFIRM."""
    settle(ke, ke.handle(initiate(), 0.0), 0.0)
    settle(ke, ke.handle(frame(2, EphemeralDataRequest(INIT["ephemeral_public_key"])), 1.0), 1.0)
    assert ke.state is ks.KeState.AWAIT_CONFIRM


# --------------------------------------------------------------------------- the worked example


def test_the_rng_helper_yields_the_vectors_ephemeral_key() -> None:
    pair = new_key_pair(SUITE_1, rng_yielding(SUITE_1, RESP["ephemeral_private_key"]))
    assert pair == KeyPair(RESP["ephemeral_private_key"], RESP["ephemeral_public_key"])


def test_the_worked_example_end_to_end(device_agreement: Agreement) -> None:
    ke = server()
    first = ke.handle(initiate(tsn=0x21), 0.0)
    # Nothing is sent before the work is done, and the work is deferred.
    assert [type(a) for a in first] == [ks.Note, ks.Compute] and first[0].kind is ks.NoteKind.STARTED
    assert ke.state is ks.KeState.IDENTIFYING and ke.suite is SUITE_1
    out = settle(ke, first, 0.0)
    assert sends(out) == [ks.Send(0x21, InitiateKeyEstablishmentResponse(SUITE_1.bit, 10, 10, RESP["certificate"]))]
    assert ke.state is ks.KeState.AWAIT_EPHEMERAL

    out = settle(ke, ke.handle(frame(0x22, EphemeralDataRequest(INIT["ephemeral_public_key"])), 1.0), 1.0)
    assert [type(a) for a in out] == [ks.Compute, ks.Send]
    assert sends(out) == [ks.Send(0x22, EphemeralDataResponse(RESP["ephemeral_public_key"]))]

    # The device derives its MACU from what we sent; the vector's MACV must come back.
    theirs = initiator_agreement(sends(out)[0].frame.to_bytes())
    assert theirs == device_agreement
    assert theirs.z.hex().upper() == VECTOR["shared_secret_z"] and theirs.mac_key.hex().upper() == VECTOR["mac_key"]
    out = ke.handle(frame(0x23, ConfirmKeyDataRequest(theirs.macu)), 2.5)
    assert out[0] == ks.Send(0x23, ConfirmKeyDataResponse(H(VECTOR["macv"])))
    assert out[1] == ks.Established(SUITE_1, theirs.key_data, PEER, 2.5)
    assert len(out) == 2 and ke.state is ks.KeState.ESTABLISHED and ke.done
    assert theirs.key_data.hex() not in repr(out[1])  # never logged by accident
    assert ke.get_timer() is None


@pytest.fixture(scope="module")
def suite2() -> dict[str, Any]:
    """A lab CA, a hub and a device for suite 2, issued here (no public worked example)."""
    rng = iter(range(1, 10_000))
    draw = lambda n: next(rng).to_bytes(2, "big") * (n // 2)  # noqa: E731  reproducible keys
    ca = new_key_pair(SUITE_2, draw)
    hub_cert, hub_key = issue(SUITE_2, ca, subject=H("00124B0000AB0001"), issuer=b"LABTEST2", rng=draw, serial=b"HUB00001")
    dev_cert, dev_key = issue(SUITE_2, ca, subject=H("000D6F0000000002"), issuer=b"LABTEST2", rng=draw, serial=b"DEV00002")
    no_agreement, _ = issue(SUITE_2, ca, subject=H("000D6F0000000002"), issuer=b"LABTEST2", rng=draw, key_usage=0x80)
    identity = ks.HubIdentity.load(2, hub_cert.raw, hub_key, [ca.public_key])
    return {"ca": ca, "hub": (hub_cert, hub_key), "device": (dev_cert, dev_key), "no_agreement": no_agreement, "identity": identity, "draw": draw}


def test_suite_2_against_keys_issued_here(suite2: dict[str, Any]) -> None:
    dev_cert, dev_key = suite2["device"]
    hub_cert, _ = suite2["hub"]
    ke = ks.KeServer(config((2, 1), [suite2["identity"], config().identities[1]]), dev_cert.subject[::-1])
    assert ke.config.suite_bitmap == 0x0003
    out = settle(ke, ke.handle(initiate(dev_cert.raw, SUITE_2), 0.0), 0.0)
    assert sends(out)[0].frame == InitiateKeyEstablishmentResponse(SUITE_2.bit, 10, 10, hub_cert.raw)
    mine = new_key_pair(SUITE_2, suite2["draw"])
    out = settle(ke, ke.handle(frame(2, EphemeralDataRequest(mine.public_key)), 1.0), 1.0)
    hub_ephemeral = sends(out)[0].frame.to_bytes()
    assert len(hub_ephemeral) == 37
    theirs = agree(
        SUITE_2, initiator=True, own_static_private=dev_key, own_ephemeral_private=mine.private_key,
        own_ephemeral_public=mine.public_key, own_ieee=dev_cert.subject,
        peer_static_public=reconstruct_public_key(hub_cert, suite2["ca"].public_key),
        peer_ephemeral_public=hub_ephemeral, peer_ieee=hub_cert.subject,
    )  # fmt: skip
    out = ke.handle(frame(3, ConfirmKeyDataRequest(theirs.macu)), 2.0)
    assert out == [ks.Send(3, ConfirmKeyDataResponse(theirs.macv)), ks.Established(SUITE_2, theirs.key_data, dev_cert.subject[::-1], 2.0)]


# --------------------------------------------------------------------------- refusals at the Initiate


def test_a_suite_not_offered_is_unsupported() -> None:
    ke = server()
    status, why = refusal(ke.handle(initiate(bytes(74), SUITE_2), 0.0))
    assert status is KeStatus.UNSUPPORTED_SUITE and "0x0002 is not offered" in why
    assert ke.state is ks.KeState.FAILED and ke.done


@pytest.mark.parametrize("suite_field", [0x0000, 0x0003, 0x0004, 0xFFFF])
def test_an_unknown_suite_is_unsupported_whatever_the_length(suite_field: int) -> None:
    payload = InitiateKeyEstablishmentRequest(suite_field, 1, 1, b"\x01\x02").to_bytes()
    status, _ = refusal(server().handle(ks.FrameReceived(1, 0, payload), 0.0))
    assert status is KeStatus.UNSUPPORTED_SUITE


def test_the_terminate_carries_the_wait_time_and_the_offered_suites() -> None:
    ke = server(config(wait_time=33))
    sent = sends(ke.handle(initiate(bytes(74), SUITE_2, tsn=9), 0.0))
    assert sent == [ks.Send(9, TerminateKeyEstablishment(KeStatus.UNSUPPORTED_SUITE, 33, 0x0001))]


@pytest.mark.parametrize("payload", [b"", b"\x01", b"\x01\x00\x05", b"\x01\x00\x05\x06" + INIT["certificate"][:-1], b"\x01\x00\x05\x06" + INIT["certificate"] + b"\x00"])
def test_an_initiate_of_the_wrong_length_is_a_bad_message(payload: bytes) -> None:
    status, why = refusal(server().handle(ks.FrameReceived(1, 0, payload), 0.0))
    assert status is KeStatus.BAD_MESSAGE and "Initiate Key Establishment Request:" in why


def test_a_malformed_certificate_is_invalid() -> None:
    cert = b"\x05" + INIT["certificate"][1:]
    status, why = refusal(server().handle(initiate(cert), 0.0))
    assert status is KeStatus.INVALID_CERTIFICATE and "reconstruction point at offset 0" in why


def test_an_issuer_that_is_not_a_configured_ca_is_unknown() -> None:
    cert = INIT["certificate"][:30] + b"OTHER-CA" + INIT["certificate"][38:]
    status, why = refusal(server().handle(initiate(cert), 0.0))
    assert status is KeStatus.UNKNOWN_ISSUER and "4f:54:48:45:52:2d:43:41" in why


def test_a_ca_key_is_trusted_for_its_issuer_only() -> None:
    # The same CA key configured under another issuer: the device's issuer is unknown.
    other = ks.HubIdentity(parse_certificate(RESP["certificate"], SUITE_1), RESP["static_private_key"], (ks.TrustedCa(b"OTHER-CA", CA),))
    status, _ = refusal(server(config(identities=[other])).handle(initiate(), 0.0))
    assert status is KeStatus.UNKNOWN_ISSUER


def test_a_subject_that_is_not_the_sender_is_invalid() -> None:
    ke = server(peer=bytes.fromhex("0300000000000000"))  # 00:..:03 over the air
    status, why = refusal(ke.handle(initiate(), 0.0))
    assert status is KeStatus.INVALID_CERTIFICATE
    assert "subject 00:00:00:00:00:00:00:02 is not the sender 00:00:00:00:00:00:00:03" in why


def test_the_issuer_is_checked_before_the_subject() -> None:
    cert = INIT["certificate"][:30] + b"OTHER-CA" + INIT["certificate"][38:]
    status, _ = refusal(server(peer=bytes.fromhex("0300000000000000")).handle(initiate(cert), 0.0))
    assert status is KeStatus.UNKNOWN_ISSUER


def test_the_peer_may_be_given_as_zigpy_prints_it() -> None:
    ke = ks.KeServer(config(), "00:00:00:00:00:00:00:02")
    assert ke.peer_ieee == PEER
    assert [type(a) for a in ke.handle(initiate(), 0.0)] == [ks.Note, ks.Compute]


@pytest.mark.parametrize(
    ("offset", "value", "field"),
    [(0, 0x01, "type"), (9, 0x0C, "curve"), (10, 0x07, "hash")],
)
def test_suite_2_type_curve_and_hash_must_be_right(suite2: dict[str, Any], offset: int, value: int, field: str) -> None:
    dev_cert, _ = suite2["device"]
    raw = bytearray(dev_cert.raw)
    raw[offset] = value
    ke = ks.KeServer(config((2,), [suite2["identity"]]), dev_cert.subject[::-1])
    status, why = refusal(ke.handle(initiate(bytes(raw), SUITE_2), 0.0))
    assert status is KeStatus.INVALID_CERTIFICATE and f"certificate {field} at offset {offset}" in why


def test_suite_2_key_usage_must_allow_key_agreement(suite2: dict[str, Any]) -> None:
    cert = suite2["no_agreement"]
    ke = ks.KeServer(config((2,), [suite2["identity"]]), cert.subject[::-1])
    status, why = refusal(ke.handle(initiate(cert.raw, SUITE_2), 0.0))
    assert status is KeStatus.INVALID_CERTIFICATE and "key usage" in why


#: A suite-2 validity window: from 2025-05-08T06:13:20Z (800,000,000 s after the
#: Zigbee epoch 2000-01-01), for 365 days.
VALID_FROM, VALID_FOR = 800_000_000, 365 * 86400
FROM_UNIX = ZIGBEE_EPOCH_UNIX + VALID_FROM


def with_validity(raw: bytes, valid_from: int, valid_to: int) -> bytes:
    """A certificate with other validity bytes (offsets 19-27); still its issuer's and
    subject's, which is all the checks before ECQV look at."""
    return raw[:19] + valid_from.to_bytes(5, "big") + valid_to.to_bytes(4, "big") + raw[28:]


@pytest.mark.parametrize(
    ("valid_to", "utc", "refused"),
    [
        (VALID_FOR, FROM_UNIX - 1, "certificate valid from at offset 19: not valid before 2025-05-08T06:13:20Z (now 2025-05-08T06:13:19Z)"),
        (VALID_FOR, FROM_UNIX, None),
        (VALID_FOR, FROM_UNIX + VALID_FOR - 1, None),
        (VALID_FOR, FROM_UNIX + VALID_FOR, "certificate valid to at offset 24: expired at 2026-05-08T06:13:20Z (now 2026-05-08T06:13:20Z)"),
        (NO_EXPIRY, FROM_UNIX + (1 << 33), None),  # 0xFFFFFFFF: no expiry, ever
        (VALID_FOR, None, None),  # a hub without a clock it trusts checks no validity
    ],
)
def test_suite_2_validity_is_checked_at_the_hubs_time(suite2: dict[str, Any], valid_to: int, utc: float | None, refused: str | None) -> None:
    dev_cert, _ = suite2["device"]
    cert = with_validity(dev_cert.raw, VALID_FROM, valid_to)
    ke = ks.KeServer(config((2,), [suite2["identity"]]), dev_cert.subject[::-1])
    event = InitiateKeyEstablishmentRequest(SUITE_2.bit, *DEVICE_TIMES, cert)
    actions = ke.handle(ks.FrameReceived(1, event.command_id, event.to_bytes(), utc=utc), 0.0)
    if refused is None:
        assert [type(a) for a in actions if not isinstance(a, ks.Note)] == [ks.Compute] and ke.state is ks.KeState.IDENTIFYING
    else:
        status, why = refusal(actions)
        assert status is KeStatus.INVALID_CERTIFICATE and why == f"device certificate: {refused}"


def test_suite_1_certificates_carry_no_validity_and_pass_at_any_time() -> None:
    ke = server()
    actions = ke.handle(dataclasses.replace(initiate(), utc=0.0), 0.0)
    assert any(isinstance(a, ks.Compute) for a in actions) and not sends(actions)


def off_curve_certificate() -> bytes:
    """The device's certificate with a reconstruction point that is on no curve point."""
    for last in range(256):
        cert = INIT["certificate"][:21] + bytes([last]) + INIT["certificate"][22:]
        try:
            SUITE_1.curve.decompress(cert[:22])
        except PointError:
            return cert
    raise AssertionError("no x without a point")


def test_a_reconstruction_point_off_the_curve_is_found_by_the_work_and_invalid() -> None:
    ke = server()
    first = ke.handle(initiate(off_curve_certificate()), 0.0)
    assert not sends(first)  # the checks that need no curve passed
    status, why = refusal(settle(ke, first, 0.0)[2:])
    assert status is KeStatus.INVALID_CERTIFICATE and why.startswith("device certificate:")


# --------------------------------------------------------------------------- refusals later


def test_a_wrong_macu_is_a_bad_key_confirm(device_agreement: Agreement) -> None:
    ke = server()
    to_confirm(ke)
    wrong = bytes([device_agreement.macu[0] ^ 1]) + device_agreement.macu[1:]
    status, _ = refusal(ke.handle(frame(3, ConfirmKeyDataRequest(wrong)), 2.0))
    assert status is KeStatus.BAD_KEY_CONFIRM and ke.state is ks.KeState.FAILED


def test_a_bad_ephemeral_point_is_a_bad_message() -> None:
    ke = server()
    settle(ke, ke.handle(initiate(), 0.0), 0.0)
    bad = off_curve_certificate()[:22]
    out = settle(ke, ke.handle(frame(2, EphemeralDataRequest(bad)), 1.0), 1.0)
    status, why = refusal(out)
    assert status is KeStatus.BAD_MESSAGE and sends(out)[0].tsn == 2 and "ephemeral" in why


@pytest.mark.parametrize("payload", [b"", INIT["ephemeral_public_key"][:-1], INIT["ephemeral_public_key"] + b"\x00", bytes(37)])
def test_ephemeral_data_of_the_wrong_length_is_a_bad_message(payload: bytes) -> None:
    ke = server()
    settle(ke, ke.handle(initiate(), 0.0), 0.0)
    status, why = refusal(ke.handle(ks.FrameReceived(2, 1, payload), 1.0))
    assert status is KeStatus.BAD_MESSAGE and "Ephemeral Data Request: " in why


def test_a_confirm_of_the_wrong_length_is_a_bad_message() -> None:
    ke = server()
    to_confirm(ke)
    status, why = refusal(ke.handle(ks.FrameReceived(3, 2, bytes(15)), 2.0))
    assert status is KeStatus.BAD_MESSAGE and "mac at offset 0" in why


def _at(state: str) -> ks.KeServer:
    ke = server()
    if state == "idle":
        return ke
    first = ke.handle(initiate(), 0.0)
    if state == "identifying":
        return ke
    settle(ke, first, 0.0)
    if state == "await-ephemeral":
        return ke
    ke.handle(frame(2, EphemeralDataRequest(INIT["ephemeral_public_key"])), 1.0)
    if state == "agreeing":
        return ke
    raise AssertionError(state)


@pytest.mark.parametrize(
    ("state", "command", "payload"),
    [
        ("idle", 1, INIT["ephemeral_public_key"]),
        ("idle", 2, bytes(16)),
        ("identifying", 1, INIT["ephemeral_public_key"]),
        ("identifying", 2, bytes(16)),
        ("await-ephemeral", 2, bytes(16)),
        ("agreeing", 1, RESP["ephemeral_public_key"]),
        ("agreeing", 2, bytes(16)),
    ],
)
def test_frames_out_of_order_are_a_bad_message(state: str, command: int, payload: bytes) -> None:
    ke = _at(state)
    assert ke.state.value == state
    status, why = refusal(ke.handle(ks.FrameReceived(7, command, payload), 1.5))
    assert status is KeStatus.BAD_MESSAGE and f"out of order: the exchange is {state}" in why


def test_an_ephemeral_data_request_after_ours_was_sent_is_out_of_order() -> None:
    ke = server()
    to_confirm(ke)
    status, _ = refusal(ke.handle(frame(5, EphemeralDataRequest(RESP["ephemeral_public_key"])), 2.0))
    assert status is KeStatus.BAD_MESSAGE


def test_a_terminate_from_the_device_ends_the_exchange_unanswered() -> None:
    ke = server()
    settle(ke, ke.handle(initiate(), 0.0), 0.0)
    out = ke.handle(frame(2, TerminateKeyEstablishment(KeStatus.UNKNOWN_ISSUER, 20, 1)), 1.0)
    assert out == [ks.Failed(1, "device", "the device terminated the exchange (it was await-ephemeral): UNKNOWN_ISSUER, wait time 20 s")]
    assert ke.state is ks.KeState.FAILED and ke.get_timer() is None


def test_a_malformed_terminate_still_ends_the_exchange_unanswered() -> None:
    ke = server()
    to_confirm(ke)
    out = ke.handle(ks.FrameReceived(4, 3, b"\x01"), 2.0)
    assert len(out) == 1 and isinstance(out[0], ks.Failed)
    assert out[0].status is None and out[0].side == "device" and "wait_time at offset 1" in out[0].why


def test_a_terminate_with_no_exchange_is_ignored() -> None:
    ke = server()
    out = ke.handle(frame(1, TerminateKeyEstablishment(3, 0, 1)), 0.0)
    assert [(type(a), a.kind) for a in out if isinstance(a, ks.Note)] == [(ks.Note, ks.NoteKind.IGNORED)] and len(out) == 1
    assert ke.state is ks.KeState.IDLE


def test_an_unknown_command_gets_a_default_response_and_changes_nothing() -> None:
    ke = server()
    settle(ke, ke.handle(initiate(), 0.0), 0.0)
    out = ke.handle(ks.FrameReceived(8, 0x07, b"\x00"), 1.0)
    assert out[-1] == ks.SendDefaultResponse(8, 0x07, 0x81)
    assert ke.state is ks.KeState.AWAIT_EPHEMERAL


def test_a_failing_computation_of_ours_is_no_resources() -> None:
    ke = server()
    compute = ke.handle(initiate(tsn=4), 0.0)[1]
    assert isinstance(compute, ks.Compute)
    out = ke.handle(ks.ComputeFailed(compute.kind, compute.ticket, MemoryError("executor gone")), 0.5)
    status, why = refusal(out)
    assert status is KeStatus.NO_RESOURCES and sends(out)[0].tsn == 4 and "MemoryError: executor gone" in why


def test_a_result_of_the_wrong_type_is_no_resources() -> None:
    ke = server()
    compute = ke.handle(initiate(), 0.0)[1]
    assert isinstance(compute, ks.Compute)
    status, _ = refusal(ke.handle(ks.Computed(compute.kind, compute.ticket, "not a key"), 0.5))
    assert status is KeStatus.NO_RESOURCES


# --------------------------------------------------------------------------- timeouts


def test_the_hub_waits_the_devices_times_plus_the_margin(device_agreement: Agreement) -> None:
    ke = server(config(margin_s=10.0))
    settle(ke, ke.handle(initiate(), 100.0), 100.0)
    assert ke.get_timer() == 100.0 + DEVICE_TIMES[0] + 10.0
    assert ke.handle_timer(114.9) == [] and ke.state is ks.KeState.AWAIT_EPHEMERAL
    settle(ke, ke.handle(frame(2, EphemeralDataRequest(INIT["ephemeral_public_key"])), 114.0), 114.0)
    assert ke.get_timer() == 114.0 + DEVICE_TIMES[1] + 10.0
    out = ke.handle_timer(130.0)
    assert out == [ks.Failed(None, "hub", "timeout: waited in vain for the device's Confirm Key Data Request (6 s + 10 s margin)")]
    assert ke.state is ks.KeState.FAILED and ke.get_timer() is None
    # A late confirmation finds the exchange over.
    late = ke.handle(frame(3, ConfirmKeyDataRequest(device_agreement.macu)), 131.0)
    assert [type(a) for a in late] == [ks.Note] and ke.state is ks.KeState.FAILED


def test_waiting_for_the_first_ephemeral_data_times_out() -> None:
    ke = server(config(margin_s=2.5))
    settle(ke, ke.handle(initiate(), 0.0), 0.0)
    out = ke.handle_timer(ke.get_timer() or 0.0)
    assert out == [ks.Failed(None, "hub", "timeout: waited in vain for the device's Ephemeral Data Request (5 s + 2.5 s margin)")]


def test_a_computation_that_outlives_the_hubs_time_is_no_resources() -> None:
    ke = server(config(ephemeral_data_generate_time=4, margin_s=1.0))
    compute = ke.handle(initiate(tsn=6), 0.0)[1]
    assert isinstance(compute, ks.Compute) and ke.get_timer() == 5.0
    status, why = refusal(ke.handle_timer(5.0))
    assert status is KeStatus.NO_RESOURCES and "timeout" in why
    late = ke.handle(ks.Computed(compute.kind, compute.ticket, compute.work()), 6.0)
    assert [(type(a), a.kind) for a in late if isinstance(a, ks.Note)] == [(ks.Note, ks.NoteKind.STALE)] and len(late) == 1


# --------------------------------------------------------------------------- repeats and restarts


def test_a_repeated_initiate_waits_for_its_answer_then_gets_it_again() -> None:
    ke = server()
    first = ke.handle(initiate(tsn=1), 0.0)
    repeat = ke.handle(initiate(tsn=1), 0.1)
    assert [(type(a), a.kind) for a in repeat if isinstance(a, ks.Note)] == [(ks.Note, ks.NoteKind.REPEATED)] and len(repeat) == 1
    answer = sends(settle(ke, first, 0.2))
    again = ke.handle(initiate(tsn=1), 0.3)
    assert sends(again) == answer and ke.state is ks.KeState.AWAIT_EPHEMERAL


def test_a_new_initiate_mid_exchange_restarts_it_and_old_results_are_stale(device_agreement: Agreement) -> None:
    ke = server()
    old = ke.handle(initiate(tsn=1), 0.0)[1]
    restart = ke.handle(initiate(tsn=2), 0.5)
    assert [a.kind for a in restart if isinstance(a, ks.Note)] == [ks.NoteKind.RESTARTED, ks.NoteKind.STARTED]
    new = restart[-1]
    assert isinstance(old, ks.Compute) and isinstance(new, ks.Compute) and new.ticket != old.ticket
    stale = ke.handle(ks.Computed(old.kind, old.ticket, old.work()), 0.6)
    assert [a.kind for a in stale if isinstance(a, ks.Note)] == [ks.NoteKind.STALE] and len(stale) == 1
    assert ke.state is ks.KeState.IDENTIFYING
    out = settle(ke, [new], 0.7)
    assert sends(out)[0].tsn == 2
    # And from AWAIT_CONFIRM too: the device started over; the exchange completes.
    settle(ke, ke.handle(frame(3, EphemeralDataRequest(INIT["ephemeral_public_key"])), 1.0), 1.0)
    out = settle(ke, ke.handle(initiate(tsn=4), 1.5), 1.5)
    assert ke.state is ks.KeState.AWAIT_EPHEMERAL and sends(out)[0].tsn == 4
    settle(ke, ke.handle(frame(5, EphemeralDataRequest(INIT["ephemeral_public_key"])), 2.0), 2.0)
    out = ke.handle(frame(6, ConfirmKeyDataRequest(device_agreement.macu)), 2.5)
    assert isinstance(out[-1], ks.Established) and out[-1].seconds == 1.0  # from the restart


def test_a_bad_initiate_mid_exchange_fails_it() -> None:
    ke = server()
    settle(ke, ke.handle(initiate(), 0.0), 0.0)
    status, _ = refusal(ke.handle(initiate(bytes(74), SUITE_2, tsn=2), 1.0))
    assert status is KeStatus.UNSUPPORTED_SUITE


def test_a_repeated_ephemeral_data_request_is_answered_again() -> None:
    ke = server()
    to_confirm(ke)
    out = ke.handle(frame(2, EphemeralDataRequest(INIT["ephemeral_public_key"])), 1.5)
    assert sends(out) == [ks.Send(2, EphemeralDataResponse(RESP["ephemeral_public_key"]))]
    assert ke.state is ks.KeState.AWAIT_CONFIRM


def test_once_established_a_repeated_confirm_gets_macv_again_and_nothing_else_moves(device_agreement: Agreement) -> None:
    ke = server()
    to_confirm(ke)
    confirm = frame(3, ConfirmKeyDataRequest(device_agreement.macu))
    first = ke.handle(confirm, 2.0)
    again = ke.handle(confirm, 2.1)
    assert sends(again) == sends(first) and not any(isinstance(a, ks.Established) for a in again)
    for event in (initiate(tsn=9), frame(10, EphemeralDataRequest(INIT["ephemeral_public_key"])), frame(11, TerminateKeyEstablishment(1, 0, 1))):
        out = ke.handle(event, 3.0)
        assert [type(a) for a in out] == [ks.Note] and ke.state is ks.KeState.ESTABLISHED


def test_after_our_terminate_a_repeat_gets_it_again_and_anything_else_is_ignored() -> None:
    ke = server()
    bad = initiate(bytes(74), SUITE_2, tsn=3)
    first = sends(ke.handle(bad, 0.0))
    assert sends(ke.handle(bad, 0.5)) == first
    out = ke.handle(initiate(tsn=4), 1.0)
    assert [type(a) for a in out] == [ks.Note] and ke.state is ks.KeState.FAILED


# --------------------------------------------------------------------------- configuration and table


def test_configuration_errors_are_refused_at_construction() -> None:
    identity = config().identities[1]
    with pytest.raises(ks.KeConfigError, match="suite 2 is offered but has no certificate"):
        ks.KeConfig.build([identity], (2, 1))
    with pytest.raises(ks.KeConfigError, match="no key establishment suite"):
        ks.KeConfig.build([identity], ())
    with pytest.raises(ks.KeConfigError, match="name one twice"):
        ks.KeConfig.build([identity], (1, 1))
    with pytest.raises(ks.KeConfigError, match="wait_time must be 0..255"):
        dataclasses.replace(ks.KeConfig.build([identity], (1,)), wait_time=300)
    with pytest.raises(ks.KeConfigError, match="hub certificate for suite 1: certificate length"):
        ks.HubIdentity.load(1, RESP["certificate"][:-1], RESP["static_private_key"], [CA])
    with pytest.raises(ks.KeConfigError, match="private key: 20 bytes, needs 21"):
        ks.HubIdentity.load(1, RESP["certificate"], RESP["static_private_key"][1:], [CA])
    with pytest.raises(ks.KeConfigError, match="no trusted CA"):
        ks.HubIdentity.load(1, RESP["certificate"], RESP["static_private_key"], [])
    with pytest.raises(ks.KeConfigError, match="CA public key: not a 22-byte compressed point"):
        ks.HubIdentity.load(1, RESP["certificate"], RESP["static_private_key"], [b"\x04" + CA[1:]])
    with pytest.raises(ks.KeConfigError, match="8 bytes"):
        ks.KeServer(ks.KeConfig.build([identity], (1,)), b"\x01\x02")
    assert "private_key=" not in repr(identity)


def test_the_hubs_key_is_checked_against_its_certificate() -> None:
    ks.HubIdentity.load(1, RESP["certificate"], RESP["static_private_key"], [CA]).check_key()
    wrong = ks.HubIdentity.load(1, RESP["certificate"], INIT["static_private_key"], [CA])
    with pytest.raises(ks.KeConfigError, match="the private key is not the hub certificate's"):
        wrong.check_key()
    elsewhere = ks.HubIdentity.load(1, RESP["certificate"], RESP["static_private_key"], [ks.TrustedCa(b"OTHER-CA", CA)])
    with pytest.raises(ks.KeConfigError, match="no trusted CA for the hub certificate's issuer"):
        elsewhere.check_key()


def test_every_live_state_answers_every_request() -> None:
    live = [s for s in ks.KeState if s not in ks.END_STATES]
    for state in live:
        for trigger in (ks.Trigger.INITIATE, ks.Trigger.EPHEMERAL, ks.Trigger.CONFIRM, ks.Trigger.TERMINATE, ks.Trigger.UNKNOWN_COMMAND):
            assert trigger in ks.TRANSITIONS[state], (state, trigger)
    for state in ks.END_STATES:
        assert all(not cell.next_states for cell in ks.TRANSITIONS[state].values())


# --------------------------------------------------------------------------- properties


class CryptoGuard:
    """Stands in for the crypto inside ke_server: the real functions, memoised (the
    property test repeats the same few computations), counting calls so that a call
    during handle() is seen."""

    def __init__(self) -> None:
        self.calls = 0
        self._memo: dict[Any, Any] = {}

    def wrap(self, name: str, real: Callable[..., Any], key: Callable[..., Any]) -> Callable[..., Any]:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            self.calls += 1
            k = (name, key(*args, **kwargs))
            if k not in self._memo:
                try:
                    self._memo[k] = (True, real(*args, **kwargs))
                except Exception as err:
                    self._memo[k] = (False, err)
            ok, value = self._memo[k]
            if not ok:
                raise value
            return value

        return wrapper

    @contextmanager
    def installed(self) -> Iterator[None]:
        with (
            mock.patch.object(ks, "reconstruct_public_key", self.wrap("ecqv", reconstruct_public_key, lambda c, k: (c.raw, k))),
            mock.patch.object(ks, "new_key_pair", self.wrap("pair", new_key_pair, lambda s, rng: s.number)),
            mock.patch.object(ks, "agree", self.wrap("agree", agree, lambda s, **kw: (s.number, tuple(sorted(kw.items()))))),
        ):
            yield


GUARD = CryptoGuard()
GOOD = initiator_agreement(RESP["ephemeral_public_key"])
GOOD_MACU = GOOD.macu

_frames = [
    initiate().payload,
    INIT["ephemeral_public_key"],
    GOOD_MACU,
    TerminateKeyEstablishment(3, 0, 1).to_bytes(),
]
frames = st.one_of(
    # What a well-behaved device sends, so runs get far, with repeats of TSNs.
    st.builds(lambda tsn, i: ks.FrameReceived(tsn, i, _frames[i]), st.integers(0, 3), st.sampled_from([0, 0, 1, 1, 2, 2, 3])),
    # Truncated, extended and random frames, unknown commands.
    st.builds(lambda tsn, i, cut: ks.FrameReceived(tsn, i, _frames[i][:cut]), st.integers(0, 3), st.integers(0, 3), st.integers(0, 60)),
    st.builds(lambda tsn, i, tail: ks.FrameReceived(tsn, i, _frames[i] + tail), st.integers(0, 3), st.integers(0, 3), st.binary(min_size=1, max_size=4)),
    st.builds(ks.FrameReceived, st.integers(0, 255), st.integers(0, 8), st.binary(max_size=60)),
    st.builds(lambda tsn: initiate(off_curve_certificate(), tsn=tsn), st.integers(0, 3)),
    st.builds(lambda tsn: initiate(INIT["certificate"][:30] + b"OTHER-CA" + INIT["certificate"][38:], tsn=tsn), st.integers(0, 3)),
    st.builds(lambda tsn: ks.FrameReceived(tsn, 2, bytes(16)), st.integers(0, 3)),  # a wrong MACU
)
perturbations = st.one_of(
    st.tuples(st.just("frame"), frames),
    st.tuples(st.just("run"), st.integers(0, 3)),  # run a requested computation (maybe an old one)
    st.tuples(st.just("fail"), st.integers(0, 3)),
    st.tuples(st.just("timer"), st.floats(0, 20)),
)
#: A whole exchange, as a device that behaves and an executor that delivers would run it.
HAPPY: list[tuple[str, Any]] = [
    ("frame", initiate(tsn=1)),
    ("run", 0),
    ("frame", ks.FrameReceived(2, 1, _frames[1])),
    ("run", 0),
    ("frame", ks.FrameReceived(3, 2, _frames[2])),
]


@st.composite
def steps(draw: st.DrawFn) -> list[tuple[str, Any]]:
    """The happy exchange with steps dropped and random ones put in between: most runs
    get far, and every state meets every kind of trouble."""
    script = [step for step in HAPPY if draw(st.integers(0, 9)) > 0]
    for _ in range(draw(st.integers(0, 8))):
        script.insert(draw(st.integers(0, len(script))), draw(perturbations))
    return script


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(steps=steps())
def test_random_frames_and_timers_never_escape_and_never_compute_inline(steps: list[tuple[str, Any]]) -> None:
    ke = server()
    now = 0.0
    computes: list[ks.Compute] = []
    established = 0
    with GUARD.installed():
        for kind, arg in steps:
            before = GUARD.calls
            was_done = ke.done
            if kind == "frame":
                now += 0.1
                out = ke.handle(arg, now)
            elif kind in ("run", "fail"):
                if not computes:
                    continue
                compute = computes[-1 - arg % len(computes)]
                if kind == "run":
                    try:
                        event: ks.Event = ks.Computed(compute.kind, compute.ticket, compute.work())
                    except Exception as err:
                        event = ks.ComputeFailed(compute.kind, compute.ticket, err)
                else:
                    event = ks.ComputeFailed(compute.kind, compute.ticket, RuntimeError("injected"))
                before = GUARD.calls
                out = ke.handle(event, now)
            else:
                now += arg
                out = ke.handle_timer(now)
            assert GUARD.calls == before, "crypto ran inside the machine"
            for action in out:
                assert isinstance(action, (ks.Send, ks.SendDefaultResponse, ks.Compute, ks.Established, ks.Failed, ks.Note))
                if isinstance(action, ks.Send) and isinstance(action.frame, TerminateKeyEstablishment):
                    assert action.frame.status in set(KeStatus)
                if isinstance(action, ks.Compute):
                    computes.append(action)
                if isinstance(action, ks.Established):
                    established += 1
                    assert action.key_data == GOOD.key_data
            if was_done:
                assert not any(isinstance(a, (ks.Compute, ks.Established, ks.Failed)) for a in out)
            timer = ke.get_timer()
            assert (timer is None) == ke.done or ke.state is ks.KeState.IDLE
    assert established <= 1
