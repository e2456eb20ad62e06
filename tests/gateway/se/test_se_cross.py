"""The hub's CBKE (gateway/se) against the simulated device's own (radios/sim/se_keys).

The two were written apart, on purpose: the worked example pins suite 1, but suite 2
has no public example with MACs, so the only check that two readings of the
specification agree is to let each side issue, parse and agree with the other's keys.
"""

from __future__ import annotations

import random

import pytest

from gateway.se import ecmqv, ecqv
from gateway.se.certificate import parse_certificate
from gateway.se.suites import suite as hub_suite
from radios.sim import se_keys as sim

HUB_IEEE = bytes.fromhex("000D6F0000AB0001")
DEVICE_IEEE = bytes.fromhex("000D6F0000CD0002")
ISSUER = bytes.fromhex("5445535453454341")


@pytest.mark.parametrize("number", [1, 2])
def test_certificates_one_side_issues_the_other_reconstructs(number: int) -> None:
    hs, ss = hub_suite(number), sim.SUITES[number]
    rng = random.Random(number)

    hub_ca = ecqv.new_key_pair(hs, rng.randbytes)
    cert, key = ecqv.issue(hs, hub_ca, DEVICE_IEEE, ISSUER, rng.randbytes)
    parsed = sim.parse_certificate(ss, cert.raw)
    assert parsed.subject == DEVICE_IEEE and parsed.issuer == ISSUER
    public = sim.reconstruct_public_key(parsed, hub_ca.public_key)
    assert ss.curve.compress(public) == ss.curve.compress(ss.curve.multiply(int.from_bytes(key, "big"), ss.curve.g))

    sim_ca = sim.make_ca(ss, rng)
    creds = sim.issue(ss, sim_ca, HUB_IEEE, ISSUER, rng)
    theirs = parse_certificate(creds.certificate, hs)
    assert theirs.subject == HUB_IEEE and theirs.issuer == ISSUER
    assert ecqv.reconstruct_public_key(theirs, sim_ca.public_bytes(ss.curve)) == ss.curve.compress(
        ss.curve.multiply(creds.private_key, ss.curve.g)
    )


@pytest.mark.parametrize("number", [1, 2])
def test_hub_responder_and_device_initiator_agree_on_every_secret(number: int) -> None:
    hs, ss = hub_suite(number), sim.SUITES[number]
    rng = random.Random(100 + number)
    ca = ecqv.new_key_pair(hs, rng.randbytes)
    hub_cert, hub_key = ecqv.issue(hs, ca, HUB_IEEE, ISSUER, rng.randbytes)
    dev = sim.issue(ss, sim.KeyPair(int.from_bytes(ca.private_key, "big"), ss.curve.decompress(ca.public_key)), DEVICE_IEEE, ISSUER, rng)

    hub_eph = ecqv.new_key_pair(hs, rng.randbytes)
    dev_eph = sim.keypair(ss.curve, rng)
    dev_eph_bytes = dev_eph.public_bytes(ss.curve)

    dev_static_seen_by_hub = ecqv.reconstruct_public_key(parse_certificate(dev.certificate, hs), ca.public_key)
    hub = ecmqv.agree(
        hs, initiator=False, own_static_private=hub_key, own_ephemeral_private=hub_eph.private_key,
        own_ephemeral_public=hub_eph.public_key, own_ieee=HUB_IEEE, peer_static_public=dev_static_seen_by_hub,
        peer_ephemeral_public=dev_eph_bytes, peer_ieee=DEVICE_IEEE,
    )  # fmt: skip

    hub_static_seen_by_dev = sim.reconstruct_public_key(sim.parse_certificate(ss, hub_cert.raw), ca.public_key)
    z = sim.ecmqv(ss, dev.private_key, dev_eph, hub_static_seen_by_dev, ss.curve.decompress(hub_eph.public_key))
    mac_key, key_data = sim.derive_keys(z)
    macu, macv = sim.confirmation_macs(mac_key, DEVICE_IEEE, HUB_IEEE, dev_eph_bytes, hub_eph.public_key)

    assert (hub.z, hub.mac_key, hub.key_data, hub.macu, hub.macv) == (z, mac_key, key_data, macu, macv)
