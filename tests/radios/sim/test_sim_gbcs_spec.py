"""spec.py's GBCS block and gbcs/from_spec.py: a device's GBCS options become its peer."""

from __future__ import annotations

from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
import pytest

from eui64 import Eui64
from han_ota.cli import SIM_DEVICE_HELP
from radios.sim.gbcs import generate_identity, peer_for_spec, read_message
from radios.sim.spec import SimDeviceSpec, SimSpecError, parse_sim_device
from sim_gbcs_support import ACB, DATA, ESME, PLACEHOLDER_HASH, SUPPLIER, T2015, plain_verify, vector

SUPPLIER_PEM = DATA / "supplier-90b3d51f30010000-ds.pem"
DEVICE = "hcalcs:00DB1234567890A0"


def write_identity(tmp_path: Path, entity: Eui64, name: str = "dev") -> tuple[Path, Path]:
    ident = generate_identity(entity, "lab device")
    key, cert = tmp_path / f"{name}-ds.key", tmp_path / f"{name}-ds.pem"
    key.write_text(ident.signing_key_pem)
    cert.write_text(ident.certificate_pem)
    return key, cert


def test_every_gbcs_key_is_in_the_sim_device_help() -> None:
    for key in ("entity_id", "gbcs_key", "gbcs_cert", "supplier_id", "acb_id", "supplier_key", "activation_fails"):
        assert key in SIM_DEVICE_HELP


def test_defaults_entity_is_the_ieee_and_the_identity_is_generated_and_printable() -> None:
    spec = parse_sim_device(f"{DEVICE}:supplier_key={SUPPLIER_PEM}:file_version=0x0123ABCD")
    peer = peer_for_spec(spec)
    assert (peer.kind, peer.entity_id, peer.supplier_id, peer.acb_id) == ("hcalcs", ESME, SUPPLIER, ACB)
    assert peer.firmware_version == bytes.fromhex("0123ABCD")
    assert "BEGIN CERTIFICATE" in peer.certificate_pem
    assert peer_for_spec(spec).certificate_pem != peer.certificate_pem  # each build, its own key
    # The RTDS supplier's CS06 is checked against supplier_key and answered.
    peer.hold_image(PLACEHOLDER_HASH, bytes.fromhex("0123ABCE"))
    out = peer.on_message(vector("cs06-immediate-success-command.hex"), T2015)
    assert out.activate == PLACEHOLDER_HASH


def test_configured_key_and_certificate_sign_the_replies(tmp_path: Path) -> None:
    entity = Eui64(bytes.fromhex("00DB1234567890B7"))
    key, cert = write_identity(tmp_path, entity)
    spec = parse_sim_device(f"ppmid:00DB1234567890A4:entity_id=00DB1234567890B7:gbcs_key={key}:gbcs_cert={cert}:acb_id=90B3D51F3000AAAA:activation_fails=1")
    peer = peer_for_spec(spec)
    assert peer.certificate_pem == cert.read_text() and peer.entity_id == entity
    [alert] = peer.on_activated(False, T2015)
    m = read_message(alert)
    assert (m.originator, m.recipient) == (entity, Eui64(bytes.fromhex("90B3D51F3000AAAA")))
    public = serialization.load_pem_private_key(key.read_bytes(), None).public_key()
    assert isinstance(public, ec.EllipticCurvePublicKey) and plain_verify(alert, public)


def test_a_key_alone_gets_a_self_signed_certificate(tmp_path: Path) -> None:
    key, _ = write_identity(tmp_path, ESME)
    peer = peer_for_spec(parse_sim_device(f"{DEVICE}:gbcs_key={key}"))
    assert "BEGIN CERTIFICATE" in peer.certificate_pem


def test_toml_form_round_trips_the_gbcs_keys(tmp_path: Path) -> None:
    key, cert = write_identity(tmp_path, ESME)
    spec = parse_sim_device(f"{DEVICE}:gbcs_key={key}:gbcs_cert={cert}:entity_id=00db1234567890a0:supplier_id=90b3d51f30010000")
    table = spec.to_dict()
    assert (table["entity_id"], table["supplier_id"], table["gbcs_key"]) == ("00DB1234567890A0", "90B3D51F30010000", str(key))
    assert SimDeviceSpec.from_dict(table) == spec


def _refused(text: str) -> str:
    with pytest.raises(SimSpecError) as info:
        parse_sim_device(text)
    return str(info.value)


def test_refusals_name_the_key(tmp_path: Path) -> None:
    assert "entity_id='00DB12' is not valid: an EUI-64 as 16 hex digits (6 hex digits, expected 16)" in _refused(f"{DEVICE}:entity_id=00DB12")
    assert "acb_id='0000000000000000' is not valid: an EUI-64 as 16 hex digits, not all zeros or all ones" in _refused(f"{DEVICE}:acb_id=0000000000000000")
    assert _refused(f"{DEVICE}:gbcs_key={SUPPLIER_PEM}").startswith(f"sim device: gbcs_key='{SUPPLIER_PEM}' is not valid: a PEM file holding an ECDSA P-256 private key (")
    assert _refused(f"{DEVICE}:gbcs_key={tmp_path / 'none.key'}").startswith("sim device: gbcs_key=")
    assert "gbcs_cert" in _refused(f"{DEVICE}:gbcs_cert={SUPPLIER_PEM}")  # no key for it
    assert "only with gbcs_key" in _refused(f"{DEVICE}:gbcs_cert={SUPPLIER_PEM}")
    # A certificate for another key, or naming another entity.
    key, _ = write_identity(tmp_path, ESME, "a0")
    _, other_cert = write_identity(tmp_path, ESME, "other")
    assert "the GBCS certificate is not for the signing key" in _refused(f"{DEVICE}:gbcs_key={key}:gbcs_cert={other_cert}")
    b7_key, b7_cert = write_identity(tmp_path, Eui64(bytes.fromhex("00DB1234567890B7")), "b7")
    assert "names entity 00DB1234567890B7, not 00DB1234567890A0" in _refused(f"{DEVICE}:gbcs_key={b7_key}:gbcs_cert={b7_cert}")
    # A supplier certificate naming another supplier than supplier_id.
    assert "names supplier 90B3D51F30010000, not supplier_id 90B3D51F3001AAAA" in _refused(f"{DEVICE}:supplier_key={SUPPLIER_PEM}:supplier_id=90B3D51F3001AAAA")


def test_a_bare_public_key_supplier_takes_its_id_from_supplier_id(tmp_path: Path) -> None:
    public = tmp_path / "supplier.pub"
    sup = ec.generate_private_key(ec.SECP256R1())
    public.write_bytes(sup.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    peer = peer_for_spec(parse_sim_device(f"{DEVICE}:supplier_key={public}:supplier_id=90B3D51F3001AAAA"))
    assert peer.supplier_id == Eui64(bytes.fromhex("90B3D51F3001AAAA"))
