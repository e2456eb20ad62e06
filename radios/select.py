"""Open the radio a configuration names: sim, ezsp (bellows) or znp (zigpy-znp).

Every kind comes back as a started zigpy ControllerApplication, so the OTA layer
above never knows which one it drives.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from zigpy.application import ControllerApplication

from radios.closing import shutdown_app
from radios.fragmentation import install_fragmentation
from radios.han_services import apply_han_config

LOGGER = logging.getLogger(__name__)

RADIO_KINDS = ("sim", "ezsp", "znp")


@dataclass(frozen=True)
class RadioDefaults:
    baudrate: int
    flow_control: str | None


# Each dongle family's serial defaults: ZNP 115200 without flow control; EZSP 115200
# with software flow control (XON/XOFF), unless the dongle wires RTS/CTS (ZBT-2:
# 460800 hardware), which the lab sets in [radio].
DEFAULTS = {
    "znp": RadioDefaults(115200, None),
    "ezsp": RadioDefaults(115200, "software"),
}


class RadioError(RuntimeError):
    """The radio could not be opened; the message says what to check."""


LEGACY_DATABASE = "zigbee.db"
# Closing an app whose radio is away: zigpy's own shutdown gives up on it by then.
SHUTDOWN_TIMEOUT_S = 10.0

StartedHook = Callable[[ControllerApplication], Awaitable[None]]


def database_for(state_dir: Path, kind: str, path: str | None) -> Path | None:
    """zigpy's device database for one radio: ``zigbee-KIND-PATH.db`` in the state directory.

    A real network outlives the process, so zigpy must remember its devices; but the
    database also holds the network's settings, and one shared by two dongles makes
    zigpy refuse the second (DestructiveWriteNetworkSettings). The simulated radio
    keeps no database. A ``zigbee.db`` from before this rule is taken over by the
    first radio that finds no database of its own.
    """
    if kind == "sim":
        return None
    slug = re.sub(r"[^A-Za-z0-9.-]+", "_", (path or "default").removeprefix("/dev/")).strip("_")
    database = state_dir / f"zigbee-{kind}-{slug}.db"
    legacy = state_dir / LEGACY_DATABASE
    if not database.exists() and legacy.exists():
        legacy.rename(database)
        LOGGER.warning("zigpy database %s now belongs to the %s radio at %s: renamed to %s", legacy, kind, path, database.name)
    return database


def zigpy_config(
    kind: str, *, path: str, baudrate: int | None, flow_control: str | None, database: Path | None, han_endpoint: bool = True,
    key_establishment: bool = False,
) -> dict[str, Any]:
    defaults = DEFAULTS[kind]
    flow = flow_control if flow_control is not None else defaults.flow_control
    device: dict[str, Any] = {"path": path, "baudrate": baudrate or defaults.baudrate}
    device["flow_control"] = None if flow in (None, "none") else flow
    config: dict[str, Any] = {"device": device, "database_path": str(database) if database else None}
    if kind == "ezsp":
        # bellows' serial thread: after a lost link its shutdown hung in 2 of 23 drops
        # (0 of 60 without it); the event loop is fast enough for one coordinator.
        config["use_thread"] = False
    # The Smart Energy endpoint with the OTA server and Time clusters, registered at
    # start-up (EmberZNet refuses new endpoints once its stack runs); with
    # ``key_establishment`` it offers the Key Establishment server cluster too.
    return apply_han_config(config, kind, key_establishment=key_establishment) if han_endpoint else config


async def open_app(
    kind: str,
    *,
    path: str | None = None,
    baudrate: int | None = None,
    flow_control: str | None = None,
    database: Path | None = None,
    sim_devices: Sequence[Any] = (),
    link: Any = None,
    han_endpoint: bool = True,
    key_establishment: bool = False,
    on_started: StartedHook | None = None,
) -> ControllerApplication:
    """``on_started(app)`` runs once the network is up and before anything waits for
    devices: where the hub's own servers go that a joining device talks to at once
    (key establishment). A failure in it closes the app, like a failed start."""
    if kind == "sim":
        from radios.sim.app import start_sim_app

        # The sim registers the SE endpoint from its zigpy config only when key
        # establishment is on (otherwise setup_han_services adds it, as before).
        extra = apply_han_config({}, "sim", key_establishment=True) if han_endpoint and key_establishment else None
        return await start_sim_app(list(sim_devices), link=link, database_path=database, config=extra, on_started=on_started)
    if kind not in DEFAULTS:
        raise RadioError(f"radio kind {kind!r} is not one of {', '.join(RADIO_KINDS)}")
    if not path:
        raise RadioError(f"radio kind {kind!r} needs --path: a serial device, /dev/serial/by-id/... link or socket://host:port")
    cls: type[ControllerApplication]
    if kind == "ezsp":
        from bellows.zigbee.application import ControllerApplication as EzspApp

        cls = EzspApp
    else:
        from zigpy_znp.zigbee.application import ControllerApplication as ZnpApp

        cls = ZnpApp
    config = zigpy_config(
        kind, path=path, baudrate=baudrate, flow_control=flow_control, database=database, han_endpoint=han_endpoint,
        key_establishment=key_establishment,
    )
    # new() opens zigpy's database in aiosqlite's non-daemon thread. Cancelled halfway
    # (a SIGTERM while the dongle is away), the app would be lost with the thread still
    # running, and the process could never exit: let it finish, then close it.
    creating = asyncio.ensure_future(cls.new(config=config, auto_form=True, start_radio=False))
    try:
        app = await asyncio.shield(creating)
    except asyncio.CancelledError:
        with contextlib.suppress(BaseException):
            await _close(await creating)
        raise
    except Exception as exc:
        raise RadioError(f"could not start the {kind} radio at {path}: {describe(exc)}") from exc
    if kind == "ezsp":
        from radios.ezsp_guard import guard_app

        # An NCP answer bellows cannot parse (real firmware's invalidCommand on EZSP 14+)
        # is an error at once, not bellows' 10 s command timeout
        guard_app(app)
        if han_endpoint:
            _keep_endpoints_across_resets(app)
    try:
        await app.startup(auto_form=True)
        if kind == "ezsp":
            _one_callback_handler(app)
        # Messages longer than one frame, as each stack's host sends (and, for Z-Stack,
        # receives) them: neither bellows nor zigpy-znp does (radios/fragmentation.py)
        install_fragmentation(app)
        if on_started is not None:
            await on_started(app)
    except BaseException as exc:
        # zigpy's startup() shuts down with db=False on failure (so a caller may retry
        # the same app), which leaves aiosqlite's non-daemon thread running: the
        # process would never exit. We never retry an app, so close it all.
        await _close(app)
        if not isinstance(exc, Exception):
            raise  # cancellation, Ctrl-C
        raise RadioError(f"could not start the {kind} radio at {path}: {describe(exc)}") from exc
    return app


def _keep_endpoints_across_resets(app: Any) -> None:
    """bellows forms a new network by resetting the NCP (reset_network_info -> _reset)
    after it registered our endpoints, and does not register them again: EmberZNet
    forgets endpoints at every reset and takes new ones only before the stack runs, so
    the first start on a fresh dongle left the SE endpoint (and the Key Establishment
    server an SE device looks for) unregistered until the next start. Register them
    after each such reset, as bellows' own connect() does after its first one."""
    reset = getattr(app, "_reset", None)
    if reset is None or not hasattr(app, "register_endpoints") or not hasattr(app, "_created_device_endpoints"):
        return  # another bellows: nothing to keep

    async def reset_then_register() -> None:
        await reset()
        app._created_device_endpoints.clear()
        await app.register_endpoints()

    app._reset = reset_then_register


