"""gateway/report: figures from a known audit log, exact numbers (issue 15 part 3).

A hand-written trial whose every figure is worked out below, then the real one in
tests/data/report/trial10.audit.jsonl (10 simulated devices through `han-ota run`,
see tests/data/report/README.md).
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import pytest

from gateway.report.export import CSV_COLUMNS, to_csv, to_json_obj
from gateway.report.figures import NoTrialData, RateSegment, compute_trial, total_rate
from gateway.report.records import ImageRef, JobIdentity, ReportInputError, StoredJob, parse_record, parse_records

DATA = Path(__file__).parents[2] / "data" / "report"
T0 = dt.datetime(2026, 12, 4, 0, 0, 0, tzinfo=dt.timezone.utc)
A, B = "00:11:22:33:44:55:66:01", "00:11:22:33:44:55:66:02"


def at(seconds: float) -> str:
    return (T0 + dt.timedelta(seconds=seconds)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def log(*entries: tuple[float, str, str | None, int | None, dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        {"seq": n, "ts": at(t), "event": event, "device": device, "job": job, "prev": "0" * 64, "hash": "0" * 64, **fields}
        for n, (t, event, device, job, fields) in enumerate(entries, start=1)
    ]


def accepted(size: int, kind: str, **extra: Any) -> dict[str, Any]:
    return {"size": size, "kind": kind, "manufacturer_code": 0x121D, "image_type": 0, "file_version": 2, "sha256": "ab" * 32, "activation": "none", **extra}


def state(old: str, new: str, offset: int, reason: str | None = None) -> dict[str, Any]:
    return {"old": old, "new": new, "offset": offset, "reason": reason}


TRIAL = log(
    # Device A, job 1: block requests, a notify repeated, two WAIT_FOR_DATA, held, a refused CS06, activated.
    (0, "job.accepted", A, 1, accepted(1000, "hcalcs")),
    (1, "ota.sent", A, 1, {"command": "SendImageNotify"}),
    (2, "ota.sent", A, 1, {"command": "SendImageNotify"}),
    (3, "job.state", A, 1, state("pending", "transferring", 0, "device queried; image offered")),
    (3, "ota.first_block", A, 1, {"message": "first block requested", "offset": 0}),
    (3.5, "job.progress", A, 1, {"offset": 50, "size": 1000, "percent": 0}),
    (4, "ota.sent", A, 1, {"command": "SendWaitForData", "delay_s": 2, "minimum_block_period_ms": 100}),
    (5, "ota.sent", A, 1, {"command": "SendWaitForData", "delay_s": 1, "minimum_block_period_ms": 100}),
    (5, "traffic.sample", A, None, {"kind": "metering", "latency_ms": 40}),
    # Device B, job 2: page requests, a notify lost, a nudge, two deferred page blocks, then it stalls.
    (6, "job.accepted", B, 2, accepted(600, "ppmid", priority="low")),
    (7, "ota.warning", B, 2, {"message": "Image Notify not delivered (timeout); the push stays pending until the device queries", "offset": None}),
    (7.5, "job.nudge", B, 2, {"offset": 0, "attempt": 1}),
    (8, "job.progress", A, 1, {"offset": 500, "size": 1000, "percent": 50}),
    (8, "job.state", B, 2, state("pending", "transferring", 0)),
    (8, "ota.page", B, 2, {"message": "page request: 256 bytes from offset 0 in blocks of at most 48, 20 ms apart", "offset": 0}),
    (9, "ota.pacing", B, 2, {"message": "radio budget spent: page block at offset 96 deferred 0.250 s", "offset": 96}),
    (10, "ota.pacing", B, 2, {"message": "radio budget spent: page block at offset 144 deferred 0.125 s", "offset": 144}),
    (11, "job.progress", B, 2, {"offset": 300, "size": 600, "percent": 50}),
    (13, "job.state", A, 1, state("transferring", "held", 1000)),
    (13, "gbcs.transfer", A, 1, {"alert_code": "0x8F8A", "response_code": None, "message": "1000 bytes transferred"}),
    (13, "gbcs.device_verification", A, 1, {"alert_code": "0x8F72", "response_code": None, "message": "held"}),
    (14, "job.state", B, 2, state("transferring", "failed", 300, "stalled: no request for 120 s")),
    (20, "gbcs.verdict", A, 1, {"accepted": False, "alert_code": "0x8F1C", "response_code": 2, "message": "refused: hash mismatch"}),
    (20, "traffic.sample", A, None, {"kind": "metering", "latency_ms": 10}),
    (21, "traffic.sample", B, None, {"kind": "price", "latency_ms": None}),
    (23, "job.state", A, 1, state("held", "activated", 1000)),
    (25, "job.state", A, 1, state("activated", "confirmed", 1000)),
    (25, "gbcs.activation", A, 1, {"alert_code": "0x8F43", "response_code": 0, "message": "device reports version 0x00000002"}),
    (26, "radio.down", None, None, {"reason": "unplugged"}),
    (30, "traffic.sample", A, None, {"kind": "metering", "latency_ms": 20}),
)


def test_every_figure_of_a_known_trial() -> None:
    trial = compute_trial(parse_records(TRIAL), capacity_bps=500)
    a, b = trial.devices
    assert (a.job, a.device, a.kind, a.priority, b.priority) == (1, A, "hcalcs", None, "low")
    assert (a.mode, a.block_size, b.mode, b.block_size) == ("block", 50, "page", 48)
    # A: transferring 3..13 s, 1000 bytes.
    assert (a.transfer_s, a.bytes_sent, a.throughput_bps, a.channel_share) == (10.0, 1000, 100.0, 0.2)
    assert (a.retries, a.lost_frames) == (1, 0)  # the second Image Notify
    assert (a.wait_for_data, a.wait_for_data_s, a.page_deferrals) == (2, 3.0, 0)
    assert (a.hold_s, a.activation_latency_s) == (10.0, 2.0)
    assert (a.state, a.outcome) == ("confirmed", "activated and confirmed")
    assert [(g.step, g.accepted, g.response_code, g.alert_text) for g in a.gbcs] == [
        ("transfer", None, None, "0x8F8A"),
        ("device_verification", None, None, "0x8F72"),
        ("verdict", False, 2, "0x8F1C"),
        ("activation", None, 0, "0x8F43"),
    ]
    assert [(p.state, p.start_s, p.end_s) for p in a.periods] == [
        ("pending", 0, 3),
        ("transferring", 3, 13),
        ("held", 13, 23),
        ("activated", 23, 25),
        ("confirmed", 25, 30),  # to the trial's last record
    ]
    assert a.progress == ((3, 0.0), (3.5, 5.0), (8, 50.0), (13, 100.0), (23, 100.0), (25, 100.0))
    # B: transferring 8..14 s, 300 bytes, then failed.
    assert (b.transfer_s, b.bytes_sent, b.throughput_bps, b.channel_share) == (6.0, 300, 50.0, 0.1)
    assert (b.retries, b.lost_frames) == (1, 1)  # the nudge; the undelivered notify
    assert (b.wait_for_data, b.page_deferrals, b.page_deferral_s) == (0, 2, 0.375)
    assert (b.hold_s, b.activation_latency_s) == (0, None)
    assert b.outcome == "failed: stalled: no request for 120 s"
    # The trial: OTA ran from 3 s (A) to 14 s (B); 1300 bytes are 2.6 s at 500 B/s.
    assert (trial.start, trial.span_s) == (T0, 30.0)
    assert trial.ota_periods == ((3, 14),)
    assert (trial.ota_busy_s, trial.ota_bytes, trial.ota_airtime_s) == (11.0, 1300, 2.6)
    assert trial.ota_channel_share == pytest.approx(2.6 / 11)
    assert trial.throughput == (RateSegment(3, 8, 100.0), RateSegment(8, 11, 200.0), RateSegment(11, 13, 100.0))
    bg = trial.background
    assert bg is not None
    assert (bg.samples, bg.lost, bg.median_with_ota_s, bg.median_without_ota_s) == (4, 1, 0.04, 0.015)
    assert [p.during_ota for p in bg.points] == [True, False, False, False]


def test_no_background_traffic_is_none_not_zero() -> None:
    rows = [r for r in TRIAL if r["event"] != "traffic.sample"]
    trial = compute_trial(parse_records(rows), capacity_bps=500)
    assert trial.background is None and trial.span_s == 25.0
    assert to_json_obj(trial)["trial"]["background"] is None


def test_selection_by_job_and_window() -> None:
    records = parse_records(TRIAL)
    only_b = compute_trial(records, capacity_bps=500, jobs=[2])
    # The trial starts at its first record, background traffic included (a sample at 5 s).
    assert [d.job for d in only_b.devices] == [2] and only_b.start == T0 + dt.timedelta(seconds=5)
    # From 6 s on, job 1's acceptance is outside the window: the store has to name it.
    since = T0 + dt.timedelta(seconds=6)
    with pytest.raises(NoTrialData, match="job 1: its job.accepted record is outside the selection"):
        compute_trial(records, capacity_bps=500, since=since)
    stored = StoredJob(1, JobIdentity(A, "hcalcs", ImageRef(0x121D, 0, 2, 1000, "ab" * 32), "none"), "confirmed", None, T0)
    trial = compute_trial(records, capacity_bps=500, since=since, stored=[stored])
    a = trial.devices[0]
    assert (a.job, a.image.size, a.transfer_s, a.bytes_sent) == (1, 1000, 7.0, 1000)  # 6..13 s inside the window
    assert a.periods[0].state == "transferring"  # the first change's old state
    until = compute_trial(records, capacity_bps=500, until=T0 + dt.timedelta(seconds=10))
    assert [d.state for d in until.devices] == ["transferring", "transferring"]
    with pytest.raises(NoTrialData, match="no job has records"):
        compute_trial(records, capacity_bps=500, jobs=[9])


def test_total_rate_sums_overlapping_segments() -> None:
    assert total_rate([RateSegment(0, 4, 10), RateSegment(2, 6, 5)]) == (RateSegment(0, 2, 10), RateSegment(2, 4, 15), RateSegment(4, 6, 5))
    assert total_rate([]) == ()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"ts": "yesterday"}, "audit record 1 (job.state): field 'ts' must be an ISO 8601 UTC time"),
        ({"new": 3}, "audit record 1 (job.state): field 'new' must be a string, got 3"),
        ({"offset": "10"}, "audit record 1 (job.state): field 'offset' must be an integer, got '10'"),
        ({"job": "1"}, "audit record 1 (job.state): field 'job' must be an integer, got '1'"),
        ({"seq": 0}, "audit record 0 (job.state): field 'seq' must be a positive integer, got 0"),
    ],
)
def test_a_record_it_cannot_read_is_refused_by_seq_and_field(change: dict[str, Any], message: str) -> None:
    row = {**log((0, "job.state", A, 1, state("pending", "transferring", 0)))[0], **change}
    with pytest.raises(ReportInputError) as info:
        parse_record(row)
    assert str(info.value).startswith(message)


def test_other_refusals_and_what_is_skipped() -> None:
    (row,) = log((0, "gbcs.transfer", A, 1, {"alert_code": "8F8A?", "message": "x"}))
    with pytest.raises(ReportInputError, match="field 'alert_code' must be a hex code such as 0x8F8A, got '8F8A\\?'"):
        parse_record(row)
    (row,) = log((0, "traffic.sample", A, None, {"kind": "metering", "latency_ms": -1}))
    with pytest.raises(ReportInputError, match="'latency_ms' must be a non-negative number"):
        parse_record(row)
    skipped = log((0, "daemon.start", None, None, {}), (1, "gbcs.command", None, None, {"length": 3}), (2, "ke.established", A, None, {}))
    assert parse_records(skipped) == []
    with pytest.raises(ValueError, match="capacity must be positive"):
        compute_trial(parse_records(TRIAL), capacity_bps=0)


# --------------------------------------------------------------------------- a real trial


def real_trial() -> Any:
    rows = [json.loads(line) for line in (DATA / "trial10.audit.jsonl").read_text().splitlines()]
    return compute_trial(parse_records(rows), capacity_bps=2500)  # its config's rate_bytes_per_s


def test_a_real_ten_device_trial() -> None:
    trial = real_trial()
    by_job = {d.job: d for d in trial.devices}
    assert sorted(by_job) == list(range(1, 11))
    assert {j: d.state for j, d in by_job.items() if d.state != "confirmed"} == {5: "held", 6: "cancelled"}
    assert by_job[6].outcome == "cancelled: cancelled by the user" and by_job[6].bytes_sent == 2394
    assert [(d.mode, d.block_size) for d in trial.devices] == [("block", 63)] * 6 + [("block", 48), ("page", 48), ("block", 48), ("block", 48)]
    assert sum(d.wait_for_data for d in trial.devices) == 27  # the log's SendWaitForData records
    assert by_job[8].page_deferrals == 205
    assert round(by_job[1].transfer_s, 3) == 27.727 and by_job[1].bytes_sent == 12122
    refused = [g for g in by_job[4].gbcs if g.accepted is False]
    assert [(g.response_code, g.alert_text) for g in refused] == [(2, "0x8F1C")]
    assert all(d.activation_latency_s is not None for d in trial.devices if d.state == "confirmed")
    assert trial.ota_bytes == sum(d.bytes_sent for d in trial.devices) == 6 * 12122 - 12122 + 2394 + 4 * 12056
    assert trial.background is None


def test_json_and_csv_carry_the_same_figures() -> None:
    trial = real_trial()
    obj = to_json_obj(trial)
    assert obj["format"] == "han-ota-report/1" and obj["trial"]["devices"] == 10
    lines = to_csv(trial).splitlines()
    assert lines[0].split(",") == list(CSV_COLUMNS) and len(lines) == 11
    import csv

    rows = list(csv.DictReader(lines))
    for row, device in zip(rows, obj["devices"]):
        for column in CSV_COLUMNS:
            value = device[column]
            assert row[column] == ("" if value is None else str(value)), column
