"""How long the simulated air, UART and flash take: `LinkModel`, in ONE place.

Theory of operation
===================

`LinkModel.instant()` makes every *delay* zero: frames arrive as soon as the event loop
runs the receiving task. Loss, MAC retries and the indirect (sleepy) queue still apply,
because those are behaviour, not time. `LinkModel.realistic(scale=1.0, uart_baud=...)`
times every frame from the parameters below; ``scale`` multiplies every time the model
produces (``scale=0.01`` runs a demo 100x faster), and ``uart_baud=None`` leaves the
UART out when a real emulated UART (the EZSP or ZNP emulator) is in the path.

What a unicast costs, as modelled (all 2.4 GHz O-QPSK, IEEE 802.15.4-2006):

* Air: 250 kbit/s = 32 us per byte; every PSDU also carries SHR+PHR (4 preamble,
  1 SFD, 1 length = 6 bytes), so ``frame_air_time(127) = 133 * 32 us = 4.256 ms``.
* Data frame PSDU = APS payload + 45 bytes: MAC header 9 + FCS 2 (short addresses,
  PAN id compression), NWK header 8, NWK auxiliary security header 14 + MIC 4, APS
  header 8. aMaxPHYPacketSize 127 leaves 82 bytes of APS payload (73 with APS
  security: auxiliary header 5 + MIC 4). A longer unicast goes by APS fragmentation
  (aps_fragments.py, run by han.py): blocks of 80 (71) bytes behind a 2-byte extended
  header, ``aps_window`` blocks per APS ack, missing blocks resent up to
  ``aps_max_frame_retries`` times; the only APS retries modelled (see Loss).
  ``data_psdus`` (the benchmark's bound) still counts plain 82-byte pieces.
* One MAC exchange: CSMA-CA random backoff (unit 20 symbols = 320 us, BE from
  macMinBE=3 up to macMaxBE=5; the *average* first backoff is (2^3-1)/2 * 320 us =
  1.12 ms), one CCA (8 symbols = 128 us), the frame, aTurnaroundTime (12 symbols =
  192 us), the MAC ack (5-byte PSDU, 11 bytes on air = 352 us).
* Loss: each transmission attempt is lost with the device's ``loss`` probability
  (seeded `random.Random`); a lost attempt costs the frame plus macAckWaitDuration
  (54 symbols = 864 us) and is retried by the MAC up to macMaxFrameRetries=3 times.
  After 4 lost attempts the frame is lost; for a coordinator's unicast that surfaces
  as ``DeliveryResult(ok=False, reason="no ack")``. We do NOT model APS-level
  retries (apscMaxFrameRetries): a real stack would retry 3 more times after
  apsAckWaitDuration, which hides loss behind seconds of delay; here the loss
  surfaces to the caller instead, which is what the OTA server must cope with.
* APS ack: every unicast is APS-acked (zigpy radios send unicasts with APS retry on);
  the ack is a 45-byte PSDU (MAC 11, NWK 8, security 18, APS ack header 8) sent back
  with its own MAC exchange, and may itself be lost (then the data WAS delivered but
  the sender sees "no ack": the duplicate case).
* Shared channel: all devices and the coordinator share one channel. `Channel` keeps
  a busy-until time; every exchange (frame + turnaround + MAC ack) is serialised on
  it, so 50 devices contending queue behind each other. Backoff and CCA are idle
  listening and do not occupy the channel. Not modelled: collisions, hidden nodes,
  CCA failure (macMaxCSMABackoffs), routing over more than one hop, source routes.
* UART (coordinator <-> host): ``uart_baud`` bits/s, 10 bits per byte (8N1), plus
  ``uart_frame_overhead`` bytes per frame (EZSP/ASH or MT headers, callbacks, the
  send confirmation); one frame for a downlink request plus one (overhead only) for
  its confirmation, one frame for an uplink indication. TX and RX directions are
  each serialised.
* Flash: the device writes each received block to flash before asking for the next:
  ``flash_time_per_64`` seconds per 64 bytes (default 3 ms: external SPI flash page
  programs take 0.7-3 ms; internal flash with amortised page erase is faster).
* Indirect (sleepy end devices): the parent keeps a frame for
  macTransactionPersistenceTime = 7.68 s (ZigBee PRO); the frame goes out only when
  the device polls (MAC Data Request: 12-byte PSDU, FCF 2, seq 1, PAN 2, dst 2,
  src 2, command 1, FCS 2; acked with frame-pending set), then the data frame is
  sent directly. Older frames are dropped: ``DeliveryResult(ok=False,
  reason="indirect timeout")``. The persistence time is a timeout, not a delay, so
  `instant()` keeps it (7.68 s unless overridden) instead of zeroing it.

`lower_bound_seconds` adds these up for one image transfer (see its docstring); the
per-frame functions are public so a benchmark can build its own bound.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
import math
import random
from typing import Any

__all__ = [
    "Channel",
    "LinkModel",
    "ZCL_BLOCK_REQUEST_LEN",
    "ZCL_BLOCK_RESPONSE_OVERHEAD",
    "ZCL_PAGE_REQUEST_LEN",
    "ZCL_QUERY_REQUEST_LEN",
    "ZCL_QUERY_RESPONSE_LEN",
    "ZCL_UPGRADE_END_REQUEST_LEN",
    "ZCL_UPGRADE_END_RESPONSE_LEN",
]

# APS payload sizes of the OTA commands (ZCL header 3 bytes + fields), ZCL §11.13.
ZCL_QUERY_REQUEST_LEN = 3 + 1 + 2 + 2 + 4 + 2  # with hardware version: 14
ZCL_QUERY_RESPONSE_LEN = 3 + 1 + 2 + 2 + 4 + 4  # SUCCESS: 16
ZCL_BLOCK_REQUEST_LEN = 3 + 1 + 2 + 2 + 4 + 4 + 1  # 17 (+2 with MinimumBlockPeriod)
ZCL_PAGE_REQUEST_LEN = 3 + 1 + 2 + 2 + 4 + 4 + 1 + 2 + 2  # 21
ZCL_BLOCK_RESPONSE_OVERHEAD = 3 + 1 + 2 + 2 + 4 + 4 + 1  # 17 + data
ZCL_UPGRADE_END_REQUEST_LEN = 3 + 1 + 2 + 2 + 4  # 12
ZCL_UPGRADE_END_RESPONSE_LEN = 3 + 2 + 2 + 4 + 4 + 4  # 19


class Channel:
    """One shared resource (the radio channel, or one UART direction) in loop time.

    Pure bookkeeping: `reserve` books ``duration`` seconds starting no earlier than
    ``ready_at`` and no earlier than the end of the previous booking.
    """

    def __init__(self) -> None:
        self.busy_until = 0.0
        self.busy_total = 0.0

    def reserve(self, ready_at: float, duration: float) -> float:
        start = max(ready_at, self.busy_until)
        self.busy_until = start + duration
        self.busy_total += duration
        return start


@dataclass(frozen=True)
class MacAttempt:
    """The outcome of sending one PSDU with MAC retries (see `LinkModel.mac_transmit`)."""

    delivered: bool
    end: float  # loop time when the sender knows the outcome
    attempts: int


@dataclass(frozen=True)
class LinkModel:
    """Timing parameters and the arithmetic on them. Times in seconds, sizes in bytes."""

    timed: bool = False
    scale: float = 1.0

    # 802.15.4 PHY/MAC (2.4 GHz O-QPSK)
    byte_time: float = 32e-6
    phy_overhead: int = 6  # SHR (preamble 4 + SFD 1) + PHR 1
    max_psdu: int = 127  # aMaxPHYPacketSize
    turnaround: float = 192e-6  # aTurnaroundTime, 12 symbols
    backoff_unit: float = 320e-6  # aUnitBackoffPeriod, 20 symbols
    mac_min_be: int = 3
    mac_max_be: int = 5
    cca_time: float = 128e-6  # 8 symbols
    mac_ack_psdu: int = 5
    mac_ack_wait: float = 864e-6  # macAckWaitDuration, 54 symbols
    mac_max_frame_retries: int = 3

    # Zigbee frame overheads inside the PSDU
    mac_overhead: int = 11  # header 9 + FCS 2
    nwk_overhead: int = 8
    nwk_security_overhead: int = 18  # aux header 14 + MIC 4
    aps_overhead: int = 8
    aps_ack_psdu: int = 45
    # APS security (link key): auxiliary header (security control 1, frame counter 4)
    # and the 4-byte MIC, inside the APS frame.
    aps_security_overhead: int = 9

    # APS fragmentation (Zigbee 2.2.8.4.5): apsMaxWindowSize blocks per ack (1..8;
    # Z-Stack's and EmberZNet's default is 1), resent up to apscMaxFrameRetries times.
    aps_window: int = 1
    aps_max_frame_retries: int = 3
    data_request_psdu: int = 12

    # Coordinator UART
    uart_baud: int | None = 115200
    uart_bits_per_byte: int = 10
    uart_frame_overhead: int = 30

    # Device flash
    flash_time_per_64: float = 3e-3

    # Indirect transmission (a timeout: kept by instant())
    indirect_persistence: float = 7.68

    # -- construction ----------------------------------------------------------------

    @classmethod
    def instant(cls, **overrides: Any) -> LinkModel:
        """Every delay zero; loss, retries and the indirect queue still apply."""
        return cls(timed=False, **overrides)

    @classmethod
    def realistic(cls, scale: float = 1.0, uart_baud: int | None = 115200, **overrides: Any) -> LinkModel:
        if not (scale > 0 and math.isfinite(scale)):
            raise ValueError(f"LinkModel.realistic: scale={scale!r} must be a finite number > 0")
        return cls(timed=True, scale=scale, uart_baud=uart_baud, **overrides)

    def __post_init__(self) -> None:
        if not 1 <= self.aps_window <= 8:
            raise ValueError(f"LinkModel: aps_window={self.aps_window} must be 1..8 (apsMaxWindowSize)")

    def replace(self, **changes: Any) -> LinkModel:
        return dataclasses.replace(self, **changes)

    @property
    def is_instant(self) -> bool:
        return not self.timed

    def _t(self, seconds: float) -> float:
        """A physical delay as the simulation spends it (zero when instant)."""
        return seconds * self.scale if self.timed else 0.0

    # -- frame sizes -----------------------------------------------------------------

    @property
    def data_overhead(self) -> int:
        return self.mac_overhead + self.nwk_overhead + self.nwk_security_overhead + self.aps_overhead

    @property
    def max_aps_payload(self) -> int:
        return self.max_psdu - self.data_overhead  # 82

    def frame_capacity(self, aps_secured: bool) -> int:
        """The largest ASDU one frame carries (73 APS-secured); beyond it, fragments."""
        return self.max_aps_payload - (self.aps_security_overhead if aps_secured else 0)

    def fragment_part_size(self, aps_secured: bool) -> int:
        """ASDU bytes per fragment: the frame less the 2-byte extended header."""
        return self.frame_capacity(aps_secured) - 2

    def fragment_psdu(self, part_len: int, aps_secured: bool) -> int:
        return self.data_overhead + 2 + part_len + (self.aps_security_overhead if aps_secured else 0)

    @property
    def fragment_ack_psdu(self) -> int:
        """An APS ack of a window: the extended header and its ack bitfield added."""
        return self.aps_ack_psdu + 3

    def data_psdus(self, aps_payload_len: int) -> list[int]:
        """PSDU lengths of the frame(s) carrying ``aps_payload_len`` bytes (APS fragments)."""
        if aps_payload_len <= self.max_aps_payload:
            return [aps_payload_len + self.data_overhead]
        full, rest = divmod(aps_payload_len, self.max_aps_payload)
        sizes = [self.max_psdu] * full
        if rest:
            sizes.append(rest + self.data_overhead)
        return sizes

    # -- per-frame times (averages; scaled; zero when instant) -------------------------

    def frame_air_time(self, psdu_len: int) -> float:
        """Air time of one PSDU of ``psdu_len`` bytes, SHR and PHR included."""
        return self._t((psdu_len + self.phy_overhead) * self.byte_time)

    @property
    def average_backoff(self) -> float:
        return self._t((2**self.mac_min_be - 1) / 2 * self.backoff_unit)

    def exchange_busy_time(self, psdu_len: int) -> float:
        """Channel time of one successful exchange: frame + turnaround + MAC ack."""
        return self.frame_air_time(psdu_len) + self._t(self.turnaround) + self.frame_air_time(self.mac_ack_psdu)

    def mac_exchange_time(self, psdu_len: int) -> float:
        """Average time of one successful MAC exchange: backoff + CCA + busy time."""
        return self.average_backoff + self._t(self.cca_time) + self.exchange_busy_time(psdu_len)

    def uart_time(self, payload_len: int) -> float:
        """One host<->NCP frame carrying ``payload_len`` bytes (0 without a UART)."""
        if self.uart_baud is None:
            return 0.0
        return self._t((payload_len + self.uart_frame_overhead) * self.uart_bits_per_byte / self.uart_baud)

    def unicast_air_time(self, payload_len: int) -> float:
        """Data frame(s) and the APS ack, each with its MAC exchange (no UART)."""
        return sum(self.mac_exchange_time(p) for p in self.data_psdus(payload_len)) + self.mac_exchange_time(
            self.aps_ack_psdu
        )

    def downlink_time(self, payload_len: int) -> float:
        """Host hands a unicast to the coordinator until the host has its confirmation."""
        return self.uart_time(payload_len) + self.unicast_air_time(payload_len) + self.uart_time(0)

    def uplink_time(self, payload_len: int) -> float:
        """Device starts sending until the host has the frame (APS ack included)."""
        return self.unicast_air_time(payload_len) + self.uart_time(payload_len)

    def poll_time(self) -> float:
        """A sleepy device's MAC Data Request and its ack (before the data frame)."""
        return self.mac_exchange_time(self.data_request_psdu)

    def flash_time(self, nbytes: int) -> float:
        return self._t(nbytes / 64 * self.flash_time_per_64)

    @property
    def persistence(self) -> float:
        """How long the parent keeps an indirect frame (scaled, NOT zeroed when instant)."""
        return self.indirect_persistence * self.scale

    # -- the simulation's random version of an exchange ---------------------------------

    def mac_transmit(
        self, channel: Channel, now: float, psdu_len: int, loss: float, rng: random.Random
    ) -> MacAttempt:
        """Book one PSDU (with MAC retries) on ``channel`` from ``now``; draw loss from ``rng``.

        Returns whether it got through and the loop time the sender learns it. With an
        instant model nothing is booked and ``end == now``.
        """
        t = now
        for attempt in range(self.mac_max_frame_retries + 1):
            lost = loss > 0 and rng.random() < loss
            if self.timed:
                be = min(self.mac_min_be + attempt, self.mac_max_be)
                backoff = rng.randrange(2**be) * self.backoff_unit * self.scale
                ready = t + backoff + self.cca_time * self.scale
                if lost:
                    start = channel.reserve(ready, self.frame_air_time(psdu_len))
                    t = start + self.frame_air_time(psdu_len) + self._t(self.mac_ack_wait)
                else:
                    start = channel.reserve(ready, self.exchange_busy_time(psdu_len))
                    t = start + self.exchange_busy_time(psdu_len)
            if not lost:
                return MacAttempt(True, t, attempt + 1)
        return MacAttempt(False, t, self.mac_max_frame_retries + 1)

    # -- a bound for benchmarks --------------------------------------------------------

    def lower_bound_seconds(
        self,
        image_size: int,
        block_size: int,
        *,
        devices: int = 1,
        min_block_period_ms: int = 0,
        page_size: int | None = None,
        response_spacing_ms: int = 0,
        include_query: bool = True,
        include_upgrade_end: bool = True,
    ) -> float:
        """The least time this model allows to move one image to ``devices`` devices.

        Per device, in series: Query Next Image request and response; then for every
        block an Image Block Request uplink, the Image Block Response downlink and the
        device's flash write, or the MinimumBlockPeriod if longer (page mode: one Image
        Page Request per ``page_size`` bytes, then the responses back to back, at least
        ``response_spacing_ms`` apart); then Upgrade End Request and Response. All
        averages (average backoff, no loss, no retries, no server think time, no
        polling wait for sleepy devices). With several devices, the channel is shared:
        the bound is the larger of one device's serial time and the sum of all devices'
        channel busy time. Scaled like every other time; 0 when instant.
        """
        if image_size <= 0 or block_size <= 0:
            raise ValueError("lower_bound_seconds: image_size and block_size must be > 0")
        sizes = [block_size] * (image_size // block_size)
        if image_size % block_size:
            sizes.append(image_size % block_size)
        mbp = self._t(min_block_period_ms / 1000)

        def busy(payload: int) -> float:
            return sum(self.exchange_busy_time(p) for p in self.data_psdus(payload)) + self.exchange_busy_time(
                self.aps_ack_psdu
            )

        serial = 0.0
        air = 0.0
        if include_query:
            serial += self.uplink_time(ZCL_QUERY_REQUEST_LEN) + self.downlink_time(ZCL_QUERY_RESPONSE_LEN)
            air += busy(ZCL_QUERY_REQUEST_LEN) + busy(ZCL_QUERY_RESPONSE_LEN)
        if page_size is None:
            req_len = ZCL_BLOCK_REQUEST_LEN + (2 if min_block_period_ms else 0)
            for size in sizes:
                one = (
                    self.uplink_time(req_len)
                    + self.downlink_time(ZCL_BLOCK_RESPONSE_OVERHEAD + size)
                    + self.flash_time(size)
                )
                serial += max(one, mbp)
                air += busy(req_len) + busy(ZCL_BLOCK_RESPONSE_OVERHEAD + size)
        else:
            spacing = self._t(response_spacing_ms / 1000)
            n_pages = math.ceil(image_size / page_size)
            serial += n_pages * self.uplink_time(ZCL_PAGE_REQUEST_LEN)
            air += n_pages * busy(ZCL_PAGE_REQUEST_LEN)
            for size in sizes:
                serial += max(self.downlink_time(ZCL_BLOCK_RESPONSE_OVERHEAD + size), spacing)
                air += busy(ZCL_BLOCK_RESPONSE_OVERHEAD + size)
            serial += self.flash_time(image_size)
        if include_upgrade_end:
            serial += self.uplink_time(ZCL_UPGRADE_END_REQUEST_LEN) + self.downlink_time(ZCL_UPGRADE_END_RESPONSE_LEN)
            air += busy(ZCL_UPGRADE_END_REQUEST_LEN) + busy(ZCL_UPGRADE_END_RESPONSE_LEN)
        return max(serial, devices * air)
