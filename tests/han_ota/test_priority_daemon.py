"""Priorities, supersession and the queue through the daemon (issue 15 part 1).

The daemon in process on the simulated radio (tests/han_ota/test_daemon.py's Bench): a high
priority push to a device mid-transfer on a low one supersedes it in status, the
audit log (job.state superseded, gbcs.superseded with response code 1) and the
report; a CS06 for the old hash is refused; equal priority is refused without
--replace; a lower push waits queued, and the queue and the priorities survive a
restart.
"""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path
from typing import Any

import pytest

from gateway.audit import read_records
from gateway.config import OtaConfig
from gateway.report.figures import compute_trial
from gateway.report.records import parse_records
from gateway.store import StateStore
from han_ota.client import Client, DaemonError
from tests.han_ota.test_daemon import HCALCS, Bench, bench, call, events, image, make_config, short_dir, started  # noqa: F401

SLOW = OtaConfig(rate_bytes_per_s=8000, burst_bytes=1000)


def jobs_by_id(client: Client) -> dict[str, dict]:
    return {j["job"]: j for j in client.status()["jobs"]}


async def status_until(client: Client, job: str, predicate: Any, what: str) -> dict[str, dict]:
    """Poll the daemon's status (off the loop the daemon runs on) until ``predicate(job's view)``."""
    async with asyncio.timeout(30):
        while True:
            jobs = await call(jobs_by_id, client)
            if predicate(jobs[job]):
                return jobs
            await asyncio.sleep(0.05)


async def test_high_priority_push_supersedes_a_running_low_one(short_dir: Path, bench: Bench) -> None:
    cfg = make_config(short_dir, ota=SLOW)
    daemon = await started(cfg, bench)
    client = Client(cfg.control_socket)
    try:
        big = image(short_dir, size=40_000, version=2, name="big.ota")
        small = image(short_dir, size=2000, version=3, name="small.ota")
        low = await call(client.push, big, HCALCS, priority="low")
        assert low["priority"] == 1
        await status_until(client, low["job"], lambda j: j["bytes"] >= 4000, "the low job mid-transfer")

        with pytest.raises(DaemonError, match="--replace"):
            await call(client.push, small, HCALCS, priority=1)
        high = await call(client.push, small, HCALCS, priority="high")
        jobs = await call(jobs_by_id, client)
        assert jobs[low["job"]]["state"] == "superseded" and jobs[low["job"]]["superseded_by"] == high["job"]
        await status_until(client, high["job"], lambda j: j["state"] == "held", "the high job held")
        assert bench.device(HCALCS).events("abort"), "the device aborted the old download"

        store = StateStore.in_state_dir(cfg.state_dir)
        try:
            old = store.get_job(int(low["job"]))
            assert old.state.value == "superseded" and old.record.priority == 1
            assert store.get_job(int(high["job"])).record.priority == 9
        finally:
            store.close()

        log = events(cfg)
        accepted = {r.job: r.fields["priority"] for r in log if r.event == "job.accepted"}
        assert accepted == {int(low["job"]): 1, int(high["job"]): 9}
        assert [r.fields.get("supersedes") for r in log if r.event == "job.accepted"] == [None, int(low["job"])]
        assert any(r.event == "job.state" and r.job == int(low["job"]) and r.fields["new"] == "superseded" for r in log)
        (outcome,) = [r for r in log if r.event == "gbcs.superseded"]
        assert outcome.job == int(low["job"]) and outcome.fields["response_code"] == 1
        assert outcome.fields["message"].startswith("image discarded: superseded by job")

        # The report: superseded, image discarded, with its response code; priorities shown.
        trial = compute_trial(parse_records(r.as_dict() for r in read_records(cfg.state_dir / "audit.jsonl")), capacity_bps=SLOW.rate_bytes_per_s)
        figures = {d.job: d for d in trial.devices}
        assert figures[int(low["job"])].outcome.startswith("superseded: image discarded")
        assert figures[int(low["job"])].priority == "1" and figures[int(high["job"])].priority == "9"
        assert any(code.response_code == 1 for code in figures[int(low["job"])].gbcs)
    finally:
        await daemon.stop()


async def test_a_queued_push_and_the_priorities_survive_a_restart(short_dir: Path, bench: Bench) -> None:
    cfg = make_config(short_dir, ota=dataclasses.replace(OtaConfig(), priority_hcalcs=7))
    daemon = await started(cfg, bench)
    client = Client(cfg.control_socket)
    try:
        first = await call(client.push, image(short_dir, version=2, name="a.ota"), HCALCS)
        assert first["priority"] == 7  # [ota] priority_hcalcs
        await status_until(client, first["job"], lambda j: j["state"] == "held", "the first job held")
        later = await call(client.push, image(short_dir, version=3, name="b.ota"), HCALCS, priority="low")
        assert later["state"] == "queued" and later["queued_behind"] == first["job"]
        assert "1 queued" in (await call(client.status))["daemon"]["summary"]
    finally:
        await daemon.stop()

    daemon = await started(cfg, bench)
    client = Client(cfg.control_socket)
    try:
        jobs = await status_until(client, first["job"], lambda j: j["state"] == "held", "the first job restored")
        assert jobs[first["job"]]["state"] == "held" and jobs[first["job"]]["priority"] == 7
        assert jobs[later["job"]]["state"] == "queued" and jobs[later["job"]]["priority"] == 1
        await call(client.cancel, first["job"])
        await status_until(client, later["job"], lambda j: j["state"] == "held", "the queued job served")
        log = events(cfg)
        states = [r.fields["new"] for r in log if r.event == "job.state" and r.job == int(later["job"])]
        assert states[0] == "queued" and "pending" in states and states[-1] == "held", states
    finally:
        await daemon.stop()
