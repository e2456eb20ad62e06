"""The daemon's durable record: the state store and the hash-chained audit log.

``Journal`` opens both at start (checking the chain against the head the store
noted, ``gateway.integrity``), writes every observed job action into them (state
changes and progress to the store, notes, frames and outcomes to the log), and keeps
what failed writes left behind: ``store_error``/``audit_error`` for ``status``, and
dirty jobs retried on the next tick. A failing write never raises into the engine.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import hashlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import zigpy.types as zt

from gateway import audit as audit_mod
from gateway import integrity
from gateway.activation import SubmitResult
from gateway.audit import AuditError, AuditLog
from gateway.crashpoint import crashpoint
from gateway.engine import Job, QueueChanged
from gateway.gbcs.codes import ResponseCode
from gateway.ota import events as ev
from gateway.store import StateStore, StoreError
from han_ota.daemon.runtime import DaemonStartError, Runtime, store_id

LOGGER = logging.getLogger("han_ota.daemon")

PROGRESS_BYTES = 4096
PROGRESS_SECONDS = 2.0
SENT_OF_INTEREST = (
    ev.SendImageNotify,
    ev.SendQueryNextImageResponse,
    ev.SendWaitForData,
    ev.SendAbort,
    ev.SendUpgradeEndResponse,
)


@dataclass
class Track:
    """Persistence bookkeeping of one job."""

    kind: str
    persisted_offset: int = -1
    persisted_at: float = 0.0
    decile: int = -1
    dirty: bool = False


class Journal:
    def __init__(
        self,
        runtime: Runtime,
        *,
        on_change: Callable[[], None],
        progress_bytes: int = PROGRESS_BYTES,
        progress_seconds: float = PROGRESS_SECONDS,
    ) -> None:
        self.runtime = runtime
        self._on_change = on_change  # something status shows changed
        self.progress_bytes = progress_bytes
        self.progress_seconds = progress_seconds
        self.store: StateStore | None = None
        self.audit: AuditLog | None = None
        self.tracks: dict[str, Track] = {}
        self.store_error: str | None = None
        self.audit_error: str | None = None
        self.audit_verified = 0  # records verified at start
        self.start_warning: str | None = None  # the store had lost state at start (see open)
        self.chain_error: str | None = None  # the records before the start checkpoint do not verify
        self.check_from: tuple[int, str, int] | None = None

    # ------------------------------------------------------------------ open / close

    def open(self, state_dir: Path) -> None:
        """The store and the audit log, the chain checked; raises DaemonStartError
        (with both closed again)."""
        try:
            self.store = StateStore.in_state_dir(state_dir)
            self.audit = AuditLog.in_state_dir(state_dir, on_append=self._anchor)
            # Before anything is appended or any command taken: never continue a broken
            # or cut chain, and never take a command with counters the store has lost.
            check = integrity.check_at_start(self.store, self.audit.path, seal_command=self.seal_command())
        except (AuditError, StoreError) as exc:
            self.close()
            raise DaemonStartError(str(exc)) from None
        self.audit_verified = check.records - (check.checkpoint[0] if check.checkpoint else 0)
        if check.checkpoint is not None:
            self.check_from = check.verified_to
        if check.warning is not None:
            LOGGER.warning("%s", check.warning)
            self.start_warning = check.warning
            self.write(integrity.RECOVERED_EVENT, warning=True, message=check.warning, raised=check.raised, counters=integrity.counter_table(self.store))

    def close(self) -> None:
        if self.store is not None:
            self.store.close()
            self.store = None
        if self.audit is not None:
            self.audit.close()
            self.audit = None

    def seal_command(self) -> str:
        return self.runtime.cli("log --seal")

    async def verify_whole_chain(self) -> None:
        """The start verified from the last checkpoint; the records before it are checked
        here, off the start-up path (a long log takes a while). A break cannot refuse a
        start that has happened, so it is shown: logged, and status says audit.ok false."""
        assert self.audit is not None and self.store is not None and self.check_from is not None
        result = await asyncio.to_thread(audit_mod.verify_log, self.audit.path)
        try:
            # Sound: the next start checks only what comes after this start's head.
            # Broken: forget the checkpoint, so the next start checks all and refuses.
            self.store.set_audit_checkpoint(self.check_from if result.ok else None)
        except StoreError as exc:
            self.store_failed(exc)
        if result.ok:
            return
        self.chain_error = (
            f"audit log {self.audit.path} is broken at record {result.first_bad_seq}: {result.reason}; stop the "
            f"daemon and run `{self.seal_command()}`"
        )
        LOGGER.error("%s", self.chain_error)
        self._on_change()

    def _anchor(self, seq: int, digest: str) -> None:
        """The audit log's on_append hook: note its head in the store (see gateway.integrity)."""
        if self.store is None:
            return
        try:
            self.store.set_audit_anchor(seq, digest)
        except StoreError as exc:  # a lagging anchor is harmless: the log may run ahead of it
            self.store_failed(exc)

    # ------------------------------------------------------------------ writes

    def write(self, event: str, device: object | None = None, *, job: int | None = None, **fields: Any) -> None:
        """One audit record; a failure is logged and shown, never raised."""
        if self.audit is None:
            return
        try:
            self.audit.append(event, device=None if device is None else str(device), job=job, **fields)
        except (AuditError, ValueError, OSError) as exc:
            message = str(exc)
            if message != self.audit_error:
                LOGGER.error("audit log write failed (%s): %s", event, message)
            self.audit_error = message
            return
        if self.audit_error is not None:
            LOGGER.info("audit log writes work again")
            self.audit_error = None

    def store_failed(self, exc: Exception) -> None:
        message = str(exc)
        if message != self.store_error:
            LOGGER.error("state store write failed: %s", message)
        self.store_error = message
        self._on_change()

    def store_read(self, body: Callable[[StateStore], list[Any]]) -> list[Any]:
        """A read of the store; nothing (and the failure shown) if it fails."""
        if self.store is None:
            return []
        try:
            return body(self.store)
        except StoreError as exc:
            self.store_failed(exc)
            return []

    def persist(self, job: Job) -> bool:
        assert self.store is not None
        track = self.tracks.setdefault(job.id, Track(kind="hcalcs"))
        engine = self.runtime.engine
        assert engine is not None
        offset = job.session.offset
        try:
            self.store.update_job(
                store_id(job),
                state=job.state,
                reason=job.session.reason,
                offset=offset,
                session_snapshot=engine.snapshot(job),
                queued=job.queued,
            )
        except StoreError as exc:
            track.dirty = True
            self.store_failed(exc)
            return False
        track.dirty = False
        track.persisted_offset = offset
        track.persisted_at = time.monotonic()
        if self.store_error is not None and not any(t.dirty for t in self.tracks.values()):
            LOGGER.info("state store writes work again")
            self.store_error = None
        return True

    def persist_all(self, *, force: bool = False) -> None:
        engine = self.runtime.engine
        if engine is None or self.store is None:
            return
        now = time.monotonic()
        for job in list(engine.jobs()):
            track = self.tracks.get(job.id)
            if track is None:
                continue
            due = track.dirty and (now - track.persisted_at >= self.progress_seconds or self.store_error is not None)
            if force or due:
                self.persist(job)

    def fail_stored(self, job_id: int, device: str, reason: str) -> None:
        """A stored job that cannot run (not resumed, not started): failed, with why."""
        assert self.store is not None
        try:
            self.store.update_job(job_id, state=ev.SessionState.FAILED, reason=reason)
        except StoreError as exc:
            self.store_failed(exc)
        self.write("job.resume_failed", device, job=job_id, reason=reason)

    # ------------------------------------------------------------------ observation (engine observer)

    def on_job_action(self, job: Job, action: ev.Action | QueueChanged) -> None:
        number = store_id(job)
        track = self.tracks.setdefault(job.id, Track(kind="hcalcs"))
        if isinstance(action, QueueChanged):
            # The report's timeline reads queued as a state of its own.
            old, new = ("pending", "queued") if action.queued else ("queued", "pending")
            reason = f"queued behind job {action.behind}" if action.queued else "device free: started from the queue"
            self.write("job.state", job.ieee, job=number, old=old, new=new, reason=reason, offset=job.session.offset)
            self.persist(job)
            self._on_change()
        elif isinstance(action, ev.StateChanged):
            self.write("job.state", job.ieee, job=number, old=action.old.value, new=action.new.value, reason=action.reason, offset=job.session.offset)
            self.persist(job)
            if action.new is ev.SessionState.SUPERSEDED:
                # Its outcome in GBCS terms: no image held (CCS08-style response code 1),
                # the device told to discard it.
                self.on_outcome(job, "superseded", f"image discarded: {action.reason}", int(ResponseCode.NO_IMAGE_HELD), None)
            self._on_change()
        elif isinstance(action, ev.Progress):
            now = time.monotonic()
            if action.offset - track.persisted_offset >= self.progress_bytes or now - track.persisted_at >= self.progress_seconds:
                self.persist(job)
            else:
                track.dirty = True
            decile = min(10, action.offset * 10 // max(action.total, 1))
            if decile != track.decile:
                track.decile = decile
                self.write("job.progress", job.ieee, job=number, offset=action.offset, size=action.total, percent=decile * 10)
        elif isinstance(action, ev.Note) and action.kind is ev.NoteKind.NUDGE:
            # docs/control-api.md's name for it, from before nudges were the session's.
            self.write("job.nudge", job.ieee, job=number, offset=action.offset, attempt=job.session.nudge_attempt, message=action.message)
        elif isinstance(action, ev.Note):
            self.write(f"ota.{action.kind.value}", job.ieee, job=number, message=action.message, offset=action.offset, warning=action.warning)
            if action.kind is ev.NoteKind.ACTIVATION:
                self.persist(job)  # release_by_command: the snapshot must know before the command leaves
        elif isinstance(action, SENT_OF_INTEREST):
            fields = {k: v for k, v in dataclasses.asdict(action).items() if k != "tsn"}
            self.write("ota.sent", job.ieee, job=number, command=type(action).__name__, **fields)

    # ------------------------------------------------------------------ the activation service's hooks

    def on_outcome(self, job: Job | None, step: str, message: str, response: int | None, alert: int | None) -> None:
        self.write(
            f"gbcs.{step}",
            None if job is None else job.ieee,
            job=None if job is None else store_id(job),
            message=message,
            response_code=response,
            alert_code=None if alert is None else f"0x{alert:04X}",
        )

    def on_schedule(self, job: Job, at: dt.datetime | None, command_hex: str | None) -> None:
        assert self.store is not None
        try:
            if at is None:
                self.store.cancel_schedule(store_id(job))
            else:
                self.store.schedule_activation(store_id(job), at, (command_hex or "").lower())
        except StoreError as exc:
            self.store_failed(exc)
        self.write("gbcs.schedule" if at is not None else "gbcs.unschedule", job.ieee, job=store_id(job), at=None if at is None else at.isoformat())

    def command_submitted(self, command: bytes | str, device: zt.EUI64 | None) -> None:
        """Every submitted command (armed one-step submits included), before it is verified."""
        raw = command if isinstance(command, bytes) else command.encode("ascii", "replace")
        self.write("gbcs.command", device, job=self._job_number_for(device), length=len(raw), sha256=hashlib.sha256(raw).hexdigest())

    def record_verdict(self, result: SubmitResult) -> None:
        """Every verdict audited; a refused one also stored (an accepted one was, with its counter)."""
        assert self.store is not None
        job_number = int(result.job) if result.job and result.job.isdigit() else None
        fields = {("image_hash" if k == "hash" else k): v for k, v in result.to_dict().items() if k not in ("device", "job")}
        self.write("gbcs.verdict", result.device, job=job_number, **fields)
        if result.device is not None and not result.accepted:
            try:
                self.store.record_verdict(result.record(job_number, dt.datetime.now(dt.timezone.utc)))
            except (StoreError, ValueError) as exc:
                self.store_failed(exc)
        if result.accepted:
            crashpoint("submit.audited")

    def _job_number_for(self, device: zt.EUI64 | None) -> int | None:
        engine = self.runtime.engine
        if device is None or engine is None:
            return None
        job = engine.job_for_device(device)
        return None if job is None else store_id(job)

    def ke_event(self, name: str, device: object | None = None, **fields: Any) -> None:
        """The key-establishment service's events (ke.started, ke.established, ...) into
        the audit log. Fields never carry key material (the service's rule)."""
        fields.pop("job", None)
        self.write(name, device, **fields)
