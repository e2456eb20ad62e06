"""Terminal logging: -v means something, and log lines never land inside the bar (issue 11 item 10)."""

from __future__ import annotations

import io
import logging

from han_ota.cli_app import console_logging
from han_ota.progress import ProgressLine


class Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def record(level: int, msg: str) -> logging.LogRecord:
    return logging.LogRecord("han_ota.ota", level, __file__, 1, msg, None, None)


def test_each_v_adds_a_level() -> None:
    assert [console_logging(v, io.StringIO())[0] for v in (0, 1, 2, 3)] == [logging.WARNING, logging.INFO, logging.DEBUG, logging.DEBUG]
    # Commands that serve (emulators) keep INFO without -v.
    assert console_logging(0, io.StringIO(), default=logging.INFO)[0] == logging.INFO


def test_without_v_a_warning_reads_as_a_sentence() -> None:
    out = io.StringIO()
    _, handler = console_logging(0, out)
    handler.emit(record(logging.WARNING, "device may activate by itself"))
    assert out.getvalue() == "warning: device may activate by itself\n"
    out = io.StringIO()
    _, handler = console_logging(1, out)
    handler.emit(record(logging.INFO, "state pending -> transferring"))
    assert "INFO han_ota.ota: state pending -> transferring" in out.getvalue()


def test_a_log_line_goes_above_the_bar_and_the_bar_comes_back() -> None:
    tty = Tty()
    bar = ProgressLine("dev", 100, tty)
    bar.update(40, "transferring", 10.0, 6.0, force=True)
    _, handler = console_logging(1, tty)
    handler.emit(record(logging.INFO, "a step"))
    text = tty.getvalue()
    before, _, after = text.partition("\r\033[K")
    assert "40.0%" in before  # the bar was drawn...
    line, _, redrawn = after.partition("\n")
    assert line.endswith("a step") and "%" not in line  # ...the log line stands alone...
    assert "40.0%" in redrawn  # ...and the bar is drawn again below it
    bar.close()
    tty2 = Tty()
    handler2 = console_logging(1, tty2)[1]
    handler2.emit(record(logging.INFO, "after"))
    assert "\033[K" not in tty2.getvalue()  # no bar, no clearing
