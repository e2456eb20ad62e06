"""gateway/gbcs/trust.py: trust anchors from certificates and public keys."""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from gateway.gbcs import EntityId, GbcsUsageError, TrustStore, generate_supplier_identity, load_anchor, read_anchor

DATA = Path(__file__).parents[2] / "data" / "gbcs"
CERT = (DATA / "supplier-90b3d51f30010000-ds.pem").read_bytes()
KEY = serialization.load_pem_private_key((DATA / "supplier-90b3d51f30010000-ds.key").read_bytes(), None)
SUPPLIER = EntityId.parse("90B3D51F30010000")
OTHER = EntityId.parse("1122334455667788")


def pub_pem(key: ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def same_key(a: ec.EllipticCurvePublicKey, b: ec.EllipticCurvePublicKey) -> bool:
    return a.public_numbers() == b.public_numbers()


def test_reference_certificate_names_its_entity_though_expired() -> None:
    cert = x509.load_pem_x509_certificate(CERT)
    assert cert.not_valid_after_utc.year == 2025  # expired: dates must not matter
    anchor = load_anchor(CERT)
    assert anchor.entity_id == SUPPLIER
    assert anchor.subject is not None and "GITTESTSUPPLIER" in anchor.subject
    assert isinstance(KEY, ec.EllipticCurvePrivateKey)
    assert same_key(anchor.public_key, KEY.public_key())


def test_public_key_pem_has_no_entity() -> None:
    assert isinstance(KEY, ec.EllipticCurvePrivateKey)
    anchor = load_anchor(pub_pem(KEY))
    assert anchor.entity_id is None
    assert same_key(anchor.public_key, KEY.public_key())


@pytest.mark.parametrize(
    "pem",
    [
        pub_pem(ec.generate_private_key(ec.SECP384R1())),
        pub_pem(ed25519.Ed25519PrivateKey.generate()),
        b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
        b"not pem at all",
    ],
)
def test_unusable_anchors_refused(pem: bytes) -> None:
    with pytest.raises(GbcsUsageError):
        load_anchor(pem)


def test_read_anchor_missing_file(tmp_path: Path) -> None:
    with pytest.raises(GbcsUsageError) as info:
        read_anchor(tmp_path / "nope.pem")
    assert "cannot read trust anchor" in str(info.value)


def test_store_is_an_immutable_mapping() -> None:
    assert isinstance(KEY, ec.EllipticCurvePrivateKey)
    store = TrustStore({SUPPLIER: KEY.public_key()})
    assert SUPPLIER in store and OTHER not in store
    assert len(store) == 1 and list(store) == [SUPPLIER]
    assert store.get(OTHER) is None
    other_key = ec.generate_private_key(ec.SECP256R1()).public_key()
    bigger = store.with_anchor(OTHER, other_key)
    assert len(bigger) == 2 and len(store) == 1
    with pytest.raises(TypeError):
        store[OTHER] = other_key  # type: ignore[index]
    with pytest.raises(GbcsUsageError):
        TrustStore({"90B3D51F30010000": KEY.public_key()})  # type: ignore[dict-item]
    with pytest.raises(GbcsUsageError):
        TrustStore({SUPPLIER: ec.generate_private_key(ec.SECP384R1()).public_key()})


def test_from_pem_refuses_a_certificate_for_another_entity() -> None:
    assert SUPPLIER in TrustStore.from_pem({SUPPLIER: CERT})
    with pytest.raises(GbcsUsageError) as info:
        TrustStore.from_pem({OTHER: CERT})
    assert str(info.value) == "anchor configured for 1122334455667788 names entity 90B3D51F30010000"


def test_from_files_and_certificates(tmp_path: Path) -> None:
    _, other_cert = generate_supplier_identity(OTHER)
    (tmp_path / "other.pem").write_bytes(other_cert)
    store = TrustStore.from_files({SUPPLIER: DATA / "supplier-90b3d51f30010000-ds.pem", OTHER: tmp_path / "other.pem"})
    assert set(store) == {SUPPLIER, OTHER}
    assert set(TrustStore.from_certificates([CERT, other_cert])) == {SUPPLIER, OTHER}
    assert isinstance(KEY, ec.EllipticCurvePrivateKey)
    with pytest.raises(GbcsUsageError):
        TrustStore.from_certificates([pub_pem(KEY)])


def test_certificates_carry_their_gbcs_role() -> None:
    from gateway.gbcs.trust import load_anchor

    assert load_anchor(CERT).role == "02"  # the reference supplier certificate
    _, acb = generate_supplier_identity(OTHER, role="04")
    assert load_anchor(acb).role == "04"
    assert load_anchor(pub_pem(KEY)).role is None


def test_load_trust_refuses_a_non_supplier_certificate_unless_allowed(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    from gateway.activation import load_trust
    from gateway.config import Config, SupplierConfig
    from gateway.gbcs.errors import GbcsUsageError

    _, acb = generate_supplier_identity(OTHER, role="04")
    (tmp_path / "acb.pem").write_bytes(acb)
    supplier = SupplierConfig(id="1122334455667788", certificate=tmp_path / "acb.pem")
    with pytest.raises(GbcsUsageError, match=r"OU=04 \(Access Control Broker\), not Supplier"):
        load_trust(Config(suppliers=(supplier,)))
    lab = SupplierConfig(id=supplier.id, certificate=supplier.certificate, allow_any_role=True)
    with caplog.at_level("WARNING"):
        assert set(load_trust(Config(suppliers=(lab,)))) == {OTHER}
    assert "allow_any_role = true" in caplog.text


def test_refusals_from_files_name_the_file(tmp_path: Path) -> None:
    p384 = tmp_path / "p384.pem"
    p384.write_bytes(pub_pem(ec.generate_private_key(ec.SECP384R1())))
    with pytest.raises(GbcsUsageError) as info:
        read_anchor(p384)
    assert str(info.value).startswith(f"{p384}: the public key is an EC key on secp384r1, not ECDSA P-256; ")
    anchor = read_anchor(DATA / "supplier-90b3d51f30010000-ds.pem")
    assert anchor.source == str(DATA / "supplier-90b3d51f30010000-ds.pem") and load_anchor(CERT).source is None
    with pytest.raises(GbcsUsageError) as mismatch:
        TrustStore.from_files({OTHER: DATA / "supplier-90b3d51f30010000-ds.pem"})
    assert str(mismatch.value) == f"{anchor.source}: anchor configured for 1122334455667788 names entity 90B3D51F30010000"


def test_load_trust_names_the_supplier_file_it_cannot_use(tmp_path: Path) -> None:
    from gateway.activation import load_trust
    from gateway.config import Config, SupplierConfig

    (tmp_path / "key.pem").write_bytes((DATA / "supplier-90b3d51f30010000-ds.key").read_bytes())
    supplier = SupplierConfig(id="90B3D51F30010000", certificate=tmp_path / "key.pem")
    with pytest.raises(GbcsUsageError) as info:
        load_trust(Config(suppliers=(supplier,)))
    assert str(info.value).startswith(f"{tmp_path / 'key.pem'}: holds a private key, where a certificate or public key belongs; ")
    missing = SupplierConfig(id="90B3D51F30010000", certificate=tmp_path / "missing.pem")
    with pytest.raises(GbcsUsageError, match=f"cannot read trust anchor {tmp_path / 'missing.pem'}: No such file"):
        load_trust(Config(suppliers=(missing,)))
    good = SupplierConfig(id="90B3D51F30010000", certificate=DATA / "supplier-90b3d51f30010000-ds.pem")
    assert set(load_trust(Config(suppliers=(good,)))) == {SUPPLIER}
