"""APS-secured OTA (issue 12, item 4): the engine and driver follow each device's
security in the registry (gateway.se.security) over the simulated radio.

The real key establishment arrives from another branch: here the test plays its part,
installing the link key on the simulated coordinator and on the SimDevice and writing
the registry, as KeyEstablishmentService does.
"""

from __future__ import annotations

import asyncio

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import zigpy.exceptions
import zigpy.types as zt

from gateway.config import DeviceConfig, load_config
from gateway.engine import Engine, Job
from gateway.ota import events as ev
from gateway.ota.config import MAX_BLOCK_DATA, MAX_BLOCK_DATA_APS_ENCRYPTED
from gateway.ota.guard import OtaSecurityGuard
from gateway.se.security import KeyState, SecurityMode, SecurityRegistry
from radios.keys import install_link_key
from radios.select import open_app
from tests.gateway.ota.test_ota_driver import spy_zigpy_device
from tests.system.test_engine_e2e import FAST_OTA, HCALCS, IEEE, QUICK, _device_packet, image, spec, until

OTA = 0x0019
KEY = zt.KeyData(bytes(range(0x30, 0x40)))
IMAGE_BLOCK_RESPONSE = 0x05


@dataclass(frozen=True)
class Delivered:
    """One frame the air handed the device: its ZCL bytes and the APS key it was secured with."""

    data: bytes
    aps_key: bytes | None

    @property
    def block_size(self) -> int | None:
        """The data size of a successful Image Block Response, else None."""
        d = self.data
        # header (3) status (1) manufacturer (2) type (2) version (4) offset (4) size (1)
        if len(d) > 16 and d[0] & 0x03 == 0x01 and d[2] == IMAGE_BLOCK_RESPONSE and d[3] == 0x00:
            return d[16]
        return None


async def after_zigpys_interview(sim: Any) -> None:
    """zigpy's interview ends with a Read Attributes and an Image Notify on every new
    device's OTA cluster (zigpy/device.py, Device._initialize): not ours, and not yet
    sent when open_app returns. The device queries at once, and zigpy answers
    NO_IMAGE_AVAILABLE: wait for that answer too, and the device idle again."""
    await sim.wait_for(lambda d: any(e.kind == "image_notify" and e.detail["payload_type"] == 0 for e in d.history), timeout=30)
    notified = next(i for i, e in enumerate(sim.history) if e.kind == "image_notify")
    await sim.wait_for(lambda d: any(e.kind in ("query_response", "timeout") for e in d.history[notified:]), timeout=30)
    await sim.wait_for(lambda d: d.state == "idle", timeout=30)


def spy_ota_deliveries(sim: Any) -> list[Delivered]:
    """Every OTA-cluster frame the air delivers to ``sim``, whatever the device does with it
    (from now on: call after `after_zigpys_interview`)."""
    seen: list[Delivered] = []
    deliver = sim.deliver

    def spy(packet: zt.ZigbeePacket, *, broadcast: bool = False, aps_key: bytes | None = None) -> None:
        if packet.cluster_id == OTA and packet.dst_ep != 0:
            seen.append(Delivered(packet.data.serialize(), aps_key))
        deliver(packet, broadcast=broadcast, aps_key=aps_key)

    sim.deliver = spy
    return seen


@asynccontextmanager
async def network(registry: SecurityRegistry, *specs: Any) -> AsyncIterator[tuple[Any, Engine]]:
    app = await open_app("sim", sim_devices=list(specs) or [spec()])
    # Image Notify again soon while pending: a device busy with a query of its own
    # ignores one (ZCL OTA), which the default interval (60 s) would make slow.
    engine = Engine(app, FAST_OTA, session_overrides={**QUICK, "notify_interval_s": 1.0, "notify_attempts": 30}, security=registry)
    try:
        yield app, engine
    finally:
        await engine.close()
        await app.shutdown()


async def establish(app: Any, registry: SecurityRegistry, ieee: zt.EUI64 = IEEE) -> None:
    """What a successful key establishment leaves behind: the key on both ends, the registry told."""
    await install_link_key(app, ieee, KEY)
    app.han.devices[ieee].aps_link_key = bytes(KEY)
    registry.update(ieee, state=KeyState.ESTABLISHED, suite=2, seconds=1.5)


