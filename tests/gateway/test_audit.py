"""gateway.audit: the hash-chained audit log."""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import json
import logging
import os
import random
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from gateway.audit import (
    GENESIS,
    AuditCorrupt,
    AuditError,
    AuditLog,
    read_records,
    verify_log,
)

DEVICE_A = "00:11:22:33:44:55:66:77"
DEVICE_B = "aa:bb:cc:dd:ee:ff:00:11"


@pytest.fixture
def log_path(tmp_path: Path) -> Path:
    return tmp_path / "audit.jsonl"


def write_some(path: Path, count: int = 6) -> list[dict]:
    with AuditLog(path) as log:
        for i in range(count):
            log.append("job.progress", device=DEVICE_A if i % 2 == 0 else DEVICE_B, job=i // 2 + 1, offset=i * 64)
    return [json.loads(line) for line in path.read_text().splitlines()]


def rewrite(path: Path, records: list[dict | str]) -> None:
    lines = [r if isinstance(r, str) else json.dumps(r, sort_keys=True, separators=(",", ":")) for r in records]
    path.write_text("".join(line + "\n" for line in lines))


def rehash(record: dict) -> dict:
    body = {k: v for k, v in record.items() if k != "hash"}
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return {**body, "hash": hashlib.sha256(canonical.encode()).hexdigest()}


# --------------------------------------------------------------------------- the chain


def test_records_follow_the_documented_format(log_path: Path) -> None:
    with AuditLog(log_path) as log:
        first = log.append("job.created", device="0011223344556677", job=7, image="ppmid.ota", sha256=b"\xab" * 4)
        second = log.append("gbcs.verdict", device=DEVICE_A, job=7, accepted=False, reason="signature")
        assert log.head() == (2, second.hash)
    lines = log_path.read_text().splitlines()
    stored = [json.loads(line) for line in lines]
    assert stored[0]["seq"] == 1 and stored[0]["prev"] == GENESIS and stored[0]["device"] == DEVICE_A
    assert stored[0]["sha256"] == "abababab" and stored[0]["event"] == "job.created" and stored[0]["job"] == 7
    assert stored[0]["ts"].endswith("Z") and dt.datetime.fromisoformat(stored[0]["ts"].replace("Z", "+00:00"))
    assert stored[1]["prev"] == stored[0]["hash"]
    for record in stored:  # hash = SHA-256 of canonical JSON of the record without "hash", computed independently
        assert rehash(record)["hash"] == record["hash"]
    assert [r.as_dict() for r in (first, second)] == stored


def test_chain_verifies_and_reads_filter(log_path: Path) -> None:
    write_some(log_path, 6)
    result = verify_log(log_path)
    assert result.ok and result.records == 6 and result.first_bad_seq is None
    assert [r.seq for r in read_records(log_path)] == [1, 2, 3, 4, 5, 6]
    assert [r.seq for r in read_records(log_path, device=DEVICE_B)] == [2, 4, 6]
    assert [r.seq for r in read_records(log_path, device="0011223344556677", since_seq=2)] == [3, 5]
    with AuditLog(log_path) as log:
        assert log.verify().ok
        assert log.append("x").seq == 7  # a reopened log continues the chain
        assert verify_log(log_path).ok


def test_empty_log_verifies(log_path: Path) -> None:
    AuditLog(log_path).close()
    assert verify_log(log_path).ok and verify_log(log_path).records == 0


def test_edit_is_found_and_named(log_path: Path) -> None:
    records = write_some(log_path)
    records[2]["offset"] = 9999
    rewrite(log_path, records)
    result = verify_log(log_path)
    assert (result.ok, result.first_bad_seq, result.records, result.line) == (False, 3, 2, 3)
    assert "edited" in result.reason


def test_edit_with_a_recomputed_hash_breaks_the_next_link(log_path: Path) -> None:
    records = write_some(log_path)
    records[2] = rehash({**records[2], "offset": 9999})
    rewrite(log_path, records)
    result = verify_log(log_path)
    assert (result.ok, result.first_bad_seq) == (False, 4)
    assert "record 3 was altered or replaced" in result.reason


def test_delete_is_found_and_named(log_path: Path) -> None:
    records = write_some(log_path)
    del records[3]
    rewrite(log_path, records)
    result = verify_log(log_path)
    assert (result.ok, result.first_bad_seq) == (False, 4)
    assert "record 4 was deleted or moved" in result.reason


def test_reorder_is_found_and_named(log_path: Path) -> None:
    records = write_some(log_path)
    records[1], records[2] = records[2], records[1]
    rewrite(log_path, records)
    result = verify_log(log_path)
    assert (result.ok, result.first_bad_seq, result.line) == (False, 2, 2)
    assert "seq 3 where seq 2 belongs" in result.reason


def test_insert_is_found_and_named(log_path: Path) -> None:
    records = write_some(log_path)
    forged = rehash({**records[1], "seq": 3, "prev": records[1]["hash"], "event": "gbcs.verdict"})
    rewrite(log_path, records[:2] + [forged] + records[2:])
    result = verify_log(log_path)
    assert (result.ok, result.first_bad_seq, result.line) == (False, 4, 4)
    assert "inserted or moved" in result.reason


def test_garbage_line_is_named(log_path: Path) -> None:
    records = write_some(log_path)
    rewrite(log_path, records[:4] + ["not json at all"] + records[4:])
    result = verify_log(log_path)
    assert (result.ok, result.first_bad_seq, result.line) == (False, 5, 5)
    assert "not a valid record" in result.reason
    with pytest.raises(AuditCorrupt, match="line 5"):
        list(read_records(log_path))


def test_truncated_end_is_caught_only_with_a_noted_head(log_path: Path) -> None:
    with AuditLog(log_path) as log:
        for i in range(5):
            log.append("tick", n=i)
        head = log.head()
    lines = log_path.read_text().splitlines(keepends=True)
    log_path.write_text("".join(lines[:3]))
    assert verify_log(log_path).ok  # the chain alone cannot see a cut end
    result = verify_log(log_path, expect_head=head)
    assert not result.ok and "cut off the end" in result.reason


# --------------------------------------------------------------------------- torn tails


def test_torn_tail_is_moved_aside_and_the_chain_continues(log_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    write_some(log_path, 3)
    intact = log_path.read_bytes()
    torn = b'{"device":null,"event":"job.prog'
    with open(log_path, "ab") as f:
        f.write(torn)
    assert [r.seq for r in read_records(log_path)] == [1, 2, 3]  # readers skip it
    before = verify_log(log_path)
    assert (before.ok, before.first_bad_seq) == (False, 4) and "unfinished record" in before.reason

    with caplog.at_level(logging.WARNING, logger="han_ota.audit"), AuditLog(log_path) as log:
        assert log_path.read_bytes() == intact
        record = log.append("after.crash")
    assert record.seq == 4 and record.prev == json.loads(intact.splitlines()[-1])["hash"]
    assert verify_log(log_path).ok
    saved = [json.loads(line) for line in log.torn_path.read_text().splitlines()]
    assert len(saved) == 1 and bytes.fromhex(saved[0]["data_hex"]) == torn and saved[0]["offset"] == len(intact)
    assert any("unfinished record" in r.getMessage() and str(log.torn_path) in r.getMessage() for r in caplog.records)


def test_a_log_that_is_only_a_torn_line(log_path: Path) -> None:
    log_path.write_bytes(b'{"seq":1,"ev')
    with AuditLog(log_path) as log:
        assert log.head() == (0, GENESIS)
        assert log.append("first").seq == 1
    assert verify_log(log_path).ok


def test_torn_tail_left_by_another_writer_is_recovered_before_the_next_append(log_path: Path) -> None:
    with AuditLog(log_path) as log:
        log.append("one")
        with open(log_path, "ab") as f:  # another process died mid-append
            f.write(b'{"seq":2,"event":"tw')
        assert log.append("two").seq == 2
    assert verify_log(log_path).ok
    assert (log_path.parent / "audit.jsonl.torn").exists()


CHILD = textwrap.dedent(
    """
    import sys
    from gateway.audit import AuditLog
    log = AuditLog(sys.argv[1])
    while True:
        r = log.append("tick", device="0011223344556677", pad="x" * 3000)
        sys.stdout.write(f"{r.seq} {r.hash}\\n"); sys.stdout.flush()
    """
)


def test_sigkill_while_appending_keeps_every_acknowledged_record(log_path: Path) -> None:
    rng = random.Random(0xA0D1)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    acked: dict[int, str] = {}
    for round_no in range(10):
        child = subprocess.Popen(
            [sys.executable, "-c", CHILD, str(log_path)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        assert child.stdout is not None
        for _ in range(rng.randrange(1, 30)):
            line = child.stdout.readline()
            if not line:
                break
            seq, digest = line.split()
            acked[int(seq)] = digest
        time.sleep(rng.random() * 0.003)
        child.send_signal(signal.SIGKILL)
        rest, err = child.communicate()
        assert child.returncode == -signal.SIGKILL, err
        for line in rest.splitlines(keepends=True):
            if line.endswith("\n"):
                seq, digest = line.split()
                acked[int(seq)] = digest
        with AuditLog(log_path) as log:  # open = recover, as the restarted daemon does
            result = log.verify()
            assert result.ok, f"round {round_no}: {result}"
            stored = {r.seq: r.hash for r in log.read()}
            assert all(stored[seq] == digest for seq, digest in acked.items())
    assert len(acked) >= 10


# --------------------------------------------------------------------------- concurrency


def test_threads_appending_at_once_keep_one_chain(log_path: Path) -> None:
    with AuditLog(log_path) as log:
        def worker(n: int) -> None:
            for i in range(25):
                log.append("tick", worker=n, i=i)

        threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert log.head()[0] == 200
    result = verify_log(log_path)
    assert result.ok and result.records == 200
    pairs = {(r.fields["worker"], r.fields["i"]) for r in read_records(log_path)}
    assert len(pairs) == 200


def test_two_writers_on_one_file_do_not_fork_the_chain(log_path: Path) -> None:
    # Two AuditLog objects stand for two processes: each must notice the other's appends.
    a, b = AuditLog(log_path), AuditLog(log_path)
    try:
        for i in range(10):
            (a if i % 3 else b).append("tick", i=i)
    finally:
        a.close()
        b.close()
    result = verify_log(log_path)
    assert result.ok and result.records == 10


# --------------------------------------------------------------------------- journal, errors, follow


def test_each_record_is_mirrored_to_the_journal_logger(log_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="han_ota.audit"), AuditLog(log_path) as log:
        log.append("gbcs.verdict", device=DEVICE_A, job=3, accepted=False, reason="bad signature", code=0x8F72)
    [entry] = [r for r in caplog.records if r.name == "han_ota.audit"]
    assert entry.levelno == logging.INFO
    assert entry.getMessage() == (
        f'gbcs.verdict seq=1 device={DEVICE_A} job=3 accepted=false code=36722 reason="bad signature"'
    )
    assert entry.audit["hash"] == json.loads(log_path.read_text())["hash"]  # type: ignore[attr-defined]


def test_bad_appends_are_refused(log_path: Path) -> None:
    with AuditLog(log_path) as log:
        with pytest.raises(ValueError, match="reserved"):
            log.append("x", seq=5)
        with pytest.raises(ValueError, match="event"):
            log.append("two words")
        with pytest.raises(ValueError, match="JSON"):
            log.append("x", thing=object())
        with pytest.raises(ValueError, match="IEEE"):
            log.append("x", device="nope")
    assert log_path.read_text() == ""


def test_missing_directory_names_it_and_the_fix(tmp_path: Path) -> None:
    with pytest.raises(AuditError) as info:
        AuditLog(tmp_path / "absent" / "audit.jsonl")
    assert str(tmp_path / "absent") in str(info.value) and "StateDirectory=han-ota" in str(info.value)
    with pytest.raises(AuditError, match="no audit log"):
        list(read_records(tmp_path / "absent.jsonl"))


async def test_follow_yields_existing_then_new_records(log_path: Path) -> None:
    log = AuditLog(log_path)
    log.append("one", device=DEVICE_A)
    log.append("two", device=DEVICE_B)
    seen: list[str] = []

    async def consume() -> None:
        async for record in log.follow(device=DEVICE_A, poll_interval=0.01):
            seen.append(record.event)
            if len(seen) == 3:
                return

    task = asyncio.create_task(consume())
    await asyncio.sleep(0.05)
    log.append("three", device=DEVICE_B)
    log.append("four", device=DEVICE_A)
    # a crash left part of a record; the follower must neither choke on it nor glue
    # it to the record written after the writer's recovery cuts it off
    with open(log_path, "ab") as f:
        f.write(b'{"device":"00:11')
    await asyncio.sleep(0.05)
    assert seen == ["one", "four"]
    log.append("five", device=DEVICE_A)
    await asyncio.wait_for(task, 2)
    assert seen == ["one", "four", "five"]
    log.close()


async def test_follow_since_seq_skips_what_was_seen(log_path: Path) -> None:
    with AuditLog(log_path) as log:
        for i in range(4):
            log.append("tick", i=i)
    agen = log.follow(since_seq=2, poll_interval=0.01)
    got = [await agen.__anext__(), await agen.__anext__()]
    await agen.aclose()
    assert [r.seq for r in got] == [3, 4]
