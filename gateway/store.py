"""Durable gateway state: jobs, held activations, anti-replay counters, GBCS verdicts.

One SQLite file in the state directory (``/var/lib/han-ota`` under systemd's
``StateDirectory=han-ota``). The contract the daemon relies on: **a method that
returns has committed**. Each mutating method is one ``BEGIN IMMEDIATE`` ...
``COMMIT`` transaction, so a kill -9 or a power cut at any instant leaves either
all of a call's writes or none of them, and never loses one that was acknowledged.

Why WAL + ``synchronous=FULL``: in WAL mode a commit is an append to the -wal file;
with ``synchronous=NORMAL`` SQLite skips the fsync at commit, so the database stays
consistent after a power cut but may roll back the last transactions -- ones we
already acknowledged (a job accepted, an anti-replay counter advanced). ``FULL``
fsyncs the WAL at every commit; that is one fsync per call, cheap at our rate.
WAL also lets ``han-ota status`` read while the daemon writes.

Invariants kept here rather than trusted to callers: at most one active (not
confirmed/failed/cancelled/superseded), not queued job per device (queued jobs wait
for it, issue 15); a job that reached an end state never
leaves it; a job that reaches an end state loses its scheduled activation in the
same transaction; anti-replay counters only ever increase; the hub's own originator
counter only ever increases, and a counter reserved for a message is never handed out
again (``reserve_hub_message``).
"""

from __future__ import annotations

import datetime as dt
import enum
import json
import os
import re
import sqlite3
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from eui64 import Eui64
from gateway.gbcs.messages import MessageInfo, read_message
from gateway.gbcs.trust import TrustStore
from gateway.ota.events import END_STATES, SessionState
from gateway.ota.priority import DEFAULT_PRIORITY, PriorityError, parse_priority

SCHEMA_VERSION = 5
DEFAULT_FILENAME = "state.sqlite3"
BUSY_TIMEOUT_MS = 5000  # a CLI reader may hold the lock briefly; wait rather than fail

_T = TypeVar("_T")
_UTC = dt.timezone.utc
_TIME_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"  # fixed width, so text order is time order
_HEX = re.compile(r"[0-9a-f]*")
_END_VALUES = tuple(sorted(s.value for s in END_STATES))


# --------------------------------------------------------------------------- errors


class StoreError(Exception):
    """The state store failed or refused; the message names the database and the fix."""

    def __init__(self, message: str, *, path: Path | None = None) -> None:
        super().__init__(message)
        self.path = path


class StateDirectoryMissing(StoreError):
    """The directory that should hold the database does not exist."""


class SchemaTooNew(StoreError):
    """The database was written by a newer han-ota than this one."""


class UnknownJob(StoreError):
    """No job has the given id."""


class DeviceBusy(StoreError):
    """The device already has an active job."""


class JobClosed(StoreError):
    """The job reached an end state (confirmed/failed/cancelled) and cannot leave it."""


def accepted_for(device: str | None) -> str:
    """The suffix a replay refusal carries: which device the last accepted counter was for."""
    return f" (accepted for device {device})" if device else ""


class CounterNotIncreasing(StoreError):
    """An anti-replay counter was not strictly greater than the last one accepted."""

    def __init__(self, originator: str, counter: int, last: int, *, path: Path | None = None, device: str | None = None) -> None:
        super().__init__(
            f"anti-replay: originator {originator} counter {counter} is not greater than the "
            f"last accepted counter {last}{accepted_for(device)}; the command is a replay or out of order and must be rejected",
            path=path,
        )
        self.originator = originator
        self.counter = counter
        self.last = last


# --------------------------------------------------------------------------- records


class JobKind(enum.Enum):
    PPMID = "ppmid"
    HCALCS = "hcalcs"


class ActivationMode(enum.Enum):
    NONE = "none"  # hold the image until a verified GBCS command arrives later
    NOW = "now"  # lab convenience: activate as soon as the device holds the image
    COMMAND = "command"  # a supplier-signed GBCS command came with the job


@dataclass(frozen=True)
class ActivationRequest:
    mode: ActivationMode
    command_hex: str | None = None

    def __post_init__(self) -> None:
        if self.mode is ActivationMode.COMMAND:
            object.__setattr__(self, "command_hex", _hex_bytes(self.command_hex, "command_hex"))
        elif self.command_hex is not None:
            raise ValueError(f"activation {self.mode.value!r} takes no command_hex; use mode COMMAND to send one")

    @classmethod
    def none(cls) -> ActivationRequest:
        return cls(ActivationMode.NONE)

    @classmethod
    def now(cls) -> ActivationRequest:
        return cls(ActivationMode.NOW)

    @classmethod
    def command(cls, command_hex: str) -> ActivationRequest:
        return cls(ActivationMode.COMMAND, command_hex)


@dataclass(frozen=True)
class JobRecord:
    """What was asked for: the input of ``create_job``."""

    device: str  # IEEE address; normalised to lower-case colon form ("00:11:...:77")
    image_path: str
    image_sha256: str  # 64 hex digits
    manufacturer_code: int
    image_type: int
    file_version: int
    size: int
    kind: JobKind
    activation: ActivationRequest
    created_utc: dt.datetime
    priority: int = DEFAULT_PRIORITY  # gateway.ota.priority, 0..9

    def __post_init__(self) -> None:
        object.__setattr__(self, "device", normalize_ieee(self.device))
        if isinstance(self.priority, bool) or not isinstance(self.priority, int):
            raise ValueError(f"priority must be an integer, got {self.priority!r}")
        try:
            parse_priority(self.priority)
        except PriorityError as exc:
            raise ValueError(str(exc)) from None
        digest = str(self.image_sha256).lower()
        if len(digest) != 64 or not _HEX.fullmatch(digest):
            raise ValueError(f"image_sha256 must be 64 hex digits, got {self.image_sha256!r}")
        object.__setattr__(self, "image_sha256", digest)
        for name, bits in (("manufacturer_code", 16), ("image_type", 16), ("file_version", 32), ("size", 32)):
            value = getattr(self, name)
            if not isinstance(value, int) or not 0 <= value < 1 << bits:
                raise ValueError(f"{name} must be an integer in 0..{(1 << bits) - 1}, got {value!r}")
        _require_aware(self.created_utc, "created_utc")


@dataclass(frozen=True)
class Job:
    """A job as stored: the request plus where it stands."""

    job_id: int
    record: JobRecord
    state: SessionState
    reason: str | None
    offset: int  # bytes of the image the device has acknowledged fetching
    session_snapshot: dict[str, Any] | None  # OtaSession.snapshot(), for restore after a restart
    updated_utc: dt.datetime
    #: Waiting behind the device's active job (issue 15); never started.
    queued: bool = False

    @property
    def active(self) -> bool:
        return self.state not in END_STATES


