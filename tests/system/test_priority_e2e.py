"""Priorities, supersession and queues end to end on the simulated HAN (issue 15).

The engine and the activation gate against simulated HCALCS devices whose OTA client
is written from the ZCL, not from our server: a push of higher priority supersedes a
running or held one (the device aborts or discards it, the new image is held, a CS06
for the old hash is refused), a lower one waits queued and is served when the device
is free, and twenty bulk devices at low priority with one urgent push all finish.
Every wait is on an event, bounded; no timing is asserted (bench/scenarios.py has
the 1.3x figure).
"""

from __future__ import annotations

import asyncio
import datetime as dt
from pathlib import Path
from typing import Any

import pytest
import zigpy.types as zt

from gateway.config import Config, DeviceConfig, OtaConfig, SupplierConfig, parse_eui64
from gateway.engine import Engine, EngineError, Job, QueueChanged
from gateway.image import FirmwareImage, parse_image
from gateway.image_build import build_image
from gateway.ota import events as ev
from gateway.ota.priority import PRIORITY_NAMES
from gateway.gbcs.ids import EntityId
from gateway.gbcs.sign import sign_activation
from tests.gateway.test_cancel_discard import DATA, SUPPLIER, key
from tests.gateway.test_cancel_discard import gateway as discard_gateway

HIGH, NORMAL, LOW = PRIORITY_NAMES["high"], PRIORITY_NAMES["normal"], PRIORITY_NAMES["low"]
OLD = 0xACDCACDB
BOUND = 60.0
# Slow enough (10 kB/s) that a 30 kB image is mid-transfer for a while.
SLOW = OtaConfig(rate_bytes_per_s=10_000, burst_bytes=1000, stall_timeout_s=30)
FAST = OtaConfig(rate_bytes_per_s=10_000_000, burst_bytes=1_000_000, stall_timeout_s=30)


def ieee_text(n: int) -> str:
    return f"00:db:12:34:56:78:{n // 256:02x}:{n % 256:02x}"


def device_spec(n: int) -> str:
    return (
        f"hcalcs:{ieee_text(n)}:manufacturer_code=0x121D:image_type=0:file_version=0x{OLD:08X}:hardware_version=0x1111"
        ":wait_interval=0.3:query_interval=0.5:query_delay=0.1:notify_delay=0"
    )


def firmware(version: int, fill: int, size: int = 700) -> FirmwareImage:
    return parse_image(build_image(bytes([fill]) * size, manufacturer_code=0x121D, image_type=0, file_version=version, min_hw=0x1111, max_hw=0x1211))


IMAGE_A = firmware(0xACDCACDC, 0x41, 30_000)
IMAGE_B = firmware(0xACDCACDD, 0x42, 3_000)
IMAGE_C = firmware(0xACDCACDE, 0x43, 700)
IEEE = zt.EUI64.convert(ieee_text(0xA0))


def cs06(signing_key: Any, image: FirmwareImage, counter: int) -> bytes:
    return sign_activation(signing_key, originator=SUPPLIER, device=EntityId.parse(ieee_text(0xA0)), image_hash=image.manufacturer_image_hash, counter=counter)


def config(tmp_path: Path, ota: OtaConfig) -> Config:
    return Config(
        state_dir=tmp_path,
        suppliers=(SupplierConfig(id=str(SUPPLIER), certificate=DATA / "supplier-90b3d51f30010000-ds.pem"),),
        devices=(DeviceConfig(ieee=parse_eui64(ieee_text(0xA0)), kind="hcalcs", supplier=str(SUPPLIER)),),
        ota=ota,
    )


def gateway(tmp_path: Path, ota: OtaConfig = SLOW, devices: tuple[int, ...] = (0xA0,)) -> Any:
    return discard_gateway(tmp_path, ota, [device_spec(n) for n in devices], config(tmp_path, ota))


async def reach(engine: Engine, job: Job, state: ev.SessionState) -> None:
    assert await engine.wait(job, {state}, timeout=BOUND) is state, (job.state, job.session.reason)


async def until(job: Job, predicate: Any) -> None:
    async with asyncio.timeout(BOUND):
        while not predicate(job):
            job.changed.clear()
            await job.changed.wait()