async def held_then_released(engine: Engine, job: Job) -> None:
    assert await engine.wait(job, {ev.SessionState.HELD}, timeout=60) is ev.SessionState.HELD
    engine.activate(job.ieee, why="test")
    assert await engine.wait(job, {ev.SessionState.CONFIRMED}, timeout=30) is ev.SessionState.CONFIRMED


def test_the_run_registry_takes_each_devices_mode_from_the_config(tmp_path: Path) -> None:
    other = "00:db:12:34:56:78:90:a1"
    third = "00:db:12:34:56:78:90:a2"
    (tmp_path / "config.toml").write_text(
        f'[[device]]\nieee = "{HCALCS}"\nkind = "hcalcs"\nsecurity = "se"\n'
        f'[[device]]\nieee = "{other}"\nkind = "ppmid"\n'
        f'[[device]]\nieee = "{third}"\nkind = "ppmid"\nsecurity = "install-code"\n'
    )
    registry = SecurityRegistry(load_config(tmp_path / "config.toml").security_modes())
    assert registry.get(IEEE).mode is SecurityMode.SE
    assert registry.get(zt.EUI64.convert(other)).mode is SecurityMode.AUTO
    assert registry.get(zt.EUI64.convert(third)).mode is SecurityMode.INSTALL_CODE


async def test_established_device_gets_the_whole_push_aps_encrypted_and_is_released() -> None:
    registry = SecurityRegistry({IEEE: SecurityMode.SE})
    size = 20_000
    async with network(registry) as (app, engine):
        sim = app.han.devices[IEEE]
        await after_zigpys_interview(sim)
        ota_cluster = app.get_device(ieee=IEEE).endpoints[1].out_clusters[OTA]
        assert ota_cluster.aps_encryption is False
        await establish(app, registry)
        # zigpy's own OTA traffic with it (its Ota handler's answers) is secured too
        assert ota_cluster.aps_encryption is True
        delivered = spy_ota_deliveries(sim)
        secured_before = sim.radio.aps_secured_received
        job = engine.push(image(size), IEEE)
        assert job.session.config.effective_block_cap == MAX_BLOCK_DATA_APS_ENCRYPTED
        await held_then_released(engine, job)

        assert delivered, "nothing reached the device"
        assert [d for d in delivered if d.aps_key != bytes(KEY)] == [], "an OTA frame went without the device's key"
        blocks = [d.block_size for d in delivered if d.block_size is not None]
        assert sum(blocks) >= size and max(blocks) == MAX_BLOCK_DATA_APS_ENCRYPTED
        assert sim.radio.aps_secured_received - secured_before >= len(blocks)
        assert not sim.events("aps_drop")
        assert job.to_dict()["security"]["aps_security"] is True
        assert engine.driver.unsecured_frames == 0


async def test_unsecured_ota_request_from_a_secured_device_is_ignored_and_counted() -> None:
    registry = SecurityRegistry({IEEE: SecurityMode.SE})
    async with network(registry) as (app, engine):
        sim = app.han.devices[IEEE]
        await after_zigpys_interview(sim)
        await establish(app, registry)
        job = engine.push(image(3000), IEEE)
        assert await engine.wait(job, {ev.SessionState.HELD}, timeout=60) is ev.SessionState.HELD
        held = job.session.held_requests
        sent: list[bytes] = []
        original = app.send_packet

        async def spy(packet: zt.ZigbeePacket) -> None:
            if packet.cluster_id == OTA:
                sent.append(packet.data.serialize())
            await original(packet)

        app.send_packet = spy
        # An Upgrade End Request (SUCCESS, our image) as the network key alone would carry
        # it: were it fed to the session, it would be answered with hold.
        end = bytes.fromhex("01 90 06 00 1d12 0000 02000000".replace(" ", ""))
        for _ in range(3):
            app.packet_received(_device_packet(app, end))
        assert engine.driver.unsecured_frames == 3
        assert job.session.held_requests == held
        assert [d for d in sent if len(d) > 1 and d[1] == 0x90] == []
        # the device's own (secured) frames still count: released, it reports its new
        # version (a secured read response, through zigpy)
        engine.activate(IEEE, why="test")
        assert await engine.wait(job, {ev.SessionState.CONFIRMED}, timeout=30) is ev.SessionState.CONFIRMED
        assert sim.current_file_version == 2
        assert engine.driver.unsecured_frames == 3