def _one_callback_handler(app: Any) -> None:
    """bellows' start_network registers its NCP callback handler each time it runs, and
    zigpy's first start on a blank dongle runs it twice (once for the energy scan, once
    on the channel picked): every callback, so every incoming message, then reached
    zigpy twice until the next start (the hub stored each GBCS message it received twice
    and answered each OTA request twice). Keep the first registration only."""
    callbacks = getattr(getattr(app, "_ezsp", None), "_callbacks", None)
    handler = getattr(app, "ezsp_callback_handler", None)
    if not isinstance(callbacks, dict) or handler is None:
        return  # another bellows: nothing to fix
    repeated = [key for key, cb in callbacks.items() if cb == handler][1:]
    for key in repeated:
        del callbacks[key]
    if repeated:
        LOGGER.debug("bellows had registered its callback handler %d times; kept one", len(repeated) + 1)


async def _close(app: ControllerApplication) -> None:
    """Shut ``app`` down, database thread included, even while being cancelled again."""
    closing = asyncio.ensure_future(shutdown_app(app))
    with contextlib.suppress(BaseException):
        await asyncio.wait_for(asyncio.shield(closing), SHUTDOWN_TIMEOUT_S)
    if not closing.done():
        # A second cancellation or a hung radio: still wait for the database to close.
        with contextlib.suppress(BaseException):
            await asyncio.wait_for(closing, SHUTDOWN_TIMEOUT_S)


def describe(exc: BaseException) -> str:
    """``Type: message``; zigpy wraps transient errors (refused, reset) in an empty
    TransientConnectionError, so name the cause it wraps as well."""
    text = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    cause = exc.__cause__
    if cause is not None and not str(exc):
        text += f" ({type(cause).__name__}: {cause})"
    return text
