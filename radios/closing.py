"""Shutting a zigpy application down without leaving a radio frame half sent.

zigpy's ``shutdown`` cancels its watchdog and background tasks and closes the port at
once, without waiting for them. bellows shields every frame it sends
(``AshProtocol.send_data`` runs ``_send_data_frame`` in its own task under
``asyncio.shield``): cancelling the caller leaves that frame in flight, and closing
the port under it ends the task with ``RuntimeError('Connection has been closed')``
that nobody retrieves (seen after one-shot EZSP pushes: tests/test_push_shutdown.py,
1 run in 3). So first cancel and await those tasks, then let the frames already
handed to the radio library get their ACK, with a bound, then shut down.
"""

from __future__ import annotations

import asyncio
from typing import Any

from zigpy.application import ControllerApplication

__all__ = ["shutdown_app"]

#: How long frames already in the radio library may take to be acknowledged.
IN_FLIGHT_TIMEOUT_S = 2.0
_POLL_S = 0.01


async def shutdown_app(app: ControllerApplication, *, in_flight_timeout: float = IN_FLIGHT_TIMEOUT_S) -> None:
    await _quiesce(app, in_flight_timeout)
    await app.shutdown()


async def _quiesce(app: ControllerApplication, timeout: float) -> None:
    tasks = [task for task in (getattr(app, "_watchdog_task", None), *getattr(app, "_tasks", ())) if isinstance(task, asyncio.Task) and not task.done()]
    for task in tasks:
        task.cancel()
    if tasks:
        await asyncio.wait(tasks, timeout=timeout)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while _frames_in_flight(app) and loop.time() < deadline:
        await asyncio.sleep(_POLL_S)


def _frames_in_flight(app: Any) -> int:
    """Frames bellows' ASH layer has sent and awaits an ACK for (0 for other radios)."""
    ash = getattr(getattr(getattr(app, "_ezsp", None), "_gw", None), "_transport", None)
    pending = getattr(ash, "_pending_data_frames", None)
    return len(pending) if isinstance(pending, dict) else 0
