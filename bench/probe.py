"""What the benchmark measures inside one process, without touching gateway/ or radios/.

- `TurnaroundProbe` wraps ONE app instance's ``packet_received`` and ``send_packet``
  (instance attributes shadowing the class methods): the time a device's OTA request
  is handed to zigpy, and the time ``send_packet`` is called with the OTA frame of the
  same TSN to the same device. Install it after anything else that wraps
  ``packet_received`` (the engine's packet tap), so that it sees each packet first, as
  the radio driver hands it over. It also counts the image bytes served (data of every
  Image Block Response with status SUCCESS that reaches ``send_packet``).
- `CpuSampler` attributes process CPU to code by sampling the Python stack on
  SIGPROF (process CPU time, ``setitimer(ITIMER_PROF)``): simulated devices and air
  (radios/sim, except the radio drivers app.py and remote.py), the benchmark itself,
  the event loop's own code, and the hub (gateway/, zigpy, the sim radio driver).
- `rss_kib` / `peak_rss_kib`: VmRSS / VmHWM of this process from /proc.
"""

from __future__ import annotations

import os
import signal
from array import array
import statistics
import sys
import sysconfig
import time
from collections import Counter
from dataclasses import dataclass, field
from types import FrameType
from typing import Any

import zigpy.types as zt

from radios.sim.remote import proc_status_kib

OTA_CLUSTER = 0x0019
# Client -> server OTA requests that the server answers with the request's TSN.
ANSWERED_REQUESTS = {0x01: "query_next_image", 0x03: "image_block", 0x06: "upgrade_end"}
IMAGE_BLOCK_RESPONSE = 0x05
BLOCK_RESPONSE_HEADER = 1 + 2 + 2 + 4 + 4 + 1  # status, mfr, type, version, offset, length


def _zcl(data: bytes) -> tuple[int, int, int] | None:
    """(frame control, tsn, command id) of a ZCL frame, or None if too short."""
    if len(data) < 3:
        return None
    fc = data[0]
    i = 3 if fc & 0x04 else 1  # manufacturer-specific: 2 more bytes before the TSN
    if len(data) < i + 2:
        return None
    return fc, data[i], data[i + 1]


