"""A shared airtime budget for the OTA sessions of one coordinator (sans-I/O).

Theory of operation
-------------------
One radio serves every device on the bench, so one ``Pacer`` is shared by all the
sessions of a coordinator. Before a session sends an Image Block Response it asks
``grant(device_key, nbytes, now)``: 0.0 means "send it now" (the bytes are spent),
anything else is the number of seconds until it would be allowed, which the session
turns into WAIT_FOR_DATA (for a block request) or a deferred page block.

The budget is a token bucket of ``bytes_per_s`` holding at most ``burst_bytes``.
Each session also reports ``sent_started(now)`` for every frame it returns and
``sent_finished(now)`` when that frame's send outcome comes back to it (the driver
hands every frame's outcome to its session, and never touches the pacer itself);
while ``max_inflight`` frames are waiting for the radio, nothing new is granted,
however many tokens there are.

Fairness
~~~~~~~~
Two failure modes of a plain bucket: whoever asks first after a refill wins, and a
device that polls fast (or ignores WAIT_FOR_DATA, whose delays are whole seconds)
takes nearly everything while polite devices sleep. Two rules prevent both:

1. **Equal shares.** Each device that asked within ``active_window_s`` has a share
   of ``bytes_per_s / active devices``, kept as a small bucket of its own (at most
   ``burst_bytes``). A device within its share is served from the budget as usual.
   A device over its share may only take surplus: it is granted only while the
   budget holds ``headroom`` bytes more than it asks for (``burst_bytes // 2``), so
   there is always a block's worth left for a device within its share, and it never
   queues. Alone on the radio, a device is always within its share (all of it).

2. **Reservations in arrival order.** When a device within its share is refused, the
   refusal is also a reservation: its bytes are charged at once (the budget may go
   negative, a debt) and it is told to come back when the debt ahead of it and its
   own bytes have been paid off. Coming back at or after that time it is granted
   without a second charge; coming back early it is told the rest, keeping its
   place. Every refused device is charged on arrival, so later ones queue behind
   earlier ones: first come, first served (the virtual scheduling form of GCRA,
   ITU-T I.371). Over-share devices take surplus only, so they never delay a
   reservation.

So with N devices saturating, each gets about 1/N; a greedy device gets its share
plus whatever the others leave; and a device within its share is never starved: it
is at most N reservations from its turn. The session also suggests each refused
device a MinimumBlockPeriod a little slower than its fair share
(``suggested_period_ms``, ``SHARE_SLACK``), which clients that honour it (Silicon
Labs' ota-client does) follow, and so rarely meet a refusal at all.

A reservation not claimed within ``reservation_grace_s`` of its time is dropped (the
device gave up or went elsewhere); its bytes stay spent, which costs the others a
little airtime and never lets the budget be exceeded. Frames waiting on the radio
are not queued in order: a device refused only because ``max_inflight`` frames are
in flight is told to retry after ``inflight_retry_s`` (keeping any reservation).

Priorities
~~~~~~~~~~
Each grant names the asking session's priority (``gateway.ota.priority``). The equal
shares of rule 1 are shares among the devices of the highest priority that asked
within ``active_window_s``: those are served and queued exactly as above, as if the
others were not there. A device below that priority is background: it takes surplus
only, like an over-share device (the budget must hold ``headroom`` bytes more than it
asks), never holds a reservation, and all background devices together take at most
``background_share`` of the budget (a bucket of their own) and a quarter of
``max_inflight``, and a refused one is told to come back no sooner than
``background_retry_s`` (every refusal is a request and an answer on the air). The budget is the channel's capacity: surplus alone would let the
bulk fill the channel, and the urgent device's every block would then queue behind
theirs on the radio (measured in bench/scenarios.py ``priority_under_bulk``: nine
times slower with 20 bulk devices). So when the budget is short, higher priorities
are served first and lower ones are answered WAIT_FOR_DATA with a delay; once no
higher priority is active, the others share the budget as before.

Pauses
~~~~~~
``pause(now, until)`` stops every grant (a traffic window closed, ``gateway.ota.windows``):
each request is told to come back when the pause ends (``until``, monotonic seconds, or
``pause_retry_s`` if not known), at most ``pause_retry_s`` ahead so that the device keeps
asking and no stall timeout runs out. ``unpause()`` ends it. Nothing is spent meanwhile.

Invariant (tested): the bytes granted up to any time t never exceed
``burst_bytes + bytes_per_s * (t - t0)``, t0 being the pacer's first use.
"""

