"""ASH, the UART framing an EZSP NCP speaks (Silicon Labs UG101), NCP side.

Written from the specification, not from bellows: bellows is the *host* we test, so this
module is the peer that has to interoperate with it on the wire.

Pieces, bottom up:

* byte stuffing of the six reserved bytes (Flag 0x7E, Escape 0x7D, XON 0x11, XOFF 0x13,
  Substitute 0x18, Cancel 0x1A), CRC-CCITT (poly 0x1021, init 0xFFFF, big-endian on the
  wire) and the data-field randomisation (LFSR seeded 0x42, taps 0xB8);
* :class:`AshDecoder`, which cuts a byte stream into frames and honours Cancel,
  Substitute and XON/XOFF as the specification says;
* :class:`AshNcp`, the NCP's half of the protocol: RST -> RSTACK, DATA frames numbered
  modulo 8 with piggy-backed or explicit ACKs, NAK and the reject condition for bad or
  out-of-sequence frames, retransmission with an adaptive ``t_rx_ack`` and, after too
  many consecutive ACK timeouts, the ERROR frame and the FAILED state.

:class:`AshNcp` is transport-agnostic: it writes through a callable and hands received
EZSP frames to another; timers use the running asyncio loop.
"""

from __future__ import annotations

import asyncio
import binascii
import collections
import dataclasses
import enum
import logging
import time
from collections.abc import Callable

LOGGER = logging.getLogger(__name__)

FLAG = 0x7E
ESCAPE = 0x7D
XON = 0x11
XOFF = 0x13
SUBSTITUTE = 0x18
CANCEL = 0x1A
RESERVED = frozenset({FLAG, ESCAPE, XON, XOFF, SUBSTITUTE, CANCEL})

ASH_VERSION = 0x02

# Control bytes of the fixed-form frames
CONTROL_RST = 0xC0
CONTROL_RSTACK = 0xC1
CONTROL_ERROR = 0xC2

# NCP reset / error codes carried by RSTACK and ERROR (UG101 table 3)
RESET_UNKNOWN_REASON = 0x00
RESET_EXTERNAL = 0x01
RESET_POWER_ON = 0x02
RESET_WATCHDOG = 0x03
RESET_ASSERT = 0x06
RESET_BOOTLOADER = 0x09
RESET_SOFTWARE = 0x0B
ERROR_EXCEEDED_MAXIMUM_ACK_TIMEOUT_COUNT = 0x51

# Timing and window parameters of the NCP (UG101 section 4.3 defaults)
T_RX_ACK_INIT = 1.6
T_RX_ACK_MIN = 0.4
T_RX_ACK_MAX = 3.2
ACK_TIMEOUTS = 4  # consecutive ACK timeouts before the NCP enters the FAILED state
MAX_DATA_FIELD = 128  # an EZSP frame carried in one DATA frame


def crc_ccitt(data: bytes) -> int:
    """CRC-CCITT as ASH uses it: polynomial 0x1021, initial value 0xFFFF."""
    return binascii.crc_hqx(data, 0xFFFF)


def _pseudo_random_sequence(length: int) -> bytes:
    """The data-field randomisation sequence: an 8-bit LFSR seeded with 0x42."""
    out = bytearray()
    value = 0x42
    for _ in range(length):
        out.append(value)
        value = (value >> 1) ^ (0xB8 if value & 0x01 else 0x00)
    return bytes(out)


_RANDOM = _pseudo_random_sequence(256)


def randomise(data: bytes) -> bytes:
    """XOR the data field with the pseudo-random sequence (its own inverse)."""
    if len(data) > len(_RANDOM):
        raise ValueError(f"data field too long: {len(data)} bytes")
    return bytes(b ^ r for b, r in zip(data, _RANDOM))


def stuff(frame: bytes) -> bytes:
    """Escape reserved bytes: Escape, then the byte with bit 5 inverted."""
    out = bytearray()
    for b in frame:
        if b in RESERVED:
            out += bytes((ESCAPE, b ^ 0x20))
        else:
            out.append(b)
    return bytes(out)


def with_crc(body: bytes) -> bytes:
    return body + crc_ccitt(body).to_bytes(2, "big")


def encode_frame(body: bytes) -> bytes:
    """CRC, stuff and terminate one frame (body = control byte + data field)."""
    return stuff(with_crc(body)) + bytes((FLAG,))


