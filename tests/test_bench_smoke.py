"""The benchmark's code path works (bench/ota.py). No speed is asserted here: the
benchmark is run by hand (docs/benchmark.md); this only proves that its smallest
scenario runs both implementations to the end and yields numbers."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # bench/ is not an installed package

from bench import model, scenarios  # noqa: E402
from bench.ota import UNPACED, evaluate, render  # noqa: E402

TINY = 2048


@pytest.mark.parametrize("impl", ["ours", "zigpy"])
async def test_smallest_scenario_completes_and_yields_numbers(impl: str) -> None:
    r = await scenarios.one_device(impl, "block", "instant", TINY, ota=UNPACED, timeout=30)
    assert r["completed"] is True and r["failed"] is None
    assert r["counters"]["bytes_received"] == TINY and r["counters"]["invalid_images"] == 0
    assert r["seconds_to_end"] is not None and r["seconds_to_end"] >= 0
    assert r["seconds_to_activate"] is not None and r["seconds_to_activate"] >= r["seconds_to_end"]
    assert r["cpu_s"] > 0
    t = r["turnaround"]
    assert t["n"] > 0 and t["median_ms"] > 0 and t["p99_ms"] >= t["median_ms"]
    assert t["served_bytes"] >= TINY and r["blocks"] > 0
    assert r["block_size"] == (63 if impl == "ours" else 50)
    # The report renders those numbers (no realistic run: no bounds, targets n/a or absent).
    rows = evaluate({"one/block/" + impl: r}, {})
    assert isinstance(rows, list)
    assert isinstance(render([], {}, {}, rows), str)


def test_bound_and_capacity_are_numbers() -> None:
    link = scenarios.make_link("realistic")
    block = model.max_block(link, 64)
    assert block == 64
    b = model.lower_bound(link, 10_000, block)
    p = model.lower_bound(link, 10_000, block, page_size=256, response_spacing_ms=20)
    assert 0 < b.frames_only < b.seconds and b.blocks == math.ceil(10_000 / 64)
    assert 0 < p.seconds and p.blocks == 39 * 4 + 1  # 39 full pages of 4 blocks, then 16 bytes
    c = model.capacity(link, block)
    assert 0 < c.bytes_per_s == min(c.channel_bytes_per_s, c.uart_tx_bytes_per_s, c.uart_rx_bytes_per_s)
