"""gateway/gbcs/keys.py: the one ECDSA P-256 stack (PEM keys, certificates, r‖s) for images and commands."""

from __future__ import annotations

import ast
import datetime as dt
import os
from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from cryptography.x509.oid import NameOID

from gateway.gbcs.errors import GbcsUsageError
from gateway.gbcs.keys import (
    FIX_SIGNING,
    FIX_VERIFYING,
    PEM_LIMIT,
    KeyRefused,
    load_signing_key,
    load_verifying_pem,
    p256_private_key,
    p256_public_key,
    read_signing_key,
    read_verifying_pem,
    sign_raw,
    signature_valid,
)

ROOT = Path(__file__).resolve().parents[3]
DATA = Path(__file__).parents[2] / "data" / "gbcs"
KEY_FILE = DATA / "supplier-90b3d51f30010000-ds.key"
CERT_FILE = DATA / "supplier-90b3d51f30010000-ds.pem"
P256_ORDER = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551

PKCS8 = serialization.PrivateFormat.PKCS8
PEM = serialization.Encoding.PEM
NONE = serialization.NoEncryption()


def private_pem(key: ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey, fmt: serialization.PrivateFormat = PKCS8,
                encryption: serialization.KeySerializationEncryption = NONE) -> bytes:
    return key.private_bytes(PEM, fmt, encryption)


def public_pem(key: ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def certificate_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test")])
    start = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(1).not_valid_before(start).not_valid_after(start + dt.timedelta(days=1))
            .sign(key, hashes.SHA256()))
    return cert.public_bytes(PEM)


P256 = ec.generate_private_key(ec.SECP256R1())
P384 = ec.generate_private_key(ec.SECP384R1())
ED = ed25519.Ed25519PrivateKey.generate()


# --------------------------------------------------------------------------- the error


def test_key_refused_is_a_gbcs_usage_error_and_a_value_error() -> None:
    exc = KeyRefused("what is wrong", source="a.pem", fix="what to do")
    assert isinstance(exc, GbcsUsageError) and isinstance(exc, ValueError)
    assert str(exc) == "a.pem: what is wrong; what to do"
    assert (exc.problem, exc.source, exc.fix) == ("what is wrong", "a.pem", "what to do")
    assert str(KeyRefused("bare")) == "bare"


# --------------------------------------------------------------------------- signing keys


def test_the_reference_supplier_key_loads_in_pkcs8_and_sec1() -> None:
    key = load_signing_key(KEY_FILE.read_bytes())
    assert isinstance(key.curve, ec.SECP256R1)
    assert read_signing_key(KEY_FILE).private_numbers() == key.private_numbers()
    sec1 = private_pem(key, serialization.PrivateFormat.TraditionalOpenSSL)
    assert b"BEGIN EC PRIVATE KEY" in sec1
    assert load_signing_key(sec1).private_numbers() == key.private_numbers()


# --------------------------------------------------------------------------- verifying keys


def test_certificates_and_public_keys_give_the_key() -> None:
    reference = load_verifying_pem(CERT_FILE.read_bytes())
    assert reference.certificate is not None  # expired in 2025: dates are not checked
    assert reference.public_key.public_numbers() == load_signing_key(KEY_FILE.read_bytes()).public_key().public_numbers()
    bare = load_verifying_pem(public_pem(P256))
    assert bare.certificate is None and bare.public_key.public_numbers() == P256.public_key().public_numbers()
    # A file holding a certificate and its key is read for the certificate.
    both = load_verifying_pem(certificate_pem(P256) + private_pem(P256))
    assert both.certificate is not None and both.public_key.public_numbers() == P256.public_key().public_numbers()
    assert read_verifying_pem(CERT_FILE).public_key.public_numbers() == reference.public_key.public_numbers()


