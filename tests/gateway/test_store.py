"""gateway.store: the durable state the daemon must never lose."""

from __future__ import annotations

import datetime as dt
import os
import random
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from gateway import store as store_module
from gateway.ota.events import SessionState
from gateway.store import (
    ActivationMode,
    ActivationRequest,
    CounterNotIncreasing,
    DeviceBusy,
    JobClosed,
    JobKind,
    JobRecord,
    SchemaTooNew,
    StateDirectoryMissing,
    StateStore,
    StoreError,
    UnknownJob,
    Verdict,
)

UTC = dt.timezone.utc
T0 = dt.datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)
SUPPLIER = "90b3d51f30010000"


def record(device: str = "00:11:22:33:44:55:66:77", **changes: object) -> JobRecord:
    fields: dict[str, object] = dict(
        device=device,
        image_path="/var/lib/han-ota/images/ppmid.ota",
        image_sha256="ab" * 32,
        manufacturer_code=0x1234,
        image_type=0x0001,
        file_version=0x01020304,
        size=123456,
        kind=JobKind.PPMID,
        activation=ActivationRequest.none(),
        created_utc=T0,
    )
    fields.update(changes)
    return JobRecord(**fields)  # type: ignore[arg-type]


@pytest.fixture
def store(tmp_path: Path):
    s = StateStore(tmp_path / "state.sqlite3")
    yield s
    s.close()


# --------------------------------------------------------------------------- opening


def test_pragmas_are_wal_and_full_sync(tmp_path: Path) -> None:
    with StateStore(tmp_path / "s.db") as s:
        conn = s._conn  # the pragmas are per connection: check the store's own
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
        assert conn.execute("PRAGMA foreign_keys").fetchone()[0] == 1
        assert s.schema_version == store_module.SCHEMA_VERSION


