"""The simulated SE device's own CBKE: its arithmetic against the SE worked example, and its
initiator state machine fed responder frames built here (no gateway code anywhere).

The responder in these tests is the test's own few lines over radios.sim.se_keys: the
hub's responder is checked against this device elsewhere; here the vectors are the oracle.
"""

from __future__ import annotations

import json
from pathlib import Path
import random
import struct
from typing import Any

import pytest
import zigpy.types as t

from radios.sim.key_establishment import (
    ClientState,
    Established,
    InitiatorConfig,
    KeyEstablishmentClient,
    Leave,
    Refuse,
    SendCommand,
    TerminateStatus,
    device_credentials,
)
from radios.sim.se_curves import SECT163K1, SECT283K1, PointError
from radios.sim.se_identity import check_identity, credentials_for
from radios.sim.se_keys import (
    SUITES,
    CertificateError,
    Credentials,
    confirmation_macs,
    derive_keys,
    ecmqv,
    hmac_mmo,
    issue,
    keypair_from,
    make_ca,
    mmo,
    parse_certificate,
    reconstruct_public_key,
)

VECTOR = json.loads((Path(__file__).parents[2] / "data" / "se_cbke" / "suite1_worked_example.json").read_text())
H = bytes.fromhex
S1, S2 = SUITES[1], SUITES[2]
U, V = VECTOR["initiator"], VECTOR["responder"]
CA1 = H(VECTOR["ca_public_key"])
INITIATE, EPHEMERAL, CONFIRM, TERMINATE = 0x00, 0x01, 0x02, 0x03


def _cred(side: dict[str, str]) -> Credentials:
    return Credentials(S1, H(side["certificate"]), int(side["static_private_key"], 16), CA1, b"TESTSECA")


# -- the arithmetic ---------------------------------------------------------------------


@pytest.mark.parametrize("curve", [SECT163K1, SECT283K1], ids=lambda c: c.name)
def test_sec2_base_point_is_on_the_curve_and_of_order_n(curve: Any) -> None:
    assert curve.on_curve(curve.g)
    assert curve.multiply(curve.n, curve.g) is None
    assert curve.multiply(curve.n - 1, curve.g) == curve.neg(curve.g)
    p = curve.multiply(0xC0FFEE, curve.g)
    assert curve.decompress(curve.compress(p)) == p
    assert curve.mul(p[0], curve.inv(p[0])) == 1


def test_decompress_refuses_bad_points() -> None:
    c = SECT163K1
    with pytest.raises(PointError, match="^sect163k1 compressed point is 22 bytes, got 21$"):
        c.decompress(bytes(21))
    with pytest.raises(PointError, match="^compressed point prefix 0x04 at offset 0, expected 0x02 or 0x03$"):
        c.decompress(b"\x04" + bytes(21))
    # Half of all x are no point's x: find one whose trace says so.
    x = next(x for x in range(2, 200) if c.trace(x ^ c.a ^ c.mul(c.b, c.inv(c.sqr(x)))))
    with pytest.raises(PointError, match="is not the x of a sect163k1 point"):
        c.decompress(b"\x02" + x.to_bytes(21, "big"))


def test_aes_mmo_is_the_install_code_hash() -> None:
    ex = VECTOR["install_code_example"]
    assert mmo(H(ex["install_code"])) == H(ex["link_key"])


@pytest.mark.parametrize("side", [U, V], ids=["initiator", "responder"])
def test_worked_example_keys_reconstruct(side: dict[str, str]) -> None:
    cert = parse_certificate(S1, H(side["certificate"]))
    assert cert.subject == H(side["ieee"])
    static = reconstruct_public_key(cert, CA1)
    assert SECT163K1.compress(static) == H(side["static_public_key"])
    # ECQV: the private key the CA issued belongs to the reconstructed public key.
    assert SECT163K1.multiply(int(side["static_private_key"], 16), SECT163K1.g) == static
    eph = keypair_from(SECT163K1, int(side["ephemeral_private_key"], 16))
    assert eph.public_bytes(SECT163K1) == H(side["ephemeral_public_key"])


