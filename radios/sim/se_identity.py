"""A simulated SE device's key-establishment identity, from its spec (``security=se``).

The spec names three values, each hex or a file holding raw bytes or hex (as the hub's
``[key_establishment]`` files): ``cbke_cert`` (its implicit certificate for
``cbke_suite``), ``cbke_key`` (its private key) and ``cbke_ca`` (the CA public key it
trusts; the trusted issuer id is the issuer field of its own certificate, one lab CA
issuing hub and devices alike). The faults change what the device holds:

* ``unknown-issuer``: at boot the device makes a CA of its own and issues itself a
  certificate from it (issuer id flipped), still trusting the lab CA for the hub;
* ``bad-certificate``: the lab gives a certificate whose subject is *not* the device
  (``han-ota cbke issue --subject OTHER``); without this fault such a certificate is
  refused as a configuration mistake;
* ``bad-mac`` and ``silent`` act in the key establishment client.
"""

from __future__ import annotations

from pathlib import Path
import random
import re

import zigpy.types as t

from eui64 import Eui64

from .se_keys import SUITES, CertificateError, Credentials, issue, make_ca, parse_certificate, reconstruct_public_key

__all__ = ["check_identity", "credentials_for", "ieee_bytes", "read_blob"]

_HEX = re.compile(r"(?:[0-9a-fA-F]{2})+")


def read_blob(text: str) -> bytes:
    """Hex digits, or a file holding raw bytes or hex. ValueError/OSError if neither."""
    text = text.strip()
    if _HEX.fullmatch(text):
        return bytes.fromhex(text)
    data = Path(text).read_bytes()
    stripped = data.strip()
    if _HEX.fullmatch(stripped.decode("ascii", "replace")):
        return bytes.fromhex(stripped.decode("ascii"))
    return data


def ieee_bytes(ieee: t.EUI64) -> bytes:
    """Certificate (written) order, most significant byte first: eui64's one swap."""
    return Eui64.from_air(ieee).written


def check_identity(suite_number: int, cert_text: str, key_text: str, ca_text: str, ieee: t.EUI64, fault: str | None) -> Credentials:
    """The credentials the spec names, checked for length and subject (no curve arithmetic)."""
    suite = SUITES[suite_number]
    cert_raw = read_blob(cert_text)
    cert = parse_certificate(suite, cert_raw)
    key = read_blob(key_text)
    if len(key) != suite.curve.scalar_bytes:
        raise ValueError(f"cbke_key is {len(key)} bytes, suite {suite_number} keys are {suite.curve.scalar_bytes}")
    ca = read_blob(ca_text)
    if len(ca) != suite.curve.point_bytes:
        raise ValueError(f"cbke_ca is {len(ca)} bytes, suite {suite_number} public keys are {suite.curve.point_bytes}")
    ours = ieee_bytes(ieee)
    if fault == "bad-certificate":
        if cert.subject == ours:
            raise ValueError("cbke_fail=bad-certificate needs a cbke_cert whose subject is not the device")
    elif cert.subject != ours:
        raise ValueError(f"cbke_cert subject {cert.subject.hex()} is not the device {ours.hex()}")
    return Credentials(suite, cert_raw, int.from_bytes(key, "big"), ca, cert.issuer)


def credentials_for(
    suite_number: int,
    cert_text: str,
    key_text: str,
    ca_text: str,
    ieee: t.EUI64,
    fault: str | None,
    rng: random.Random,
) -> Credentials:
    """What the device holds at boot: the spec's credentials, the key checked against the
    certificate by ECQV reconstruction, or the self-issued ones of ``unknown-issuer``."""
    creds = check_identity(suite_number, cert_text, key_text, ca_text, ieee, fault)
    suite, curve = creds.suite, creds.suite.curve
    q = reconstruct_public_key(parse_certificate(suite, creds.certificate), creds.ca_public_key)
    if curve.multiply(creds.private_key, curve.g) != q:
        raise CertificateError("cbke_key is not the private key of cbke_cert under cbke_ca")
    if fault == "unknown-issuer":
        rogue = issue(suite, make_ca(suite, rng), ieee_bytes(ieee), bytes(b ^ 0xFF for b in creds.ca_issuer), rng)
        return Credentials(suite, rogue.certificate, rogue.private_key, creds.ca_public_key, creds.ca_issuer)
    return creds
