"""Traffic windows (issue 15): the hours in which OTA transfers may run (sans-I/O).

``[ota] windows = ["01:00-05:00", "22:00-02:00Z"]``: each window is ``HH:MM-HH:MM``
(24:00 may end one), in local time, or in UTC with a ``Z`` or `` UTC`` suffix. A window
whose end is not after its start runs over midnight. Outside every window no transfer
starts and running ones are paused (the engine pauses the pacer, so devices get
WAIT_FOR_DATA; held devices are still answered). No windows at all: always open.

Local time is the system's (``local=None``: Python's own conversion, with its DST
rules at each instant) or a ``tzinfo`` given (tests, a configured zone). Wall-clock
windows on a DST change day follow the wall clock: "01:00-05:00" is three or five
hours long that night. Time is an argument: ``is_open(now)`` and ``next_change(now)``
take an aware UTC datetime, so that the caller arms one timer for the next change.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterable
from dataclasses import dataclass

_UTC = dt.timezone.utc
_WINDOW = re.compile(r"(\d{2}):(\d{2})-(\d{2}):(\d{2})(Z| ?UTC)?")
_DAY = dt.timedelta(days=1)


class WindowError(ValueError):
    """A window that cannot be read; the message names it, its position and the form."""


@dataclass(frozen=True)
class Window:
    start: int  # minutes after midnight, 0..1439
    end: int  # minutes after midnight, 1..1440; not after start: over midnight
    utc: bool
    text: str

    def contains(self, minute: float) -> bool:
        if self.start < self.end:
            return self.start <= minute < self.end
        return minute >= self.start or minute < self.end


def parse_window(text: object, index: int = 0) -> Window:
    where = f"windows[{index}]"
    if not isinstance(text, str):
        raise WindowError(f"{where} is {text!r}: expected a text such as \"01:00-05:00\" (local) or \"01:00-05:00Z\" (UTC)")
    m = _WINDOW.fullmatch(text.strip())
    if m is None:
        raise WindowError(f"{where} {text!r} is not HH:MM-HH:MM, optionally followed by Z or UTC (e.g. \"22:00-02:00Z\")")
    h1, m1, h2, m2 = (int(g) for g in m.groups()[:4])
    for name, h, mm, last in (("start", h1, m1, 23), ("end", h2, m2, 24)):
        if h > last or mm > 59 or (h == 24 and mm != 0):
            raise WindowError(f"{where} {text!r}: its {name} {h:02d}:{mm:02d} is not a time of day (00:00 to {'24:00' if last == 24 else '23:59'})")
    start, end = h1 * 60 + m1, h2 * 60 + m2
    if start == end % 1440 and end != 1440:
        raise WindowError(f"{where} {text!r} starts where it ends: give a window of some length (for all day, leave windows unset)")
    return Window(start, end, m.group(5) is not None, text.strip())


class TrafficWindows:
    """The configured windows; empty means always open."""

    def __init__(self, windows: Iterable[Window] = (), local: dt.tzinfo | None = None) -> None:
        self.windows = tuple(windows)
        self.local = local

    @classmethod
    def parse(cls, texts: Iterable[object], local: dt.tzinfo | None = None) -> TrafficWindows:
        return cls((parse_window(t, i) for i, t in enumerate(texts)), local)

    def __bool__(self) -> bool:
        return bool(self.windows)

    def describe(self) -> str:
        return ", ".join(w.text for w in self.windows) if self.windows else "always open"

    def _wall(self, now: dt.datetime, utc: bool) -> dt.datetime:
        if utc:
            return now.astimezone(_UTC)
        return now.astimezone(self.local) if self.local is not None else now.astimezone()

    def is_open(self, now: dt.datetime) -> bool:
        _check_aware(now)
        if not self.windows:
            return True
        for w in self.windows:
            wall = self._wall(now, w.utc)
            if w.contains(wall.hour * 60 + wall.minute + wall.second / 60 + wall.microsecond / 60e6):
                return True
        return False

    def next_change(self, now: dt.datetime) -> dt.datetime | None:
        """The first instant after ``now`` at which ``is_open`` changes, or None if it never does."""
        _check_aware(now)
        if not self.windows:
            return None
        state = self.is_open(now)
        candidates = sorted({c for w in self.windows for c in self._boundaries(w, now) if c > now})
        for at in candidates:
            if self.is_open(at) != state:
                return at
        return None

    def _boundaries(self, w: Window, now: dt.datetime) -> list[dt.datetime]:
        """Each start and end of ``w`` from yesterday to three days on, as UTC instants."""
        today = self._wall(now, w.utc).date()
        out = []
        for days in range(-1, 4):
            date = today + days * _DAY
            for minute in (w.start, w.end):
                naive = dt.datetime.combine(date, dt.time()) + dt.timedelta(minutes=minute)
                if w.utc:
                    out.append(naive.replace(tzinfo=_UTC))
                elif self.local is not None:
                    # A wall time skipped by DST lands just after the gap: fromutc of utcoffset.
                    out.append(naive.replace(tzinfo=self.local).astimezone(_UTC))
                else:
                    out.append(naive.astimezone().astimezone(_UTC))
        return out


def _check_aware(now: dt.datetime) -> None:
    if not isinstance(now, dt.datetime) or now.utcoffset() is None:
        raise ValueError(f"now must be a timezone-aware datetime, not {now!r}")
