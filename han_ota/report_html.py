"""The trial report as one self-contained HTML file: tables, and charts as inline SVG.

Why here and not in gateway/report: this is presentation, not protocol. The figures
are computed sans-I/O in gateway/report/figures.py; this module only lays them out,
and it is the one that needs matplotlib, which the daemon and the OTA path must never
load (a plotting library costs start-up time and memory on a Raspberry Pi hub).

Labs are offline: the file refers to nothing outside itself (no scripts, fonts,
images or style sheets to fetch); charts are matplotlib's SVG with text kept as text.
Every text taken from the records is escaped.
"""

from __future__ import annotations

import datetime as dt
import html
import io
import re
from collections.abc import Sequence
from typing import Any

from gateway.report.export import device_row, gbcs_text
from gateway.report.figures import DeviceFigures, TrialFigures

# The states the timeline draws, in the order of a push, with one colour each.
STATE_COLOURS = {
    "pending": "#b0b7c3",
    "queued": "#8d99ae",
    "transferring": "#3a86ff",
    "held": "#ffbe0b",
    "scheduled": "#fb8500",
    "activated": "#8ac926",
    "confirmed": "#2a9d55",
    "failed": "#d62828",
    "cancelled": "#6c757d",
    "superseded": "#9d4edd",
}
NO_TRAFFIC = "No background traffic recorded in this trial: the latency chart needs [[sim_traffic]] (issue 15 part 2) or another source of traffic.sample records."
_SVG_START = re.compile(r"<svg\b")
_SVG_METADATA = re.compile(r"<metadata>.*?</metadata>\s*", re.DOTALL)


def render(trial: TrialFigures, *, title: str, selection: str, audit_status: str, generated: dt.datetime) -> str:
    """The whole HTML document."""
    e = html.escape
    devices = trial.devices
    charts = [
        ("Progress of every device", _progress_chart(devices)),
        ("Throughput (all devices, and each)", _throughput_chart(trial)),
        ("States of each device", _timeline_chart(devices)),
    ]  # the background traffic's latency chart follows, in its own section
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{e(title)}</title>",
        f"<style>{_CSS}</style></head><body>",
        f"<h1>{e(title)}</h1>",
        f'<p class="meta">{e(selection)}<br>audit log: {e(audit_status)}<br>generated {e(_when(generated))}</p>',
        "<h2>Trial</h2>",
        _trial_table(trial),
        "<h2>Devices</h2>",
        _device_table(devices),
        "<h2>Outcomes and GBCS codes</h2>",
        _outcome_table(devices),
    ]
    for heading, svg in charts:
        parts.append(f'<h2>{e(heading)}</h2><figure class="chart">{svg}</figure>')
    parts.append("<h2>Background traffic</h2>")
    parts.append(_background_section(trial))
    parts.append("<h2>Notes</h2><ul>" + "".join(f"<li>{e(n)}</li>" for n in trial.notes) + "</ul>")
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


# --------------------------------------------------------------------------- tables


def _trial_table(trial: TrialFigures) -> str:
    share = trial.ota_channel_share
    rows = [
        ("from", _when(trial.start)),
        ("to", _when(trial.end)),
        ("span", _secs(trial.span_s)),
        ("devices", str(len(trial.devices))),
        ("channel capacity (the coordinator's budget)", f"{trial.capacity_bps:g} B/s"),
        ("HAN time used by OTA (at least one transfer running)", _secs(trial.ota_busy_s)),
        ("OTA bytes sent", f"{trial.ota_bytes}"),
        ("their air time at the channel's capacity", _secs(trial.ota_airtime_s)),
        ("share of the channel OTA took while it ran", "-" if share is None else f"{100 * share:.1f} %"),
    ]
    bg = trial.background
    if bg is None:
        rows.append(("background traffic", "no background traffic recorded"))
    else:
        rows.append(("background messages (lost)", f"{bg.samples} ({bg.lost})"))
        rows.append(("median latency with / without OTA", f"{_ms(bg.median_with_ota_s)} / {_ms(bg.median_without_ota_s)}"))
    body = "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>" for k, v in rows)
    return f'<table class="kv">{body}</table>'