def test_worked_example_z_mackey_macv_both_sides() -> None:
    c = SECT163K1
    eu = keypair_from(c, int(U["ephemeral_private_key"], 16))
    ev = keypair_from(c, int(V["ephemeral_private_key"], 16))
    qu = c.decompress(H(U["static_public_key"]))
    qv = c.decompress(H(V["static_public_key"]))
    z_u = ecmqv(S1, int(U["static_private_key"], 16), eu, qv, ev.public)
    z_v = ecmqv(S1, int(V["static_private_key"], 16), ev, qu, eu.public)
    assert z_u == z_v == H(VECTOR["shared_secret_z"])
    mac_key, key_data = derive_keys(z_u)
    assert mac_key == H(VECTOR["mac_key"])
    assert key_data == mmo(H(VECTOR["shared_secret_z"]) + b"\x00\x00\x00\x02")
    _, macv = confirmation_macs(mac_key, H(U["ieee"]), H(V["ieee"]), H(U["ephemeral_public_key"]), H(V["ephemeral_public_key"]))
    assert macv == H(VECTOR["macv"])


def test_hmac_mmo_is_rfc2104_over_mmo() -> None:
    key = bytes(range(16))
    inner = mmo(bytes(b ^ 0x36 for b in key) + b"abc")
    assert hmac_mmo(key, b"abc") == mmo(bytes(b ^ 0x5C for b in key) + inner)
    assert hmac_mmo(key, b"abc") != hmac_mmo(key, b"abd")


@pytest.mark.parametrize("number", [1, 2])
def test_issued_certificate_reconstructs_its_private_keys_public(number: int) -> None:
    suite = SUITES[number]
    rng = random.Random(number)
    ca = make_ca(suite, rng)
    creds = issue(suite, ca, H("0011223344556677"), b"LAB-CA-1", rng)
    cert = parse_certificate(suite, creds.certificate)
    assert (cert.subject, cert.issuer, len(creds.certificate)) == (H("0011223344556677"), b"LAB-CA-1", suite.cert_length)
    q = reconstruct_public_key(cert, creds.ca_public_key)
    assert suite.curve.multiply(creds.private_key, suite.curve.g) == q
    other_ca = make_ca(suite, rng)
    assert reconstruct_public_key(cert, other_ca.public_bytes(suite.curve)) != q


def test_suite2_certificate_fields_are_checked() -> None:
    rng = random.Random(7)
    creds = issue(S2, make_ca(S2, rng), H("0011223344556677"), b"LAB-CA-2", rng)
    raw = bytearray(creds.certificate)
    for offset, name, bad in ((0, "type", 0x01), (9, "curve", 0x0C), (10, "hash", 0x07)):
        broken = bytearray(raw)
        broken[offset] = bad
        with pytest.raises(CertificateError, match=f"^certificate {name} 0x{bad:02X} at offset {offset}, expected"):
            parse_certificate(S2, bytes(broken))
    broken = bytearray(raw)
    broken[36] = 0x80
    with pytest.raises(CertificateError, match="^certificate key usage 0x80 at offset 36 lacks key agreement"):
        parse_certificate(S2, bytes(broken))
    with pytest.raises(CertificateError, match="^suite 2 certificate is 74 bytes, got 73$"):
        parse_certificate(S2, bytes(raw[:73]))


# -- the initiator, fed the worked example ----------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0


def _worked_client(**cfg: Any) -> tuple[KeyEstablishmentClient, list[tuple[str, dict[str, Any]]]]:
    events: list[tuple[str, dict[str, Any]]] = []
    config = InitiatorConfig(ieee=H(U["ieee"]), trust_center_ieee=H(V["ieee"]), credentials=[_cred(U)], **cfg)
    client = KeyEstablishmentClient(
        config,
        random.Random(0),
        record=lambda kind, **detail: events.append((kind, detail)),
        ephemeral_keys=lambda suite: int(U["ephemeral_private_key"], 16),
    )
    return client, events


def _initiate_response(cert: bytes = H(V["certificate"]), suite_bits: int = 0x0001, eph: int = 4, conf: int = 6) -> bytes:
    return struct.pack("<HBB", suite_bits, eph, conf) + cert


