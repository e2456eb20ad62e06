"""radios/closing.py: the quiet-down before a zigpy shutdown never stands in its way."""

from __future__ import annotations

import asyncio
from typing import Any

from radios.closing import shutdown_app


class Proxy:
    """Like bellows' ThreadsafeProxy for its serial thread: attribute reads refused."""

    def __getattr__(self, name: str) -> Any:
        raise TypeError(f"Can only use ThreadsafeProxy with callable attributes: Gateway.{name}")


class FakeApp:
    def __init__(self, gateway: Any) -> None:
        self._ezsp = type("Ezsp", (), {"_gw": gateway})()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._watchdog_task: asyncio.Task[Any] | None = None
        self.shut = False
        self.cancelled_before_shutdown: list[bool] = []

    async def shutdown(self) -> None:
        self.cancelled_before_shutdown = [t.cancelled() for t in self._tasks]
        self.shut = True


async def test_bellows_on_its_serial_thread_is_still_shut_down() -> None:
    app = FakeApp(Proxy())
    await asyncio.wait_for(shutdown_app(app), 5)  # type: ignore[arg-type]
    assert app.shut


async def test_background_tasks_end_before_the_shutdown_and_frames_in_flight_get_their_ack() -> None:
    pending: dict[int, object] = {0: object()}
    ash = type("Ash", (), {"_pending_data_frames": pending})()
    app = FakeApp(type("Gw", (), {"_transport": ash})())
    app._watchdog_task = asyncio.get_running_loop().create_task(asyncio.sleep(3600))
    app._tasks.add(asyncio.get_running_loop().create_task(asyncio.sleep(3600)))
    asyncio.get_running_loop().call_later(0.05, pending.clear)  # the NCP acks the last frame
    await asyncio.wait_for(shutdown_app(app), 5)  # type: ignore[arg-type]
    assert app.shut and app._watchdog_task.cancelled() and app.cancelled_before_shutdown == [True]


async def test_a_shutdown_running_inside_a_task_of_the_app_does_not_cancel_itself() -> None:
    app = FakeApp(None)

    async def close() -> None:
        await shutdown_app(app)  # type: ignore[arg-type]

    task = asyncio.get_running_loop().create_task(close())
    app._tasks.add(task)
    await asyncio.wait_for(task, 5)
    assert app.shut