def data_frame(frm_num: int, ack_num: int, ezsp: bytes, *, re_tx: bool = False) -> bytes:
    control = ((frm_num & 0x07) << 4) | (0x08 if re_tx else 0) | (ack_num & 0x07)
    return encode_frame(bytes((control,)) + randomise(ezsp))


def ack_frame(ack_num: int, *, not_ready: bool = False) -> bytes:
    return encode_frame(bytes((0x80 | (0x08 if not_ready else 0) | (ack_num & 0x07),)))


def nak_frame(ack_num: int, *, not_ready: bool = False) -> bytes:
    return encode_frame(bytes((0xA0 | (0x08 if not_ready else 0) | (ack_num & 0x07),)))


def rst_frame() -> bytes:
    return encode_frame(bytes((CONTROL_RST,)))


def rstack_frame(reset_code: int) -> bytes:
    return encode_frame(bytes((CONTROL_RSTACK, ASH_VERSION, reset_code)))


def error_frame(error_code: int) -> bytes:
    return encode_frame(bytes((CONTROL_ERROR, ASH_VERSION, error_code)))


class FrameKind(enum.Enum):
    DATA = "DATA"
    ACK = "ACK"
    NAK = "NAK"
    RST = "RST"
    RSTACK = "RSTACK"
    ERROR = "ERROR"


@dataclasses.dataclass(frozen=True)
class Frame:
    """A received frame whose CRC checked out."""

    kind: FrameKind
    control: int
    data: bytes = b""  # DATA: the de-randomised EZSP frame; RSTACK/ERROR: version+code

    @property
    def frm_num(self) -> int:
        return (self.control >> 4) & 0x07

    @property
    def re_tx(self) -> bool:
        return bool(self.control & 0x08)

    @property
    def ack_num(self) -> int:
        return self.control & 0x07

    @property
    def not_ready(self) -> bool:
        return bool(self.control & 0x08) and self.kind in (FrameKind.ACK, FrameKind.NAK)


class FrameError(ValueError):
    """A frame that cannot be accepted: bad CRC, too short, bad escape, unknown type."""

    def __init__(self, reason: str, raw: bytes) -> None:
        super().__init__(f"{reason}: {raw.hex()}")
        self.reason = reason
        self.raw = raw

    @property
    def looks_like_data(self) -> bool:
        return bool(self.raw) and not self.raw[0] & 0x80


def parse_frame(raw: bytes) -> Frame:
    """Check the CRC of an unstuffed frame and classify it by its control byte."""
    if len(raw) < 3:
        raise FrameError("frame too short", raw)
    body, crc = raw[:-2], int.from_bytes(raw[-2:], "big")
    if crc_ccitt(body) != crc:
        raise FrameError(f"bad CRC (computed {crc_ccitt(body):04x}, got {crc:04x})", raw)
    control, data = body[0], body[1:]
    if not control & 0x80:
        return Frame(FrameKind.DATA, control, randomise(data))
    if control & 0xE0 == 0x80:
        return Frame(FrameKind.ACK, control)
    if control & 0xE0 == 0xA0:
        return Frame(FrameKind.NAK, control)
    if control == CONTROL_RST:
        return Frame(FrameKind.RST, control)
    if control == CONTROL_RSTACK:
        return Frame(FrameKind.RSTACK, control, data)
    if control == CONTROL_ERROR:
        return Frame(FrameKind.ERROR, control, data)
    raise FrameError(f"unknown control byte 0x{control:02x}", raw)


class AshDecoder:
    """Cuts a received byte stream into unstuffed frames (CRC still attached).

    * Flag ends a frame; empty frames between consecutive Flags are skipped.
    * Cancel discards everything received since the previous Flag.
    * Substitute marks the frame in progress as corrupt: it is discarded up to the next
      Flag and reported as an error, so the NCP NAKs it like any other bad frame.
    * XON/XOFF are flow-control bytes outside frames; we drop them (no flow control).
    """

    def __init__(self) -> None:
        self._buf = bytearray()
        self._escaped = False
        self._corrupt = False

    def feed(self, data: bytes) -> list[bytes | FrameError]:
        out: list[bytes | FrameError] = []
        for b in data:
            if b == FLAG:
                if self._corrupt:
                    out.append(FrameError("frame corrupted (Substitute byte)", bytes(self._buf)))
                elif self._escaped:
                    out.append(FrameError("frame ends in an Escape byte", bytes(self._buf)))
                elif self._buf:
                    out.append(bytes(self._buf))
                self._reset()
            elif b == CANCEL:
                self._reset()
            elif b == SUBSTITUTE:
                self._corrupt = True
            elif b in (XON, XOFF):
                continue
            elif self._corrupt:
                continue
            elif b == ESCAPE:
                self._escaped = True
            elif self._escaped:
                self._escaped = False
                self._buf.append(b ^ 0x20)
            else:
                self._buf.append(b)
        return out

    def _reset(self) -> None:
        self._buf.clear()
        self._escaped = False
        self._corrupt = False


