"""Signing: CS06 commands laid out exactly as the reference data, and test identities.

This is the supplier's side, for the bench: the gateway itself only verifies. Keys and
r‖s signatures come from ``keys`` (``load_signing_key``, ``sign_raw`` are re-exported
here, where callers have always found them). Output
reproduces the reference vectors byte for byte except the signature (ECDSA is
randomised) and the General Ciphering MAC, which we cannot compute (it needs the
Access Control Broker's key) and set to 12 zero bytes.
"""

from __future__ import annotations

import datetime as dt
import secrets

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.name import _ASN1Type  # no public name for the BIT STRING type
from cryptography.x509.oid import NameOID

from .apdu import (
    CosemDateTime,
    SupplementaryRemoteParty,
    encode_general_ciphering,
    encode_general_signing,
    encode_signed_data,
)
from .codes import CraFlag, MessageCode
from .cs06 import CANCELLATION_TIME, ActivateFirmware, encode_activate_firmware
from .errors import GbcsUsageError
from .ids import EntityId
from .keys import load_signing_key as load_signing_key, sign_raw as sign_raw  # the names callers know
from .trust import SUPPLIER_ROLE


def sign_general_signing(
    key: ec.EllipticCurvePrivateKey | None,
    *,
    cra_flag: CraFlag,
    counter: int,
    originator: EntityId,
    recipient: EntityId,
    message_code: MessageCode | int,
    content: bytes,
    date_time: CosemDateTime | None = None,
    supplementary: SupplementaryRemoteParty | None = None,
) -> bytes:
    """Any General Signing APDU, signed by ``key`` (``None``: unsigned, for tests)."""
    signed = encode_signed_data(
        cra_flag=cra_flag,
        counter=counter,
        originator=originator,
        recipient=recipient,
        message_code=message_code,
        content=content,
        date_time=date_time,
        supplementary=supplementary,
    )
    return encode_general_signing(signed, None if key is None else sign_raw(key, signed))


def sign_activation(
    key: ec.EllipticCurvePrivateKey,
    *,
    originator: EntityId,
    device: EntityId,
    image_hash: bytes,
    counter: int,
    execution_time: dt.datetime | None = None,
    cancel: bool = False,
    ciphered: bool = False,
) -> bytes:
    """A signed CS06 Activate Firmware command, bare or General Ciphered (zero MAC).

    ``execution_time`` must be timezone-aware (it is sent as UTC) with whole seconds;
    ``cancel`` sends the 9999-12-31T23:59:59Z sentinel instead and excludes it.
    """
    if cancel and execution_time is not None:
        raise GbcsUsageError("give an execution time or cancel, not both")
    if execution_time is not None:
        if execution_time.tzinfo is None or execution_time.utcoffset() is None:
            raise GbcsUsageError("execution time must be timezone-aware (it is sent as UTC)")
        execution_time = execution_time.astimezone(dt.timezone.utc)
    body = ActivateFirmware(bytes(image_hash), counter, CANCELLATION_TIME if cancel else execution_time)
    apdu = sign_general_signing(
        key,
        cra_flag=CraFlag.COMMAND,
        counter=counter,
        originator=originator,
        recipient=device,
        message_code=MessageCode.ACTIVATE_FIRMWARE,
        content=encode_activate_firmware(body),
    )
    return encode_general_ciphering(apdu) if ciphered else apdu


def generate_supplier_identity(
    entity_id: EntityId,
    *,
    common_name: str | None = None,
    role: str = SUPPLIER_ROLE,
    now: dt.datetime | None = None,
    days: int = 3650,
) -> tuple[bytes, bytes]:
    """A new P-256 key and a self-signed certificate naming ``entity_id``.

    Returns (PKCS#8 private key PEM, certificate PEM). The subject mirrors the
    reference supplier certificate (CN, OU = role 02, x500UniqueIdentifier =
    ``00 || entity id``) so ``load_anchor`` finds the entity id in it. ``now`` is
    the start of validity (default: the current time); devices ignore the dates.
    ``role`` other than Supplier is for tests of the role check (e.g. ``"04"``, ACB).
    """
    start = (now or dt.datetime.now(dt.timezone.utc)).replace(microsecond=0)
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, common_name or f"SUPPLIER {entity_id}"),
            x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, role),
            x509.NameAttribute(NameOID.X500_UNIQUE_IDENTIFIER, b"\x00" + entity_id.raw, _ASN1Type.BitString),
        ]
    )
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(secrets.randbits(127) | 1)
        .not_valid_before(start)
        .not_valid_after(start + dt.timedelta(days=days))
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=False,
                crl_sign=False, encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return key_pem, cert.public_bytes(serialization.Encoding.PEM)
