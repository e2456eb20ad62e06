"""Background HAN traffic on the simulated air (issue 15 part 2): what OTA shares the channel with.

Theory of operation
===================

A `Flow` is one device's periodic message: ``metering`` (the device's Metering cluster
0x0702 reporting, device -> hub), ``price`` (a Price cluster 0x0700 PublishPrice,
hub -> device) or ``tunnel`` (a GBCS-sized message over the device's GBCS tunnel,
hub -> device). `TrafficSchedule` is sans-I/O: it holds when each flow is next due and
`handle_timer(now)` returns what fell due (`Emit`: the flow and its sequence number).
Flows are spread over their period: flow i first at ``start + period * frac((i+1)/phi)``
(the golden ratio's sequence, evenly spread for any number of flows and never in step
across periods, as unsynchronised meters are not), so that ten devices reporting every
10 s do not all speak in the same millisecond, nor a price always meet a tunnel message. A
driver that runs late by more than a period sends the due message once and skips the
rest (``skipped``): a meter that missed its slot does not send a burst afterwards.

`SimTraffic` is the thin asyncio driver. A metering message is a frame the device sends
through its one transmit queue (``SimDevice.send_zcl_frame``), so it waits behind the
device's own OTA requests and takes airtime on the one `Channel` like any other frame
(han.py books every exchange there). Price and tunnel messages are the hub's to send:
the driver calls ``on_hub(kind, ieee, seq, size)``, which the daemon points at the
hub's senders (gateway/traffic_service.py), so the frames go through the coordinator's
queue and the air as a real hub's would.

The stamp (how the hub measures without reading the simulator's memory)
------------------------------------------------------------------------

A real meter's report says nothing about when it was sent, so the simulated meter
sends a *bench* report: a manufacturer-specific Report Attributes (ZCL 2.5.11, general
command 0x0A, server to client, default response disabled) on Metering with three
records, in this order::

    0x0000 uint32 (0x23)   sequence number of this flow (0, 1, 2, ...): gaps are loss
    0x0001 uint48 (0x25)   wall-clock send time, ms since the Unix epoch
    0x0002 octstr (0x41)   padding up to the configured size (length byte + zeros)

The frame is exactly ``size`` bytes of APS payload (at least `METERING_MIN_SIZE`). The
hub parses those bytes (gateway/traffic.py, written from this layout, not importing
it) and compares the stamp with its own clock: the bench runs both on one machine.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass
import logging
import struct
import time
from typing import Any, Final

import zigpy.types as t

from .han import SimHan

__all__ = [
    "CLUSTER_METERING",
    "CLUSTER_PRICE",
    "HUB_KINDS",
    "KINDS",
    "METERING_MIN_SIZE",
    "Emit",
    "Flow",
    "SimTraffic",
    "TrafficSchedule",
    "metering_report",
]

LOGGER = logging.getLogger(__name__)

CLUSTER_PRICE: Final = 0x0700
CLUSTER_METERING: Final = 0x0702
KINDS: Final = ("metering", "price", "tunnel")
HUB_KINDS: Final = ("price", "tunnel")  # sent by the hub, the driver only says when

# ZCL header (frame control, manufacturer code, TSN, command) + the three records'
# fixed parts (id 2 + type 1 + value): 5 + (2+1+4) + (2+1+6) + (2+1+1).
METERING_MIN_SIZE: Final = 25
_MAX_PADDING: Final = 254  # an octet string's length byte (0xFF means "invalid")
_FC_MFR_SERVER_TO_CLIENT_NO_DR: Final = 0x04 | 0x08 | 0x10  # global frame
_REPORT_ATTRIBUTES: Final = 0x0A
_INVERSE_PHI: Final = (5**0.5 - 1) / 2  # 0.618...


@dataclass(frozen=True)
class Flow:
    """One device's periodic background message."""

    ieee: t.EUI64
    kind: str  # one of KINDS
    period_s: float
    size: int  # APS payload bytes

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"Flow: kind={self.kind!r}, expected one of {', '.join(KINDS)}")
        if not self.period_s > 0:
            raise ValueError(f"Flow: period_s={self.period_s!r} must be > 0")
        if self.kind == "metering" and not METERING_MIN_SIZE <= self.size <= METERING_MIN_SIZE + _MAX_PADDING:
            raise ValueError(f"Flow: a metering report is {METERING_MIN_SIZE}..{METERING_MIN_SIZE + _MAX_PADDING} bytes, not {self.size}")


@dataclass(frozen=True)
class Emit:
    """A flow's message fell due: send it now."""

    flow: Flow
    seq: int
    due: float


