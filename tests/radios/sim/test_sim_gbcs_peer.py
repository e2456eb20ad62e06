"""radios/sim/gbcs/peer.py: the simulated HCALCS and PPMID as GBCS peers, sans-I/O.

Commands are the RTDS vectors (signed by the RTDS supplier) and commands signed here
with a supplier key of the test's own. What the peer writes is held byte for byte to
the RTDS responses and alerts (all but the signature, which ECDSA draws afresh) and
its signatures are checked with plain cryptography calls and the device's certificate.
"""

from __future__ import annotations

import calendar

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
import pytest

from eui64 import Eui64
from radios.sim.gbcs import GbcsPeer, generate_identity, read_message
from radios.sim.gbcs import der
from radios.sim.gbcs.identity import entity_id_of
from radios.sim.gbcs.signer import signed_message
from sim_gbcs_support import (
    ACB,
    ESME,
    GSME,
    PLACEHOLDER_HASH,
    PPMID,
    SR11_1_HASH,
    SUPPLIER,
    T2015,
    T2030,
    cert_key,
    plain_verify,
    supplier_private_key,
    vector,
)

IMMEDIATE = vector("cs06-immediate-success-command.hex")
FUTURE = vector("cs06-future-dated-success-command.hex")
CANCEL = vector("cs06-cancellation-success-command.hex")
OLD = bytes.fromhex("0123ABCD")
NEW = bytes.fromhex("0123ABCE")


def hcalcs(entity: Eui64 = ESME, **kw: object) -> GbcsPeer:
    ident = generate_identity(entity, "test HCALCS")
    suppliers = kw.pop("suppliers", {SUPPLIER: cert_key("supplier-90b3d51f30010000-ds.pem")})
    return GbcsPeer("hcalcs", entity, ident.signing_key, ident.certificate, suppliers, kw.pop("version", OLD), **kw)  # type: ignore[arg-type]


def ppmid(**kw: object) -> GbcsPeer:
    ident = generate_identity(PPMID, "test PPMID")
    return GbcsPeer("ppmid", PPMID, ident.signing_key, ident.certificate, {}, OLD, **kw)  # type: ignore[arg-type]


def device_key(peer: GbcsPeer) -> ec.EllipticCurvePublicKey:
    """The device's key as a hub would get it: from its printed certificate."""
    cert = x509.load_pem_x509_certificate(peer.certificate_pem.encode())
    assert entity_id_of(cert) == peer.entity_id
    key = cert.public_key()
    assert isinstance(key, ec.EllipticCurvePublicKey)
    return key


def same_but_signature(ours: bytes, rtds: bytes, peer: GbcsPeer) -> None:
    assert ours[:-64].hex().upper() == rtds[:-64].hex().upper()
    assert plain_verify(ours, device_key(peer))
    assert not plain_verify(rtds, device_key(peer))  # the RTDS device's own signature is not ours


def own_cs06(
    key: ec.EllipticCurvePrivateKey,
    counter: int,
    image_hash: bytes,
    *,
    at: bytes | None = None,
    originator: Eui64 = SUPPLIER,
    recipient: Eui64 = ESME,
    content_counter: int | None = None,
) -> bytes:
    content = der.tlv(der.OCTET_STRING, image_hash) + der.encode_integer(counter if content_counter is None else content_counter)
    if at is not None:
        content += der.tlv(der.GENERALIZED_TIME, at)
    return signed_message(
        cra_flag=1, counter=counter, originator=originator, recipient=recipient, message_code=0x0012,
        content=der.tlv(der.SEQUENCE, content), key=key,
    )


# -- CS06, immediate ------------------------------------------------------------------


def test_rtds_immediate_cs06_activates_the_held_image_and_answers_like_the_rtds_response() -> None:
    peer = hcalcs()
    peer.hold_image(PLACEHOLDER_HASH, NEW)
    out = peer.on_message(IMMEDIATE, T2015)
    assert (out.activate, out.firmware_version, out.notes) == (PLACEHOLDER_HASH, NEW, ())
    assert len(out.replies) == 1
    same_but_signature(out.replies[0], vector("cs06-immediate-success-response.hex"), peer)
    assert peer.firmware_version == NEW and peer.held is None


