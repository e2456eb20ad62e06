"""The benchmark's scenarios: one async function each, returning plain numbers.

Both implementations run on the same simulated radio (`SimControllerApplication`),
the same simulated devices (`SimDeviceSpec`, the OTA client written from the ZCL
specification) and the same `LinkModel`:

- ``impl="ours"``: `gateway.engine.Engine` (push; held; `activate` when asked);
- ``impl="zigpy"``: zigpy's own ``Device.update_firmware`` (zigpy/ota/manager.py, what
  ZHA uses), which answers Upgrade End Request with "upgrade now";
- ``impl="floor"`` (`many_devices` only): `bench.floor.FloorResponder`, the least an
  OTA server can do per frame through zigpy's radio API (a reference for the hub's
  cost, not an OTA server), where ``"ours"`` has the Engine.

Common end point: the simulated device *sends* Upgrade End Request SUCCESS (its
``upgrade_end_request`` event, after it verified the whole image). Time starts when
the server is asked to push (``Engine.push`` / ``update_firmware``; both begin with an
Image Notify). For one device there is a second end point: the device starts
applying the image (its ``activate`` event): for us after the hold, a call to
``Engine.activate`` and our unsolicited Upgrade End Response; for zigpy after its
answer to the Upgrade End Request.

``aps=True`` (`one_device`, in-process HAN only): the device holds an APS link key
that the coordinator has too, as after key establishment, and insists on APS security
for OTA. Ours is told so by its security registry (state ESTABLISHED): every frame
APS-encrypted, blocks of at most 56 bytes. zigpy 2.4's ``update_firmware`` takes no
APS option, but its OTAManager sends through the device's Ota cluster, whose
``request``/``reply`` pass the cluster's ``aps_encryption`` attribute to the radio
("All traffic on this cluster is APS encrypted with the device's link key",
zigpy/zcl/__init__.py; zigpy's own KeepAlive cluster sets it): the zigpy run sets it
on the device's Ota client cluster, so every frame of zigpy's OTA goes APS-encrypted
(zigpy's blocks stay at its own 50-byte cap). Without it the device drops them all.

Times are read from the devices' event histories (loop time), so the watcher's
polling interval does not change them. The benchmark drops history it has read
(it would otherwise grow by a few events per block and inflate the process RSS).

``remote=True`` puts the simulated devices and air in a child process
(radios/sim/remote.py) and leaves this process what a real hub runs: the OTA server,
zigpy and a thin radio driver. The child reports the events the benchmark times
(Upgrade End Request, activation, the interview's query) with its loop time, which is
CLOCK_MONOTONIC as this process's, and everything else (counters, channel time, its
own CPU time and RSS) when asked (`radios.sim.remote.han_report`).
"""

from __future__ import annotations

import asyncio
import logging
import os
import statistics
import struct
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import zigpy.types as zt
from zigpy.ota import OtaImageWithMetadata
from zigpy.ota.image import parse_ota_image
from zigpy.ota.providers import BaseOtaImageMetadata
from zigpy.zcl import ClusterType

from bench import model
from bench.floor import BLOCK_CAP as FLOOR_BLOCK
from bench.floor import FloorResponder
from bench.probe import CpuSampler, OwnerSampler, TurnaroundProbe, cpu_seconds, peak_rss_kib, rss_kib
from eui64 import Eui64
from gateway.config import OtaConfig
from gateway.engine import Engine
from gateway.image import FirmwareImage, parse_image
from gateway.image_build import build_image
from gateway.ota import events as ev
from gateway.se.security import KeyState, SecurityRegistry
from radios.sim.app import start_sim_app
from radios.sim.han import DeliveryResult
from radios.sim.link import LinkModel
from radios.sim.remote import RemoteHan, han_report, start_remote_sim_app
from radios.sim.spec import SimDeviceSpec

MANUFACTURER = 0x121D
IMAGE_TYPE = 0x0000  # HCALCS
OLD_VERSION, NEW_VERSION = 1, 2
HW = 0x1111
#: The simulated devices' own settings that differ from their defaults: no query of
#: their own during the run (the server's Image Notify starts every transfer), the
#: query at once after a notify (no random delay), a quick reboot after activation.
DEVICE_SETTINGS: dict[str, Any] = {"query_delay": 86400.0, "notify_delay": 0.0, "reboot_time": 0.5}
PAGE_SIZE = 256  # spec default
RESPONSE_SPACING_MS = 20  # spec default

LOGGERS = ("gateway", "han_ota", "radios", "zigpy", "bellows", "zigpy_znp", "asyncio")
#: The device events a remote HAN sends as they happen (few per device: the hub pays
#: for each); every other event is only counted in the child and read at the end.
REPORT_EVENTS = ("upgrade_end_request", "activate", "query_response")
#: The APS link key of ``aps=True`` runs (on the coordinator and the device).
APS_LINK_KEY = bytes(range(0xA0, 0xB0))


def quiet_logging(level: int = logging.WARNING) -> None:
    """Every logger of the stack at WARNING (INFO costs CPU on every block)."""
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    for name in LOGGERS:
        logging.getLogger(name).setLevel(level)


# ---------------------------------------------------------------------------- inputs


