"""Bench tests: a real coordinator dongle and real HAN devices (see docs/bench.md).

Run only with ``--hardware`` (tests/conftest.py skips them otherwise)::

    .venv/bin/python -m pytest -m hardware --hardware --radio ezsp \\
        --path /dev/serial/by-id/usb-...-if00-port0 --device hcalcs:00:db:12:34:56:78:90:a0

Environment (the options tests/conftest.py does not have):

* ``HAN_OTA_BENCH_IMAGE`` or ``HAN_OTA_BENCH_IMAGE_<KIND>`` (``_HCALCS``, ``_PPMID``): the
  firmware image to push, a *real* image the device accepts (a device verifies what it
  downloads and refuses anything else); small is better: the test waits for the whole
  transfer. Without one, the push tests are skipped and say so.
* ``HAN_OTA_BENCH_STATE``: a directory kept between runs (default
  ``$XDG_STATE_HOME/han-ota/bench``, i.e. ``~/.local/state/han-ota/bench``): zigpy's
  database there remembers devices that joined in earlier runs.
* ``HAN_OTA_BENCH_JOIN_S``: seconds to permit joining while waiting for a device that
  zigpy does not know yet (default 0: do not open the network; power-cycle or re-pair
  the device within the window when you set it).
* ``HAN_OTA_BENCH_HOLD_S``: how long to watch the hold for repeated Upgrade End Requests
  (default 600; devices repeat them every minute or more).
* ``HAN_OTA_BENCH_BAUDRATE`` / ``HAN_OTA_BENCH_FLOW_CONTROL``: serial settings when the
  dongle's family default is not right (ZBT-2: 460800 / hardware).

The same tests run against an emulated dongle (``han-ota emulate znp --sim-device
hcalcs:IEEE``, then ``--path socket://127.0.0.1:PORT``), which is how they were checked
on a machine without one.
"""

from __future__ import annotations

import asyncio
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
import zigpy.types as zt

from eui64 import Eui64, Eui64Error
from gateway.config import OtaConfig
from gateway.engine import Engine, Job
from gateway.image import FirmwareImage, load_image
from gateway.ota.events import SessionState
from radios.select import open_app

pytestmark = [pytest.mark.hardware, pytest.mark.asyncio(loop_scope="module")]

OTA_CLUSTER = 0x0019
ATTR_CURRENT_FILE_VERSION = 0x0002
ATTR_DOWNLOADED_FILE_VERSION = 0x0004
ATTR_IMAGE_UPGRADE_STATUS = 0x0006
ATTR_MANUFACTURER_ID = 0x0007
ATTR_IMAGE_TYPE_ID = 0x0008


@dataclass
class BenchDevice:
    kind: str
    ieee: zt.EUI64


@dataclass
class Bench:
    kind: str
    path: str
    devices: list[BenchDevice]
    app: Any = None
    engine: Engine | None = None
    jobs: dict[zt.EUI64, Job] = field(default_factory=dict)


def parse_devices(values: list[str]) -> list[BenchDevice]:
    devices = []
    for value in values:
        kind, sep, ieee = value.partition(":")
        if not sep or kind.lower() not in ("hcalcs", "ppmid"):
            raise pytest.UsageError(f"--device {value!r}: give KIND:IEEE with KIND hcalcs or ppmid, e.g. hcalcs:00:db:12:34:56:78:90:a0")
        try:
            devices.append(BenchDevice(kind.lower(), zt.EUI64(Eui64.parse(ieee, "IEEE").air)))
        except Eui64Error as exc:
            raise pytest.UsageError(f"--device {value!r}: {exc}") from None
    return devices


def image_for(device: BenchDevice) -> FirmwareImage:
    path = os.environ.get(f"HAN_OTA_BENCH_IMAGE_{device.kind.upper()}") or os.environ.get("HAN_OTA_BENCH_IMAGE")
    if not path:
        pytest.skip(f"no firmware image for {device.kind} {device.ieee}: set HAN_OTA_BENCH_IMAGE_{device.kind.upper()} (or HAN_OTA_BENCH_IMAGE) "
                    "to an image this device accepts (see docs/bench.md)")
    return load_image(Path(path))