async def test_high_priority_push_supersedes_a_transfer_in_progress(tmp_path: Path) -> None:
    async with gateway(tmp_path) as (app, engine, service):
        dev = app.han.devices[IEEE]
        low = engine.push(IMAGE_A, IEEE, priority=LOW)
        await until(low, lambda j: j.session.offset >= 3000)
        assert low.state is ev.SessionState.TRANSFERRING and low.session.offset < IMAGE_A.size

        high = engine.push(IMAGE_B, IEEE, priority=HIGH)
        assert low.state is ev.SessionState.SUPERSEDED and low.superseded_by == high.id
        assert "superseded by job" in (low.session.reason or "")
        assert low.to_dict()["state"] == "superseded" and low.to_dict()["reason"] == low.session.reason
        await reach(engine, high, ev.SessionState.HELD)

        # The device's next block request for A was answered ABORT: it erased the
        # partial image, queried again and downloaded B, which is held.
        aborts = dev.events("abort")
        assert aborts and aborts[0].detail["status"] == "ABORT", aborts
        assert dev.flash.target.file_version == IMAGE_B.file_version
        assert dev.current_file_version == OLD and dev.counters.activations == 0

        # A CS06 for A's hash is refused, and says the image was discarded by the supersession.
        result = service.submit(cs06(key(), IMAGE_A, 1), device=IEEE)
        assert not result.accepted and result.reason == "hash mismatch", result.message
        assert f"job {low.id} being superseded by job {high.id}" in result.message, result.message
        assert high.state is ev.SessionState.HELD


async def test_high_priority_push_makes_a_held_device_discard_its_image(tmp_path: Path) -> None:
    async with gateway(tmp_path, FAST) as (app, engine, service):
        dev = app.han.devices[IEEE]
        low = engine.push(IMAGE_B, IEEE, priority=LOW)
        await reach(engine, low, ev.SessionState.HELD)
        high = engine.push(IMAGE_C, IEEE, priority=HIGH)
        assert low.state is ev.SessionState.SUPERSEDED
        await reach(engine, high, ev.SessionState.HELD)
        # Default Response ABORT to its Upgrade End for B: discarded, then C downloaded.
        assert [e.detail["file_version"] for e in dev.events("server_abort")] == [IMAGE_B.file_version]
        assert dev.flash.target.file_version == IMAGE_C.file_version
        result = service.submit(cs06(key(), IMAGE_B, 1), device=IEEE)
        assert not result.accepted and "superseded" in result.message, result.message
        # The new image is the one a CS06 releases.
        result = service.submit(cs06(key(), IMAGE_C, 2), device=IEEE)
        assert result.accepted, result.message
        await reach(engine, high, ev.SessionState.CONFIRMED)
        assert dev.current_file_version == IMAGE_C.file_version


async def test_a_lower_priority_push_waits_queued_and_is_served_when_the_device_is_free(tmp_path: Path) -> None:
    async with gateway(tmp_path, FAST) as (app, engine, service):
        seen: list[tuple[str, Any]] = []
        engine.add_observer(lambda job, action: seen.append((job.id, action)) if isinstance(action, QueueChanged) else None)
        first = engine.push(IMAGE_B, IEEE, priority=HIGH)
        later = engine.push(IMAGE_C, IEEE, priority=LOW)
        assert later.queued and later.queued_behind == first.id and later.to_dict()["state"] == "queued"
        assert "queued behind job" in later.to_dict()["reason"]
        assert engine.job_for_device(IEEE) is first and engine.queue(IEEE) == [later]
        await reach(engine, first, ev.SessionState.HELD)
        assert later.queued and later.state is ev.SessionState.PENDING  # held is not free
        engine.activate(IEEE, why="test", unauthorised=True)
        await reach(engine, first, ev.SessionState.CONFIRMED)
        await reach(engine, later, ev.SessionState.HELD)
        assert not later.queued and engine.job_for_device(IEEE) is later
        assert seen == [(later.id, QueueChanged(True, first.id)), (later.id, QueueChanged(False))]
        assert app.han.devices[IEEE].flash.target.file_version == IMAGE_C.file_version


async def test_equal_priority_is_refused_unless_replace(tmp_path: Path) -> None:
    async with gateway(tmp_path, FAST) as (app, engine, service):
        first = engine.push(IMAGE_B, IEEE, priority=NORMAL)
        with pytest.raises(EngineError, match="--replace"):
            engine.push(IMAGE_C, IEEE, priority=NORMAL)
        second = engine.push(IMAGE_C, IEEE, priority=NORMAL, replace=True)
        assert first.state is ev.SessionState.SUPERSEDED
        await reach(engine, second, ev.SessionState.HELD)


