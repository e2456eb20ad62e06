"""CS06 Activate Firmware: the content of a GBCS command with message code 0x0012.

::

    SEQUENCE {
      OCTET STRING (32)  manufacturer image hash (SHA-256 over the Manufacturer Image)
      INTEGER            originator counter (must equal the header counter)
      GeneralizedTime    execution date-time OPTIONAL  ("99991231235959Z" cancels)
    }

No execution time means "activate now"; a time in the future schedules activation;
the 9999-12-31 23:59:59Z sentinel cancels a scheduled one.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from . import der
from .cursor import Cursor, refusing_short_reads
from .errors import GbcsUsageError, TrailingBytes

HASH_SIZE = 32
CANCELLATION_TIME = dt.datetime(9999, 12, 31, 23, 59, 59, tzinfo=dt.timezone.utc)
_U64_MAX = (1 << 64) - 1


@dataclass(frozen=True)
class ActivateFirmware:
    """A decoded CS06 body. ``execution_time`` is aware UTC, or None for immediate."""

    image_hash: bytes
    counter: int
    execution_time: dt.datetime | None = None

    def __post_init__(self) -> None:
        if len(self.image_hash) != HASH_SIZE:
            raise GbcsUsageError(f"image hash is {HASH_SIZE} bytes, got {len(self.image_hash)}")
        if not 0 <= self.counter <= _U64_MAX:
            raise GbcsUsageError(f"counter {self.counter} is not an unsigned 64-bit value")
        t = self.execution_time
        if t is not None:
            if t.tzinfo is None or t.utcoffset() != dt.timedelta(0):
                raise GbcsUsageError(f"execution time must be aware UTC, got {t!r}")
            if t.microsecond:
                raise GbcsUsageError("execution time has whole seconds only (GeneralizedTime)")

    @property
    def cancels(self) -> bool:
        """True for the 9999-12-31T23:59:59Z sentinel: cancel a scheduled activation."""
        return self.execution_time == CANCELLATION_TIME

    @property
    def immediate(self) -> bool:
        return self.execution_time is None


def iso_utc(when: dt.datetime) -> str:
    """ISO 8601 with a Z, whole seconds: ``2030-01-15T09:00:00Z``."""
    w = when.astimezone(dt.timezone.utc)
    return f"{w.year:04d}-{w.month:02d}-{w.day:02d}T{w.hour:02d}:{w.minute:02d}:{w.second:02d}Z"


def _read_activate_firmware(cur: Cursor) -> ActivateFirmware:
    seq = der.read_tlv(cur, der.TAG_SEQUENCE, "CS06 content")
    image_hash = der.read_octet_string(seq, "CS06 image hash", HASH_SIZE)
    counter = der.read_unsigned(seq, "CS06 counter")
    execution_time = None
    if seq.remaining:
        execution_time = der.read_generalized_time(seq, "CS06 execution time")
    if seq.remaining:
        raise TrailingBytes(seq.offset, "CS06 content", f"{seq.remaining} bytes after the last field")
    return ActivateFirmware(image_hash, counter, execution_time)


def decode_activate_firmware(data: bytes, base: int = 0) -> tuple[ActivateFirmware, bytes]:
    """Decode a CS06 body from the front of ``data`` (``base``: its input offset)."""
    cur = Cursor(data, base)
    with refusing_short_reads():
        value = _read_activate_firmware(cur)
    return value, cur.rest()


def encode_activate_firmware(value: ActivateFirmware) -> bytes:
    body = der.encode_tlv(der.TAG_OCTET_STRING, value.image_hash) + der.encode_unsigned(value.counter)
    if value.execution_time is not None:
        body += der.encode_generalized_time(value.execution_time)
    return der.encode_tlv(der.TAG_SEQUENCE, body)