async def test_se_device_without_its_key_gets_no_ota_frame_then_the_push_runs_once_established() -> None:
    registry = SecurityRegistry({IEEE: SecurityMode.SE})
    # No query of the device's own (its timing would race zigpy's answers before the
    # push): the test sends its queries for it.
    async with network(registry, spec("query_delay=3600")) as (app, engine):
        sim = app.han.devices[IEEE]
        await after_zigpys_interview(sim)
        delivered = spy_ota_deliveries(sim)
        job = engine.push(image(4000), IEEE)
        assert job.state is ev.SessionState.PENDING
        status = job.to_dict()
        assert status["reason"] == registry.get(IEEE).waiting_reason is not None
        assert "key establishment" in status["reason"]
        assert status["security"]["mode"] == "se" and status["security"]["aps_security"] is False
        # Query Next Image (our manufacturer and type, version 1), as the device sends
        # it before its key: neither served by the session nor answered by zigpy.
        query = bytes.fromhex("01 91 01 00 1d12 0000 01000000".replace(" ", ""))
        to_zigpy = spy_zigpy_device(app, IEEE)
        for _ in range(2):
            app.packet_received(_device_packet(app, query))
        assert engine.driver.blocked_frames == 2
        assert to_zigpy == [], "zigpy's Ota handler got the query (it would answer NO_IMAGE_AVAILABLE)"
        assert job.session.state is ev.SessionState.PENDING and job.session.device_file_version is None
        # zigpy's own OTA frames (its interview's read, its Ota cluster) wait for the key
        # (the guard the daemon and the push install as the radio comes up).
        guard = OtaSecurityGuard(app, registry)
        zigpy_ota = next(ep.out_clusters[OTA] for ep in app.get_device(ieee=IEEE).non_zdo_endpoints if OTA in ep.out_clusters)
        zigpys_read = asyncio.get_running_loop().create_task(zigpy_ota.read_attributes(["current_file_version"]))
        registry.update(IEEE, state=KeyState.ESTABLISHING)
        assert "waiting for key establishment to finish" in job.to_dict()["reason"]
        assert delivered == [], f"OTA frames reached an SE device before its key: {delivered}"
        assert job.state is ev.SessionState.PENDING and job.session.notifies_sent == 0

        async with asyncio.timeout(30):
            while guard.held == 0:  # zigpy's read reached the radio's send and waits there
                await asyncio.sleep(0.01)
        assert not zigpys_read.done()
        await establish(app, registry)
        # Once the key is in force zigpy's held read goes, APS-secured, and is answered.
        async with asyncio.timeout(30):
            await zigpys_read
        assert delivered and delivered[0].aps_key == bytes(KEY) and guard.held == 1
        guard.close()
        await held_then_released(engine, job)
        assert delivered and all(d.aps_key == bytes(KEY) for d in delivered)
        blocks = [d.block_size for d in delivered if d.block_size is not None]
        assert blocks and max(blocks) <= MAX_BLOCK_DATA_APS_ENCRYPTED
        assert job.to_dict()["security"]["key_establishment"] == "established"


async def test_failed_key_establishment_is_the_pending_jobs_reason() -> None:
    registry = SecurityRegistry({IEEE: SecurityMode.SE})
    async with network(registry) as (app, engine):
        sim = app.han.devices[IEEE]
        await after_zigpys_interview(sim)
        delivered = spy_ota_deliveries(sim)
        job = engine.push(image(2000), IEEE)
        registry.update(IEEE, state=KeyState.FAILED, status="UNKNOWN_ISSUER", side="hub", why="issuer 0x1122 is not a configured CA")
        status = job.to_dict()
        assert status["state"] == "pending"
        assert status["reason"] == "key establishment failed: UNKNOWN_ISSUER (hub): issuer 0x1122 is not a configured CA"
        assert status["security"]["status"] == "UNKNOWN_ISSUER"
        assert delivered == []