@pytest.mark.parametrize(
    "held, fails, code, note",
    [
        (None, False, 1, "no image held"),
        (SR11_1_HASH, False, 2, "hash mismatch: holds " + SR11_1_HASH.hex()),
        (PLACEHOLDER_HASH, True, 3, "activation failed (activation_fails)"),
    ],
)
def test_immediate_cs06_failures_answer_their_response_code_and_keep_the_version(held: bytes | None, fails: bool, code: int, note: str) -> None:
    peer = hcalcs(activation_fails=fails)
    if held is not None:
        peer.hold_image(held, NEW)
    out = peer.on_message(IMMEDIATE, T2015)
    assert (out.activate, out.firmware_version, out.notes) == (None, None, (note,))
    reply = read_message(out.replies[0])
    assert (reply.cra_flag, reply.counter, reply.originator, reply.recipient, reply.message_code) == (2, 1000, ESME, SUPPLIER, 0x0012)
    assert reply.content == bytes.fromhex(f"3009 0201{code:02X} 0404") + OLD
    assert plain_verify(out.replies[0], device_key(peer))
    assert peer.firmware_version == OLD


def test_the_sample_image_activates_with_a_cs06_for_its_real_hash_signed_by_our_own_supplier() -> None:
    ours = ec.generate_private_key(ec.SECP256R1())
    lab = Eui64(bytes.fromhex("90B3D51F3001AAAA"))
    peer = hcalcs(suppliers={lab: ours.public_key()})
    peer.hold_image(SR11_1_HASH, NEW)
    out = peer.on_message(own_cs06(ours, 7, SR11_1_HASH, originator=lab), T2015)
    assert out.activate == SR11_1_HASH and out.firmware_version == NEW
    assert read_message(out.replies[0]).recipient == lab
    # The RTDS supplier is not this device's supplier: its command is not answered.
    other = hcalcs(suppliers={lab: ours.public_key()})
    other.hold_image(PLACEHOLDER_HASH, NEW)
    out = other.on_message(IMMEDIATE, T2015)
    assert (out.replies, out.activate, out.notes) == ([], None, ("originator 90B3D51F30010000 is not a supplier this device trusts",))


def test_a_cs06_signed_by_another_key_is_not_answered() -> None:
    forged = own_cs06(ec.generate_private_key(ec.SECP256R1()), 1000, PLACEHOLDER_HASH)
    peer = hcalcs()
    peer.hold_image(PLACEHOLDER_HASH, NEW)
    out = peer.on_message(forged, T2015)
    assert (out.replies, out.activate) == ([], None)
    assert out.notes == ("the signature does not verify with supplier 90B3D51F30010000's key",)
    assert peer.on_message(IMMEDIATE, T2015).activate == PLACEHOLDER_HASH  # the forgery did not use up counter 1000


def test_counters_must_rise_per_originator() -> None:
    key = supplier_private_key()
    peer = hcalcs()
    assert read_message(peer.on_message(IMMEDIATE, T2015).replies[0]).content[4] == 1  # no image: answered, counter taken
    out = peer.on_message(IMMEDIATE, T2015)
    assert (out.replies, out.notes) == ([], ("counter 1000 is not above the last accepted from 90B3D51F30010000 (1000)",))
    assert peer.on_message(own_cs06(key, 999, PLACEHOLDER_HASH), T2015).replies == []
    assert len(peer.on_message(own_cs06(key, 1001, PLACEHOLDER_HASH), T2015).replies) == 1


def test_content_counter_must_equal_the_header_counter() -> None:
    out = hcalcs().on_message(own_cs06(supplier_private_key(), 5, PLACEHOLDER_HASH, content_counter=6), T2015)
    assert (out.replies, out.notes) == ([], ("CS06 content counter 6 differs from the header's 5",))


def test_what_is_not_answered_says_why() -> None:
    peer = hcalcs()
    assert peer.on_message(b"\xdf\x09", T2015).notes == ("unreadable: GBCS: CRA flag at offset 2: needs 1 byte, 0 left",)
    other = own_cs06(supplier_private_key(), 1, PLACEHOLDER_HASH, recipient=GSME)
    assert peer.on_message(other, T2015).notes == ("for 00DB1234567890A1, not this device (00DB1234567890A0)",)
    assert peer.on_message(vector("cs06-immediate-success-response.hex")[:21] + ESME.written + vector("cs06-immediate-success-response.hex")[29:], T2015).notes == (
        "CRA flag 0x02 is not a command",
    )
    unknown = signed_message(cra_flag=1, counter=9, originator=SUPPLIER, recipient=ESME, message_code=0x0099, content=b"\x05\x00", key=None)
    assert peer.on_message(unknown, T2015).notes == ("message code 0x0099 is not one this device takes",)
    bad = signed_message(
        cra_flag=1, counter=9, originator=SUPPLIER, recipient=ESME, message_code=0x0012, content=b"\x30\x00", key=supplier_private_key()
    )
    assert peer.on_message(bad, T2015).notes == ("unreadable CS06: GBCS: manufacturer image hash tag at offset 36: needs 1 byte, 0 left",)


