"""The daemon's lifecycle: start, stop, and the radio coming, going and coming back.

``Daemon`` owns the parts and wires them: the runtime they share (runtime.py), the
journal of store and audit (journal.py), recovery after a restart (recovery.py), the
status views (status.py) and the control API's handlers (handlers.py), which
``han_ota.control.ControlServer`` calls. The engine and the activation service are
made on the first radio start; the activation service is extended through its hooks
(every command audited, CS06 carried out as the device's `activation` says, schedules
due while the radio is away held back), never subclassed.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import signal
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import zigpy.types as zt
from zigpy.application import ControllerApplication

from gateway.activation import ActivationService, load_trust
from gateway.audit import AuditLog
from gateway.config import Config
from gateway.engine import NUDGE_AFTER_S, Engine, Job
from gateway.ota import events as ev
from gateway.se.security import SecurityRegistry
from gateway.store import StateStore
from han_ota import sdnotify
from han_ota.control import ControlServer, ControlSocketError
from han_ota.daemon.handlers import ControlHandlers
from han_ota.daemon.journal import PROGRESS_BYTES, PROGRESS_SECONDS, Journal
from han_ota.daemon.recovery import Recovery
from han_ota.daemon.runtime import DaemonStartError, RadioState, Runtime, sim_specs, store_id, version
from han_ota.daemon.status import Views
from han_ota.hub_alerts import HubMessages, device_keys_of, start_hub_messages
from han_ota.security import KeyEstablishmentUnavailable, close_key_establishment, start_key_establishment
from han_ota.statedir import StateDirError, StateDirLock, ensure_state_dir
from han_ota.traffic import DaemonTraffic
from han_ota.tunnels import DaemonTunnels
from radios.sim.spec import SimDeviceSpec
from radios.supervisor import RadioSupervisor

LOGGER = logging.getLogger("han_ota.daemon")

BACKOFF_S: tuple[float, ...] = (1, 2, 4, 8, 16, 32, 60)
TICK_S = 1.0

OpenRadio = Callable[[], Awaitable[ControllerApplication]]


async def rebind_engine(engine: Engine, app: ControllerApplication) -> None:
    """Point the engine at a new application object (after the radio was reopened)."""
    await engine.rebind(app)


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
        specs = sim_specs(config, sim_devices) if config.radio.kind == "sim" else []
        self.runtime = Runtime(config, specs, SecurityRegistry(config.security_modes()), RadioState(config.radio.kind))
        self.link = link
        self._open_radio_override = open_radio
        self.backoff = tuple(backoff)
        self.notifier = notifier or sdnotify.Notifier()
        self.session_overrides = dict(session_overrides or {})
        self.tick_s = tick_s
        self.nudge_after_s = nudge_after_s

        self.journal = Journal(self.runtime, on_change=self._refresh_status, progress_bytes=progress_bytes, progress_seconds=progress_seconds)
        self.ke_service: Any = None
        #: The GBCS tunnels to the devices (han_ota/tunnels.py).
        self.tunnels = DaemonTunnels(config, self.security, audit=self.journal.write)
        #: [[sim_traffic]]: background traffic on the simulated HAN, measured (han_ota/traffic.py).
        self.traffic = DaemonTraffic(config.sim_traffic, audit=self.journal.write, tunnels=self.tunnels)
        self.views = Views(self.runtime, self.journal, self.tunnels)
        #: What the control server calls (han_ota.control.ControlApi).
        self.api = ControlHandlers(self.runtime, self.journal, self.views, self.tunnels, on_change=self._refresh_status)
        self.recovery = Recovery(self.runtime, self.journal)
        self.control: ControlServer | None = None
        self._lock: StateDirLock | None = None

        self._radio_ready = asyncio.Event()
        self._open_failures = 0
        self.supervisor = RadioSupervisor(factory=self._open_radio_audited, name=config.radio.kind, backoff=self.backoff)
        self.supervisor.add_hooks(on_lost=self._radio_lost, on_reconnected=self._radio_reconnected)
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[Any]] = []
        self._status_line = ""

    # ------------------------------------------------------------------ the parts' state, by its old names

    @property
    def config(self) -> Config:
        return self.runtime.config

    @property
    def specs(self) -> list[SimDeviceSpec]:
        return self.runtime.specs

    @property
    def radio(self) -> RadioState:
        return self.runtime.radio

    @property
    def security(self) -> SecurityRegistry:
        return self.runtime.security

    @property
    def app(self) -> ControllerApplication | None:
        return self.runtime.app

    @property
    def engine(self) -> Engine | None:
        return self.runtime.engine

    @property
    def activation(self) -> ActivationService | None:
        return self.runtime.activation

    @property
    def hub(self) -> HubMessages | None:
        return self.runtime.hub

    @property
    def store(self) -> StateStore | None:
        return self.journal.store

    @property
    def audit(self) -> AuditLog | None:
        return self.journal.audit

    @property
    def store_error(self) -> str | None:
        return self.journal.store_error

    @property
    def audit_error(self) -> str | None:
        return self.journal.audit_error

    @property
    def chain_error(self) -> str | None:
        return self.journal.chain_error

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Open state, listen, notify READY, and start bringing the radio up."""
        config = self.config
        self._open_state()
        try:
            self.runtime.trust = load_trust(config)
        except Exception as exc:  # TrustError, OSError: a supplier file named in the config
            self._close_state()
            raise DaemonStartError(f"{config.source or 'config'}: [[supplier]] trust anchors cannot be loaded: {exc}") from None
        try:
            device_keys = device_keys_of(config)
        except Exception as exc:  # GbcsUsageError naming the file
            self._close_state()
            raise DaemonStartError(f"{config.source or 'config'}: [[device]] gbcs_certificate cannot be loaded: {exc}") from None
        self.journal.write("daemon.start", version=version(), pid=os.getpid(), config=str(config.source) if config.source else None, radio=self.radio.kind, state_dir=str(config.state_dir))
        try:  # before the radio: alerts a crash left reserved are finished first
            self.runtime.hub = await start_hub_messages(
                config, self.store, trust=self.runtime.trust, audit=self.journal.write, durable_job_id=store_id, device_keys=device_keys
            )
        except OSError as exc:  # the GFI feed's port
            self._close_state()
            raise DaemonStartError(f"[hub] gfi_feed = {config.hub.gfi_feed!r} cannot listen: {exc.strerror or exc}") from None
        # Every message the tunnels carry is kept, audited, shown and fed (han_ota/hub_alerts.py).
        self.tunnels.add_listener(self.runtime.hub.record)
        self.control = ControlServer(self.api, config.control_socket, config.control_tcp)
        try:
            await self.control.start()
        except ControlSocketError as exc:
            self._close_state()
            raise DaemonStartError(str(exc)) from None
        self.notifier.ready(self.views.summary())
        self._tasks.append(asyncio.create_task(self._radio_first_start(), name="han-ota-radio"))
        self._tasks.append(asyncio.create_task(self._ticker(), name="han-ota-tick"))
        if self.journal.check_from is not None:
            self._tasks.append(asyncio.create_task(self.journal.verify_whole_chain(), name="han-ota-verify"))
        interval = sdnotify.watchdog_interval()
        if interval:
            self._tasks.append(asyncio.create_task(self._watchdog(interval), name="han-ota-watchdog"))
        LOGGER.info("han-ota %s running: state %s, control %s, radio %s", version(), config.state_dir, config.control_socket, self.radio.kind)

    def request_stop(self) -> None:
        self._stop.set()

    async def wait_stopped(self) -> None:
        await self._stop.wait()

    async def wait_radio(self, timeout: float | None = None) -> None:
        async with asyncio.timeout(timeout):
            await self._radio_ready.wait()

    async def stop(self, reason: str = "stopped") -> None:
        """Graceful stop: refuse new requests, persist every job, close the radio."""
        if self.runtime.stopping:
            return
        self.runtime.stopping = True
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
        self.journal.persist_all(force=True)
        await self.tunnels.close()  # CloseTunnel while the radio still works
        await self.traffic.close()
        # Radio off first: detaching the sessions would hand the devices to zigpy's own
        # OTA handler, which answers ABORT (a device then erases its partial download).
        await close_key_establishment(self.ke_service)
        self.ke_service = None
        await self.supervisor.close()
        self.runtime.app = None
        if self.engine is not None:
            with contextlib.suppress(Exception):
                await self.engine.close()
        self.journal.persist_all(force=True)
        if self.hub is not None:
            await self.hub.close()
        self.journal.write("daemon.stop", reason=reason)
        self._close_state()

    def _close_state(self) -> None:
        self.journal.close()
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
            self.journal.open(state_dir)
        except DaemonStartError:
            self._close_state()
            raise

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
            self.journal.write("radio.open_failed", error=self.radio.last_error, retry_in_s=delay, attempt=self._open_failures)
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
        self.journal.write("radio.down", reason=reason)
        if self.engine is not None:
            self.engine.park(reason)
        self.runtime.app = None
        self.journal.persist_all(force=True)
        self._refresh_status()

    async def _radio_reconnected(self, app: ControllerApplication) -> None:
        """Supervisor hook (and the first start): a working application."""
        try:
            await self._radio_up(app)
        except Exception:  # a bug; keep the daemon (and the control API) alive and try again
            LOGGER.exception("bringing the radio up failed; reopening it")
            self.supervisor.report_lost("bringing the radio up failed (see the log)")

    async def _radio_up(self, app: ControllerApplication) -> None:
        rt = self.runtime
        rt.app = app
        first = rt.engine is None
        if rt.engine is None:
            rt.engine = self._make_engine(app)
        else:
            await rt.engine.rebind(app)
        await self._start_key_establishment(app)
        await self.tunnels.radio_up(app)
        await self.traffic.radio_up(app)
        self.radio.reconnects = self.supervisor.reconnects
        self.radio.up = True
        self.radio.since = time.time()
        self.radio.last_error = None
        self.journal.write("radio.up", kind=self.radio.kind, reconnects=self.radio.reconnects)
        if first:
            self.recovery.resume_jobs()
            if rt.hub is not None:  # forwarded before a kill, never answered: again, once (han_ota/tunnels.py)
                self.tunnels.reforward(rt.hub.unanswered_forwards(), rt.hub.mark_reforwarded)
        else:
            self._unpark()
        self._after_radio_up()
        self._radio_ready.set()
        self._refresh_status()

    def _make_engine(self, app: ControllerApplication) -> Engine:
        """The one engine, its observers and the activation service (first radio start)."""
        rt, journal = self.runtime, self.journal
        engine = Engine(app, self.config.ota, session_overrides=self.session_overrides, security=self.security, nudge_after_s=self.nudge_after_s)
        self.tunnels.engine = engine
        if rt.hub is not None:
            rt.hub.watch(engine)  # first: an alert's counter is reserved before the job's state is written
        engine.add_observer(journal.on_job_action)
        engine.add_observer(self._release_lab_hold)
        assert journal.store is not None
        rt.activation = ActivationService(
            engine,
            self.config,
            journal.store,
            trust=rt.trust,
            on_outcome=journal.on_outcome,
            on_schedule=journal.on_schedule,
            durable_job_id=store_id,
            # Every verdict stored and audited (armed one-step submits included).
            before_submit=journal.command_submitted,
            on_submitted=journal.record_verdict,
            # The device's `activation` config: release, forward over the tunnel, or both.
            carry_out=self.tunnels.carry_out,
            may_fire=self._may_fire,
        )
        return engine

    def _may_fire(self, ieee: zt.EUI64) -> bool:
        # A future-dated activation due while the radio is away waits for it: the
        # driver has no session attached then, and the moment has passed either way.
        if self.radio.up:
            return True
        LOGGER.warning("%s: scheduled activation is due but the radio is down; it runs when the radio is back", ieee)
        return False

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
            self.ke_service = await start_key_establishment(app, self.config, self.security, self.journal.ke_event)
        except KeyEstablishmentUnavailable as exc:
            LOGGER.error("%s", exc)
            self.journal.write("ke.unavailable", error=str(exc))

    def _unpark(self) -> None:
        assert self.engine is not None
        for job in self.engine.resume_parked():
            self.journal.write("job.reattached", job.ieee, job=store_id(job), state=job.state.value, offset=job.session.offset)

    def _after_radio_up(self) -> None:
        """Work that waited for the radio: lab activations and schedules that fell due."""
        assert self.engine is not None and self.activation is not None
        for job in list(self.engine.jobs()):
            if job.activation == "now" and job.state is ev.SessionState.HELD:
                self._activate_now(job)
        self.activation.fire_deferred()

    def _release_lab_hold(self, job: Job, action: object) -> None:
        """Engine observer: a push with activate_now is released as soon as it is held."""
        if isinstance(action, ev.StateChanged) and action.new is ev.SessionState.HELD and job.activation == "now":
            asyncio.get_running_loop().call_soon(self._activate_now, job)

    def _activate_now(self, job: Job) -> None:
        if self.engine is None or job.state is not ev.SessionState.HELD or not self.radio.up:
            return  # the radio coming back runs this again (_after_radio_up)
        why = "activate_now with the push: lab image, released without supplier authority"
        self.journal.write("job.activate_now", job.ieee, job=store_id(job), warning=True, message=why)
        self.engine.activate(job.ieee, why=why, unauthorised=True)

    # ------------------------------------------------------------------ status line, ticks

    def _refresh_status(self) -> None:
        line = self.views.summary()
        if line != self._status_line:
            self._status_line = line
            self.notifier.status(line)

    async def _ticker(self) -> None:
        while True:
            await asyncio.sleep(self.tick_s)
            self.journal.persist_all()
            self._refresh_status()

    async def _watchdog(self, interval: float) -> None:
        while True:
            self.notifier.watchdog()
            await asyncio.sleep(interval)


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
