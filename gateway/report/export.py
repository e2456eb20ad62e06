"""The trial's figures as JSON (everything, series included) and CSV (one row per device).

Text only: the caller writes it where it was asked to. Field names are the figures'
own (gateway.report.figures), times are seconds or UTC ISO 8601, rates bytes/s,
shares 0..1; a figure that does not apply is null in JSON and empty in CSV.
"""

from __future__ import annotations

import csv
import io
import json
from typing import Any

from gateway.report.figures import DeviceFigures, TrialFigures

FORMAT = "han-ota-report/1"

CSV_COLUMNS = (
    "job",
    "device",
    "kind",
    "priority",
    "manufacturer_code",
    "image_type",
    "file_version",
    "image_size",
    "image_sha256",
    "activation",
    "mode",
    "block_size",
    "transfer_s",
    "bytes_sent",
    "throughput_bps",
    "channel_share",
    "retries",
    "lost_frames",
    "wait_for_data",
    "wait_for_data_s",
    "page_deferrals",
    "page_deferral_s",
    "hold_s",
    "activation_latency_s",
    "state",
    "outcome",
    "gbcs_codes",
)


def _iso(value: Any) -> str:
    return str(value.strftime("%Y-%m-%dT%H:%M:%S.%fZ"))


def gbcs_text(device: DeviceFigures) -> str:
    """A device's GBCS codes in one line: ``transfer alert 0x8F8A; verdict refused response 2 alert 0x8F1C``."""
    parts = []
    for g in device.gbcs:
        words = [g.step]
        if g.accepted is not None:
            words.append("accepted" if g.accepted else "refused")
        if g.response_code is not None:
            words.append(f"response {g.response_code}")
        if g.alert_code is not None:
            words.append(f"alert {g.alert_text}")
        parts.append(" ".join(words))
    return "; ".join(parts)


def device_row(d: DeviceFigures) -> dict[str, Any]:
    """The device's scalar figures, keyed by CSV_COLUMNS."""
    return {
        "job": d.job,
        "device": d.device,
        "kind": d.kind,
        "priority": d.priority,
        "manufacturer_code": d.image.manufacturer_code,
        "image_type": d.image.image_type,
        "file_version": d.image.file_version,
        "image_size": d.image.size,
        "image_sha256": d.image.sha256,
        "activation": d.activation,
        "mode": d.mode,
        "block_size": d.block_size,
        "transfer_s": _r(d.transfer_s),
        "bytes_sent": d.bytes_sent,
        "throughput_bps": _r(d.throughput_bps),
        "channel_share": _r(d.channel_share, 4),
        "retries": d.retries,
        "lost_frames": d.lost_frames,
        "wait_for_data": d.wait_for_data,
        "wait_for_data_s": _r(d.wait_for_data_s),
        "page_deferrals": d.page_deferrals,
        "page_deferral_s": _r(d.page_deferral_s),
        "hold_s": _r(d.hold_s),
        "activation_latency_s": _r(d.activation_latency_s),
        "state": d.state,
        "outcome": d.outcome,
        "gbcs_codes": gbcs_text(d),
    }


def to_json_obj(trial: TrialFigures) -> dict[str, Any]:
    devices = []
    for d in trial.devices:
        row = device_row(d)
        row["reason"] = d.reason
        row["gbcs"] = [
            {"step": g.step, "at": _iso(g.at), "accepted": g.accepted, "response_code": g.response_code, "alert_code": g.alert_text, "message": g.message}
            for g in d.gbcs
        ]
        row["periods"] = [{"state": p.state, "start_s": _r(p.start_s), "end_s": _r(p.end_s)} for p in d.periods]
        row["progress"] = [[_r(t), _r(pct)] for t, pct in d.progress]
        row["rate"] = [[_r(s.start_s), _r(s.end_s), _r(s.bytes_per_s)] for s in d.rate]
        devices.append(row)
    bg = trial.background
    background = None
    if bg is not None:
        background = {
            "samples": bg.samples,
            "lost": bg.lost,
            "median_latency_s": _r(bg.median_latency_s, 4),
            "median_with_ota_s": _r(bg.median_with_ota_s, 4),
            "median_without_ota_s": _r(bg.median_without_ota_s, 4),
            "points": [[_r(p.t_s), _r(p.latency_s, 4), p.during_ota, p.kind] for p in bg.points],
        }
    return {
        "format": FORMAT,
        "trial": {
            "start": _iso(trial.start),
            "end": _iso(trial.end),
            "span_s": _r(trial.span_s),
            "capacity_bps": trial.capacity_bps,
            "devices": len(trial.devices),
            "ota_busy_s": _r(trial.ota_busy_s),
            "ota_bytes": trial.ota_bytes,
            "ota_airtime_s": _r(trial.ota_airtime_s),
            "ota_channel_share": _r(trial.ota_channel_share, 4),
            "ota_periods": [[_r(a), _r(b)] for a, b in trial.ota_periods],
            "throughput": [[_r(s.start_s), _r(s.end_s), _r(s.bytes_per_s)] for s in trial.throughput],
            "background": background,
            "notes": list(trial.notes),
        },
        "devices": devices,
    }


def to_json(trial: TrialFigures) -> str:
    return json.dumps(to_json_obj(trial), indent=1, allow_nan=False) + "\n"


def to_csv(trial: TrialFigures) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for d in trial.devices:
        writer.writerow({k: "" if v is None else v for k, v in device_row(d).items()})
    return out.getvalue()


def _r(value: float | None, digits: int = 3) -> float | None:
    return None if value is None else round(value, digits)