def _terminate_of(actions: list[Any]) -> tuple[int, int, int]:
    sends = [a for a in actions if isinstance(a, SendCommand)]
    assert len(sends) == 1 and sends[0].command_id == TERMINATE, actions
    return struct.unpack("<BBH", sends[0].payload)


def test_initiator_runs_the_worked_example_to_its_link_key() -> None:
    client, events = _worked_client(ephemeral_generate_time=3, confirm_key_generate_time=5)
    [req] = client.start(1000.0)
    assert req == SendCommand(INITIATE, b"\x01\x00\x03\x05" + H(U["certificate"]))
    assert client.get_timer() == 1005.0  # response_timeout

    [eph_req] = client.handle_command(INITIATE, _initiate_response(eph=4, conf=6), 1001.0)
    assert eph_req == SendCommand(EPHEMERAL, H(U["ephemeral_public_key"]))
    assert client.get_timer() == 1001.0 + 4 + 3  # the responder's ephemeral generate time + margin

    [confirm] = client.handle_command(EPHEMERAL, H(V["ephemeral_public_key"]), 1002.0)
    assert confirm.command_id == CONFIRM
    # MACU checked with the vector's own MacKey over the message spelled out here.
    message = b"\x02" + H(U["ieee"]) + H(V["ieee"]) + H(U["ephemeral_public_key"]) + H(V["ephemeral_public_key"])
    assert confirm.payload == hmac_mmo(H(VECTOR["mac_key"]), message)
    assert client.get_timer() == 1002.0 + 6 + 3

    [done] = client.handle_command(CONFIRM, H(VECTOR["macv"]), 1003.0)
    key_data = mmo(H(VECTOR["shared_secret_z"]) + b"\x00\x00\x00\x02")
    assert done == Established(1, key_data)
    assert (client.state, client.key_data, client.suite, client.get_timer()) == (ClientState.ESTABLISHED, key_data, 1, None)
    assert [kind for kind, _ in events if kind == "ke_established"] == ["ke_established"]
    # Once established, responder frames are ignored.
    assert client.handle_command(CONFIRM, H(VECTOR["macv"]), 1004.0) == []
    assert client.counters.ignored == 1


def _at_ephemeral() -> KeyEstablishmentClient:
    client, _ = _worked_client()
    client.start(1000.0)
    client.handle_command(INITIATE, _initiate_response(), 1000.5)
    return client


def _at_confirm() -> KeyEstablishmentClient:
    client = _at_ephemeral()
    client.handle_command(EPHEMERAL, H(V["ephemeral_public_key"]), 1001.0)
    return client


def _bad_x_point() -> bytes:
    c = SECT163K1
    x = next(x for x in range(2, 200) if c.trace(x ^ c.a ^ c.mul(c.b, c.inv(c.sqr(x)))))
    return b"\x03" + x.to_bytes(21, "big")


def _other_issuer_cert() -> bytes:
    cert = bytearray(H(V["certificate"]))
    cert[30:38] = b"OTHER-CA"
    return bytes(cert)


def _other_subject_cert() -> bytes:
    cert = bytearray(H(V["certificate"]))
    cert[29] ^= 0x04
    return bytes(cert)


