"""Append-only, hash-chained audit log: what the gateway did, in an order nobody can quietly change.

One JSON Lines file in the state directory (``/var/lib/han-ota/audit.jsonl``). Each
line is a record::

    {"device": ..., "event": ..., "hash": ..., "job": ..., "prev": ..., "seq": ..., "ts": ..., <fields>...}

``seq`` counts from 1; ``prev`` is the previous record's ``hash`` (64 zeros for the
first); ``hash`` is SHA-256 over the canonical JSON (sorted keys, no spaces, UTF-8)
of the record without ``hash``. Editing, deleting, inserting or reordering a record
breaks the chain at that point, and ``verify()`` names it. Cutting records off the
*end* cannot be seen from the file alone: keep ``head()`` somewhere else and pass it
to ``verify(expect_head=...)`` to catch that too.

Durability: a record is one ``os.write`` to an ``O_APPEND`` descriptor followed by
``os.fsync``, both done before ``append`` returns, under a thread lock and an
exclusive ``flock`` (so two processes appending cannot interleave or fork the chain).

Torn tails: a crash mid-write can leave a last line without its newline. Such a
record was never acknowledged, so it is kept out of the chain: when the log is
opened for writing (or before the next append notices one), the bytes after the
last newline are appended to ``<log>.torn`` (one JSON line per recovery, with the
byte offset, the raw bytes in hex and a text rendering), fsynced, and only then cut
from the log; a warning names both files. The chain continues from the last whole
record, so it stays intact. Readers skip a torn tail; ``verify`` reports one that
has not been recovered yet.

Every record is also mirrored to the ``han_ota.audit`` logger as one line
``event seq=.. device=.. job=.. key=value ...`` so that, under systemd, the journal
has it from stderr.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import enum
import fcntl
import hashlib
import json
import logging
import os
import threading
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path, PurePath
from typing import Any

from gateway.store import normalize_ieee

logger = logging.getLogger("han_ota.audit")

GENESIS = "0" * 64
DEFAULT_FILENAME = "audit.jsonl"
TORN_SUFFIX = ".torn"
RESERVED = frozenset({"seq", "ts", "event", "device", "job", "prev", "hash"})
_UTC = dt.timezone.utc
_TAIL_CHUNK = 64 * 1024


class AuditError(Exception):
    """The audit log could not be opened, written or read; the message names the file and the fix."""


class AuditCorrupt(AuditError):
    """A line of the audit log is not a valid record."""


@dataclass(frozen=True)
class AuditRecord:
    seq: int
    ts: str  # UTC, ISO 8601 with microseconds and a Z
    event: str
    device: str | None
    job: int | None
    fields: Mapping[str, Any]
    prev: str
    hash: str

    def as_dict(self) -> dict[str, Any]:
        """The record as it is stored (one flat JSON object)."""
        return {
            **self.fields,
            "seq": self.seq,
            "ts": self.ts,
            "event": self.event,
            "device": self.device,
            "job": self.job,
            "prev": self.prev,
            "hash": self.hash,
        }

    def to_json(self) -> str:
        return _canonical(self.as_dict())

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> AuditRecord:
        missing = sorted(k for k in RESERVED if k not in data)
        if missing:
            raise ValueError(f"missing {', '.join(missing)}")
        seq, job = data["seq"], data["job"]
        if not isinstance(seq, int) or isinstance(seq, bool) or seq < 1:
            raise ValueError(f"seq must be a positive integer, got {seq!r}")
        if job is not None and (not isinstance(job, int) or isinstance(job, bool)):
            raise ValueError(f"job must be an integer or null, got {job!r}")
        for key in ("ts", "event", "prev", "hash"):
            if not isinstance(data[key], str):
                raise ValueError(f"{key} must be a string, got {data[key]!r}")
        return cls(
            seq=seq,
            ts=data["ts"],
            event=data["event"],
            device=data["device"],
            job=job,
            fields={k: v for k, v in data.items() if k not in RESERVED},
            prev=data["prev"],
            hash=data["hash"],
        )


@dataclass(frozen=True)
class VerifyResult:
    """``ok`` when every record links to the one before it and hashes to its ``hash``.

    ``records`` counts the records that verified (all of them when ok). When not ok,
    ``first_bad_seq`` is the chain position where it first breaks -- records
    1..first_bad_seq-1 are sound -- ``line`` is the 1-based line in the file, and
    ``reason`` says what is wrong there.
    """

    ok: bool
    records: int
    first_bad_seq: int | None = None
    reason: str | None = None
    line: int | None = None
    head_hash: str = GENESIS  # hash of the last sound record
    end_offset: int = 0  # bytes of the file up to the end of the last sound record


def record_hash(record: Mapping[str, Any]) -> str:
    """SHA-256 (hex) of the canonical JSON of ``record`` without its ``hash`` key."""
    body = {k: v for k, v in record.items() if k != "hash"}
    return hashlib.sha256(_canonical(body).encode("utf-8")).hexdigest()


# --------------------------------------------------------------------------- the writer


class AuditLog:
    """The audit log of one state directory, open for appending. Thread-safe and multi-process safe."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        clock: Callable[[], dt.datetime] | None = None,
        on_append: Callable[[int, str], None] | None = None,
    ) -> None:
        self.path = Path(path)
        # Called with (seq, hash) after each record is on disk, in append order: where
        # the daemon keeps the head outside the log (the store), so a cut tail shows.
        self.on_append = on_append
        self.torn_path = self.path.with_name(self.path.name + TORN_SUFFIX)
        self._clock = clock or (lambda: dt.datetime.now(_UTC))
        self._lock = threading.Lock()
        directory = self.path.parent
        if not directory.is_dir():
            raise AuditError(
                f"audit log directory {directory} does not exist: create it (mkdir -p {directory}, owned by "
                "the service user) or run under systemd with StateDirectory=han-ota"
            )
        created = not self.path.exists()
        try:
            self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o640)
        except OSError as e:
            raise AuditError(
                f"cannot open audit log {self.path}: {e.strerror}; the state directory must be writable "
                "by the service user"
            ) from e
        if created:
            _fsync_directory(directory)
        self._seq = 0
        self._head = GENESIS
        self._end = -1  # file size after our last write; anything else means re-read the tail
        with self._lock, _flocked(self._fd, fcntl.LOCK_EX):
            self._sync_head()

    @classmethod
    def in_state_dir(cls, state_dir: str | os.PathLike[str], **kwargs: Any) -> AuditLog:
        return cls(Path(state_dir) / DEFAULT_FILENAME, **kwargs)

    def close(self) -> None:
        with self._lock:
            if self._fd >= 0:
                os.close(self._fd)
                self._fd = -1

    def __enter__(self) -> AuditLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def head(self) -> tuple[int, str]:
        """(seq, hash) of the last record written; (0, GENESIS) for an empty log."""
        with self._lock:
            return self._seq, self._head

    def append(self, event: str, *, device: object | None = None, job: int | None = None, **fields: Any) -> AuditRecord:
        """Write one record and fsync it; returns it once it is on disk."""
        if not isinstance(event, str) or not event or any(c.isspace() for c in event):
            raise ValueError(f"event must be a non-empty word such as 'job.created', got {event!r}")
        clash = sorted(RESERVED & fields.keys())
        if clash:
            raise ValueError(f"field name(s) {', '.join(clash)} are reserved for the record itself; rename them")
        if job is not None and (not isinstance(job, int) or isinstance(job, bool)):
            raise ValueError(f"job must be an integer job id, got {job!r}")
        device_text = None if device is None else normalize_ieee(device)
        body = _plain(fields, "fields")
        with self._lock:
            if self._fd < 0:
                raise AuditError(f"audit log {self.path} is closed")
            with _flocked(self._fd, fcntl.LOCK_EX):
                if os.fstat(self._fd).st_size != self._end:
                    self._sync_head()  # another process appended, or a crash left a torn tail
                ts = self._clock()
                if ts.tzinfo is None:
                    raise ValueError("the audit clock must return timezone-aware datetimes")
                record: dict[str, Any] = {
                    **body,
                    "seq": self._seq + 1,
                    "ts": ts.astimezone(_UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
                    "event": event,
                    "device": device_text,
                    "job": job,
                    "prev": self._head,
                }
                record["hash"] = record_hash(record)
                data = (_canonical(record) + "\n").encode("utf-8")
                try:
                    _write_all(self._fd, data)
                    os.fsync(self._fd)
                except OSError as e:
                    # A partial line may be on disk; the next append (or open) moves it to .torn.
                    self._end = -1
                    raise AuditError(
                        f"cannot write audit log {self.path}: {e.strerror}"
                        + ("; free space on the state filesystem" if e.errno == 28 else "")
                    ) from e
                self._seq, self._head = record["seq"], record["hash"]
                self._end = os.fstat(self._fd).st_size
            if self.on_append is not None:
                self.on_append(record["seq"], record["hash"])  # under the thread lock: anchors never go back
        result = AuditRecord.from_dict(record)
        logger.info("%s", _journal_line(result), extra={"audit": result.as_dict()})
        return result

    def read(self, device: object | None = None, since_seq: int | None = None) -> Iterator[AuditRecord]:
        return read_records(self.path, device=device, since_seq=since_seq)

    def follow(
        self, device: object | None = None, since_seq: int | None = None, poll_interval: float = 0.5
    ) -> AsyncIterator[AuditRecord]:
        return follow_records(self.path, device=device, since_seq=since_seq, poll_interval=poll_interval)

    def verify(self, expect_head: tuple[int, str] | None = None) -> VerifyResult:
        return verify_log(self.path, expect_head=expect_head)

    # ------------------------------------------------------------------ recovery

    def _sync_head(self) -> None:
        """Recover a torn tail and load (seq, hash) of the last record. Call under both locks."""
        size = os.fstat(self._fd).st_size
        with open(self.path, "rb") as f:
            complete_end, lines = _tail_lines(f, size)
            if complete_end < size:
                f.seek(complete_end)
                self._save_torn(complete_end, f.read(size - complete_end))
                os.ftruncate(self._fd, complete_end)
                os.fsync(self._fd)
                size = complete_end
        self._seq, self._head = 0, GENESIS
        for number, line in enumerate(reversed(lines)):
            try:
                record = AuditRecord.from_dict(json.loads(line))
            except (ValueError, UnicodeDecodeError) as e:
                logger.error(
                    "audit log %s: line %d from the end is not a valid record (%s); continuing the chain "
                    "after the last valid one -- run `han-ota log --verify`",
                    self.path,
                    number + 1,
                    e,
                )
                continue
            self._seq, self._head = record.seq, record.hash
            break
        self._end = size

    def _save_torn(self, offset: int, data: bytes) -> None:
        note = {
            "recovered": self._clock().astimezone(_UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
            "log": str(self.path),
            "offset": offset,
            "length": len(data),
            "data_hex": data.hex(),
            "text": data.decode("utf-8", errors="replace"),
        }
        fd = os.open(self.torn_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o640)
        try:
            _write_all(fd, (_canonical(note) + "\n").encode("utf-8"))
            os.fsync(fd)
        finally:
            os.close(fd)
        logger.warning(
            "audit log %s: a crash left %d bytes of an unfinished record at byte %d; moved them to %s and "
            "continued the chain after the last whole record",
            self.path,
            len(data),
            offset,
            self.torn_path,
        )


# --------------------------------------------------------------------------- readers


def read_records(
    path: str | os.PathLike[str], device: object | None = None, since_seq: int | None = None
) -> Iterator[AuditRecord]:
    """Records in file order, optionally one device's and only those with seq > ``since_seq``.

    Needs only read access. Raises AuditCorrupt on a line that is not a record; a torn
    last line (no newline yet) is skipped. Does not check the chain: use ``verify_log``.
    """
    path = Path(path)
    wanted = None if device is None else normalize_ieee(device)
    with _open_for_reading(path) as f:
        end = _stable_size(f)
        for number, line in _complete_lines(f, end):
            record = _parse(path, number, line)
            if since_seq is not None and record.seq <= since_seq:
                continue
            if wanted is not None and record.device != wanted:
                continue
            yield record


async def follow_records(
    path: str | os.PathLike[str],
    device: object | None = None,
    since_seq: int | None = None,
    poll_interval: float = 0.5,
) -> AsyncIterator[AuditRecord]:
    """Like ``read_records``, then keeps polling for new records (``han-ota log --follow``).

    Only whole lines are yielded, so a record being written is picked up once it
    is complete. If the file is replaced (new inode) or shrinks below what was
    read, it is read again from the start, skipping records already yielded.
    """
    path = Path(path)
    wanted = None if device is None else normalize_ieee(device)
    last_seq = since_seq if since_seq is not None else 0
    f = None
    inode = None
    position = 0
    number = 0
    try:
        while True:
            if f is None:
                try:
                    f = open(path, "rb")
                except FileNotFoundError:
                    await asyncio.sleep(poll_interval)
                    continue
                inode, position, number = os.fstat(f.fileno()).st_ino, 0, 0
            try:
                stat = os.stat(path)
            except FileNotFoundError:
                stat = None
            if stat is None or stat.st_ino != inode or stat.st_size < position:
                f.close()
                f = None
                continue
            # Consume whole lines only and re-read any partial tail next time: a torn
            # tail may be cut by the writer's recovery and replaced by a new record.
            f.seek(position)
            chunk = f.read()
            whole = chunk[: chunk.rfind(b"\n") + 1]
            position += len(whole)
            for line in whole.split(b"\n")[:-1]:
                number += 1
                record = _parse(path, number, line)
                if record.seq <= last_seq:
                    continue
                last_seq = record.seq
                if wanted is None or record.device == wanted:
                    yield record
            await asyncio.sleep(poll_interval)
    finally:
        if f is not None:
            f.close()


def verify_log(
    path: str | os.PathLike[str],
    expect_head: tuple[int, str] | None = None,
    on_record: Callable[[AuditRecord], None] | None = None,
    start: tuple[int, str, int] | None = None,
) -> VerifyResult:
    """Check the whole chain and name the first record that breaks it.

    With ``expect_head`` = (seq, hash) noted earlier (``AuditLog.head()``), also
    catches records cut off the end, which the chain alone cannot show.
    ``on_record`` sees each record that verified, in order (none after the break),
    so a caller can read state back from the sound prefix in the same pass.
    ``start`` = (seq, hash, end_offset) of an earlier result checks only the records
    after it (a checkpoint); the records before it are taken as verified then.
    """
    path = Path(path)
    expected_seq = 1
    prev = GENESIS
    line_no = 0
    offset = 0
    if start is not None:
        expected_seq, prev, offset = start[0] + 1, start[1], start[2]
        line_no = start[0]  # in a sound log, record n is line n

    def bad(reason: str, line: int | None) -> VerifyResult:
        return VerifyResult(False, expected_seq - 1, expected_seq, reason, line, prev, offset)

    with _open_for_reading(path) as f:
        end = _stable_size(f)
        if offset > end:
            return bad(f"the log is {end} bytes, shorter than the {offset} bytes verified earlier: records were cut off the end", None)
        for line_no, line in _complete_lines(f, end, offset, line_no):
            try:
                data = json.loads(line)
                if not isinstance(data, dict):
                    raise ValueError("not a JSON object")
                record = AuditRecord.from_dict(data)
            except (ValueError, UnicodeDecodeError) as e:
                return bad(f"line {line_no} is not a valid record ({e})", line_no)
            if record.seq != expected_seq:
                what = (
                    f"record {expected_seq} was deleted or moved"
                    if record.seq > expected_seq
                    else "a record was inserted or moved"
                )
                return bad(f"line {line_no} has seq {record.seq} where seq {expected_seq} belongs: {what}", line_no)
            if record.prev != prev:
                return bad(
                    f"record {record.seq} (line {line_no}) does not link to record {record.seq - 1}: its prev "
                    f"is not that record's hash (record {record.seq - 1} was altered or replaced)",
                    line_no,
                )
            if record_hash(data) != record.hash:
                return bad(f"record {record.seq} (line {line_no}) does not match its hash: it was edited", line_no)
            if expect_head is not None and record.seq == expect_head[0] and record.hash != expect_head[1]:
                return bad(f"record {record.seq} (line {line_no}) is not the record noted as the head earlier", line_no)
            if on_record is not None:
                on_record(record)
            prev = record.hash
            expected_seq += 1
            offset += len(line) + 1
        tail = _torn_tail_length(f, end)
    if tail:
        return bad(
            f"the last {tail} bytes are an unfinished record (a crash during append); opening the log for "
            f"writing moves them to {path.name}{TORN_SUFFIX}",
            line_no + 1,
        )
    if expect_head is not None and expect_head[0] >= expected_seq:
        return bad(
            f"the log ends at record {expected_seq - 1} but record {expect_head[0]} was noted earlier: "
            "records were cut off the end",
            None,
        )
    return VerifyResult(True, expected_seq - 1, head_hash=prev, end_offset=offset)


# --------------------------------------------------------------------------- helpers


def _canonical(value: Mapping[str, Any]) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def _plain(fields: Mapping[str, Any], name: str) -> dict[str, Any]:
    """Fields as plain JSON values, so the hash covers exactly what is stored."""

    def convert(value: Any) -> Any:
        if isinstance(value, (bytes, bytearray, memoryview)):
            return bytes(value).hex()
        if isinstance(value, dt.datetime):
            return value.isoformat()
        if isinstance(value, enum.Enum):
            return value.value
        if isinstance(value, PurePath):
            return str(value)
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            return dataclasses.asdict(value)
        if isinstance(value, (set, frozenset, tuple)):
            return list(value)
        raise TypeError(f"{type(value).__name__} is not JSON-serialisable")

    try:
        return json.loads(json.dumps(dict(fields), default=convert, allow_nan=False))
    except (TypeError, ValueError) as e:
        raise ValueError(f"audit {name} must be JSON values (str, int, float, bool, None, list, dict, bytes): {e}") from None


def _journal_line(record: AuditRecord) -> str:
    parts = [record.event, f"seq={record.seq}"]
    if record.device is not None:
        parts.append(f"device={record.device}")
    if record.job is not None:
        parts.append(f"job={record.job}")
    for key in sorted(record.fields):
        parts.append(f"{key}={_journal_value(record.fields[key])}")
    return " ".join(parts)


def _journal_value(value: Any) -> str:
    if isinstance(value, str):
        if value and not any(c.isspace() or c in '"=\\' for c in value):
            return value
        return json.dumps(value, ensure_ascii=False)
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _parse(path: Path, number: int, line: bytes) -> AuditRecord:
    try:
        data = json.loads(line)
        if not isinstance(data, dict):
            raise ValueError("not a JSON object")
        return AuditRecord.from_dict(data)
    except (ValueError, UnicodeDecodeError) as e:
        raise AuditCorrupt(
            f"audit log {path} line {number} is not a valid record ({e}); run `han-ota log --verify`"
        ) from None


class _open_for_reading:
    def __init__(self, path: Path) -> None:
        self.path = path

    def __enter__(self) -> Any:
        try:
            self.file = open(self.path, "rb")
        except FileNotFoundError:
            raise AuditError(f"no audit log at {self.path}; the daemon creates it on first start") from None
        except OSError as e:
            raise AuditError(f"cannot read audit log {self.path}: {e.strerror} (run as the han-ota user or root)") from e
        return self.file

    def __exit__(self, *exc: object) -> None:
        self.file.close()


def _stable_size(f: Any) -> int:
    # Appends happen under LOCK_EX; a size taken under LOCK_SH ends on a whole write.
    with _flocked(f.fileno(), fcntl.LOCK_SH):
        return os.fstat(f.fileno()).st_size


def _complete_lines(f: Any, end: int, start: int = 0, number: int = 0) -> Iterator[tuple[int, bytes]]:
    """(line number, bytes) of each newline-terminated line in f[start:end]; lines before start count ``number``."""
    f.seek(start)
    remaining = end - start
    pending = b""
    while remaining > 0:
        chunk = f.read(min(_TAIL_CHUNK, remaining))
        if not chunk:
            break
        remaining -= len(chunk)
        pending += chunk
        *lines, pending = pending.split(b"\n")
        for line in lines:
            number += 1
            yield number, line


def _torn_tail_length(f: Any, end: int) -> int:
    complete_end, _ = _tail_lines(f, end, want=0)
    return end - complete_end


def _tail_lines(f: Any, size: int, want: int = 8) -> tuple[int, list[bytes]]:
    """Offset just past the last newline in f[0:size], and up to ``want`` whole lines before it."""
    position = size
    buffer = b""
    complete_end = None
    while position > 0:
        step = min(_TAIL_CHUNK, position)
        position -= step
        f.seek(position)
        buffer = f.read(step) + buffer
        if complete_end is None:
            cut = buffer.rfind(b"\n")
            if cut < 0:
                continue
            complete_end = position + cut + 1
        whole = buffer[: complete_end - position]
        if want == 0:
            return complete_end, []
        if whole.count(b"\n") > want or position == 0:
            lines = whole.split(b"\n")[:-1]
            if position > 0:
                lines = lines[1:]  # the first may be cut
            return complete_end, lines[-want:]
    return 0, []  # no newline at all: every byte is a torn tail


class _flocked:
    def __init__(self, fd: int, kind: int) -> None:
        self.fd, self.kind = fd, kind

    def __enter__(self) -> None:
        fcntl.flock(self.fd, self.kind)

    def __exit__(self, *exc: object) -> None:
        fcntl.flock(self.fd, fcntl.LOCK_UN)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def _fsync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