@dataclass(frozen=True)
class JobTransition:
    """One state change of a job (written by create_job and by update_job when the state changes)."""

    job_id: int
    seq: int
    state: SessionState
    reason: str | None
    offset: int
    at_utc: dt.datetime


@dataclass(frozen=True)
class Schedule:
    """A held image with a future activation time from a verified GBCS command."""

    job_id: int
    at_utc: dt.datetime
    command_hex: str
    created_utc: dt.datetime


@dataclass(frozen=True)
class Verdict:
    """The outcome of verifying one GBCS command (accepted or not, and why)."""

    device: str
    accepted: bool
    reason: str
    at_utc: dt.datetime
    job_id: int | None = None
    response_code: int | None = None
    alert_code: int | None = None
    counter: int | None = None
    originator: str | None = None
    details: Mapping[str, Any] | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "device", normalize_ieee(self.device))
        _require_aware(self.at_utc, "at_utc")
        if self.originator is not None:
            object.__setattr__(self, "originator", normalize_originator(self.originator))
        if self.counter is not None:
            _check_counter(self.counter)


@dataclass(frozen=True)
class Acceptance:
    """An accepted command with what it decided: one durable record (``StateStore.accept``).

    ``activate_at`` is when the device is to be released: the verdict's time for an
    immediate CS06, the execution date-time for a future-dated one; None for a
    cancellation, which drops the job's schedule. Kept as the job's schedule, the
    decision is carried out after a restart like any other due schedule.
    """

    verdict: Verdict
    command_hex: str
    activate_at: dt.datetime | None

    def __post_init__(self) -> None:
        if self.verdict.originator is None or self.verdict.counter is None:
            raise ValueError("an Acceptance needs the verdict's originator and counter")
        if self.activate_at is not None:
            _require_aware(self.activate_at, "activate_at")


class MessageDirection(enum.Enum):
    """Which way a GBCS message went, as the hub saw it."""

    IN = "in"  # from a HAN device to the hub (a response, an alert)
    OUT = "out"  # from the hub to a HAN device (a forwarded command)
    HUB = "hub"  # the hub's own (a CCS08 alert to the Access Control Broker)


@dataclass(frozen=True)
class StoredMessage:
    """One row of the message store. ``data`` is None while a hub message is reserved."""

    message_id: int
    at_utc: dt.datetime
    direction: MessageDirection
    status: str  # "reserved" | "recorded"
    device: str | None
    job_id: int | None
    data: bytes | None
    message_code: int | None
    cra: str | None
    originator: str | None
    recipient: str | None
    counter: int | None
    signature: str | None  # the SignatureVerdict value
    details: Mapping[str, Any] | None

    @classmethod
    def unstored(
        cls, info: MessageInfo, direction: MessageDirection | str, device: object | None, at: dt.datetime,
        details: Mapping[str, Any] | None = None,
    ) -> StoredMessage:
        """A message kept in memory only (a push without a state directory): id 0."""
        return cls(
            message_id=0, at_utc=at, direction=MessageDirection(direction), status="recorded",
            device=None if device is None else normalize_ieee(device), job_id=None, details=details, **_info_fields(info),
        )

    def to_dict(self) -> dict[str, Any]:
        """The JSON form of ``han-ota messages --json``, the control API and job views."""
        return {
            "id": self.message_id,
            "at": self.at_utc.isoformat(),
            "direction": self.direction.value,
            "status": self.status,
            "device": self.device,
            "job": None if self.job_id is None else str(self.job_id),
            "code": self.message_code,
            "code_hex": None if self.message_code is None else f"0x{self.message_code:04X}",
            "cra": self.cra,
            "originator": self.originator,
            "recipient": self.recipient,
            "counter": self.counter,
            "signature": self.signature,
            "hex": None if self.data is None else self.data.hex().upper(),
            "details": None if self.details is None else dict(self.details),
        }


# --------------------------------------------------------------------------- value helpers


def normalize_ieee(value: object) -> str:
    """Written text (``0011223344556677``, ``00:11:22:33:44:55:66:77``), an ``Eui64`` or a
    zigpy EUI64 -> ``00:11:...:77``, the form the store and the audit log keep."""
    if isinstance(value, (Eui64, str, Iterable)):
        return str(Eui64.of(value))
    return str(Eui64.parse(value))  # refuses it, naming its type


def normalize_originator(value: object) -> str:
    """A GBCS entity identifier (bytes or hex, colons allowed) -> lower-case hex."""
    if isinstance(value, (bytes, bytearray)):
        return bytes(value).hex()
    return _hex_bytes(str(value).replace(":", "").replace(" ", ""), "originator")


def _hex_bytes(value: str | None, name: str) -> str:
    text = (value or "").strip().lower()
    if not text or len(text) % 2 or not _HEX.fullmatch(text):
        raise ValueError(f"{name} must be a non-empty even-length hex string, got {value!r}")
    return text


def _check_counter(counter: int) -> None:
    if not isinstance(counter, int) or not 0 <= counter < 1 << 64:
        raise ValueError(f"a GBCS originator counter is an unsigned 64-bit integer, got {counter!r}")


def _counter_text(counter: int) -> str:
    # 16 hex digits: text comparison equals numeric comparison over the whole
    # unsigned 64-bit range, which SQLite's signed INTEGER cannot hold.
    _check_counter(counter)
    return f"{counter:016x}"


def _require_aware(value: dt.datetime, name: str) -> None:
    if not isinstance(value, dt.datetime) or value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{name} must be a timezone-aware datetime (use datetime.now(timezone.utc)), got {value!r}")


def _to_text(value: dt.datetime, name: str = "time") -> str:
    _require_aware(value, name)
    return value.astimezone(_UTC).strftime(_TIME_FORMAT)


def _from_text(text: str) -> dt.datetime:
    return dt.datetime.strptime(text, _TIME_FORMAT).replace(tzinfo=_UTC)