REFUSALS = [
    ("short initiate response", "initiate", b"\x01\x00\x04", TerminateStatus.BAD_MESSAGE, "shorter than its 4-byte fixed part"),
    ("wrong suite", "initiate", _initiate_response(suite_bits=0x0002), TerminateStatus.UNSUPPORTED_SUITE, "chose suite bitmap 0x0002"),
    ("certificate length", "initiate", _initiate_response(cert=H(V["certificate"])[:47]), TerminateStatus.BAD_MESSAGE, "is 47 bytes"),
    ("issuer", "initiate", _initiate_response(cert=_other_issuer_cert()), TerminateStatus.UNKNOWN_ISSUER, "is not our CA"),
    ("subject", "initiate", _initiate_response(cert=_other_subject_cert()), TerminateStatus.INVALID_CERTIFICATE, "is not the trust center"),
    ("point", "initiate", _initiate_response(cert=_bad_x_point() + H(V["certificate"])[22:]), TerminateStatus.INVALID_CERTIFICATE, "reconstruction point"),
    ("out of order", "initiate", H(VECTOR["macv"]), TerminateStatus.BAD_MESSAGE, "CONFIRM_KEY response in await_initiate_response"),
    ("ephemeral length", "ephemeral", H(V["ephemeral_public_key"])[:21], TerminateStatus.BAD_MESSAGE, "ephemeral data is 21 bytes"),
    ("ephemeral point", "ephemeral", _bad_x_point(), TerminateStatus.BAD_MESSAGE, "is not the x of a sect163k1 point"),
    ("mac length", "confirm", H(VECTOR["macv"])[:15], TerminateStatus.BAD_MESSAGE, "MACV is 15 bytes"),
    ("wrong mac", "confirm", bytes(16), TerminateStatus.BAD_KEY_CONFIRM, "does not match"),
]


@pytest.mark.parametrize(("name", "at", "payload", "status", "why"), REFUSALS, ids=[r[0] for r in REFUSALS])
def test_every_refusal_terminates_with_its_status(name: str, at: str, payload: bytes, status: TerminateStatus, why: str) -> None:
    if at == "initiate":
        client, _ = _worked_client()
        client.start(1000.0)
    else:
        client = _at_ephemeral() if at == "ephemeral" else _at_confirm()
    command = {"initiate": INITIATE, "ephemeral": EPHEMERAL, "confirm": CONFIRM}[at]
    if name == "out of order":
        command = CONFIRM
    actions = client.handle_command(command, payload, 1002.0)
    assert _terminate_of(actions) == (status, 10, 0x0001)  # our terminate_wait, the suite offered
    assert client.state is ClientState.IDLE and client.get_timer() == 1012.0  # retry_delay
    assert client.last_failure is not None and why in client.last_failure
    assert client.key_data is None


# -- retries, timeouts, terminates ---------------------------------------------------------


def test_received_terminate_wait_time_is_honoured_then_attempts_run_out() -> None:
    client, _ = _worked_client(max_attempts=2, retry_delay=10.0)
    client.start(1000.0)
    assert client.handle_command(TERMINATE, struct.pack("<BBH", TerminateStatus.NO_RESOURCES, 30, 0x0001), 1001.0) == []
    assert client.state is ClientState.IDLE and client.get_timer() == 1031.0
    assert client.handle_timer(1030.9) == []  # not yet
    [again] = client.handle_timer(1031.0)
    assert again.command_id == INITIATE and client.counters.attempts == 2
    # Wait time 0: at least retry_delay; but this was the last attempt: leave.
    [leave] = client.handle_command(TERMINATE, struct.pack("<BBH", TerminateStatus.UNKNOWN_ISSUER, 0, 0x0001), 1032.0)
    assert isinstance(leave, Leave) and "after 2 attempts" in leave.reason and "UNKNOWN_ISSUER" in leave.reason
    assert client.state is ClientState.FAILED and client.get_timer() is None


def test_short_wait_time_is_raised_to_the_retry_delay() -> None:
    client, _ = _worked_client(retry_delay=10.0)
    client.start(1000.0)
    client.handle_command(TERMINATE, struct.pack("<BBH", TerminateStatus.BAD_MESSAGE, 2, 0x0001), 1001.0)
    assert client.get_timer() == 1011.0


