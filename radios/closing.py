"""Shutting a zigpy application down without leaving a radio frame half sent.

zigpy's ``shutdown`` cancels its watchdog and background tasks and closes the port at
once, without waiting for them. bellows shields every frame it sends
(``AshProtocol.send_data`` runs ``_send_data_frame`` in its own task under
``asyncio.shield``): cancelling the caller leaves that frame in flight, and closing
the port under it ends the task with ``RuntimeError('Connection has been closed')``
that nobody retrieves (seen after one-shot EZSP pushes: tests/han_ota/test_push_shutdown.py,
1 run in 3). So first cancel and await those tasks, then let the frames already
handed to the radio library get their ACK, with a bound, then shut down.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from zigpy.application import ControllerApplication

__all__ = ["shutdown_app"]

LOGGER = logging.getLogger(__name__)

#: How long frames already in the radio library may take to be acknowledged.
IN_FLIGHT_TIMEOUT_S = 2.0
_POLL_S = 0.01


async def shutdown_app(app: ControllerApplication, *, in_flight_timeout: float = IN_FLIGHT_TIMEOUT_S) -> None:
    # The quiet-down is a courtesy; the shutdown (which closes zigpy's database thread)
    # must happen whatever it meets.
    try:
        await _quiesce(app, in_flight_timeout)
    except Exception:
        LOGGER.debug("quieting %r before shutdown failed", app, exc_info=True)
    await app.shutdown()


async def _quiesce(app: ControllerApplication, timeout: float) -> None:
    # Never our own task: a shutdown may run inside one of zigpy's tasks, and cancelling
    # it would end the shutdown itself at its next await, the database left open.
    me = asyncio.current_task()
    tasks = [
        task
        for task in (getattr(app, "_watchdog_task", None), *getattr(app, "_tasks", ()))
        if isinstance(task, asyncio.Task) and not task.done() and task is not me
    ]
    for task in tasks:
        task.cancel()
    if tasks:
        await asyncio.wait(tasks, timeout=timeout)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while _frames_in_flight(app) and loop.time() < deadline:
        await asyncio.sleep(_POLL_S)


def _frames_in_flight(app: Any) -> int:
    """Frames bellows' ASH layer has sent and awaits an ACK for, or holds for its window; 0 for other radios and
    for bellows on its serial thread (the CLI's), whose gateway is a ThreadsafeProxy
    that refuses attribute reads and whose frames live on that thread's loop."""
    try:
        ash = getattr(getattr(getattr(app, "_ezsp", None), "_gw", None), "_transport", None)
        pending = getattr(ash, "_pending_data_frames", None)
        # Frames still queued for the ASH window (its semaphore) are in flight too: their
        # callers may be cancelled already, and they would fail on the closed port.
        queued = getattr(getattr(ash, "_send_data_frame_semaphore", None), "_waiters", None) or ()
    except Exception:
        return 0
    return (len(pending) if isinstance(pending, dict) else 0) + sum(1 for w in queued if not w.done())
