"""Start-up integrity of a state directory: the audit log against the store that anchors it.

The audit log (``gateway.audit``) proves its own order, but not its length: records
cut off its end leave a valid chain, and their sequence numbers would be reused. So
the store keeps the log's head (seq, hash), noted after every append
(``StateStore.set_audit_anchor``), and a daemon starts only when the chain verifies
and reaches that head (``check_at_start``). Each start verifies from the checkpoint
the previous start verified to (the whole log the first time, or when the store lost
it); ``han-ota log --verify`` always checks the whole chain.

The anchor also shows the opposite loss: a store that was deleted, emptied or
replaced beside a non-empty log has no anchor (or an older one). Anti-replay counters
are then read back from the log -- the highest accepted counter per originator -- and
raised in the store before any command is taken (never lowered).

A broken chain is never continued. ``seal_log`` (``han-ota log --seal``) renames the
damaged log to ``audit.sealed-<time>.jsonl`` (it is never deleted), recovers counters
from its sound prefix, and starts a new chain whose first record says why and names
the sealed file and its last good record.
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gateway.audit import DEFAULT_FILENAME, AuditError, AuditLog, AuditRecord, VerifyResult, verify_log
from gateway.store import StateStore, normalize_originator

VERDICT_EVENT = "gbcs.verdict"
SEALED_EVENT = "audit.sealed"
RECOVERED_EVENT = "store.recovered"
_UTC = dt.timezone.utc


class ChainBroken(AuditError):
    """The audit log does not verify against itself or the store's anchor; start refused."""

    def __init__(self, message: str, result: VerifyResult) -> None:
        super().__init__(message)
        self.result = result


class NothingToSeal(AuditError):
    """``seal_log`` found a sound log: there is nothing to recover from."""


class CounterCollector:
    """Reads the highest accepted counter per originator out of audit records.

    An accepted CS06 is a ``gbcs.verdict`` record with ``accepted`` true, its
    ``originator`` and ``counter``; seal and recovery records carry the whole counter
    table, so counters survive a seal (the old records are in the sealed file).
    """

    def __init__(self) -> None:
        self.found: dict[str, tuple[int, str | None]] = {}

    def __call__(self, record: AuditRecord) -> None:
        f = record.fields
        if record.event == VERDICT_EVENT and f.get("accepted") is True:
            self._note(f.get("originator"), f.get("counter"), record.device)
        elif record.event in (SEALED_EVENT, RECOVERED_EVENT):
            for item in f.get("counters") or ():
                if isinstance(item, dict):
                    self._note(item.get("originator"), item.get("counter"), item.get("device"))

    def _note(self, originator: Any, counter: Any, device: Any) -> None:
        if not isinstance(counter, int) or isinstance(counter, bool) or not 0 <= counter < 1 << 64:
            return
        try:
            key = normalize_originator(originator)
        except (ValueError, TypeError):
            return
        if key not in self.found or counter > self.found[key][0]:
            self.found[key] = (counter, device if isinstance(device, str) else None)

    def raise_in(self, store: StateStore) -> dict[str, int]:
        """Raise the store's counters to these (never lower); the ones that moved."""
        raised = {}
        for originator, (counter, device) in sorted(self.found.items()):
            if store.raise_counter(originator, counter, device):
                raised[originator] = counter
        return raised


def counter_table(store: StateStore) -> list[dict[str, Any]]:
    """The store's counters as an audit field (what a later recovery reads back)."""
    return [{"originator": o, "counter": c, "device": d} for o, (c, d) in store.counters().items()]


@dataclass(frozen=True)
class StartCheck:
    records: int  # records that verified (all of them)
    head: tuple[int, str]
    raised: dict[str, int] = field(default_factory=dict)  # counters read back from the log
    warning: str | None = None  # the store had lost state: say so loudly, and audit it
    checkpoint: tuple[int, str, int] | None = None  # verified from here; the records before it were not checked now
    verified_to: tuple[int, str, int] | None = None  # the checkpoint to note once the records before are checked


