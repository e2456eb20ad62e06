"""A one-line progress display for long transfers: bytes, rate, ETA and state."""

from __future__ import annotations

import logging
import sys
import time
from typing import TextIO

# The bar being redrawn on a terminal, so that log lines can be written above it.
_active: ProgressLine | None = None


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB"):
        if n < 1024 or unit == "MiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} MiB"


def human_seconds(s: float | None) -> str:
    if s is None:
        return "--:--"
    s = int(round(s))
    h, rem = divmod(s, 3600)
    m, sec = divmod(rem, 60)
    return f"{h}:{m:02d}:{sec:02d}" if h else f"{m}:{sec:02d}"


class ProgressLine:
    """Redraws in place on a terminal; on a pipe prints a line per 10% and per state."""

    def __init__(self, label: str, total: int, stream: TextIO | None = None, width: int = 28) -> None:
        self.label = label
        self.total = max(total, 1)
        self.stream = stream or sys.stderr
        self.width = width
        self.tty = self.stream.isatty()
        self._last_decile = -1
        self._last_state: str | None = None
        self._last_draw = 0.0
        self._line = ""
        if self.tty:
            global _active
            _active = self

    def update(self, done: int, state: str, rate: float | None, eta: float | None, *, force: bool = False) -> None:
        frac = min(done / self.total, 1.0)
        if self.tty:
            now = time.monotonic()
            if not force and now - self._last_draw < 0.1 and state == self._last_state:
                return
            self._last_draw = now
            filled = int(frac * self.width)
            bar = "#" * filled + "." * (self.width - filled)
            rate_s = f"{human_bytes(rate)}/s" if rate else "-"
            self._line = f"\r{self.label} [{bar}] {frac * 100:5.1f}% {human_bytes(done)}/{human_bytes(self.total)} {rate_s} ETA {human_seconds(eta)} {state:<12}"
            self.stream.write(self._line)
            self.stream.flush()
        else:
            decile = int(frac * 10)
            if decile != self._last_decile or state != self._last_state or force:
                rate_s = f"{human_bytes(rate)}/s" if rate else "-"
                self.stream.write(f"{self.label} {frac * 100:5.1f}% {human_bytes(done)}/{human_bytes(self.total)} {rate_s} ETA {human_seconds(eta)} {state}\n")
                self.stream.flush()
                self._last_decile = decile
        self._last_state = state

    def redraw(self) -> None:
        if self._line:
            self.stream.write(self._line)
            self.stream.flush()

    def close(self) -> None:
        global _active
        if _active is self:
            _active = None
        if self.tty:
            self.stream.write("\n")
            self.stream.flush()


class ConsoleHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes log lines above a progress bar instead of into it."""

    def emit(self, record: logging.LogRecord) -> None:
        bar = _active
        if bar is None or bar.stream is not self.stream:
            super().emit(record)
            return
        self.stream.write("\r\033[K")
        super().emit(record)
        bar.redraw()
