"""ASH, the UART framing an EZSP NCP speaks (Silicon Labs UG101), NCP side.

Written from the specification, not from bellows: bellows is the *host* we test, so this
module is the peer that has to interoperate with it on the wire.

Pieces, bottom up:

* byte stuffing of the six reserved bytes (Flag 0x7E, Escape 0x7D, XON 0x11, XOFF 0x13,
  Substitute 0x18, Cancel 0x1A), CRC-CCITT (poly 0x1021, init 0xFFFF, big-endian on the
  wire) and the data-field randomisation (LFSR seeded 0x42, taps 0xB8);
* :class:`AshDecoder`, which cuts a byte stream into frames and honours Cancel,
  Substitute and XON/XOFF as the specification says;
* :class:`AshNcp`, the NCP's half of the protocol as the firmware implements it
  (simplicity_sdk ``platform/service/legacy_ncp_ash/src/ash-ncp.c``, the same code as
  gecko_sdk's ``ash-ncp.c`` of EmberZNet 7.x): DATA frames numbered modulo 8 in a window
  of 5 (``ASH_TX_K``) with piggy-backed or explicit ACKs; NAK and the reject condition
  for a bad CRC, an out-of-sequence DATA frame or an ackNum outside the frames in
  flight; retransmission with an adaptive ``t_rx_ack``; ERROR after the fourth
  consecutive ACK timeout; and resets as the chip does them (:meth:`AshNcp.restart`).

Resets, from ``ashStart()`` and ``ashReceiveFrame()``: RST makes the chip reboot
(``halReboot``); every start waits ``ASH_REBOOT_DELAY`` (1000 ms, ``reboot_delay``) and
then sends Cancel (0x1A) and either RSTACK (power-on, external, software, bootloader
resets: CONNECTED) or, for any other cause (watchdog 0x03, assert), ERROR with the reset
cause and stays not-connected. Not connected, the NCP answers every frame it reads with
ERROR until the host's RST; it never sends an RSTACK by itself after a watchdog reset.
A real RSTACK on the wire: ``1a c1 02 0b 0a 52 7e`` (Koenkk/zigbee-herdsman
src/adapter/ember/uart/consts.ts, RECD_RSTACK_BYTES).

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

# Timing and window of the NCP: the firmware's defaults (ash-ncp.h in simplicity_sdk
# platform/service/legacy_ncp_ash/inc, unchanged since EmberZNet 5), used when the ASH
# manufacturing token leaves them at 0xFFFF
T_RX_ACK_INIT = 1.6  # ASH_TIME_DATA_INIT 1600 ms
T_RX_ACK_MIN = 0.4  # ASH_TIME_DATA_MIN 400 ms
T_RX_ACK_MAX = 3.2  # ASH_TIME_DATA_MAX 3200 ms
# ASH_MAX_TIMEOUTS 3: "consecutive ACK timeouts (minus 1) needed to enter the ERROR
# state" (++ashTimeouts > 3 in ashSendExec): the fourth timeout in a row is fatal
MAX_TIMEOUTS = 3
TX_K = 5  # ASH_TX_K: DATA frames the NCP sends before it must wait for an ACK
REBOOT_DELAY = 1.0  # ASH_REBOOT_DELAY 1000 ms before RSTACK (0 only on sleepy builds)
MAX_DATA_FIELD = 128  # an EZSP frame carried in one DATA frame
# Reset causes ashStart() answers with RSTACK; every other one gets ERROR
RSTACK_RESETS = frozenset({RESET_EXTERNAL, RESET_POWER_ON, RESET_SOFTWARE, RESET_BOOTLOADER})


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
    FAILED = "failed"  # not connected: ERROR to every frame until RST
    REBOOTING = "rebooting"  # the chip restarts: nothing is read or written


@dataclasses.dataclass(frozen=True)
class AshConfig:
    """The NCP's ASH parameters (the manufacturing token's fields); firmware defaults."""

    tx_window: int = TX_K
    reboot_delay: float = REBOOT_DELAY
    max_timeouts: int = MAX_TIMEOUTS

    def __post_init__(self) -> None:
        if not 1 <= self.tx_window <= 7:
            raise ValueError("ASH window must be 1..7")
        if self.reboot_delay < 0:
            raise ValueError("reboot_delay must be >= 0")


@dataclasses.dataclass
class _Outstanding:
    frm_num: int
    ezsp: bytes
    sent_at: float
    retransmitted: bool = False


class AshNcp:
    """The NCP side of ASH for one host connection.

    ``write(bytes)`` sends raw bytes to the host. ``on_ezsp(bytes)`` receives each
    in-sequence EZSP frame. ``on_rst()`` is called when the host sends RST: the chip
    reboots, so the owner resets the EZSP layer at once; the RSTACK follows after
    ``config.reboot_delay``.
    """

    def __init__(
        self,
        write: Callable[[bytes], None],
        on_ezsp: Callable[[bytes], None],
        on_rst: Callable[[], None],
        *,
        config: AshConfig | None = None,
        on_failed: Callable[[int], None] | None = None,
        on_data_frame: Callable[[], None] | None = None,
    ) -> None:
        self.config = config if config is not None else AshConfig()
        self._write = write
        self._on_ezsp = on_ezsp
        self._on_rst = on_rst
        self._on_failed = on_failed
        self._on_data_frame = on_data_frame
        self._decoder = AshDecoder()
        self.state = AshState.CONNECTED
        self.error_code: int | None = None  # what ERROR frames carry while FAILED
        self._frm_tx = 0  # number of the next DATA frame we send
        self._ack_rx = 0  # number of the next DATA frame we expect (our ackNum)
        self._outstanding: collections.deque[_Outstanding] = collections.deque()
        self._queue: collections.deque[bytes] = collections.deque()
        self._reject = False
        self._t_rx_ack = T_RX_ACK_INIT
        self._timeouts = 0
        self._timer: asyncio.TimerHandle | None = None
        self._reboot: asyncio.TimerHandle | None = None
        self._reboot_code: int | None = None
        self.stats = collections.Counter()
        # ("RSTACK" | "ERROR", code) for every reset or failure signalled, oldest first
        self.signals: list[tuple[str, int]] = []

    # -- receiving ---------------------------------------------------------------
    def data_received(self, data: bytes) -> None:
        if self.state is AshState.REBOOTING:
            self.stats["rx_while_rebooting"] += len(data)
            return  # the UART is not running yet
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
            if self.state is AshState.REBOOTING:
                return  # an RST: the rest of the buffer is lost with the reboot

    def _bad_frame(self, exc: FrameError) -> None:
        self.stats["bad_frames"] += 1
        LOGGER.debug("ASH: discarding bad frame: %s", exc)
        # ashRejectFrame: a DATA frame we could not read (bad CRC, too short) gets a NAK,
        # once per reject condition; other frames are dropped silently
        if exc.looks_like_data:
            self._enter_reject()

    def _frame_received(self, frame: Frame) -> None:
        if frame.kind is FrameKind.RST:
            LOGGER.debug("ASH: RST received, rebooting")
            self.stats["rst"] += 1
            self._on_rst()
            self.restart(RESET_SOFTWARE)
            return
        if self.state is AshState.FAILED:
            # ashReceiveFrame: "Reply to any frames received while not connected with ERROR"
            LOGGER.debug("ASH: not connected, answering %s with ERROR", frame.kind.value)
            self._send_error()
            return
        if frame.kind in (FrameKind.DATA, FrameKind.ACK, FrameKind.NAK):
            if not self._ack_in_range(frame.ack_num):
                # WITHIN_RANGE(ackRx, ackNum, frmTx) failed: the frame is invalid and,
                # if it is DATA, rejected with a NAK
                LOGGER.debug("ASH: %s with ackNum %d outside %d..%d", frame.kind.value,
                             frame.ack_num, self._ack_base(), self._frm_tx)
                self.stats["bad_acknum"] += 1
                if frame.kind is FrameKind.DATA:
                    self._enter_reject()
                self._pump()
                return
            self._handle_ack_num(frame.ack_num)
        if frame.kind is FrameKind.DATA:
            self._data_received(frame)
        elif frame.kind is FrameKind.NAK:
            self._retransmit_all("NAK")
        elif frame.kind is not FrameKind.ACK:
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

    def _ack_base(self) -> int:
        """ackRx: the oldest DATA frame in flight, or the next one when none is."""
        return self._outstanding[0].frm_num if self._outstanding else self._frm_tx

    def _ack_in_range(self, ack_num: int) -> bool:
        base = self._ack_base()
        return (ack_num - base) % 8 <= (self._frm_tx - base) % 8

    def _handle_ack_num(self, ack_num: int) -> None:
        acked = (ack_num - self._ack_base()) % 8
        if not acked:
            return
        now = time.monotonic()
        for _ in range(acked):
            out = self._outstanding.popleft()
            if not out.retransmitted:
                measured = now - out.sent_at
                self._t_rx_ack = min(
                    T_RX_ACK_MAX, max(T_RX_ACK_MIN, self._t_rx_ack * 7 / 8 + measured / 2)
                )
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
        while self._queue and len(self._outstanding) < self.config.tx_window:
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
        if self._timeouts > self.config.max_timeouts:
            self.fail(ERROR_EXCEEDED_MAXIMUM_ACK_TIMEOUT_COUNT)
            return
        self._t_rx_ack = min(T_RX_ACK_MAX, self._t_rx_ack * 2)
        self._retransmit_all("ACK timeout")

    # -- resets and failures -----------------------------------------------------
    def _clear(self) -> None:
        for timer in (self._timer, self._reboot):
            if timer is not None:
                timer.cancel()
        self._timer = self._reboot = None
        self._frm_tx = 0
        self._ack_rx = 0
        self._outstanding.clear()
        self._queue.clear()
        self._reject = False
        self._ack_pending = False
        self._t_rx_ack = T_RX_ACK_INIT
        self._timeouts = 0

    def restart(self, reset_code: int) -> None:
        """The chip (re)starts for ``reset_code``: silence for ``reboot_delay``, then
        Cancel + RSTACK(code) for a power-on/external/software/bootloader reset, or
        Cancel + ERROR(code) (watchdog, assert, ...) and not-connected until RST."""
        self._clear()
        self.state = AshState.REBOOTING
        self._reboot_code = reset_code
        self.stats["restarts"] += 1
        loop = asyncio.get_running_loop()
        self._reboot = loop.call_later(self.config.reboot_delay, self._started)

    def _started(self) -> None:
        self._reboot = None
        code, self._reboot_code = self._reboot_code, None
        assert code is not None
        self._decoder = AshDecoder()  # what was half-received before the reboot is gone
        if code in RSTACK_RESETS:
            self.state = AshState.CONNECTED
            self.error_code = None
            self.stats["rstack_tx"] += 1
            self.signals.append(("RSTACK", code))
            self._write(bytes((CANCEL,)) + rstack_frame(code))
        else:
            LOGGER.warning("ASH: NCP restarted after reset 0x%02x: Cancel + ERROR, waiting for RST", code)
            self._enter_failed(code, cancel=True)

    @property
    def pending_error(self) -> int | None:
        """The ERROR code this NCP is in, or will be in once its reboot ends; None when
        it is (or will be) connected. A new host connection starts where this one was."""
        if self.state is AshState.REBOOTING:
            return None if self._reboot_code in RSTACK_RESETS else self._reboot_code
        return self.error_code if self.state is AshState.FAILED else None

    def enter_failed_quietly(self, error_code: int) -> None:
        """Start not-connected (the NCP was failed before this host connected)."""
        self._clear()
        self.state = AshState.FAILED
        self.error_code = error_code

    def fail(self, error_code: int) -> None:
        """Enter the FAILED state and tell the host with an ERROR frame (no Cancel: the
        firmware sets only FLG_ERROR after too many ACK timeouts)."""
        LOGGER.warning("ASH: NCP entering FAILED state, error 0x%02x", error_code)
        self._clear()
        self._enter_failed(error_code, cancel=False)

    def _enter_failed(self, error_code: int, *, cancel: bool) -> None:
        self.state = AshState.FAILED
        self.error_code = error_code
        self.signals.append(("ERROR", error_code))
        if cancel:
            self._write(bytes((CANCEL,)))
        self._send_error()
        if self._on_failed is not None:
            self._on_failed(error_code)

    def _send_error(self) -> None:
        assert self.error_code is not None
        self.stats["error_tx"] += 1
        self._write(error_frame(self.error_code))

    def close(self) -> None:
        self._clear()
