"""A trial's figures, computed from its typed records (gateway.report.records).

Sans-I/O: records and the channel's capacity in, frozen figures out; no files, no
clock (the trial's time is its records' time), no HTML. Times in the series are
seconds after the trial's first record, so every chart shares one axis.

What each figure means, and what it is computed from:

- transfer time: the time the job spent in ``transferring`` (summed when a device
  downloaded again); bytes sent: the highest offset the device was sent; effective
  throughput: bytes sent / transfer time; share of the channel: that throughput over
  the coordinator's budget (``[ota] rate_bytes_per_s``, one channel's capacity).
- block size and mode: ``page`` when the device used Image Page Requests (the size
  is the block cap the session's page note names), else ``block``, the size being the
  first block served at offset 0 (the daemon's first progress record of a download).
- retries: Image Notify repeats, the daemon's nudges and downloads resumed or
  restarted; lost frames: frames the radio reported not delivered (the session's
  "not delivered" notes). The audit log has no record per block, so a block the
  device asked for twice is not counted (``TrialFigures.notes`` says so).
- WAIT_FOR_DATA: the WAIT_FOR_DATA answers sent and the request times they gave;
  page blocks the budget deferred are counted apart (a page has no WAIT_FOR_DATA).
- hold: time in ``held`` or ``scheduled``; activation latency: from the activation
  being sent (``activated``) to the device reporting the new version (``confirmed``).
- per trial, the HAN time used by OTA: ``ota_busy_s``, the time at least one transfer
  ran, and ``ota_airtime_s``, the bytes sent at the channel's capacity: the least
  air time those bytes took.
"""

from __future__ import annotations

import datetime as dt
import re
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from gateway.report.records import (
    FrameSent,
    GbcsRecord,
    ImageRef,
    JobAccepted,
    JobIdentity,
    Nudge,
    ProgressMark,
    SessionNote,
    StateChange,
    StoredJob,
    TrafficSample,
    TrialRecord,
)

HOLD_STATES = frozenset({"held", "scheduled"})
_PAGE_CAP = re.compile(r"in blocks of at most (\d+)")
_DEFERRED = re.compile(r"deferred ([0-9.]+) s")

# What an end (or current) state means for a trial, in the words of the report.
_OUTCOME = {
    "pending": "pending: the device has not queried yet",
    "transferring": "transferring",
    "held": "held: waiting for a CS06 Activate Firmware",
    "scheduled": "held: activation scheduled",
    "activated": "activation sent, not confirmed yet",
    "confirmed": "activated and confirmed",
    "failed": "failed",
    "cancelled": "cancelled",
    "superseded": "superseded: image discarded",
    "queued": "queued behind another job",
}

NOT_RECORDED = (
    "Retries count Image Notify repeats, nudges and resumed or restarted downloads; lost frames count frames "
    "the radio reported undelivered. The audit log has no record per block, so a block a device asked for "
    "again is not counted."
)


@dataclass(frozen=True)
class Period:
    """A stretch of one state, in seconds after the trial's start."""

    state: str
    start_s: float
    end_s: float


@dataclass(frozen=True)
class RateSegment:
    start_s: float
    end_s: float
    bytes_per_s: float


@dataclass(frozen=True)
class GbcsCode:
    step: str
    at: dt.datetime
    response_code: int | None
    alert_code: int | None
    accepted: bool | None
    message: str

    @property
    def alert_text(self) -> str | None:
        return None if self.alert_code is None else f"0x{self.alert_code:04X}"


@dataclass(frozen=True)
class DeviceFigures:
    job: int
    device: str
    kind: str
    priority: str | None
    image: ImageRef
    activation: str
    mode: str | None  # "block", "page" or None (no data served)
    block_size: int | None
    transfer_s: float
    bytes_sent: int
    throughput_bps: float | None
    channel_share: float | None
    retries: int
    lost_frames: int
    wait_for_data: int
    wait_for_data_s: float
    page_deferrals: int
    page_deferral_s: float
    hold_s: float
    activation_latency_s: float | None
    state: str
    reason: str | None
    outcome: str
    gbcs: tuple[GbcsCode, ...]
    periods: tuple[Period, ...]
    progress: tuple[tuple[float, float], ...]  # (seconds, percent)
    rate: tuple[RateSegment, ...]


@dataclass(frozen=True)
class TrafficPoint:
    t_s: float
    latency_s: float | None  # None: lost
    during_ota: bool
    kind: str


@dataclass(frozen=True)
class BackgroundFigures:
    samples: int
    lost: int
    median_latency_s: float | None
    median_with_ota_s: float | None
    median_without_ota_s: float | None
    points: tuple[TrafficPoint, ...]


