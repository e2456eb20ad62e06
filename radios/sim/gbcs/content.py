"""The contents the simulated devices read and write, from the GBCS layouts.

Read: CS06 Activate Firmware (0x0012)::

    SEQUENCE { OCTET STRING (32) manufacturer image hash,
               INTEGER originator counter (equals the header's),
               GeneralizedTime execution date-time OPTIONAL ("99991231235959Z" cancels) }

Written (DER unless said): the CS06 response (SEQUENCE { responseCode, firmwareVersion })
or NULL "accepted" for a future-dated one; the 0x00CA future-dated alert; the CS08
response; the PPMID's CS09 alert; and the Firmware Distribution Receipt Alert in its
ZigBee form, which is not DER: ``01 09 01 <alert u16> <ZigBee UTC u32> 09 20 <hash>``
(all big-endian, as fdra-zigbee-8f72-alert.hex).
"""

from __future__ import annotations

from dataclasses import dataclass
import enum
from typing import Final

from . import der
from .cursor import Cursor, GbcsReadError
from .signer import zigbee_utc

__all__ = [
    "Alert",
    "Cs06",
    "MessageCode",
    "ResponseCode",
    "CANCEL_TIME",
    "read_cs06",
    "cs06_response",
    "cs08_response",
    "cs09_alert",
    "fdra_zigbee",
    "future_dated_alert",
    "ACCEPTED",
]


class MessageCode(enum.IntEnum):
    CS06_ACTIVATE_FIRMWARE = 0x0012
    FUTURE_DATED_ALERT = 0x00CA
    FDRA_ZIGBEE = 0x00CF
    CS08_READ_FIRMWARE_VERSION = 0x0129
    CS09_PPMID_ACTIVATION_ALERT = 0x012B


class Alert(enum.IntEnum):
    FIRMWARE_VERIFICATION_FAILED = 0x8F1C
    FUTURE_DATED_ACTIONED = 0x8F66
    FUTURE_DATED_NOT_ACTIONED = 0x8F67
    FIRMWARE_VERIFICATION_SUCCESSFUL = 0x8F72
    PPMID_FIRMWARE_ACTIVATION = 0x8F8B


class ResponseCode(enum.IntEnum):
    """CS06 response codes."""

    SUCCESS = 0
    NO_IMAGE_HELD = 1
    HASH_MISMATCH = 2
    ACTIVATION_FAILURE = 3


CANCEL_TIME: Final = 253402300799  # 9999-12-31T23:59:59Z
ACCEPTED: Final = bytes([der.NULL, 0x00])  # a future-dated command's response: "command accepted"
HASH_SIZE: Final = 32


@dataclass(frozen=True)
class Cs06:
    image_hash: bytes
    counter: int
    execution_time: int | None  # POSIX UTC seconds, or None for "now"

    @property
    def cancels(self) -> bool:
        return self.execution_time == CANCEL_TIME


def read_cs06(content: bytes, offset: int = 0) -> Cs06:
    """CS06 content; ``offset`` is where it sits in the message, for the errors."""
    cur = Cursor(content, offset)
    seq = der.read_tlv(cur, der.SEQUENCE, "CS06 content")
    cur.end("CS06 content")
    at = seq.offset
    digest = der.read_tlv(seq, der.OCTET_STRING, "manufacturer image hash")
    if digest.remaining != HASH_SIZE:
        raise GbcsReadError("manufacturer image hash", at, f"{digest.remaining} bytes, expected {HASH_SIZE}")
    image_hash = digest.take(HASH_SIZE, "manufacturer image hash")
    counter = der.read_integer(seq, "CS06 originator counter")
    execution = der.read_generalized_time(seq, "execution date-time") if seq.remaining else None
    seq.end("CS06 content")
    return Cs06(image_hash, counter, execution)


def _version(firmware_version: bytes) -> bytes:
    if len(firmware_version) != 4:
        raise ValueError(f"a GBCS firmware version is 4 bytes, got {len(firmware_version)}")
    return der.tlv(der.OCTET_STRING, firmware_version)


def cs06_response(code: ResponseCode, firmware_version: bytes) -> bytes:
    return der.tlv(der.SEQUENCE, der.encode_integer(code) + _version(firmware_version))


def future_dated_alert(alert: Alert, execution_time: float, cs06_counter: int, code: ResponseCode, firmware_version: bytes) -> bytes:
    return der.tlv(
        der.SEQUENCE,
        der.encode_integer(alert)
        + der.encode_generalized_time(execution_time)
        + der.encode_integer(cs06_counter)
        + cs06_response(code, firmware_version),
    )


def cs08_response(firmware_version: bytes, read_ok: bool = True) -> bytes:
    return der.tlv(der.SEQUENCE, _version(firmware_version) + der.encode_integer(0 if read_ok else 1))


def cs09_alert(when: float, firmware_version: bytes, activated: bool) -> bytes:
    return der.tlv(
        der.SEQUENCE,
        der.encode_integer(Alert.PPMID_FIRMWARE_ACTIVATION)
        + der.encode_generalized_time(when)
        + _version(firmware_version)
        + der.encode_integer(0 if activated else 1),
    )


def fdra_zigbee(alert: Alert, when: float, image_hash: bytes) -> bytes:
    if len(image_hash) != HASH_SIZE:
        raise ValueError(f"a Manufacturer Image Hash is {HASH_SIZE} bytes, got {len(image_hash)}")
    return b"\x01\x09\x01" + int(alert).to_bytes(2, "big") + zigbee_utc(when).to_bytes(4, "big") + b"\x09\x20" + image_hash