_DEVICE_COLUMNS = (
    ("job", "job"),
    ("device", "device"),
    ("kind", "kind"),
    ("priority", "priority"),
    ("image", None),
    ("mode", "mode"),
    ("block B", "block_size"),
    ("transfer s", "transfer_s"),
    ("bytes", "bytes_sent"),
    ("B/s", "throughput_bps"),
    ("channel %", None),
    ("retries", "retries"),
    ("lost frames", "lost_frames"),
    ("WAIT_FOR_DATA", "wait_for_data"),
    ("WFD s", "wait_for_data_s"),
    ("page deferrals", "page_deferrals"),
    ("hold s", "hold_s"),
    ("activation latency s", "activation_latency_s"),
    ("state", "state"),
)


def _device_table(devices: Sequence[DeviceFigures]) -> str:
    head = "".join(f"<th>{html.escape(name)}</th>" for name, _ in _DEVICE_COLUMNS)
    rows = []
    for d in devices:
        row = device_row(d)
        cells = []
        for name, key in _DEVICE_COLUMNS:
            if name == "image":
                value: Any = f"0x{d.image.manufacturer_code:04X}/0x{d.image.image_type:04X} v0x{d.image.file_version:08X}, {d.image.size} B"
            elif name == "channel %":
                value = None if d.channel_share is None else f"{100 * d.channel_share:.1f}"
            else:
                value = row[key] if key else None
            cells.append(f"<td>{html.escape('-' if value is None else str(value))}</td>")
        rows.append("<tr>" + "".join(cells) + "</tr>")
    return f'<div class="wide"><table class="grid"><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table></div>'


def _outcome_table(devices: Sequence[DeviceFigures]) -> str:
    rows = []
    for d in devices:
        rows.append(
            f"<tr><td>{d.job}</td><td>{html.escape(d.device)}</td><td>{html.escape(d.outcome)}</td>"
            f"<td>{html.escape(gbcs_text(d) or '-')}</td></tr>"
        )
    return (
        '<table class="grid"><thead><tr><th>job</th><th>device</th><th>outcome</th><th>GBCS outcomes (response and alert codes)</th></tr></thead>'
        f"<tbody>{''.join(rows)}</tbody></table>"
    )


def _background_section(trial: TrialFigures) -> str:
    chart = f'<figure class="chart">{_latency_chart(trial)}</figure>'
    if trial.background is None:
        return f'<p class="empty">{html.escape(NO_TRAFFIC)}</p>{chart}'
    return chart


# --------------------------------------------------------------------------- charts


def _figure(height: float = 3.6) -> Any:
    # matplotlib's object API, not pyplot: no global state, no GUI backend.
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10, height), layout="constrained")
    return fig, fig.add_subplot()


def _svg(fig: Any) -> str:
    import matplotlib

    buf = io.StringIO()
    with matplotlib.rc_context({"svg.fonttype": "none", "svg.hashsalt": "han-ota"}):
        fig.savefig(buf, format="svg", metadata={"Date": None})
    text = buf.getvalue()
    found = _SVG_START.search(text)
    text = text[found.start() :] if found else text  # drop the XML prolog and DOCTYPE: inline SVG
    return _SVG_METADATA.sub("", text, count=1)  # and the RDF block: four charts need no licence notes


def _label(d: DeviceFigures) -> str:
    return f"job {d.job} {d.device}"


def _progress_chart(devices: Sequence[DeviceFigures]) -> str:
    fig, ax = _figure(4.2)
    for d in devices:
        if d.progress:
            ts, pct = zip(*d.progress)
            ax.plot(ts, pct, marker=".", linewidth=1.2, label=_label(d))
    ax.set_xlabel("seconds after the trial's start")
    ax.set_ylabel("image sent (%)")
    ax.set_ylim(0, 102)
    ax.grid(alpha=0.3)
    if any(d.progress for d in devices):
        ax.legend(fontsize="x-small", ncols=2, loc="lower right")
    else:
        ax.text(0.5, 0.5, "no block was served", ha="center", transform=ax.transAxes)
    return _svg(fig)


