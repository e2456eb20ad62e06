"""Cancelling a held push makes the device discard the image (issue 11 item 5).

End to end on the simulated HAN (engine, activation gate, a simulated HCALCS whose
OTA client is written from the ZCL, not from our server): a cancelled push answers
the device's next Upgrade End Request with Default Response ABORT, the device lets go
of the image, and a new push to it goes through. Every wait is on an event, bounded.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import zigpy.types as zt
from cryptography.hazmat.primitives.asymmetric import ec

from gateway.activation import ActivationService
from gateway.config import Config, DeviceConfig, OtaConfig, SupplierConfig, parse_eui64
from gateway.engine import Engine, Job
from gateway.gbcs.ids import EntityId
from gateway.gbcs.sign import load_signing_key, sign_activation
from gateway.image import FirmwareImage, parse_image
from gateway.image_build import build_image
from gateway.ota import events as ev
from gateway.store import StateStore
from radios.select import open_app
from radios.sim.spec import parse_sim_device

DATA = Path(__file__).parents[1] / "data" / "gbcs"
SUPPLIER = EntityId.parse("90B3D51F30010000")
HCALCS = "00:db:12:34:56:78:90:a0"
IEEE = zt.EUI64.convert(HCALCS)
OLD = 0xACDCACDB
FAST = OtaConfig(rate_bytes_per_s=10_000_000, burst_bytes=1_000_000, stall_timeout_s=20)
# The device re-asks Upgrade End every 0.3 s while held and queries every 0.5 s when idle.
DEVICE = (
    f"hcalcs:{HCALCS}:manufacturer_code=0x121D:image_type=0:file_version=0x{OLD:08X}:hardware_version=0x1111"
    ":wait_interval=0.3:query_interval=0.5:query_delay=0.1:notify_delay=0"
)
BOUND = 30.0


def firmware(version: int, fill: int) -> FirmwareImage:
    return parse_image(build_image(bytes([fill]) * 700, manufacturer_code=0x121D, image_type=0, file_version=version, min_hw=0x1111, max_hw=0x1211))


IMAGE_A = firmware(0xACDCACDC, 0x41)
IMAGE_B = firmware(0xACDCACDD, 0x42)


def config(tmp_path: Path) -> Config:
    return Config(
        state_dir=tmp_path,
        suppliers=(SupplierConfig(id=str(SUPPLIER), certificate=DATA / "supplier-90b3d51f30010000-ds.pem"),),
        devices=(DeviceConfig(ieee=parse_eui64(HCALCS), kind="hcalcs", supplier=str(SUPPLIER)),),
        ota=FAST,
    )


@asynccontextmanager
async def gateway(
    tmp_path: Path, ota: OtaConfig = FAST, devices: Sequence[str] = (DEVICE,), cfg: Config | None = None
) -> AsyncIterator[tuple[Any, Engine, ActivationService]]:
    """The sim app, an engine and the activation gate (also tests/system/test_priority_e2e.py's, with its devices)."""
    app = await open_app("sim", sim_devices=[parse_sim_device(d) for d in devices])
    engine = Engine(app, ota, session_overrides=dict(notify_interval_s=0.5, notify_attempts=100))
    store = StateStore.in_state_dir(tmp_path)
    service = ActivationService(engine, cfg or config(tmp_path), store)
    try:
        yield app, engine, service
    finally:
        await engine.close()
        await app.shutdown()
        store.close()


async def held(engine: Engine, image: FirmwareImage) -> Job:
    job = engine.push(image, IEEE)
    assert await engine.wait(job, {ev.SessionState.HELD}, timeout=BOUND) is ev.SessionState.HELD, job.session.reason
    return job


def cs06(key: ec.EllipticCurvePrivateKey, image: FirmwareImage, counter: int) -> bytes:
    return sign_activation(key, originator=SUPPLIER, device=EntityId.parse(HCALCS), image_hash=image.manufacturer_image_hash, counter=counter)


def key() -> ec.EllipticCurvePrivateKey:
    return load_signing_key((DATA / "supplier-90b3d51f30010000-ds.key").read_bytes())


def discards(dev: Any) -> list[Any]:
    return dev.events("server_abort")


async def test_push_after_cancelling_a_held_job_discards_the_old_image_and_holds_the_new(tmp_path: Path) -> None:
    async with gateway(tmp_path) as (app, engine, service):
        dev = app.han.devices[IEEE]
        job_a = await held(engine, IMAGE_A)
        assert dev.flash.target.file_version == IMAGE_A.file_version

        engine.cancel(job_a.id)
        assert job_a.state is ev.SessionState.CANCELLED
        job_b = await held(engine, IMAGE_B)

        # The device let go of A on the gateway's word (ABORT to its Upgrade End
        # Request), then queried and downloaded B, and is held on B.
        assert [e.detail["file_version"] for e in discards(dev)] == [IMAGE_A.file_version]
        assert dev.flash.target.file_version == IMAGE_B.file_version
        assert job_b.session.held_requests >= 1
        assert dev.current_file_version == OLD, "cancelling never activates"
        assert dev.counters.activations == 0

        # A CS06 for A's hash: refused, A is no longer held, and the message says why.
        result = service.submit(cs06(key(), IMAGE_A, 1), device=IEEE)
        assert not result.accepted and result.reason == "hash mismatch", result.message
        assert "discarded" in result.message and f"job {job_a.id}" in result.message, result.message
        assert job_b.state is ev.SessionState.HELD
        assert dev.current_file_version == OLD


async def test_cancel_alone_makes_the_device_discard_and_a_cs06_for_it_is_refused(tmp_path: Path) -> None:
    async with gateway(tmp_path) as (app, engine, service):
        dev = app.han.devices[IEEE]
        job_a = await held(engine, IMAGE_A)
        engine.cancel(job_a.id)
        await dev.wait_for(lambda d: bool(discards(d)), timeout=BOUND)
        assert dev.flash.target is None and dev.current_file_version == OLD
        # Back to normal operation: it queries, and the cancelled push offers nothing.
        queries = len(dev.events("query"))
        await dev.wait_for(lambda d: len(d.events("query")) > queries, timeout=BOUND)

        result = service.submit(cs06(key(), IMAGE_A, 1), device=IEEE)
        assert not result.accepted and result.reason == "no image held", result.message
        assert "discarded" in result.message and f"job {job_a.id}" in result.message, result.message
        assert dev.counters.activations == 0


async def test_pushing_the_same_image_again_after_cancel_downloads_it_again(tmp_path: Path) -> None:
    """The discard duty ends once the device downloads that image from us again:
    otherwise its next Upgrade End would be refused too, for ever."""
    async with gateway(tmp_path) as (app, engine, service):
        dev = app.han.devices[IEEE]
        job_a = await held(engine, IMAGE_A)
        engine.cancel(job_a.id)
        again = await held(engine, IMAGE_A)
        assert len(discards(dev)) == 1
        assert dev.counters.downloads_completed == 2
        assert dev.flash.target.file_version == IMAGE_A.file_version
        # Held on the new job, so a CS06 for the same hash is now the new job's to take.
        result = service.submit(cs06(key(), IMAGE_A, 1), device=IEEE)
        assert result.accepted, result.message
        assert await engine.wait(again, {ev.SessionState.CONFIRMED}, timeout=BOUND) is ev.SessionState.CONFIRMED
        assert dev.current_file_version == IMAGE_A.file_version
