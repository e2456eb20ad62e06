"""The engine's park, resume and follow (issue 17 item 1) on the simulated HAN.

What the one-shot push's follower and the daemon each did on their own (snapshot,
detach, restore, re-attach, nudge) is the engine's now, for both: these tests hold the
behaviour both must have, including the parts only one of them had (zigpy kept out
while parked; the nudge's Image Notify with jitter 100, counted by the session).
"""

from __future__ import annotations

from typing import Any

from gateway.engine import Engine
from gateway.ota import events as ev
from gateway.ota.session import NOTIFY_QUERY_JITTER
from radios.select import open_app
from radios.supervisor import RadioSupervisor
from tests.system.test_engine_e2e import FAST_OTA, IEEE, image, network, notes, received, spec, until

SLOW = "min_block_period_ms=2"
# Retries 0.2 s apart, then idle until a query an hour away: only a notify brings it back.
GIVES_UP = "min_block_period_ms=2:response_timeout=0.2:max_retries=1:query_delay=3600:notify_delay=0"


def sent(seen: list[tuple[Any, ev.Action]], kind: type) -> list[Any]:
    return [a for _, a in seen if isinstance(a, kind)]


async def test_park_keeps_zigpy_out_and_resume_finishes_the_transfer_without_a_notify() -> None:
    img = image(40_000)
    async with network(spec(SLOW)) as (app, engine, seen):
        job = engine.push(img, IEEE)
        device = received(app)
        await until(lambda: device.file_offset > 6_000)
        notifies_before = job.session.notifies_sent
        assert engine.park("test: radio unplugged") == [job]
        assert engine.parked(job) and job.session.parked and engine.driver.session(IEEE) is None
        # Parked, the device is still zigpy's to ignore: its own OTA handler would
        # answer ABORT, and the device would erase its partial download.
        assert app.get_device(ieee=IEEE).ota_in_progress
        assert job.session.get_timer() is None
        assert await engine.reconnected(app) == [job]
        assert not engine.parked(job) and engine.rebinds == 1
        assert await engine.wait(job, {ev.SessionState.HELD}, timeout=60) is ev.SessionState.HELD
        assert job.session.offset == img.size and device.counters.aborts == 0
        assert job.session.notifies_sent == notifies_before  # resumed without Image Notify
        assert notes(seen, ev.NoteKind.RESUME)
        await until(lambda: engine.pacer.inflight == 0)


async def test_a_device_that_gave_up_while_parked_is_nudged_through_the_session() -> None:
    img = image(40_000)
    async with network(spec(GIVES_UP)) as (app, engine, seen):
        engine.nudge_after_s = 0.3
        job = engine.push(img, IEEE)
        device = received(app)
        await until(lambda: device.file_offset > 6_000)
        engine.park("test")
        await until(lambda: device.counters.gave_up >= 1)
        partial = device.file_offset
        notifies_before = job.session.notifies_sent
        await engine.reconnected(app)
        assert await engine.wait(job, {ev.SessionState.HELD}, timeout=60) is ev.SessionState.HELD
        assert device.counters.resumed >= 1 and partial > 0  # picked up at its offset
        assert job.session.nudge_attempt >= 1 and job.session.notifies_sent == notifies_before + job.session.nudge_attempt
        nudges = notes(seen, ev.NoteKind.NUDGE)
        assert nudges and nudges[0].offset is not None and nudges[0].offset >= partial
        # The same Image Notify as a start's: payload type 3, jitter 100, this image.
        notify = ev.SendImageNotify(NOTIFY_QUERY_JITTER, img.manufacturer_code, img.image_type, img.file_version)
        assert NOTIFY_QUERY_JITTER == 100 and sent(seen, ev.SendImageNotify)[-1] == notify
        # Its outcome reaches the session, which notes it rather than ignoring it.
        assert not [n for n in notes(seen, ev.NoteKind.IGNORED) if "Notify" in n.message]
        await until(lambda: engine.pacer.inflight == 0)


async def test_a_parked_job_can_be_cancelled() -> None:
    async with network(spec(SLOW)) as (app, engine, seen):
        job = engine.push(image(40_000), IEEE)
        await until(lambda: received(app).file_offset > 3_000)
        engine.park("test")
        engine.cancel(job.id, "push timed out")  # the one-shot push's timeout, radio away
        assert job.state is ev.SessionState.CANCELLED
        await engine.reconnected(app)
        # Re-attached cancelled: the device is told to stop, and nothing stays in flight.
        await until(lambda: received(app).counters.aborts >= 1 or received(app).counters.server_aborts >= 1)
        await until(lambda: engine.pacer.inflight == 0)


async def test_every_frame_sent_comes_back_to_the_pacer() -> None:
    async with network() as (app, engine, _seen):
        counts = {"started": 0, "finished": 0}
        started, finished = engine.pacer.sent_started, engine.pacer.sent_finished

        def count_started(now: float) -> None:
            counts["started"] += 1
            started(now)

        def count_finished(now: float) -> None:
            counts["finished"] += 1
            finished(now)

        engine.pacer.sent_started = count_started  # type: ignore[method-assign]
        engine.pacer.sent_finished = count_finished  # type: ignore[method-assign]
        job = engine.push(image(6_000), IEEE)
        assert await engine.wait(job, {ev.SessionState.HELD}, timeout=30) is ev.SessionState.HELD
        await until(lambda: counts["finished"] == counts["started"])
        assert counts["started"] >= 6_000 // 63 and engine.pacer.inflight == 0


async def test_frames_cancelled_by_a_detach_leave_the_pacer() -> None:
    async with network() as (app, engine, _seen):
        job = engine.push(image(6_000), IEEE)  # Image Notify returned, its send task not yet run
        assert engine.pacer.inflight == 1
        engine.driver.detach(IEEE)
        await until(lambda: engine.pacer.inflight == 0)
        assert job.session.notifies_sent == 1


async def test_follow_parks_on_loss_and_resumes_on_the_new_application() -> None:
    specs = [spec(SLOW)]
    supervisor = RadioSupervisor(lambda: open_app("sim", sim_devices=specs), name="sim", backoff=(0.05,))
    app = await supervisor.start()
    engine = Engine(app, FAST_OTA)
    engine.follow(supervisor)
    try:
        job = engine.push(image(20_000), IEEE)
        await until(lambda: job.session.offset > 3_000)
        supervisor.report_lost("test: link gone")
        new_app = await supervisor.reconnected(1, timeout=30)
        assert new_app is not app and engine.app is new_app and engine.rebinds == 1
        await until(lambda: engine.driver.session(IEEE) is job.session)
        assert not engine.parked(job) and not job.session.parked
    finally:
        await engine.close()
        await supervisor.close()
