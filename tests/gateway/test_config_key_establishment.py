"""The [key_establishment] table and [[device]] security (gateway/config.py): read once
into the KeConfig the responder takes, every refusal naming the key and the fix."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
import zigpy.types as zt

from gateway.config import ConfigError, load_config
from gateway.se import ecqv
from gateway.se.ke_server import KeConfig
from gateway.se.security import SecurityMode
from gateway.se.suites import suite

HUB = bytes.fromhex("000d6f0000ab0001")  # certificate (written) order
ISSUER = bytes.fromhex("5445535453454341")
CURVE = {1: "163k1", 2: "283k1"}


def lab(tmp_path: Path, number: int, *, hex_files: bool = False, seed: int = 3) -> dict[str, object]:
    """A CA, the hub's certificate and key for suite ``number`` in files; the table's keys."""
    rng = random.Random(seed + number)
    s = suite(number)
    ca = ecqv.new_key_pair(s, rng.randbytes)
    cert, key = ecqv.issue(s, ca, HUB, ISSUER, rng.randbytes)
    c = CURVE[number]
    cert_file, key_file = tmp_path / f"hub-{c}.cert", tmp_path / f"hub-{c}.key"
    if hex_files:
        cert_file.write_text(cert.raw.hex() + "\n")
        key_file.write_text(" ".join(f"{b:02x}" for b in key) + "\n")
    else:
        cert_file.write_bytes(cert.raw)
        key_file.write_bytes(key)
    return {
        f"certificate_{c}": cert_file.name,
        f"private_key_{c}": key_file.name,
        f"ca_public_keys_{c}": [ca.public_key.hex()],
        "_cert": cert.raw,
        "_key": key,
        "_ca": ca.public_key,
    }


def write(tmp_path: Path, table: dict[str, object], extra: str = "") -> Path:
    lines = ["[key_establishment]"]
    for k, v in table.items():
        if k.startswith("_"):
            continue
        if isinstance(v, list):
            lines.append(f"{k} = [{', '.join(repr(x) if isinstance(x, int) else chr(34) + x + chr(34) for x in v)}]")
        else:
            lines.append(f'{k} = "{v}"')
    path = tmp_path / "config.toml"
    path.write_text(extra + "\n".join(lines) + "\n")
    return path


def public(table: dict[str, object]) -> dict[str, object]:
    return {k: v for k, v in table.items() if not k.startswith("_")}


def test_an_existing_config_loads_unchanged_without_key_establishment(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text('[[device]]\nieee = "00:db:12:34:56:78:90:a0"\nkind = "hcalcs"\n')
    config = load_config(path)
    assert config.key_establishment is None
    assert config.devices[0].security is SecurityMode.AUTO
    assert config.security_modes() == {}


@pytest.mark.parametrize("hex_files", [False, True])
def test_both_suites_load_into_the_responders_config(tmp_path: Path, hex_files: bool) -> None:
    s1, s2 = lab(tmp_path, 1, hex_files=hex_files), lab(tmp_path, 2, hex_files=hex_files)
    path = write(tmp_path, {"suites": [2, 1], **public(s1), **public(s2)})
    ke = load_config(path).key_establishment
    assert ke is not None and isinstance(ke.ke_config, KeConfig)
    assert ke.suites == (2, 1) and ke.ke_config.suite_bitmap == 0x0003
    for number, lab_ in ((1, s1), (2, s2)):
        identity = ke.ke_config.identities[number]
        assert identity.certificate.raw == lab_["_cert"] and identity.private_key == lab_["_key"]
        # a bare CA key is the CA of the hub certificate's own issuer
        assert identity.ca_key(ISSUER) == lab_["_ca"]
        identity.check_key()
        assert ke.files[number] == (tmp_path / f"hub-{CURVE[number]}.cert", tmp_path / f"hub-{CURVE[number]}.key")


def test_a_ca_with_its_own_issuer_and_the_default_suites(tmp_path: Path) -> None:
    s1 = lab(tmp_path, 1)
    other_ca = "02" + "11" * 21
    table = {**public(s1), "ca_public_keys_163k1": [s1["_ca"].hex(), f"0011223344556677:{other_ca}"]}  # type: ignore[union-attr]
    ke = load_config(write(tmp_path, table)).key_establishment
    assert ke is not None and ke.suites == (1,)  # unset: the suites whose keys are given
    identity = ke.ke_config.identities[1]
    assert identity.ca_key(bytes.fromhex("0011223344556677")) == bytes.fromhex(other_ca)
    assert identity.ca_key(ISSUER) == s1["_ca"]


def refusal(tmp_path: Path, table: dict[str, object], extra: str = "") -> str:
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, table, extra))
    return str(info.value)


def test_a_suite_offered_without_its_certificate_is_refused(tmp_path: Path) -> None:
    s1 = lab(tmp_path, 1)
    text = refusal(tmp_path, {"suites": [2, 1], **public(s1)})
    assert "key_establishment.certificate_283k1 = None: missing: suite 2 is offered in suites" in text
    assert "give key_establishment.certificate_283k1, key_establishment.private_key_283k1, key_establishment.ca_public_keys_283k1" in text


def test_missing_file_wrong_length_and_bad_hex_are_named(tmp_path: Path) -> None:
    s1 = lab(tmp_path, 1)
    text = refusal(tmp_path, {**public(s1), "certificate_163k1": "nowhere.cert"})
    assert "key_establishment.certificate_163k1" in text and "no such file: the hub's suite-1 implicit certificate (48 bytes, raw or hex" in text

    (tmp_path / "short.key").write_bytes(bytes(20))
    text = refusal(tmp_path, {**public(s1), "private_key_163k1": "short.key"})
    assert "key_establishment.private_key_163k1" in text and "the hub's suite-1 private key: 20 bytes, needs 21 bytes (raw, or 42 hex digits)" in text

    (tmp_path / "bad.key").write_text("00" * 20 + "zz")
    text = refusal(tmp_path, {**public(s1), "private_key_163k1": "bad.key"})
    assert "key_establishment.private_key_163k1" in text and "'z' at hex digit 40 is not hex" in text and "nor raw" in text

    (tmp_path / "odd.key").write_text("00" * 22)
    text = refusal(tmp_path, {**public(s1), "private_key_163k1": "odd.key"})
    assert "the hub's suite-1 private key: hex text of 22 bytes, needs 21 bytes (raw, or 42 hex digits)" in text


def test_bad_ca_public_keys_and_suites_are_refused(tmp_path: Path) -> None:
    s1 = lab(tmp_path, 1)
    text = refusal(tmp_path, {**public(s1), "ca_public_keys_163k1": ["04" + "11" * 21]})
    assert "key_establishment.ca_public_keys_163k1[0]" in text and "22 bytes starting 04" in text
    text = refusal(tmp_path, {**public(s1), "ca_public_keys_163k1": ["02zz"]})
    assert "the point is not hex" in text
    text = refusal(tmp_path, {**public(s1), "ca_public_keys_163k1": ["00112233:02" + "11" * 21]})
    assert "ca_public_keys_163k1[0]" in text and "issuer: 8 hex digits, expected 16" in text
    text = refusal(tmp_path, {**public(s1), "ca_public_keys_163k1": []})
    assert "expected a non-empty list" in text
    for bad in ([3], [1, 1], []):
        text = refusal(tmp_path, {"suites": bad, **public(s1)})
        assert "key_establishment.suites" in text and "e.g. [2, 1]" in text


def test_a_certificate_no_trust_center_could_use_is_refused_with_its_key(tmp_path: Path) -> None:
    s1 = lab(tmp_path, 1)
    (tmp_path / "zero.cert").write_bytes(bytes(48))  # the right length, point prefix 00
    text = refusal(tmp_path, {**public(s1), "certificate_163k1": "zero.cert"})
    assert "key_establishment.certificate_163k1" in text and "hub certificate for suite 1" in text


def test_device_security_feeds_the_registry_modes(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text(
        '[[device]]\nieee = "00:db:12:34:56:78:90:a0"\nkind = "hcalcs"\nsecurity = "se"\n'
        '[[device]]\nieee = "00:db:12:34:56:78:90:a1"\nkind = "ppmid"\nsecurity = "install-code"\n'
        '[[device]]\nieee = "00:db:12:34:56:78:90:a2"\nkind = "ppmid"\n'
    )
    config = load_config(path)
    assert [d.security for d in config.devices] == [SecurityMode.SE, SecurityMode.INSTALL_CODE, SecurityMode.AUTO]
    assert config.security_modes() == {
        zt.EUI64.convert("00:db:12:34:56:78:90:a0"): SecurityMode.SE,
        zt.EUI64.convert("00:db:12:34:56:78:90:a1"): SecurityMode.INSTALL_CODE,
    }
    path.write_text('[[device]]\nieee = "00:db:12:34:56:78:90:a0"\nkind = "hcalcs"\nsecurity = "auto"\n')
    with pytest.raises(ConfigError, match=r'device\[0\].security = .auto.: expected "se"'):
        load_config(path)