def _dump_json(value: Mapping[str, Any] | None, name: str) -> str | None:
    if value is None:
        return None
    try:
        return json.dumps(value, sort_keys=True, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{name} must be JSON-serialisable (str/int/float/bool/None/list/dict): {e}") from None


def _describe(error: sqlite3.Error) -> str:
    text = str(error)
    if "disk is full" in text or "database or disk is full" in text:
        return f"{text} (free space on the filesystem holding the state directory; nothing of this call was written)"
    if "readonly" in text or "read-only" in text:
        return f"{text} (the state directory and database must be writable by the service user)"
    if "disk I/O error" in text:
        return f"{text} (check the storage device, e.g. the SD card, with dmesg; nothing of this call was written)"
    if "locked" in text or "busy" in text:
        return f"{text} (another process held the database longer than {BUSY_TIMEOUT_MS} ms)"
    return text


# --------------------------------------------------------------------------- schema


def _migrate_to_1(conn: sqlite3.Connection) -> None:
    end = ", ".join(f"'{v}'" for v in _END_VALUES)
    statements = [
        # AUTOINCREMENT: an id is never reused, since the audit log refers to jobs by id.
        """CREATE TABLE jobs (
            job_id INTEGER PRIMARY KEY AUTOINCREMENT,
            device TEXT NOT NULL,
            image_path TEXT NOT NULL,
            image_sha256 TEXT NOT NULL,
            manufacturer_code INTEGER NOT NULL,
            image_type INTEGER NOT NULL,
            file_version INTEGER NOT NULL,
            size INTEGER NOT NULL,
            kind TEXT NOT NULL CHECK (kind IN ('ppmid', 'hcalcs')),
            activation TEXT NOT NULL,
            created_utc TEXT NOT NULL,
            state TEXT NOT NULL,
            reason TEXT,
            byte_offset INTEGER NOT NULL DEFAULT 0,
            session_snapshot TEXT,
            updated_utc TEXT NOT NULL
        )""",
        f"CREATE UNIQUE INDEX jobs_one_active_per_device ON jobs (device) WHERE state NOT IN ({end})",
        """CREATE TABLE job_history (
            job_id INTEGER NOT NULL REFERENCES jobs (job_id),
            seq INTEGER NOT NULL,
            state TEXT NOT NULL,
            reason TEXT,
            byte_offset INTEGER NOT NULL,
            at_utc TEXT NOT NULL,
            PRIMARY KEY (job_id, seq)
        )""",
        """CREATE TABLE schedules (
            job_id INTEGER PRIMARY KEY REFERENCES jobs (job_id),
            at_utc TEXT NOT NULL,
            command_hex TEXT NOT NULL,
            created_utc TEXT NOT NULL
        )""",
        "CREATE INDEX schedules_by_time ON schedules (at_utc)",
        """CREATE TABLE counters (
            originator TEXT PRIMARY KEY,
            counter TEXT NOT NULL CHECK (length(counter) = 16),
            updated_utc TEXT NOT NULL
        )""",
        """CREATE TABLE verdicts (
            verdict_id INTEGER PRIMARY KEY AUTOINCREMENT,
            device TEXT NOT NULL,
            job_id INTEGER,
            accepted INTEGER NOT NULL,
            reason TEXT NOT NULL,
            response_code INTEGER,
            alert_code INTEGER,
            counter TEXT,
            originator TEXT,
            at_utc TEXT NOT NULL,
            details TEXT
        )""",
        "CREATE INDEX verdicts_by_device ON verdicts (device, verdict_id)",
    ]
    for statement in statements:
        conn.execute(statement)


# The migration hook: MIGRATIONS[n] takes a database at version n-1 to version n.
# All pending steps and the user_version bump run in one transaction, so a crash
# mid-upgrade leaves the old schema intact. Add a step and bump SCHEMA_VERSION;
# never edit a released step.
def _migrate_to_2(conn: sqlite3.Connection) -> None:
    # The device each counter was last accepted for, so a replay refusal can name it
    # (counters are per originator across all devices). NULL for rows from schema 1.
    conn.execute("ALTER TABLE counters ADD COLUMN device TEXT")


def _migrate_to_3(conn: sqlite3.Connection) -> None:
    # The audit log's head (seq, hash) as of its last append: the log alone cannot show
    # records cut off its end, nor the store that it has lost its state. And the
    # checkpoint (seq, hash, byte offset) the chain was last verified to at start, so
    # the next start verifies only what came after. One row.
    conn.execute(
        """CREATE TABLE audit_anchor (
            id INTEGER PRIMARY KEY CHECK (id = 1),
            seq INTEGER NOT NULL,
            hash TEXT NOT NULL,
            updated_utc TEXT NOT NULL,
            checked_seq INTEGER,
            checked_hash TEXT,
            checked_offset INTEGER
        )"""
    )


def _migrate_to_4(conn: sqlite3.Connection) -> None:
    # Every GBCS message the hub emits, forwards or receives (issue 13), and the hub's
    # own originator counter. A row of the hub's own starts 'reserved' (counter taken,
    # no bytes yet: the signing is still to come) and becomes 'recorded' with its bytes.
    conn.execute(
        """CREATE TABLE messages (
            message_id INTEGER PRIMARY KEY AUTOINCREMENT,
            at_utc TEXT NOT NULL,
            direction TEXT NOT NULL CHECK (direction IN ('in', 'out', 'hub')),
            status TEXT NOT NULL CHECK (status IN ('reserved', 'recorded')),
            device TEXT,
            job_id INTEGER,
            data BLOB,
            message_code INTEGER,
            cra TEXT,
            originator TEXT,
            recipient TEXT,
            counter TEXT,
            signature TEXT,
            details TEXT
        )"""
    )
    conn.execute("CREATE INDEX messages_by_device ON messages (device, message_id)")
    conn.execute("CREATE INDEX messages_by_job ON messages (job_id, message_id)")
    conn.execute(
        """CREATE TABLE hub_counter (
            id INTEGER PRIMARY KEY CHECK (id = 1),
            reserved TEXT NOT NULL CHECK (length(reserved) = 16),
            committed TEXT CHECK (length(committed) = 16),
            updated_utc TEXT NOT NULL
        )"""
    )



def _migrate_priorities(conn: sqlite3.Connection) -> None:
    # Issue 15: each job's priority, and whether it waits queued behind the device's
    # active job. A queued job is active but does not hold the device, and a superseded
    # one has ended: the one-active-job index is remade to say both (its states written
    # out here, as they stand in this step).
    conn.execute(f"ALTER TABLE jobs ADD COLUMN priority INTEGER NOT NULL DEFAULT {DEFAULT_PRIORITY} CHECK (priority BETWEEN 0 AND 9)")
    conn.execute("ALTER TABLE jobs ADD COLUMN queued INTEGER NOT NULL DEFAULT 0 CHECK (queued IN (0, 1))")
    conn.execute("DROP INDEX jobs_one_active_per_device")
    conn.execute(
        "CREATE UNIQUE INDEX jobs_one_active_per_device ON jobs (device) "
        "WHERE state NOT IN ('cancelled', 'confirmed', 'failed', 'superseded') AND queued = 0"
    )



MIGRATIONS: dict[int, Callable[[sqlite3.Connection], None]] = {
    1: _migrate_to_1, 2: _migrate_to_2, 3: _migrate_to_3, 4: _migrate_to_4, 5: _migrate_priorities,
}


# --------------------------------------------------------------------------- the store


class StateStore:
    """The gateway's durable state in one SQLite file. Thread-safe; one instance per process."""

    def __init__(self, path: str | os.PathLike[str], *, clock: Callable[[], dt.datetime] | None = None) -> None:
        self.path = Path(path)
        self._clock = clock or (lambda: dt.datetime.now(_UTC))
        self._lock = threading.RLock()
        directory = self.path.parent
        if not directory.is_dir():
            raise StateDirectoryMissing(
                f"state directory {directory} does not exist: create it (mkdir -p {directory}, owned by the "
                "service user) or run under systemd with StateDirectory=han-ota, which creates /var/lib/han-ota",
                path=self.path,
            )
        created = not self.path.exists()
        try:
            self._conn = sqlite3.connect(
                self.path, isolation_level=None, check_same_thread=False, timeout=BUSY_TIMEOUT_MS / 1000
            )
        except sqlite3.Error as e:
            raise StoreError(
                f"cannot open state store {self.path}: {_describe(e)}; the state directory must be "
                "writable by the service user",
                path=self.path,
            ) from e
        try:
            self._configure()
            self._check_integrity()
            self._migrate()
        except BaseException:
            self._conn.close()
            raise
        if created:
            _fsync_directory(directory)  # make the new file's directory entry durable too

    @classmethod
    def in_state_dir(cls, state_dir: str | os.PathLike[str], **kwargs: Any) -> StateStore:
        return cls(Path(state_dir) / DEFAULT_FILENAME, **kwargs)

    # ------------------------------------------------------------------ lifecycle

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def __enter__(self) -> StateStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def schema_version(self) -> int:
        return int(self._read(lambda c: c.execute("PRAGMA user_version").fetchone()[0]))

    def integrity_check(self) -> list[str]:
        """``PRAGMA integrity_check`` rows; ``["ok"]`` when the file is sound."""
        return [row[0] for row in self._read(lambda c: c.execute("PRAGMA integrity_check").fetchall())]

    def _configure(self) -> None:
        try:
            mode = self._conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise StoreError(
                    f"state store {self.path}: the filesystem refused WAL mode (got {mode!r}); put the "
                    "state directory on a local filesystem (not NFS/SMB)",
                    path=self.path,
                )
            self._conn.execute("PRAGMA synchronous=FULL")  # see the module docstring
            self._conn.execute("PRAGMA foreign_keys=ON")
        except sqlite3.DatabaseError as e:
            if getattr(e, "sqlite_errorcode", None) == sqlite3.SQLITE_NOTADB:
                raise self._unreadable(e) from e
            raise StoreError(f"cannot open state store {self.path}: {_describe(e)}", path=self.path) from e

    def _unreadable(self, error: sqlite3.Error) -> StoreError:
        return StoreError(
            f"state store {self.path} is not a readable SQLite database ({error}); move it aside and "
            "restore a backup, or start with an empty state directory",
            path=self.path,
        )

    def _check_integrity(self) -> None:
        try:
            rows = [r[0] for r in self._conn.execute("PRAGMA quick_check").fetchall()]
        except sqlite3.DatabaseError as e:
            raise self._unreadable(e) from e
        if rows != ["ok"]:
            raise StoreError(
                f"state store {self.path} is corrupt ({rows[0]}); keep a copy for analysis and restore a "
                "backup, or start with an empty state directory",
                path=self.path,
            )

    def _migrate(self) -> None:
        current = int(self._conn.execute("PRAGMA user_version").fetchone()[0])
        target = SCHEMA_VERSION
        if current > target:
            raise SchemaTooNew(
                f"state store {self.path} has schema {current}, written by a newer han-ota; this one "
                f"knows schema {target}. Upgrade han-ota, or point it at another state directory",
                path=self.path,
            )
        if current == target:
            return

        def upgrade(conn: sqlite3.Connection) -> None:
            for version in range(current + 1, target + 1):
                MIGRATIONS[version](conn)
            conn.execute(f"PRAGMA user_version = {int(target)}")

        self._write(upgrade)

    # ------------------------------------------------------------------ transactions

    def _write(self, body: Callable[[sqlite3.Connection], _T]) -> _T:
        """Run ``body`` in one IMMEDIATE transaction, committed before returning."""
        with self._lock:
            conn = self._conn
            try:
                conn.execute("BEGIN IMMEDIATE")
                result = body(conn)
                conn.execute("COMMIT")
                return result
            except BaseException as e:
                if conn.in_transaction:
                    try:
                        conn.execute("ROLLBACK")
                    except sqlite3.Error:
                        pass  # SQLite may already have rolled back (e.g. SQLITE_FULL)
                if isinstance(e, sqlite3.Error):
                    raise StoreError(f"state store {self.path}: {_describe(e)}", path=self.path) from e
                raise

    def _read(self, body: Callable[[sqlite3.Connection], _T]) -> _T:
        with self._lock:
            try:
                return body(self._conn)
            except sqlite3.Error as e:
                raise StoreError(f"state store {self.path}: {_describe(e)}", path=self.path) from e

    # ------------------------------------------------------------------ jobs

    def create_job(self, record: JobRecord, *, queued: bool = False, supersede: int | None = None, reason: str | None = None) -> int:
        """Store a new job in state ``pending``; returns its id. Raises DeviceBusy if the
        device has an active (not queued) job, unless the new one is ``queued`` behind it
        or ``supersede`` names it: that job becomes ``superseded`` (with ``reason``) in
        the same transaction, so that the device is never without its job nor with two."""
        if not isinstance(record, JobRecord):
            raise TypeError(f"create_job takes a JobRecord, got {type(record).__name__}")
        now = _to_text(self._clock())
        activation = json.dumps({"mode": record.activation.mode.value, "command_hex": record.activation.command_hex})

        def body(conn: sqlite3.Connection) -> int:
            busy = conn.execute(
                f"SELECT job_id, state FROM jobs WHERE device = ? AND queued = 0 AND state NOT IN ({_placeholders(_END_VALUES)})",
                (record.device, *_END_VALUES),
            ).fetchone()
            if busy is not None and supersede is not None and busy[0] == supersede:
                conn.execute("UPDATE jobs SET state = ?, reason = ?, updated_utc = ? WHERE job_id = ?", (SessionState.SUPERSEDED.value, reason, now, supersede))
                _after_update(conn, supersede, SessionState.SUPERSEDED, now, changed=True)
                busy = None
            if busy is not None and not queued:
                raise DeviceBusy(
                    f"device {record.device} already has active job {busy[0]} ({busy[1]}); cancel it or wait "
                    "for it to finish before creating another",
                    path=self.path,
                )
            cursor = conn.execute(
                """INSERT INTO jobs (device, image_path, image_sha256, manufacturer_code, image_type,
                       file_version, size, kind, activation, created_utc, state, reason, byte_offset,
                       session_snapshot, updated_utc, priority, queued)
                   VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, NULL, 0, NULL, ?, ?, ?)""",
                (
                    record.device,
                    record.image_path,
                    record.image_sha256,
                    record.manufacturer_code,
                    record.image_type,
                    record.file_version,
                    record.size,
                    record.kind.value,
                    activation,
                    _to_text(record.created_utc),
                    SessionState.PENDING.value,
                    now,
                    record.priority,
                    int(queued),
                ),
            )
            job_id = int(cursor.lastrowid or 0)
            conn.execute(
                "INSERT INTO job_history (job_id, seq, state, reason, byte_offset, at_utc) VALUES (?, 1, ?, NULL, 0, ?)",
                (job_id, SessionState.PENDING.value, now),
            )
            return job_id

        return self._write(body)

    def update_job(
        self,
        job_id: int,
        *,
        state: SessionState,
        reason: str | None = None,
        offset: int | None = None,
        session_snapshot: Mapping[str, Any] | None = None,
        queued: bool | None = None,
    ) -> Job:
        """Record where a job stands; returns the job as stored.

        ``queued`` False: a queued job takes its device (DeviceBusy if another active
        job still holds it); None keeps it as it is.

        ``reason`` describes the new state and replaces the old one (None clears it);
        ``offset`` and ``session_snapshot`` left as None keep their stored values.
        A job in an end state cannot move to another state (JobClosed); reaching an
        end state also deletes the job's scheduled activation, in the same transaction.
        """
        state = SessionState(state)
        if offset is not None and (not isinstance(offset, int) or offset < 0):
            raise ValueError(f"offset must be a non-negative integer, got {offset!r}")
        snapshot = _dump_json(session_snapshot, "session_snapshot")
        now = _to_text(self._clock())

        def body(conn: sqlite3.Connection) -> Job:
            row = conn.execute("SELECT state FROM jobs WHERE job_id = ?", (job_id,)).fetchone()
            if row is None:
                raise UnknownJob(f"no job {job_id} in {self.path}; `han-ota status` lists the jobs", path=self.path)
            old = SessionState(row[0])
            if old in END_STATES and state is not old:
                raise JobClosed(
                    f"job {job_id} is {old.value} and cannot become {state.value}; create a new job instead",
                    path=self.path,
                )
            try:
                conn.execute(
                    """UPDATE jobs SET state = ?, reason = ?, byte_offset = COALESCE(?, byte_offset),
                           session_snapshot = COALESCE(?, session_snapshot), updated_utc = ?,
                           queued = COALESCE(?, queued)
                       WHERE job_id = ?""",
                    (state.value, reason, offset, snapshot, now, None if queued is None else int(queued), job_id),
                )
            except sqlite3.IntegrityError as e:
                raise DeviceBusy(f"job {job_id} cannot take its device: another active job holds it ({e})", path=self.path) from e
            _after_update(conn, job_id, state, now, changed=state is not old)
            return self._job_from_row(conn.execute(f"{_JOB_SELECT} WHERE job_id = ?", (job_id,)).fetchone())

        return self._write(body)

    def get_job(self, job_id: int) -> Job:
        row = self._read(lambda c: c.execute(f"{_JOB_SELECT} WHERE job_id = ?", (job_id,)).fetchone())
        if row is None:
            raise UnknownJob(f"no job {job_id} in {self.path}; `han-ota status` lists the jobs", path=self.path)
        return self._job_from_row(row)

    def list_jobs(self, active_only: bool = False) -> list[Job]:
        """Jobs in creation order; with ``active_only``, only those not confirmed/failed/cancelled."""
        if active_only:
            sql = f"{_JOB_SELECT} WHERE state NOT IN ({_placeholders(_END_VALUES)}) ORDER BY job_id"
            rows = self._read(lambda c: c.execute(sql, _END_VALUES).fetchall())
        else:
            rows = self._read(lambda c: c.execute(f"{_JOB_SELECT} ORDER BY job_id").fetchall())
        return [self._job_from_row(r) for r in rows]

    def active_job_for_device(self, ieee: object) -> Job | None:
        device = normalize_ieee(ieee)
        sql = f"{_JOB_SELECT} WHERE device = ? AND state NOT IN ({_placeholders(_END_VALUES)})"
        row = self._read(lambda c: c.execute(sql, (device, *_END_VALUES)).fetchone())
        return None if row is None else self._job_from_row(row)

    def job_history(self, job_id: int) -> list[JobTransition]:
        rows = self._read(
            lambda c: c.execute(
                "SELECT job_id, seq, state, reason, byte_offset, at_utc FROM job_history WHERE job_id = ? ORDER BY seq",
                (job_id,),
            ).fetchall()
        )
        return [JobTransition(r[0], r[1], SessionState(r[2]), r[3], r[4], _from_text(r[5])) for r in rows]

    @staticmethod
    def _job_from_row(row: Sequence[Any]) -> Job:
        activation = json.loads(row[9])
        record = JobRecord(
            device=row[1],
            image_path=row[2],
            image_sha256=row[3],
            manufacturer_code=row[4],
            image_type=row[5],
            file_version=row[6],
            size=row[7],
            kind=JobKind(row[8]),
            activation=ActivationRequest(ActivationMode(activation["mode"]), activation.get("command_hex")),
            created_utc=_from_text(row[10]),
            priority=row[16],
        )
        return Job(
            job_id=row[0],
            record=record,
            state=SessionState(row[11]),
            reason=row[12],
            offset=row[13],
            session_snapshot=None if row[14] is None else json.loads(row[14]),
            updated_utc=_from_text(row[15]),
            queued=bool(row[17]),
        )

    # ------------------------------------------------------------------ scheduled activations

    def schedule_activation(self, job_id: int, at_utc: dt.datetime, command_hex: str) -> Schedule:
        """Set (or replace) the job's activation time and the verified command that set it."""
        at = _to_text(at_utc, "at_utc")
        command = _hex_bytes(command_hex, "command_hex")
        now = _to_text(self._clock())

        def body(conn: sqlite3.Connection) -> Schedule:
            row = conn.execute("SELECT state FROM jobs WHERE job_id = ?", (job_id,)).fetchone()
            if row is None:
                raise UnknownJob(f"no job {job_id} in {self.path}; cannot schedule its activation", path=self.path)
            if SessionState(row[0]) in END_STATES:
                raise JobClosed(f"job {job_id} is {row[0]}; there is nothing to activate", path=self.path)
            _upsert_schedule(conn, job_id, at, command, now)
            return Schedule(job_id, _from_text(at), command, _from_text(now))

        return self._write(body)

    def cancel_schedule(self, job_id: int) -> bool:
        """Drop the job's scheduled activation; True if there was one."""
        return self._write(lambda c: c.execute("DELETE FROM schedules WHERE job_id = ?", (job_id,)).rowcount > 0)

    def due_schedules(self, now_utc: dt.datetime) -> list[Schedule]:
        """Schedules whose time is at or before ``now_utc``, earliest first."""
        now = _to_text(now_utc, "now_utc")
        rows = self._read(
            lambda c: c.execute(
                "SELECT job_id, at_utc, command_hex, created_utc FROM schedules WHERE at_utc <= ? ORDER BY at_utc, job_id",
                (now,),
            ).fetchall()
        )
        return [Schedule(r[0], _from_text(r[1]), r[2], _from_text(r[3])) for r in rows]

    def list_schedules(self) -> list[Schedule]:
        rows = self._read(
            lambda c: c.execute(
                "SELECT job_id, at_utc, command_hex, created_utc FROM schedules ORDER BY at_utc, job_id"
            ).fetchall()
        )
        return [Schedule(r[0], _from_text(r[1]), r[2], _from_text(r[3])) for r in rows]

    # ------------------------------------------------------------------ anti-replay counters

    def last_counter(self, originator: object) -> int | None:
        key = normalize_originator(originator)
        row = self._read(lambda c: c.execute("SELECT counter FROM counters WHERE originator = ?", (key,)).fetchone())
        return None if row is None else int(row[0], 16)

    def last_counter_device(self, originator: object) -> str | None:
        """The device (IEEE) the last accepted counter was for; None if none or unrecorded (schema 1)."""
        key = normalize_originator(originator)
        row = self._read(lambda c: c.execute("SELECT device FROM counters WHERE originator = ?", (key,)).fetchone())
        return None if row is None else row[0]

    def advance_counter(self, originator: object, counter: int, device: str | None = None) -> None:
        """Accept ``counter`` for ``originator`` only if strictly greater than the last; else CounterNotIncreasing.

        Call it *before* acting on the command: once it returns, the counter is
        durable, so a crash afterwards can never let the same command be replayed.
        One conditional upsert, so two racing callers cannot both succeed.
        """
        key = normalize_originator(originator)
        _check_counter(counter)
        now = _to_text(self._clock())
        self._write(lambda conn: self._advance(conn, key, counter, device, now))

    def _advance(self, conn: sqlite3.Connection, key: str, counter: int, device: str | None, now: str) -> None:
        changed = conn.execute(
            """INSERT INTO counters (originator, counter, updated_utc, device) VALUES (?, ?, ?, ?)
               ON CONFLICT (originator) DO UPDATE SET counter = excluded.counter,
                   updated_utc = excluded.updated_utc, device = excluded.device
               WHERE excluded.counter > counters.counter""",
            (key, _counter_text(counter), now, device),
        ).rowcount
        if changed != 1:
            last, last_device = conn.execute("SELECT counter, device FROM counters WHERE originator = ?", (key,)).fetchone()
            raise CounterNotIncreasing(key, counter, int(last, 16), path=self.path, device=last_device)

    def accept(self, acceptance: Acceptance) -> None:
        """Advance the counter, record the verdict and keep the decided action, in one transaction.

        A crash can then never leave a spent counter without the decision it paid for:
        either nothing happened (the same command is accepted again), or the schedule
        is there and the daemon carries it out when it starts.
        """
        verdict = acceptance.verdict
        originator, counter = verdict.originator, verdict.counter
        assert originator is not None and counter is not None  # checked by Acceptance
        now = _to_text(self._clock())
        command = _hex_bytes(acceptance.command_hex, "command_hex")

        def body(conn: sqlite3.Connection) -> None:
            self._advance(conn, originator, counter, verdict.device, now)
            self._insert_verdict(conn, verdict)
            job = verdict.job_id
            if job is None or conn.execute("SELECT 1 FROM jobs WHERE job_id = ?", (job,)).fetchone() is None:
                return  # a job this store does not keep (an in-process push): nothing to carry out later
            if acceptance.activate_at is None:
                conn.execute("DELETE FROM schedules WHERE job_id = ?", (job,))
            else:
                _upsert_schedule(conn, job, _to_text(acceptance.activate_at, "activate_at"), command, now)

        self._write(body)

    def raise_counter(self, originator: object, counter: int, device: str | None = None) -> bool:
        """Recovery: set the counter to ``counter`` if that is higher than the stored one (or none is).

        Never lowers a counter; returns True if it changed. For counters read back from
        the audit log, not for accepting commands (that is ``advance_counter``).
        """
        key = normalize_originator(originator)
        value = _counter_text(counter)
        now = _to_text(self._clock())
        return self._write(
            lambda c: c.execute(
                """INSERT INTO counters (originator, counter, updated_utc, device) VALUES (?, ?, ?, ?)
                   ON CONFLICT (originator) DO UPDATE SET counter = excluded.counter,
                       updated_utc = excluded.updated_utc, device = excluded.device
                   WHERE excluded.counter > counters.counter""",
                (key, value, now, device),
            ).rowcount
            == 1
        )

    def counters(self) -> dict[str, tuple[int, str | None]]:
        """Every originator's last accepted counter and the device it was for."""
        rows = self._read(lambda c: c.execute("SELECT originator, counter, device FROM counters ORDER BY originator").fetchall())
        return {r[0]: (int(r[1], 16), r[2]) for r in rows}

    # ------------------------------------------------------------------ audit log anchor

    def audit_anchor(self) -> tuple[int, str] | None:
        """(seq, hash) of the audit log's head as last noted; None if never noted."""
        row = self._read(lambda c: c.execute("SELECT seq, hash FROM audit_anchor WHERE id = 1").fetchone())
        return None if row is None else (int(row[0]), str(row[1]))

    def set_audit_anchor(self, seq: int, hash: str) -> None:
        """Note the audit log's head; called after every append (one small upsert)."""
        if not isinstance(seq, int) or seq < 0:
            raise ValueError(f"audit seq must be a non-negative integer, got {seq!r}")
        now = _to_text(self._clock())
        self._write(
            lambda c: c.execute(
                """INSERT INTO audit_anchor (id, seq, hash, updated_utc) VALUES (1, ?, ?, ?)
                   ON CONFLICT (id) DO UPDATE SET seq = excluded.seq, hash = excluded.hash,
                       updated_utc = excluded.updated_utc""",
                (seq, hash, now),
            )
        )

    def audit_checkpoint(self) -> tuple[int, str, int] | None:
        """(seq, hash, byte offset) the audit chain was last verified to; None if never or cleared."""
        row = self._read(lambda c: c.execute("SELECT checked_seq, checked_hash, checked_offset FROM audit_anchor WHERE id = 1").fetchone())
        if row is None or row[0] is None:
            return None
        return int(row[0]), str(row[1]), int(row[2])

    def set_audit_checkpoint(self, checkpoint: tuple[int, str, int] | None) -> None:
        """Note how far the chain verified (None: forget it, e.g. for a new chain). Needs an anchor row."""
        values = (None, None, None) if checkpoint is None else checkpoint
        self._write(
            lambda c: c.execute(
                "UPDATE audit_anchor SET checked_seq = ?, checked_hash = ?, checked_offset = ? WHERE id = 1", values
            )
        )

    # ------------------------------------------------------------------ GBCS verdicts

    def record_verdict(self, verdict: Verdict) -> int:
        """Store the outcome of verifying a GBCS command; returns its id."""
        if not isinstance(verdict, Verdict):
            raise TypeError(f"record_verdict takes a Verdict, got {type(verdict).__name__}")
        return self._write(lambda conn: self._insert_verdict(conn, verdict))

    @staticmethod
    def _insert_verdict(conn: sqlite3.Connection, verdict: Verdict) -> int:
        cursor = conn.execute(
            """INSERT INTO verdicts (device, job_id, accepted, reason, response_code, alert_code,
                   counter, originator, at_utc, details)
               VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)""",
            (
                verdict.device,
                verdict.job_id,
                int(verdict.accepted),
                verdict.reason,
                verdict.response_code,
                verdict.alert_code,
                None if verdict.counter is None else _counter_text(verdict.counter),
                verdict.originator,
                _to_text(verdict.at_utc),
                _dump_json(verdict.details, "details"),
            ),
        )
        return int(cursor.lastrowid or 0)

    def list_verdicts(self, device: object | None = None) -> list[Verdict]:
        """Verdicts in the order recorded, for one device or all."""
        sql = (
            "SELECT device, accepted, reason, at_utc, job_id, response_code, alert_code, counter, originator, details "
            "FROM verdicts"
        )
        if device is None:
            rows = self._read(lambda c: c.execute(f"{sql} ORDER BY verdict_id").fetchall())
        else:
            key = normalize_ieee(device)
            rows = self._read(lambda c: c.execute(f"{sql} WHERE device = ? ORDER BY verdict_id", (key,)).fetchall())
        return [
            Verdict(
                device=r[0],
                accepted=bool(r[1]),
                reason=r[2],
                at_utc=_from_text(r[3]),
                job_id=r[4],
                response_code=r[5],
                alert_code=r[6],
                counter=None if r[7] is None else int(r[7], 16),
                originator=r[8],
                details=None if r[9] is None else json.loads(r[9]),
            )
            for r in rows
        ]

    # ------------------------------------------------------------------ GBCS messages (issue 13)

    def record_message(
        self,
        direction: MessageDirection | str,
        ieee: object | None,
        data: bytes,
        job_id: int | None = None,
        *,
        known: TrustStore | None = None,
        details: Mapping[str, Any] | None = None,
    ) -> StoredMessage:
        """Keep one GBCS message the hub forwarded ("out") or received ("in"), parsed and
        judged against ``known`` (the keys the hub knows); bytes that are not GBCS are
        kept too, as malformed. Returns the row as stored."""
        direction = MessageDirection(direction)
        device = None if ieee is None else normalize_ieee(ieee)
        info = read_message(bytes(data), known)
        now = _to_text(self._clock())
        extra = _dump_json(details, "details")

        def body(conn: sqlite3.Connection) -> int:
            cursor = conn.execute(
                f"INSERT INTO messages (at_utc, direction, status, device, job_id, details, {_INFO_COLUMNS})"
                " VALUES (?, ?, 'recorded', ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (now, direction.value, device, job_id, extra, *_info_values(info)),
            )
            return int(cursor.lastrowid or 0)

        return self.get_message(self._write(body))

    def reserve_hub_message(
        self, ieee: object | None, job_id: int | None, details: Mapping[str, Any], *, floor: int = 1
    ) -> StoredMessage:
        """Take the hub's next originator counter for a message not yet signed, in one
        transaction: the counter and a 'reserved' row carrying ``details`` (what the
        message will say, so a restart can finish it). The counter is above every one
        reserved before and at least ``floor``; it is never handed out again."""
        device = None if ieee is None else normalize_ieee(ieee)
        _check_counter(floor)
        now = _to_text(self._clock())
        extra = _dump_json(details, "details")

        def body(conn: sqlite3.Connection) -> int:
            row = conn.execute("SELECT reserved FROM hub_counter WHERE id = 1").fetchone()
            counter = max(floor, 1 if row is None else int(row[0], 16) + 1)
            text = _counter_text(counter)
            conn.execute(
                """INSERT INTO hub_counter (id, reserved, committed, updated_utc) VALUES (1, ?, NULL, ?)
                   ON CONFLICT (id) DO UPDATE SET reserved = excluded.reserved, updated_utc = excluded.updated_utc""",
                (text, now),
            )
            cursor = conn.execute(
                "INSERT INTO messages (at_utc, direction, status, device, job_id, counter, details)"
                " VALUES (?, 'hub', 'reserved', ?, ?, ?, ?)",
                (now, device, job_id, text, extra),
            )
            return int(cursor.lastrowid or 0)

        return self.get_message(self._write(body))

    def complete_hub_message(self, message_id: int, data: bytes, *, known: TrustStore | None = None) -> StoredMessage:
        """Keep the signed bytes of a reserved hub message and commit its counter, in one
        transaction. The bytes must carry the counter reserved for them."""
        info = read_message(bytes(data), known)

        def body(conn: sqlite3.Connection) -> None:
            row = conn.execute("SELECT status, counter FROM messages WHERE message_id = ? AND direction = 'hub'", (message_id,)).fetchone()
            if row is None or row[0] != "reserved":
                raise StoreError(f"hub message {message_id} is not reserved in {self.path}", path=self.path)
            if info.counter is None or _counter_text(info.counter) != row[1]:
                raise StoreError(
                    f"hub message {message_id} was reserved counter {int(row[1], 16)}, its bytes carry {info.counter}", path=self.path
                )
            conn.execute(
                f"UPDATE messages SET status = 'recorded', ({_INFO_COLUMNS}) = (?, ?, ?, ?, ?, ?, ?) WHERE message_id = ?",
                (*_info_values(info), message_id),
            )
            conn.execute(
                "UPDATE hub_counter SET committed = ? WHERE id = 1 AND (committed IS NULL OR committed < ?)",
                (row[1], row[1]),
            )

        self._write(body)
        return self.get_message(message_id)

    def annotate_message(self, message_id: int, details: Mapping[str, Any]) -> StoredMessage:
        """Merge ``details`` into a kept message's details, in one transaction (a forwarded
        command's re-forward after a restart, say); its bytes and header are never changed."""

        def body(conn: sqlite3.Connection) -> None:
            row = conn.execute("SELECT details FROM messages WHERE message_id = ?", (message_id,)).fetchone()
            if row is None:
                raise StoreError(f"no message {message_id} in {self.path}", path=self.path)
            merged = {**(json.loads(row[0]) if row[0] else {}), **details}
            conn.execute("UPDATE messages SET details = ? WHERE message_id = ?", (_dump_json(merged, "details"), message_id))

        self._write(body)
        return self.get_message(message_id)

    def hub_counter(self) -> tuple[int, int | None] | None:
        """(last reserved, last committed) of the hub's originator counter; None before the first."""
        row = self._read(lambda c: c.execute("SELECT reserved, committed FROM hub_counter WHERE id = 1").fetchone())
        if row is None:
            return None
        return int(row[0], 16), None if row[1] is None else int(row[1], 16)

    def pending_hub_messages(self) -> list[StoredMessage]:
        """Hub messages reserved and not yet recorded (a crash came between): oldest first."""
        return self.list_messages(status="reserved")

    def get_message(self, message_id: int) -> StoredMessage:
        rows = self._read(lambda c: c.execute(f"{_MESSAGE_SELECT} WHERE message_id = ?", (message_id,)).fetchall())
        if not rows:
            raise StoreError(f"no message {message_id} in {self.path}", path=self.path)
        return _message_from_row(rows[0])

    def list_messages(
        self,
        *,
        device: object | None = None,
        job_id: int | None = None,
        after_id: int | None = None,
        status: str | None = "recorded",
        limit: int | None = None,
    ) -> list[StoredMessage]:
        """Messages in the order kept; ``after_id`` for following; ``status`` None: any."""
        where: list[str] = []
        args: list[object] = []
        if device is not None:
            where.append("device = ?")
            args.append(normalize_ieee(device))
        if job_id is not None:
            where.append("job_id = ?")
            args.append(job_id)
        if after_id is not None:
            where.append("message_id > ?")
            args.append(after_id)
        if status is not None:
            where.append("status = ?")
            args.append(status)
        sql = _MESSAGE_SELECT + (" WHERE " + " AND ".join(where) if where else "")
        if limit is None:
            rows = self._read(lambda c: c.execute(sql + " ORDER BY message_id", args).fetchall())
        else:  # the newest ``limit``, still in order
            rows = self._read(lambda c: c.execute(sql + " ORDER BY message_id DESC LIMIT ?", (*args, int(limit))).fetchall())[::-1]
        return [_message_from_row(r) for r in rows]



_INFO_COLUMNS = "data, message_code, cra, originator, recipient, counter, signature"
_MESSAGE_SELECT = (
    "SELECT message_id, at_utc, direction, status, device, job_id, data, message_code, cra, originator, recipient,"
    " counter, signature, details FROM messages"
)


def _info_fields(info: MessageInfo) -> dict[str, Any]:
    """A parsed message's header as the message store keeps it (StoredMessage's fields)."""
    return {
        "data": info.data,
        "message_code": None if info.message_code is None else int(info.message_code),
        "cra": None if info.cra_flag is None else info.cra_flag.name.lower(),
        "originator": None if info.originator is None else str(info.originator),
        "recipient": None if info.recipient is None else str(info.recipient),
        "counter": info.counter,
        "signature": info.verdict.value,
    }


def _info_values(info: MessageInfo) -> tuple[Any, ...]:
    """The same, in _INFO_COLUMNS order, as the columns hold them."""
    fields = _info_fields(info)
    counter = fields["counter"]
    fields["counter"] = None if counter is None else _counter_text(counter)
    return tuple(fields[name.strip()] for name in _INFO_COLUMNS.split(","))


def _message_from_row(r: Sequence[Any]) -> StoredMessage:
    return StoredMessage(
        message_id=r[0],
        at_utc=_from_text(r[1]),
        direction=MessageDirection(r[2]),
        status=r[3],
        device=r[4],
        job_id=r[5],
        data=None if r[6] is None else bytes(r[6]),
        message_code=r[7],
        cra=r[8],
        originator=r[9],
        recipient=r[10],
        counter=None if r[11] is None else int(r[11], 16),
        signature=r[12],
        details=None if r[13] is None else json.loads(r[13]),
    )


def read_audit_anchor(path: str | os.PathLike[str]) -> tuple[int, str] | None:
    """The audit anchor of the database at ``path``, read-only (no create, no migration).

    None when there is no database, it predates schema 3, or it cannot be read: a
    reader (``han-ota log --verify``) then checks the chain alone.
    """
    if not Path(path).is_file():
        return None
    try:
        conn = sqlite3.connect(f"{Path(path).absolute().as_uri()}?mode=ro", uri=True, timeout=BUSY_TIMEOUT_MS / 1000)
    except sqlite3.Error:
        return None
    try:
        row = conn.execute("SELECT seq, hash FROM audit_anchor WHERE id = 1").fetchone()
    except sqlite3.Error:
        return None
    finally:
        conn.close()
    return None if row is None else (int(row[0]), str(row[1]))


_JOB_SELECT = (
    "SELECT job_id, device, image_path, image_sha256, manufacturer_code, image_type, file_version, size, kind, "
    "activation, created_utc, state, reason, byte_offset, session_snapshot, updated_utc, priority, queued FROM jobs"
)


def _after_update(conn: sqlite3.Connection, job_id: int, state: SessionState, now: str, *, changed: bool) -> None:
    """A job's row was updated: its history gains the new state, and an ended job loses its schedule."""
    if changed:
        conn.execute(
            """INSERT INTO job_history (job_id, seq, state, reason, byte_offset, at_utc)
               SELECT job_id, (SELECT COALESCE(MAX(seq), 0) + 1 FROM job_history WHERE job_id = ?),
                      state, reason, byte_offset, ?
               FROM jobs WHERE job_id = ?""",
            (job_id, now, job_id),
        )
    if state in END_STATES:
        conn.execute("DELETE FROM schedules WHERE job_id = ?", (job_id,))


def _upsert_schedule(conn: sqlite3.Connection, job_id: int, at: str, command: str, now: str) -> None:
    conn.execute(
        """INSERT INTO schedules (job_id, at_utc, command_hex, created_utc) VALUES (?, ?, ?, ?)
           ON CONFLICT (job_id) DO UPDATE SET at_utc = excluded.at_utc,
               command_hex = excluded.command_hex, created_utc = excluded.created_utc""",
        (job_id, at, command, now),
    )


def _placeholders(values: Sequence[object]) -> str:
    return ", ".join("?" for _ in values)


def _fsync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