SIGNING_REFUSALS = {
    "certificate": (CERT_FILE.read_bytes(), "not an unencrypted PEM private key (it holds a certificate, which has only the public key)"),
    "public-key": (public_pem(P256), "not an unencrypted PEM private key (it holds a public key)"),
    "garbage": (b"garbage\n", "not an unencrypted PEM private key (no PEM private key block in it)"),
    "encrypted": (private_pem(P256, encryption=serialization.BestAvailableEncryption(b"pw")),
                  "not an unencrypted PEM private key (Password was not given but private key is encrypted)"),
    "p384": (private_pem(P384), "the private key is an EC key on secp384r1, not ECDSA P-256"),
    "ed25519": (private_pem(ED), "the private key is a key of type Ed25519PrivateKey, not ECDSA P-256"),
}
VERIFYING_REFUSALS = {
    "private-key": (KEY_FILE.read_bytes(), "holds a private key, where a certificate or public key belongs"),
    "junk": (b"not a key\n", "neither a PEM certificate nor a PEM public key"),
    "p384": (public_pem(P384), "the public key is an EC key on secp384r1, not ECDSA P-256"),
    "ed25519": (public_pem(ED), "the public key is a key of type Ed25519PublicKey, not ECDSA P-256"),
    "p384-certificate": (certificate_pem(P384), "the certificate's key is an EC key on secp384r1, not ECDSA P-256"),
}
REFUSALS = [
    pytest.param(load_signing_key, read_signing_key, FIX_SIGNING, pem, problem, id=f"signing-{name}")
    for name, (pem, problem) in SIGNING_REFUSALS.items()
] + [
    pytest.param(load_verifying_pem, read_verifying_pem, FIX_VERIFYING, pem, problem, id=f"verifying-{name}")
    for name, (pem, problem) in VERIFYING_REFUSALS.items()
]


@pytest.mark.parametrize(("load", "read", "fix", "pem", "problem"), REFUSALS)
def test_refusals_name_the_file_the_problem_and_the_fix(
    tmp_path: Path, load: Callable[[bytes], object], read: Callable[[Path], object], fix: str, pem: bytes, problem: str
) -> None:
    with pytest.raises(KeyRefused) as bare:
        load(pem)
    assert str(bare.value) == f"{problem}; {fix}"
    path = tmp_path / "key.pem"
    path.write_bytes(pem)
    with pytest.raises(KeyRefused) as named:
        read(path)
    assert str(named.value) == f"{path}: {problem}; {fix}"
    assert (named.value.problem, named.value.source, named.value.fix) == (problem, str(path), fix)


def test_a_broken_pem_block_says_what_the_library_said(tmp_path: Path) -> None:
    path = tmp_path / "broken.pem"
    path.write_text("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")
    with pytest.raises(KeyRefused) as info:
        read_verifying_pem(path)
    assert str(info.value).startswith(f"{path}: unreadable PEM (")
    assert str(info.value).endswith(FIX_VERIFYING)


# --------------------------------------------------------------------------- files


@pytest.mark.parametrize("kind", ["missing", "directory", "fifo", "huge"])
def test_unusable_files_are_refused_by_name_without_blocking(tmp_path: Path, kind: str) -> None:
    path = tmp_path / "key.pem"
    if kind == "directory":
        path.mkdir()
    elif kind == "fifo":
        os.mkfifo(path)  # opened non-blocking by gateway.files: refused at once, never read
    elif kind == "huge":
        path.write_bytes(b"x" * (PEM_LIMIT + 1))
    expected = {
        "missing": f"cannot read private key {path}: No such file or directory",
        "directory": f"private key {path} is not a regular file (a directory)",
        "fifo": f"private key {path} is not a regular file (a FIFO)",
        "huge": f"private key {path} is over {PEM_LIMIT} bytes",
    }[kind]
    with pytest.raises(KeyRefused) as signing:
        read_signing_key(path)
    assert str(signing.value).startswith(expected)
    with pytest.raises(KeyRefused) as verifying:
        read_verifying_pem(path, "supplier certificate")
    assert str(verifying.value).startswith(expected.replace("private key", "supplier certificate"))


# --------------------------------------------------------------------------- P-256 checks


def test_p256_checks_take_the_right_keys_and_certificates() -> None:
    assert p256_private_key(P256, "k") is P256
    assert p256_public_key(P256.public_key(), "k") is not None
    cert = x509.load_pem_x509_certificate(CERT_FILE.read_bytes())
    assert p256_public_key(cert, "k").public_numbers() == load_verifying_pem(CERT_FILE.read_bytes()).public_key.public_numbers()


@pytest.mark.parametrize(
    ("key", "private", "problem"),
    [
        (P256, False, "k is a private key, not a public key or certificate"),
        (P256.public_key(), True, "k is a public key, not a private key"),
        (P384.public_key(), False, "k is an EC key on secp384r1, not ECDSA P-256"),
        (P384, True, "k is an EC key on secp384r1, not ECDSA P-256"),
        (ED, True, "k is a key of type Ed25519PrivateKey, not ECDSA P-256"),
    ],
)
def test_p256_checks_say_what_the_key_is(key: object, private: bool, problem: str) -> None:
    check = p256_private_key if private else p256_public_key
    with pytest.raises(KeyRefused) as info:
        check(key, "k", source="f.pem")
    assert str(info.value) == f"f.pem: {problem}; {FIX_SIGNING if private else FIX_VERIFYING}"


