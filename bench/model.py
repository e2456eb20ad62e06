"""Lower bounds and channel capacity, derived from the sim's `LinkModel` only.

Every time here is built from the public per-frame functions of
`radios.sim.link.LinkModel` (``mac_exchange_time``, ``exchange_busy_time``,
``uart_time``, ``data_psdus``, ``flash_time``), so the parameters stay in ONE
documented place (radios/sim/link.py). Nothing here runs the simulation.

Lower bound of one transfer (docs/benchmark.md, "Formulas"): the frames of the
protocol back to back, each MAC exchange at its *mean* backoff (no loss, no retries,
no contention, no server or device think time), from the moment the server is asked
to push until the device sends Upgrade End Request SUCCESS:

    Image Notify down   U(5) + X(5)
    Query up, answer    X(14) + U(14) + U(16) + X(16)
    block mode, per block of s bytes:
                        X(17) + U(17) + U(17 + s) + X(17 + s)  [+ F(s), not after the last]
    page mode, per page: X(21) + U(21)
                        + per block: max(spacing, U(17 + s) + X(17 + s))
                        [+ F(last block of the page), not after the last page]

X(n) is the MAC exchange of the frame(s) carrying an n-byte APS payload (mean
backoff + CCA + frame + turnaround + MAC ack, per fragment); U(n) one UART frame of
n bytes; F(s) the device's flash write of s bytes before its next request. APS acks
and the UART send confirmations are not on the critical path of the simulation
(radios/sim/han.py delivers a frame at the end of its MAC exchange and lets the
device carry on while the APS ack is still on air), so they are not in the bound.
``frames_only`` leaves out F (the literal "frames on air and UART" form).

Channel capacity: the best-case rate of back-to-back block exchanges on the one
channel, counting only what `Channel` books (frame + turnaround + MAC ack; backoff
and CCA are idle listening that another device can overlap): request, its APS ack,
response, its APS ack. The two UART directions are checked too; the smallest of the
three rates is the capacity.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

from radios.sim.link import (  # noqa: F401  (ZCL_BLOCK_RESPONSE_OVERHEAD is re-exported)
    ZCL_BLOCK_REQUEST_LEN,
    ZCL_BLOCK_RESPONSE_OVERHEAD,
    ZCL_PAGE_REQUEST_LEN,
    ZCL_QUERY_REQUEST_LEN,
    ZCL_QUERY_RESPONSE_LEN,
    LinkModel,
)

#: Image Notify, payload type 0 (jitter only): ZCL header 3 + type 1 + jitter 1.
ZCL_IMAGE_NOTIFY_MIN_LEN = 5


def _x(link: LinkModel, payload: int) -> float:
    """Mean MAC exchange time of the frame(s) carrying ``payload`` APS bytes."""
    return sum(link.mac_exchange_time(p) for p in link.data_psdus(payload))


def _busy(link: LinkModel, payload: int) -> float:
    """Channel time booked for those frame(s) (no backoff/CCA)."""
    return sum(link.exchange_busy_time(p) for p in link.data_psdus(payload))


def max_block(link: LinkModel, device_max_data_size: int) -> int:
    """The largest block the device accepts that still fits one unfragmented frame."""
    return max(1, min(device_max_data_size, link.max_aps_payload - ZCL_BLOCK_RESPONSE_OVERHEAD))


def blocks(size: int, block: int) -> list[int]:
    full, rest = divmod(size, block)
    return [block] * full + ([rest] if rest else [])


@dataclass(frozen=True)
class Bound:
    seconds: float  # the bound
    frames_only: float  # the same without the device's flash writes
    per_block_ms: float  # block mode: one steady-state block; page mode: per block averaged
    blocks: int
    block: int

    def as_dict(self) -> dict[str, float | int]:
        return asdict(self)


def lower_bound(
    link: LinkModel,
    image_size: int,
    block: int,
    *,
    page_size: int | None = None,
    response_spacing_ms: int = 0,
) -> Bound:
    """See the module docstring. ``page_size=None``: block requests."""
    if not link.timed:
        return Bound(0.0, 0.0, 0.0, len(blocks(image_size, block)), block)
    u, x = link.uart_time, _x
    start = u(ZCL_IMAGE_NOTIFY_MIN_LEN) + x(link, ZCL_IMAGE_NOTIFY_MIN_LEN)
    start += x(link, ZCL_QUERY_REQUEST_LEN) + u(ZCL_QUERY_REQUEST_LEN)
    start += u(ZCL_QUERY_RESPONSE_LEN) + x(link, ZCL_QUERY_RESPONSE_LEN)
    frames = start
    flash = 0.0
    n_blocks = 0
    if page_size is None:
        sizes = blocks(image_size, block)
        n_blocks = len(sizes)
        for i, s in enumerate(sizes):
            frames += x(link, ZCL_BLOCK_REQUEST_LEN) + u(ZCL_BLOCK_REQUEST_LEN)
            frames += u(ZCL_BLOCK_RESPONSE_OVERHEAD + s) + x(link, ZCL_BLOCK_RESPONSE_OVERHEAD + s)
            if i < len(sizes) - 1:
                flash += link.flash_time(s)
    else:
        # The spacing is the device's own request, in its own (unscaled) time, as the
        # sim's device timers are (radios/sim/spec.py).
        spacing = response_spacing_ms / 1000
        pages = blocks(image_size, page_size)
        for i, page in enumerate(pages):
            frames += x(link, ZCL_PAGE_REQUEST_LEN) + u(ZCL_PAGE_REQUEST_LEN)
            in_page = blocks(page, block)
            n_blocks += len(in_page)
            for s in in_page:
                frames += max(spacing, u(ZCL_BLOCK_RESPONSE_OVERHEAD + s) + x(link, ZCL_BLOCK_RESPONSE_OVERHEAD + s))
            if i < len(pages) - 1:
                flash += link.flash_time(in_page[-1])
    total = frames + flash
    per_block = (total - start) / max(1, n_blocks)
    return Bound(total, frames, per_block * 1000, n_blocks, block)


@dataclass(frozen=True)
class Capacity:
    bytes_per_s: float  # the capacity: the smallest of the three rates
    channel_bytes_per_s: float
    uart_tx_bytes_per_s: float
    uart_rx_bytes_per_s: float
    block: int
    channel_ms_per_block: float

    def as_dict(self) -> dict[str, float | int]:
        return asdict(self)


def capacity(link: LinkModel, block: int) -> Capacity:
    """Best-case image bytes per second of back-to-back block exchanges (module doc)."""
    if not link.timed:
        return Capacity(math.inf, math.inf, math.inf, math.inf, block, 0.0)
    req, rsp = ZCL_BLOCK_REQUEST_LEN, ZCL_BLOCK_RESPONSE_OVERHEAD + block
    ack = link.exchange_busy_time(link.aps_ack_psdu)
    channel = _busy(link, req) + ack + _busy(link, rsp) + ack
    # Host -> NCP: the response; NCP -> host: the request and the send confirmation.
    uart_tx = link.uart_time(rsp)
    uart_rx = link.uart_time(req) + link.uart_time(0)

    def rate(t: float) -> float:
        return block / t if t > 0 else math.inf

    rates = (rate(channel), rate(uart_tx), rate(uart_rx))
    return Capacity(min(rates), *rates, block=block, channel_ms_per_block=channel * 1000)