async def test_a_queued_job_can_be_cancelled_and_the_queue_keeps_priority_order(tmp_path: Path) -> None:
    async with gateway(tmp_path, FAST) as (app, engine, service):
        first = engine.push(IMAGE_B, IEEE, priority=HIGH)
        a = engine.push(IMAGE_C, IEEE, priority=1)
        b = engine.push(IMAGE_C, IEEE, priority=3)
        c = engine.push(IMAGE_C, IEEE, priority=3)
        assert engine.queue(IEEE) == [b, c, a]
        engine.cancel(b.id)
        assert b.state is ev.SessionState.CANCELLED and not b.queued and engine.queue(IEEE) == [c, a]
        # The ended job answers nothing: it was never on the radio.
        assert engine.driver.session(IEEE) is first.session
        await reach(engine, first, ev.SessionState.HELD)
        engine.cancel(first.id)  # the device is free: c starts, and must make it discard B first
        await reach(engine, c, ev.SessionState.HELD)
        assert engine.queue(IEEE) == [a]
        assert [e.detail["file_version"] for e in app.han.devices[IEEE].events("server_abort")] == [IMAGE_B.file_version]


async def test_an_activated_job_is_not_superseded_the_new_push_queues(tmp_path: Path) -> None:
    async with gateway(tmp_path, FAST) as (app, engine, service):
        first = engine.push(IMAGE_B, IEEE, priority=LOW)
        await reach(engine, first, ev.SessionState.HELD)
        engine.activate(IEEE, why="test", unauthorised=True)
        urgent = engine.push(IMAGE_C, IEEE, priority=HIGH)
        assert urgent.queued and first.state in (ev.SessionState.ACTIVATED, ev.SessionState.CONFIRMED)
        await reach(engine, urgent, ev.SessionState.HELD)
        assert first.state is ev.SessionState.CONFIRMED


async def test_twenty_bulk_devices_at_low_priority_and_one_urgent_push_all_finish(tmp_path: Path) -> None:
    bulk = tuple(range(1, 21))
    ota = OtaConfig(rate_bytes_per_s=200_000, burst_bytes=20_000, stall_timeout_s=60)
    async with gateway(tmp_path, ota, devices=bulk + (0xA0,)) as (app, engine, service):
        jobs = [engine.push(IMAGE_B, zt.EUI64.convert(ieee_text(n)), priority=LOW) for n in bulk]
        await until(jobs[0], lambda j: j.session.offset > 0)
        urgent = engine.push(IMAGE_B, IEEE, priority=HIGH)
        for job in [urgent, *jobs]:
            await reach(engine, job, ev.SessionState.HELD)
        assert urgent.priority == HIGH and {j.priority for j in jobs} == {LOW}


async def test_a_device_freed_while_the_radio_is_away_starts_its_queue_when_it_is_back(tmp_path: Path) -> None:
    async with gateway(tmp_path, FAST) as (app, engine, service):
        first = engine.push(IMAGE_B, IEEE, priority=HIGH)
        later = engine.push(IMAGE_C, IEEE, priority=LOW)
        await reach(engine, first, ev.SessionState.HELD)
        engine.park("test: radio lost")
        engine.cancel(first.id)
        await asyncio.sleep(0)  # the call_soon that would start the queue has run
        assert first.state is ev.SessionState.CANCELLED and later.queued
        await engine.reconnected(app)
        assert not later.queued and engine.job_for_device(IEEE) is later
        await reach(engine, later, ev.SessionState.HELD)


async def test_a_superseded_scheduled_job_takes_its_activation_time_with_it(tmp_path: Path) -> None:
    """A future-dated CS06 for the old image must never release the new one."""
    async with gateway(tmp_path, FAST) as (app, engine, service):
        low = engine.push(IMAGE_B, IEEE, priority=LOW)
        await reach(engine, low, ev.SessionState.HELD)
        later = (dt.datetime.now(dt.timezone.utc) + dt.timedelta(hours=1)).replace(microsecond=0)
        command = sign_activation(key(), originator=SUPPLIER, device=EntityId.parse(ieee_text(0xA0)), image_hash=IMAGE_B.manufacturer_image_hash, counter=1, execution_time=later)
        assert service.submit(command, device=IEEE).accepted
        assert low.state is ev.SessionState.SCHEDULED and service.scheduled_at(IEEE) is not None
        high = engine.push(IMAGE_C, IEEE, priority=HIGH)
        assert low.state is ev.SessionState.SUPERSEDED and service.scheduled_at(IEEE) is None
        await reach(engine, high, ev.SessionState.HELD)
        assert high.state is ev.SessionState.HELD and service.scheduled_at(IEEE) is None
