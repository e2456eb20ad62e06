"""The simulated devices' GBCS against the gateway's, two independent readings of GBCS.

radios/sim/gbcs never imports gateway/gbcs; here each side reads what the other
writes: the device takes CS06 commands the gateway signs (bare and ciphered,
immediate, future-dated, cancelling) and the gateway's reader and trust store read
and verify every message the device writes, trusting it from its printed certificate.
"""

from __future__ import annotations

import datetime as dt

import pytest

from eui64 import Eui64
from gateway.gbcs import EntityId, TrustStore, sign_activation, signature_valid
from gateway.gbcs.apdu import decode_general_signing
from radios.sim.gbcs import GbcsPeer, generate_identity, read_message
from radios.sim.gbcs.signer import signed_message
from sim_gbcs_support import ACB, ESME, PPMID, SR11_1_HASH, SUPPLIER, T2015, cert_key, supplier_private_key

NEW = bytes.fromhex("00000002")


def peer(kind: str = "hcalcs", entity: Eui64 = ESME) -> GbcsPeer:
    ident = generate_identity(entity, f"simulated {kind}")
    return GbcsPeer(kind, entity, ident.signing_key, ident.certificate, {SUPPLIER: cert_key("supplier-90b3d51f30010000-ds.pem")}, bytes.fromhex("00000001"), originator_counter=10)


def gateway_reads(message: bytes, device: GbcsPeer) -> None:
    """The gateway's reader takes it whole and its trust store verifies it from the certificate."""
    apdu, rest = decode_general_signing(message)
    assert rest == b""
    ours = read_message(message)
    assert (int(apdu.cra_flag), apdu.counter, apdu.originator.raw, apdu.recipient.raw, int(apdu.message_code), apdu.content) == (
        ours.cra_flag, ours.counter, ours.originator.written, ours.recipient.written, ours.message_code, ours.content,
    )
    trust = TrustStore.from_certificates([device.certificate_pem.encode()])
    key = trust[EntityId(device.entity_id.written)]
    assert apdu.signature is not None and signature_valid(key, apdu.signed_data, apdu.signature)


def cs06(counter: int, **kw: object) -> bytes:
    return sign_activation(
        supplier_private_key(), originator=EntityId(SUPPLIER.written), device=EntityId(ESME.written), image_hash=SR11_1_HASH, counter=counter, **kw  # type: ignore[arg-type]
    )


@pytest.mark.parametrize("ciphered", [False, True])
def test_the_device_activates_on_a_gateway_signed_cs06_and_the_gateway_trusts_its_response(ciphered: bool) -> None:
    device = peer()
    device.hold_image(SR11_1_HASH, NEW)
    out = device.on_message(cs06(11, ciphered=ciphered), T2015)
    assert out.activate == SR11_1_HASH and out.notes == ()
    gateway_reads(out.replies[0], device)


def test_future_dated_and_cancelling_commands_from_the_gateway() -> None:
    device = peer()
    device.hold_image(SR11_1_HASH, NEW)
    at = dt.datetime(2015, 1, 1, 0, 10, tzinfo=dt.timezone.utc)
    accepted = device.on_message(cs06(20, execution_time=at), T2015)
    gateway_reads(accepted.replies[0], device)
    assert device.get_timer() == T2015 + 600
    cancelled = device.on_message(cs06(21, cancel=True), T2015 + 1)
    assert cancelled.notes == ("cancelled the pending future-dated activation",) and device.get_timer() is None
    gateway_reads(cancelled.replies[0], device)
    device.on_message(cs06(22, execution_time=at), T2015 + 2)
    due = device.handle_timer(T2015 + 600)
    assert due.activate == SR11_1_HASH
    gateway_reads(due.replies[0], device)


def test_every_alert_and_response_reads_and_verifies_in_the_gateway() -> None:
    hcalcs, ppmid = peer(), peer("ppmid", PPMID)
    messages = [(m, hcalcs) for m in hcalcs.on_image_downloaded(SR11_1_HASH, True, T2015) + hcalcs.on_image_downloaded(SR11_1_HASH, False, T2015)]
    cs08 = signed_message(cra_flag=1, counter=3, originator=ACB, recipient=ESME, message_code=0x0129, content=b"\x05\x00", key=None)
    messages += [(m, hcalcs) for m in hcalcs.on_message(cs08, T2015).replies]
    ppmid.hold_image(SR11_1_HASH, NEW)
    messages += [(m, ppmid) for m in ppmid.on_activated(True, T2015) + ppmid.on_activated(False, T2015)]
    assert len(messages) == 5
    for message, device in messages:
        gateway_reads(message, device)