def _nwk(addr: Any) -> int | None:
    if addr is None:
        return None
    if addr.addr_mode == zt.AddrMode.NWK:
        return int(addr.address)
    return None


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of a non-empty list."""
    ordered = sorted(values)
    rank = max(1, min(len(ordered), int(-(-q * len(ordered) // 100))))
    return ordered[rank - 1]


@dataclass
class TurnaroundProbe:
    """Install with `install(app)`; numbers from `summary()`."""

    # Kept as arrays of doubles: tens of thousands of float objects kept alive among
    # the per-packet garbage would pin allocator pools and inflate the RSS we report.
    samples_ms: array[float] = field(default_factory=lambda: array("d"))
    by_command: dict[str, array[float]] = field(default_factory=dict)
    served_bytes: int = 0
    served_blocks: int = 0
    served_max: int = 0
    listener_ms: array[float] = field(default_factory=lambda: array("d"))
    rx_sync_ms: array[float] = field(default_factory=lambda: array("d"))
    block_send_ms: array[float] = field(default_factory=lambda: array("d"))
    unmatched: int = 0
    _pending: dict[tuple[int, int], tuple[float, str]] = field(default_factory=dict)
    _ieee_to_nwk: dict[Any, int] = field(default_factory=dict)

    def install(self, app: Any) -> None:
        original_rx = app.packet_received
        original_tx = app.send_packet
        clock = time.perf_counter
        pending = self._pending
        probe = self
        rx_sync = self.rx_sync_ms

        def packet_received(packet: zt.ZigbeePacket) -> Any:
            t_in = clock()
            if packet.cluster_id == OTA_CLUSTER:
                data = packet.data.serialize()
                head = _zcl(data)
                # cluster-specific (frame type 1), client -> server (direction bit 0)
                if head is not None and head[0] & 0x03 == 0x01 and not head[0] & 0x08 and head[2] in ANSWERED_REQUESTS:
                    src = _nwk(packet.src)
                    if src is not None:
                        key = (src, head[1])
                        if key in pending:
                            probe.unmatched += 1  # a retry before the answer: time the latest
                        pending[key] = (t_in, ANSWERED_REQUESTS[head[2]])
                        # What the hub does synchronously with the request before the
                        # radio driver gets control back (zigpy's parse and listeners,
                        # or whatever hooks the engine put on packet_received).
                        t_call = clock()
                        try:
                            return original_rx(packet)
                        finally:
                            rx_sync.append((clock() - t_call) * 1000.0)
            return original_rx(packet)

        async def send_packet(packet: zt.ZigbeePacket) -> Any:
            t_out = clock()
            if packet.cluster_id == OTA_CLUSTER:
                data = packet.data.serialize()
                head = _zcl(data)
                if head is not None and head[0] & 0x08:  # server -> client
                    dst = _nwk(packet.dst)
                    if dst is None and packet.dst is not None and packet.dst.addr_mode == zt.AddrMode.IEEE:
                        dev = app.devices.get(packet.dst.address)
                        dst = None if dev is None else int(dev.nwk)
                    if dst is not None:
                        hit = pending.pop((dst, head[1]), None)
                        if hit is not None:
                            ms = (t_out - hit[0]) * 1000.0
                            probe.samples_ms.append(ms)
                            probe.by_command.setdefault(hit[1], array("d")).append(ms)
                    if head[2] == IMAGE_BLOCK_RESPONSE and head[0] & 0x03 == 0x01:
                        body = data[(5 if head[0] & 0x04 else 3) :]
                        if body and body[0] == 0x00 and len(body) >= BLOCK_RESPONSE_HEADER:
                            size = body[BLOCK_RESPONSE_HEADER - 1]
                            probe.served_bytes += size
                            probe.served_blocks += 1
                            if size > probe.served_max:
                                probe.served_max = size
                            try:
                                return await original_tx(packet)
                            finally:
                                # How long the radio kept the block (UART, air, APS ack, confirmation).
                                probe.block_send_ms.append((clock() - t_out) * 1000.0)
            return await original_tx(packet)

        app.packet_received = packet_received
        app.send_packet = send_packet

    def wrap_listener(self, listener: Any) -> None:
        """Time a zigpy application listener's ``handle_message`` (our OTA driver):
        the synchronous part of the turnaround spent in our code (decode + session)."""
        original = listener.handle_message
        clock = time.perf_counter
        spent = self.listener_ms

        def handle_message(device: Any, profile: int, cluster: int, src_ep: int, dst_ep: int, message: bytes) -> Any:
            if cluster != OTA_CLUSTER:
                return original(device, profile, cluster, src_ep, dst_ep, message)
            t = clock()
            try:
                return original(device, profile, cluster, src_ep, dst_ep, message)
            finally:
                spent.append((clock() - t) * 1000.0)

        listener.handle_message = handle_message

    def summary(self) -> dict[str, Any]:
        def stats(samples: Any) -> dict[str, float | int]:
            values = list(samples)
            if not values:
                return {"n": 0}
            return {
                "n": len(values),
                "median_ms": statistics.median(values),
                "p99_ms": percentile(values, 99),
                "mean_ms": statistics.fmean(values),
                "max_ms": max(values),
            }

        return {
            **stats(self.samples_ms),
            "by_command": {k: stats(v) for k, v in sorted(self.by_command.items())},
            "unanswered_at_end": len(self._pending),
            "re_requests_before_answer": self.unmatched,
            "served_bytes": self.served_bytes,
            "served_blocks": self.served_blocks,
            "served_max_block": self.served_max,
            "listener": stats(self.listener_ms),
            "rx_sync": stats(self.rx_sync_ms),
            "block_send_packet": stats(self.block_send_ms),
        }


# ---------------------------------------------------------------------------- CPU


_STDLIB = os.path.normpath(sysconfig.get_paths()["stdlib"]) + os.sep
_SITE = (os.sep + "site-packages" + os.sep, os.sep + "dist-packages" + os.sep)
_SIM_DIR = os.sep + os.path.join("radios", "sim") + os.sep
_SIM_DRIVERS = (os.path.join("radios", "sim", "app.py"), os.path.join("radios", "sim", "remote.py"))
_GATEWAY_DIR = os.sep + "gateway" + os.sep
_ZIGPY_DIR = os.sep + "zigpy" + os.sep
_BENCH_DIR = os.sep + "bench" + os.sep
# The scenario process's entry point sits at the bottom of every stack: a stack with
# nothing else in it is the event loop's own work (or another thread's), not the bench's.
_BENCH_MAIN = os.path.join("bench", "ota.py")

#: What the hub is on a real bench: our gateway, zigpy, the radio driver, libraries.
HUB_KINDS = ("gateway", "zigpy_via_gateway", "zigpy", "radio_driver", "libs")
KINDS = HUB_KINDS + ("sim", "loop", "bench")


class CpuSampler:
    """Statistical split of this process's CPU time by whose code was running.

    Every ``interval_s`` of process CPU time the SIGPROF handler looks at the
    interrupted stack from the innermost frame outwards, skips standard-library
    frames (asyncio, enum, inspect, ...: their cost belongs to their caller) and
    counts the first other frame's owner: ``gateway`` (gateway/), ``zigpy``,
    ``radio_driver`` (radios/sim/app.py and remote.py, the stand-in for bellows/zigpy-znp),
    ``libs`` (other installed packages), ``sim`` (the simulated devices, air and
    link: the rest of radios/sim), ``bench``. zigpy (or library) code called by the
    simulated devices or air counts as ``sim`` (they build and parse their frames
    with zigpy's types); called from gateway/ code (our codec uses zigpy's ZCL
    schemas, our driver zigpy's ``request``), as ``zigpy_via_gateway``; from
    anywhere else (zigpy's own receive path, its OTA manager), as ``zigpy``. A stack of
    standard library only is the event loop's own work (``loop``), which serves the
    hub and the sim alike.
    """

    def __init__(self, interval_s: float = 0.002) -> None:
        self.interval_s = interval_s
        self.counts: Counter[str] = Counter()
        self._cache: dict[str, str | None] = {}
        self._old: Any = None

    def _kind(self, filename: str) -> str | None:
        kind = self._cache.get(filename, "")
        if kind != "":
            return kind
        if filename.endswith(_SIM_DRIVERS):
            kind = "radio_driver"
        elif _SIM_DIR in filename:
            kind = "sim"
        elif filename.endswith(_BENCH_MAIN):
            kind = None
        elif _BENCH_DIR in filename:
            kind = "bench"
        elif _GATEWAY_DIR in filename:
            kind = "gateway"
        elif _ZIGPY_DIR in filename:
            kind = "zigpy"
        elif any(s in filename for s in _SITE):
            kind = "libs"
        elif filename.startswith(_STDLIB) or filename.startswith("<"):
            kind = None  # standard library or frozen: look at the caller
        else:
            kind = "libs"
        self._cache[filename] = kind
        return kind

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        f = frame
        found: str | None = None
        while f is not None:
            kind = self._kind(f.f_code.co_filename)
            f = f.f_back
            if kind is None:
                continue
            if found is None:
                if kind not in ("zigpy", "libs"):
                    self.counts[kind] += 1
                    return
                found = kind
            elif kind == "sim":  # zigpy types used by a simulated device or the air
                self.counts["sim"] += 1
                return
            elif kind == "gateway":  # zigpy's ZCL schemas and request path, called by us
                self.counts["zigpy_via_gateway"] += 1
                return
            elif kind in ("radio_driver", "bench"):
                break
        self.counts[found or "loop"] += 1

    def start(self) -> None:
        self._old = signal.signal(signal.SIGPROF, self._on_signal)
        signal.setitimer(signal.ITIMER_PROF, self.interval_s, self.interval_s)

    def stop(self) -> dict[str, Any]:
        signal.setitimer(signal.ITIMER_PROF, 0, 0)
        signal.signal(signal.SIGPROF, self._old or signal.SIG_DFL)
        total = sum(self.counts.values())
        share = {k: self.counts[k] / total for k in KINDS} if total else {}
        return {
            "samples": total,
            "interval_s": self.interval_s,
            "share": share,
            "hub_share": sum(share.get(k, 0.0) for k in HUB_KINDS) if total else None,
        }


class OwnerSampler:
    """Statistical split of this process's CPU time among named owners of code.

    ``owners`` maps a name to path fragments. Every ``interval_s`` of process CPU time
    the SIGPROF handler walks the interrupted stack from the innermost frame outwards
    and counts the first frame whose file path contains a fragment of some owner, so
    that code an owner calls (zigpy's types, asyncio) counts for that owner; a stack
    with no owner's frame counts as ``other`` (the event loop itself, zigpy alone).
    """

    def __init__(self, owners: dict[str, tuple[str, ...]], interval_s: float = 0.001) -> None:
        self.owners = owners
        self.interval_s = interval_s
        self.counts: Counter[str] = Counter()
        self._cache: dict[str, str | None] = {}
        self._old: Any = None

    def _owner(self, filename: str) -> str | None:
        if filename not in self._cache:
            self._cache[filename] = next(
                (name for name, parts in self.owners.items() if any(p in filename for p in parts)), None
            )
        return self._cache[filename]

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        f = frame
        while f is not None:
            owner = self._owner(f.f_code.co_filename)
            if owner is not None:
                self.counts[owner] += 1
                return
            f = f.f_back
        self.counts["other"] += 1

    def start(self) -> None:
        self._old = signal.signal(signal.SIGPROF, self._on_signal) or signal.SIG_DFL
        signal.setitimer(signal.ITIMER_PROF, self.interval_s, self.interval_s)

    def stop(self) -> dict[str, float]:
        """Each owner's share of the samples (and ``other``'s)."""
        if self._old is not None:  # started: restore what was there before
            signal.setitimer(signal.ITIMER_PROF, 0, 0)
            signal.signal(signal.SIGPROF, self._old)
            self._old = None
        total = sum(self.counts.values())
        return {k: v / total for k, v in self.counts.items()} if total else {}


# ---------------------------------------------------------------------------- memory


def rss_kib() -> int | None:
    return proc_status_kib("VmRSS")


def peak_rss_kib() -> int | None:
    return proc_status_kib("VmHWM")


def cpu_seconds() -> float:
    return time.process_time()


def python_version() -> str:
    return sys.version.split()[0]