@dataclass(frozen=True)
class TrialFigures:
    start: dt.datetime
    end: dt.datetime
    capacity_bps: float
    devices: tuple[DeviceFigures, ...]
    ota_busy_s: float
    ota_bytes: int
    ota_airtime_s: float
    ota_periods: tuple[tuple[float, float], ...]  # when at least one transfer ran
    throughput: tuple[RateSegment, ...]  # all devices together
    background: BackgroundFigures | None
    notes: tuple[str, ...] = field(default=(NOT_RECORDED,))

    @property
    def span_s(self) -> float:
        return (self.end - self.start).total_seconds()

    @property
    def ota_channel_share(self) -> float | None:
        """The share of the channel OTA took while it ran."""
        return None if self.ota_busy_s <= 0 else self.ota_airtime_s / self.ota_busy_s


class NoTrialData(ValueError):
    """Nothing to report on: the selection matched no job."""


# --------------------------------------------------------------------------- the computation


def compute_trial(
    records: Sequence[TrialRecord],
    *,
    capacity_bps: float,
    stored: Iterable[StoredJob] = (),
    jobs: Iterable[int] | None = None,
    since: dt.datetime | None = None,
    until: dt.datetime | None = None,
) -> TrialFigures:
    """The figures of the jobs selected (all when ``jobs`` is None) from records in [since, until]."""
    if capacity_bps <= 0:
        raise ValueError(f"the channel capacity must be positive, got {capacity_bps!r} B/s")
    wanted = None if jobs is None else set(jobs)
    window = [r for r in records if (since is None or r.at >= since) and (until is None or r.at <= until)]
    by_job: dict[int, list[TrialRecord]] = {}
    for r in window:
        job = getattr(r, "job", None)
        if job is not None and (wanted is None or job in wanted):
            by_job.setdefault(job, []).append(r)
    if not by_job:
        raise NoTrialData("no job has records in the selection")
    traffic = [r for r in window if isinstance(r, TrafficSample)]
    stamps = [r.at for rs in by_job.values() for r in rs] + [r.at for r in traffic]
    start, end = min(stamps), max(stamps)
    stored_by_id = {s.job: s for s in stored}
    devices = tuple(
        _device(job, by_job[job], stored_by_id.get(job), start, end, capacity_bps) for job in sorted(by_job)
    )
    ota_periods = _union([(p.start_s, p.end_s) for d in devices for p in d.periods if p.state == "transferring"])
    ota_bytes = sum(d.bytes_sent for d in devices)
    return TrialFigures(
        start=start,
        end=end,
        capacity_bps=capacity_bps,
        devices=devices,
        ota_busy_s=sum(b - a for a, b in ota_periods),
        ota_bytes=ota_bytes,
        ota_airtime_s=ota_bytes / capacity_bps,
        ota_periods=tuple(ota_periods),
        throughput=total_rate([s for d in devices for s in d.rate]),
        background=_background(traffic, start, ota_periods),
    )


def _device(
    job: int, records: list[TrialRecord], stored: StoredJob | None, start: dt.datetime, end: dt.datetime, capacity: float
) -> DeviceFigures:
    def rel(at: dt.datetime) -> float:
        return (at - start).total_seconds()

    accepted = next((r for r in records if isinstance(r, JobAccepted)), None)
    changes = [r for r in records if isinstance(r, StateChange)]
    progress = [r for r in records if isinstance(r, ProgressMark)]
    notes = [r for r in records if isinstance(r, SessionNote)]
    sent = [r for r in records if isinstance(r, FrameSent)]
    identity = _identity(job, accepted, stored)
    size = identity.image.size

    # States: from acceptance (pending) or, for a job accepted before the window, from
    # the window's start in the first change's old state; to the window's end.
    periods: list[Period] = []
    state = "pending" if accepted is not None else (changes[0].old if changes else (stored.state if stored else "pending"))
    since = rel(accepted.at) if accepted is not None else 0.0
    reason = None
    for c in changes:
        t = rel(c.at)
        if t > since:
            periods.append(Period(state, since, t))
        state, since, reason = c.new, t, c.reason
    periods.append(Period(state, since, max(since, rel(end))))
    if not changes and stored is not None:
        state, reason = stored.state, stored.reason

    # Progress: every offset we know with its time, in percent of the image.
    marks = sorted(
        [(rel(p.at), p.offset) for p in progress]
        + [(rel(c.at), c.offset) for c in changes if c.offset is not None]
    )
    bytes_sent = max((o for _, o in marks), default=0)
    curve = tuple((t, 100.0 * o / size) if size else (t, 0.0) for t, o in marks)
    rate = tuple(
        RateSegment(t0, t1, (o1 - o0) / (t1 - t0)) for (t0, o0), (t1, o1) in zip(marks, marks[1:]) if t1 > t0 and o1 > o0
    )

    transfer_s = sum(p.end_s - p.start_s for p in periods if p.state == "transferring")
    throughput = bytes_sent / transfer_s if transfer_s > 0 and bytes_sent else None
    mode, block = _block_mode(notes, progress)
    wfd = [s for s in sent if s.command == "SendWaitForData"]
    deferrals = [n for n in notes if n.kind == "pacing" and _DEFERRED.search(n.message)]
    notifies = sum(1 for s in sent if s.command == "SendImageNotify")
    restarts = sum(1 for n in notes if n.kind == "resume") + max(0, sum(1 for n in notes if n.kind == "first_block") - 1)
    nudges = sum(1 for r in records if isinstance(r, Nudge))
    lost = sum(1 for n in notes if "not delivered" in n.message)

    activated = next((c for c in changes if c.new == "activated"), None)
    confirmed = next((c for c in changes if c.new == "confirmed"), None)
    latency = None if activated is None or confirmed is None else (confirmed.at - activated.at).total_seconds()
    outcome = _OUTCOME.get(state, state)
    if state in ("failed", "cancelled") and reason:
        outcome = f"{outcome}: {reason}"
    gbcs = tuple(
        GbcsCode(r.step, r.at, r.response_code, r.alert_code, r.accepted, r.message)
        for r in records
        if isinstance(r, GbcsRecord)
    )
    return DeviceFigures(
        job=job,
        device=identity.device,
        kind=identity.kind,
        priority=identity.priority,
        image=identity.image,
        activation=identity.activation,
        mode=mode,
        block_size=block,
        transfer_s=transfer_s,
        bytes_sent=bytes_sent,
        throughput_bps=throughput,
        channel_share=None if throughput is None else throughput / capacity,
        retries=max(0, notifies - 1) + nudges + restarts,
        lost_frames=lost,
        wait_for_data=len(wfd),
        wait_for_data_s=float(sum(s.delay_s or 0 for s in wfd)),
        page_deferrals=len(deferrals),
        page_deferral_s=sum(_deferred_s(n.message) for n in deferrals),
        hold_s=sum(p.end_s - p.start_s for p in periods if p.state in HOLD_STATES),
        activation_latency_s=latency,
        state=state,
        reason=reason,
        outcome=outcome,
        gbcs=gbcs,
        periods=tuple(periods),
        progress=curve,
        rate=rate,
    )


