"""bench/traffic.py runs its three runs end to end (small and scaled down; the numbers are the benchmark's, not asserted here)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench import traffic


def test_the_traffic_benchmark_runs_and_writes_its_numbers(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "t.json"
    args = ["--devices", "2", "--image", "8000", "--quiet", "2", "--warmup", "1.5", "--metering", "0.5", "--price", "0.5", "--tunnel", "0.5", "--scale", "0.2", "--json", str(out)]
    assert traffic.main(args) == 0
    printed = capsys.readouterr().out
    assert "no OTA" in printed and "target: OTA goodput at han_share 0.5" in printed
    runs = json.loads(out.read_text())["runs"]
    assert [r["run"] for r in runs] == ["no OTA", "push", "push, han_share 0.5"]
    for r in runs:
        assert all(r[k]["samples"] > 0 for k in ("metering", "price", "tunnel")), r
        assert r["background"]["samples"] == sum(r[k]["samples"] for k in ("metering", "price", "tunnel"))
    for r in runs[1:]:
        assert r["goodput_bytes_per_s"] > 0 and r["capacity_bytes_per_s"] > 0 and r["block"] > 0
    assert runs[0].get("goodput_bytes_per_s") is None