class AshState(enum.Enum):
    CONNECTED = "connected"
    FAILED = "failed"


@dataclasses.dataclass
class _Outstanding:
    frm_num: int
    ezsp: bytes
    sent_at: float
    retransmitted: bool = False


class AshNcp:
    """The NCP side of ASH for one host connection.

    ``write(bytes)`` sends raw bytes to the host. ``on_ezsp(bytes)`` receives each
    in-sequence EZSP frame. ``on_rst()`` is called when the host sends RST: the owner
    resets the EZSP layer, then this object answers with RSTACK.
    """

    def __init__(
        self,
        write: Callable[[bytes], None],
        on_ezsp: Callable[[bytes], None],
        on_rst: Callable[[], None],
        *,
        tx_window: int = 1,
        on_failed: Callable[[int], None] | None = None,
        on_data_frame: Callable[[], None] | None = None,
    ) -> None:
        if not 1 <= tx_window <= 7:
            raise ValueError("ASH window must be 1..7")
        self._write = write
        self._on_ezsp = on_ezsp
        self._on_rst = on_rst
        self._on_failed = on_failed
        self._on_data_frame = on_data_frame
        self._tx_window = tx_window
        self._decoder = AshDecoder()
        self.state = AshState.CONNECTED
        self._frm_tx = 0  # number of the next DATA frame we send
        self._ack_rx = 0  # number of the next DATA frame we expect (our ackNum)
        self._outstanding: collections.deque[_Outstanding] = collections.deque()
        self._queue: collections.deque[bytes] = collections.deque()
        self._reject = False
        self._t_rx_ack = T_RX_ACK_INIT
        self._timeouts = 0
        self._timer: asyncio.TimerHandle | None = None
        self.stats = collections.Counter()

    # -- receiving ---------------------------------------------------------------
    def data_received(self, data: bytes) -> None:
        for item in self._decoder.feed(data):
            if isinstance(item, FrameError):
                self._bad_frame(item)
                continue
            try:
                frame = parse_frame(item)
            except FrameError as exc:
                self._bad_frame(exc)
                continue
            self._frame_received(frame)

    def _bad_frame(self, exc: FrameError) -> None:
        self.stats["bad_frames"] += 1
        LOGGER.debug("ASH: discarding bad frame: %s", exc)
        # A DATA frame we could not read is rejected with a NAK (once per condition)
        if exc.looks_like_data:
            self._enter_reject()

    def _frame_received(self, frame: Frame) -> None:
        if frame.kind is FrameKind.RST:
            LOGGER.debug("ASH: RST received")
            self.stats["rst"] += 1
            self._on_rst()
            self.send_rstack(RESET_SOFTWARE)
            return
        if self.state is AshState.FAILED:
            LOGGER.debug("ASH: FAILED state, ignoring %s until RST", frame.kind.value)
            return
        if frame.kind is FrameKind.DATA:
            self._handle_ack_num(frame.ack_num)
            self._data_received(frame)
        elif frame.kind is FrameKind.ACK:
            self._handle_ack_num(frame.ack_num)
        elif frame.kind is FrameKind.NAK:
            self._handle_ack_num(frame.ack_num)
            self._retransmit_all("NAK")
        else:
            LOGGER.warning("ASH: the host sent a %s frame, ignored", frame.kind.value)
        self._pump()

    def _data_received(self, frame: Frame) -> None:
        if frame.frm_num == self._ack_rx:
            self._ack_rx = (self._ack_rx + 1) % 8
            self._reject = False
            self.stats["data_rx"] += 1
            # Deliver first so a response can piggy-back the acknowledgement; if none is
            # ready to go out, _pump sends an explicit ACK.
            self._ack_pending = True
            self._on_ezsp(frame.data)
            if self._on_data_frame is not None:
                self._on_data_frame()
        elif frame.re_tx:
            # A retransmission of a frame we already have: acknowledge, do not deliver
            self.stats["duplicates"] += 1
            self._write(ack_frame(self._ack_rx))
        else:
            LOGGER.debug(
                "ASH: out-of-sequence DATA %d (expected %d)", frame.frm_num, self._ack_rx
            )
            self._enter_reject()

    def _enter_reject(self) -> None:
        if self.state is not AshState.CONNECTED or self._reject:
            return
        self._reject = True
        self.stats["nak_tx"] += 1
        self._write(nak_frame(self._ack_rx))

    def _handle_ack_num(self, ack_num: int) -> None:
        numbers = [o.frm_num for o in self._outstanding]
        if not numbers:
            return
        if ack_num in numbers:
            acked = numbers.index(ack_num)
        elif ack_num == (numbers[-1] + 1) % 8:
            acked = len(numbers)
        else:
            return  # stale acknowledgement
        now = time.monotonic()
        for _ in range(acked):
            out = self._outstanding.popleft()
            if not out.retransmitted:
                measured = now - out.sent_at
                self._t_rx_ack = min(
                    T_RX_ACK_MAX, max(T_RX_ACK_MIN, self._t_rx_ack * 7 / 8 + measured / 2)
                )
        if acked:
            self._timeouts = 0
            self._restart_timer()

    # -- sending -----------------------------------------------------------------
    _ack_pending = False

    def send(self, ezsp: bytes) -> None:
        """Queue one EZSP frame for the host."""
        if len(ezsp) > MAX_DATA_FIELD:
            LOGGER.warning("ASH: EZSP frame of %d bytes exceeds the ASH data field", len(ezsp))
        self._queue.append(ezsp)
        self._pump()

    def _pump(self) -> None:
        if self.state is not AshState.CONNECTED:
            return
        while self._queue and len(self._outstanding) < self._tx_window:
            ezsp = self._queue.popleft()
            out = _Outstanding(self._frm_tx, ezsp, time.monotonic())
            self._frm_tx = (self._frm_tx + 1) % 8
            self._outstanding.append(out)
            self._write(data_frame(out.frm_num, self._ack_rx, ezsp))
            self.stats["data_tx"] += 1
            self._ack_pending = False
            if self._timer is None:
                self._restart_timer()
        if self._ack_pending:
            self._ack_pending = False
            self._write(ack_frame(self._ack_rx))

    def _retransmit_all(self, why: str) -> None:
        for out in self._outstanding:
            out.retransmitted = True
            out.sent_at = time.monotonic()
            self.stats["retransmissions"] += 1
            LOGGER.debug("ASH: retransmitting DATA %d (%s)", out.frm_num, why)
            self._write(data_frame(out.frm_num, self._ack_rx, out.ezsp, re_tx=True))
        self._ack_pending = False
        self._restart_timer()

    def _restart_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._outstanding and self.state is AshState.CONNECTED:
            loop = asyncio.get_running_loop()
            self._timer = loop.call_later(self._t_rx_ack, self._ack_timeout)

    def _ack_timeout(self) -> None:
        self._timer = None
        if not self._outstanding or self.state is not AshState.CONNECTED:
            return
        self._timeouts += 1
        self.stats["ack_timeouts"] += 1
        LOGGER.debug("ASH: no ACK in %.2fs (%d in a row)", self._t_rx_ack, self._timeouts)
        if self._timeouts > ACK_TIMEOUTS:
            self.fail(ERROR_EXCEEDED_MAXIMUM_ACK_TIMEOUT_COUNT)
            return
        self._t_rx_ack = min(T_RX_ACK_MAX, self._t_rx_ack * 2)
        self._retransmit_all("ACK timeout")

    # -- resets and failures -----------------------------------------------------
    def _clear(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._frm_tx = 0
        self._ack_rx = 0
        self._outstanding.clear()
        self._queue.clear()
        self._reject = False
        self._ack_pending = False
        self._t_rx_ack = T_RX_ACK_INIT
        self._timeouts = 0

    def send_rstack(self, reset_code: int) -> None:
        """The NCP (re)started: fresh frame numbers, then RSTACK to the host."""
        self._clear()
        self.state = AshState.CONNECTED
        self.stats["rstack_tx"] += 1
        self._write(rstack_frame(reset_code))

    def fail(self, error_code: int) -> None:
        """Enter the FAILED state and tell the host with an ERROR frame."""
        LOGGER.warning("ASH: NCP entering FAILED state, error 0x%02x", error_code)
        self._clear()
        self.state = AshState.FAILED
        self.stats["error_tx"] += 1
        self._write(error_frame(error_code))
        if self._on_failed is not None:
            self._on_failed(error_code)

    def close(self) -> None:
        self._clear()