class TrafficSchedule:
    """When each flow is next due (sans-I/O: time is an argument)."""

    def __init__(self, flows: Sequence[Flow], start: float) -> None:
        self.flows = tuple(flows)
        self._next = [start + f.period_s * (((i + 1) * _INVERSE_PHI) % 1.0) for i, f in enumerate(self.flows)]
        self._seq = [0] * len(self.flows)
        self.skipped = 0

    def get_timer(self) -> float | None:
        return min(self._next, default=None)

    def handle_timer(self, now: float) -> list[Emit]:
        out: list[Emit] = []
        for i, flow in enumerate(self.flows):
            due = self._next[i]
            if due > now:
                continue
            out.append(Emit(flow, self._seq[i], due))
            self._seq[i] += 1
            due += flow.period_s
            while due <= now:  # late by a whole period or more: those slots are gone
                due += flow.period_s
                self.skipped += 1
            self._next[i] = due
        out.sort(key=lambda e: e.due)
        return out


def metering_report(seq: int, sent_at_ms: int, size: int, *, tsn: int, manufacturer: int) -> bytes:
    """The bench's stamped Metering report (layout in the module docstring), ``size`` bytes."""
    padding = size - METERING_MIN_SIZE
    if not 0 <= padding <= _MAX_PADDING:
        raise ValueError(f"metering_report: size {size} outside {METERING_MIN_SIZE}..{METERING_MIN_SIZE + _MAX_PADDING}")
    header = struct.pack("<BHBB", _FC_MFR_SERVER_TO_CLIENT_NO_DR, manufacturer, tsn & 0xFF, _REPORT_ATTRIBUTES)
    records = (
        struct.pack("<HBI", 0x0000, 0x23, seq & 0xFFFFFFFF)
        + struct.pack("<HB", 0x0001, 0x25) + (sent_at_ms & 0xFFFFFFFFFFFF).to_bytes(6, "little")
        + struct.pack("<HBB", 0x0002, 0x41, padding) + bytes(padding)
    )
    return header + records


OnHub = Callable[[str, t.EUI64, int, int], Coroutine[Any, Any, Any]]


class SimTraffic:
    """Runs a `TrafficSchedule` on a `SimHan` (see the module docstring)."""

    def __init__(
        self,
        han: SimHan,
        flows: Sequence[Flow],
        *,
        on_hub: OnHub | None = None,
        wall_ms: Callable[[], int] = lambda: time.time_ns() // 1_000_000,
    ) -> None:
        unknown = [str(f.ieee) for f in flows if f.ieee not in han.devices]
        if unknown:
            raise ValueError(f"SimTraffic: no simulated device {', '.join(unknown)}")
        self.han = han
        self.flows = tuple(flows)
        self.on_hub = on_hub
        self._wall_ms = wall_ms
        self.schedule: TrafficSchedule | None = None
        self.sent: dict[str, int] = {kind: 0 for kind in KINDS}
        self.not_sent = 0  # due while the device was off, or the hub's with no hub to send it
        self._task: asyncio.Task[None] | None = None
        self._hub_sends: set[asyncio.Task[Any]] = set()

    def start(self) -> None:
        if self._task is None:
            loop = asyncio.get_running_loop()
            self.schedule = TrafficSchedule(self.flows, loop.time())
            self._task = loop.create_task(self._run(self.schedule), name="sim-traffic")

    async def stop(self) -> None:
        tasks = [*self._hub_sends, *([self._task] if self._task is not None else [])]
        self._task = None
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _run(self, schedule: TrafficSchedule) -> None:
        loop = asyncio.get_running_loop()
        while True:
            when = schedule.get_timer()
            if when is None:
                return
            delay = when - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            for emit in schedule.handle_timer(loop.time()):
                self._emit(emit)

    def _emit(self, emit: Emit) -> None:
        flow = emit.flow
        if flow.kind in HUB_KINDS:
            if self.on_hub is None:
                self.not_sent += 1
                return
            task: asyncio.Task[Any] = asyncio.get_running_loop().create_task(self.on_hub(flow.kind, flow.ieee, emit.seq, flow.size))
            self._hub_sends.add(task)
            task.add_done_callback(self._hub_done)
            self.sent[flow.kind] += 1
            return
        device = self.han.devices[flow.ieee]
        if not device.online:
            self.not_sent += 1
            return
        sent_at = self._wall_ms()
        manufacturer = device.spec.manufacturer_code or 0
        device.send_zcl_frame(
            CLUSTER_METERING,
            lambda tsn: metering_report(emit.seq, sent_at, flow.size, tsn=tsn, manufacturer=manufacturer),
        )
        self.sent["metering"] += 1

    def _hub_done(self, task: asyncio.Task[Any]) -> None:
        self._hub_sends.discard(task)
        if not task.cancelled() and task.exception() is not None:
            LOGGER.error("sim traffic: the hub's sender failed", exc_info=task.exception())