async def known_device(app: Any, ieee: zt.EUI64, join_s: float) -> Any:
    """The device as zigpy knows it: from the database, from the radio's own address
    table (then zigpy interviews it), or by letting it join for ``join_s`` seconds."""
    device = app.devices.get(ieee)
    if device is None:
        await app.load_network_info(load_devices=True)
        nwk = app.state.network_info.nwk_addresses.get(ieee)
        if nwk is not None:
            app.handle_join(nwk, ieee, 0x0000)
    if ieee not in app.devices and join_s > 0:
        await app.permit(int(join_s))
    deadline = max(join_s, 30.0)
    try:
        async with asyncio.timeout(deadline):
            while ieee not in app.devices or not app.devices[ieee].is_initialized:
                await asyncio.sleep(0.5)
    except TimeoutError:
        where = "joined" if ieee in app.devices else "seen"
        raise AssertionError(
            f"{ieee} is not {where} on this network after {deadline:g} s: check it is powered and paired with this coordinator; "
            "set HAN_OTA_BENCH_JOIN_S=120 to open the network and re-pair it (install code: see docs/radios.md)"
        ) from None
    return app.devices[ieee]


def ota_client(device: Any) -> Any:
    for ep_id, ep in device.endpoints.items():
        if ep_id != 0 and OTA_CLUSTER in ep.out_clusters:
            return ep.out_clusters[OTA_CLUSTER]
    raise AssertionError(f"{device.ieee} has no OTA client cluster (0x0019 output) on any endpoint: {sorted(device.endpoints)}")


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def bench(request):
    kind = request.config.getoption("--radio")
    path = request.config.getoption("--path")
    if kind not in ("ezsp", "znp") or not path:
        pytest.skip("hardware tests need --radio ezsp|znp and --path /dev/serial/by-id/... (or socket://...) (see docs/bench.md)")
    xdg = Path(os.environ.get("XDG_STATE_HOME") or Path.home() / ".local" / "state")
    state = Path(os.environ.get("HAN_OTA_BENCH_STATE") or xdg / "han-ota" / "bench")
    state.mkdir(parents=True, exist_ok=True)
    baud = os.environ.get("HAN_OTA_BENCH_BAUDRATE")
    app = await open_app(kind, path=path, baudrate=int(baud) if baud else None,
                         flow_control=os.environ.get("HAN_OTA_BENCH_FLOW_CONTROL"), database=state / "zigbee.db")
    b = Bench(kind, path, parse_devices(request.config.getoption("--device")), app)
    b.engine = Engine(app, OtaConfig(stall_timeout_s=float(os.environ.get("HAN_OTA_BENCH_STALL_S", "600"))))
    try:
        yield b
    finally:
        await b.engine.close()
        await app.shutdown()


def devices_or_skip(bench: Bench) -> list[BenchDevice]:
    if not bench.devices:
        pytest.skip("no --device KIND:IEEE given: only the start-up was checked")
    return bench.devices


async def test_radio_starts_and_runs_a_network(bench: Bench):
    """The driver talks to the firmware and the coordinator runs a formed network."""
    app = bench.app
    node, net = app.state.node_info, app.state.network_info
    assert int(node.nwk) == 0x0000 and node.ieee != zt.EUI64.UNKNOWN
    assert 11 <= net.channel <= 26 and net.pan_id not in (0x0000, 0xFFFF)
    print(f"\n{bench.kind} at {bench.path}: {node.manufacturer} {node.model} firmware {node.version}; "
          f"channel {net.channel}, PAN 0x{int(net.pan_id):04X}, EPID {net.extended_pan_id}")