def _identity(job: int, accepted: JobAccepted | None, stored: StoredJob | None) -> JobIdentity:
    if accepted is not None:
        return accepted.identity
    if stored is not None:
        return stored.identity
    raise NoTrialData(
        f"job {job}: its job.accepted record is outside the selection and the state store does not have it; "
        "widen --since, or give --state-dir the directory whose store holds it"
    )


def _block_mode(notes: list[SessionNote], progress: list[ProgressMark]) -> tuple[str | None, int | None]:
    for n in notes:
        if n.kind == "page":
            found = _PAGE_CAP.search(n.message)
            return "page", int(found.group(1)) if found else None
    firsts = [n for n in notes if n.kind == "first_block"]
    if not firsts:
        return (None, None) if not progress else ("block", None)
    after = [p for p in progress if p.seq > firsts[0].seq]
    return "block", after[0].offset if after else None


def _deferred_s(message: str) -> float:
    found = _DEFERRED.search(message)
    return 0.0 if found is None else float(found.group(1))


def _union(spans: list[tuple[float, float]]) -> list[tuple[float, float]]:
    out: list[tuple[float, float]] = []
    for a, b in sorted(spans):
        if out and a <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], b))
        else:
            out.append((a, b))
    return out


def total_rate(segments: Sequence[RateSegment]) -> tuple[RateSegment, ...]:
    """The sum of piecewise-constant rates: one segment per interval between breakpoints."""
    points = sorted({s.start_s for s in segments} | {s.end_s for s in segments})
    out: list[RateSegment] = []
    for a, b in zip(points, points[1:]):
        total = sum(s.bytes_per_s for s in segments if s.start_s <= a and s.end_s >= b)
        if out and out[-1].bytes_per_s == total and out[-1].end_s == a:
            out[-1] = RateSegment(out[-1].start_s, b, total)
        else:
            out.append(RateSegment(a, b, total))
    return tuple(out)


def _background(samples: list[TrafficSample], start: dt.datetime, ota: list[tuple[float, float]]) -> BackgroundFigures | None:
    if not samples:
        return None
    points = []
    for s in samples:
        t = (s.at - start).total_seconds()
        points.append(TrafficPoint(t, s.latency_s, any(a <= t <= b for a, b in ota), s.kind))

    def median(values: list[float]) -> float | None:
        return statistics.median(values) if values else None

    delivered = [p for p in points if p.latency_s is not None]
    return BackgroundFigures(
        samples=len(points),
        lost=len(points) - len(delivered),
        median_latency_s=median([p.latency_s for p in delivered if p.latency_s is not None]),
        median_with_ota_s=median([p.latency_s for p in delivered if p.during_ota and p.latency_s is not None]),
        median_without_ota_s=median([p.latency_s for p in delivered if not p.during_ota and p.latency_s is not None]),
        points=tuple(points),
    )