def new_event_loop(kind: str = "select") -> asyncio.AbstractEventLoop:
    """The benchmark's event loop: ``select`` (default) or ``epoll`` (asyncio's default).

    epoll takes its timeout in whole milliseconds, rounded up, so every timed wake-up
    of the simulation (a frame's end, a flash write, a UART transfer) comes ~0.8 ms
    late on average; select(2) takes microseconds (~0.1 ms late). The simulated link
    is timed by the event loop, so the benchmark uses select unless told otherwise.
    """
    import selectors

    if kind == "select":
        return asyncio.SelectorEventLoop(selectors.SelectSelector())
    if kind == "epoll":
        return asyncio.new_event_loop()
    raise ValueError(f"event loop {kind!r}: select or epoll")


def timer_lateness_ms(loop: asyncio.AbstractEventLoop, samples: int = 200) -> dict[str, float]:
    """How late ``call_at`` fires on this loop when idle (2-20 ms waits)."""
    import random

    async def measure() -> list[float]:
        rng = random.Random(1)
        late = []
        for _ in range(samples):
            fut = loop.create_future()
            when = loop.time() + rng.uniform(0.002, 0.02)
            loop.call_at(when, lambda f=fut: f.set_result(loop.time()))
            late.append((await fut) - when)
        return late

    late = loop.run_until_complete(measure())
    return {"median_ms": statistics.median(late) * 1000, "mean_ms": statistics.fmean(late) * 1000, "max_ms": max(late) * 1000}


def make_link(kind: str, scale: float = 1.0) -> LinkModel:
    if kind == "instant":
        return LinkModel.instant()
    if kind == "realistic":
        return LinkModel.realistic(scale=scale)
    raise ValueError(f"link {kind!r}: instant or realistic")


def image_bytes(size: int) -> bytes:
    """A Zigbee OTA file of exactly ``size`` bytes (header with hardware range and one
    upgrade-image sub-element, so that both our parser and zigpy's take it)."""

    def build(payload_len: int) -> bytes:
        payload = bytes((i * 7 + 3) & 0xFF for i in range(payload_len))
        return build_image(
            payload,
            manufacturer_code=MANUFACTURER,
            image_type=IMAGE_TYPE,
            file_version=NEW_VERSION,
            min_hw=HW,
            max_hw=0x1211,
            zigbee_subelement=True,
        )

    overhead = len(build(1)) - 1
    if size <= overhead:
        raise ValueError(f"image size {size} must exceed the {overhead}-byte header")
    data = build(size - overhead)
    assert len(data) == size
    return data


def zigpy_image(data: bytes) -> OtaImageWithMetadata:
    firmware, rest = parse_ota_image(data)
    if rest or firmware.serialize() != data:
        raise ValueError("zigpy does not serialise the benchmark image back to the same bytes")
    return OtaImageWithMetadata(
        metadata=BaseOtaImageMetadata(file_version=NEW_VERSION, manufacturer_id=MANUFACTURER, image_type=IMAGE_TYPE),
        firmware=firmware,
    )


def ieee_for(i: int) -> zt.EUI64:
    return zt.EUI64(Eui64(bytes([0x00, 0xDB, 0x12, 0x34, (i >> 8) & 0xFF, i & 0xFF, 0x90, 0xA0])).air)


def device_specs(n: int, page: bool) -> list[SimDeviceSpec]:
    return [
        SimDeviceSpec(
            kind="hcalcs",
            ieee=ieee_for(i),
            manufacturer_code=MANUFACTURER,
            image_type=IMAGE_TYPE,
            file_version=OLD_VERSION,
            hardware_version=HW,
            page_requests=page,
            page_size=PAGE_SIZE,
            response_spacing_ms=RESPONSE_SPACING_MS,
            **DEVICE_SETTINGS,
        )
        for i in range(1, n + 1)
    ]


# ---------------------------------------------------------------------------- watching


class Sims:
    """The simulated devices as the benchmark sees them: in this process (a `SimHan`)
    or in the child process (a `RemoteHan`), through one interface."""

    def __init__(self, app: Any, ieees: list[zt.EUI64]) -> None:
        self.han = app.han
        self.remote = isinstance(self.han, RemoteHan)
        self.ieees = ieees
        self._cursor = 0
        self._cursors: dict[zt.EUI64, int] = {}

    def spec(self, ieee: zt.EUI64) -> SimDeviceSpec:
        return self.han.devices[ieee].spec

    def new_events(self, keep_history: bool) -> list[tuple[zt.EUI64, float, str, dict[str, Any]]]:
        """Events since the last call (remote: only REPORT_EVENTS)."""
        if self.remote:
            events = self.han.events
            out = [(e.ieee, e.time, e.kind, e.detail) for e in events[self._cursor :]]
            self._cursor = len(events)
            return out
        out = []
        for ieee in self.ieees:
            sim = self.han.devices[ieee]
            hist = sim.history
            start = self._cursors.get(ieee, 0)
            out.extend((ieee, e.time, e.kind, e.detail) for e in hist[start:])
            if keep_history:
                self._cursors[ieee] = len(hist)
            else:
                del hist[:]
                self._cursors[ieee] = 0
        return out

    async def report(self) -> dict[str, Any]:
        """`radios.sim.remote.han_report` of the HAN, wherever it runs."""
        if self.remote:
            return await self.han.report()
        return han_report(self.han)


@dataclass
class DeviceWatch:
    """What one device did, read from its events."""

    end_at: float | None = None  # sent Upgrade End Request SUCCESS
    activate_at: float | None = None
    failed: str | None = None
    first_block_at: float | None = None
    counts: dict[str, int] = field(default_factory=dict)