def _throughput_chart(trial: TrialFigures) -> str:
    fig, ax = _figure()
    for d in trial.devices:
        xs, ys = _steps(d.rate)
        if xs:
            ax.plot(xs, ys, linewidth=0.8, alpha=0.45)
    xs, ys = _steps(trial.throughput)
    if xs:
        ax.plot(xs, ys, color="black", linewidth=1.8, label="all devices")
    ax.axhline(trial.capacity_bps, color="#d62828", linestyle="--", linewidth=1, label=f"channel capacity {trial.capacity_bps:g} B/s")
    ax.set_xlabel("seconds after the trial's start")
    ax.set_ylabel("bytes per second")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small", loc="upper right")
    return _svg(fig)


def _steps(segments: Sequence[Any]) -> tuple[list[float], list[float]]:
    xs: list[float] = []
    ys: list[float] = []
    for s in segments:
        xs += [s.start_s, s.end_s]
        ys += [s.bytes_per_s, s.bytes_per_s]
    return xs, ys


def _timeline_chart(devices: Sequence[DeviceFigures]) -> str:
    from matplotlib.patches import Patch

    fig, ax = _figure(max(2.0, 0.45 * len(devices) + 1.2))
    seen: dict[str, str] = {}
    for row, d in enumerate(devices):
        for p in d.periods:
            colour = STATE_COLOURS.get(p.state, "#000000")
            seen.setdefault(p.state, colour)
            ax.broken_barh([(p.start_s, max(p.end_s - p.start_s, 0.05))], (row - 0.4, 0.8), facecolors=colour)
    ax.set_yticks(range(len(devices)), [_label(d) for d in devices], fontsize="x-small")
    ax.invert_yaxis()
    ax.set_xlabel("seconds after the trial's start")
    ax.grid(axis="x", alpha=0.3)
    order = [s for s in STATE_COLOURS if s in seen] + [s for s in seen if s not in STATE_COLOURS]
    fig.legend(handles=[Patch(color=seen[s], label=s) for s in order], fontsize="x-small", ncols=max(1, len(order)), loc="outside lower center")
    return _svg(fig)


def _latency_chart(trial: TrialFigures) -> str:
    # The OTA periods are marked even with no traffic: the chart then says what is missing.
    bg = trial.background
    fig, ax = _figure(2.8 if bg is None else 3.6)
    for n, (a, b) in enumerate(trial.ota_periods):
        ax.axvspan(a, b, color="#3a86ff", alpha=0.12, label="OTA transferring" if n == 0 else None)
    points = () if bg is None else bg.points
    delivered = [p for p in points if p.latency_s is not None]
    lost = [p for p in points if p.latency_s is None]
    if bg is None:
        ax.text(0.5, 0.5, "no background traffic recorded", ha="center", va="center", transform=ax.transAxes)
        ax.set_xlim(0, max(trial.span_s, 1.0))
    if delivered:
        ax.scatter([p.t_s for p in delivered], [1000 * (p.latency_s or 0) for p in delivered], s=10, label="delivered")
    if lost:
        ax.scatter([p.t_s for p in lost], [0] * len(lost), marker="x", color="#d62828", label="lost")
    ax.set_xlabel("seconds after the trial's start")
    ax.set_ylabel("latency (ms)")
    ax.grid(alpha=0.3)
    if trial.ota_periods or points:
        ax.legend(fontsize="small", loc="upper right")
    return _svg(fig)


# --------------------------------------------------------------------------- text


def _when(value: dt.datetime) -> str:
    return value.astimezone(dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def _secs(value: float) -> str:
    return f"{value:.1f} s"


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{1000 * value:.1f} ms"


_CSS = """
body{font-family:system-ui,sans-serif;margin:1.5em;color:#222;max-width:1200px}
h1{font-size:1.5em}h2{font-size:1.15em;margin-top:1.6em;border-bottom:1px solid #ddd}
.meta{color:#555;font-size:.9em}
table{border-collapse:collapse;font-size:.85em}
th,td{border:1px solid #ddd;padding:.25em .5em;text-align:left;vertical-align:top}
table.grid thead th{background:#f3f4f6}
table.kv th{font-weight:normal;color:#555}
figure.chart{margin:0}figure.chart svg{width:100%;height:auto}
.empty{color:#555;font-style:italic}
.wide{overflow-x:auto}
"""
