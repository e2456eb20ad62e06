"""Jobs: one push of one image to one device, on top of an OTA session.

The engine is the same for the one-shot ``han-ota push`` and for the daemon: it owns
the OTA driver and the coordinator-wide pacer, creates a session per job, logs every
step the session takes with device, image and offset, and lets callers wait for a
job to reach a state. Activation goes through ``activate`` only: the CLI's
``--activate-now`` (lab images, logged as such) and the activation gate call it.

HAN security: the engine holds the one `SecurityRegistry` (gateway.se.security) and
hands it to its driver. A push to a device the registry does not allow OTA to (an SE
device before its key is established) is accepted and stays PENDING with the
registry's waiting reason as the job's reason: its session is attached unstarted (so
that zigpy's own OTA handler stays quiet and the driver drops what the device sends),
and started, Image Notify first, when the registry says the device is allowed. A
session's blocks are capped for APS encryption (56) when the device's key is in force
at accept time, or from the moment it comes into force mid-push.

Radio outages: ``park`` (the radio is going away) freezes every job's session and
takes it off the radio, keeping zigpy's own OTA handler out; ``reconnected(app)``
moves the engine to the new application and resumes them there, without a new Image
Notify (the device asks again for the block it misses), nudging a transfer that stays
silent (``OtaSession.resume``). ``follow(supervisor)`` wires both to a
``radios.supervisor.RadioSupervisor``'s hooks. A job restored from the store after a
restart (``restore``) is resumed the same way. Snapshots are the engine's to make and
read (``snapshot``, ``restore``): its callers store them as they are.

Priorities (issue 15, ``gateway.ota.priority``): every job has one, and the session
passes it to the pacer, which serves higher ones first when the budget is short. A
push to a device that has a live job is admitted by ``admission``: it supersedes that
job (``OtaSession.supersede``: the job ends SUPERSEDED, its image is handed on to the
new session as one the device must discard, as after a cancel), waits queued (its
session exists but is attached to nothing; ``Job.queued_behind``), or is refused.
When a device's job ends, the first of its queue (highest priority, then oldest)
starts, inheriting the discard duty. Observers hear of queueing as ``QueueChanged``.

Traffic windows (``gateway.ota.windows``, ``[ota] windows``): while closed, the pacer
is paused (running transfers get WAIT_FOR_DATA, held devices are still answered) and
new jobs stay PENDING unstarted, their reason the window; one timer, armed for the
next change, reopens the pacer and starts them. ``[ota] han_share`` scales the
pacer's budget.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import itertools
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import zigpy.types as zt
from zigpy.application import ControllerApplication

from eui64 import Eui64
from gateway.config import OtaConfig
from gateway.image import FirmwareImage
from gateway.ota import events as ev
from gateway.ota.events import END_STATES
from gateway.ota.driver import OtaDriver
from gateway.ota.pacing import Pacer
from gateway.ota.priority import DEFAULT_PRIORITY, Admission, admit, priority_label
from gateway.ota.session import ImageInfo, OtaSession, SessionConfig
from gateway.ota.windows import TrafficWindows
from gateway.se.security import DeviceSecurity, SecurityRegistry

LOGGER = logging.getLogger("han_ota.ota")

#: A transfer silent this long after the radio came back (or a restart) gets Image
#: Notify, up to NUDGES times (see ``OtaSession.resume``).
NUDGE_AFTER_S = 5.0
NUDGES = 3
# What the engine adds to a session's snapshot: what it needs to rebuild the session's config.
SNAPSHOT_ENGINE_KEY = "daemon"  # the name snapshots in existing stores carry

#: States a job's push can be superseded in: before activation (the device is not yet
#: applying the image).
YIELDING_STATES = frozenset({ev.SessionState.PENDING, ev.SessionState.TRANSFERRING, ev.SessionState.HELD, ev.SessionState.SCHEDULED})


@dataclass(frozen=True)
class QueueChanged:
    """Engine news about a job's place: ``queued`` behind job ``behind``, or (queued
    False) taken from the queue and started."""

    queued: bool
    behind: str | None = None


# (job, action) for every note, progress and state change, and queue news; the daemon audits these.
JobObserver = Callable[["Job", "ev.Action | QueueChanged"], None]


class EngineError(RuntimeError):
    """A request the engine cannot carry out; the message says why and what to do."""


@dataclass
class Job:
    id: str
    ieee: zt.EUI64
    image: FirmwareImage
    session: OtaSession
    image_path: Path | None = None
    activation: str = "none"  # none | now | command
    created_wall: float = field(default_factory=time.time)
    created: float = field(default_factory=time.monotonic)
    transfer_started: float | None = None
    transfer_start_offset: int = 0
    transfer_ended: float | None = None
    finished: float | None = None
    warnings: list[str] = field(default_factory=list)
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    #: Why the session has not been started (the registry's waiting reason), else None.
    waiting: str | None = None
    #: The device's security when last seen (`DeviceSecurity.to_dict`), for status.
    security: dict[str, Any] | None = None
    #: gateway.ota.priority: 0..9, higher first.
    priority: int = DEFAULT_PRIORITY
    #: While queued: the job it waits behind (the device's live job when it was queued).
    queued_behind: str | None = None
    #: The job that superseded this one.
    superseded_by: str | None = None

    @property
    def queued(self) -> bool:
        return self.queued_behind is not None

    @property
    def state_name(self) -> str:
        """The state status shows: the session's, or ``queued``."""
        return "queued" if self.queued else self.state.value

    @property
    def state(self) -> ev.SessionState:
        return self.session.state

    @property
    def done(self) -> bool:
        return self.state in ev.END_STATES

    def rate_and_eta(self, now: float | None = None) -> tuple[float | None, float | None]:
        """Bytes per second since the device started (or resumed), and seconds left at that rate.

        Counts from where the device is, not from the high-water mark: after a resume
        from 20 % the bar says 20 %, and the rate covers only this run's bytes. Once the
        transfer has ended the rate stays what it was.
        """
        now = time.monotonic() if now is None else now
        if self.transfer_ended is not None:
            now = min(now, self.transfer_ended)
        served = self.session.position - self.transfer_start_offset
        if self.transfer_started is None or served <= 0:
            return None, None
        elapsed = max(now - self.transfer_started, 1e-6)
        rate = served / elapsed
        left = max(self.image.size - self.session.position, 0)
        return rate, (left / rate if rate > 0 else None)

    def track(self, action: ev.Action, now: float) -> None:
        """Keep the figures ``to_dict`` reports up to date with the session's actions."""
        if isinstance(action, ev.Note):
            if action.kind in (ev.NoteKind.FIRST_BLOCK, ev.NoteKind.RESUME):
                # The device (re)starts here: the rate is measured from this point.
                self.transfer_started, self.transfer_start_offset, self.transfer_ended = now, action.offset or 0, None
            elif action.kind is ev.NoteKind.TRANSFER_START and self.transfer_started is None:
                self.transfer_started, self.transfer_start_offset = now, self.session.position
            if action.warning:
                self.warnings.append(action.message)
        elif isinstance(action, ev.StateChanged):
            if action.old is ev.SessionState.TRANSFERRING:
                self.transfer_ended = now
            if action.new in ev.END_STATES:
                self.finished = now

    def to_dict(self) -> dict[str, Any]:
        end = self.finished if self.finished is not None else time.monotonic()
        rate, eta = self.rate_and_eta()
        ended = self.state in (ev.SessionState.FAILED, ev.SessionState.CANCELLED, ev.SessionState.SUPERSEDED)
        waiting = self.waiting if self.state is ev.SessionState.PENDING else None
        if self.queued:
            waiting = f"queued behind job {self.queued_behind} (priority {priority_label(self.priority)})"
        out = {
            "job": self.id,
            "device": str(Eui64.from_air(self.ieee)),
            "state": self.state_name,
            "reason": self.session.reason if ended else waiting,
            "detail": waiting or self.session.reason,
            "manufacturer_code": self.image.manufacturer_code,
            "image_type": self.image.image_type,
            "file_version": self.image.file_version,
            "device_file_version": self.session.device_file_version,
            "bytes": self.session.position,
            "size": self.image.size,
            "seconds": round(end - self.created, 3),
            "rate_bytes_per_s": None if rate is None else round(rate, 1),
            "eta_seconds": None if eta is None else round(eta, 1),
            "held_requests": self.session.held_requests,
            "activation": self.activation,
            "manufacturer_image_hash": self.image.manufacturer_image_hash.hex(),
            "image": str(self.image_path) if self.image_path else None,
            "warnings": list(self.warnings),
            "priority": self.priority,
            "queued_behind": self.queued_behind,
            "superseded_by": self.superseded_by,
        }
        if self.security is not None:
            out["security"] = dict(self.security)
        return out


