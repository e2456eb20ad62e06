"""Keep a radio up: notice when the coordinator goes away, open it again, tell the owner.

zigpy 2.4 does not reconnect by itself: when the serial link drops (a pulled dongle,
a closed ``socket://`` bridge) or the NCP fails, the driver calls
``app.connection_lost(exc)``, which only emits the ``connection_lost`` listener event.
Neither driver recovers either:

* bellows turns an unsolicited ASH RSTACK/ERROR (the NCP rebooted or failed) into
  ``connection_lost`` (``Ezsp.enter_failed_state``), so one listener covers EZSP;
* zigpy-znp ignores an unsolicited ``SYS.ResetInd`` (a Z-Stack watchdog reset): the
  serial link stays up, but the firmware lost its running network and endpoints, and
  every later request fails. We listen for it with zigpy-znp's public callback API
  (``app._znp.callback_for_response``), the one way to hear it.

``RadioSupervisor`` owns an *app factory* (an async callable returning a started
``ControllerApplication``, e.g. ``lambda: radios.select.open_app("znp", path=..., database=...)``).
On either signal it calls its ``on_lost`` hooks, shuts the dead application down,
calls the factory again with backoff (1, 2, 4 ... 60 s between failed attempts; the
first attempt is immediate), and calls the ``on_reconnected(app)`` hooks with the new
application object, so the owner can rebind (the engine's driver is bound to one app).

Give the factory a zigpy database (``database=...``) so the new application knows the
devices that joined earlier; without one they are unknown until they announce again.

This module knows zigpy and the two drivers only; it never imports ``gateway``.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from zigpy.application import ControllerApplication

from radios.closing import shutdown_app

LOGGER = logging.getLogger(__name__)

BACKOFF_S: tuple[float, ...] = (1, 2, 4, 8, 16, 32, 60)
# A dead radio's application normally shuts down in well under a second; bellows 1.2.1
# with its serial thread sometimes never finishes (see docs/radios.md).
SHUTDOWN_TIMEOUT_S = 5.0

AppFactory = Callable[[], Awaitable[ControllerApplication]]
LostHook = Callable[[str], Any]  # may be async
ReconnectedHook = Callable[[ControllerApplication], Any]  # may be async


@dataclass
class SupervisorEvent:
    at: float  # time.time()
    kind: str  # up | lost | attempt_failed | reconnected | closed
    detail: str = ""


class _Listener:
    """A zigpy application listener bound to one application object."""

    def __init__(self, supervisor: RadioSupervisor, app: ControllerApplication) -> None:
        self._supervisor = supervisor
        self._app = app

    def connection_lost(self, exc: BaseException | None = None) -> None:
        reason = f"connection lost: {type(exc).__name__}: {exc}" if exc is not None else "connection lost"
        self._supervisor._lost(self._app, reason)


@dataclass
class _Watch:
    app: ControllerApplication
    listener_id: Any = None
    znp_listener: Any = None


@dataclass
class RadioSupervisor:
    factory: AppFactory
    on_reconnected: ReconnectedHook | None = None
    on_lost: LostHook | None = None
    backoff: Sequence[float] = BACKOFF_S
    #: for the log: "znp", "ezsp", "sim"
    name: str = "radio"
    shutdown_timeout: float = SHUTDOWN_TIMEOUT_S

    app: ControllerApplication | None = field(default=None, init=False)
    reconnects: int = field(default=0, init=False)
    last_error: str | None = field(default=None, init=False)
    events: list[SupervisorEvent] = field(default_factory=list, init=False)
    _lost_hooks: list[LostHook] = field(default_factory=list, init=False)
    _reconnected_hooks: list[ReconnectedHook] = field(default_factory=list, init=False)
    _watch: _Watch | None = field(default=None, init=False)
    _task: asyncio.Task[None] | None = field(default=None, init=False)
    _up: asyncio.Event = field(default_factory=asyncio.Event, init=False)
    _closed: bool = field(default=False, init=False)
    _quiet: bool = field(default=False, init=False)  # we are resetting/closing the radio ourselves

    def __post_init__(self) -> None:
        if self.on_lost is not None:
            self._lost_hooks.append(self.on_lost)
        if self.on_reconnected is not None:
            self._reconnected_hooks.append(self.on_reconnected)
        if not self.backoff:
            raise ValueError("backoff needs at least one delay")

    # ------------------------------------------------------------------ public

    def add_hooks(self, *, on_lost: LostHook | None = None, on_reconnected: ReconnectedHook | None = None) -> None:
        """More owners: each hook is called in the order added (async hooks are awaited)."""
        if on_lost is not None:
            self._lost_hooks.append(on_lost)
        if on_reconnected is not None:
            self._reconnected_hooks.append(on_reconnected)

    @property
    def up(self) -> bool:
        return self._up.is_set()

    async def start(self, *, retry: bool = False) -> ControllerApplication:
        """Open the radio for the first time. With ``retry`` keep trying with backoff
        (a daemon); without, the factory's error propagates (a one-shot command)."""
        if self.app is not None:
            return self.app
        if retry:
            app = await self._open_with_backoff()
        else:
            app = await self.factory()
        self._adopt(app)
        self._event("up", "radio started")
        return app

    async def wait_up(self, timeout: float | None = None) -> ControllerApplication:
        """The current application, once the radio is up (after a reconnect if one runs)."""
        async with asyncio.timeout(timeout):
            await self._up.wait()
        assert self.app is not None
        return self.app

    def report_lost(self, reason: str) -> None:
        """Tell the supervisor the radio is unusable (for signals zigpy does not give)."""
        if self.app is not None:
            self._lost(self.app, reason)

    async def reconnected(self, count: int, timeout: float | None = None) -> ControllerApplication:
        """Wait until at least ``count`` reconnections happened and the radio is up (tests)."""
        async with asyncio.timeout(timeout):
            while self.reconnects < count or not self.up:
                await asyncio.sleep(0.02)
        assert self.app is not None
        return self.app

    async def close(self) -> None:
        """Stop supervising and shut the current application down."""
        self._closed = True
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        app = self._unwatch()
        self.app = None
        self._up.clear()
        if app is not None:
            await self._shutdown(app)
        self._event("closed")

    async def __aenter__(self) -> RadioSupervisor:
        await self.start()
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.close()

    # ------------------------------------------------------------------ watching

    def _adopt(self, app: ControllerApplication) -> None:
        self.app = app
        watch = _Watch(app)
        watch.listener_id = app.add_listener(_Listener(self, app))
        watch.znp_listener = self._watch_znp_resets(app)
        self._watch = watch
        self._up.set()

    def _watch_znp_resets(self, app: ControllerApplication) -> Any:
        znp = getattr(app, "_znp", None)
        if znp is None or not hasattr(znp, "callback_for_response"):
            return None
        import zigpy_znp.commands as c

        def on_reset(msg: Any) -> None:
            if self._quiet:
                return
            self._lost(app, f"coordinator reset (SYS.ResetInd, reason {getattr(msg.Reason, 'name', msg.Reason)})")

        return znp.callback_for_response(c.SYS.ResetInd.Callback(partial=True), on_reset)

    def _unwatch(self) -> ControllerApplication | None:
        watch, self._watch = self._watch, None
        if watch is None:
            return None
        with contextlib.suppress(Exception):
            watch.app.remove_listener(watch.listener_id)
        if watch.znp_listener is not None:
            znp = getattr(watch.app, "_znp", None)
            if znp is not None:
                with contextlib.suppress(Exception):
                    znp.remove_listener(watch.znp_listener)
        return watch.app

    def _lost(self, app: ControllerApplication, reason: str) -> None:
        if self._closed or app is not self.app or self._task is not None:
            return  # a stale app, or a recovery already under way
        LOGGER.warning("%s: %s; reconnecting", self.name, reason)
        self.last_error = reason
        self._up.clear()
        self._event("lost", reason)
        self._task = asyncio.get_running_loop().create_task(self._recover(reason), name=f"{self.name}-reconnect")

    # ------------------------------------------------------------------ recovery

    async def _recover(self, reason: str) -> None:
        try:
            for hook in list(self._lost_hooks):
                await self._call(hook, reason)
            old = self._unwatch()
            self.app = None
            if old is not None:
                await self._shutdown(old)
            app = await self._open_with_backoff()
            if self._closed:
                await self._shutdown(app)
                return
            self.reconnects += 1
            self._adopt(app)
            self._event("reconnected", f"reconnect #{self.reconnects}")
            LOGGER.warning("%s: reconnected (#%d)", self.name, self.reconnects)
            for hook in list(self._reconnected_hooks):
                await self._call(hook, app)
        finally:
            self._task = None

    async def _open_with_backoff(self) -> ControllerApplication:
        attempt = 0
        while True:
            try:
                return await self.factory()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                delay = self.backoff[min(attempt, len(self.backoff) - 1)]
                attempt += 1
                self.last_error = f"{type(exc).__name__}: {exc}"
                self._event("attempt_failed", f"attempt {attempt}: {self.last_error}; next in {delay:g} s")
                LOGGER.warning("%s could not be opened (%s); retrying in %g s", self.name, self.last_error, delay)
                await asyncio.sleep(delay)

    async def _shutdown(self, app: ControllerApplication) -> None:
        self._quiet = True
        try:
            async with asyncio.timeout(self.shutdown_timeout):
                await shutdown_app(app)
        except Exception as exc:  # a dead radio may fail to say goodbye
            LOGGER.info("%s: shutdown of the old application: %s: %s", self.name, type(exc).__name__, exc)
        finally:
            self._quiet = False

    async def _call(self, hook: Callable[..., Any], arg: Any) -> None:
        try:
            result = hook(arg)
            if inspect.isawaitable(result):
                await result
        except Exception:
            LOGGER.exception("%s: supervisor hook %r failed", self.name, hook)

    def _event(self, kind: str, detail: str = "") -> None:
        self.events.append(SupervisorEvent(time.time(), kind, detail))


__all__ = ["AppFactory", "BACKOFF_S", "RadioSupervisor", "SupervisorEvent"]
