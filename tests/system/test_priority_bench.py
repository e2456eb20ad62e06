"""bench/scenarios.py ``priority_under_bulk`` runs (issue 15): its smallest form, on the
instant link. No time is asserted: the 1.3x target is the benchmark's to judge."""

from __future__ import annotations

from tests.system.test_bench_smoke import scenarios  # first: it puts bench/ on the path

from bench.ota import evaluate  # noqa: E402


async def test_priority_under_bulk_runs_and_is_judged() -> None:
    r = await scenarios.priority_under_bulk(3, "instant", 2048, timeout=60)
    assert r["bulk_completed"] == 3 and r["bulk_all_finished"] is True
    assert r["urgent_state"] == "held" and r["urgent_alone_s"] > 0 and r["urgent_under_bulk_s"] > 0
    assert r["urgent_ratio"] == r["urgent_under_bulk_s"] / r["urgent_alone_s"]
    (row,) = [t for t in evaluate({"priority20/ours": r}, {}) if t["target"].startswith("urgent push")]
    assert row["wanted"] == "<= 1.3x" and "bulk finished 3 of 3" in row["note"]