def check_at_start(store: StateStore, log_path: Path, *, seal_command: str = "han-ota log --seal") -> StartCheck:
    """Verify the whole chain against the store's anchor; recover counters; raise ChainBroken.

    Call before anything is appended or any command is taken.
    """
    anchor = store.audit_anchor()
    checkpoint = store.audit_checkpoint()
    if checkpoint is not None and (anchor is None or checkpoint[0] > anchor[0] or checkpoint[0] == 0):
        checkpoint = None  # not of this chain, or the start of it: check it all now
    collector = CounterCollector()
    result = verify_log(log_path, expect_head=anchor, on_record=collector, start=checkpoint)
    if not result.ok and checkpoint is not None:
        # Name the real first bad record (it may lie before the checkpoint).
        checkpoint, collector = None, CounterCollector()
        result = verify_log(log_path, expect_head=anchor, on_record=collector)
    if not result.ok:
        where = f"record {result.first_bad_seq}" + (f" (line {result.line})" if result.line else "")
        noted = f"; the state store noted head record {anchor[0]}" if anchor else ""
        raise ChainBroken(
            f"audit log {log_path} is broken at {where}: {result.reason}{noted}. Records 1..{result.records} "
            f"verify; the daemon will not continue a broken chain. Inspect it with `han-ota log --verify`, then "
            f"run `{seal_command}` (with the daemon stopped): it keeps the damaged log as "
            f"audit.sealed-<time>.jsonl, recovers anti-replay counters from its sound part, and starts a new "
            f"chain that records why; then start the daemon again",
            result,
        )
    raised = collector.raise_in(store)
    head = (result.records, result.head_hash)
    warning = None
    if anchor is None and result.records:
        warning = (
            f"state store {store.path} has no note of the audit log's head although {log_path} has "
            f"{result.records} records: the store is new, was emptied or replaced (or was written by a han-ota "
            f"before store schema 3). Recovered {len(raised)} anti-replay counter(s) from the audit log (the "
            f"highest accepted per originator) before taking any command; jobs are not recovered -- their "
            f"history is in the audit log (`han-ota log`)"
        )
    elif raised:
        warning = (
            f"state store {store.path} had anti-replay counters behind the audit log (restored from an older "
            f"copy?): raised {', '.join(f'{o} to {c}' for o, c in raised.items())} from the audit log"
        )
    if anchor != head:
        store.set_audit_anchor(*head)
    verified_to = (result.records, result.head_hash, result.end_offset)
    if checkpoint is None:
        store.set_audit_checkpoint(verified_to)
    # Else the caller verifies the records before the checkpoint too (off the start-up
    # path) and only then moves it to verified_to, so a break there is never skipped.
    return StartCheck(result.records, head, raised, warning, checkpoint, verified_to)


@dataclass(frozen=True)
class SealResult:
    sealed_file: str | None  # None when there was no log file to move
    reason: str
    last_good_seq: int
    last_good_hash: str
    counters_raised: dict[str, int]
    record: AuditRecord  # the new chain's first record

    def to_dict(self) -> dict[str, Any]:
        return {
            "sealed": True,
            "sealed_file": self.sealed_file,
            "reason": self.reason,
            "last_good_seq": self.last_good_seq,
            "last_good_hash": self.last_good_hash,
            "counters_raised": self.counters_raised,
            "new_head": {"seq": self.record.seq, "hash": self.record.hash},
        }


def seal_log(state_dir: Path, store: StateStore, *, clock: Callable[[], dt.datetime] | None = None) -> SealResult:
    """Move a broken audit log aside and start a new chain; raises NothingToSeal for a sound one.

    The caller makes sure no daemon is running on ``state_dir``.
    """
    now = (clock or (lambda: dt.datetime.now(_UTC)))()
    path = Path(state_dir) / DEFAULT_FILENAME
    anchor = store.audit_anchor()
    collector = CounterCollector()
    if path.exists():
        result = verify_log(path, expect_head=anchor, on_record=collector)
        if result.ok:
            raise NothingToSeal(
                f"audit log {path} verifies ({result.records} records"
                + (f", reaching the head the store noted, record {anchor[0]}" if anchor else "")
                + "): nothing to seal"
            )
        reason = result.reason or "broken"
    elif anchor is not None and anchor[0] > 0:
        result = VerifyResult(False, 0, 1, "the audit log file is missing", None)
        reason = f"the audit log file is missing although the state store noted head record {anchor[0]}"
    else:
        raise NothingToSeal(f"there is no audit log at {path} and the store expects none: nothing to seal")
    sealed_name = None
    if path.exists():
        sealed_name = _move_aside(path, now)
    raised = collector.raise_in(store)
    if anchor is not None:
        store.set_audit_checkpoint(None)  # offsets of the sealed file, not of the new chain
    with AuditLog(path, on_append=store.set_audit_anchor) as log:
        record = log.append(
            SEALED_EVENT,
            warning=True,
            message="a broken audit log was sealed aside; this chain starts anew",
            reason=reason,
            sealed_file=sealed_name,
            first_bad_seq=result.first_bad_seq,
            first_bad_line=result.line,
            last_good_seq=result.records,
            last_good_hash=result.head_hash,
            anchor_seq=None if anchor is None else anchor[0],
            anchor_hash=None if anchor is None else anchor[1],
            counters=counter_table(store),
        )
    return SealResult(sealed_name, reason, result.records, result.head_hash, raised, record)


def _move_aside(path: Path, now: dt.datetime) -> str:
    """Rename ``path`` to audit.sealed-<UTC time>.jsonl without overwriting anything; the new name."""
    stamp = now.astimezone(_UTC).strftime("%Y%m%dT%H%M%SZ")
    for n in range(1000):
        name = f"audit.sealed-{stamp}{'' if n == 0 else f'-{n}'}.jsonl"
        target = path.with_name(name)
        try:
            os.link(path, target)  # fails if the name exists, where rename would replace it
        except FileExistsError:
            continue
        os.unlink(path)
        fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        return name
    raise AuditError(f"cannot find a free audit.sealed-{stamp}-N.jsonl name in {path.parent}")


__all__ = [
    "ChainBroken",
    "CounterCollector",
    "NothingToSeal",
    "SealResult",
    "StartCheck",
    "check_at_start",
    "counter_table",
    "seal_log",
]
