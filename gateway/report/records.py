"""The trial's records, typed: parsed once from the audit log (and the store's jobs).

The report reads what the daemon already writes (han_ota/daemon/journal.py): ``job.accepted``,
``job.state``, ``job.progress``, ``job.nudge``, the session's notes (``ota.<kind>``),
the frames of interest it sent (``ota.sent``) and the GBCS outcomes (``gbcs.<step>``).
Each record the report uses is checked as it is read: one it cannot read is refused,
naming its sequence number, its event and the field (``ReportInputError``), never
guessed at. Records the report has no use for (radio, daemon, key establishment) are
skipped.

Slots for what issue 15 parts 1 and 2 add, read when present: a job's ``priority``
(a field of ``job.accepted``), the end state ``superseded`` (any state string is
taken), and background traffic samples: event ``traffic.sample`` with ``device``,
``kind`` (e.g. "metering") and ``latency_ms`` (a number, or null for a lost message).

No I/O here: the caller reads the files and hands over plain mappings.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Union

_UTC = dt.timezone.utc


class ReportInputError(ValueError):
    """A record the report needs cannot be read; the message names the record and the field."""


@dataclass(frozen=True)
class ImageRef:
    manufacturer_code: int
    image_type: int
    file_version: int
    size: int
    sha256: str


@dataclass(frozen=True)
class JobIdentity:
    """What a job pushes to which device: the same from the audit log's job.accepted and from the store."""

    device: str
    kind: str
    image: ImageRef
    activation: str
    priority: str | None = None


@dataclass(frozen=True)
class JobAccepted:
    seq: int
    at: dt.datetime
    job: int
    identity: JobIdentity


@dataclass(frozen=True)
class StoredJob:
    """A job as the store keeps it: what the report knows of a job whose acceptance lies outside the window."""

    job: int
    identity: JobIdentity
    state: str
    reason: str | None
    created: dt.datetime


@dataclass(frozen=True)
class StateChange:
    seq: int
    at: dt.datetime
    job: int
    old: str
    new: str
    reason: str | None
    offset: int | None


@dataclass(frozen=True)
class ProgressMark:
    seq: int
    at: dt.datetime
    job: int
    offset: int
    size: int


@dataclass(frozen=True)
class SessionNote:
    """An ``ota.<kind>`` record: one of the session's notes (gateway.ota.events.NoteKind)."""

    seq: int
    at: dt.datetime
    job: int
    kind: str
    message: str
    offset: int | None


@dataclass(frozen=True)
class FrameSent:
    """An ``ota.sent`` record: a frame of interest the radio accepted."""

    seq: int
    at: dt.datetime
    job: int
    command: str
    delay_s: int | None  # WAIT_FOR_DATA's request time


@dataclass(frozen=True)
class Nudge:
    seq: int
    at: dt.datetime
    job: int


@dataclass(frozen=True)
class GbcsRecord:
    """A ``gbcs.<step>`` record of a job: transfer, device_verification, verdict, command, activation ..."""

    seq: int
    at: dt.datetime
    job: int
    step: str
    response_code: int | None
    alert_code: int | None
    message: str
    accepted: bool | None  # verdicts only


@dataclass(frozen=True)
class TrafficSample:
    """One background message (issue 15 part 2): its latency, or None when it was lost."""

    seq: int
    at: dt.datetime
    device: str | None
    kind: str
    latency_s: float | None


TrialRecord = Union[JobAccepted, StateChange, ProgressMark, SessionNote, FrameSent, Nudge, GbcsRecord, TrafficSample]


def parse_time(text: str) -> dt.datetime:
    """The audit log's time stamp (``2026-12-04T01:57:00.932286Z``) as an aware UTC datetime."""
    value = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    if value.tzinfo is None:
        raise ValueError(f"{text!r} has no time zone")
    return value.astimezone(_UTC)


def parse_records(rows: Iterable[Mapping[str, Any]]) -> list[TrialRecord]:
    """The records the report uses, in log order; refuses one it cannot read."""
    out: list[TrialRecord] = []
    for row in rows:
        record = parse_record(row)
        if record is not None:
            out.append(record)
    return out


