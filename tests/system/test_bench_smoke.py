"""The benchmark's code path works (bench/ota.py). No speed is asserted here: the
benchmark is run by hand (docs/benchmark.md); this only proves that its smallest
scenario runs both implementations to the end and yields numbers."""

from __future__ import annotations

import asyncio
import math
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # bench/ is not an installed package

from bench import model, scenarios  # noqa: E402
from bench.floor import FloorResponder  # noqa: E402
from bench.ota import UNPACED, evaluate, render  # noqa: E402
from gateway.image import parse_image  # noqa: E402
from radios.sim.app import start_sim_app  # noqa: E402

TINY = 2048


@pytest.mark.parametrize("remote", [False, True], ids=["in-process", "remote"])
@pytest.mark.parametrize("impl", ["ours", "zigpy"])
async def test_smallest_scenario_completes_and_yields_numbers(impl: str, remote: bool) -> None:
    r = await scenarios.one_device(impl, "block", "instant", TINY, ota=UNPACED, timeout=30, remote=remote)
    assert r["completed"] is True and r["failed"] is None
    if remote:
        assert r["sim_process"] == "child" and r["child_cpu_s"] > 0 and r["child_peak_rss_kib"] > 0
    else:
        assert r["sim_process"] == "same"
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


@pytest.mark.parametrize("impl", ["ours", "zigpy"])
async def test_hub_scenario_runs_with_the_han_in_a_child(impl: str) -> None:
    # The hub-cost path of bench/ota.py (hub{N}/*), tiny: devices in a child process,
    # completion from the child's Upgrade End Request events, zigpy with its database.
    r = await scenarios.many_devices(impl, 2, "instant", TINY, ota=UNPACED, remote=True, database=True)
    db = Path(scenarios._DATABASES[-1].name) / "zigbee.db"
    assert r["database"] is True and db.stat().st_size > 0, "zigpy did not keep its database"
    assert r["uplinks"] > 0 and r["socket_reads"] > 0 and r["uplinks_per_read"] > 0
    assert r["completed"] == 2 and r["failures"] == {} and r["stalled"] == 0
    assert r["delivered_bytes"] == 2 * TINY and r["counters"]["invalid_images"] == 0
    assert r["served_bytes"] >= 2 * TINY and r["cpu_s_per_mib"] > 0 and r["peak_rss_kib"] > 0
    assert r["sim_process"] == "child" and r["child_cpu_s"] > 0
    assert r["turnaround"]["n"] > 0 and r["total_s"] is not None
    rows = evaluate({f"hub2/{impl}": r}, {})
    if impl == "ours":
        assert {row["verdict"] for row in rows} <= {"PASS", "MISS"} and any("hub process alone" in row["note"] for row in rows)
    assert isinstance(render([], {}, {}, rows), str)


async def test_floor_scenario_serves_every_device_exactly_once() -> None:
    # The floor of the hub-cost runs (hub{N}/floor, bench/floor.py) in the Engine's
    # place: every device must end with the whole image, served once, in 63-byte blocks,
    # every request answered (a wrong answer leaves a device unfinished or the bytes off).
    size = 4 * 1024
    r = await scenarios.many_devices("floor", 2, "instant", size, ota=UNPACED, timeout=30, remote=True)
    assert r["completed"] == 2 and r["failures"] == {} and r["stalled"] == 0
    assert r["served_bytes"] == 2 * size and r["delivered_bytes"] == 2 * size
    assert r["counters"]["bytes_received"] == 2 * size and r["counters"]["invalid_images"] == 0
    assert r["counters"]["upgrade_end_sent"] == 2 and r["block_size"] == 63
    t = r["turnaround"]
    assert t["n"] == t["served_blocks"] + 2 * 2 and t["unanswered_at_end"] == 0  # + query and end per device
    assert r["sim_process"] == "child" and r["cpu_s_per_mib"] > 0
    rows = evaluate({"hub2/ours": r | {"impl": "ours"}, "hub2/floor": r}, {})
    (cpu,) = [row for row in rows if "CPU s per MiB" in row["target"]]
    assert cpu["floor_cpu_s_per_mib"] == r["cpu_s_per_mib"] and cpu["ours_above_floor_cpu_s_per_mib"] == 0
    assert "floor" in render([], {"hub2/floor": r}, {}, rows)


