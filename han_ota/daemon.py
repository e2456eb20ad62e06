"""``han-ota run``: the long-running gateway. Wiring only; the protocol lives in gateway/.

One process holds one radio, ONE ``gateway.engine.Engine`` (the same engine the
one-shot push uses), the activation service, the state store and the audit log,
and answers the control API (``han_ota.control``) on a Unix socket.

Start-up order, and why:

1. state directory, store, audit log, trust anchors: refuse to start (exit 1, with
   the path and the fix) rather than run without durable state. The audit chain is
   verified against the head the store noted (``gateway.integrity``): a broken or cut
   log refuses the start (the fix is ``han-ota log --seal``); a store that lost its
   state gets its anti-replay counters back from the log, with a warning;
2. the control socket, then ``READY=1``: ``han-ota status`` works (and says "radio
   down") even while a dongle takes tens of seconds to come up, or is unplugged;
3. the radio, in the background, retried with backoff 1, 2, 4 ... 60 s; on the
   first success the engine is made and every active job in the store is resumed.

Durability: every state change is written to the store (one fsynced transaction)
as it happens; progress and the session snapshot at most every ``progress_bytes``
or ``progress_seconds``, and on stop. A restart therefore resumes each transfer at
or before the device's offset (the device asks for the block it needs; the session
serves any offset). Every note, state change and interesting frame goes to the
hash-chained audit log. A failing write (a full disk) is logged, shown in
``status``, retried on the next tick, and never drops a job already accepted; a
push whose job cannot be written is refused, so nothing is acknowledged that is
not on disk.

Radio loss: ``radios.supervisor.RadioSupervisor`` notices it (zigpy's
``connection_lost``, or a Z-Stack reset) and reopens the radio with backoff; before
it closes the dead application the engine parks the jobs (``Engine.park``: timers
frozen, so no stall timer runs out while the dongle is away); on the new application
the engine is rebound and the jobs resumed without a new Image Notify
(``Engine.resume_parked``). A transfer that then stays silent gets one (the session's
nudges, audited as ``job.nudge``).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime as dt
import errno
import hashlib
import importlib.metadata
import logging
import os
import signal
import sqlite3
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import zigpy.types as zt
from zigpy.application import ControllerApplication

from eui64 import Eui64
from gateway import audit as audit_mod
from gateway import integrity
from gateway.activation import ActivationService, SubmitResult, check_image_signature, load_trust
from gateway.audit import AuditError, AuditLog
from gateway.config import Config, ConfigError, parse_eui64
from gateway.crashpoint import crashpoint
from gateway.engine import NUDGE_AFTER_S, Engine, EngineError, Job, QueueChanged
from gateway.files import NotRegularFile, open_regular
from gateway.gbcs.command import decode_hex_text
from gateway.gbcs.errors import GbcsError
from gateway.gbcs.trust import TrustStore
from gateway.image import FirmwareImage, ImageError, parse_image
from gateway.gbcs.codes import ResponseCode
from gateway.ota import events as ev
from gateway.ota.priority import Admission, priority_label
from gateway.se.security import SecurityRegistry
from gateway.store import (
    ActivationMode,
    ActivationRequest,
    DeviceBusy,
    JobKind,
    JobRecord,
    StateStore,
    StoreError,
)
from han_ota import sdnotify
from han_ota.control import ControlServer, ControlSocketError, HttpError
from han_ota.hub_alerts import HubMessages, device_keys_of, start_hub_messages
from han_ota.security import KeyEstablishmentUnavailable, close_key_establishment, start_key_establishment
from han_ota.tunnels import CommandRefused, DaemonTunnels
from han_ota.traffic import DaemonTraffic
from han_ota.statedir import StateDirError, StateDirLock, ensure_state_dir
from radios.supervisor import RadioSupervisor
from radios.sim.spec import SimDeviceSpec, SimNetworkError, sim_network

LOGGER = logging.getLogger("han_ota.daemon")

BACKOFF_S: tuple[float, ...] = (1, 2, 4, 8, 16, 32, 60)
PROGRESS_BYTES = 4096
PROGRESS_SECONDS = 2.0
TICK_S = 1.0
IMAGES_DIR = "images"
# A local image reads in milliseconds; past this the file is on a hung filesystem
# (NFS, FUSE), and the push says so rather than wait with the client.
FILE_READ_TIMEOUT_S = 30.0
LIVE_HOLD = (ev.SessionState.HELD, ev.SessionState.SCHEDULED)
SENT_OF_INTEREST = (
    ev.SendImageNotify,
    ev.SendQueryNextImageResponse,
    ev.SendWaitForData,
    ev.SendAbort,
    ev.SendUpgradeEndResponse,
)

OpenRadio = Callable[[], Awaitable[ControllerApplication]]


# How long joining stays open when a push names a device the coordinator has not seen.
PERMIT_FOR_UNKNOWN_S = 180


class DaemonStartError(RuntimeError):
    """The daemon cannot start; the message names the path or key and the fix."""


def version() -> str:
    try:
        return importlib.metadata.version("han-ota-gateway")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def sim_specs(config: Config, sim_devices: Sequence[str | SimDeviceSpec] = ()) -> list[SimDeviceSpec]:
    """--sim-device texts (or specs) and the config's [[sim_device]] tables; raises DaemonStartError."""
    try:
        return sim_network(sim_devices, config.sim_devices, str(config.source or "config"))
    except SimNetworkError as exc:
        raise DaemonStartError(str(exc)) from None


# --------------------------------------------------------------------------- engine helpers


def restore_job(engine: Engine, job: Job, *, start: bool = False) -> Job:
    """Register ``job`` (with its restored session) without an Image Notify unless ``start``."""
    return engine.adopt(job, start=start)


async def rebind_engine(engine: Engine, app: ControllerApplication) -> None:
    """Point the engine at a new application object (after the radio was reopened)."""
    await engine.rebind(app)


# --------------------------------------------------------------------------- records


@dataclass
class RadioState:
    kind: str
    up: bool = False
    since: float | None = None  # wall time of the last up/down
    reconnects: int = 0
    last_error: str | None = None
    next_attempt_s: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "up": self.up,
            "since": None if self.since is None else _iso(self.since),
            "reconnects": self.reconnects,
            "last_error": self.last_error,
        }


@dataclass
class _Track:
    """Persistence bookkeeping of one job."""

    kind: str
    persisted_offset: int = -1
    persisted_at: float = 0.0
    decile: int = -1
    dirty: bool = False