def test_an_object_that_is_no_key_is_a_type_error() -> None:
    with pytest.raises(TypeError, match="expected a key or certificate, got bytes"):
        p256_public_key(b"not a key", "k")
    with pytest.raises(TypeError):
        p256_private_key("not a key", "k")


# --------------------------------------------------------------------------- r‖s


def test_sign_raw_is_r_s_that_cryptography_verifies_independently() -> None:
    data = b"the signed bytes"
    sig = sign_raw(P256, data)
    assert len(sig) == 64
    r, s = int.from_bytes(sig[:32], "big"), int.from_bytes(sig[32:], "big")
    P256.public_key().verify(encode_dss_signature(r, s), data, ec.ECDSA(hashes.SHA256()))
    assert signature_valid(P256.public_key(), data, sig)


def test_signature_valid_refuses_what_is_not_the_signature() -> None:
    data = b"the signed bytes"
    sig = sign_raw(P256, data)
    other = ec.generate_private_key(ec.SECP256R1()).public_key()
    assert not signature_valid(P256.public_key(), data + b"!", sig)
    assert not signature_valid(other, data, sig)
    assert not signature_valid(P256.public_key(), data, sig[:63])
    assert not signature_valid(P256.public_key(), data, sig + b"\x00")
    assert not signature_valid(P256.public_key(), data, bytes(64))  # r = s = 0
    assert not signature_valid(P256.public_key(), data, b"\xff" * 64)  # r, s above the order
    flipped = bytearray(sig)
    flipped[10] ^= 1
    assert not signature_valid(P256.public_key(), data, bytes(flipped))


def test_high_s_verifies() -> None:
    # GBCS does not ask for low-S: n - s is the same supplier-signed message (verify.py).
    data = b"the signed bytes"
    sig = sign_raw(P256, data)
    s = int.from_bytes(sig[32:], "big")
    mirrored = sig[:32] + (P256_ORDER - s).to_bytes(32, "big")
    assert mirrored != sig and signature_valid(P256.public_key(), data, mirrored)


def test_signing_and_verifying_keys_are_checked() -> None:
    with pytest.raises(KeyRefused, match="the signing key is an EC key on secp384r1"):
        sign_raw(P384, b"x")
    with pytest.raises(KeyRefused, match="the verifying key is an EC key on secp384r1"):
        signature_valid(P384.public_key(), b"x", bytes(64))


# --------------------------------------------------------------------------- one stack


def test_the_old_names_are_this_stack() -> None:
    from gateway import image_build
    from gateway.gbcs import sign, trust, verify

    assert sign.load_signing_key is load_signing_key and sign.sign_raw is sign_raw
    assert verify.signature_valid is signature_valid and trust.p256_public_key is p256_public_key
    assert image_build.load_signing_key is read_signing_key


# Calls that load PEM or build/take apart ECDSA signatures: only keys.py makes them. The
# simulated devices (radios/sim) keep their own on purpose and are not looked at.
_CRYPTO_CALLS = {
    "load_pem_private_key", "load_pem_public_key", "load_pem_x509_certificate",
    "load_der_private_key", "load_der_public_key", "load_der_x509_certificate",
    "encode_dss_signature", "decode_dss_signature", "ECDSA",
}


def crypto_calls(source: str, filename: str = "<test>") -> list[tuple[int, str]]:
    """(line, name) of each use or import of one of _CRYPTO_CALLS."""
    found = []
    for node in ast.walk(ast.parse(source, filename=filename)):
        names = [alias.name for alias in node.names] if isinstance(node, ast.ImportFrom) else [
            node.attr if isinstance(node, ast.Attribute) else node.id if isinstance(node, ast.Name) else ""]
        found += [(node.lineno, name) for name in names if name in _CRYPTO_CALLS]
    return sorted(found)


def test_the_scan_sees_calls_and_imports() -> None:
    source = "from x import load_pem_private_key as l\ny.load_pem_public_key(b'')\nECDSA(h)\nz = 1\n"
    assert crypto_calls(source) == [(1, "load_pem_private_key"), (2, "load_pem_public_key"), (3, "ECDSA")]


def test_no_other_module_of_the_gateway_loads_keys_or_handles_ecdsa() -> None:
    found = []
    for package in ("gateway", "han_ota"):
        for path in sorted((ROOT / package).rglob("*.py")):
            if path == ROOT / "gateway" / "gbcs" / "keys.py":
                continue
            found += [f"{path.relative_to(ROOT)}:{line} {name}" for line, name in crypto_calls(path.read_text(), str(path))]
    assert found == []