from __future__ import annotations

import math
from collections.abc import Hashable
from dataclasses import dataclass

# Waits and byte counts smaller than these are float rounding, not pacing (a bucket
# refilled to 62.99999999999999 holds a 63-byte block).
_EPSILON_S = 1e-9
_EPSILON_BYTES = 1e-6

# The suggested MinimumBlockPeriod asks for 1/1.25 = 80 % of a fair share. Run at
# exactly the budget, jitter makes refusals frequent, and each costs the device at
# least a whole second (WAIT_FOR_DATA's unit); in simulation (tests/gateway/ota/test_ota_pacing.py)
# 1.25 gave six saturating devices more throughput than 1.0 or 1.5.
SHARE_SLACK = 1.25


@dataclass
class _Device:
    """One device's share: its own small bucket, and its reservation if it has one."""

    allowance: float
    refilled_at: float
    last_seen: float
    ready_at: float | None = None  # a reservation: granted at or after this time
    expires_at: float = 0.0
    priority: int = 0


class Pacer:
    """Token bucket over the radio's OTA budget, shared by all sessions of a coordinator."""

    def __init__(
        self,
        bytes_per_s: float,
        burst_bytes: int,
        max_inflight: int,
        *,
        reservation_grace_s: float = 10.0,
        inflight_retry_s: float = 0.25,
        active_window_s: float = 30.0,
        pause_retry_s: float = 30.0,
        background_share: float = 0.25,
        background_retry_s: float = 4.0,
    ) -> None:
        if not (isinstance(bytes_per_s, (int, float)) and math.isfinite(bytes_per_s) and bytes_per_s > 0):
            raise ValueError(f"bytes_per_s must be a positive number, not {bytes_per_s!r}")
        if not isinstance(burst_bytes, int) or burst_bytes < 1:
            raise ValueError(f"burst_bytes must be a positive integer, not {burst_bytes!r}")
        if not isinstance(max_inflight, int) or max_inflight < 1:
            raise ValueError(f"max_inflight must be a positive integer, not {max_inflight!r}")
        for name, value in (
            ("reservation_grace_s", reservation_grace_s),
            ("inflight_retry_s", inflight_retry_s),
            ("active_window_s", active_window_s),
            ("pause_retry_s", pause_retry_s),
            ("background_retry_s", background_retry_s),
        ):
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be a positive number of seconds, not {value!r}")
        self.bytes_per_s = float(bytes_per_s)
        self.burst_bytes = burst_bytes
        self.max_inflight = max_inflight
        self.reservation_grace_s = float(reservation_grace_s)
        self.inflight_retry_s = float(inflight_retry_s)
        self.active_window_s = float(active_window_s)
        self.pause_retry_s = float(pause_retry_s)
        #: The shortest wait a refused background device is given: each refusal is a
        #: request and an answer on the air the urgent device needs.
        self.background_retry_s = float(background_retry_s)
        if not (isinstance(background_share, (int, float)) and 0 < background_share <= 1):
            raise ValueError(f"background_share must be a share above 0 and at most 1, not {background_share!r}")
        #: Frames in flight at which background (lower-priority) devices are refused.
        self.background_inflight = max(1, max_inflight // 4)
        #: The background devices' own bucket: background_share of the budget, a quarter burst.
        self.background_bytes_per_s = self.bytes_per_s * float(background_share)
        self.background_burst = max(1, burst_bytes // 4)
        self._bg_tokens = float(self.background_burst)
        self._bg_refilled_at: float | None = None
        #: While paused: None, or when the pause ends (math.inf: not known).
        self._paused_until: float | None = None
        # Active devices per priority: the highest key is the class that shares the budget.
        self._by_priority: dict[int, int] = {}
        #: Bytes an over-share device must leave in the budget for the others.
        self.headroom = burst_bytes // 2
        self._tokens = float(burst_bytes)
        self._refilled_at: float | None = None
        self._inflight = 0
        self._devices: dict[Hashable, _Device] = {}
        # The earliest time at which _prune could drop a device or a reservation: the
        # scan over every device runs then, not on every grant (one per block served).
        self._next_prune = math.inf

    # ------------------------------------------------------------------ queries

    @property
    def inflight(self) -> int:
        return self._inflight

    def tokens(self, now: float) -> float:
        """The bytes available at ``now`` (negative while reservations are being paid off)."""
        self._refill(now)
        return self._tokens

    def reserved(self, device_key: Hashable) -> bool:
        device = self._devices.get(device_key)
        return device is not None and device.ready_at is not None

    def active_devices(self, now: float) -> int:
        """Devices that asked for budget within the last ``active_window_s``."""
        self._prune(now)
        return len(self._devices)

    def share(self, now: float, *, joining: bool = False) -> float:
        """Each active device's share of the budget, in bytes per second (the devices of
        the highest priority share it; see the module doc)."""
        self._prune(now)
        return self.bytes_per_s / max(1, self._top_count() + (1 if joining else 0))

    @property
    def paused(self) -> bool:
        return self._paused_until is not None

    def pause(self, now: float, until: float | None = None) -> None:
        """Grant nothing until ``unpause`` (or ``until``, monotonic seconds: then by itself)."""
        self._refill(now)
        self._paused_until = math.inf if until is None else float(until)

    def unpause(self) -> None:
        self._paused_until = None

    def top_priority(self, now: float) -> int | None:
        """The highest priority among the active devices, or None when none is."""
        self._prune(now)
        return max(self._by_priority) if self._by_priority else None

    # ------------------------------------------------------------------ the budget

    def grant(self, device_key: Hashable, nbytes: int, now: float, priority: int = 0) -> float:
        """0.0 (and the bytes are spent) when ``device_key`` (asking at ``priority``) may
        send ``nbytes`` now, else the seconds until it may (see the module doc for who
        waits how long)."""
        if nbytes < 0:
            raise ValueError(f"nbytes must not be negative, not {nbytes}")
        self._refill(now)
        self._prune(now)
        if self._paused_until is not None:
            if now < self._paused_until:
                return max(_EPSILON_S * 2, min(self._paused_until - now, self.pause_retry_s))
            self._paused_until = None
        device = self._devices.get(device_key)
        if device is None:
            device = self._devices[device_key] = _Device(float(self.burst_bytes), now, now, priority=priority)
            self._count(priority, +1)
        elif device.priority != priority:
            self._count(device.priority, -1)
            self._count(priority, +1)
            device.priority = priority
        device.last_seen = now
        # A new device, or a clock that stepped back, can bring the next scan forward.
        if now + self.active_window_s < self._next_prune:
            self._next_prune = now + self.active_window_s
        share = self.bytes_per_s / self._top_count()
        device.allowance = min(float(self.burst_bytes), device.allowance + max(0.0, now - device.refilled_at) * share)
        device.refilled_at = now
        saturated = self._inflight >= self.max_inflight
        if priority < max(self._by_priority):
            return self._background(device, nbytes)

        if device.ready_at is not None:  # a reservation: already charged
            if device.ready_at - now > _EPSILON_S:
                return device.ready_at - now
            if saturated:
                self._expire(device, now + self.inflight_retry_s + self.reservation_grace_s)
                return self.inflight_retry_s
            device.ready_at = None
            return 0.0

        if device.allowance + _EPSILON_BYTES >= nbytes:
            # Within its share: served, or queued in arrival order.
            self._spend(device, nbytes)
            wait = max(0.0, -self._tokens - _EPSILON_BYTES) / self.bytes_per_s
            if saturated:
                wait = max(wait, self.inflight_retry_s)
            if wait <= _EPSILON_S:
                return 0.0
            device.ready_at = now + wait
            self._expire(device, device.ready_at + self.reservation_grace_s)
            return wait

        # Over its share: surplus only, and no place in the queue.
        need = nbytes + self.headroom
        if not saturated and self._tokens + _EPSILON_BYTES >= need:
            self._spend(device, nbytes)
            return 0.0
        # Back within its share, or surplus enough: whichever comes first.
        wait = min((nbytes - device.allowance) / share, (need - self._tokens) / self.bytes_per_s)
        return max(wait, self.inflight_retry_s) if saturated else wait

    def _background(self, device: _Device, nbytes: int) -> float:
        """A device below the top priority: surplus only, no reservation (module doc)."""
        device.ready_at = None  # a reservation made while it was on top is given up
        need = min(nbytes + self.headroom, self.burst_bytes)
        if self._inflight >= self.background_inflight:
            return self.background_retry_s
        now = device.refilled_at
        if self._bg_refilled_at is not None and now > self._bg_refilled_at:
            rate = self.background_bytes_per_s
            self._bg_tokens = min(float(self.background_burst), self._bg_tokens + (now - self._bg_refilled_at) * rate)
        self._bg_refilled_at = now if self._bg_refilled_at is None else max(now, self._bg_refilled_at)
        bg_need = min(nbytes, self.background_burst)
        if self._tokens + _EPSILON_BYTES >= need and self._bg_tokens + _EPSILON_BYTES >= bg_need:
            self._spend(device, nbytes)
            self._bg_tokens -= nbytes
            return 0.0
        wait = max((need - self._tokens) / self.bytes_per_s, (bg_need - self._bg_tokens) / self.background_bytes_per_s)
        return max(self.background_retry_s, wait)

    def suggested_period_ms(self, device_key: Hashable, nbytes: int, now: float) -> int:
        """A MinimumBlockPeriod (ms) at which blocks of ``nbytes`` stay within the
        device's fair share with ``SHARE_SLACK`` to spare, as a u16."""
        share = self.share(now, joining=device_key not in self._devices)
        return min(0xFFFF, max(0, math.ceil(SHARE_SLACK * 1000.0 * nbytes / share)))

    def sent_started(self, now: float) -> None:
        """A session returned a frame for the radio."""
        self._refill(now)
        self._inflight += 1

    def sent_finished(self, now: float) -> None:
        """The radio is done with a frame (sent, failed or timed out).

        An unmatched call is clamped at zero rather than raised: outcomes also come
        from cleanup paths (a detach cancelling frames), and a miscount must not stop
        the radio loop.
        """
        self._refill(now)
        self._inflight = max(0, self._inflight - 1)

    def forget(self, device_key: Hashable) -> None:
        """Drop a device's share and reservation (its session ended). The bytes of a
        dropped reservation stay spent."""
        device = self._devices.pop(device_key, None)
        if device is not None:
            self._count(device.priority, -1)

    # ------------------------------------------------------------------ internals

    def _count(self, priority: int, delta: int) -> None:
        left = self._by_priority.get(priority, 0) + delta
        if left > 0:
            self._by_priority[priority] = left
        else:
            self._by_priority.pop(priority, None)

    def _top_count(self) -> int:
        return self._by_priority[max(self._by_priority)] if self._by_priority else 0

    def _spend(self, device: _Device, nbytes: int) -> None:
        self._tokens -= nbytes
        # Floored so that a device once over its share is not punished for ever.
        device.allowance = max(-float(self.burst_bytes), device.allowance - nbytes)

    def _refill(self, now: float) -> None:
        if self._refilled_at is None:
            self._refilled_at = now
            return
        elapsed = now - self._refilled_at
        if elapsed > 0:
            self._tokens = min(float(self.burst_bytes), self._tokens + elapsed * self.bytes_per_s)
            self._refilled_at = now
        # A clock that steps back is ignored rather than refunded or charged.

    def _expire(self, device: _Device, when: float) -> None:
        device.expires_at = when
        if when < self._next_prune:
            self._next_prune = when

    def _prune(self, now: float) -> None:
        if now < self._next_prune:
            return
        horizon = now - self.active_window_s
        for key in [k for k, d in self._devices.items() if d.last_seen < horizon and (d.ready_at is None or d.expires_at < now)]:
            self._count(self._devices.pop(key).priority, -1)
        next_prune = math.inf
        for device in self._devices.values():
            if device.ready_at is not None and device.expires_at < now:
                device.ready_at = None
            # A reservation is dropped after it expires; a device, after its window.
            due = device.expires_at if device.ready_at is not None else device.last_seen + self.active_window_s
            if due < next_prune:
                next_prune = due
        self._next_prune = next_prune
