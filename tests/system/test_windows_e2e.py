"""Traffic windows end to end on the simulated HAN (issue 15 part 2).

The engine's wall clock is shifted so that a minute boundary (windows are HH:MM) falls
a second or two from now: a window opening mid-run starts the waiting job by the
engine's own timer, not by polling. A window closing mid-transfer pauses it: the
device gets WAIT_FOR_DATA and no block, a held device is still answered.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from pathlib import Path

import zigpy.types as zt

from gateway.config import OtaConfig
from gateway.engine import Engine
from gateway.ota import events as ev
from radios.select import open_app
from radios.sim.spec import parse_sim_device
from tests.system.test_priority_e2e import BOUND, IMAGE_A, IMAGE_C, device_spec, ieee_text, reach, until

UTC = dt.timezone.utc
IEEE = zt.EUI64.convert(ieee_text(0xA0))
HELD_IEEE = zt.EUI64.convert(ieee_text(0xA1))


class ShiftedClock:
    """The wall clock, shifted so that ``seconds`` from now is a whole minute."""

    def __init__(self, seconds: float) -> None:
        now = dt.datetime.now(UTC)
        boundary = (now + dt.timedelta(minutes=2)).replace(second=0, microsecond=0)
        self.shift = boundary - dt.timedelta(seconds=seconds) - now
        self.boundary = boundary

    def __call__(self) -> dt.datetime:
        return dt.datetime.now(UTC) + self.shift

    def window(self, minutes: int = 5) -> str:
        """A UTC window from the boundary, ``minutes`` long."""
        end = self.boundary + dt.timedelta(minutes=minutes)
        return f"{self.boundary:%H:%M}-{end:%H:%M}Z"


async def test_a_window_opening_mid_run_starts_the_waiting_job(tmp_path: Path) -> None:
    app = await open_app("sim", sim_devices=[parse_sim_device(device_spec(0xA0))])
    # The clock is set once the radio is up, so that a slow start cannot eat the wait.
    clock = ShiftedClock(2.0)
    ota = OtaConfig(rate_bytes_per_s=10_000_000, burst_bytes=1_000_000, stall_timeout_s=30, windows=(clock.window(),))
    engine = Engine(app, ota, session_overrides=dict(notify_interval_s=0.5, notify_attempts=100), wall_clock=clock)
    try:
        dev = app.han.devices[IEEE]
        loop = asyncio.get_running_loop()
        opens_at = loop.time() + (clock.boundary - clock()).total_seconds()
        assert not engine.window_open and engine.pacer.paused and engine.window_change == clock.boundary
        job = engine.push(IMAGE_C, IEEE)
        assert job.state is ev.SessionState.PENDING and "outside the traffic windows" in (job.waiting or "")
        assert job.to_dict()["reason"] == job.waiting and clock.boundary.strftime("%H:%M") in job.waiting
        assert job.session.notifies_sent == 0
        await reach(engine, job, ev.SessionState.HELD)  # the window's timer started it
        assert engine.window_open and not engine.pacer.paused and job.waiting is None
        # Not one block before the window opened. (The device queried by itself meanwhile
        # and was offered the image: its block requests got WAIT_FOR_DATA until then.)
        blocks = dev.events("block")
        assert blocks and min(e.time for e in blocks) >= opens_at - 0.05, (blocks[0].time, opens_at)
        assert any(e.time < opens_at for e in dev.events("wait_for_data")) or job.session.notifies_sent >= 1
        assert dev.flash.target.file_version == IMAGE_C.file_version
    finally:
        await engine.close()
        await app.shutdown()


async def test_a_window_closing_mid_transfer_pauses_it_with_wait_for_data(tmp_path: Path) -> None:
    clock = ShiftedClock(600)  # the window is open now: 10 minutes before its end...
    ota = OtaConfig(rate_bytes_per_s=10_000, burst_bytes=1000, stall_timeout_s=30, windows=(f"00:00-{clock.boundary:%H:%M}Z",))
    app = await open_app("sim", sim_devices=[parse_sim_device(device_spec(n)) for n in (0xA0, 0xA1)])
    # WAIT_FOR_DATA of at most 2 s, so that the device is back soon after the reopening.
    overrides = dict(notify_interval_s=0.5, notify_attempts=100, max_wait_for_data_s=2)
    engine = Engine(app, ota, session_overrides=overrides, wall_clock=clock)
    try:
        dev = app.han.devices[IEEE]
        assert engine.window_open
        held = engine.push(IMAGE_C, HELD_IEEE)
        await reach(engine, held, ev.SessionState.HELD)
        job = engine.push(IMAGE_A, IEEE)
        await until(job, lambda j: j.session.offset >= 3000)

        clock.shift += dt.timedelta(seconds=600)  # ...and now it has closed
        engine.refresh_windows()
        assert not engine.window_open and engine.pacer.paused
        paused_at = job.session.offset
        waits = len(dev.events("wait_for_data"))
        held_answers = held.session.held_requests
        await app.han.devices[IEEE].wait_for(lambda d: len(d.events("wait_for_data")) > waits, timeout=BOUND)
        await app.han.devices[HELD_IEEE].wait_for(lambda d: held.session.held_requests > held_answers, timeout=BOUND)
        # Paused: no block beyond the ones already granted, the push still transferring.
        assert job.session.offset <= paused_at + 2 * 63 and job.state is ev.SessionState.TRANSFERRING
        assert held.state is ev.SessionState.HELD

        clock.shift -= dt.timedelta(seconds=600)
        engine.refresh_windows()
        await reach(engine, job, ev.SessionState.HELD)
    finally:
        await engine.close()
        await app.shutdown()