class Watcher:
    """Polls the simulated devices' events (cheap: a cursor per device)."""

    KINDS = ("give_up", "verify_failed", "abort", "retry", "wait_for_data", "timeout")

    def __init__(self, sims: Sims, keep_history: bool = False) -> None:
        self.sims = sims
        self.keep = keep_history
        self.seen = {ieee: DeviceWatch() for ieee in sims.ieees}
        sims.new_events(keep_history=True)  # what happened before is not this run's

    def poll(self) -> None:
        for ieee, when, kind, detail in self.sims.new_events(self.keep):
            w = self.seen.get(ieee)
            if w is None:
                continue
            if kind == "block" and w.first_block_at is None:
                w.first_block_at = when
            elif kind == "upgrade_end_request":
                if detail.get("status") == "SUCCESS":
                    if w.end_at is None:
                        w.end_at = when
                elif w.failed is None:
                    w.failed = f"device sent Upgrade End Request {detail.get('status')}"
            elif kind == "activate" and w.activate_at is None:
                w.activate_at = when
            elif kind in self.KINDS:
                w.counts[kind] = w.counts.get(kind, 0) + 1

    def counts_from(self, start: dict[str, Any], end: dict[str, Any]) -> dict[str, int]:
        """The KINDS counted over the run: by the child for a remote HAN (it does not
        send them one by one), else as polled here."""
        if not self.sims.remote:
            total: dict[str, int] = {}
            for w in self.seen.values():
                for k, v in w.counts.items():
                    total[k] = total.get(k, 0) + v
            return total
        out = {}
        for k in self.KINDS:
            n = sum(d["events"].get(k, 0) for d in end["devices"].values()) - sum(d["events"].get(k, 0) for d in start["devices"].values())
            if n:
                out[k] = n
        return out

    async def until(self, done: Any, timeout: float, interval: float = 0.05) -> bool:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            self.poll()
            if done():
                return True
            if loop.time() >= deadline:
                return False
            await asyncio.sleep(interval)


async def _await_interview_query(sims: Sims, timeout: float) -> int:
    """zigpy's interview sends an Image Notify; the device asks once and zigpy says
    NO_IMAGE_AVAILABLE. Let that finish before timing (returns how many did)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    done = 0
    while True:
        report = await sims.report()
        done = sum(1 for d in report["devices"].values() if d["events"].get("query_response") and d["state"] == "idle")
        if done == len(report["devices"]) or loop.time() >= deadline:
            return done
        await asyncio.sleep(0.05)


def _sum_counters(report: dict[str, Any]) -> dict[str, int]:
    keys = ("block_requests_sent", "page_requests_sent", "blocks_received", "bytes_received", "retries",
            "response_timeouts", "wait_for_data", "gave_up", "aborts", "blocks_ignored", "upgrade_end_sent",
            "resumed", "invalid_images")
    out = {k: 0 for k in keys}
    for d in report["devices"].values():
        c = d["counters"]
        for k in keys:
            out[k] += c.get(k, 0)
    return out


def _wire(app: Any) -> tuple[int, int] | None:
    """(reads, packets) of a hub whose HAN is in a child process, else None."""
    han = getattr(app, "han", None)
    return (han.reads, han.uplinks) if isinstance(han, RemoteHan) else None


def _wire_delta(start: tuple[int, int] | None, end: tuple[int, int] | None) -> dict[str, Any]:
    """How many packets from the devices each read from the child's socket carried."""
    if start is None or end is None:
        return {}
    reads, packets = end[0] - start[0], end[1] - start[1]
    return {"socket_reads": reads, "uplinks": packets, "uplinks_per_read": packets / reads if reads else None}


def _child(start: dict[str, Any], end: dict[str, Any], served: int) -> dict[str, Any]:
    """The simulation's own cost when it ran in a child process (information only)."""
    if start.get("pid") == os.getpid():
        return {"sim_process": "same"}
    cpu = end["cpu_s"] - start["cpu_s"]
    return {
        "sim_process": "child",
        "child_cpu_s": cpu,
        "child_cpu_s_per_mib": cpu / (served / 2**20) if served else None,
        "child_peak_rss_kib": end.get("peak_rss_kib"),
    }


# ---------------------------------------------------------------------------- scenarios


@dataclass
class Run:
    """A network up and ready; the probe is installed by the scenario (`Run.watch`)."""

    app: Any
    sims: Sims
    probe: TurnaroundProbe
    link: LinkModel
    interview_queries: int
    startup_s: float


# The zigpy databases of runs with ``database=True``; removed when the process exits.
_DATABASES: list[tempfile.TemporaryDirectory[str]] = []


async def _network(n: int, page: bool, link: LinkModel, remote: bool = False, child_loop: str = "select",
                   database: bool = False) -> Run:
    """``database``: zigpy keeps its SQLite database, as the daemon does with a real
    radio (zigpy then writes device state, such as last_seen, as frames arrive)."""
    t = time.perf_counter()
    specs = device_specs(n, page)
    db_path: str | None = None
    if database:
        _DATABASES.append(tempfile.TemporaryDirectory(prefix="han-ota-bench-"))
        db_path = str(Path(_DATABASES[-1].name) / "zigbee.db")
    if remote:
        app = await start_remote_sim_app(specs, link, timeout=max(60.0, 3.0 * n), report_events=REPORT_EVENTS,
                                         keep_history=False, child_loop=child_loop, database_path=db_path)
    else:
        app = await start_sim_app(specs, link, timeout=max(60.0, 3.0 * n), database_path=db_path)
    sims = Sims(app, [s.ieee for s in specs])
    queries = await _await_interview_query(sims, timeout=max(10.0, 0.5 * n))
    return Run(app, sims, TurnaroundProbe(), link, queries, time.perf_counter() - t)


