"""CCS08 Firmware Transfer Alert (message code 0x0128): the hub's own signed alert.

Laid out exactly as the RTDS vector ``ccs08-firmware-transfer-alert.hex``: a General
Signing APDU, CRA flag 03 (alert), the hub's entity id as originator, the Access
Control Broker as recipient, no header date-time, and the DER content::

    SEQUENCE {
      INTEGER          alertCode          0x8F8A success, 0x8F89 failure
      GeneralizedTime  executionDateTime  when the transfer ended
      OCTET STRING(8)  entityId           the device the image went to
      OCTET STRING(4)  firmwareVersion    the image's file version, big-endian
      INTEGER          responseCode       0 success, 1 image discarded,
                                          2 hardware version mismatch, 3 file transfer failure
    }

signed by the hub's P-256 digital-signing key over every byte after ``DF`` up to the end
of the content (``sign.sign_general_signing``). Sans-I/O: values in, bytes out.
"""

from __future__ import annotations

import datetime as dt
import enum
from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric import ec

from . import der
from .codes import AlertCode, CraFlag, MessageCode
from .cursor import Cursor, refusing_short_reads
from .errors import GbcsUsageError, MalformedCommand, TrailingBytes
from .ids import EntityId
from .sign import sign_general_signing

FIRMWARE_VERSION_SIZE = 4
_TRANSFER_ALERTS = (AlertCode.FIRMWARE_TRANSFER_SUCCESS, AlertCode.FIRMWARE_TRANSFER_FAILURE)


class TransferResponse(enum.IntEnum):
    """The CCS08 responseCode (gbcs-han-notes.md, message table)."""

    SUCCESS = 0
    IMAGE_DISCARDED = 1
    HARDWARE_VERSION_MISMATCH = 2
    FILE_TRANSFER_FAILURE = 3


@dataclass(frozen=True)
class FirmwareTransferAlert:
    """The content of one CCS08. ``execution_time`` is aware UTC with whole seconds."""

    alert_code: AlertCode
    execution_time: dt.datetime
    entity_id: EntityId
    firmware_version: int
    response_code: TransferResponse

    def __post_init__(self) -> None:
        if self.alert_code not in _TRANSFER_ALERTS:
            raise GbcsUsageError(f"alert code 0x{self.alert_code:04X} is not a firmware transfer alert (0x8F8A, 0x8F89)")
        if (self.alert_code is AlertCode.FIRMWARE_TRANSFER_SUCCESS) != (self.response_code is TransferResponse.SUCCESS):
            raise GbcsUsageError(
                f"alert 0x{self.alert_code:04X} with response code {int(self.response_code)}:"
                " 0x8F8A goes with 0 only, 0x8F89 with 1, 2 or 3"
            )
        if not 0 <= self.firmware_version <= 0xFFFFFFFF:
            raise GbcsUsageError(f"firmware version {self.firmware_version} is not 32 bits")
        t = self.execution_time
        if t.tzinfo is None or t.utcoffset() != dt.timedelta(0) or t.microsecond:
            raise GbcsUsageError(f"execution time must be aware UTC with whole seconds, got {t!r}")

    @classmethod
    def ended(
        cls, response: TransferResponse, *, device: EntityId, firmware_version: int, at: dt.datetime
    ) -> FirmwareTransferAlert:
        """The alert for a transfer that ended with ``response`` (the code follows from it)."""
        code = AlertCode.FIRMWARE_TRANSFER_SUCCESS if response is TransferResponse.SUCCESS else AlertCode.FIRMWARE_TRANSFER_FAILURE
        when = at.astimezone(dt.timezone.utc).replace(microsecond=0)
        return cls(code, when, device, firmware_version, response)


def encode_transfer_alert_content(alert: FirmwareTransferAlert) -> bytes:
    body = (
        der.encode_unsigned(int(alert.alert_code))
        + der.encode_generalized_time(alert.execution_time)
        + der.encode_tlv(der.TAG_OCTET_STRING, alert.entity_id.raw)
        + der.encode_tlv(der.TAG_OCTET_STRING, alert.firmware_version.to_bytes(FIRMWARE_VERSION_SIZE, "big"))
        + der.encode_unsigned(int(alert.response_code))
    )
    return der.encode_tlv(der.TAG_SEQUENCE, body)


def build_transfer_alert(
    key: ec.EllipticCurvePrivateKey | None,
    *,
    originator: EntityId,
    recipient: EntityId,
    counter: int,
    alert: FirmwareTransferAlert,
) -> bytes:
    """The whole CCS08 message; ``key`` None leaves it unsigned (signature length 00)."""
    return sign_general_signing(
        key,
        cra_flag=CraFlag.ALERT,
        counter=counter,
        originator=originator,
        recipient=recipient,
        message_code=MessageCode.FIRMWARE_TRANSFER_ALERT,
        content=encode_transfer_alert_content(alert),
    )


def _read_transfer_alert(cur: Cursor) -> FirmwareTransferAlert:
    seq = der.read_tlv(cur, der.TAG_SEQUENCE, "CCS08 content")
    at = seq.offset
    code = der.read_unsigned(seq, "CCS08 alert code")
    if code not in {int(c) for c in _TRANSFER_ALERTS}:
        raise MalformedCommand(at, "CCS08 alert code", f"0x{code:04X} is not 0x8F8A or 0x8F89")
    when = der.read_generalized_time(seq, "CCS08 execution date-time")
    entity = EntityId(der.read_octet_string(seq, "CCS08 entity id", 8))
    version = int.from_bytes(der.read_octet_string(seq, "CCS08 firmware version", FIRMWARE_VERSION_SIZE), "big")
    at = seq.offset
    response = der.read_unsigned(seq, "CCS08 response code")
    if response not in {int(r) for r in TransferResponse}:
        raise MalformedCommand(at, "CCS08 response code", f"{response} is not 0, 1, 2 or 3")
    if seq.remaining:
        raise TrailingBytes(seq.offset, "CCS08 content", f"{seq.remaining} bytes after the last field")
    try:
        return FirmwareTransferAlert(AlertCode(code), when, entity, version, TransferResponse(response))
    except GbcsUsageError as exc:  # a success code with a failure response, or the reverse
        raise MalformedCommand(at, "CCS08 response code", str(exc)) from None


def decode_transfer_alert(data: bytes, base: int = 0) -> tuple[FirmwareTransferAlert, bytes]:
    """Decode a CCS08 content from the front of ``data`` (``base``: its input offset)."""
    cur = Cursor(data, base)
    with refusing_short_reads():
        value = _read_transfer_alert(cur)
    return value, cur.rest()
