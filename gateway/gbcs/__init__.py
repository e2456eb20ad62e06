"""GBCS General Signing APDUs, CS06 Activate Firmware, verification and signing.

Sans-I/O: bytes in, typed values and verdicts out. ``parse_command`` reads a message
(raw, hex or base64 text, bare or General Ciphered); ``verify_activation`` decides whether a
CS06 command may activate a device's held image; ``sign_activation`` builds one.
Every refusal is a ``GbcsError``.

Modules: ``errors`` (the error base), ``cursor`` (byte reading), ``der`` (strict DER),
``ids`` (entity ids), ``codes`` (CRA flags, message/response/alert codes, reasons),
``apdu`` (General Signing / Ciphering), ``cs06`` (Activate Firmware body),
``command`` (whole messages), ``trust`` (anchors), ``verify``, ``sign``.
"""

from .apdu import CosemDateTime, GeneralCiphering, GeneralSigning, SupplementaryRemoteParty
from .codes import REASON_CODES, AlertCode, CraFlag, MessageCode, Reason, ResponseCode, known_message_code, message_label
from .command import (
    SignedCommand,
    decode_hex_text,
    decode_message_file,
    encode_hex_text,
    parse_command,
    parse_command_file,
)
from .cs06 import CANCELLATION_TIME, ActivateFirmware, iso_utc
from .errors import (
    GbcsError,
    GbcsUsageError,
    MalformedCommand,
    TrailingBytes,
    TruncatedCommand,
    UnknownCode,
)
from .ids import EntityId
from .sign import generate_supplier_identity, load_signing_key, sign_activation, sign_general_signing
from .trust import TrustAnchor, TrustStore, load_anchor, read_anchor
from .verify import Verdict, signature_valid, verify_activation, verify_activation_bytes

__all__ = [
    "CANCELLATION_TIME",
    "REASON_CODES",
    "ActivateFirmware",
    "AlertCode",
    "CosemDateTime",
    "CraFlag",
    "EntityId",
    "GbcsError",
    "GbcsUsageError",
    "GeneralCiphering",
    "GeneralSigning",
    "MalformedCommand",
    "MessageCode",
    "Reason",
    "ResponseCode",
    "SignedCommand",
    "SupplementaryRemoteParty",
    "TrailingBytes",
    "TruncatedCommand",
    "TrustAnchor",
    "TrustStore",
    "UnknownCode",
    "Verdict",
    "decode_hex_text",
    "decode_message_file",
    "encode_hex_text",
    "generate_supplier_identity",
    "iso_utc",
    "known_message_code",
    "load_anchor",
    "load_signing_key",
    "message_label",
    "parse_command",
    "parse_command_file",
    "read_anchor",
    "sign_activation",
    "sign_general_signing",
    "signature_valid",
    "verify_activation",
    "verify_activation_bytes",
]