def test_timeouts_follow_the_responder_generate_times_and_end_attempts() -> None:
    client, events = _worked_client(max_attempts=3, response_timeout=5.0, response_margin=3.0, retry_delay=10.0)
    client.start(1000.0)
    assert client.handle_timer(1005.0) == []  # no Initiate response: no Terminate, attempt over
    assert client.state is ClientState.IDLE and client.get_timer() == 1015.0
    client.handle_timer(1015.0)
    client.handle_command(INITIATE, _initiate_response(eph=20, conf=1), 1016.0)
    assert client.get_timer() == 1016.0 + 20 + 3
    assert client.handle_timer(1038.9) == []
    assert client.state is ClientState.AWAIT_EPHEMERAL
    assert client.handle_timer(1039.0) == []
    assert client.state is ClientState.IDLE and client.counters.timeouts == 2
    client.handle_timer(1049.0)
    client.handle_command(INITIATE, _initiate_response(eph=1, conf=40), 1050.0)
    client.handle_command(EPHEMERAL, H(V["ephemeral_public_key"]), 1051.0)
    assert client.get_timer() == 1051.0 + 40 + 3
    [leave] = client.handle_timer(1094.0)
    assert isinstance(leave, Leave) and "await_confirm_key_response" in leave.reason
    assert [d["waiting_for"] for k, d in events if k == "ke_timeout"] == [
        "await_initiate_response",
        "await_ephemeral_data_response",
        "await_confirm_key_response",
    ]


def test_unsupported_suite_terminate_switches_to_a_suite_the_responder_names() -> None:
    rng = random.Random(3)
    ca2 = make_ca(S2, rng)
    s2 = issue(S2, ca2, H(U["ieee"]), b"LAB-CA-2", rng)
    cfg = InitiatorConfig(ieee=H(U["ieee"]), trust_center_ieee=H(V["ieee"]), credentials=[_cred(U), s2])
    client = KeyEstablishmentClient(cfg, rng)
    [first] = client.start(0.0)
    assert first.payload[:2] == b"\x01\x00"
    client.handle_command(TERMINATE, struct.pack("<BBH", TerminateStatus.UNSUPPORTED_SUITE, 0, 0x0002), 1.0)
    [second] = client.handle_timer(client.get_timer() or 0.0)
    assert second.payload[:2] == b"\x02\x00" and second.payload[4:] == s2.certificate
    assert client.suite_bits == 0x0003


def test_failure_default_response_ends_the_attempt_and_unknown_commands_are_refused() -> None:
    client, _ = _worked_client()
    assert client.handle_command(0x05, b"", 999.0) == [Refuse(0x81)]
    assert client.handle_command(INITIATE, _initiate_response(), 999.0) == []  # not started: ignored
    client.start(1000.0)
    assert client.handle_default_response(INITIATE, 0x00, 1000.5) == []
    assert client.state is ClientState.AWAIT_INITIATE
    assert client.handle_default_response(INITIATE, 0x81, 1001.0) == []
    assert client.state is ClientState.IDLE and "status 0x81" in (client.last_failure or "")


def test_config_refuses_unknown_fault() -> None:
    with pytest.raises(ValueError, match="fault 'loud'"):
        InitiatorConfig(ieee=H(U["ieee"]), trust_center_ieee=H(V["ieee"]), credentials=[_cred(U)], fault="loud")


# -- two parties of the device's own code (suite 2), and the faults ---------------------


class ScriptedResponder:
    """The test's own responder: just enough of the server side to check an initiator."""

    def __init__(self, creds: Credentials, ieee: bytes, rng: random.Random) -> None:
        self.creds, self.ieee, self.rng = creds, ieee, rng
        self.trusted_issuer = parse_certificate(creds.suite, creds.certificate).issuer

    def initiate(self, payload: bytes) -> tuple[int | None, bytes]:
        suite = self.creds.suite
        cert = parse_certificate(suite, payload[4:])
        if cert.issuer != self.trusted_issuer:
            return TerminateStatus.UNKNOWN_ISSUER, b""
        self.peer_ieee = cert.subject
        self.peer_static = reconstruct_public_key(cert, self.creds.ca_public_key)
        return None, struct.pack("<HBB", suite.bit, 1, 1) + self.creds.certificate

    def ephemeral(self, payload: bytes) -> bytes:
        curve = self.creds.suite.curve
        self.own_eph = keypair_from(curve, self.rng.randrange(1, curve.n))
        self.peer_eph = payload
        z = ecmqv(self.creds.suite, self.creds.private_key, self.own_eph, self.peer_static, curve.decompress(payload))
        self.mac_key, self.key_data = derive_keys(z)
        return self.own_eph.public_bytes(curve)

    def confirm(self, macu: bytes) -> tuple[int | None, bytes]:
        e_v = self.own_eph.public_bytes(self.creds.suite.curve)
        want_u, macv = confirmation_macs(self.mac_key, self.peer_ieee, self.ieee, self.peer_eph, e_v)
        return (None, macv) if macu == want_u else (TerminateStatus.BAD_KEY_CONFIRM, b"")