async def test_devices_are_on_the_network_and_answer(bench: Bench):
    """Each --device is known, interviewed, has an OTA client, and answers a read of its
    current file version (a real round trip through the dongle and the air)."""
    join_s = float(os.environ.get("HAN_OTA_BENCH_JOIN_S", "0"))
    for dev in devices_or_skip(bench):
        device = await known_device(bench.app, dev.ieee, join_s)
        client = ota_client(device)
        async with asyncio.timeout(60):  # a sleepy PPMID answers at its next poll
            values, failures = await client.read_attributes([ATTR_CURRENT_FILE_VERSION, ATTR_MANUFACTURER_ID, ATTR_IMAGE_TYPE_ID], allow_cache=False)
        assert ATTR_CURRENT_FILE_VERSION in values, f"{dev.ieee}: CurrentFileVersion not readable: {failures}"
        print(f"\n{dev.kind} {dev.ieee}: nwk 0x{int(device.nwk):04X}, {device.manufacturer} {device.model}, "
              f"file version 0x{values[ATTR_CURRENT_FILE_VERSION]:08X}, manufacturer {values.get(ATTR_MANUFACTURER_ID)}, image type {values.get(ATTR_IMAGE_TYPE_ID)}")


async def test_push_leaves_each_device_held(bench: Bench):
    """A full transfer of the bench image: the device downloads and verifies it, sends
    Upgrade End Request SUCCESS and is told to wait (0xFFFFFFFF): held, not activated."""
    join_s = float(os.environ.get("HAN_OTA_BENCH_JOIN_S", "0"))
    for dev in devices_or_skip(bench):
        fw = image_for(dev)
        device = await known_device(bench.app, dev.ieee, join_s)
        before, _ = await ota_client(device).read_attributes([ATTR_CURRENT_FILE_VERSION, ATTR_DOWNLOADED_FILE_VERSION, ATTR_IMAGE_UPGRADE_STATUS], allow_cache=False)
        # A device still holding this very image from an earlier run (status 3, waiting to
        # upgrade) goes straight to Upgrade End Request: held without a transfer.
        already = before.get(ATTR_IMAGE_UPGRADE_STATUS) == 3 and before.get(ATTR_DOWNLOADED_FILE_VERSION) == fw.file_version
        job = bench.engine.push(fw, dev.ieee, activation="none")
        bench.jobs[dev.ieee] = job
        timeout = float(os.environ.get("HAN_OTA_BENCH_PUSH_S", str(max(600.0, fw.size / 20))))
        state = await bench.engine.wait(job, {SessionState.HELD}, timeout=timeout)
        assert state is SessionState.HELD, f"{dev.ieee}: {job.state.value}: {job.session.reason}"
        assert job.session.held_requests >= 1
        assert job.session.offset == fw.size or already, f"{dev.ieee}: held at offset {job.session.offset} of {fw.size}: {job.warnings}"
        after, _ = await ota_client(device).read_attributes([ATTR_CURRENT_FILE_VERSION], allow_cache=False)
        assert after.get(ATTR_CURRENT_FILE_VERSION) == before.get(ATTR_CURRENT_FILE_VERSION), "the device activated the image by itself"
        how = "it already held this image from an earlier run" if already and job.session.offset < fw.size else f"after {fw.size} bytes"
        print(f"\n{dev.ieee}: held ({how}); warnings: {job.warnings or 'none'}")


async def test_hold_answers_repeated_upgrade_end_requests(bench: Bench):
    """The device keeps asking (Upgrade End Request); every one is answered with the hold,
    and the device still runs its old version at the end of the watch."""
    hold_s = float(os.environ.get("HAN_OTA_BENCH_HOLD_S", "600"))
    for dev in devices_or_skip(bench):
        job = bench.jobs.get(dev.ieee)
        if job is None or job.state is not SessionState.HELD:
            pytest.skip(f"{dev.ieee} was not left held by test_push_leaves_each_device_held")
        first = job.session.held_requests
        try:
            async with asyncio.timeout(hold_s):
                while job.session.held_requests < first + 1:
                    await asyncio.sleep(1)
        except TimeoutError:
            pytest.fail(f"{dev.ieee} sent no further Upgrade End Request within {hold_s:g} s (HAN_OTA_BENCH_HOLD_S); "
                        "some clients wait longer before asking again")
        assert job.state is SessionState.HELD
        device = bench.app.devices[dev.ieee]
        values, _ = await ota_client(device).read_attributes([ATTR_CURRENT_FILE_VERSION], allow_cache=False)
        assert values.get(ATTR_CURRENT_FILE_VERSION) != job.image.file_version, "the device activated while held"
        print(f"\n{dev.ieee}: {job.session.held_requests} Upgrade End Requests answered with the hold")
