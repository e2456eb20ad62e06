"""The OTA engine end to end on the simulated HAN (instant link unless said otherwise).

Each test drives the real chain: engine -> driver -> zigpy sim radio -> simulated
device OTA client (written from the spec, not from our server) and back.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
import zigpy.types as zt

from gateway.config import OtaConfig
from gateway.engine import Engine, EngineError, Job
from gateway.image import FirmwareImage, parse_image
from gateway.image_build import build_image
from gateway.ota import events as ev
from radios.select import open_app
from radios.sim.spec import parse_sim_device

HCALCS = "00:db:12:34:56:78:90:a0"
PPMID = "00:db:12:34:56:78:90:a1"
IEEE = zt.EUI64.convert(HCALCS)
FAST_OTA = OtaConfig(rate_bytes_per_s=10_000_000, burst_bytes=1_000_000, max_inflight=8, stall_timeout_s=20)
# Confirmation reads come quickly in tests (the sim device reboots in its own time).
QUICK = dict(confirm_read_after_s=0.2, confirm_timeout_s=20)


def image(size: int = 4000, *, version: int = 2, image_type: int = 0, **kw: Any) -> FirmwareImage:
    payload = bytes((i * 7 + 3) & 0xFF for i in range(size))
    return parse_image(build_image(payload, manufacturer_code=0x121D, image_type=image_type, file_version=version, min_hw=0x1111, max_hw=0x1211, **kw))


def spec(text: str = "", ieee: str = HCALCS, kind: str = "hcalcs") -> Any:
    return parse_sim_device(f"{kind}:{ieee}:manufacturer_code=0x121D:image_type=0:file_version=1:hardware_version=0x1111" + (":" + text if text else ""))


@asynccontextmanager
async def network(*specs: Any, ota: OtaConfig = FAST_OTA, **overrides: Any) -> AsyncIterator[tuple[Any, Engine, list[tuple[Job, ev.Action]]]]:
    app = await open_app("sim", sim_devices=list(specs) or [spec()])
    seen: list[tuple[Job, ev.Action]] = []
    engine = Engine(app, ota, observer=lambda job, action: seen.append((job, action)), session_overrides={**QUICK, **overrides})
    try:
        yield app, engine, seen
    finally:
        await engine.close()
        await app.shutdown()


def notes(seen: list[tuple[Job, ev.Action]], kind: ev.NoteKind) -> list[ev.Note]:
    return [a for _, a in seen if isinstance(a, ev.Note) and a.kind is kind]


def received(app: Any, ieee: zt.EUI64 = IEEE) -> Any:
    return app.han.devices[ieee]


async def until(predicate: Any, timeout: float = 20.0) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.01)


async def test_256k_image_held_activated_confirmed() -> None:
    img = image(256 * 1024)
    async with network() as (app, engine, seen):
        job = engine.push(img, IEEE)
        assert await engine.wait(job, {ev.SessionState.HELD}, timeout=60) is ev.SessionState.HELD
        dev = received(app)
        assert dev.counters.downloads_completed == 1
        assert dev.current_file_version == 1, "held: the device must still run the old image"
        engine.activate(IEEE, why="test")
        assert await engine.wait(job, {ev.SessionState.CONFIRMED}, timeout=30) is ev.SessionState.CONFIRMED
        assert dev.current_file_version == img.file_version
        assert job.session.device_file_version == img.file_version
        assert job.session.offset == img.size
        kinds = {n.kind for _, n in seen if isinstance(n, ev.Note)}
        assert {ev.NoteKind.NOTIFY, ev.NoteKind.QUERY, ev.NoteKind.FIRST_BLOCK, ev.NoteKind.LAST_BLOCK, ev.NoteKind.END_REQUEST, ev.NoteKind.HOLD, ev.NoteKind.ACTIVATION, ev.NoteKind.CONFIRMATION} <= kinds


@pytest.mark.parametrize("pages", [False, True], ids=["block", "page"])
async def test_block_and_page_paths_deliver_the_exact_bytes(pages: bool) -> None:
    img = image(3001)  # not a multiple of any block or page size
    text = "max_data_size=50:page_requests=1:page_size=512" if pages else "max_data_size=50"
    async with network(spec(text)) as (app, engine, seen):
        job = engine.push(img, IEEE)
        assert await engine.wait(job, {ev.SessionState.HELD}, timeout=30) is ev.SessionState.HELD
        dev = received(app)
        # The device verified the whole file before saying SUCCESS (it checks header and size).
        assert dev.counters.invalid_images == 0
        assert dev.counters.bytes_received >= img.size
        if pages:
            assert dev.counters.page_requests_sent > 0 and dev.counters.block_requests_sent == 0
        else:
            assert dev.counters.block_requests_sent > 0 and dev.counters.page_requests_sent == 0
        sent = [a for _, a in seen if isinstance(a, ev.SendImageBlock)]
        assert max(len(a.data) for a in sent) <= 50
        assert max(a.file_offset + len(a.data) for a in sent) == img.size


async def test_resume_from_offset_after_power_cycle() -> None:
    img = image(60_000)
    async with network(spec("max_data_size=63"), ota=OtaConfig(rate_bytes_per_s=60_000, burst_bytes=4096, stall_timeout_s=20)) as (app, engine, seen):
        job = engine.push(img, IEEE)
        await until(lambda: job.session.offset > 20_000)
        app.han.power_cycle(IEEE)
        assert await engine.wait(job, {ev.SessionState.HELD}, timeout=60) is ev.SessionState.HELD
        dev = received(app)
        assert dev.radio.power_cycles == 1
        assert dev.counters.resumed >= 1, "after the reboot the device continued from its flash offset"
        # Resumed, not restarted: the device fetched the image about once, not 1.3 times or more.
        assert dev.counters.bytes_received < img.size + 20_000


async def test_lost_frames_are_survived() -> None:
    img = image(8000)
    # 35% per attempt: after the MAC's own retries about 1.5% of frames still vanish.
    async with network(spec("loss=0.35:seed=7:response_timeout=0.3")) as (app, engine, _):
        job = engine.push(img, IEEE)
        assert await engine.wait(job, {ev.SessionState.HELD}, timeout=60) is ev.SessionState.HELD
        dev = received(app)
        assert dev.counters.retries + dev.counters.response_timeouts > 0, "with that loss some requests must have been retried"


async def test_sleepy_device_reached_only_by_its_own_poll() -> None:
    # Polls every 30 s and queries every 10 s, both longer than the parent keeps frames
    # (7.68 s): pushed once its boot-time query was answered, the notify expires at the
    # parent, and only the device's own next Query Next Image reaches us.
    ppmid = parse_sim_device(f"ppmid:{PPMID}:manufacturer_code=0x121D:image_type=0x84:file_version=1:hardware_version=0x1111:sleepy_poll=30:fast_poll=0.05:query_delay=0.5:query_interval=10:response_timeout=1:join_fast_poll=0")
    img = image(600, image_type=0x84)
    async with network(ppmid) as (app, engine, seen):
        ieee = zt.EUI64.convert(PPMID)
        dev = received(app, ieee)
        await until(lambda: dev.counters.queries_sent >= 1 and dev.poll_interval() == 30, timeout=20)
        await asyncio.sleep(0.3)  # let a fast-poll interval still running end (fast polls <= 0.25 s)
        job = engine.push(img, ieee)
        assert await engine.wait(job, {ev.SessionState.HELD}, timeout=60) is ev.SessionState.HELD
        lost = [a for _, a in seen if isinstance(a, ev.Note) and "Image Notify not delivered" in a.message]
        assert lost, [a.message for _, a in seen if isinstance(a, ev.Note)]
        # zigpy's own interview-time notify (payload type 0) may arrive; ours (type 3) never did.
        assert not [e for e in dev.events("image_notify") if e.detail.get("payload_type") == 3]


@pytest.mark.parametrize(
    ("device_text", "word"),
    [
        ("manufacturer_code=0x1234", "manufacturer"),
        ("image_type=0x0005", "image type"),
        ("hardware_version=0x2000", "hardware"),
    ],
)
async def test_wrong_device_fails_with_a_reason(device_text: str, word: str) -> None:
    fields = {"manufacturer_code": "0x121D", "image_type": "0", "file_version": "1", "hardware_version": "0x1111"}
    key, value = device_text.split("=")
    fields[key] = value
    dev_spec = parse_sim_device(f"hcalcs:{HCALCS}:" + ":".join(f"{k}={v}" for k, v in fields.items()))
    async with network(dev_spec) as (app, engine, _):
        job = engine.push(image(500), IEEE)
        assert await engine.wait(job, set(), timeout=20) is ev.SessionState.FAILED
        assert word in (job.session.reason or "").lower()
        assert received(app).counters.blocks_received == 0


async def test_device_reporting_invalid_image_fails_the_push() -> None:
    async with network(spec("corrupt=1")) as (app, engine, _):
        job = engine.push(image(1500), IEEE)
        assert await engine.wait(job, set(), timeout=20) is ev.SessionState.FAILED
        assert "INVALID_IMAGE" in (job.session.reason or "")
        assert received(app).current_file_version == 1


async def test_held_device_asking_ten_times_is_answered_ten_times_and_never_activates() -> None:
    # This client activates by itself after 3 unanswered requests (UpgradeTimeoutPolicy 0).
    async with network(spec("wait_interval=0.02:self_activate_after=3:timeout_policy=0")) as (app, engine, seen):
        job = engine.push(image(800), IEEE)
        assert await engine.wait(job, {ev.SessionState.HELD}, timeout=20) is ev.SessionState.HELD
        dev = received(app)
        await until(lambda: dev.counters.upgrade_end_sent >= 11)
        await asyncio.sleep(0.05)
        assert job.session.held_requests >= 10
        assert dev.counters.upgrade_end_unanswered == 0
        assert dev.counters.self_activations == 0 and dev.counters.activations == 0
        assert dev.current_file_version == 1
        holds = [a for _, a in seen if isinstance(a, ev.SendUpgradeEndResponse) and a.hold]
        assert len(holds) >= 10
        assert any("may activate by itself" in w for w in job.warnings)


async def test_cancel_mid_transfer_aborts_and_device_keeps_its_version() -> None:
    img = image(40_000)
    async with network(ota=OtaConfig(rate_bytes_per_s=40_000, burst_bytes=2048, stall_timeout_s=20)) as (app, engine, seen):
        job = engine.push(img, IEEE)
        await until(lambda: job.session.offset > 5000)
        engine.cancel(job.id, "operator cancelled")
        assert job.state is ev.SessionState.CANCELLED
        dev = received(app)
        await until(lambda: dev.counters.aborts >= 1)
        assert dev.current_file_version == 1
        with pytest.raises(EngineError, match="already ended"):
            engine.cancel(job.id)


async def test_activation_refused_unless_held() -> None:
    async with network() as (app, engine, _):
        with pytest.raises(EngineError, match="no firmware has been pushed"):
            engine.activate(IEEE, why="test")
        job = engine.push(image(50_000), IEEE)
        with pytest.raises(EngineError, match="not held"):
            engine.activate(IEEE, why="test")
        await engine.wait(job, {ev.SessionState.HELD}, timeout=30)


async def test_unknown_device_is_refused_with_the_known_ones_named() -> None:
    async with network() as (app, engine, _):
        with pytest.raises(EngineError, match="not on this network.*00:db:12:34:56:78:90:a0"):
            engine.push(image(100), zt.EUI64.convert("11:22:33:44:55:66:77:88"))


def _device_packet(app: Any, data: bytes) -> zt.ZigbeePacket:
    nwk = app.get_device(ieee=IEEE).nwk
    return zt.ZigbeePacket(
        src=zt.AddrModeAddress(addr_mode=zt.AddrMode.NWK, address=nwk),
        src_ep=1,
        dst=zt.AddrModeAddress(addr_mode=zt.AddrMode.NWK, address=0x0000),
        dst_ep=1,
        tsn=data[1] if len(data) > 1 else 0,
        profile_id=0x0104,
        cluster_id=0x0019,
        data=zt.SerializableBytes(data),
        lqi=200,
        rssi=-40,
    )


async def test_malformed_frames_from_a_device_are_answered_or_ignored_never_fatal() -> None:
    async with network() as (app, engine, _):
        sent: list[bytes] = []
        original = app.send_packet

        async def spy(packet: zt.ZigbeePacket) -> None:
            if packet.cluster_id == 0x0019:
                sent.append(bytes(packet.data.serialize()))
            await original(packet)

        app.send_packet = spy  # the test's own radio instance: watch what the gateway answers
        job = engine.push(image(3000), IEEE)
        garbage = [
            b"",  # nothing at all
            b"\x01",  # half a header
            bytes.fromhex("01 77 03 00 1d12".replace(" ", "")),  # truncated Image Block Request
            bytes.fromhex("01 78 01".replace(" ", "")),  # Query Next Image without fields
            bytes.fromhex("01 79 42 00".replace(" ", "")),  # unknown command
            bytes.fromhex("01 7a 06 00 1d12 0000".replace(" ", "")),  # truncated Upgrade End Request
        ]
        for data in garbage:
            # Frames with no ZCL header never reach zigpy, which would raise on them.
            app.packet_received(_device_packet(app, data))
        assert engine.driver.unparseable_frames == 2
        await until(lambda: sum(1 for d in sent if d[2:3] == b"\x0b") >= 4)
        malformed = [d for d in sent if d[2:3] == b"\x0b" and d[4] == 0x80]
        unsupported = [d for d in sent if d[2:3] == b"\x0b" and d[4] == 0x81]
        assert {d[1] for d in malformed} == {0x77, 0x78, 0x7A}
        assert {d[1] for d in unsupported} == {0x79}
        # ... and the push still completes.
        assert await engine.wait(job, {ev.SessionState.HELD}, timeout=30) is ev.SessionState.HELD