def image_info(image: FirmwareImage) -> ImageInfo:
    return ImageInfo(
        manufacturer_code=image.manufacturer_code,
        image_type=image.image_type,
        file_version=image.file_version,
        data=image.data,
        min_hardware_version=image.min_hardware_version,
        max_hardware_version=image.max_hardware_version,
        # FirmwareImage keeps the EUI-64 written (most significant byte first); the session
        # compares against the over-the-air bytes zigpy sends.
        destination=None if image.destination is None else Eui64(image.destination).air,
    )


class Engine:
    def __init__(
        self,
        app: ControllerApplication,
        ota: OtaConfig = OtaConfig(),
        *,
        observer: JobObserver | None = None,
        session_overrides: dict[str, Any] | None = None,
        security: SecurityRegistry | None = None,
        nudge_after_s: float = NUDGE_AFTER_S,
        nudges: int = NUDGES,
        windows: TrafficWindows | None = None,
        wall_clock: Callable[[], dt.datetime] | None = None,
    ) -> None:
        self.app = app
        self.ota = ota
        self.pacer = Pacer(bytes_per_s=ota.budget_bytes_per_s, burst_bytes=ota.burst_bytes, max_inflight=ota.max_inflight)
        #: Every device's HAN security; without a config's modes every device is AUTO,
        #: which before any key establishment is today's (install-code) behaviour.
        self.security = security if security is not None else SecurityRegistry()
        self.driver = OtaDriver(app, observer=self._observe, aps_encryption=ota.aps_encryption, security=self.security)
        #: Resumed transfers silent this long get Image Notify, up to ``nudges`` times
        #: (0 for either: never).
        self.nudge_after_s = nudge_after_s
        self.nudges = nudges
        #: Applications the engine moved to (``rebind``, ``reconnected``).
        self.rebinds = 0
        self._parked: dict[str, Job] = {}
        self._unlisten = self.security.listen(self._security_changed)
        self._observers: list[JobObserver] = [observer] if observer is not None else []
        self._session_overrides = dict(session_overrides or {})
        self._jobs: dict[str, Job] = {}
        self._by_device: dict[zt.EUI64, Job] = {}
        # The driver reports every frame sent; finding the job by session is a pointer
        # hash, by EUI64 a repr of it.
        self._by_session: dict[object, Job] = {}
        self._ids = itertools.count(1)
        #: Jobs waiting for their device, per device: highest priority first, then oldest.
        self._queues: dict[zt.EUI64, list[Job]] = {}
        self.windows = windows if windows is not None else TrafficWindows.parse(ota.windows)
        self._wall = wall_clock or (lambda: dt.datetime.now(dt.timezone.utc))
        self.window_open = True
        #: When the window state next changes (UTC), None if never.
        self.window_change: dt.datetime | None = None
        self._window_timer: asyncio.TimerHandle | None = None
        if self.windows:
            self.refresh_windows()

    def add_observer(self, observer: JobObserver) -> None:
        self._observers.append(observer)

    # ------------------------------------------------------------------ jobs

    def session_config(self, stall_timeout_s: float | None = None, ieee: zt.EUI64 | None = None) -> SessionConfig:
        """``ieee``: cap the blocks for APS encryption if that device's key is in force."""
        aps = self.ota.aps_encryption or (ieee is not None and self.security.get(ieee).aps)
        kwargs: dict[str, Any] = dict(
            block_cap=self.ota.block_cap,
            aps_encryption=aps,
            stall_timeout_s=stall_timeout_s or self.ota.stall_timeout_s,
        )
        kwargs.update(self._session_overrides)
        return SessionConfig(**kwargs)

    def admission(self, ieee: zt.EUI64, priority: int = DEFAULT_PRIORITY, *, replace: bool = False) -> tuple[Admission, Job | None]:
        """What a push of ``priority`` to ``ieee`` would do (``gateway.ota.priority.admit``),
        and to which live job; ``push`` decides the same way."""
        current = self._by_device.get(ieee)
        live = current if current is not None and not current.done else None
        if live is None:
            return Admission.START, None
        return admit(priority, live.priority, replace=replace, current_can_yield=live.state in YIELDING_STATES), live

    def push(
        self,
        image: FirmwareImage,
        ieee: zt.EUI64,
        *,
        image_path: Path | None = None,
        stall_timeout_s: float | None = None,
        activation: str = "none",
        job_id: str | None = None,
        allow_unknown: bool = False,
        allow_downgrade: bool = False,
        priority: int = DEFAULT_PRIORITY,
        replace: bool = False,
    ) -> Job:
        """Start a job. ``allow_unknown``: a device the radio has not seen yet may still
        join or announce itself; its job stays pending until it queries.
        ``allow_downgrade``: serve a device that runs a newer version (else refused).
        ``priority`` and ``replace``: a device with a live job (see ``admission``):
        supersede it, queue behind it, or refuse (EngineError)."""
        admission, live = self.admission(ieee, priority, replace=replace)
        if admission is Admission.REFUSE:
            assert live is not None
            raise EngineError(
                f"{ieee} already has job {live.id} in state {live.state.value} at the same priority ({priority_label(priority)}); "
                f"cancel it first (han-ota cancel {live.id}), or push with --replace to supersede it"
            )
        if ieee not in self.app.devices and not allow_unknown:
            known = ", ".join(str(d) for d in self.app.devices if d != self.app.state.node_info.ieee) or "none"
            raise EngineError(f"{ieee} is not on this network (known devices: {known}); check --device, or let it join first")
        job_id = job_id or f"J{next(self._ids):04d}"
        if admission is Admission.SUPERSEDE:
            assert live is not None
            why = f"superseded by job {job_id} (priority {priority_label(priority)} over {priority_label(live.priority)})"
            live.superseded_by = job_id
            self._run(live, lambda now: live.session.supersede(now, why))
        session = OtaSession(
            Eui64.from_air(ieee),
            image_info(image),
            self.session_config(stall_timeout_s, ieee),
            self.pacer,
            allow_downgrade=allow_downgrade,
            priority=priority,
        )
        job = Job(id=job_id, ieee=ieee, image=image, session=session, image_path=image_path, activation=activation, priority=priority)
        self._jobs[job.id] = job
        self._by_session[session] = job
        self._log(job, logging.INFO, "job accepted: %s bytes, activation=%s, priority %s", image.size, activation, priority_label(priority))
        if admission is Admission.QUEUE:
            assert live is not None
            self._enqueue(job, live)
            return job
        self._take_device(job)
        return job

    def _take_device(self, job: Job) -> None:
        """``job`` becomes its device's job: attached, and started unless it must wait.

        The device may still hold the image of a cancelled or superseded push before
        this one: this session answers it from now on (one session per device), so it
        takes over the duty to make the device discard that image before it can take ours."""
        previous = self._by_device.get(job.ieee)
        if previous is not None and previous is not job:
            job.session.discard_images = job.session.discard_images | previous.session.discard_images
        self._by_device[job.ieee] = job
        security = self.security.get(job.ieee)
        job.security = security.to_dict()
        job.waiting = self._waiting_reason(job.ieee)
        if job.waiting is None:
            self.driver.attach(job.ieee, job.session)
        else:
            # Attached unstarted: before the key not one OTA frame goes (the driver drops
            # what the device sends meanwhile); _security_changed or the window starts it.
            self._log(job, logging.INFO, "waiting: %s", job.waiting)
            self.driver.attach(job.ieee, job.session, start=False)

    def _waiting_reason(self, ieee: zt.EUI64) -> str | None:
        """Why a job for ``ieee`` may not start now (security first, then the window), or None."""
        security = self.security.get(ieee)
        if not security.ota_allowed:
            return security.waiting_reason
        if not self.window_open:
            opens = "" if self.window_change is None else f"; opens {self.window_change.isoformat(timespec='minutes')}"
            return f"outside the traffic windows ({self.windows.describe()}){opens}"
        return None

    def _enqueue(self, job: Job, behind: Job) -> None:
        queue = self._queues.setdefault(job.ieee, [])
        job.queued_behind = behind.id
        # Highest priority first; among equals, the oldest (insertion after them).
        at = next((i for i, other in enumerate(queue) if other.priority < job.priority), len(queue))
        queue.insert(at, job)
        self._log(job, logging.INFO, "queued behind job %s (priority %s, place %d)", behind.id, priority_label(behind.priority), at + 1)
        self._tell(job, QueueChanged(True, behind.id))

    def queue(self, ieee: zt.EUI64) -> list[Job]:
        """The jobs waiting for ``ieee``, in the order they will start."""
        return list(self._queues.get(ieee, ()))

    def _start_next(self, ieee: zt.EUI64) -> None:
        current = self._by_device.get(ieee)
        if current is not None and not current.done:
            return
        if self._parked:
            return  # the radio is away: resume_parked starts it
        queue = self._queues.get(ieee)
        if not queue:
            return
        job = queue.pop(0)
        if not queue:
            del self._queues[ieee]
        job.queued_behind = None
        self._log(job, logging.INFO, "device free: starting from the queue")
        self._take_device(job)
        self._tell(job, QueueChanged(False))

    def adopt(self, job: Job, *, start: bool = False) -> Job:
        """Take over a job whose session was restored (daemon restart), without an Image
        Notify unless ``start``: a held device keeps being answered with hold, and a
        transfer that stays silent is nudged (``OtaSession.resume``)."""
        current = self._by_device.get(job.ieee)
        if current is not None and not current.done:
            raise EngineError(f"{job.ieee} already has job {current.id} in state {current.state.value}")
        self._jobs[job.id] = job
        self._by_device[job.ieee] = job
        self._by_session[job.session] = job
        security = self.security.get(job.ieee)
        job.security = security.to_dict()
        waiting = self._waiting_reason(job.ieee)
        if start and waiting is not None:
            job.waiting = waiting
            start = False
        self.driver.attach(job.ieee, job.session, start=start)
        if not start:
            self._resume(job)
        return job

    def snapshot(self, job: Job) -> dict[str, Any]:
        """The job's session as JSON-safe data, for a store to keep as it is."""
        snap = job.session.snapshot()
        snap[SNAPSHOT_ENGINE_KEY] = {"stall_timeout_s": job.session.config.stall_timeout_s}
        return snap

    def restore(
        self,
        job_id: str,
        ieee: zt.EUI64,
        image: FirmwareImage,
        snap: dict[str, Any] | None,
        *,
        image_path: Path | None = None,
        activation: str = "none",
        priority: int = DEFAULT_PRIORITY,
        queued: bool = False,
    ) -> Job:
        """Bring back a job kept by ``snapshot`` (after a restart) and take it over
        (``adopt``). Without a snapshot (accepted, stopped before one was taken) nothing
        that matters was sent: the push starts over with an Image Notify. A ``queued``
        job (never started) queues again behind its device's live job, or starts if
        the device is free: restore the live jobs first. Raises
        ``gateway.ota.session.LocalProtocolError`` for a snapshot of another image."""
        if queued:
            session = OtaSession(Eui64.from_air(ieee), image_info(image), self.session_config(None, ieee), self.pacer, priority=priority)
            job = Job(id=job_id, ieee=ieee, image=image, session=session, image_path=image_path, activation=activation, priority=priority)
            self._jobs[job.id] = job
            self._by_session[session] = job
            _, live = self.admission(ieee, priority)
            if live is not None:
                self._enqueue(job, live)
            else:
                self._take_device(job)
                self._tell(job, QueueChanged(False))
            return job
        stall = None
        if isinstance(snap, dict) and isinstance(snap.get(SNAPSHOT_ENGINE_KEY), dict):
            stall = snap[SNAPSHOT_ENGINE_KEY].get("stall_timeout_s")
        config = self.session_config(stall)
        if snap is None:
            session = OtaSession(Eui64.from_air(ieee), image_info(image), config, self.pacer)
        else:
            session = OtaSession.restore(snap, image_info(image), config, self.pacer, now=asyncio.get_running_loop().time())
        session.priority = priority
        job = Job(id=job_id, ieee=ieee, image=image, session=session, image_path=image_path, activation=activation, priority=priority)
        return self.adopt(job, start=snap is None)

    # ------------------------------------------------------------------ radio outages

    def park(self, reason: str = "radio lost") -> list[Job]:
        """The radio is going away: every job on it is parked (timers frozen) and taken
        off it, zigpy's own OTA handler kept out. Returns the jobs parked."""
        parked = []
        for job in list(self._jobs.values()):
            if self.driver.session(job.ieee) is not job.session:
                continue
            self.driver.run(job.ieee, job.session.park)
            self.driver.detach(job.ieee, hand_back=False)
            self._parked[job.id] = job
            parked.append(job)
            self._log(job, logging.WARNING, "parked at offset %d (%s): radio down: %s", job.session.offset, job.state.value, reason)
        return parked

    def parked(self, job: Job) -> bool:
        """Parked while the radio is away (its calls wait for ``reconnected``)."""
        return job.id in self._parked

    async def reconnected(self, app: ControllerApplication) -> list[Job]:
        """The radio is back as ``app``: serve the jobs there and resume the parked ones,
        without a new Image Notify. Returns the jobs resumed."""
        await self.rebind(app)
        return self.resume_parked()

    def resume_parked(self) -> list[Job]:
        """After ``rebind``: the parked jobs back on the radio, resumed without a new
        Image Notify. Returns them."""
        resumed = []
        parked, self._parked = self._parked, {}
        for job in parked.values():
            if self._by_device.get(job.ieee) is not job:
                continue  # replaced meanwhile
            self.driver.attach(job.ieee, job.session, start=False)
            self._resume(job)
            resumed.append(job)
            self._log(job, logging.WARNING, "re-attached at offset %d (%s) after reconnect", job.session.offset, job.state.value)
        for ieee in list(self._queues):  # a device freed while the radio was away
            self._start_next(ieee)
        return resumed

    def follow(self, supervisor: Any) -> None:
        """Stay on ``supervisor``'s current application (a ``RadioSupervisor``): park on
        its ``on_lost``, resume on its ``on_reconnected``."""
        supervisor.add_hooks(on_lost=self.park, on_reconnected=self.reconnected)

    def _resume(self, job: Job) -> None:
        session = job.session
        after, count = max(0.0, self.nudge_after_s), max(0, self.nudges)
        self.driver.run(job.ieee, lambda now: session.resume(now, nudge_after_s=after, nudges=count))

    async def rebind(self, app: ControllerApplication) -> None:
        """Serve the same jobs through a new application object (the radio was reopened).

        Sessions are not re-attached here: the caller decides which to resume and how.
        """
        try:
            await self.driver.close()
        except Exception:  # the old app may be half torn down; nothing of it is needed
            LOGGER.debug("closing the old OTA driver failed", exc_info=True)
        self.app = app
        self.rebinds += 1
        self.driver = OtaDriver(app, observer=self._observe, aps_encryption=self.ota.aps_encryption, security=self.security)

    def job(self, job_id: str) -> Job:
        try:
            return self._jobs[job_id]
        except KeyError:
            raise EngineError(f"no job {job_id!r}; han-ota status lists them") from None

    def job_for_device(self, ieee: zt.EUI64) -> Job | None:
        return self._by_device.get(ieee)

    def jobs(self) -> Iterable[Job]:
        return self._jobs.values()

    def activate(self, ieee: zt.EUI64, *, at: dt.datetime | None = None, why: str, unauthorised: bool = False) -> Job:
        """Release a held device, now or at ``at`` (UTC). ``why`` goes in the log;
        ``unauthorised`` (a lab's --activate-now, no supplier command) logs a warning."""
        job = self._held_job(ieee)
        self._log(job, logging.WARNING if unauthorised else logging.INFO, "activation requested (%s)", why)
        self._run(job, lambda now: job.session.activate(now, at))
        return job

    def schedule(self, ieee: zt.EUI64, at: dt.datetime, *, why: str) -> Job:
        job = self._held_job(ieee)
        self._log(job, logging.INFO, "activation scheduled for %s (%s)", at.isoformat(), why)
        self._run(job, lambda now: job.session.schedule(now, at))
        return job

    def release_by_command(self, ieee: zt.EUI64, *, why: str) -> Job:
        """The held device carries out a verified activation command itself (a CS06 over
        the GBCS tunnel): it stays held, and its reporting the image's version confirms
        the push (``OtaSession.release_by_command``)."""
        job = self._held_job(ieee)
        self._log(job, logging.INFO, "the device carries out its activation command itself (%s)", why)
        self._run(job, lambda now: job.session.release_by_command(now, why))
        return job

    def unschedule(self, ieee: zt.EUI64, *, why: str) -> Job:
        job = self._held_job(ieee)
        self._log(job, logging.INFO, "scheduled activation removed (%s)", why)
        self._run(job, lambda now: job.session.unschedule(now))
        return job

    def cancel(self, job_id: str, reason: str = "cancelled by the user") -> Job:
        job = self.job(job_id)
        if job.done:
            raise EngineError(f"job {job_id} has already ended ({job.state.value})")
        if job.queued:
            # Never started, nothing went out: it leaves the queue and ends.
            queue = self._queues.get(job.ieee, [])
            if job in queue:
                queue.remove(job)
                if not queue:
                    self._queues.pop(job.ieee, None)
            job.queued_behind = None
            self.driver.run_unbound(job.ieee, job.session, lambda now: job.session.cancel(now, reason))
            return job
        self._run(job, lambda now: job.session.cancel(now, reason))
        return job

    def _run(self, job: Job, call: Callable[[float], list[ev.Action]]) -> None:
        if self.driver.session(job.ieee) is job.session:
            self.driver.run(job.ieee, call)
        else:  # parked: the session answers, nothing goes out
            self.driver.run_unbound(job.ieee, job.session, call)

    def _held_job(self, ieee: zt.EUI64) -> Job:
        job = self._by_device.get(ieee)
        if job is None:
            raise EngineError(f"no firmware has been pushed to {ieee}: push an image first")
        if job.state not in (ev.SessionState.HELD, ev.SessionState.SCHEDULED):
            raise EngineError(f"{ieee} is not held (job {job.id} is {job.state.value}); only a held device can be activated")
        return job

    async def wait(self, job: Job, states: Iterable[ev.SessionState], timeout: float | None = None) -> ev.SessionState:
        """Wait until the job is in one of ``states`` or has ended."""
        wanted = set(states) | set(ev.END_STATES)
        async with asyncio.timeout(timeout):
            while job.state not in wanted:
                job.changed.clear()
                await job.changed.wait()
        return job.state

    async def drain(self, timeout: float = 2.0) -> None:
        """Let frames in flight go out before the radio is closed."""
        await self.driver.drain(timeout)

    async def close(self) -> None:
        self._unlisten()
        if self._window_timer is not None:
            self._window_timer.cancel()
        await self.driver.close()

    # ------------------------------------------------------------------ traffic windows

    def refresh_windows(self) -> None:
        """Apply the window state now and arm the one timer for its next change (the
        timer calls this; so may a caller that knows the wall clock was stepped)."""
        now_utc = self._wall()
        loop = asyncio.get_running_loop()
        was, self.window_open = self.window_open, self.windows.is_open(now_utc)
        self.window_change = self.windows.next_change(now_utc)
        after = None if self.window_change is None else max(0.0, (self.window_change - now_utc).total_seconds())
        if self.window_open:
            self.pacer.unpause()
        else:
            # Until the opening: requests get WAIT_FOR_DATA up to then (a timer fires too).
            self.pacer.pause(loop.time(), None if after is None else loop.time() + after)
        if self._window_timer is not None:
            self._window_timer.cancel()
        # Past the change by a little: a timer may fire a hair early on the loop's clock.
        self._window_timer = None if after is None else loop.call_later(after + 0.05, self.refresh_windows)
        if self.window_open and not was:
            LOGGER.info("traffic window open (%s): transfers run", self.windows.describe())
            for job in list(self._by_device.values()):
                self._start_waiting(job)
        elif not self.window_open and was:
            LOGGER.info("outside the traffic windows (%s): transfers paused with WAIT_FOR_DATA until %s", self.windows.describe(), self.window_change)

    def _start_waiting(self, job: Job) -> None:
        """Start ``job`` if it waited and nothing holds it back any more."""
        if job.done or job.waiting is None or self.driver.session(job.ieee) is not job.session:
            return
        job.waiting = self._waiting_reason(job.ieee)
        if job.waiting is None and job.state is ev.SessionState.PENDING:
            self._log(job, logging.INFO, "starting: nothing holds the push back any more")
            self.driver.run(job.ieee, lambda now: job.session.start(now))
        job.changed.set()

    # ------------------------------------------------------------------ security

    def _security_changed(self, ieee: zt.EUI64, security: DeviceSecurity) -> None:
        """Registry listener (after the driver's, which refreshed the device's flags)."""
        job = self._by_device.get(ieee)
        if job is None or job.done:
            return
        job.security = security.to_dict()
        aps = self.ota.aps_encryption or security.aps
        if job.session.config.aps_encryption != aps:
            job.session.set_aps_encryption(aps)
            self._log(job, logging.INFO, "APS security %s: blocks of at most %d bytes", "in force" if aps else "off", job.session.config.effective_block_cap)
        if job.waiting is None:
            job.changed.set()
            return
        if security.ota_allowed:
            self._log(job, logging.INFO, "device allowed OTA (key establishment %s)", security.state.value)
            self._start_waiting(job)
        else:
            job.waiting = security.waiting_reason
            self._log(job, logging.INFO, "still waiting: %s", job.waiting)
        job.changed.set()

    # ------------------------------------------------------------------ observation

    def _observe(self, ieee: zt.EUI64, action: ev.Action, session: object) -> None:
        job = self._by_session.get(session)
        if job is None:
            # A session attached from outside (a restored snapshot): learn it once.
            job = self._by_device.get(ieee)
            if job is None or job.session is not session:
                return
            self._by_session[session] = job
        job.track(action, time.monotonic())
        if isinstance(action, ev.Note):
            level = logging.WARNING if action.warning or action.kind is ev.NoteKind.FAILURE else logging.INFO
            if action.kind is ev.NoteKind.WARNING:  # the level says it already
                self._log(job, level, "%s", action.message, offset=action.offset)
            else:
                self._log(job, level, "%s: %s", action.kind.value, action.message, offset=action.offset)
        elif isinstance(action, ev.StateChanged):
            self._log(job, logging.INFO, "state %s -> %s%s", action.old.value, action.new.value, f" ({action.reason})" if action.reason else "")
        self._tell(job, action)
        if isinstance(action, ev.StateChanged) and action.new in END_STATES and self._by_device.get(ieee) is job and ieee in self._queues:
            # Not from inside the driver's handling of this session's actions.
            asyncio.get_running_loop().call_soon(self._start_next, ieee)

    def _tell(self, job: Job, action: ev.Action | QueueChanged) -> None:
        for watcher in self._observers:
            try:
                watcher(job, action)
            except Exception:  # an observer's bug must not stop the OTA session
                LOGGER.exception("job observer failed on %r", action)
        job.changed.set()

    def _log(self, job: Job, level: int, msg: str, *args: Any, offset: int | None = None) -> None:
        img = job.image
        where = f" offset={offset}" if offset is not None else ""
        LOGGER.log(
            level,
            "%s job=%s image=%04X:%04X:v%08X%s " + msg,
            job.ieee,
            job.id,
            img.manufacturer_code,
            img.image_type,
            img.file_version,
            where,
            *args,
        )
