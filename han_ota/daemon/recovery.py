"""After a restart: every job in the store brought back into the engine.

Run once, on the first radio start (reconnects after it unpark, see lifecycle.py).
Each active job is restored from its session snapshot at or before the device's
offset (the device asks for the block it needs), with no new Image Notify unless it
was never snapshotted; its kept CS06 is armed again unless a verdict was recorded;
kept schedules are restored; image copies no job uses are collected.
"""

from __future__ import annotations

import hashlib
import logging
import time
from pathlib import Path
from typing import Any

import zigpy.types as zt

from eui64 import Eui64
from gateway.engine import Engine, EngineError, Job
from gateway.image import parse_image
from gateway.ota import events as ev
from gateway.store import ActivationMode, JobRecord, StoreError
from han_ota.daemon.images import collect_images
from han_ota.daemon.journal import Journal, Track
from han_ota.daemon.runtime import Runtime

LOGGER = logging.getLogger("han_ota.daemon")


def restore_job(engine: Engine, job: Job, *, start: bool = False) -> Job:
    """Register ``job`` (with its restored session) without an Image Notify unless ``start``."""
    return engine.adopt(job, start=start)


class Recovery:
    def __init__(self, runtime: Runtime, journal: Journal) -> None:
        self.runtime = runtime
        self.journal = journal
        self.done = False

    def resume_jobs(self) -> None:
        """Bring back every active job in the store (after the first radio start), and
        the last cancelled or failed job of every other device (see ``_resume_ended``)."""
        store, engine, activation = self.journal.store, self.runtime.engine, self.runtime.activation
        assert store is not None and engine is not None and activation is not None
        try:
            records = store.list_jobs()
        except StoreError as exc:
            self.journal.store_failed(exc)
            return
        active = [r for r in records if r.active]
        busy = {r.record.device for r in active}
        last_ended: dict[str, Any] = {}
        for rec in records:
            if not rec.active and rec.record.device not in busy:
                last_ended[rec.record.device] = rec  # creation order: the last one wins
        # Jobs holding their device first: the queued ones queue behind them again.
        for rec in sorted(active, key=lambda r: (r.queued, r.job_id)):
            try:
                self._resume_one(rec)
            except Exception as exc:
                reason = f"cannot resume after restart: {exc}"
                LOGGER.error("job %s (%s): %s", rec.job_id, rec.record.device, reason)
                self.journal.fail_stored(rec.job_id, rec.record.device, reason)
        for rec in last_ended.values():
            self._resume_ended(rec)
        try:
            schedules = store.list_schedules()
        except StoreError as exc:
            self.journal.store_failed(exc)
            schedules = []
        for sched in schedules:
            try:
                job = engine.job(str(sched.job_id))
            except EngineError:
                continue
            if job.done:
                continue
            activation.restore_schedule(job, sched.at_utc, sched.command_hex)
            self.journal.write("job.schedule_restored", job.ieee, job=sched.job_id, at=sched.at_utc.isoformat())
        collect_images(self.runtime.config.state_dir, (j.image_path for j in engine.jobs() if j.image_path is not None))
        self.done = True

    def _resume_ended(self, rec: Any) -> None:
        """A cancelled or failed push may have left its device holding the image, asking
        Upgrade End every few minutes. Unanswered, some clients apply it by themselves;
        the ended session still answers (ABORT for a cancelled image, which the device
        then discards; "hold" for a failed push), so it is re-attached after a restart
        too, and a push after the restart takes the discard over from it.
        Best effort: without its image (deleted, changed) there is nothing to attach."""
        if rec.state is ev.SessionState.CONFIRMED or rec.session_snapshot is None:
            return
        try:
            self._resume_one(rec)
        except Exception as exc:
            LOGGER.warning("job %s (%s, %s): not re-attached after restart: %s", rec.job_id, rec.record.device, rec.state.value, exc)

    def _resume_one(self, rec: Any) -> Job | None:
        engine, activation = self.runtime.engine, self.runtime.activation
        assert engine is not None and activation is not None and self.journal.store is not None
        record: JobRecord = rec.record
        path = Path(record.image_path)
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise RuntimeError(f"image {path} cannot be read ({exc.strerror}); push the image again") from None
        digest = hashlib.sha256(data).hexdigest()
        if digest != record.image_sha256:
            raise RuntimeError(f"image {path} has changed since the job was accepted (sha256 {digest[:16]}..., expected {record.image_sha256[:16]}...); push the image again")
        image = parse_image(data)
        ieee = zt.EUI64(Eui64.parse(record.device).air)
        # Accepted but never snapshotted (stopped within moments): the engine starts it
        # over with an Image Notify.
        start = rec.session_snapshot is None
        mode = record.activation.mode.value
        self.journal.tracks[str(rec.job_id)] = Track(kind=record.kind.value, persisted_offset=rec.offset, persisted_at=time.monotonic())
        job = engine.restore(
            str(rec.job_id), ieee, image, rec.session_snapshot, image_path=path, activation=mode, priority=record.priority, queued=rec.queued
        )
        session = job.session
        self.journal.write("job.restored", ieee, job=rec.job_id, state=job.state.value, offset=session.offset, size=image.size, notify=start)
        LOGGER.info("job %s (%s): resumed %s at offset %d of %d", job.id, ieee, job.state.value, session.offset, image.size)
        if job.state in ev.END_STATES:
            if rec.active:
                self.journal.persist(job)  # the snapshot knew before the row did
        elif mode == ActivationMode.COMMAND.value and record.activation.command_hex and job.state is not ev.SessionState.ACTIVATED:
            if not self._verdict_recorded(rec.job_id, record.device):
                activation.arm(job, record.activation.command_hex)
        return job

    def _verdict_recorded(self, job_id: int, device: str) -> bool:
        assert self.journal.store is not None
        try:
            return any(v.job_id == job_id for v in self.journal.store.list_verdicts(device))
        except StoreError:
            return True  # cannot tell: do not risk a second submit
