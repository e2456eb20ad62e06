"""SECMP0007 flows end to end on the simulated HAN: the GBCS gate in front of the hold."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import zigpy.types as zt
from cryptography.hazmat.primitives.asymmetric import ec

from gateway.activation import ActivationService, utc_now
from gateway.config import Config, DeviceConfig, OtaConfig, SupplierConfig, parse_eui64
from gateway.engine import Engine, Job
from gateway.gbcs.ids import EntityId
from gateway.gbcs.sign import load_signing_key, sign_activation
from gateway.image import load_image, parse_image
from gateway.image_build import build_image
from gateway.ota import events as ev
from gateway.store import StateStore
from radios.select import open_app
from radios.sim.spec import parse_sim_device

DATA = Path(__file__).parents[1] / "data" / "gbcs"
SUPPLIER = EntityId.parse("90B3D51F30010000")
HCALCS = "00:db:12:34:56:78:90:a0"
OTHER = "00:db:12:34:56:78:90:a2"
IEEE = zt.EUI64.convert(HCALCS)
FAST = OtaConfig(rate_bytes_per_s=10_000_000, burst_bytes=1_000_000, stall_timeout_s=20)


@pytest.fixture(scope="module")
def key() -> ec.EllipticCurvePrivateKey:
    return load_signing_key((DATA / "supplier-90b3d51f30010000-ds.key").read_bytes())


def config(tmp_path: Path) -> Config:
    return Config(
        state_dir=tmp_path,
        suppliers=(SupplierConfig(id=str(SUPPLIER), certificate=DATA / "supplier-90b3d51f30010000-ds.pem"),),
        devices=(
            DeviceConfig(ieee=parse_eui64(HCALCS), kind="hcalcs", supplier=str(SUPPLIER)),
            DeviceConfig(ieee=parse_eui64(OTHER), kind="hcalcs", supplier=str(SUPPLIER)),
        ),
        ota=FAST,
    )


@asynccontextmanager
async def gateway(tmp_path: Path, *specs: str, **hooks: Any) -> AsyncIterator[tuple[Any, Engine, ActivationService, list[tuple[str, int | None, int | None]]]]:
    # The SR 11.1 sample image: manufacturer 0x121D, type 0, version 0xACDCACDC, hw 0x1111-0x1211.
    texts = specs or (f"hcalcs:{HCALCS}:manufacturer_code=0x121D:image_type=0:file_version=0xACDCACDB:hardware_version=0x1111",)
    app = await open_app("sim", sim_devices=[parse_sim_device(t) for t in texts])
    engine = Engine(app, FAST, session_overrides=dict(confirm_read_after_s=0.2, confirm_timeout_s=20))
    store = StateStore.in_state_dir(tmp_path)
    outcomes: list[tuple[str, int | None, int | None]] = []
    service = ActivationService(engine, config(tmp_path), store, on_outcome=lambda job, step, msg, rc, alert: outcomes.append((step, rc, alert)), **hooks)
    try:
        yield app, engine, service, outcomes
    finally:
        await engine.close()
        await app.shutdown()
        store.close()


async def held(engine: Engine, image: Any, ieee: zt.EUI64 = IEEE) -> Job:
    job = engine.push(image, ieee)
    assert await engine.wait(job, {ev.SessionState.HELD}, timeout=30) is ev.SessionState.HELD
    return job


def sign(key: ec.EllipticCurvePrivateKey, image_hash: bytes, counter: int, device: str = HCALCS, **kw: Any) -> bytes:
    return sign_activation(key, originator=SUPPLIER, device=EntityId.parse(device), image_hash=image_hash, counter=counter, **kw)


async def test_reference_command_ends_in_hash_mismatch_then_real_hash_activates(tmp_path: Path, key) -> None:
    image = load_image(DATA / "sr11.1-firmware-image.bin")
    async with gateway(tmp_path) as (app, engine, service, outcomes):
        job = await held(engine, image)
        dev = app.han.devices[IEEE]
        vector = (DATA / "cs06-immediate-success-command.hex").read_text()
        result = service.submit(vector)
        assert (result.accepted, result.reason, result.response_code) == (False, "hash mismatch", 2)
        assert job.state is ev.SessionState.HELD
        await asyncio.sleep(0.2)
        assert dev.current_file_version == 0xACDCACDB, "a refused command must leave the device on its old version"

        good = service.submit(sign(key, image.manufacturer_image_hash, 1001))
        assert good.accepted and good.decision == "activate_now", good.message
        assert await engine.wait(job, {ev.SessionState.CONFIRMED}, timeout=30) is ev.SessionState.CONFIRMED
        assert dev.current_file_version == image.file_version == 0xACDCACDC
        assert ("activation", 0, 0x8F43) in outcomes
        assert ("transfer", None, 0x8F8A) in outcomes and ("device_verification", None, 0x8F72) in outcomes


async def test_every_bad_command_is_refused_with_its_own_reason_and_the_device_stays_held(tmp_path: Path, key) -> None:
    image = load_image(DATA / "sr11.1-firmware-image.bin")
    h = image.manufacturer_image_hash
    stranger = ec.generate_private_key(ec.SECP256R1())
    good = sign(key, h, 500)
    unsigned = good[: good.rindex(b"\x40", 0, len(good) - 64)] + b"\x00"
    cases = {
        "another device's command": (sign(key, h, 10, device=OTHER), "wrong recipient"),
        "another supplier's command": (sign_activation(stranger, originator=EntityId.parse("1122334455667788"), device=EntityId.parse(HCALCS), image_hash=h, counter=11), "unknown supplier"),
        "forged with another key": (sign(stranger, h, 12), "bad signature"),
        "a different image": (sign(key, bytes(32), 13), "hash mismatch"),
        "truncated": (good[:-1], "malformed command"),
        "padded": (good + b"\x00", "malformed command"),
        "unsigned": (unsigned, "unsigned"),
    }
    async with gateway(tmp_path) as (app, engine, service, _):
        job = await held(engine, image)
        for name, (command, reason) in cases.items():
            result = service.submit(command, device=IEEE)
            assert not result.accepted, name
            assert result.reason == reason, (name, result.message)
        # Replay: the first use is accepted (future-dated, so the device stays held) ...
        future = utc_now() + dt.timedelta(hours=1)
        first = service.submit(sign(key, h, 600, execution_time=future))
        assert first.accepted and first.decision == "schedule"
        # ... the same counter again, and a lower one, are refused.
        assert service.submit(sign(key, h, 600, execution_time=future)).reason == "replayed counter"
        assert service.submit(sign(key, h, 599, execution_time=future)).reason == "replayed counter"
        assert job.state is ev.SessionState.SCHEDULED
        assert app.han.devices[IEEE].current_file_version == 0xACDCACDB


async def test_lower_counter_after_a_restart_is_refused(tmp_path: Path, key) -> None:
    image = load_image(DATA / "sr11.1-firmware-image.bin")
    h = image.manufacturer_image_hash
    async with gateway(tmp_path) as (_, engine, service, _):
        await held(engine, image)
        assert service.submit(sign(key, h, 5000, execution_time=utc_now() + dt.timedelta(hours=1))).accepted
    # A new process: new engine, new sim, same state directory.
    async with gateway(tmp_path) as (app, engine, service, _):
        job = await held(engine, image)
        refused = service.submit(sign(key, h, 4999))
        assert refused.reason == "replayed counter", refused.message
        # Counters are per originator across devices: the refusal names where 5000 went.
        assert refused.message.endswith(f"(accepted for device {IEEE})"), refused.message
        assert job.state is ev.SessionState.HELD
        assert service.submit(sign(key, h, 5001)).accepted


async def test_future_dated_activation_waits_for_its_time_and_cancellation_removes_it(tmp_path: Path, key) -> None:
    image = load_image(DATA / "sr11.1-firmware-image.bin")
    h = image.manufacturer_image_hash
    async with gateway(tmp_path) as (app, engine, service, outcomes):
        job = await held(engine, image)
        far = utc_now() + dt.timedelta(hours=2)
        assert service.submit(sign(key, h, 1, execution_time=far)).decision == "schedule"
        assert job.state is ev.SessionState.SCHEDULED and service.scheduled_at(IEEE) == far
        cancel = service.submit(sign(key, h, 2, cancel=True))
        assert cancel.decision == "unschedule", cancel.message
        assert job.state is ev.SessionState.HELD and service.scheduled_at(IEEE) is None

        soon = utc_now() + dt.timedelta(seconds=2)
        assert service.submit(sign(key, h, 3, execution_time=soon)).decision == "schedule"
        await asyncio.sleep(0.5)
        assert job.state is ev.SessionState.SCHEDULED, "the hold continues until the execution time"
        assert await engine.wait(job, {ev.SessionState.CONFIRMED}, timeout=30) is ev.SessionState.CONFIRMED
        assert ("activation", 0, 0x8F66) in outcomes


async def test_hooks_see_every_command_carry_out_each_decision_and_hold_back_a_due_schedule(tmp_path: Path, key) -> None:
    """The daemon extends the service through these (han_ota/daemon/lifecycle.py)."""
    image = load_image(DATA / "sr11.1-firmware-image.bin")
    seen: list[tuple[str, object]] = []
    carried: list[str] = []
    asked = asyncio.Event()
    radio_up = False

    def carry_out(job: Job, command_hex: str, act: Any, done: Any) -> None:
        carried.append(command_hex)
        act()

    def may_fire(ieee: zt.EUI64) -> bool:
        asked.set()
        return radio_up

    hooks = dict(
        before_submit=lambda command, device: seen.append(("before", device)),
        on_submitted=lambda result: seen.append(("after", result.reason)),
        carry_out=carry_out,
        may_fire=may_fire,
    )
    async with gateway(tmp_path, **hooks) as (app, engine, service, outcomes):
        job = await held(engine, image)
        assert not service.submit(b"\xdd\x00", device=IEEE).accepted
        command = sign(key, image.manufacturer_image_hash, 1, execution_time=utc_now() + dt.timedelta(seconds=1))
        assert service.submit(command).decision == "schedule"
        assert seen == [("before", IEEE), ("after", "malformed command"), ("before", None), ("after", "ok")]
        assert carried == [command.hex().upper()], "only an accepted decision is carried out"
        assert job.state is ev.SessionState.SCHEDULED
        await asyncio.wait_for(asked.wait(), 30)
        assert job.state is ev.SessionState.SCHEDULED, "held back: may_fire said no"
        radio_up = True
        service.fire_deferred()
        assert await engine.wait(job, {ev.SessionState.CONFIRMED}, timeout=30) is ev.SessionState.CONFIRMED
        assert ("activation", 0, 0x8F66) in outcomes


async def test_ppmid_one_step_refused_command_costs_no_airtime(tmp_path: Path, key) -> None:
    ppmid = "00:db:12:34:56:78:90:a0"  # the reference commands' recipient, as a PPMID here
    image = load_image(DATA / "sr11.4-ppmid-firmware-image.bin")
    spec = f"ppmid:{ppmid}:manufacturer_code=0x121D:image_type=0x84:file_version=0xACDCACDB:hardware_version=0x1111"
    async with gateway(tmp_path, spec) as (app, engine, service, outcomes):
        ieee = zt.EUI64.convert(ppmid)
        refused = service.precheck((DATA / "cs06-immediate-success-command.hex").read_text(), image, ieee)
        assert refused.reason == "hash mismatch"
        dev = app.han.devices[ieee]
        assert dev.counters.block_requests_sent == 0 and dev.counters.page_requests_sent == 0

        command = sign(key, image.manufacturer_image_hash, 7, device=ppmid)
        assert service.precheck(command, image, ieee).accepted
        job = engine.push(image, ieee, activation="command")
        service.arm(job, command)
        assert await engine.wait(job, {ev.SessionState.CONFIRMED}, timeout=30) is ev.SessionState.CONFIRMED
        assert dev.current_file_version == image.file_version
        assert ("activation", 0, 0x8F43) in outcomes


async def test_activation_that_the_device_does_not_take_is_an_activation_failure(tmp_path: Path, key) -> None:
    image = parse_image(build_image(b"\x55" * 500, manufacturer_code=0x121D, image_type=0, file_version=0xACDCACDC, min_hw=0x1111, max_hw=0x1211))
    spec = f"hcalcs:{HCALCS}:manufacturer_code=0x121D:image_type=0:file_version=0xACDCACDB:hardware_version=0x1111:activation_fails=1"
    async with gateway(tmp_path, spec) as (app, engine, service, outcomes):
        engine_job = await held(engine, image)
        assert service.submit(sign(key, image.manufacturer_image_hash, 1)).accepted
        state = await engine.wait(engine_job, {ev.SessionState.FAILED, ev.SessionState.CONFIRMED}, timeout=40)
        assert state is ev.SessionState.FAILED
        assert ("activation", 3, None) in outcomes


async def test_refusal_wording_and_reason_code(tmp_path: Path, key) -> None:
    # issue 11 item 18: "refuse: refused: ..." in the outcome record, and push --json's
    # verdict naming the reason differently from `gbcs verify --json`.
    image = load_image(DATA / "sr11.1-firmware-image.bin")
    reference = bytes.fromhex((DATA / "cs06-immediate-success-command.hex").read_text())
    async with gateway(tmp_path) as (_app, _engine, service, _outcomes):
        messages: list[str] = []
        service._on_outcome = lambda job, step, msg, rc, alert: messages.append(msg)
        pre = service.precheck(reference, image, IEEE)
        assert (pre.to_dict()["reason"], pre.to_dict()["code"]) == ("hash mismatch", "HASH_MISMATCH")
        truncated = service.submit(reference[:-1])
        assert truncated.to_dict()["code"] == "MALFORMED"
        assert messages == ["refused: offset 9: ciphered content: truncated: needs 156 bytes, 155 left"]


async def test_the_high_s_twin_of_an_accepted_command_is_a_replay(tmp_path: Path, key) -> None:
    # issue 16 item 9: both s and n - s verify; the stored counter refuses the second.
    n = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551
    image = load_image(DATA / "sr11.1-firmware-image.bin")
    async with gateway(tmp_path) as (_app, engine, service, _outcomes):
        job = await held(engine, image)
        command = sign(key, image.manufacturer_image_hash, 1001)
        twin = command[:-32] + (n - int.from_bytes(command[-32:], "big")).to_bytes(32, "big")
        assert service.submit(command).accepted
        assert await engine.wait(job, {ev.SessionState.CONFIRMED}, timeout=30) is ev.SessionState.CONFIRMED
        replay = service.submit(twin)
        assert (replay.accepted, replay.code) == (False, "REPLAYED_COUNTER"), replay.message
        assert replay.message.startswith("refused: counter 1001 is not above the last accepted 1001")


def test_no_supplier_says_which_file_and_both_tables(tmp_path: Path) -> None:
    """Issue 11 item 15: the refusal is the set-up instructions."""
    import dataclasses

    from gateway.activation import ActivationService, MemoryCounters
    from gateway.config import Config
    from gateway.gbcs.trust import TrustStore
    from gateway.image import parse_image

    class NoEngine:
        def add_observer(self, _observer: object) -> None:
            pass

    config = dataclasses.replace(Config(), source=tmp_path / "lab.toml")
    service = ActivationService(NoEngine(), config, MemoryCounters(), trust=TrustStore())  # type: ignore[arg-type]
    command = (Path(__file__).parents[1] / "data" / "gbcs" / "cs06-immediate-success-command.hex").read_text()
    image = parse_image((Path(__file__).parents[1] / "data" / "gbcs" / "sr11.1-firmware-image.bin").read_bytes())
    result = service.precheck(command, image, zt.EUI64.convert("00:db:12:34:56:78:90:a0"))
    assert not result.accepted
    assert f"add to {tmp_path / 'lab.toml'} a [[device]] table" in result.message and "[[supplier]] table" in result.message