def _seconds(run: Run, sim_seconds: float | None) -> float | None:
    """Sim time to real seconds (a realistic link with scale s runs s times real time)."""
    if sim_seconds is None:
        return None
    return sim_seconds / run.link.scale if run.link.timed else sim_seconds


async def one_device(
    impl: str,
    mode: str = "block",
    link: str = "realistic",
    image_size: int = 256 * 1024,
    *,
    scale: float = 1.0,
    activate: bool = True,
    ota: dict[str, Any] | None = None,
    timeout: float = 3600.0,
    remote: bool = False,
    child_loop: str = "select",
    database: bool = False,
    aps: bool = False,
) -> dict[str, Any]:
    """One HCALCS, block or page requests: time to Upgrade End Request SUCCESS, and
    (``activate``) to the device applying the image. ``remote``: the simulated HAN in a
    child process (``child_loop``: its event loop). ``database``: zigpy keeps its
    database, as the daemon does with a real radio. ``aps``: an APS-secured device
    (see the module docstring)."""
    if aps and remote:
        raise ValueError("aps=True needs the in-process HAN (the key goes on its SimDevice)")
    lm = make_link(link, scale)
    run = await _network(1, mode == "page", lm, remote, child_loop, database)
    app, (ieee,) = run.app, run.sims.ieees
    registry: SecurityRegistry | None = None
    if aps:
        await app.install_link_key(ieee, zt.KeyData(APS_LINK_KEY))
        app.han.devices[ieee].aps_link_key = APS_LINK_KEY
        registry = SecurityRegistry()
        registry.update(ieee, state=KeyState.ESTABLISHED, suite=2)
    data = image_bytes(image_size)
    loop = asyncio.get_running_loop()
    watcher = Watcher(run.sims)
    config = OtaConfig(**(ota or {}))
    engine: Engine | None = None
    task: asyncio.Task[Any] | None = None
    result: dict[str, Any] = {"impl": impl, "mode": mode, "link": link, "scale": lm.scale if lm.timed else None, "database": database,
                              "image_size": image_size, "devices": 1, "aps": aps}
    try:
        if impl == "ours":
            engine = Engine(app, config, security=registry)
            run.probe.wrap_listener(engine.driver)
            image = parse_image(data)
            result["ota_config"] = {"rate_bytes_per_s": config.rate_bytes_per_s, "burst_bytes": config.burst_bytes,
                                    "max_inflight": config.max_inflight, "block_cap": config.block_cap}
            run.probe.install(app)  # after the engine: outermost, whatever the engine wraps
            rep0 = await run.sims.report()
            cpu0, t0 = cpu_seconds(), loop.time()
            job = engine.push(image, ieee)
        elif impl == "zigpy":
            zimage = zigpy_image(data)
            dev = app.devices[ieee]
            if aps:
                # zigpy's own switch (see the module docstring).
                dev.find_cluster(cluster_id=0x0019, cluster_type=ClusterType.Client).aps_encryption = True
            run.probe.install(app)
            rep0 = await run.sims.report()
            cpu0, t0 = cpu_seconds(), loop.time()
            task = loop.create_task(dev.update_firmware(zimage))
        else:
            raise ValueError(f"impl {impl!r}: ours or zigpy")
        w = watcher.seen[ieee]

        def ended() -> bool:
            return w.end_at is not None or w.failed is not None or (task is not None and task.done()) or (
                impl == "ours" and job.state in ev.END_STATES
            )

        await watcher.until(ended, timeout)
        cpu_end = cpu_seconds()
        rep1 = await run.sims.report()
        if w.end_at is not None and activate:
            if engine is not None:
                await engine.wait(job, {ev.SessionState.HELD}, timeout=60)
                if job.state is ev.SessionState.HELD:
                    engine.activate(ieee, why="benchmark")
            await watcher.until(lambda: w.activate_at is not None or w.failed is not None, 120)
        result.update(
            completed=w.end_at is not None,
            failed=w.failed or (None if w.end_at is not None else "no Upgrade End Request SUCCESS in time"),
            seconds_to_end=_seconds(run, None if w.end_at is None else w.end_at - t0),
            seconds_to_activate=_seconds(run, None if w.activate_at is None else w.activate_at - t0),
            cpu_s=cpu_end - cpu0,
            counters=_sum_counters(rep1),
            events=watcher.counts_from(rep0, rep1),
            turnaround=run.probe.summary(),
            channel_busy_s=rep1["channel_busy_s"] - rep0["channel_busy_s"],
            interview_queries=run.interview_queries,
            startup_s=run.startup_s,
            device_max_data_size=run.sims.spec(ieee).max_data_size,
            state=None if engine is None else job.state.value,
            peak_rss_kib=peak_rss_kib(),
            **_child(rep0, rep1, run.probe.served_bytes),
        )
        result["blocks"] = result["counters"]["blocks_received"]
        result["block_size"] = run.probe.served_max
        if aps:
            radio = app.han.devices[ieee].radio
            result["aps_secured_received"] = radio.aps_secured_received
            result["aps_drops"] = radio.aps_drops
            if task is not None and task.done() and not task.cancelled() and task.exception() is None:
                result["zigpy_result"] = repr(task.result())
        return result
    finally:
        if task is not None and not task.done():
            task.cancel()
        if engine is not None:
            await engine.close()
        await app.shutdown()


