"""The store's priorities, queue and supersession (gateway/store.py schema step 5, issue 15)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from gateway import store as store_module
from gateway.ota.events import SessionState
from gateway.store import DeviceBusy, StateStore
from tests.gateway.test_store import record

DEVICE = "00:11:22:33:44:55:66:77"


def test_a_schema_4_store_gains_priorities_and_its_jobs_keep_theirs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with monkeypatch.context() as m:
        m.setattr(store_module, "SCHEMA_VERSION", 4)
        m.setattr(store_module, "_JOB_SELECT", store_module._JOB_SELECT.replace(", priority, queued", ""))
        with StateStore.in_state_dir(tmp_path) as old:
            raw = old._conn
            raw.execute(
                """INSERT INTO jobs (device, image_path, image_sha256, manufacturer_code, image_type, file_version, size, kind,
                       activation, created_utc, state, byte_offset, updated_utc)
                   VALUES (?, '/x', ?, 1, 2, 3, 4, 'hcalcs', '{"mode": "none"}', '2026-01-01T00:00:00.000000Z', 'transferring', 0,
                       '2026-01-01T00:00:00.000000Z')""",
                (DEVICE, "a" * 64),
            )
    with StateStore.in_state_dir(tmp_path) as s:
        assert s.schema_version == 5
        (job,) = s.list_jobs()
        assert job.record.priority == 5 and job.queued is False and job.state is SessionState.TRANSFERRING
        # The device is still busy for a second job that is not queued...
        with pytest.raises(DeviceBusy):
            s.create_job(record(DEVICE))
        # ...and a queued one waits behind it.
        queued = s.create_job(record(DEVICE, priority=1), queued=True)
        assert s.get_job(queued).queued and s.get_job(queued).record.priority == 1


def test_supersede_ends_the_old_job_in_the_same_transaction(tmp_path: Path) -> None:
    with StateStore.in_state_dir(tmp_path) as s:
        old = s.create_job(record(DEVICE, priority=1))
        s.update_job(old, state=SessionState.HELD, offset=100)
        new = s.create_job(record(DEVICE, priority=9), supersede=old, reason="superseded by a push of priority high (9)")
        ended = s.get_job(old)
        assert ended.state is SessionState.SUPERSEDED and not ended.active and ended.reason.startswith("superseded")
        assert [t.state for t in s.job_history(old)] == [SessionState.PENDING, SessionState.HELD, SessionState.SUPERSEDED]
        assert s.active_job_for_device(DEVICE).job_id == new
        # The engine's own update of the old job to superseded afterwards is harmless.
        s.update_job(old, state=SessionState.SUPERSEDED, reason="superseded by job 2")
        # supersede names the wrong job: the device's job stays, and the push is refused.
        with pytest.raises(DeviceBusy):
            s.create_job(record(DEVICE), supersede=old)


def test_a_queued_job_takes_the_device_only_once_it_is_free(tmp_path: Path) -> None:
    with StateStore.in_state_dir(tmp_path) as s:
        first = s.create_job(record(DEVICE))
        later = s.create_job(record(DEVICE, priority=1), queued=True)
        with pytest.raises(DeviceBusy, match=f"job {later} cannot take its device"):
            s.update_job(later, state=SessionState.PENDING, queued=False)
        assert s.get_job(later).queued
        s.update_job(first, state=SessionState.CANCELLED)
        s.update_job(later, state=SessionState.PENDING, queued=False)
        assert not s.get_job(later).queued and s.active_job_for_device(DEVICE).job_id == later


def test_priority_out_of_range_is_refused_before_sqlite(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="not a priority"):
        record(DEVICE, priority=10)
    with pytest.raises(ValueError, match="must be an integer"):
        record(DEVICE, priority="high")
    with StateStore.in_state_dir(tmp_path) as s, pytest.raises(sqlite3.IntegrityError):
        s._conn.execute("UPDATE jobs SET priority = 12")  # no rows, but the CHECK is compiled
        s._conn.execute(
            """INSERT INTO jobs (device, image_path, image_sha256, manufacturer_code, image_type, file_version, size, kind,
                   activation, created_utc, state, byte_offset, updated_utc, priority)
               VALUES (?, '/x', ?, 1, 2, 3, 4, 'hcalcs', '{}', 'x', 'pending', 0, 'x', 12)""",
            (DEVICE, "a" * 64),
        )