def test_a_ppmid_does_not_take_a_cs06() -> None:
    out = ppmid().on_message(own_cs06(supplier_private_key(), 1, PLACEHOLDER_HASH, recipient=PPMID), T2015)
    assert (out.replies, out.notes) == ([], ("a PPMID takes its activation from the hub, not a CS06",))


# -- CS06, future-dated and cancelled --------------------------------------------------


def test_future_dated_cs06_is_accepted_now_and_alerts_8f66_at_its_time() -> None:
    peer = hcalcs(originator_counter=1999)
    peer.hold_image(PLACEHOLDER_HASH, bytes.fromhex("0123ABCF"))
    out = peer.on_message(FUTURE, T2015)
    assert out.activate is None and peer.get_timer() == T2030
    same_but_signature(out.replies[0], vector("cs06-future-dated-success-response.hex"), peer)
    assert peer.handle_timer(T2030 - 1) == type(out)()  # not yet: nothing, still pending
    assert peer.get_timer() == T2030
    due = peer.handle_timer(T2030)
    assert (due.activate, due.firmware_version) == (PLACEHOLDER_HASH, bytes.fromhex("0123ABCF"))
    same_but_signature(due.replies[0], vector("cs06-8f66-future-dated-success-alert.hex"), peer)
    assert peer.get_timer() is None and peer.handle_timer(T2030 + 10).replies == []


def test_future_dated_cs06_without_the_image_alerts_8f67_not_actioned() -> None:
    peer = hcalcs(originator_counter=1999)
    peer.on_message(FUTURE, T2015)
    due = peer.handle_timer(T2030 + 5)  # late (the device was off): still at the command's time
    assert due.activate is None and due.notes == ("no image held",)
    alert = read_message(due.replies[0])
    assert (alert.cra_flag, alert.counter, alert.recipient, alert.message_code) == (3, 2000, SUPPLIER, 0x00CA)
    assert alert.content == bytes.fromhex("30250203008F67180F32303330303131353039303030305A020203E9300902010104040123ABCD")


def test_cancellation_cancels_the_pending_activation_and_answers_like_the_rtds() -> None:
    peer = hcalcs()
    peer.on_message(FUTURE, T2015)
    out = peer.on_message(CANCEL, T2015)
    assert out.notes == ("cancelled the pending future-dated activation",)
    same_but_signature(out.replies[0], vector("cs06-cancellation-success-response.hex"), peer)
    assert peer.get_timer() is None


def test_a_past_execution_time_activates_at_once() -> None:
    peer = hcalcs()
    peer.hold_image(PLACEHOLDER_HASH, NEW)
    out = peer.on_message(FUTURE, T2030 + 60)
    assert out.activate == PLACEHOLDER_HASH and read_message(out.replies[0]).content[4] == 0


def test_a_later_future_dated_command_replaces_the_pending_one() -> None:
    key = supplier_private_key()
    peer = hcalcs()
    peer.on_message(FUTURE, T2015)
    out = peer.on_message(own_cs06(key, 1005, PLACEHOLDER_HASH, at=b"20310101000000Z"), T2015)
    assert out.notes == ("replaced the pending future-dated activation",)
    assert peer.get_timer() == calendar.timegm((2031, 1, 1, 0, 0, 0))


# -- CS08 ---------------------------------------------------------------------------------


@pytest.mark.parametrize("make", [hcalcs, ppmid])
def test_cs08_is_answered_with_the_firmware_version(make: object) -> None:
    peer = make()  # type: ignore[operator]
    cs08 = signed_message(cra_flag=1, counter=42, originator=ACB, recipient=peer.entity_id, message_code=0x0129, content=b"\x05\x00", key=None)
    wrapped = b"\xdd" + bytes(6) + der.encode_length(5 + len(cs08) + 12) + b"\x11" + bytes(4) + cs08 + bytes(12)
    out = peer.on_message(wrapped, T2015)
    reply = read_message(out.replies[0])
    assert (reply.cra_flag, reply.counter, reply.originator, reply.recipient, reply.message_code) == (2, 42, peer.entity_id, ACB, 0x0129)
    assert reply.date_time == bytes.fromhex("07DF0101FF000000008000FF")
    assert reply.content == bytes.fromhex("30090404") + OLD + bytes.fromhex("020100")
    assert plain_verify(out.replies[0], device_key(peer))
    assert peer.on_message(cs08, T2015).notes == ("counter 42 is not above the last accepted from 90B3D51F30000002 (42)",)


