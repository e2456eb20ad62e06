"""Background traffic through the daemon on the sim radio: [[sim_traffic]] makes traffic.sample
audit records (metering reports heard, price messages confirmed, lost ones null) and
`han-ota report` shows them beside a push (issue 15 part 2)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from typer.testing import CliRunner

from gateway.config import SimTrafficConfig, parse_config
from han_ota.cli import _mount, app
from han_ota.client import Client
from radios.sim.link import LinkModel
from radios.sim.traffic import CLUSTER_METERING, CLUSTER_PRICE
from tests.han_ota.test_daemon import FAST, HCALCS, HCALCS2, Bench, call, events, image, make_config, short_dir, started, wait_for

__all__ = ["short_dir"]  # the fixture, used by name


def rows(cfg: Any, event: str = "traffic.sample") -> list[dict[str, Any]]:
    return [r.as_dict() for r in events(cfg) if r.event == event]


def samples(cfg: Any) -> list[dict[str, Any]]:
    return rows(cfg)


def traffic(**kinds: float) -> tuple[SimTrafficConfig, ...]:
    return parse_config({"sim_traffic": [{"kind": k, "period": p} for k, p in kinds.items()]}).sim_traffic


async def test_sim_traffic_is_measured_audited_and_reported_beside_a_push(short_dir: Path) -> None:
    bench = Bench(f"hcalcs:{HCALCS}:{FAST}", f"hcalcs:{HCALCS2}:{FAST}")
    # A timed air, so the frames take airtime on the one channel and latencies are real.
    bench.han.link = LinkModel.realistic(scale=0.2, uart_baud=None)
    cfg = make_config(short_dir, sim_traffic=traffic(metering=0.2, price=0.2, tunnel=0.5))
    fw = image(short_dir, size=6000)
    daemon = await started(cfg, bench)
    try:
        # Every kind from both devices, before any OTA.
        def seen() -> set[tuple[str, str]]:
            return {(r["device"], r["kind"]) for r in samples(cfg) if r["latency_ms"] is not None}

        await wait_for(lambda: seen() >= {(d, k) for d in (HCALCS, HCALCS2) for k in ("metering", "price", "tunnel")}, 30, "samples of every kind")
        client = Client(cfg.control_socket, timeout=5)
        await call(client.push, fw, HCALCS)
        await call(client.wait_job, "1", ("held",), timeout=60)
        after_push = len(samples(cfg))
        await wait_for(lambda: len(samples(cfg)) > after_push + 4, 20, "samples after the push")
        # The frames really crossed the air: the devices sent reports and heard prices.
        device = bench.device(HCALCS)
        assert device.radio.frames_sent > 0
        assert any(e.detail.get("cluster") == CLUSTER_PRICE for e in device.events("zcl"))
        assert any(m.startswith(b"BENCH-TUNNEL") and len(m) == 200 for m in device.tunnel_messages)
        assert daemon.traffic.generator is not None and daemon.traffic.generator.sent["metering"] > 0
        assert daemon.traffic.service is not None and daemon.traffic.service.refused == 0
    finally:
        await daemon.stop("test")
        await bench.close()
    got = samples(cfg)
    assert {r["kind"] for r in got} == {"metering", "price", "tunnel"}
    assert all(r["device"] in (HCALCS, HCALCS2) and isinstance(r["sequence"], int) for r in got)
    delivered = [r["latency_ms"] for r in got if r["latency_ms"] is not None]
    assert delivered and all(0 <= ms < 10_000 for ms in delivered)
    # Per device and kind the sequence numbers run on (lost ones are samples too).
    for dev in (HCALCS, HCALCS2):
        seqs = [r["sequence"] for r in got if r["device"] == dev and r["kind"] == "metering"]
        assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))

    # The report, offline from the state directory.
    (short_dir / "config.toml").write_text(f'state_dir = "{cfg.state_dir}"\ncontrol_socket = "{short_dir}/run/control.sock"\n')
    _mount()
    out = short_dir / "out"
    out.mkdir()
    result = CliRunner().invoke(app, ["report", "--config", str(short_dir / "config.toml"), "-o", str(out / "r.html"), "--json", str(out / "r.json")])
    assert result.exit_code == 0, result.output
    figures = json.loads((out / "r.json").read_text())
    background = figures["trial"]["background"]
    assert background["samples"] == len(got) and background["lost"] == sum(r["latency_ms"] is None for r in got)
    assert background["median_with_ota_s"] is not None and background["median_without_ota_s"] is not None
    page = (out / "r.html").read_text()
    assert "no background traffic recorded" not in page and page.count("<svg") == 4


async def test_a_table_naming_a_device_the_air_lacks_is_audited_not_fatal(short_dir: Path) -> None:
    bench = Bench(f"hcalcs:{HCALCS}:{FAST}")
    tables = parse_config({"sim_traffic": [{"kind": "metering", "period": 0.1, "device": "00:aa:00:00:00:00:00:01"}]}).sim_traffic
    cfg = make_config(short_dir, sim_traffic=tables)
    daemon = await started(cfg, bench)
    try:
        await wait_for(lambda: rows(cfg, "traffic.unavailable"), 10, "traffic.unavailable")
        (row,) = rows(cfg, "traffic.unavailable")
        assert "00:aa:00:00:00:00:00:01: no such simulated device" in row["error"]
        assert daemon.radio.up and daemon.traffic.generator is None
    finally:
        await daemon.stop("test")
        await bench.close()
    assert samples(cfg) == []


async def test_without_sim_traffic_the_air_carries_no_background_frames(short_dir: Path) -> None:
    bench = Bench(f"hcalcs:{HCALCS}:{FAST}")
    cfg = make_config(short_dir)
    assert dataclasses.replace(cfg).sim_traffic == ()
    daemon = await started(cfg, bench)
    try:
        # Nothing is started: no generator on the air, no tap on the radio.
        assert daemon.traffic.generator is None and daemon.traffic.service is None
        assert not any(e.detail.get("cluster") in (CLUSTER_METERING, CLUSTER_PRICE) for e in bench.device(HCALCS).events("zcl"))
    finally:
        await daemon.stop("test")
        await bench.close()
    assert samples(cfg) == []