async def many_devices(
    impl: str,
    n: int = 10,
    link: str = "realistic",
    image_size: int = 64 * 1024,
    *,
    scale: float = 1.0,
    ota: dict[str, Any] | None = None,
    sample_cpu: bool = False,
    timeout: float | None = None,
    remote: bool = False,
    child_loop: str = "select",
    database: bool = False,
) -> dict[str, Any]:
    """``n`` HCALCS (block requests) updating at once over the one channel. ``remote``:
    the simulated HAN in a child process, so that this process's CPU time and RSS are
    the hub's alone. ``impl``: ``"ours"``, ``"zigpy"`` or ``"floor"`` (bench/floor.py,
    in the Engine's place). ``database``: zigpy keeps its database, as the daemon does
    with a real radio."""
    lm = make_link(link, scale)
    run = await _network(n, False, lm, remote, child_loop, database)
    app = run.app
    data = image_bytes(image_size)
    loop = asyncio.get_running_loop()
    watcher = Watcher(run.sims)
    config = OtaConfig(**(ota or {}))
    engine: Engine | None = None
    floor: FloorResponder | None = None
    tasks: dict[zt.EUI64, asyncio.Task[Any]] = {}
    jobs: dict[zt.EUI64, Any] = {}
    block = model.max_block(lm, run.sims.spec(run.sims.ieees[0]).max_data_size)
    cap = model.capacity(lm, block)
    if timeout is None:
        # 2.5x the best case: a run below 40 % of capacity leaves devices unfinished
        # (reported as stalled) rather than running for ever.
        timeout = 600.0 if not lm.timed else max(60.0, 2.5 * n * image_size / cap.bytes_per_s * lm.scale)
    sampler = CpuSampler() if sample_cpu else None
    rss_before = rss_kib()
    result: dict[str, Any] = {"impl": impl, "link": link, "scale": lm.scale if lm.timed else None, "database": database,
                              "image_size": image_size, "devices": n}
    try:
        if impl == "ours":
            engine = Engine(app, config)
            run.probe.wrap_listener(engine.driver)
            image: FirmwareImage = parse_image(data)
            result["ota_config"] = {"rate_bytes_per_s": config.rate_bytes_per_s, "burst_bytes": config.burst_bytes,
                                    "max_inflight": config.max_inflight, "block_cap": config.block_cap}
        elif impl == "zigpy":
            zimage = zigpy_image(data)
        elif impl == "floor":
            floor = FloorResponder(app, parse_image(data))
        else:
            raise ValueError(f"impl {impl!r}: ours, zigpy or floor")
        # Installed after the engine (or the floor responder), so that the probe sees
        # each packet first, as the radio hands it over, whatever the engine itself
        # hooks into the app.
        run.probe.install(app)
        rep0 = await run.sims.report()
        if sampler is not None:
            sampler.start()
        wire0 = _wire(app)
        cpu0, t0 = cpu_seconds(), loop.time()
        for ieee in run.sims.ieees:
            if engine is not None:
                jobs[ieee] = engine.push(image, ieee)
            elif floor is not None:
                floor.start(ieee)
            else:
                tasks[ieee] = loop.create_task(app.devices[ieee].update_firmware(zimage))

        def finished(ieee: zt.EUI64) -> bool:
            w = watcher.seen[ieee]
            if w.end_at is not None or w.failed is not None:
                return True
            if ieee in jobs and jobs[ieee].state in ev.END_STATES:
                return True
            t = tasks.get(ieee)
            return t is not None and t.done()

        await watcher.until(lambda: all(finished(i) for i in run.sims.ieees), timeout, interval=0.1)
        cpu1, t1 = cpu_seconds(), loop.time()
        wire1 = _wire(app)
        share = sampler.stop() if sampler is not None else None
        sampler = None
        rep1 = await run.sims.report()
        served = run.probe.served_bytes
        per_device: list[float | None] = []
        failures: dict[str, str] = {}
        for ieee in run.sims.ieees:
            w = watcher.seen[ieee]
            per_device.append(None if w.end_at is None else _seconds(run, w.end_at - t0))
            if w.end_at is None:
                why = w.failed
                if ieee in jobs and jobs[ieee].state in ev.END_STATES:
                    why = f"job {jobs[ieee].state.value}: {jobs[ieee].session.reason}"
                t = tasks.get(ieee)
                if why is None and t is not None and t.done():
                    why = f"update_firmware returned {t.result()!r}" if not t.cancelled() and t.exception() is None else f"update_firmware raised {t.exception()!r}"
                failures[str(ieee)] = why or "not finished in time"
        times = [t for t in per_device if t is not None]
        median = statistics.median(times) if times else None
        slow = [t for t in times if median is not None and t > 2 * median]
        total = max(times) if len(times) == n else _seconds(run, t1 - t0)
        # Image bytes the devices hold (at most one image each: a restarted download
        # does not count twice), over the time until the last one finished.
        delivered = sum(min(c["bytes_received"], image_size) if c["downloads_completed"] == 0 else image_size
                        for c in (d["counters"] for d in rep1["devices"].values()))
        busy = rep1["channel_busy_s"] - rep0["channel_busy_s"]
        goodput = delivered / total if total else 0.0
        job_failures = sum(1 for j in jobs.values() if j.state is ev.SessionState.FAILED)
        result.update(
            completed=len(times),
            failures=failures,
            stalled=len(failures) + len(slow),
            slow_over_2x_median=len(slow),
            job_failures=job_failures,
            total_s=total,
            median_s=median,
            slowest_s=max(times) if times else None,
            fastest_s=min(times) if times else None,
            delivered_bytes=delivered,
            goodput_bytes_per_s=goodput,
            capacity=cap.as_dict(),
            timeout_s=timeout,
            goodput_share=(goodput / cap.bytes_per_s) if lm.timed else None,
            cpu_s=cpu1 - cpu0,
            served_bytes=served,
            cpu_s_per_mib=(cpu1 - cpu0) / (served / 2**20) if served else None,
            cpu_share=share,
            rss_before_kib=rss_before,
            rss_end_kib=rss_kib(),
            peak_rss_kib=peak_rss_kib(),
            counters=_sum_counters(rep1),
            events=watcher.counts_from(rep0, rep1),
            turnaround=run.probe.summary(),
            channel_busy_s=busy,
            channel_busy_share=(busy / (lm.scale * total)) if lm.timed and total else None,
            interview_queries=run.interview_queries,
            startup_s=run.startup_s,
            block_size=run.probe.served_max,
            **_wire_delta(wire0, wire1),
            **_child(rep0, rep1, served),
        )
        return result
    finally:
        if sampler is not None:
            sampler.stop()
        for t in tasks.values():
            if not t.done():
                t.cancel()
        if engine is not None:
            await engine.close()
        if floor is not None:
            floor.close()
        await app.shutdown()