async def test_key_established_mid_push_caps_the_later_blocks() -> None:
    registry = SecurityRegistry()  # AUTO: served at once, unsecured, 63-byte blocks
    size = 30_000
    async with network(registry) as (app, engine):
        sim = app.han.devices[IEEE]
        await after_zigpys_interview(sim)
        delivered = spy_ota_deliveries(sim)
        job = engine.push(image(size), IEEE)
        assert job.session.config.effective_block_cap == MAX_BLOCK_DATA
        await until(lambda: sim.counters.bytes_received >= 5000, timeout=30)
        await establish(app, registry)
        assert job.session.config.effective_block_cap == MAX_BLOCK_DATA_APS_ENCRYPTED
        await held_then_released(engine, job)
        # Blocks already handed to the radio when the key came may still arrive unsecured
        # (the device, now holding its key, drops them and asks again): every secured one
        # fits the APS frame budget.
        plain = [d.block_size for d in delivered if d.block_size is not None and d.aps_key is None]
        secured = [d.block_size for d in delivered if d.block_size is not None and d.aps_key == bytes(KEY)]
        assert max(plain) == MAX_BLOCK_DATA
        assert secured and max(secured) == MAX_BLOCK_DATA_APS_ENCRYPTED
        assert len(plain) + len(secured) == len([d for d in delivered if d.block_size is not None])


async def test_install_code_device_is_served_as_before() -> None:
    registry = SecurityRegistry({IEEE: SecurityMode.INSTALL_CODE})
    async with network(registry) as (app, engine):
        sim = app.han.devices[IEEE]
        await after_zigpys_interview(sim)
        delivered = spy_ota_deliveries(sim)
        job = engine.push(image(3000), IEEE)
        await held_then_released(engine, job)
        assert delivered and all(d.aps_key is None for d in delivered)
        assert max(d.block_size for d in delivered if d.block_size is not None) == MAX_BLOCK_DATA
        assert job.to_dict()["security"] == registry.get(IEEE).to_dict()


# --------------------------------------------------------------------------- the daemon


async def test_daemon_keeps_an_se_push_pending_shows_security_and_audits_key_events(tmp_path_factory: Any) -> None:
    import asyncio
    import shutil
    import tempfile
    from pathlib import Path

    from eui64 import Eui64
    from han_ota.client import Client
    from han_ota.security import security_cell
    from tests.han_ota.test_daemon import FAST, Bench, call, events, image as daemon_image, make_config, started

    root = Path(tempfile.mkdtemp(prefix="hoa", dir="/tmp"))  # a short Unix socket path
    bench = Bench(f"hcalcs:{HCALCS}:{FAST}")
    try:
        cfg = make_config(root, devices=(DeviceConfig(ieee=Eui64.parse(HCALCS), kind="hcalcs", security=SecurityMode.SE),))
        fw = daemon_image(root)
        daemon = await started(cfg, bench)
        client = Client(cfg.control_socket, timeout=5)
        try:
            sim = bench.device(HCALCS)
            await after_zigpys_interview(sim)
            delivered = spy_ota_deliveries(sim)
            job = await call(client.push, fw, HCALCS)
            assert job["state"] == "pending" and "key establishment" in job["reason"]
            assert job["security"]["mode"] == "se"
            listed = await call(client.devices)
            assert listed[0]["security"] == daemon.security.get(IEEE).to_dict()
            assert security_cell(listed[0]["security"]) == "se"
            # The device's own queries are dropped by the driver: nothing answers them.
            # Once idle again it takes our Image Notify (a querying device ignores one;
            # the daemon's re-notify is a minute away).
            queried = sim.counters.queries_sent
            await until(lambda: sim.counters.queries_sent > queried or sim.state == "idle", timeout=30)
            await until(lambda: sim.state == "idle", timeout=30)
            assert delivered == []

            # What KeyEstablishmentService does on success, then its audit event.
            await establish(daemon.app, daemon.security)
            daemon.journal.ke_event("ke.established", IEEE, suite=2, seconds=1.5)
            held = await call(client.wait_job, job["job"], ("held",), timeout=30)
            assert held["state"] == "held" and held["security"]["aps_security"] is True
            assert security_cell((await call(client.devices))[0]["security"]) == "se aps s2"
            assert delivered and all(d.aps_key == bytes(KEY) for d in delivered)
        finally:
            await daemon.stop("test")
        ke = [r for r in events(cfg) if r.event == "ke.established"]
        assert len(ke) == 1 and ke[0].device == str(IEEE)
    finally:
        await bench.close()
        await asyncio.sleep(0)
        shutil.rmtree(root, ignore_errors=True)