def _iso(wall: float) -> str:
    return dt.datetime.fromtimestamp(wall, dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _store_id(job: Job) -> int:
    return int(job.id)


# --------------------------------------------------------------------------- activation


class _DaemonActivation(ActivationService):
    """The activation service, with every verdict stored and audited (armed one-step
    submits included, since they also go through ``submit``)."""

    daemon: Daemon

    def submit(self, command: bytes | str, *, device: zt.EUI64 | None = None) -> SubmitResult:
        raw = command if isinstance(command, bytes) else command.encode("ascii", "replace")
        self.daemon._audit(
            "gbcs.command",
            device,
            job=self.daemon._job_number_for(device),
            length=len(raw),
            sha256=hashlib.sha256(raw).hexdigest(),
        )
        result = super().submit(command, device=device)
        self.daemon._record_verdict(result)
        if result.accepted:
            crashpoint("submit.audited")
        return result

    def _act(self, job: Job, decision: Any, command_hex: str) -> None:
        # The device's `activation` config: release, forward over the tunnel, or both.
        self.daemon.tunnels.carry_out(job, command_hex, lambda: super(_DaemonActivation, self)._act(job, decision, command_hex), lambda: self._carried_out(job))

    def _fire(self, ieee: zt.EUI64) -> None:
        # A future-dated activation due while the radio is away waits for it: the
        # driver has no session attached then, and the moment has passed either way.
        if not self.daemon.radio.up:
            LOGGER.warning("%s: scheduled activation is due but the radio is down; it runs when the radio is back", ieee)
            self.daemon._due_while_down.add(ieee)
            return
        super()._fire(ieee)


# --------------------------------------------------------------------------- the daemon


class Daemon:
    def __init__(
        self,
        config: Config,
        sim_devices: Sequence[str | SimDeviceSpec] = (),
        *,
        link: Any = None,
        open_radio: OpenRadio | None = None,
        backoff: Sequence[float] = BACKOFF_S,
        notifier: sdnotify.Notifier | None = None,
        session_overrides: dict[str, Any] | None = None,
        progress_bytes: int = PROGRESS_BYTES,
        progress_seconds: float = PROGRESS_SECONDS,
        tick_s: float = TICK_S,
        nudge_after_s: float = NUDGE_AFTER_S,
    ) -> None:
        # Absolute paths: job records keep image paths, and a relative state_dir
        # (from a relative --config) would tie them to today's working directory.
        config = dataclasses.replace(config, state_dir=config.state_dir.absolute(), control_socket=config.control_socket.absolute())
        self.config = config
        self.specs = sim_specs(config, sim_devices) if config.radio.kind == "sim" else []
        self.link = link
        self._open_radio_override = open_radio
        self.backoff = tuple(backoff)
        self.notifier = notifier or sdnotify.Notifier()
        self.session_overrides = dict(session_overrides or {})
        self.progress_bytes = progress_bytes
        self.progress_seconds = progress_seconds
        self.tick_s = tick_s
        self.nudge_after_s = nudge_after_s

        self.radio = RadioState(config.radio.kind)
        self.store: StateStore | None = None
        self.audit: AuditLog | None = None
        self._lock: StateDirLock | None = None
        self.app: ControllerApplication | None = None
        self.engine: Engine | None = None
        #: Every device's HAN security (gateway.se.security): the engine reads it, the
        #: key-establishment service (with [key_establishment]) writes it.
        self.security = SecurityRegistry(config.security_modes())
        self.ke_service: Any = None
        #: The hub's GBCS messages (its CCS08 alerts, every message kept): han_ota.hub_alerts.
        self.hub: HubMessages | None = None
        #: The GBCS tunnels to the devices (han_ota/tunnels.py).
        self.tunnels = DaemonTunnels(config, self.security, audit=self._audit)
        #: [[sim_traffic]]: background traffic on the simulated HAN, measured (han_ota/traffic.py).
        self.traffic = DaemonTraffic(config.sim_traffic, audit=self._audit, tunnels=self.tunnels)
        self.activation: _DaemonActivation | None = None
        self.control: ControlServer | None = None
        self.started_wall = time.time()
        self.started = time.monotonic()
        self.store_error: str | None = None
        self.audit_error: str | None = None
        self.audit_verified = 0  # records verified at start
        self.start_warning: str | None = None  # the store had lost state at start (see _open_state)
        self.chain_error: str | None = None  # the records before the start checkpoint do not verify
        self._check_from: tuple[int, str, int] | None = None

        self._trust: Any = None
        self._tracks: dict[str, _Track] = {}
        self._due_while_down: set[zt.EUI64] = set()
        self._radio_ready = asyncio.Event()
        self._open_failures = 0
        self.supervisor = RadioSupervisor(factory=self._open_radio_audited, name=config.radio.kind, backoff=self.backoff)
        self.supervisor.add_hooks(on_lost=self._radio_lost, on_reconnected=self._radio_reconnected)
        self._stop = asyncio.Event()
        self._stopped = False
        self._tasks: list[asyncio.Task[Any]] = []
        self._status_line = ""
        self._resumed = False

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Open state, listen, notify READY, and start bringing the radio up."""
        self._open_state()
        try:
            self._trust = load_trust(self.config)
        except Exception as exc:  # TrustError, OSError: a supplier file named in the config
            self._close_state()
            raise DaemonStartError(f"{self.config.source or 'config'}: [[supplier]] trust anchors cannot be loaded: {exc}") from None
        try:
            device_keys = device_keys_of(self.config)
        except Exception as exc:  # GbcsUsageError naming the file
            self._close_state()
            raise DaemonStartError(f"{self.config.source or 'config'}: [[device]] gbcs_certificate cannot be loaded: {exc}") from None
        self._audit("daemon.start", version=version(), pid=os.getpid(), config=str(self.config.source) if self.config.source else None, radio=self.radio.kind, state_dir=str(self.config.state_dir))
        try:  # before the radio: alerts a crash left reserved are finished first
            self.hub = await start_hub_messages(
                self.config, self.store, trust=self._trust, audit=self._audit, durable_job_id=_store_id, device_keys=device_keys
            )
        except OSError as exc:  # the GFI feed's port
            self._close_state()
            raise DaemonStartError(f"[hub] gfi_feed = {self.config.hub.gfi_feed!r} cannot listen: {exc.strerror or exc}") from None
        # Every message the tunnels carry is kept, audited, shown and fed (han_ota/hub_alerts.py).
        self.tunnels.add_listener(self.hub.record)
        self.control = ControlServer(self, self.config.control_socket, self.config.control_tcp)
        try:
            await self.control.start()
        except ControlSocketError as exc:
            self._close_state()
            raise DaemonStartError(str(exc)) from None
        self.notifier.ready(self._summary())
        self._tasks.append(asyncio.create_task(self._radio_first_start(), name="han-ota-radio"))
        self._tasks.append(asyncio.create_task(self._ticker(), name="han-ota-tick"))
        if self._check_from is not None:
            self._tasks.append(asyncio.create_task(self._verify_whole_chain(), name="han-ota-verify"))
        interval = sdnotify.watchdog_interval()
        if interval:
            self._tasks.append(asyncio.create_task(self._watchdog(interval), name="han-ota-watchdog"))
        LOGGER.info("han-ota %s running: state %s, control %s, radio %s", version(), self.config.state_dir, self.config.control_socket, self.radio.kind)

    def request_stop(self) -> None:
        self._stop.set()

    async def wait_stopped(self) -> None:
        await self._stop.wait()

    async def wait_radio(self, timeout: float | None = None) -> None:
        async with asyncio.timeout(timeout):
            await self._radio_ready.wait()

    async def stop(self, reason: str = "stopped") -> None:
        """Graceful stop: refuse new requests, persist every job, close the radio."""
        if self._stopped:
            return
        self._stopped = True
        self._stop.set()
        self.notifier.stopping(f"stopping: {reason}")
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if self.control is not None:
            # No new requests; those in progress finish (up to 2 s) before the engine,
            # store and log they use are closed.
            await self.control.close()
        self._persist_all(force=True)
        await self.tunnels.close()  # CloseTunnel while the radio still works
        await self.traffic.close()
        # Radio off first: detaching the sessions would hand the devices to zigpy's own
        # OTA handler, which answers ABORT (a device then erases its partial download).
        await close_key_establishment(self.ke_service)
        self.ke_service = None
        await self.supervisor.close()
        self.app = None
        if self.engine is not None:
            with contextlib.suppress(Exception):
                await self.engine.close()
        self._persist_all(force=True)
        if self.hub is not None:
            await self.hub.close()
        self._audit("daemon.stop", reason=reason)
        self._close_state()

    def _close_state(self) -> None:
        if self.store is not None:
            self.store.close()
            self.store = None
        if self.audit is not None:
            self.audit.close()
            self.audit = None
        if self._lock is not None:
            self._lock.release()  # last: the directory is free once nothing writes to it
            self._lock = None

    def _open_state(self) -> None:
        try:
            state_dir = ensure_state_dir(self.config)
            # Before anything is read: a second daemon must not resume the first one's jobs.
            self._lock = StateDirLock.acquire(state_dir)
        except StateDirError as exc:
            raise DaemonStartError(str(exc)) from None
        self._lock.record(self.config.control_socket)
        try:
            self.store = StateStore.in_state_dir(state_dir)
        except StoreError as exc:
            self._close_state()
            raise DaemonStartError(str(exc)) from None
        try:
            self.audit = AuditLog.in_state_dir(state_dir, on_append=self._anchor)
        except AuditError as exc:
            self._close_state()
            raise DaemonStartError(str(exc)) from None
        # Before anything is appended or any command taken: never continue a broken
        # or cut chain, and never take a command with counters the store has lost.
        try:
            check = integrity.check_at_start(self.store, self.audit.path, seal_command=self._seal_command())
        except (AuditError, StoreError) as exc:
            self._close_state()
            raise DaemonStartError(str(exc)) from None
        self.audit_verified = check.records - (check.checkpoint[0] if check.checkpoint else 0)
        if check.checkpoint is not None:
            self._check_from = check.verified_to
        if check.warning is not None:
            LOGGER.warning("%s", check.warning)
            self.start_warning = check.warning
            self._audit(integrity.RECOVERED_EVENT, warning=True, message=check.warning, raised=check.raised, counters=integrity.counter_table(self.store))

    async def _verify_whole_chain(self) -> None:
        """The start verified from the last checkpoint; the records before it are checked
        here, off the start-up path (a long log takes a while). A break cannot refuse a
        start that has happened, so it is shown: logged, and status says audit.ok false."""
        assert self.audit is not None and self.store is not None and self._check_from is not None
        result = await asyncio.to_thread(audit_mod.verify_log, self.audit.path)
        try:
            # Sound: the next start checks only what comes after this start's head.
            # Broken: forget the checkpoint, so the next start checks all and refuses.
            self.store.set_audit_checkpoint(self._check_from if result.ok else None)
        except StoreError as exc:
            self._store_failed(exc)
        if result.ok:
            return
        self.chain_error = (
            f"audit log {self.audit.path} is broken at record {result.first_bad_seq}: {result.reason}; stop the "
            f"daemon and run `{self._seal_command()}`"
        )
        LOGGER.error("%s", self.chain_error)
        self._refresh_status()

    def _seal_command(self) -> str:
        return self._cli("log --seal")

    def _cli(self, words: str) -> str:
        """A command for a hint, with this daemon's --config (else it reaches another daemon)."""
        source = self.config.source
        return f"han-ota {words}" + (f" --config {source}" if source is not None else "")

    def _anchor(self, seq: int, digest: str) -> None:
        """The audit log's on_append hook: note its head in the store (see gateway.integrity)."""
        if self.store is None:
            return
        try:
            self.store.set_audit_anchor(seq, digest)
        except StoreError as exc:  # a lagging anchor is harmless: the log may run ahead of it
            self._store_failed(exc)

    # ------------------------------------------------------------------ radio

    async def _open_radio(self) -> ControllerApplication:
        if self._open_radio_override is not None:
            return await self._open_radio_override()
        from radios.select import database_for, open_app

        r = self.config.radio
        # zigpy must remember the devices across restarts and reconnects, or a
        # resumed job's device stays unknown until it rejoins.
        database = r.database or database_for(self.config.state_dir, r.kind, r.path)
        return await open_app(
            r.kind,
            path=r.path,
            baudrate=r.baudrate,
            flow_control=r.flow_control,
            database=database,
            sim_devices=self.specs,
            link=self.link,
            # With [key_establishment] the SE endpoint offers the Key Establishment server.
            key_establishment=self.config.key_establishment is not None,
            # Before the simulated HAN is waited for: its SE devices key right after joining.
            on_started=self._start_key_establishment,
        )

    async def _open_radio_audited(self) -> ControllerApplication:
        """The supervisor's factory: every failed attempt is logged, audited and shown."""
        try:
            app = await self._open_radio()
        except Exception as exc:
            # The supervisor waits backoff[0], backoff[1], ... after failed attempts.
            delay = self.backoff[min(self._open_failures, len(self.backoff) - 1)]
            self._open_failures += 1
            self.radio.last_error = f"{type(exc).__name__}: {exc}"
            self._audit("radio.open_failed", error=self.radio.last_error, retry_in_s=delay, attempt=self._open_failures)
            self._refresh_status()
            raise
        self._open_failures = 0
        return app

    async def _radio_first_start(self) -> None:
        """Open the radio, retrying with backoff for as long as it takes (the control
        API answers meanwhile); reconnects after that are the supervisor's."""
        app = await self.supervisor.start(retry=True)
        await self._radio_reconnected(app)

    def _radio_lost(self, reason: str) -> None:
        """Supervisor hook, called before it shuts the dead application down."""
        self.radio.up = False
        self.radio.since = time.time()
        self.radio.last_error = reason
        self._radio_ready.clear()
        self._audit("radio.down", reason=reason)
        if self.engine is not None:
            self.engine.park(reason)
        self.app = None
        self._persist_all(force=True)
        self._refresh_status()

    async def _radio_reconnected(self, app: ControllerApplication) -> None:
        """Supervisor hook (and the first start): a working application."""
        try:
            await self._radio_up(app)
        except Exception:  # a bug; keep the daemon (and the control API) alive and try again
            LOGGER.exception("bringing the radio up failed; reopening it")
            self.supervisor.report_lost("bringing the radio up failed (see the log)")

    async def _radio_up(self, app: ControllerApplication) -> None:
        self.app = app
        first = self.engine is None
        if self.engine is None:
            self.engine = Engine(app, self.config.ota, session_overrides=self.session_overrides, security=self.security, nudge_after_s=self.nudge_after_s)
            if self.hub is not None:
                self.hub.watch(self.engine)  # first: an alert's counter is reserved before the job's state is written
            self.engine.add_observer(self._on_job_action)
            self.activation = _DaemonActivation(
                self.engine,
                self.config,
                self.store,  # type: ignore[arg-type]
                trust=self._trust,
                on_outcome=self._on_outcome,
                on_schedule=self._on_schedule,
                durable_job_id=_store_id,
            )
            self.activation.daemon = self
        else:
            await self.engine.rebind(app)
        await self._start_key_establishment(app)
        await self.tunnels.radio_up(app)
        await self.traffic.radio_up(app)
        self.radio.reconnects = self.supervisor.reconnects
        self.radio.up = True
        self.radio.since = time.time()
        self.radio.last_error = None
        self._audit("radio.up", kind=self.radio.kind, reconnects=self.radio.reconnects)
        if first:
            self._resume_jobs()
        else:
            self._unpark()
        self._after_radio_up()
        self._radio_ready.set()
        self._refresh_status()

    async def _start_key_establishment(self, app: ControllerApplication) -> None:
        """(Re)start key establishment and the OTA guard on this application (without
        [key_establishment] the service only refuses). A hub identity that cannot serve
        is logged and audited; the daemon runs on, and SE devices' pushes wait (their
        reason in status)."""
        if self.ke_service is not None and self.ke_service.app is app:
            return  # started already, as the radio came up (open_app's on_started)
        await close_key_establishment(self.ke_service)
        self.ke_service = None
        try:
            self.ke_service = await start_key_establishment(app, self.config, self.security, self._ke_event)
        except KeyEstablishmentUnavailable as exc:
            LOGGER.error("%s", exc)
            self._audit("ke.unavailable", error=str(exc))

    def _ke_event(self, name: str, device: object | None = None, **fields: Any) -> None:
        """The key-establishment service's events (ke.started, ke.established, ...) into
        the audit log. Fields never carry key material (the service's rule)."""
        fields.pop("job", None)
        self._audit(name, device, **fields)

    def _unpark(self) -> None:
        assert self.engine is not None
        for job in self.engine.resume_parked():
            self._audit("job.reattached", job.ieee, job=_store_id(job), state=job.state.value, offset=job.session.offset)

    def _after_radio_up(self) -> None:
        """Work that waited for the radio: lab activations and schedules that fell due."""
        assert self.engine is not None and self.activation is not None
        for job in list(self.engine.jobs()):
            if job.activation == "now" and job.state is ev.SessionState.HELD:
                self._activate_now(job)
        due, self._due_while_down = self._due_while_down, set()
        for ieee in due:
            self.activation._fire(ieee)

    # ------------------------------------------------------------------ resume

    def _resume_jobs(self) -> None:
        """Bring back every active job in the store (after the first radio start), and
        the last cancelled or failed job of every other device (see ``_resume_ended``)."""
        assert self.store is not None and self.engine is not None and self.activation is not None
        try:
            records = self.store.list_jobs()
        except StoreError as exc:
            self._store_failed(exc)
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
                self._fail_stored(rec.job_id, rec.record.device, reason)
        for rec in last_ended.values():
            self._resume_ended(rec)
        try:
            schedules = self.store.list_schedules()
        except StoreError as exc:
            self._store_failed(exc)
            schedules = []
        for sched in schedules:
            try:
                job = self.engine.job(str(sched.job_id))
            except EngineError:
                continue
            if job.done:
                continue
            self.activation.restore_schedule(job, sched.at_utc, sched.command_hex)
            self._audit("job.schedule_restored", job.ieee, job=sched.job_id, at=sched.at_utc.isoformat())
        self._collect_images()
        self._resumed = True

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

    def _collect_images(self) -> None:
        """Delete kept image copies no attached job uses (they only ever accumulate)."""
        assert self.engine is not None
        directory = self.config.state_dir / IMAGES_DIR
        if not directory.is_dir():
            return
        wanted = {Path(j.image_path).name for j in self.engine.jobs() if j.image_path is not None}
        for path in directory.iterdir():
            if path.name in wanted:
                continue
            if path.suffix == ".ota" or path.name.endswith(".tmp"):
                with contextlib.suppress(OSError):
                    path.unlink()
                    LOGGER.info("removed image copy %s: no job uses it any more", path.name)

    def _resume_one(self, rec: Any) -> Job | None:
        assert self.engine is not None and self.activation is not None and self.store is not None
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
        self._tracks[str(rec.job_id)] = _Track(kind=record.kind.value, persisted_offset=rec.offset, persisted_at=time.monotonic())
        job = self.engine.restore(
            str(rec.job_id), ieee, image, rec.session_snapshot, image_path=path, activation=mode, priority=record.priority, queued=rec.queued
        )
        session = job.session
        self._audit("job.restored", ieee, job=rec.job_id, state=job.state.value, offset=session.offset, size=image.size, notify=start)
        LOGGER.info("job %s (%s): resumed %s at offset %d of %d", job.id, ieee, job.state.value, session.offset, image.size)
        if job.state in ev.END_STATES:
            if rec.active:
                self._persist(job)  # the snapshot knew before the row did
        elif mode == ActivationMode.COMMAND.value and record.activation.command_hex and job.state is not ev.SessionState.ACTIVATED:
            if not self._verdict_recorded(rec.job_id, record.device):
                self.activation.arm(job, record.activation.command_hex)
        return job

    def _verdict_recorded(self, job_id: int, device: str) -> bool:
        assert self.store is not None
        try:
            return any(v.job_id == job_id for v in self.store.list_verdicts(device))
        except StoreError:
            return True  # cannot tell: do not risk a second submit

    def _fail_stored(self, job_id: int, device: str, reason: str) -> None:
        assert self.store is not None
        try:
            self.store.update_job(job_id, state=ev.SessionState.FAILED, reason=reason)
        except StoreError as exc:
            self._store_failed(exc)
        self._audit("job.resume_failed", device, job=job_id, reason=reason)

    # ------------------------------------------------------------------ observation

    def _on_job_action(self, job: Job, action: ev.Action | QueueChanged) -> None:
        number = _store_id(job)
        track = self._tracks.setdefault(job.id, _Track(kind="hcalcs"))
        if isinstance(action, QueueChanged):
            # The report's timeline reads queued as a state of its own.
            old, new = ("pending", "queued") if action.queued else ("queued", "pending")
            reason = f"queued behind job {action.behind}" if action.queued else "device free: started from the queue"
            self._audit("job.state", job.ieee, job=number, old=old, new=new, reason=reason, offset=job.session.offset)
            self._persist(job)
            self._refresh_status()
        elif isinstance(action, ev.StateChanged):
            self._audit("job.state", job.ieee, job=number, old=action.old.value, new=action.new.value, reason=action.reason, offset=job.session.offset)
            self._persist(job)
            if action.new is ev.SessionState.SUPERSEDED:
                # Its outcome in GBCS terms: no image held (CCS08-style response code 1),
                # the device told to discard it.
                self._on_outcome(job, "superseded", f"image discarded: {action.reason}", int(ResponseCode.NO_IMAGE_HELD), None)
            if action.new is ev.SessionState.HELD and job.activation == "now":
                asyncio.get_running_loop().call_soon(self._activate_now, job)
            self._refresh_status()
        elif isinstance(action, ev.Progress):
            now = time.monotonic()
            if action.offset - track.persisted_offset >= self.progress_bytes or now - track.persisted_at >= self.progress_seconds:
                self._persist(job)
            else:
                track.dirty = True
            decile = min(10, action.offset * 10 // max(action.total, 1))
            if decile != track.decile:
                track.decile = decile
                self._audit("job.progress", job.ieee, job=number, offset=action.offset, size=action.total, percent=decile * 10)
        elif isinstance(action, ev.Note) and action.kind is ev.NoteKind.NUDGE:
            # docs/control-api.md's name for it, from before nudges were the session's.
            self._audit("job.nudge", job.ieee, job=number, offset=action.offset, attempt=job.session.nudge_attempt, message=action.message)
        elif isinstance(action, ev.Note):
            self._audit(f"ota.{action.kind.value}", job.ieee, job=number, message=action.message, offset=action.offset, warning=action.warning)
        elif isinstance(action, SENT_OF_INTEREST):
            fields = {k: v for k, v in dataclasses.asdict(action).items() if k != "tsn"}
            self._audit("ota.sent", job.ieee, job=number, command=type(action).__name__, **fields)

    def _activate_now(self, job: Job) -> None:
        if self.engine is None or job.state is not ev.SessionState.HELD or not self.radio.up:
            return  # the radio coming back runs this again (_after_radio_up)
        why = "activate_now with the push: lab image, released without supplier authority"
        self._audit("job.activate_now", job.ieee, job=_store_id(job), warning=True, message=why)
        self.engine.activate(job.ieee, why=why, unauthorised=True)

    def _on_outcome(self, job: Job | None, step: str, message: str, response: int | None, alert: int | None) -> None:
        self._audit(
            f"gbcs.{step}",
            None if job is None else job.ieee,
            job=None if job is None else _store_id(job),
            message=message,
            response_code=response,
            alert_code=None if alert is None else f"0x{alert:04X}",
        )

    def _on_schedule(self, job: Job, at: dt.datetime | None, command_hex: str | None) -> None:
        assert self.store is not None
        try:
            if at is None:
                self.store.cancel_schedule(_store_id(job))
            else:
                self.store.schedule_activation(_store_id(job), at, (command_hex or "").lower())
        except StoreError as exc:
            self._store_failed(exc)
        self._audit("gbcs.schedule" if at is not None else "gbcs.unschedule", job.ieee, job=_store_id(job), at=None if at is None else at.isoformat())

    def _record_verdict(self, result: SubmitResult) -> None:
        assert self.store is not None
        job_number = int(result.job) if result.job and result.job.isdigit() else None
        fields = {("image_hash" if k == "hash" else k): v for k, v in result.to_dict().items() if k not in ("device", "job")}
        self._audit("gbcs.verdict", result.device, job=job_number, **fields)
        if result.device is None or result.accepted:
            return  # an accepted verdict was stored with its counter (StateStore.accept)
        try:
            self.store.record_verdict(result.record(job_number, dt.datetime.now(dt.timezone.utc)))
        except (StoreError, ValueError) as exc:
            self._store_failed(exc)

    def _job_number_for(self, device: zt.EUI64 | None) -> int | None:
        if device is None or self.engine is None:
            return None
        job = self.engine.job_for_device(device)
        return None if job is None else _store_id(job)

    # ------------------------------------------------------------------ persistence

    def _persist(self, job: Job) -> bool:
        assert self.store is not None
        track = self._tracks.setdefault(job.id, _Track(kind="hcalcs"))
        assert self.engine is not None
        offset = job.session.offset
        try:
            self.store.update_job(
                _store_id(job),
                state=job.state,
                reason=job.session.reason,
                offset=offset,
                session_snapshot=self.engine.snapshot(job),
                queued=job.queued,
            )
        except StoreError as exc:
            track.dirty = True
            self._store_failed(exc)
            return False
        track.dirty = False
        track.persisted_offset = offset
        track.persisted_at = time.monotonic()
        if self.store_error is not None and not any(t.dirty for t in self._tracks.values()):
            LOGGER.info("state store writes work again")
            self.store_error = None
        return True

    def _persist_all(self, *, force: bool = False) -> None:
        if self.engine is None or self.store is None:
            return
        now = time.monotonic()
        for job in list(self.engine.jobs()):
            track = self._tracks.get(job.id)
            if track is None:
                continue
            due = track.dirty and (now - track.persisted_at >= self.progress_seconds or self.store_error is not None)
            if force or due:
                self._persist(job)

    def _store_failed(self, exc: Exception) -> None:
        message = str(exc)
        if message != self.store_error:
            LOGGER.error("state store write failed: %s", message)
        self.store_error = message
        self._refresh_status()

    def _audit(self, event: str, device: object | None = None, *, job: int | None = None, **fields: Any) -> None:
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

    # ------------------------------------------------------------------ status

    def _counts(self) -> dict[str, int]:
        counts = {"transferring": 0, "pending": 0, "held": 0, "scheduled": 0, "activated": 0, "queued": 0}
        jobs = list(self.engine.jobs()) if self.engine is not None else []
        for job in jobs:
            if job.state_name in counts:
                counts[job.state_name] += 1
        return counts

    def _summary(self) -> str:
        c = self._counts()
        radio = f"radio {self.radio.kind} {'up' if self.radio.up else 'down'}"
        text = f"{radio}; {c['transferring']} transferring, {c['pending']} pending, {c['held']} held, {c['scheduled']} scheduled"
        if c["activated"]:
            text += f", {c['activated']} activating"
        if c["queued"]:
            text += f", {c['queued']} queued"
        if self.store_error:
            text += "; STORE WRITE FAILING"
        if self.audit_error:
            text += "; AUDIT WRITE FAILING"
        if self.chain_error:
            text += "; AUDIT CHAIN BROKEN"
        return text

    def _refresh_status(self) -> None:
        line = self._summary()
        if line != self._status_line:
            self._status_line = line
            self.notifier.status(line)

    async def _ticker(self) -> None:
        while True:
            await asyncio.sleep(self.tick_s)
            self._persist_all()
            self._refresh_status()

    async def _watchdog(self, interval: float) -> None:
        while True:
            self.notifier.watchdog()
            await asyncio.sleep(interval)

    # ------------------------------------------------------------------ views

    def _kind_of(self, ieee: zt.EUI64, image: FirmwareImage | None = None) -> str:
        configured = self.config.device(Eui64.from_air(ieee))
        if configured is not None:
            return configured.kind
        for spec in self.specs:
            if spec.ieee == ieee:
                return spec.kind
        return "hcalcs" if image is None else image.device_kind

    def job_view(self, job: Job) -> dict[str, Any]:
        view = job.to_dict()
        track = self._tracks.get(job.id)
        view["kind"] = track.kind if track else self._kind_of(job.ieee, job.image)
        if self.activation is not None:
            at = self.activation.scheduled_at(job.ieee)
            view["scheduled_at"] = None if at is None else at.isoformat()
        view["parked"] = self.engine is not None and self.engine.parked(job)
        view["security"] = self.security.get(job.ieee).to_dict()
        view["messages"] = [] if self.hub is None else self._store_read(lambda _: self.hub.job_messages(job, _store_id(job)))  # type: ignore[union-attr]
        return view

    def _stored_view(self, rec: Any) -> dict[str, Any]:
        r: JobRecord = rec.record
        return {
            "job": str(rec.job_id),
            "device": r.device,
            "kind": r.kind.value,
            "state": "queued" if rec.queued else rec.state.value,
            "priority": r.priority,
            "reason": rec.reason,
            "manufacturer_code": r.manufacturer_code,
            "image_type": r.image_type,
            "file_version": r.file_version,
            "bytes": rec.offset,
            "size": r.size,
            "rate_bytes_per_s": None,
            "eta_seconds": None,
            "activation": r.activation.mode.value,
            "image": r.image_path,
            "image_sha256": r.image_sha256,
            "created": r.created_utc.isoformat(),
            "updated": rec.updated_utc.isoformat(),
            "messages": [m.to_dict() for m in self._store_read(lambda s: s.list_messages(job_id=rec.job_id))],
        }

    # ------------------------------------------------------------------ control API (han_ota.control.ControlApi)

    async def status(self) -> tuple[int, Any]:
        if self.engine is not None:
            jobs = [self.job_view(j) for j in self.engine.jobs()]
        else:
            jobs = [self._stored_view(r) for r in self._store_read(lambda s: s.list_jobs(active_only=True))]
        holds = [
            {
                "job": j["job"],
                "device": j["device"],
                "state": j["state"],
                "file_version": j["file_version"],
                "held_requests": j.get("held_requests"),
                "scheduled_at": j.get("scheduled_at"),
            }
            for j in jobs
            if j["state"] in ("held", "scheduled")
        ]
        schedules = []
        for s in self._store_read(lambda st: st.list_schedules()):
            device = None
            if self.engine is not None:
                with contextlib.suppress(EngineError):
                    device = str(self.engine.job(str(s.job_id)).ieee)
            schedules.append({"job": str(s.job_id), "device": device, "at": s.at_utc.isoformat(), "created": s.created_utc.isoformat()})
        head = self.audit.head() if self.audit is not None else (0, "")
        body = {
            "daemon": {
                "version": version(),
                "pid": os.getpid(),
                "config": str(self.config.source) if self.config.source else None,
                "uptime_s": round(time.monotonic() - self.started, 1),
                "started": _iso(self.started_wall),
                "state_dir": str(self.config.state_dir),
                "control_socket": str(self.config.control_socket),
                "radio": self.radio.to_dict(),
                "summary": self._summary(),
                "store": {"ok": self.store_error is None, "error": self.store_error},
                "audit": {
                    "ok": self.audit_error is None and self.chain_error is None,
                    "error": self.audit_error or self.chain_error,
                    "chain_error": self.chain_error,
                    "head_seq": head[0],
                    "verified_at_start": self.audit_verified,
                    "warning": self.start_warning,
                },
            },
            "jobs": jobs,
            "holds": holds,
            "schedules": schedules,
        }
        return 200, body

    async def devices(self) -> tuple[int, Any]:
        out = []
        app = self.app
        if app is not None:
            own = app.state.node_info.ieee
            for ieee, device in app.devices.items():
                if ieee == own:
                    continue
                job = self.engine.job_for_device(ieee) if self.engine is not None else None
                out.append(
                    {
                        "ieee": str(ieee),
                        "nwk": f"0x{int(device.nwk):04X}",
                        "model": device.model,
                        "manufacturer": device.manufacturer,
                        "kind": self._kind_of(ieee),
                        "job": None if job is None else job.id,
                        "state": None if job is None else job.state.value,
                        "security": self.security.get(ieee).to_dict(),
                        "tunnel": self.tunnels.state(ieee),
                    }
                )
        return 200, {"radio": self.radio.to_dict(), "devices": out}

    async def push(self, image: str, device: str, activation: str | None, activate_now: bool, stall_timeout: float | None, allow_downgrade: bool = False, priority: int | None = None, replace: bool = False) -> tuple[int, Any]:
        if self._stopped:
            raise HttpError(503, "the daemon is stopping")
        ieee = _parse_device(device)
        source = Path(image)
        if not source.is_absolute():
            raise HttpError(400, f"image path {image!r} is relative; send an absolute path (the daemon does not share your working directory)")
        data = await _read_user_file(source, "image")
        try:
            firmware = parse_image(data)
        except ImageError as exc:
            raise HttpError(422, f"{source}: {exc}") from None
        signature = check_image_signature(firmware, ieee, self.config, self._trust if self._trust is not None else TrustStore())
        if signature.refused:
            self._audit("image.signature_refused", ieee, source=str(source), supplier=signature.supplier, message=signature.message)
            raise HttpError(422, f"{source}: image refused before any block was sent: {signature.message}")
        if not self.radio.up or self.engine is None or self.app is None or self.activation is None:
            raise HttpError(503, f"the radio ({self.radio.kind}) is not up{f': {self.radio.last_error}' if self.radio.last_error else ''}; try again when `{self._cli('status')}` shows it up")
        priority = self.config.ota.default_priority(self._kind_of(ieee, firmware)) if priority is None else priority
        self._admit(ieee, priority, replace)  # refused before the image is copied
        unknown = ieee not in self.app.devices
        if unknown and self.radio.kind == "sim":
            known = ", ".join(str(d) for d in self.app.devices if d != self.app.state.node_info.ieee) or "none"
            raise HttpError(404, f"{ieee} is not on this network (known devices: {known}); check the address, or let it join first")
        command_hex: str | None = None
        if activation is not None:
            try:
                command_hex = decode_hex_text(activation).hex()
            except GbcsError as exc:
                raise HttpError(400, f"activation is not hex text: {exc}") from None
            check = self.activation.precheck(command_hex, firmware, ieee)
            if not check.accepted:
                self._audit("gbcs.precheck_refused", ieee, reason=check.reason, message=check.message, response_code=check.response_code)
                raise HttpError(422, f"the activation command was refused before any block was sent: {check.message}")
        digest = hashlib.sha256(data).hexdigest()
        try:
            stored_path = await asyncio.to_thread(self._keep_image, data, digest)
        except OSError as exc:
            where = self.config.state_dir / IMAGES_DIR
            if _out_of_space(exc):
                raise HttpError(507, f"cannot keep a copy of the image in {where}: {exc.strerror or exc}; free space on the state filesystem") from None
            raise HttpError(500, f"cannot keep a copy of the image in {where}: {exc.strerror or exc}; the directory must be writable by the service user") from None
        kind = self._kind_of(ieee, firmware)
        if activate_now:
            request = ActivationRequest.now()
        elif command_hex is not None:
            request = ActivationRequest.command(command_hex)
        else:
            request = ActivationRequest.none()
        record = JobRecord(
            device=str(ieee),
            image_path=str(stored_path),
            image_sha256=digest,
            manufacturer_code=firmware.manufacturer_code,
            image_type=firmware.image_type,
            file_version=firmware.file_version,
            size=firmware.size,
            kind=JobKind(kind),
            activation=request,
            created_utc=dt.datetime.now(dt.timezone.utc),
            priority=priority,
        )
        assert self.store is not None
        if self._stopped or not self.radio.up:  # it went while we read and copied the image
            raise HttpError(503, "the daemon is stopping or the radio went away; push again shortly")
        admission, live = self._admit(ieee, priority, replace)  # again: jobs may have moved meanwhile
        superseded = int(live.id) if admission is Admission.SUPERSEDE and live is not None else None
        try:
            job_number = self.store.create_job(
                record,
                queued=admission is Admission.QUEUE,
                supersede=superseded,
                reason=f"superseded by a push of priority {priority_label(priority)}",
            )
        except DeviceBusy as exc:
            raise HttpError(409, str(exc)) from None
        except StoreError as exc:
            self._store_failed(exc)
            status = 507 if _out_of_space(exc) else 500
            raise HttpError(status, f"the job was NOT accepted: {exc}") from None
        self._audit(
            "job.accepted",
            ieee,
            job=job_number,
            image=str(stored_path),
            source=str(source),
            sha256=digest,
            size=firmware.size,
            manufacturer_code=firmware.manufacturer_code,
            image_type=firmware.image_type,
            file_version=firmware.file_version,
            kind=kind,
            activation=request.mode.value,
            signature=signature.verdict,
            priority=priority,
            supersedes=superseded,
        )
        device_cfg = self.config.device(Eui64.from_air(ieee))
        stall = stall_timeout or (device_cfg.stall_timeout_s if device_cfg else None)
        self._tracks[str(job_number)] = _Track(kind=kind)
        try:
            job = self.engine.push(
                firmware,
                ieee,
                image_path=stored_path,
                stall_timeout_s=stall,
                activation=request.mode.value,
                job_id=str(job_number),
                allow_unknown=unknown,
                allow_downgrade=allow_downgrade,
                priority=priority,
                replace=replace,
            )
        except EngineError as exc:
            self._fail_stored(job_number, str(ieee), f"not started: {exc}")
            raise HttpError(409, str(exc)) from None
        if signature.verdict == "not_checked":
            LOGGER.warning("%s job=%s %s", ieee, job.id, signature.message)
            job.warnings.append(signature.message)
        if command_hex is not None:
            self.activation.arm(job, command_hex)
        if unknown:
            # A real network: the device may simply not have been heard since zigpy's
            # database was made. Open joining; the job waits, pending, for its query.
            self._audit("radio.permit_join", ieee, seconds=PERMIT_FOR_UNKNOWN_S, reason="push to a device the coordinator does not know yet")
            try:
                await self.app.permit(PERMIT_FOR_UNKNOWN_S)
            except Exception as exc:  # the job still waits for the device's own query
                LOGGER.warning("permit joining for %s failed: %s", ieee, exc)
        self._persist(job)
        self._refresh_status()
        return 202, {"job": self.job_view(job)}

    def _admit(self, ieee: zt.EUI64, priority: int, replace: bool) -> tuple[Admission, Job | None]:
        """The engine's admission of a push, or 409 for a device busy at the same priority."""
        assert self.engine is not None
        admission, live = self.engine.admission(ieee, priority, replace=replace)
        if admission is Admission.REFUSE and live is not None:
            raise HttpError(
                409,
                f"{ieee} already has job {live.id} ({live.state.value}) at the same priority ({priority_label(priority)}); "
                f"cancel it first (`{self._cli(f'cancel {live.id}')}`), follow it (`{self._cli(f'wait {live.id}')}`), "
                "or push with --replace (or a higher --priority) to supersede it",
            )
        return admission, live

    async def activate(self, command: str, device: str | None) -> tuple[int, Any]:
        ieee = None if device is None else _parse_device(device)
        if self.activation is None or not self.radio.up:
            # Refuse before verifying: an accepted command advances its counter, and a
            # release that cannot reach the device would waste it.
            raise HttpError(503, f"the radio ({self.radio.kind}) is not up; submit the command when `{self._cli('status')}` shows it up")
        result = self.activation.submit(command, device=ieee)
        self._refresh_status()
        return 200, result.to_dict()

    async def gbcs_send(self, command: str, device: str | None, timeout: float | None) -> tuple[int, Any]:
        ieee = None if device is None else _parse_device(device)
        if self.activation is None or not self.radio.up:
            raise HttpError(503, f"the radio ({self.radio.kind}) is not up; send the command when `{self._cli('status')}` shows it up")
        try:
            raw = decode_hex_text(command)
            result = await self.tunnels.send_command(self.activation, raw, ieee, timeout or 60.0)
        except (CommandRefused, GbcsError) as exc:
            raise HttpError(422, f"not forwarded: {exc}") from None
        self._refresh_status()
        return 200, result

    async def job(self, job_id: str) -> tuple[int, Any]:
        number = _parse_job_id(job_id)
        if self.engine is not None:
            with contextlib.suppress(EngineError):
                return 200, {"job": self.job_view(self.engine.job(str(number)))}
        assert self.store is not None
        try:
            rec = self.store.get_job(number)
        except StoreError as exc:
            raise HttpError(404, str(exc)) from None
        return 200, {"job": self._stored_view(rec)}

    async def cancel(self, job_id: str) -> tuple[int, Any]:
        number = _parse_job_id(job_id)
        if self.engine is None:
            raise HttpError(503, "the radio has not come up yet, so no job is running; try again shortly")
        try:
            job = self.engine.job(str(number))
        except EngineError:
            _status, body = await self.job(job_id)  # 404, or a job that ended in an earlier run
            raise HttpError(409, f"job {number} has already ended ({body['job']['state']})") from None
        if job.done:
            raise HttpError(409, f"job {number} has already ended ({job.state.value})")
        if self.engine.parked(job):
            raise HttpError(503, f"the radio ({self.radio.kind}) is down and job {number} is parked; cancel it when `{self._cli('status')}` shows the radio up")
        self._audit("job.cancel_requested", job.ieee, job=number)
        self.engine.cancel(job.id)
        return 200, {"job": self.job_view(job)}

    async def log(self, device: str | None, since: int | None, limit: int) -> tuple[int, Any]:
        assert self.audit is not None
        dev = None if device is None else str(_parse_device(device))
        path = self.audit.path

        def read() -> list[dict[str, Any]]:
            out = []
            for record in audit_mod.read_records(path, device=dev, since_seq=since):
                out.append(record.as_dict())
                if len(out) >= limit:
                    break
            return out

        try:
            records = await asyncio.to_thread(read)
        except AuditError as exc:
            raise HttpError(500, str(exc)) from None
        return 200, {"records": records, "head": self.audit.head()[0], "limit": limit}

    async def log_verify(self) -> tuple[int, Any]:
        assert self.audit is not None
        head = self.audit.head()
        result = await asyncio.to_thread(self.audit.verify, head)
        return 200, dataclasses.asdict(result) | {"path": str(self.audit.path)}

    async def messages(self, device: str | None, after: int | None, limit: int) -> tuple[int, Any]:
        """GET /v1/messages: the GBCS messages kept (han_ota.hub_alerts), oldest first."""
        dev = None if device is None else str(_parse_device(device))
        rows = self._store_read(lambda s: s.list_messages(device=dev, after_id=after, limit=limit))
        return 200, {"messages": [m.to_dict() for m in rows], "limit": limit}

    def _store_read(self, body: Callable[[StateStore], list[Any]]) -> list[Any]:
        if self.store is None:
            return []
        try:
            return body(self.store)
        except StoreError as exc:
            self._store_failed(exc)
            return []

    def _keep_image(self, data: bytes, digest: str) -> Path:
        """A copy of the image in the state directory, so the job survives the
        original being moved or deleted (and ProtectHome hiding it after a restart)."""
        directory = self.config.state_dir / IMAGES_DIR
        directory.mkdir(mode=0o750, exist_ok=True)
        target = directory / f"{digest}.ota"
        if target.exists():
            with contextlib.suppress(OSError):
                if hashlib.sha256(target.read_bytes()).hexdigest() == digest:
                    return target
        # A name of its own per call: concurrent pushes of one image each write a whole
        # copy, and replacing the target by identical content is harmless.
        fd, name = tempfile.mkstemp(prefix=f".{digest}.", suffix=".tmp", dir=directory)
        tmp = Path(name)
        try:
            os.fchmod(fd, 0o640)
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        except BaseException:
            os.close(fd)
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        os.close(fd)
        os.replace(tmp, target)
        dfd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
        return target


async def _read_user_file(path: Path, what: str) -> bytes:
    """A file a client named, read in a worker thread that can neither block on the
    open (a FIFO, a device) nor hold the request past FILE_READ_TIMEOUT_S."""
    try:
        return await asyncio.wait_for(asyncio.to_thread(_read_limited, path), FILE_READ_TIMEOUT_S)
    except TimeoutError:
        raise HttpError(503, f"reading {what} {path} took over {FILE_READ_TIMEOUT_S:g} s (a hung network or FUSE filesystem?); copy it to a local disk and push again") from None
    except NotRegularFile as exc:
        raise HttpError(400, f"{exc}; the daemon reads only regular files") from None
    except OSError as exc:
        raise HttpError(400, f"the daemon cannot read {what} {path}: {exc.strerror or exc}; it must be readable by the service user (under systemd, not in /home or /tmp)") from None


def _read_limited(path: Path) -> bytes:
    from gateway.image import DEFAULT_MAX_SIZE

    with open_regular(path) as f:
        size = os.fstat(f.fileno()).st_size
        if size > DEFAULT_MAX_SIZE:
            raise OSError(f"{path} is {size} bytes, over the {DEFAULT_MAX_SIZE}-byte image limit")
        return f.read(DEFAULT_MAX_SIZE + 1)


def _out_of_space(exc: BaseException) -> bool:
    """ENOSPC/EDQUOT (or SQLite's SQLITE_FULL) anywhere in the cause chain: only then
    is "free space" the fix."""
    seen: BaseException | None = exc
    for _ in range(8):  # a chain can loop; the cause is never far down
        if seen is None:
            break
        if isinstance(seen, OSError) and seen.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        if isinstance(seen, sqlite3.Error) and getattr(seen, "sqlite_errorcode", 0) & 0xFF == sqlite3.SQLITE_FULL:
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def _parse_device(text: str) -> zt.EUI64:
    try:
        return zt.EUI64(parse_eui64(text, "device").air)
    except ConfigError as exc:
        raise HttpError(400, str(exc)) from None


def _parse_job_id(text: str) -> int:
    if not text.isdigit() or len(text) > 18:
        raise HttpError(404, f"no job {text!r}: job ids are numbers, as `han-ota status` lists them")
    return int(text)


# --------------------------------------------------------------------------- entry point


async def run_daemon(
    config: Config,
    sim_devices: Sequence[str | SimDeviceSpec] = (),
    *,
    ready_cb: Callable[[Daemon], Any] | None = None,
    **options: Any,
) -> int:
    """Run until SIGTERM/SIGINT (or ``daemon.request_stop()``); returns the exit status.

    Raises DaemonStartError when it cannot start (missing state directory, socket
    in use, bad simulated device, unreadable trust anchor).
    """
    daemon = Daemon(config, sim_devices, **options)
    loop = asyncio.get_running_loop()
    received: list[str] = []

    def on_signal(name: str) -> None:
        received.append(name)
        daemon.request_stop()

    installed = []
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(sig, on_signal, sig.name)
            installed.append(sig)
    try:
        try:
            await daemon.start()
        except BaseException:
            await daemon.stop("start-up failed")
            raise
        if ready_cb is not None:
            result = ready_cb(daemon)
            if asyncio.iscoroutine(result):
                await result
        await daemon.wait_stopped()
        await daemon.stop(f"signal {received[0]}" if received else "stop requested")
    finally:
        for sig in installed:
            with contextlib.suppress(Exception):
                loop.remove_signal_handler(sig)
    return 0


__all__ = ["BACKOFF_S", "Daemon", "DaemonStartError", "RadioState", "rebind_engine", "restore_job", "run_daemon", "sim_specs", "version"]