def test_missing_state_directory_names_it_and_the_fix(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-dir"
    with pytest.raises(StateDirectoryMissing) as info:
        StateStore(missing / "state.sqlite3")
    message = str(info.value)
    assert str(missing) in message
    assert "mkdir" in message and "StateDirectory=han-ota" in message
    assert not missing.exists()


def test_in_state_dir_uses_the_default_file_name(tmp_path: Path) -> None:
    with StateStore.in_state_dir(tmp_path) as s:
        assert s.path == tmp_path / store_module.DEFAULT_FILENAME
    assert (tmp_path / store_module.DEFAULT_FILENAME).is_file()


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores directory permissions")
def test_unwritable_state_directory_is_a_store_error(tmp_path: Path) -> None:
    tmp_path.chmod(0o500)
    try:
        with pytest.raises(StoreError, match="writable"):
            StateStore(tmp_path / "s.db")
    finally:
        tmp_path.chmod(0o700)


def test_newer_schema_is_refused_with_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    StateStore(path).close()
    raw = sqlite3.connect(path)
    raw.execute("PRAGMA user_version = 99")
    raw.commit()
    raw.close()
    with pytest.raises(SchemaTooNew) as info:
        StateStore(path)
    assert "schema 99" in str(info.value) and "Upgrade han-ota" in str(info.value)
    assert str(path) in str(info.value)


def test_migration_hook_runs_pending_steps_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "s.db"
    with StateStore(path) as s:
        job_id = s.create_job(record())
    calls: list[int] = []

    nxt = store_module.SCHEMA_VERSION + 1

    def to_2(conn: sqlite3.Connection) -> None:
        calls.append(nxt)
        conn.execute("ALTER TABLE jobs ADD COLUMN note TEXT")

    monkeypatch.setattr(store_module, "SCHEMA_VERSION", nxt)
    monkeypatch.setattr(store_module, "MIGRATIONS", {**store_module.MIGRATIONS, nxt: to_2})
    with StateStore(path) as s:
        assert s.schema_version == nxt
        assert s.get_job(job_id).record == record()  # old data survives the upgrade
    with StateStore(path) as s:
        assert s.schema_version == nxt
    assert calls == [nxt]


def test_failed_migration_leaves_the_old_schema(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "s.db"
    StateStore(path).close()

    def broken(conn: sqlite3.Connection) -> None:
        conn.execute("CREATE TABLE half_done (x)")
        raise RuntimeError("migration bug")

    current = store_module.SCHEMA_VERSION
    monkeypatch.setattr(store_module, "SCHEMA_VERSION", current + 1)
    monkeypatch.setattr(store_module, "MIGRATIONS", {**store_module.MIGRATIONS, current + 1: broken})
    with pytest.raises(RuntimeError, match="migration bug"):
        StateStore(path)
    raw = sqlite3.connect(path)
    assert raw.execute("PRAGMA user_version").fetchone()[0] == current
    assert raw.execute("SELECT count(*) FROM sqlite_master WHERE name = 'half_done'").fetchone()[0] == 0
    raw.close()


def test_a_file_that_is_not_sqlite_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    path.write_bytes(b"this is not a database, it is a shopping list\n" * 100)
    with pytest.raises(StoreError, match="not a readable SQLite database"):
        StateStore(path)


# --------------------------------------------------------------------------- jobs


def test_job_round_trip_and_state_updates(store: StateStore) -> None:
    rec = record(activation=ActivationRequest.command("D9" * 8), kind=JobKind.HCALCS)
    job_id = store.create_job(rec)
    job = store.get_job(job_id)
    assert job.record == rec and job.record.activation.command_hex == "d9" * 8
    assert job.state is SessionState.PENDING and job.offset == 0 and job.session_snapshot is None and job.active

    updated = store.update_job(job_id, state=SessionState.TRANSFERRING, offset=4096, session_snapshot={"block": 64})
    assert (updated.state, updated.offset, updated.session_snapshot) == (SessionState.TRANSFERRING, 4096, {"block": 64})
    # offset and snapshot left out keep their values; reason describes the new state
    held = store.update_job(job_id, state=SessionState.HELD, reason="awaiting GBCS command")
    assert (held.offset, held.session_snapshot, held.reason) == (4096, {"block": 64}, "awaiting GBCS command")
    assert store.update_job(job_id, state=SessionState.HELD).reason is None
    assert [t.state for t in store.job_history(job_id)] == [
        SessionState.PENDING,
        SessionState.TRANSFERRING,
        SessionState.HELD,
    ]
    assert store.get_job(job_id) == store.list_jobs()[0]


def test_device_forms_are_normalised(store: StateStore) -> None:
    job_id = store.create_job(record(device="0011223344556677"))
    assert store.get_job(job_id).record.device == "00:11:22:33:44:55:66:77"
    assert store.active_job_for_device("00:11:22:33:44:55:66:77").job_id == job_id  # type: ignore[union-attr]
    assert store.active_job_for_device("00112233445566AA") is None
    with pytest.raises(ValueError, match="IEEE"):
        record(device="0011")


def test_one_active_job_per_device(store: StateStore) -> None:
    first = store.create_job(record())
    with pytest.raises(DeviceBusy, match=f"active job {first}"):
        store.create_job(record())
    other = store.create_job(record(device="aa:bb:cc:dd:ee:ff:00:11"))
    store.update_job(first, state=SessionState.FAILED, reason="device left")
    second = store.create_job(record())
    assert store.active_job_for_device("00:11:22:33:44:55:66:77").job_id == second  # type: ignore[union-attr]
    assert [j.job_id for j in store.list_jobs(active_only=True)] == [other, second]
    assert [j.job_id for j in store.list_jobs()] == [first, other, second]


def test_end_states_are_final(store: StateStore) -> None:
    job_id = store.create_job(record())
    store.update_job(job_id, state=SessionState.CANCELLED, reason="operator")
    with pytest.raises(JobClosed, match="cancelled and cannot become transferring"):
        store.update_job(job_id, state=SessionState.TRANSFERRING)
    assert store.get_job(job_id).state is SessionState.CANCELLED


def test_unknown_job_is_named(store: StateStore) -> None:
    with pytest.raises(UnknownJob, match="no job 42"):
        store.get_job(42)
    with pytest.raises(UnknownJob, match="no job 42"):
        store.update_job(42, state=SessionState.FAILED)
    with pytest.raises(UnknownJob):
        store.schedule_activation(42, T0, "00")


def test_job_ids_are_never_reused(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    with StateStore(path) as s:
        first = s.create_job(record())
        s._conn.execute("DELETE FROM job_history")  # simulate manual pruning of old rows
        s._conn.execute("DELETE FROM jobs")
    with StateStore(path) as s:
        assert s.create_job(record()) > first


def test_bad_records_are_refused_before_touching_the_database() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        record(created_utc=dt.datetime(2026, 1, 1))
    with pytest.raises(ValueError, match="image_sha256"):
        record(image_sha256="xyz")
    with pytest.raises(ValueError, match="file_version"):
        record(file_version=-1)
    with pytest.raises(ValueError, match="command_hex"):
        ActivationRequest(ActivationMode.NOW, "00")
    with pytest.raises(ValueError, match="command_hex"):
        ActivationRequest.command("0")


# --------------------------------------------------------------------------- schedules


def test_schedules_due_and_cancel(store: StateStore) -> None:
    a = store.create_job(record())
    b = store.create_job(record(device="aa:bb:cc:dd:ee:ff:00:11"))
    store.schedule_activation(b, T0 + dt.timedelta(hours=2), "0102")
    store.schedule_activation(a, T0 + dt.timedelta(hours=1), "0A0B")
    assert [s.job_id for s in store.list_schedules()] == [a, b]
    assert store.due_schedules(T0) == []
    due = store.due_schedules(T0 + dt.timedelta(hours=1))
    assert [(s.job_id, s.at_utc, s.command_hex) for s in due] == [(a, T0 + dt.timedelta(hours=1), "0a0b")]
    # a non-UTC aware time means the same instant
    plus_one = dt.timezone(dt.timedelta(hours=1))
    assert [s.job_id for s in store.due_schedules((T0 + dt.timedelta(hours=3)).astimezone(plus_one))] == [a, b]
    # re-scheduling replaces
    store.schedule_activation(a, T0 + dt.timedelta(hours=5), "ff")
    assert [s.job_id for s in store.list_schedules()] == [b, a]
    assert store.cancel_schedule(a) is True
    assert store.cancel_schedule(a) is False
    assert [s.job_id for s in store.list_schedules()] == [b]
    with pytest.raises(ValueError, match="timezone-aware"):
        store.due_schedules(dt.datetime(2026, 1, 1))


def test_reaching_an_end_state_drops_the_schedule(store: StateStore) -> None:
    job_id = store.create_job(record())
    store.schedule_activation(job_id, T0, "00")
    store.update_job(job_id, state=SessionState.CANCELLED, reason="operator")
    assert store.list_schedules() == []
    with pytest.raises(JobClosed):
        store.schedule_activation(job_id, T0, "00")


# --------------------------------------------------------------------------- anti-replay


def test_counters_only_increase(store: StateStore) -> None:
    assert store.last_counter(SUPPLIER) is None
    store.advance_counter(SUPPLIER, 10)
    with pytest.raises(CounterNotIncreasing) as info:
        store.advance_counter(SUPPLIER, 10)
    assert (info.value.counter, info.value.last) == (10, 10)
    with pytest.raises(CounterNotIncreasing):
        store.advance_counter(SUPPLIER.upper(), 9)  # same originator however it is spelled
    store.advance_counter(bytes.fromhex(SUPPLIER), 11)
    assert store.last_counter(SUPPLIER) == 11
    store.advance_counter("0000000000000001", 1)  # originators are independent
    assert store.last_counter(SUPPLIER) == 11


def test_counters_accept_the_gbcs_entity_id_type(store: StateStore) -> None:
    from gateway.gbcs.ids import EntityId

    originator = EntityId.parse(SUPPLIER)
    store.advance_counter(originator, 5)  # the activation layer passes EntityId or str(EntityId)
    assert store.last_counter(str(originator)) == 5 == store.last_counter(originator)
    with pytest.raises(CounterNotIncreasing):
        store.advance_counter(str(originator), 5)


def test_counters_cover_the_full_unsigned_64_bit_range(store: StateStore) -> None:
    store.advance_counter(SUPPLIER, 2**63 - 1)
    store.advance_counter(SUPPLIER, 2**63)  # would wrap negative in a signed INTEGER column
    store.advance_counter(SUPPLIER, 2**64 - 1)
    assert store.last_counter(SUPPLIER) == 2**64 - 1
    with pytest.raises(CounterNotIncreasing):
        store.advance_counter(SUPPLIER, 2**63 + 5)
    with pytest.raises(ValueError, match="64-bit"):
        store.advance_counter(SUPPLIER, 2**64)


def test_counter_advance_is_atomic_across_threads_and_connections(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    stores = [StateStore(path) for _ in range(4)]  # separate connections, like separate processes
    wins: list[int] = []
    lock = threading.Lock()

    def race(s: StateStore) -> None:
        for counter in range(1, 41):
            try:
                s.advance_counter(SUPPLIER, counter)
            except CounterNotIncreasing:
                continue
            with lock:
                wins.append(counter)

    threads = [threading.Thread(target=race, args=(s,)) for s in stores]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for s in stores:
        s.close()
    assert sorted(wins) == list(range(1, 41))  # every counter accepted exactly once


# --------------------------------------------------------------------------- verdicts


def test_verdicts_round_trip_per_device(store: StateStore) -> None:
    job_id = store.create_job(record())
    ok = Verdict(
        device="0011223344556677",
        accepted=True,
        reason="verified",
        at_utc=T0,
        job_id=job_id,
        response_code=0x00,
        alert_code=None,
        counter=2**63 + 1,
        originator=SUPPLIER,
        details={"message_code": "0x00CB"},
    )
    bad = Verdict(
        device="aa:bb:cc:dd:ee:ff:00:11", accepted=False, reason="signature", at_utc=T0, alert_code=0x8F72
    )
    store.record_verdict(ok)
    store.record_verdict(bad)
    assert store.list_verdicts("00:11:22:33:44:55:66:77") == [ok]
    assert store.list_verdicts() == [ok, bad]


# --------------------------------------------------------------------------- failures


def _fill_until_full(s: StateStore, limit_pages: int) -> tuple[int, StoreError]:
    # A tiny filesystem cannot be made here; max_page_count makes SQLite report
    # SQLITE_FULL ("database or disk is full") exactly as a full disk would.
    s._conn.execute(f"PRAGMA max_page_count = {limit_pages}")
    created = 0
    for i in range(10_000):
        try:
            s.create_job(record(device=f"{i:016x}", image_path="/images/" + "x" * 200))
        except StoreError as e:
            return created, e
        created += 1
    raise AssertionError("the page limit was never reached")


def test_disk_full_is_a_store_error_and_leaves_nothing_partial(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    s = StateStore(path)
    pages = s._conn.execute("PRAGMA page_count").fetchone()[0]
    created, error = _fill_until_full(s, pages + 3)
    assert created > 0
    assert "database or disk is full" in str(error) and str(path) in str(error)
    assert "free space" in str(error)
    assert isinstance(error.__cause__, sqlite3.OperationalError)

    # the store still answers, and shows exactly what was acknowledged
    assert len(s.list_jobs()) == created
    last = s.list_jobs()[-1]
    with pytest.raises(StoreError, match="disk is full"):
        s.update_job(last.job_id, state=SessionState.TRANSFERRING, offset=999, session_snapshot={"pad": "y" * 20_000})
    assert s.get_job(last.job_id) == last  # the failed update left no trace
    assert len(s.job_history(last.job_id)) == 1
    s.close()

    raw = sqlite3.connect(path)
    assert raw.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert raw.execute("SELECT count(*) FROM jobs").fetchone()[0] == created
    # every job has its creation row in job_history: no half-written create_job
    orphans = raw.execute("SELECT count(*) FROM jobs WHERE job_id NOT IN (SELECT job_id FROM job_history)")
    assert orphans.fetchone()[0] == 0
    raw.close()

    with StateStore(path) as again:  # room again (the limit was per connection): writes work
        again.update_job(last.job_id, state=SessionState.TRANSFERRING, offset=999)
        assert again.get_job(last.job_id).offset == 999


# --------------------------------------------------------------------------- crash safety

CHILD = textwrap.dedent(
    """
    import datetime as dt, sys
    from gateway.store import StateStore, JobRecord, JobKind, ActivationRequest
    from gateway.ota.events import SessionState
    s = StateStore(sys.argv[1])
    t0 = dt.datetime(2026, 3, 1, tzinfo=dt.timezone.utc)
    out = sys.stdout
    i = int(sys.argv[2])
    while True:
        i += 1
        rec = JobRecord(f"{i:016x}", f"/img/{i}", f"{i:064x}", 1, 2, i, 1000 + i, JobKind.PPMID,
                        ActivationRequest.none(), t0)
        job = s.create_job(rec)
        out.write(f"job {job} {i}\\n"); out.flush()
        s.update_job(job, state=SessionState.TRANSFERRING, offset=i * 64, session_snapshot={"i": i})
        out.write(f"upd {job} {i}\\n"); out.flush()
        s.advance_counter("90b3d51f30010000", i)
        out.write(f"ctr {i}\\n"); out.flush()
        s.update_job(job, state=SessionState.CONFIRMED, reason=f"done {i}")
        out.write(f"end {job} {i}\\n"); out.flush()
    """
)


def test_sigkill_at_random_points_loses_no_acknowledged_write(tmp_path: Path) -> None:
    path = tmp_path / "crash.db"
    rng = random.Random(0x0A7A)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    acked_jobs: dict[int, int] = {}  # job id -> i
    acked_updates: set[int] = set()
    acked_ends: set[int] = set()
    failed_by_test: set[int] = set()
    acked_counter = 0
    next_i = 0
    started = time.monotonic()
    rounds = 25
    for round_no in range(rounds):
        child = subprocess.Popen(
            [sys.executable, "-c", CHILD, str(path), str(next_i)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
            text=True,
        )
        assert child.stdout is not None
        wanted = rng.randrange(0, 40)
        lines: list[str] = []
        while len(lines) < wanted:
            line = child.stdout.readline()
            if not line:
                break
            lines.append(line)
        time.sleep(rng.random() * 0.004)  # land somewhere inside the next transaction
        child.send_signal(signal.SIGKILL)
        rest, err = child.communicate()
        assert child.returncode == -signal.SIGKILL, f"round {round_no}: child exited on its own: {err}"
        lines += rest.splitlines(keepends=True)
        for line in lines:
            if not line.endswith("\n"):
                continue  # cut mid-write: not an acknowledgement
            kind, *values = line.split()
            if kind == "job":
                acked_jobs[int(values[0])] = int(values[1])
            elif kind == "upd":
                acked_updates.add(int(values[0]))
            elif kind == "end":
                acked_ends.add(int(values[0]))
            elif kind == "ctr":
                acked_counter = max(acked_counter, int(values[0]))

        # reopen after every kill, as the restarted daemon would
        with StateStore(path) as s:
            assert s.integrity_check() == ["ok"], f"round {round_no}"
            stored = {j.job_id: j for j in s.list_jobs()}
            for job_id, i in acked_jobs.items():
                job = stored[job_id]
                assert job.record.device == ":".join(f"{i:016x}"[k : k + 2] for k in range(0, 16, 2))
                assert job.record.file_version == i
                if job_id in acked_updates:
                    assert job.offset == i * 64 and job.session_snapshot == {"i": i}
                    allowed = {SessionState.TRANSFERRING, SessionState.CONFIRMED}
                    assert job.state in allowed | ({SessionState.FAILED} if job_id in failed_by_test else set())
                if job_id in acked_ends:
                    assert job.state is SessionState.CONFIRMED and job.reason == f"done {i}"
            # no job was half-created, and each job's device is free or its own
            for job in stored.values():
                assert s.job_history(job.job_id)[0].state is SessionState.PENDING
            last = s.last_counter(SUPPLIER)
            assert (last or 0) >= acked_counter, f"round {round_no}: counter went back"
            # a counter the child may have advanced but never acknowledged is still burnt:
            # the next child starts above anything stored
            next_i = max([next_i, *(j.record.file_version for j in stored.values()), last or 0])
            # close out any job a kill left open, so the next child's devices are free
            for job in s.list_jobs(active_only=True):
                s.update_job(job.job_id, state=SessionState.FAILED, reason="killed")
                failed_by_test.add(job.job_id)
    assert len(acked_jobs) > rounds // 2, "the children hardly ran; the test exercised nothing"
    assert time.monotonic() - started < 25


def test_counters_remember_the_device_and_a_refusal_names_it(store: StateStore) -> None:
    store.advance_counter(SUPPLIER, 10, device="00:db:12:34:56:78:90:a0")
    assert store.last_counter_device(SUPPLIER) == "00:db:12:34:56:78:90:a0"
    with pytest.raises(CounterNotIncreasing, match=r"last accepted counter 10 \(accepted for device 00:db:12:34:56:78:90:a0\)"):
        store.advance_counter(SUPPLIER, 10, device="00:db:12:34:56:78:90:a2")
    store.advance_counter(SUPPLIER, 11, device="00:db:12:34:56:78:90:a2")
    assert store.last_counter_device(SUPPLIER) == "00:db:12:34:56:78:90:a2"


def test_a_schema_1_store_keeps_its_counters_and_learns_devices(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "s.db"
    with monkeypatch.context() as m:  # a store written by the previous release
        m.setattr(store_module, "SCHEMA_VERSION", 1)
        m.setattr(store_module, "MIGRATIONS", {1: store_module.MIGRATIONS[1]})
        with StateStore(path) as s:
            assert s.schema_version == 1
    raw = sqlite3.connect(path)  # as the previous release wrote it: no device column
    with raw:
        raw.execute("INSERT INTO counters (originator, counter, updated_utc) VALUES (?, ?, ?)", (store_module.normalize_originator(SUPPLIER), f"{10:016x}", "2026-01-01T00:00:00Z"))
    raw.close()
    with StateStore(path) as s:
        assert s.schema_version == store_module.SCHEMA_VERSION
        assert s.last_counter(SUPPLIER) == 10 and s.last_counter_device(SUPPLIER) is None
        with pytest.raises(CounterNotIncreasing) as info:
            s.advance_counter(SUPPLIER, 9, device="00:db:12:34:56:78:90:a0")
        assert "accepted for device" not in str(info.value)  # unknown, so not invented
        s.advance_counter(SUPPLIER, 11, device="00:db:12:34:56:78:90:a0")
        assert s.last_counter_device(SUPPLIER) == "00:db:12:34:56:78:90:a0"


# --------------------------------------------------------------------------- accept: one durable record (issue 11 item 1)


def test_accept_keeps_counter_verdict_and_decision_together(store: StateStore) -> None:
    from gateway.store import Acceptance

    job_id = store.create_job(record())
    verdict = Verdict(device="00:11:22:33:44:55:66:77", accepted=True, reason="ok", at_utc=T0, job_id=job_id, counter=7, originator=SUPPLIER)
    store.accept(Acceptance(verdict, "dd00", T0))
    assert store.last_counter(SUPPLIER) == 7
    assert [v.counter for v in store.list_verdicts()] == [7]
    assert [(s.job_id, s.at_utc, s.command_hex) for s in store.list_schedules()] == [(job_id, T0, "dd00")]
    # A replay changes nothing at all: no second verdict row, the schedule as it was.
    later = T0 + dt.timedelta(days=1)
    with pytest.raises(CounterNotIncreasing):
        store.accept(Acceptance(Verdict(device="00:11:22:33:44:55:66:77", accepted=True, reason="ok", at_utc=later, job_id=job_id, counter=7, originator=SUPPLIER), "dd01", later))
    assert len(store.list_verdicts()) == 1 and store.list_schedules()[0].at_utc == T0
    # A cancellation drops the schedule in the same transaction as its counter.
    store.accept(Acceptance(Verdict(device="00:11:22:33:44:55:66:77", accepted=True, reason="ok", at_utc=later, job_id=job_id, counter=8, originator=SUPPLIER), "dd02", None))
    assert store.list_schedules() == [] and store.last_counter(SUPPLIER) == 8


def test_accept_for_a_job_the_store_does_not_keep_spends_only_the_counter(store: StateStore) -> None:
    from gateway.store import Acceptance

    verdict = Verdict(device="00:11:22:33:44:55:66:77", accepted=True, reason="ok", at_utc=T0, job_id=None, counter=3, originator=SUPPLIER)
    store.accept(Acceptance(verdict, "dd00", T0))
    assert store.last_counter(SUPPLIER) == 3 and store.list_schedules() == []
    with pytest.raises(ValueError):
        Acceptance(Verdict(device="00:11:22:33:44:55:66:77", accepted=True, reason="ok", at_utc=T0), "dd00", T0)