def test_cs08_content_must_be_null() -> None:
    cs08 = signed_message(cra_flag=1, counter=1, originator=ACB, recipient=ESME, message_code=0x0129, content=b"\x30\x00", key=None)
    assert hcalcs().on_message(cs08, T2015).notes == ("CS08 content 3000 is not NULL (0500)",)


# -- alerts from the device's own events -------------------------------------------------


def test_firmware_distribution_receipt_alert_is_the_rtds_layout() -> None:
    peer = hcalcs(GSME, originator_counter=2999)
    [alert] = peer.on_image_downloaded(bytes([0xA1]) * 32, True, T2015)
    same_but_signature(alert, vector("fdra-zigbee-8f72-alert.hex"), peer)


def test_failed_download_alerts_8f1c_with_the_hash_it_computed() -> None:
    peer = hcalcs(originator_counter=2999)
    [alert] = peer.on_image_downloaded(SR11_1_HASH, False, T2015 + 1)
    m = read_message(alert)
    assert (m.counter, m.recipient, m.message_code) == (3000, SUPPLIER, 0x00CF)
    assert m.content == bytes.fromhex("0109018F1C1C374A810920") + SR11_1_HASH


def test_ppmid_cs09_after_activation_is_the_rtds_layout() -> None:
    peer = ppmid(originator_counter=4999)
    peer.hold_image(SR11_1_HASH, bytes.fromhex("1234ABCD"))
    [alert] = peer.on_activated(True, T2015)
    same_but_signature(alert, vector("cs09-8f8b-alert.hex"), peer)
    assert peer.firmware_version == bytes.fromhex("1234ABCD")


def test_ppmid_cs09_failure_says_1_and_keeps_the_version() -> None:
    peer = ppmid(originator_counter=4999)
    peer.hold_image(SR11_1_HASH, bytes.fromhex("1234ABCD"))
    m = read_message(peer.on_activated(False, T2015)[0])
    assert (m.counter, m.recipient, m.message_code) == (5000, ACB, 0x012B)
    assert m.content == bytes.fromhex("301F0203008F8B180F32303135303130313030303030305A0404") + OLD + bytes.fromhex("020101")


def test_an_hcalcs_activated_by_the_hub_sends_no_cs09_but_takes_the_version() -> None:
    peer = hcalcs()
    peer.hold_image(SR11_1_HASH, NEW)
    assert peer.on_activated(True, T2015) == []
    assert peer.firmware_version == NEW


def test_alert_counters_follow_the_clock_and_always_rise() -> None:
    peer = hcalcs()
    first = read_message(peer.on_image_downloaded(SR11_1_HASH, True, T2015)[0]).counter
    second = read_message(peer.on_image_downloaded(SR11_1_HASH, True, T2015)[0]).counter  # same instant
    later = read_message(peer.on_image_downloaded(SR11_1_HASH, True, T2015 - 3600)[0]).counter  # clock set back
    assert first == T2015 * 1000 and second == first + 1 and later == first + 2
    rebuilt = hcalcs()  # a device rebuilt after a restart, an hour on
    assert read_message(rebuilt.on_image_downloaded(SR11_1_HASH, True, T2015 + 3600)[0]).counter > later


def test_the_downloaded_sample_image_with_rtds_commands_and_one_for_its_real_hash() -> None:
    """As the device will do it: hash what it downloaded, hold it, take CS06s."""
    from radios.sim.gbcs import manufacturer_image_hash
    from sim_gbcs_support import DATA

    image = (DATA / "sr11.1-firmware-image.bin").read_bytes()
    peer = hcalcs()
    image_hash = manufacturer_image_hash(image)
    [receipt] = peer.on_image_downloaded(image_hash, True, T2015)
    assert read_message(receipt).content.endswith(SR11_1_HASH)
    peer.hold_image(image_hash, int.from_bytes(image[14:18], "little").to_bytes(4, "big"))  # the header's file version
    out = peer.on_message(IMMEDIATE, T2015)  # the RTDS command names the placeholder hash
    assert out.activate is None and read_message(out.replies[0]).content[4] == 2  # hash mismatch
    out = peer.on_message(own_cs06(supplier_private_key(), 1003, SR11_1_HASH), T2015)
    assert out.activate == SR11_1_HASH and out.firmware_version == image[14:18][::-1]
    assert read_message(out.replies[0]).content == bytes.fromhex("300902010004 04") + image[14:18][::-1]
