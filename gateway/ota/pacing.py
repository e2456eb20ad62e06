"""A shared airtime budget for the OTA sessions of one coordinator (sans-I/O).

Theory of operation
-------------------
One radio serves every device on the bench, so one ``Pacer`` is shared by all the
sessions of a coordinator. Before a session sends an Image Block Response it asks
``grant(device_key, nbytes, now)``: 0.0 means "send it now" (the budget has been
spent), anything else is the number of seconds until it would be allowed, which the
session turns into WAIT_FOR_DATA (for a block request) or a deferred page block.

The budget is a token bucket of ``bytes_per_s`` holding at most ``burst_bytes``.
The driver also reports ``sent_started(now)`` / ``sent_finished(now)`` around each
frame it hands to the radio; while ``max_inflight`` frames are waiting for the
radio, nothing new is granted, however many tokens there are.

Fairness: reservations in arrival order
~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~
A plain bucket hands the budget to whoever asks first once tokens are back, and a
device that polls quickly (or ignores WAIT_FOR_DATA) would starve the others. So a
refusal is also a *reservation*: the refused bytes are charged at once (the bucket
may go negative, a debt), and the device is told to come back when the debt ahead
of it and its own share have been paid off. When it comes back at or after that
time it is granted without a second charge; if it comes back early it is only told
the remaining wait, without being charged again or losing its place. Because every
refused device is charged on arrival, each later device queues behind all earlier
ones: the budget is served first come, first served, and a greedy device cannot
jump the queue. This is the virtual-scheduling form of GCRA (ITU-T I.371).

A reservation not claimed within ``reservation_grace_s`` of its time is dropped
(the device gave up or went elsewhere); its bytes stay spent, which only costs
the others a little airtime and never lets the budget be exceeded.

Frames waiting on the radio are not queued in order: a device refused only because
``max_inflight`` frames are in flight is told to retry after ``inflight_retry_s``
(its reservation, if any, is kept). The radio drains in milliseconds, so this only
matters under bursts.

Invariant (tested): the bytes granted up to any time t never exceed
``burst_bytes + bytes_per_s * (t - t0)``, t0 being the pacer's first use. A
reservation becomes due exactly when the budget has paid for every byte charged up
to and including it, and reservations fall due in the order they were made.
"""

from __future__ import annotations

import math
from collections.abc import Hashable
from dataclasses import dataclass

# Waits shorter than this are float rounding, not pacing.
_EPSILON_S = 1e-9


@dataclass
class _Reservation:
    ready_at: float
    expires_at: float


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
        ):
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be a positive number of seconds, not {value!r}")
        self.bytes_per_s = float(bytes_per_s)
        self.burst_bytes = burst_bytes
        self.max_inflight = max_inflight
        self.reservation_grace_s = float(reservation_grace_s)
        self.inflight_retry_s = float(inflight_retry_s)
        self.active_window_s = float(active_window_s)
        self._tokens = float(burst_bytes)
        self._refilled_at: float | None = None
        self._inflight = 0
        self._reservations: dict[Hashable, _Reservation] = {}
        self._last_seen: dict[Hashable, float] = {}

    # ------------------------------------------------------------------ queries

    @property
    def inflight(self) -> int:
        return self._inflight

    def tokens(self, now: float) -> float:
        """The bytes available at ``now`` (negative while reservations are being paid off)."""
        self._refill(now)
        return self._tokens

    def reserved(self, device_key: Hashable) -> bool:
        return device_key in self._reservations

    def active_devices(self, now: float) -> int:
        """Devices that asked for budget within the last ``active_window_s``."""
        self._prune(now)
        return len(self._last_seen)

    # ------------------------------------------------------------------ the budget

    def grant(self, device_key: Hashable, nbytes: int, now: float) -> float:
        """0.0 (and the bytes are spent) when ``device_key`` may send ``nbytes`` now,
        else the seconds until it may (its place is reserved; see the module doc)."""
        if nbytes < 0:
            raise ValueError(f"nbytes must not be negative, not {nbytes}")
        self._refill(now)
        self._prune(now)
        self._last_seen[device_key] = now
        saturated = self._inflight >= self.max_inflight

        reservation = self._reservations.get(device_key)
        if reservation is not None:
            if reservation.ready_at - now > _EPSILON_S:
                return reservation.ready_at - now
            if saturated:
                reservation.expires_at = now + self.inflight_retry_s + self.reservation_grace_s
                return self.inflight_retry_s
            del self._reservations[device_key]
            return 0.0

        if not saturated and self._tokens >= nbytes:
            self._tokens -= nbytes
            return 0.0

        # Refused: charge now, and reserve the time at which the debt is paid off.
        self._tokens -= nbytes
        wait = max(0.0, -self._tokens) / self.bytes_per_s
        if saturated:
            wait = max(wait, self.inflight_retry_s)
        if wait <= _EPSILON_S:
            return 0.0
        ready_at = now + wait
        self._reservations[device_key] = _Reservation(ready_at, ready_at + self.reservation_grace_s)
        return wait

    def suggested_period_ms(self, device_key: Hashable, nbytes: int, now: float) -> int:
        """A MinimumBlockPeriod (ms) at which every active device's blocks of
        ``nbytes`` fit the budget: the period of a fair share, as a u16."""
        devices = max(1, self.active_devices(now))
        if device_key not in self._last_seen:
            devices += 1
        period = 1000.0 * nbytes * devices / self.bytes_per_s
        return min(0xFFFF, max(0, math.ceil(period)))

    def sent_started(self, now: float) -> None:
        """The driver handed a frame to the radio."""
        self._refill(now)
        self._inflight += 1

    def sent_finished(self, now: float) -> None:
        """The radio is done with a frame (sent, failed or timed out).

        An unmatched call is clamped at zero rather than raised: the driver calls
        this from cleanup paths, and a miscount must not stop the radio loop.
        """
        self._refill(now)
        self._inflight = max(0, self._inflight - 1)

    def forget(self, device_key: Hashable) -> None:
        """Drop a device's reservation and activity (its session ended).

        The bytes of a dropped reservation stay spent."""
        self._reservations.pop(device_key, None)
        self._last_seen.pop(device_key, None)

    # ------------------------------------------------------------------ internals

    def _refill(self, now: float) -> None:
        if self._refilled_at is None:
            self._refilled_at = now
            return
        elapsed = now - self._refilled_at
        if elapsed > 0:
            self._tokens = min(float(self.burst_bytes), self._tokens + elapsed * self.bytes_per_s)
            self._refilled_at = now
        # A clock that steps back is ignored rather than refunded or charged.

    def _prune(self, now: float) -> None:
        for key in [k for k, r in self._reservations.items() if r.expires_at < now]:
            del self._reservations[key]
        horizon = now - self.active_window_s
        for key in [k for k, seen in self._last_seen.items() if seen < horizon and k not in self._reservations]:
            del self._last_seen[key]
