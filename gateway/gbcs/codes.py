"""GBCS code tables: CRA flags, message codes, response codes, alert codes, and the
refusal reasons of ``verify_activation`` with the codes each one maps to.

Codes are the ones named in tests/data/gbcs/VECTORS.md ("Alert codes worth knowing"
and the CS06 response codes); nothing here is invented beyond that list.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from types import MappingProxyType


class CraFlag(enum.IntEnum):
    """First byte of a General Signing transaction id: what kind of message this is."""

    COMMAND = 0x01
    RESPONSE = 0x02
    ALERT = 0x03


class MessageCode(enum.IntEnum):
    """GBCS message codes this layer names (the ones in the reference vectors).

    Other codes are carried as plain ints (``known_message_code``): a well-formed
    message of another kind is not malformed, and verification refuses anything but
    CS06 by its code, so a command we cannot name is still one we never act on.
    """

    ACTIVATE_FIRMWARE = 0x0012  # CS06 Activate Firmware (command and response)
    FUTURE_DATED_ALERT = 0x00CA  # alerts 0x8F66 / 0x8F67 on a future-dated command
    FIRMWARE_DISTRIBUTION_RECEIPT_ALERT = 0x00CF  # FDRA, ZigBee form (alert 0x8F72)
    FIRMWARE_TRANSFER_ALERT = 0x0128  # CCS08 Firmware Transfer Alert (0x8F8A / 0x8F89)
    READ_FIRMWARE_VERSION_ALERT = 0x012B  # alert 0x8F8B

    @property
    def label(self) -> str:
        return _MESSAGE_LABELS[self]


_MESSAGE_LABELS = {
    MessageCode.ACTIVATE_FIRMWARE: "CS06 Activate Firmware",
    MessageCode.FUTURE_DATED_ALERT: "future-dated command alert",
    MessageCode.FIRMWARE_DISTRIBUTION_RECEIPT_ALERT: "Firmware Distribution Receipt Alert (ZigBee)",
    MessageCode.FIRMWARE_TRANSFER_ALERT: "CCS08 Firmware Transfer Alert",
    MessageCode.READ_FIRMWARE_VERSION_ALERT: "read firmware version alert",
}


def known_message_code(code: int) -> MessageCode | int:
    """The member for a code this layer names, else the code itself."""
    return MessageCode(code) if code in _MESSAGE_LABELS else code


def message_label(code: int) -> str:
    """A name for people: the message's, or that it is one this layer does not read."""
    return code.label if isinstance(code, MessageCode) else "not a message this gateway reads"


class ResponseCode(enum.IntEnum):
    """Response codes of a CS06 response (VECTORS.md)."""

    SUCCESS = 0
    NO_IMAGE_HELD = 1
    HASH_MISMATCH = 2
    ACTIVATION_FAILURE = 3  # the activation itself failed; raised by the gate, never by verify


class AlertCode(enum.IntEnum):
    """GBCS alert codes for the firmware path (VECTORS.md, "Alert codes worth knowing")."""

    FIRMWARE_TRANSFER_SUCCESS = 0x8F8A
    FIRMWARE_TRANSFER_FAILURE = 0x8F89
    FIRMWARE_VERIFICATION_SUCCESS = 0x8F72
    FIRMWARE_VERIFICATION_FAILURE = 0x8F1C
    EXECUTING_FIRMWARE_VERSION_CHANGED = 0x8F43
    FUTURE_DATED_ACTIONED = 0x8F66
    FUTURE_DATED_NOT_ACTIONED = 0x8F67
    READ_FIRMWARE_VERSION = 0x8F8B
    TRUSTED_SOURCE_AUTHENTICATION_FAILURE = 0x8F3D
    SOURCE_DOES_NOT_HAVE_AUTHORITY = 0x8F30


class Reason(enum.Enum):
    """Why ``verify_activation`` accepted or refused a command (values are short labels).

    Members are listed in the order ``verify_activation`` checks them; ``MALFORMED`` is
    only produced by ``verify_activation_bytes``, which parses as well.
    """

    OK = "ok"
    MALFORMED = "malformed command"
    NOT_A_COMMAND = "not a command"
    WRONG_MESSAGE_CODE = "wrong message code"
    UNSIGNED = "unsigned"
    UNKNOWN_SUPPLIER = "unknown supplier"
    BAD_SIGNATURE = "bad signature"
    NO_AUTHORITY = "source does not have authority"
    WRONG_RECIPIENT = "wrong recipient"
    COUNTER_MISMATCH = "counter mismatch"
    REPLAYED_COUNTER = "replayed counter"
    NO_IMAGE_HELD = "no image held"
    HASH_MISMATCH = "hash mismatch"


# What a device would answer for each outcome: (CS06 response code, alert code).
#
# - OK: response 0. No alert yet: 0x8F43 (executing version changed) belongs to the
#   moment the device really switches, and 0x8F66 / 0x8F67 to a future-dated command
#   being actioned or not; both are the gate's and session's to raise, later.
# - UNSIGNED, UNKNOWN_SUPPLIER, BAD_SIGNATURE: 0x8F3D trusted source authentication
#   failure; no CS06 response, the command is discarded.
# - NO_AUTHORITY: 0x8F30 source does not have authority; no response.
# - COUNTER_MISMATCH, REPLAYED_COUNTER: 0x8F3D. The originator counter is GBCS's
#   anti-replay check, part of authenticating the source, and the list has no more
#   specific code; no response.
# - WRONG_RECIPIENT, WRONG_MESSAGE_CODE, NOT_A_COMMAND, MALFORMED: neither. The message
#   is not a CS06 command for this device, so there is nothing to answer; it is dropped.
#   (That is also why the first two may be reported before authentication.)
# - NO_IMAGE_HELD: response 1 only; there is no image whose verification could fail.
# - HASH_MISMATCH: response 2 and 0x8F1C firmware verification failed (the held image
#   does not verify against the supplier-signed hash).
REASON_CODES: Mapping[Reason, tuple[ResponseCode | None, AlertCode | None]] = MappingProxyType(
    {
        Reason.OK: (ResponseCode.SUCCESS, None),
        Reason.MALFORMED: (None, None),
        Reason.UNSIGNED: (None, AlertCode.TRUSTED_SOURCE_AUTHENTICATION_FAILURE),
        Reason.UNKNOWN_SUPPLIER: (None, AlertCode.TRUSTED_SOURCE_AUTHENTICATION_FAILURE),
        Reason.BAD_SIGNATURE: (None, AlertCode.TRUSTED_SOURCE_AUTHENTICATION_FAILURE),
        Reason.NO_AUTHORITY: (None, AlertCode.SOURCE_DOES_NOT_HAVE_AUTHORITY),
        Reason.WRONG_RECIPIENT: (None, None),
        Reason.WRONG_MESSAGE_CODE: (None, None),
        Reason.NOT_A_COMMAND: (None, None),
        Reason.COUNTER_MISMATCH: (None, AlertCode.TRUSTED_SOURCE_AUTHENTICATION_FAILURE),
        Reason.REPLAYED_COUNTER: (None, AlertCode.TRUSTED_SOURCE_AUTHENTICATION_FAILURE),
        Reason.NO_IMAGE_HELD: (ResponseCode.NO_IMAGE_HELD, None),
        Reason.HASH_MISMATCH: (ResponseCode.HASH_MISMATCH, AlertCode.FIRMWARE_VERIFICATION_FAILURE),
    }
)