async def test_floor_responder_answers_upgrade_end_with_upgrade_now() -> None:
    # What the scenario above cannot see (it stops at the Upgrade End Request): the
    # device applies the image because the floor said "now", not after a timeout.
    (spec,) = scenarios.device_specs(1, page=False)
    app = await start_sim_app([spec], scenarios.make_link("instant"))
    floor = FloorResponder(app, parse_image(scenarios.image_bytes(TINY)))
    try:
        sim = app.han.devices[spec.ieee]
        floor.start(spec.ieee)
        for _ in range(200):
            if any(e.kind == "activate" for e in sim.history):
                break
            await asyncio.sleep(0.01)
        (act,) = [e for e in sim.history if e.kind == "activate"]
        assert act.detail["self_activated"] is False and sim.counters.bytes_received == TINY
        assert floor.send_failures == 0 and app.devices[spec.ieee].ota_in_progress is True
    finally:
        floor.close()
        await app.shutdown()


@pytest.mark.parametrize("batch", [1, 6])
async def test_null_radio_answers_every_request_it_hands_zigpy(batch: int) -> None:
    # scenarios.null_radio (null/batch*): the floor responder behind a radio that costs
    # nothing. Every request handed to zigpy must come back as one answer.
    r = await scenarios.null_radio(3, TINY, batch=batch)
    blocks = -(-TINY // 63)
    assert r["requests"] == 3 * blocks and r["answered"] == r["requests"] and r["send_failures"] == 0
    # Each answer is the block asked for: every (device, offset) once, every byte once.
    assert r["blocks_answered"] == 3 * blocks and r["answered_bytes"] == 3 * TINY
    assert r["cpu_s_per_mib"] > 0 and r["us_per_block"] > 0 and r["batch"] == batch


@pytest.mark.parametrize("radio", ["ezsp", "znp"])
async def test_real_driver_push_completes_and_splits_its_cpu(radio: str) -> None:
    # scenarios.real_driver (driver/*): our push through unmodified bellows or
    # zigpy-znp to the emulated coordinator, the CPU split by whose code ran.
    r = await scenarios.real_driver(radio, 4096, ota=UNPACED)
    assert r["completed"] is True and r["blocks"] >= 4096 // 63
    assert r["cpu_s"] > 0 and abs(sum(r["share"].values()) - 1.0) < 1e-9
    assert set(r["share"]) <= {"device side", "radio library", "gateway", "other"}
    assert r["cpu_s_per_mib_by_owner"].get("radio library", 0) > 0


@pytest.mark.parametrize(("radio", "impl"), [("ezsp", "floor"), ("znp", "zigpy")])
async def test_real_driver_two_hops_away_completes_for_zigpy_and_the_floor(radio: str, impl: str) -> None:
    # driver-rt/* (issue 14): zigpy's update_firmware and the floor through the real
    # library to a device behind one relay; the floor's blocks fit the source-routed
    # frame (82 - 4 - 17 = 61), or the stack would refuse every one of them.
    r = await scenarios.real_driver(radio, 4096, impl=impl, hops=2)
    assert r["completed"] is True and r["failed"] is None and r["hops"] == 2 and r["impl"] == impl
    assert r["mean_block"] <= (61 if impl == "floor" else 50) and r["hub_cpu_s_per_mib"] > 0
    assert (r["floor_block"] == 61) if impl == "floor" else r["floor_block"] is None
    section = "\n".join(render([], {f"driver-rt/{radio}/2hop/{impl}": r}, {}, []).splitlines())
    assert "4. Through the real radio libraries" in section and f"{impl} did not run" not in section