TC = H("00124B0000C0FFEE")
DEVICE = H("0015BC001A000042")


def _two_parties(number: int, fault: str | None) -> tuple[KeyEstablishmentClient, ScriptedResponder, list[Any]]:
    rng = random.Random(number * 100 + len(fault or ""))
    suite = SUITES[number]
    ca = make_ca(suite, rng)
    hub = issue(suite, ca, TC, b"LAB-CA-9", rng)
    device = device_credentials(number, DEVICE, ca, b"LAB-CA-9", rng, fault=fault)
    client = KeyEstablishmentClient(
        InitiatorConfig(ieee=DEVICE, trust_center_ieee=TC, credentials=[device], fault=fault, max_attempts=1), rng
    )
    responder = ScriptedResponder(hub, TC, random.Random(5))
    trace: list[Any] = []
    [init] = client.start(0.0)
    status, rsp = responder.initiate(init.payload)
    if status is not None:
        trace.append(("terminated", status))
        trace += client.handle_command(TERMINATE, struct.pack("<BBH", status, 0, suite.bit), 1.0)
        return client, responder, trace
    actions = client.handle_command(INITIATE, rsp, 1.0)
    if not actions:
        return client, responder, trace  # silent
    [eph] = actions
    [confirm] = client.handle_command(EPHEMERAL, responder.ephemeral(eph.payload), 2.0)
    status, macv = responder.confirm(confirm.payload)
    if status is not None:
        trace.append(("terminated", status))
        trace += client.handle_command(TERMINATE, struct.pack("<BBH", status, 0, suite.bit), 3.0)
        return client, responder, trace
    trace += client.handle_command(CONFIRM, macv, 3.0)
    return client, responder, trace


@pytest.mark.parametrize("number", [1, 2])
def test_two_parties_of_its_own_code_agree_on_the_link_key(number: int) -> None:
    client, responder, trace = _two_parties(number, None)
    assert trace == [Established(number, responder.key_data)]
    assert client.key_data == responder.key_data and len(responder.key_data) == 16


def test_fault_bad_mac_is_caught_by_the_responder() -> None:
    client, _, trace = _two_parties(1, "bad-mac")
    assert trace[0] == ("terminated", TerminateStatus.BAD_KEY_CONFIRM)
    assert isinstance(trace[1], Leave) and client.state is ClientState.FAILED


def test_fault_unknown_issuer_certificate_is_not_from_the_trusted_ca() -> None:
    client, _, trace = _two_parties(1, "unknown-issuer")
    assert trace[0] == ("terminated", TerminateStatus.UNKNOWN_ISSUER)
    assert isinstance(trace[1], Leave)
    # The device itself still trusts the real CA: it would accept the hub's certificate.
    creds = client.cfg.credentials[0]
    assert creds.ca_issuer == b"LAB-CA-9" and parse_certificate(S1, creds.certificate).issuer != b"LAB-CA-9"


def test_fault_bad_certificate_subject_is_not_the_device() -> None:
    rng = random.Random(11)
    ca = make_ca(S1, rng)
    creds = device_credentials(1, DEVICE, ca, b"LAB-CA-9", rng, fault="bad-certificate")
    subject = parse_certificate(S1, creds.certificate).subject
    assert subject != DEVICE and subject[:7] == DEVICE[:7]
    # The certificate is otherwise sound: its key is the device's private key.
    q = reconstruct_public_key(parse_certificate(S1, creds.certificate), creds.ca_public_key)
    assert S1.curve.multiply(creds.private_key, S1.curve.g) == q


def test_fault_silent_never_answers_after_initiate() -> None:
    client, _, trace = _two_parties(1, "silent")
    assert trace == [] and client.state is ClientState.SILENT and client.get_timer() is None
    assert client.handle_command(EPHEMERAL, H(V["ephemeral_public_key"]), 9.0) == []
    assert client.handle_timer(10_000.0) == []