# --------------------------------------------------------------------------- with real key establishment


async def test_a_simulated_se_device_keyed_by_the_hubs_service_gets_the_push_aps_encrypted() -> None:
    """The whole path on the simulated radio: the SE PPMID joins, finds the hub's Key
    Establishment server, runs CBKE (suite 1) with KeyEstablishmentService; only then
    does our push start, and every OTA frame goes under the derived key."""
    from han_ota.security import close_key_establishment, start_key_establishment
    from tests.radios.sim.test_sim_se_device import DEVICE_IEEE, hub_config, se_spec

    from gateway.config import Config, KeyEstablishmentConfig

    from radios.han_services import apply_han_config
    from radios.sim.app import SimControllerApplication

    registry = SecurityRegistry({DEVICE_IEEE: SecurityMode.SE})
    config = Config(key_establishment=KeyEstablishmentConfig(hub_config(1)))
    ke_events: list[tuple[str, Any, dict[str, Any]]] = []
    # Not open_app: it returns once zigpy's interview is done, which an SE device makes
    # slow (it drops the interview's unsecured OTA read), and by then the device has
    # given up on a hub that did not answer. The service starts with the network.
    app = SimControllerApplication.new_sim([se_spec(1, ke_attempts=4)], config=apply_han_config({}, "sim", key_establishment=True))
    await app._load_db()
    await app.startup(auto_form=True)
    engine = Engine(app, FAST_OTA, session_overrides={**QUICK, "notify_interval_s": 1.0, "notify_attempts": 30}, security=registry)
    service = await start_key_establishment(app, config, registry, lambda name, device=None, **f: ke_events.append((name, device, f)))
    try:
        # zigpy's interview of an SE device does not finish soon: its OTA read goes
        # unsecured and the device drops it. The push needs only the device's endpoints.
        await until(lambda: DEVICE_IEEE in app.devices and 1 in app.devices[DEVICE_IEEE].endpoints, timeout=60)
        sim = app.han.devices[DEVICE_IEEE]
        delivered = spy_ota_deliveries(sim)
        img = image(6000, image_type=0x0084)  # a PPMID's image type; it runs version 1
        job = engine.push(img, DEVICE_IEEE, allow_unknown=True)
        await sim.wait_for_event("ke_established", timeout=120)
        await until(lambda: registry.get(DEVICE_IEEE).aps, timeout=60)
        assert app.han.link_key(DEVICE_IEEE) == sim.aps_link_key
        assert await engine.wait(job, {ev.SessionState.HELD}, timeout=90) is ev.SessionState.HELD
        engine.activate(DEVICE_IEEE, why="test")
        assert await engine.wait(job, {ev.SessionState.CONFIRMED}, timeout=60) is ev.SessionState.CONFIRMED
        # Unsecured only zigpy's interview read of CurrentFileVersion (a general Read
        # Attributes, which the device drops): every frame of our push under the key.
        plain = [d for d in delivered if d.aps_key is None]
        assert all(d.data[0] & 0x03 == 0x00 and d.data[2] == 0x00 for d in plain), plain
        cluster_frames = [d for d in delivered if d.data[0] & 0x03 == 0x01]
        assert cluster_frames and all(d.aps_key == sim.aps_link_key for d in cluster_frames)
        blocks = [d.block_size for d in delivered if d.block_size is not None]
        assert sum(blocks) >= img.size and max(blocks) <= MAX_BLOCK_DATA_APS_ENCRYPTED  # a PPMID asks for 48
        assert [n for n, *_ in ke_events][:1] == ["ke.started"] and "ke.established" in [n for n, *_ in ke_events]
        assert job.to_dict()["security"]["suite"] == 1
    finally:
        await close_key_establishment(service)
        await engine.close()
        await app.shutdown()
