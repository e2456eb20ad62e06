"""Traffic windows (gateway/ota/windows.py, issue 15): parsing, every minute of a day,
the next change against a brute-force walk, over midnight, UTC and DST days."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

import pytest

from gateway.ota import events as ev
from gateway.ota.config import ImageInfo, SessionConfig
from gateway.ota.pacing import Pacer
from gateway.ota.session import OtaSession
from gateway.ota.windows import TrafficWindows, WindowError, parse_window

UTC = dt.timezone.utc
LONDON = ZoneInfo("Europe/London")
DAY = dt.datetime(2026, 6, 10, tzinfo=UTC)  # BST: local = UTC + 1


def minutes(spec: str) -> set[int]:
    """The minutes of a day a window covers, by brute force (its own model)."""
    body = spec.rstrip("Z").removesuffix(" UTC").removesuffix("UTC")
    a, b = body.split("-")
    start = int(a[:2]) * 60 + int(a[3:])
    end = int(b[:2]) * 60 + int(b[3:])
    out, m = set(), start
    while True:
        out.add(m % 1440)
        m += 1
        if m % 1440 == end % 1440:
            return out


@pytest.mark.parametrize(
    "specs",
    [
        ["01:00-05:00Z"],
        ["22:00-02:00Z"],
        ["00:00-24:00Z"],
        ["23:59-00:01 UTC"],
        ["01:00-02:00Z", "01:30-03:00Z", "20:00-20:30UTC"],
        ["12:00-11:59Z"],
    ],
)
def test_every_minute_of_a_utc_day(specs: list[str]) -> None:
    windows = TrafficWindows.parse(specs)
    covered = set().union(*(minutes(s) for s in specs))
    for m in range(1440):
        now = DAY + dt.timedelta(minutes=m, seconds=30)
        assert windows.is_open(now) == (m in covered), (specs, m)


@pytest.mark.parametrize("specs", [["01:00-05:00"], ["22:00-02:00"], ["01:00-05:00", "04:00-06:00Z"], ["12:00-11:59"]])
def test_next_change_matches_a_walk_minute_by_minute(specs: list[str]) -> None:
    windows = TrafficWindows.parse(specs, LONDON)
    for start in range(0, 1440, 37):
        now = DAY + dt.timedelta(minutes=start, seconds=11)
        state = windows.is_open(now)
        change = windows.next_change(now)
        assert change is not None and change > now
        assert windows.is_open(change) != state
        # Nothing changes before it (walked in minutes from the next whole minute).
        t = now.replace(second=0) + dt.timedelta(minutes=1)
        while t < change:
            assert windows.is_open(t) == state, (specs, now, t, change)
            t += dt.timedelta(minutes=1)


def test_local_time_is_the_zone_s_wall_clock() -> None:
    windows = TrafficWindows.parse(["01:00-05:00"], LONDON)
    # June: 01:00 BST is 00:00 UTC.
    assert windows.is_open(dt.datetime(2026, 6, 10, 0, 0, tzinfo=UTC))
    assert not windows.is_open(dt.datetime(2026, 6, 10, 4, 0, tzinfo=UTC))
    # January: GMT, the same as UTC.
    assert not windows.is_open(dt.datetime(2026, 1, 10, 0, 30, tzinfo=UTC))
    assert windows.is_open(dt.datetime(2026, 1, 10, 4, 30, tzinfo=UTC))
    assert windows.next_change(dt.datetime(2026, 1, 10, 12, 0, tzinfo=UTC)) == dt.datetime(2026, 1, 11, 1, 0, tzinfo=UTC)


def test_dst_days_follow_the_wall_clock() -> None:
    windows = TrafficWindows.parse(["00:30-03:00"], LONDON)
    # 2026-03-29: clocks go from 01:00 GMT to 02:00 BST; the window is 00:30 GMT to 02:00 UTC (03:00 BST).
    spring = dt.datetime(2026, 3, 28, 12, 0, tzinfo=UTC)
    opens = windows.next_change(spring)
    assert opens == dt.datetime(2026, 3, 29, 0, 30, tzinfo=UTC)
    assert windows.next_change(opens) == dt.datetime(2026, 3, 29, 2, 0, tzinfo=UTC)
    # 2026-10-25: clocks go back at 02:00 BST to 01:00 GMT; 00:30 BST is 23:30 UTC, 03:00 GMT is 03:00 UTC.
    autumn = dt.datetime(2026, 10, 24, 12, 0, tzinfo=UTC)
    opens = windows.next_change(autumn)
    assert opens == dt.datetime(2026, 10, 24, 23, 30, tzinfo=UTC)
    assert windows.next_change(opens) == dt.datetime(2026, 10, 25, 3, 0, tzinfo=UTC)


def test_no_windows_is_always_open_and_never_changes() -> None:
    windows = TrafficWindows.parse([])
    assert not windows and windows.is_open(DAY) and windows.next_change(DAY) is None
    assert windows.describe() == "always open"


def test_overlapping_windows_covering_the_day_never_change() -> None:
    windows = TrafficWindows.parse(["00:00-13:00Z", "12:00-00:00Z"])
    assert windows.is_open(DAY) and windows.next_change(DAY) is None


def test_system_local_time_when_no_zone_is_given() -> None:
    windows = TrafficWindows.parse(["01:00-05:00"])
    now = dt.datetime(2026, 6, 10, 12, 0, tzinfo=UTC)
    wall = now.astimezone()
    inside = (wall.hour * 60 + wall.minute) in range(60, 300)
    assert windows.is_open(now) == inside
    assert windows.next_change(now) is not None


@pytest.mark.parametrize(
    "text, message",
    [
        ("1:00-05:00", "is not HH:MM-HH:MM"),
        ("01:00-05:00 BST", "is not HH:MM-HH:MM"),
        ("25:00-05:00", "its start 25:00 is not a time of day"),
        ("01:00-24:30", "its end 24:30 is not a time of day"),
        ("01:60-02:00", "its start 01:60 is not a time of day"),
        ("03:00-03:00", "starts where it ends"),
        (300, "expected a text"),
    ],
)
def test_refusals_name_the_window_and_the_form(text: object, message: str) -> None:
    with pytest.raises(WindowError, match=message) as info:
        TrafficWindows.parse(["01:00-02:00", text])
    assert "windows[1]" in str(info.value)


def test_parse_keeps_the_text_and_zone() -> None:
    w = parse_window(" 22:00-02:00 UTC ")
    assert (w.start, w.end, w.utc, w.text) == (1320, 120, True, "22:00-02:00 UTC")


def test_naive_times_are_refused() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        TrafficWindows.parse(["01:00-02:00"]).is_open(dt.datetime(2026, 1, 1))


# --------------------------------------------------------------------------- the session under a paused pacer


def test_a_long_pause_never_fails_a_push_by_our_own_doing() -> None:
    """WAIT_FOR_DATA stays under half the stall timeout, and a deferred page keeps its
    stall timer ahead of the deferral: a closed window is not the device's silence."""
    pacer = Pacer(bytes_per_s=10**6, burst_bytes=10**5, max_inflight=8, pause_retry_s=30.0)
    s = OtaSession(bytes(8), ImageInfo(0x121D, 0, 2, bytes(1000)), SessionConfig(stall_timeout_s=20.0), pacer)
    s.handle(ev.QueryNextImageRequested(0, 0x121D, 0, 1), 0.0)
    pacer.pause(0.0)
    (wait,) = [a for a in s.handle(ev.ImageBlockRequested(1, 0x121D, 0, 2, 0, 63), 0.0) if isinstance(a, ev.SendWaitForData)]
    assert wait.delay_s == 10
    s.handle(ev.ImagePageRequested(2, 0x121D, 0, 2, 0, 63, 512, 10), 1.0)
    now = 1.0
    for _ in range(20):  # ten minutes of deferrals
        now = s.get_timer() or now + 30
        s.handle_timer(now)
    assert s.state is ev.SessionState.TRANSFERRING and now > 500
    pacer.unpause()
    s.handle_timer(s.get_timer() or now)
    assert s.offset > 0