# -- the device's identity from its spec (se_identity) --------------------------------------

WE_IEEE = t.EUI64.convert("00:00:00:00:00:00:00:02")


def test_identity_from_hex_and_files_checks_the_key_against_the_certificate(tmp_path: Path) -> None:
    (tmp_path / "dev.cert").write_bytes(H(U["certificate"]))  # raw
    (tmp_path / "dev.key").write_text(U["static_private_key"] + "\n")  # hex text
    creds = credentials_for(1, str(tmp_path / "dev.cert"), str(tmp_path / "dev.key"), VECTOR["ca_public_key"], WE_IEEE, None, random.Random(1))
    assert creds == _cred(U)
    wrong_key = f"{int(U['static_private_key'], 16) + 1:042x}"
    with pytest.raises(CertificateError, match="^cbke_key is not the private key of cbke_cert under cbke_ca$"):
        credentials_for(1, U["certificate"], wrong_key, VECTOR["ca_public_key"], WE_IEEE, None, random.Random(1))


def test_identity_unknown_issuer_self_issues_but_trusts_the_lab_ca() -> None:
    creds = credentials_for(1, U["certificate"], U["static_private_key"], VECTOR["ca_public_key"], WE_IEEE, "unknown-issuer", random.Random(2))
    cert = parse_certificate(S1, creds.certificate)
    assert cert.subject == H(U["ieee"]) and cert.issuer != b"TESTSECA"
    assert (creds.ca_issuer, creds.ca_public_key) == (b"TESTSECA", CA1)
    # Under the lab CA its certificate reconstructs to some key that is not its own.
    assert reconstruct_public_key(cert, CA1) != S1.curve.multiply(creds.private_key, S1.curve.g)


def test_identity_subject_must_be_the_device_unless_the_fault_says_otherwise() -> None:
    other = t.EUI64.convert("00:11:22:33:44:55:66:77")
    with pytest.raises(ValueError, match="^cbke_cert subject 0000000000000002 is not the device 0011223344556677$"):
        check_identity(1, U["certificate"], U["static_private_key"], VECTOR["ca_public_key"], other, None)
    assert check_identity(1, U["certificate"], U["static_private_key"], VECTOR["ca_public_key"], other, "bad-certificate").certificate == H(U["certificate"])
    with pytest.raises(ValueError, match="needs a cbke_cert whose subject is not the device"):
        check_identity(1, U["certificate"], U["static_private_key"], VECTOR["ca_public_key"], WE_IEEE, "bad-certificate")


# -- anything the air brings: the spec's answer or silence, never an exception ------------

from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

_frames = st.lists(
    st.tuples(
        st.integers(0, 7),
        st.one_of(
            st.binary(max_size=80),
            st.sampled_from([_initiate_response(), H(V["ephemeral_public_key"]), H(VECTOR["macv"])]).flatmap(
                lambda good: st.integers(0, len(good)).map(lambda n: good[:n])  # truncations of the real ones
            ),
        ),
    ),
    max_size=6,
)


@settings(max_examples=40, deadline=None)
@given(frames=_frames)
def test_random_truncated_and_out_of_order_frames_get_an_answer_or_are_ignored(frames: list[tuple[int, bytes]]) -> None:
    client, _ = _worked_client(max_attempts=2)
    client.start(1000.0)
    now = 1000.0
    for command, payload in frames:
        now += 1.0
        actions = client.handle_command(command, payload, now)
        for action in actions:
            assert isinstance(action, SendCommand | Refuse | Leave | Established)
            if isinstance(action, SendCommand) and action.command_id == TERMINATE:
                status, wait, bits = struct.unpack("<BBH", action.payload)
                assert status in set(TerminateStatus) and (wait, bits) == (10, 0x0001)
        if command > TERMINATE:
            assert actions == [Refuse(0x81)]
        client.handle_timer(now)
    assert client.counters.attempts <= 2
    if client.state is ClientState.ESTABLISHED:
        assert client.key_data == mmo(H(VECTOR["shared_secret_z"]) + b"\x00\x00\x00\x02")