async def priority_under_bulk(
    n_bulk: int = 20,
    link: str = "realistic",
    image_size: int = 16 * 1024,
    *,
    scale: float = 1.0,
    ota: dict[str, Any] | None = None,
    timeout: float | None = None,
) -> dict[str, Any]:
    """Issue 15: an urgent push (priority high) to one device alone, then the same push
    to another device while ``n_bulk`` devices take a bulk push at priority low. The
    issue's target: the urgent one finishes within 1.3 times its time alone
    (``urgent_ratio``), and every bulk job still finishes. Times end at each device's
    Upgrade End Request SUCCESS, as in ``many_devices``."""
    from gateway.ota.priority import PRIORITY_NAMES

    high, low = PRIORITY_NAMES["high"], PRIORITY_NAMES["low"]
    lm = make_link(link, scale)
    run = await _network(n_bulk + 2, False, lm)
    app = run.app
    loop = asyncio.get_running_loop()
    watcher = Watcher(run.sims)
    config = OtaConfig(**(ota or {}))
    image = parse_image(image_bytes(image_size))
    block = model.max_block(lm, run.sims.spec(run.sims.ieees[0]).max_data_size)
    cap = model.capacity(lm, block)
    if timeout is None:
        timeout = 600.0 if not lm.timed else max(60.0, 2.5 * (n_bulk + 1) * image_size / cap.bytes_per_s * lm.scale)
    alone_dev, urgent_dev, *bulk = run.sims.ieees
    engine = Engine(app, config)
    result: dict[str, Any] = {"link": link, "scale": lm.scale if lm.timed else None, "image_size": image_size, "bulk_devices": n_bulk,
                              "ota_config": {"rate_bytes_per_s": config.rate_bytes_per_s, "han_share": config.han_share,
                                             "burst_bytes": config.burst_bytes}}
    try:
        def ended(ieee: zt.EUI64) -> bool:
            w = watcher.seen[ieee]
            return w.end_at is not None or w.failed is not None

        t0 = loop.time()
        engine.push(image, alone_dev, priority=high)
        await watcher.until(lambda: ended(alone_dev), timeout)
        alone_end = watcher.seen[alone_dev].end_at
        alone = None if alone_end is None else _seconds(run, alone_end - t0)

        jobs = {ieee: engine.push(image, ieee, priority=low) for ieee in bulk}
        # The urgent push lands on a busy channel: once the bulk transfers are running.
        await watcher.until(lambda: sum(1 for i in bulk if watcher.seen[i].first_block_at is not None) >= len(bulk) // 2, timeout)
        t1 = loop.time()
        urgent_job = engine.push(image, urgent_dev, priority=high)
        await watcher.until(lambda: ended(urgent_dev), timeout)
        urgent_end = watcher.seen[urgent_dev].end_at
        urgent = None if urgent_end is None else _seconds(run, urgent_end - t1)
        await watcher.until(lambda: all(ended(i) or jobs[i].state in ev.END_STATES for i in bulk), timeout, interval=0.1)
        bulk_times: list[float] = []
        for ieee in bulk:
            end = watcher.seen[ieee].end_at
            seconds = None if end is None else _seconds(run, end - t1)
            if seconds is not None:
                bulk_times.append(seconds)
        ratio = urgent / alone if urgent is not None and alone else None
        result.update(
            urgent_alone_s=alone,
            urgent_under_bulk_s=urgent,
            urgent_ratio=ratio,
            urgent_within_1_3x=ratio is not None and ratio <= 1.3,
            urgent_state=urgent_job.state.value,
            bulk_completed=len(bulk_times),
            bulk_all_finished=len(bulk_times) == n_bulk,
            bulk_slowest_s=max(bulk_times) if bulk_times else None,
            bulk_median_s=statistics.median(bulk_times) if bulk_times else None,
            capacity=cap.as_dict(),
            events=watcher.counts_from({}, {}),
            timeout_s=timeout,
        )
        return result
    finally:
        await engine.close()
        await app.shutdown()


async def null_radio(n: int = 50, image_size: int = 64 * 1024, *, batch: int = 3) -> dict[str, Any]:
    """The floor responder (bench/floor.py) on a radio that costs nothing: what zigpy's
    radio interface and asyncio alone cost per frame, with no radio driver or device.

    ``n`` devices join an in-process sim app; then its HAN is cut off: every
    ``send_packet`` is confirmed one loop pass later without going anywhere, and the
    scenario itself hands zigpy one Image Block Request per block of the image per
    device, as fresh `ZigbeePacket`s (what a radio driver must build), ``batch`` per
    loop pass (the hub-cost runs read about three at once: ``uplinks_per_read``). Time and CPU count from the
    first request to the last answer confirmed."""
    specs = device_specs(n, False)
    app = await start_sim_app(specs, LinkModel.instant(), timeout=max(60.0, 3.0 * n))
    loop = asyncio.get_running_loop()
    answered = 0
    blocks_seen: set[tuple[int, int]] = set()
    answered_bytes = other_frames = 0
    confirmed = DeliveryResult(True)
    response = struct.Struct("<BBBBHHIIB")  # Image Block Response SUCCESS, ZCL r8 11.13.8

    async def send(packet: zt.ZigbeePacket) -> DeliveryResult:
        # Answers are Image Block Responses. Anything else is the responder answering a
        # device's own query (the interview's Image Notify can still be heard late).
        nonlocal answered, answered_bytes, other_frames
        data = packet.data.serialize()
        if len(data) >= 3 and data[2] == 0x05:
            answered += 1
            if len(data) >= response.size:
                _fc, _tsn, _command, status, *_ids, offset, size = response.unpack_from(data)
                if status == 0 and len(data) == response.size + size:
                    blocks_seen.add((int(packet.dst.address), offset))
                    answered_bytes += size
        else:
            other_frames += 1
        fut: asyncio.Future[DeliveryResult] = loop.create_future()
        loop.call_soon(fut.set_result, confirmed)  # the radio's confirmation
        return await fut

    responder: FloorResponder | None = None
    try:
        app.han.send = send  # the sim app's HAN, cut off (instance attribute, this run only)
        image = parse_image(image_bytes(image_size))
        responder = FloorResponder(app, image)
        sources = []
        for spec in specs:
            responder.start(spec.ieee)
            sources.append(zt.AddrModeAddress(addr_mode=zt.AddrMode.NWK, address=app.get_device(ieee=spec.ieee).nwk))
        while responder.pending:
            await asyncio.sleep(0)
        coordinator = zt.AddrModeAddress(addr_mode=zt.AddrMode.NWK, address=app.state.node_info.nwk)
        request = struct.Struct("<BBBBHHIIB")  # Image Block Request, ZCL r8 11.13.6
        blocks = -(-image.size // FLOOR_BLOCK)
        answered = answered_bytes = other_frames = handed = 0
        blocks_seen.clear()
        cpu0, t0 = cpu_seconds(), time.perf_counter()
        for k in range(blocks):
            offset = k * FLOOR_BLOCK
            for i, src in enumerate(sources):
                tsn = (k + i) & 0xFF
                data = request.pack(0x01, tsn, 0x03, 0x00, image.manufacturer_code, image.image_type, image.file_version, offset, FLOOR_BLOCK)
                app.packet_received(zt.ZigbeePacket(src=src, src_ep=1, dst=coordinator, dst_ep=1, tsn=tsn, profile_id=0x0104,
                                                    cluster_id=0x0019, data=zt.SerializableBytes(data), lqi=200, rssi=-50))
                handed += 1
                if handed % batch == 0:
                    await asyncio.sleep(0)
                    while responder.pending:  # the radio drains what this pass handed it
                        await asyncio.sleep(0)
        while responder.pending:
            await asyncio.sleep(0)
        cpu = cpu_seconds() - cpu0
        wall = time.perf_counter() - t0
        served = n * image.size
        return {
            "devices": n, "image_size": image.size, "batch": batch, "requests": handed, "answered": answered,
            "answered_bytes": answered_bytes, "blocks_answered": len(blocks_seen), "other_frames": other_frames,
            "send_failures": responder.send_failures, "cpu_s": cpu, "wall_s": wall,
            "us_per_block": 1e6 * cpu / handed if handed else None,
            "cpu_s_per_mib": cpu / (served / 2**20) if served else None,
            "peak_rss_kib": peak_rss_kib(),
        }
    finally:
        if responder is not None:
            responder.close()
        await app.shutdown()


# Whose code a real-driver run spends its CPU on (bench.probe.OwnerSampler): the
# innermost frame of one of these, so zigpy's types and asyncio count for their caller.
DRIVER_OWNERS: dict[str, tuple[str, ...]] = {
    "device side": (os.sep + os.path.join("radios", "emulate") + os.sep, os.sep + os.path.join("radios", "sim") + os.sep),
    "radio library": (os.sep + "bellows" + os.sep, os.sep + "zigpy_znp" + os.sep, os.sep + "serial" + os.sep,
                      os.sep + "serial_asyncio_fast" + os.sep),
    "gateway": (os.sep + "gateway" + os.sep,),
}


async def real_driver(
    radio: str = "ezsp",
    image_size: int = 64 * 1024,
    *,
    impl: str = "ours",
    link: str = "instant",
    scale: float = 1.0,
    hops: int = 1,
    ota: dict[str, Any] | None = None,
    timeout: float | None = None,
) -> dict[str, Any]:
    """One push to one HCALCS through unmodified bellows (``ezsp``) or zigpy-znp
    (``znp``) and the emulated coordinator (radios/emulate) in this process, to Upgrade
    End Request SUCCESS. ``impl``: ``"ours"`` (the Engine), ``"zigpy"`` (zigpy's
    ``update_firmware`` on the same emulator) or ``"floor"`` (bench/floor.py, the
    do-nothing responder through the same library). ``link``: the HAN's air (instant or
    realistic, at ``scale``); ``hops``: the device's radio hops from the coordinator (2:
    behind one relay, so every frame carries a source route). The CPU of the transfer is
    split by whose code ran (`DRIVER_OWNERS`): the device side (emulator, simulated
    device) is not the hub's; the rest is (``hub_cpu_s_per_mib``), and the radio library
    is what a hub pays for a real radio on top of zigpy."""
    from dataclasses import replace

    from radios.emulate.ezsp import NetworkSettings, running_ezsp_emulator
    from radios.emulate.znp import running_znp_emulator
    from radios.limits import for_app
    from radios.select import open_app

    if impl not in ("ours", "zigpy", "floor"):
        raise ValueError(f"impl {impl!r}: ours, zigpy or floor")
    lm = make_link(link, scale)
    specs = [replace(spec, hops=hops) for spec in device_specs(1, False)]
    ieee = specs[0].ieee
    if radio == "ezsp":
        emulator = running_ezsp_emulator(specs, lm, network=NetworkSettings(channel=20, pan_id=0x4D2B))
    elif radio == "znp":
        emulator = running_znp_emulator(specs, lm)
    else:
        raise ValueError(f"radio {radio!r}: ezsp or znp")
    if timeout is None:
        # Ten times the realistic one-hop push per hop (about 0.45 s per KiB), at least 10 minutes.
        timeout = max(600.0, 10 * 0.45 * hops * image_size / 1024 * (lm.scale if lm.timed else 0.0))
    data = image_bytes(image_size)
    image = parse_image(data)
    engine: Engine | None = None
    floor: FloorResponder | None = None
    task: asyncio.Task[Any] | None = None
    job: Any = None
    async with emulator as (path, server):
        han = server.han if radio == "ezsp" else server.coordinator.han
        app = await open_app(radio, path=path)
        sampler = OwnerSampler(DRIVER_OWNERS)
        floor_block: int | None = None
        try:
            if radio == "ezsp":
                await app.permit(60)
            async with asyncio.timeout(60):
                while not (ieee in app.devices and app.devices[ieee].is_initialized):
                    await asyncio.sleep(0.05)
            device = han.devices[ieee]
            if impl == "ours":
                engine = Engine(app, OtaConfig(**(ota or {})))
            elif impl == "floor":
                # The floor sizes its blocks to what the stack takes to this device
                # (radios/limits.py), or every block behind a relay would be refused.
                fit = for_app(app).max_payload(aps_encrypted=False, relays=hops - 1) - model.ZCL_BLOCK_RESPONSE_OVERHEAD
                floor_block = min(FLOOR_BLOCK, fit)
                floor = FloorResponder(app, image, block_cap=floor_block)
            zimage = zigpy_image(data) if impl == "zigpy" else None
            sampler.start()
            cpu0, t0 = cpu_seconds(), time.perf_counter()
            if engine is not None:
                job = engine.push(image, ieee)
            elif floor is not None:
                floor.start(ieee)
            else:
                task = asyncio.get_running_loop().create_task(app.devices[ieee].update_firmware(zimage))

            def ended() -> bool:
                return device.counters.downloads_completed >= 1 or (job is not None and job.state in ev.END_STATES) or (
                    task is not None and task.done())

            try:
                async with asyncio.timeout(timeout):
                    while not ended():
                        await asyncio.sleep(0.01)
            except TimeoutError:
                pass
            cpu, wall = cpu_seconds() - cpu0, time.perf_counter() - t0
        finally:
            share = sampler.stop()
            if task is not None and not task.done():
                task.cancel()
            if engine is not None:
                await engine.close()
            if floor is not None:
                floor.close()
            await app.shutdown()
    blocks = device.counters.blocks_received
    mib = image.size / 2**20
    hub_share = 1.0 - share.get("device side", 0.0) if share else None
    completed = device.counters.downloads_completed >= 1
    return {
        "radio": radio, "impl": impl, "link": link, "scale": lm.scale if lm.timed else None, "hops": hops,
        "image_size": image.size, "completed": completed,
        "failed": None if completed else (f"job {job.state.value}" if job is not None and job.state in ev.END_STATES
                                          else f"update_firmware returned {task.result()!r}" if task is not None and task.done() and not task.cancelled() and task.exception() is None
                                          else f"update_firmware raised {task.exception()!r}" if task is not None and task.done() and not task.cancelled()
                                          else "no Upgrade End Request SUCCESS in time"),
        "state": None if job is None else job.state.value, "blocks": blocks,
        "mean_block": image.size / blocks if blocks else None, "floor_block": floor_block,
        "cpu_s": cpu, "wall_s": wall,
        # A realistic link at scale s runs s times real time (as `_seconds`).
        "seconds_to_end": wall / lm.scale if lm.timed and lm.scale else wall,
        "cpu_s_per_mib": cpu / mib, "share": share,
        "hub_cpu_s_per_mib": None if hub_share is None else cpu * hub_share / mib,
        "cpu_s_per_mib_by_owner": {k: cpu * v / mib for k, v in share.items()},
        "us_per_block_by_owner": {k: 1e6 * cpu * v / blocks for k, v in share.items()} if blocks else {},
    }