def parse_record(row: Mapping[str, Any]) -> TrialRecord | None:
    """One audit record (its stored flat form) as a typed record, or None when the report has no use for it."""
    reader = _Reader(row)
    event = reader.event
    if event == "traffic.sample":
        latency = reader.number("latency_ms", optional=True)
        return TrafficSample(reader.seq, reader.at, reader.text("device", optional=True), reader.text("kind"), None if latency is None else latency / 1000.0)
    if row.get("job") is None:
        return None  # daemon, radio and command-received records: not a job's
    job = reader.integer("job")
    assert job is not None
    if event == "job.accepted":
        image = ImageRef(
            reader.required_int("manufacturer_code"),
            reader.required_int("image_type"),
            reader.required_int("file_version"),
            reader.required_int("size"),
            reader.text("sha256"),
        )
        identity = JobIdentity(reader.text("device"), reader.text("kind"), image, reader.text("activation"), reader.priority())
        return JobAccepted(reader.seq, reader.at, job, identity)
    if event == "job.state":
        return StateChange(reader.seq, reader.at, job, reader.text("old"), reader.text("new"), reader.text("reason", optional=True), reader.integer("offset", optional=True))
    if event == "job.progress":
        return ProgressMark(reader.seq, reader.at, job, reader.required_int("offset"), reader.required_int("size"))
    if event == "job.nudge":
        return Nudge(reader.seq, reader.at, job)
    if event == "ota.sent":
        return FrameSent(reader.seq, reader.at, job, reader.text("command"), reader.integer("delay_s", optional=True))
    if event.startswith("ota."):
        return SessionNote(reader.seq, reader.at, job, event[4:], reader.text("message", optional=True) or "", reader.integer("offset", optional=True))
    if event.startswith("gbcs."):
        accepted = row.get("accepted")
        if accepted is not None and not isinstance(accepted, bool):
            raise reader.refuse("accepted", f"must be true, false or null, got {accepted!r}")
        return GbcsRecord(
            reader.seq,
            reader.at,
            job,
            event[5:],
            reader.integer("response_code", optional=True),
            reader.alert_code(),
            reader.text("message", optional=True) or "",
            accepted,
        )
    return None


class _Reader:
    """Field access for one record; every refusal names the record and the field."""

    def __init__(self, row: Mapping[str, Any]) -> None:
        self.row = row
        seq = row.get("seq")
        event = row.get("event")
        self.seq = seq if isinstance(seq, int) and not isinstance(seq, bool) else -1
        self.event = event if isinstance(event, str) else "?"
        if self.seq < 1:
            raise self.refuse("seq", f"must be a positive integer, got {seq!r}")
        if not isinstance(event, str):
            raise self.refuse("event", f"must be a string, got {event!r}")
        ts = row.get("ts")
        try:
            if not isinstance(ts, str):
                raise ValueError("not a string")
            self.at: dt.datetime = parse_time(ts)
        except ValueError:
            raise self.refuse("ts", f"must be an ISO 8601 UTC time such as 2026-12-04T01:57:00.932286Z, got {ts!r}") from None

    def refuse(self, name: str, why: str) -> ReportInputError:
        return ReportInputError(f"audit record {self.seq} ({self.event}): field {name!r} {why}")

    def text(self, name: str, *, optional: bool = False) -> Any:
        value = self.row.get(name)
        if value is None and optional:
            return None
        if not isinstance(value, str):
            raise self.refuse(name, f"must be a string, got {value!r}")
        return value

    def integer(self, name: str, *, optional: bool = False) -> int | None:
        value = self.row.get(name)
        if value is None and optional:
            return None
        if not isinstance(value, int) or isinstance(value, bool):
            raise self.refuse(name, f"must be an integer, got {value!r}")
        return value

    def required_int(self, name: str) -> int:
        value = self.integer(name)
        assert value is not None
        return value

    def number(self, name: str, *, optional: bool = False) -> float | None:
        value = self.row.get(name)
        if value is None and optional:
            return None
        if not isinstance(value, (int, float)) or isinstance(value, bool) or value < 0:
            raise self.refuse(name, f"must be a non-negative number, got {value!r}")
        return float(value)

    def alert_code(self) -> int | None:
        # Written as "0x8F8A" (han_ota/daemon/journal.py); an integer is taken too.
        value = self.row.get("alert_code")
        if value is None or (isinstance(value, int) and not isinstance(value, bool)):
            return value
        if isinstance(value, str):
            try:
                return int(value, 16)
            except ValueError:
                pass
        raise self.refuse("alert_code", f"must be a hex code such as 0x8F8A, got {value!r}")

    def priority(self) -> str | None:
        value = self.row.get("priority")
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, (int, str)):
            raise self.refuse("priority", f"must be a number or a name such as high, got {value!r}")
        return str(value)
