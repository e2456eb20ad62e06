"""`python bench/traffic.py`: background HAN traffic with and without OTA (issue 15 part 2).

Three runs on the simulated HAN with a realistic link (radios/sim/link.py: one shared
channel, every frame booked on it), each on a fresh network of ``--devices`` HCALCS,
each device sending a stamped Metering report every ``--metering`` s, receiving a
PublishPrice from the hub every ``--price`` s and a ``--tunnel-size``-byte message over
its GBCS tunnel every ``--tunnel`` s (0: none) (radios/sim/traffic.py; measured by the
hub's gateway/traffic_service.py, exactly as the daemon does with [[sim_traffic]]):

1. ``no OTA``: the traffic alone for ``--quiet`` s;
2. ``push``: an image pushed to every device at once ([ota] defaults);
3. ``push, han_share 0.5``: the same push with ``[ota] han_share = 0.5``. If this
   checkout's OtaConfig has no ``han_share`` (issue 15 part 2's other half), the run
   halves ``rate_bytes_per_s`` instead, which is what han_share does to the pacer's
   budget, and says so.

For each: background latency (median, p95, per kind and together) and loss over the
samples taken while OTA ran (all of them for run 1); OTA goodput (image bytes over the
time from the push until the last device held its image) against the channel's
capacity for that block size (bench/model.py). ``--json PATH`` writes the numbers.
Times are the simulation's at ``--scale`` (1.0: real time), shown unscaled.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import statistics
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # `python bench/traffic.py` from the checkout
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import model
from bench.scenarios import device_specs, image_bytes, quiet_logging
from gateway.config import OtaConfig
from gateway.engine import Engine
from gateway.image import parse_image
from gateway.ota import events as ev
from gateway.traffic import Sample
from gateway.traffic_service import TrafficService
from gateway.tunnel.service import TunnelService
from radios.sim.app import start_sim_app
from radios.sim.link import LinkModel
from radios.sim.traffic import Flow, SimTraffic

HAS_HAN_SHARE = "han_share" in {f.name for f in dataclasses.fields(OtaConfig)}


@dataclass
class Timed:
    at: float  # loop time the sample was made
    sample: Sample


def ota_config(han_share: float | None) -> tuple[OtaConfig, str]:
    if han_share is None:
        return OtaConfig(), "defaults"
    if HAS_HAN_SHARE:
        return OtaConfig(han_share=han_share), f"han_share = {han_share}"  # type: ignore[call-arg]
    base = OtaConfig()
    return (dataclasses.replace(base, rate_bytes_per_s=base.rate_bytes_per_s * han_share),
            f"han_share {han_share} emulated: rate_bytes_per_s {base.rate_bytes_per_s:g} -> {base.rate_bytes_per_s * han_share:g} (no [ota] han_share here)")


async def loop_lag(out: list[float], every: float = 0.01) -> None:
    """How late a 10 ms timer fires: the devices and the hub share this loop, so what the
    hub's CPU costs per block also delays the simulated devices and the measure."""
    loop = asyncio.get_running_loop()
    while True:
        due = loop.time() + every
        await asyncio.sleep(every)
        out.append(loop.time() - due)


def latency(samples: list[Sample], scale: float) -> dict[str, Any]:
    ms = sorted(s.latency_ms / scale for s in samples if s.latency_ms is not None)
    lost = sum(s.latency_ms is None for s in samples)
    p95 = ms[min(len(ms) - 1, int(round(0.95 * (len(ms) - 1))))] if ms else None
    return {"samples": len(samples), "lost": lost, "loss": lost / len(samples) if samples else None,
            "median_ms": statistics.median(ms) if ms else None, "p95_ms": p95}


async def run(name: str, args: argparse.Namespace, han_share: float | None, push: bool) -> dict[str, Any]:
    link = LinkModel.realistic(scale=args.scale)
    specs = device_specs(args.devices, page=False)
    app = await start_sim_app(specs, link, timeout=max(60.0, 3.0 * args.devices))
    loop = asyncio.get_running_loop()
    got: list[Timed] = []
    tunnels = TunnelService(app)
    await tunnels.start()
    service = TrafficService(app, lambda s: got.append(Timed(loop.time(), s)), tunnel_send=tunnels.send)
    service.start()
    flows = [Flow(s.ieee, "metering", args.metering * args.scale, args.size) for s in specs]
    flows += [Flow(s.ieee, "price", args.price * args.scale, args.size) for s in specs]
    if args.tunnel > 0:
        flows += [Flow(s.ieee, "tunnel", args.tunnel * args.scale, args.tunnel_size) for s in specs]
    traffic = SimTraffic(app.han, flows, on_hub=service.send)
    config, how = ota_config(han_share)
    engine = Engine(app, config) if push else None
    result: dict[str, Any] = {"run": name, "ota": how if push else None}
    lags: list[float] = []
    ticker = loop.create_task(loop_lag(lags))
    try:
        traffic.start()
        await asyncio.sleep(args.warmup * args.scale)  # every flow has spoken once
        lags.clear()
        busy0, t0 = app.han.channel.busy_total, loop.time()
        if engine is None:
            await asyncio.sleep(args.quiet * args.scale)
        else:
            image = parse_image(image_bytes(args.image))
            jobs = [engine.push(image, s.ieee) for s in specs]
            for job in jobs:
                state = await engine.wait(job, {ev.SessionState.HELD}, timeout=args.timeout * args.scale)
                if state is not ev.SessionState.HELD:
                    raise RuntimeError(f"{name}: job for {job.ieee} ended {state.value}: {job.session.reason}")
        t1 = loop.time()
        busy = app.han.channel.busy_total - busy0
        lag = sorted(lags)
        window = [t.sample for t in got if t0 <= t.at <= t1]
        result |= {
            "seconds": (t1 - t0) / args.scale,
            "channel_busy": busy / (t1 - t0) if t1 > t0 else None,
            "background": latency(window, args.scale),
            "metering": latency([s for s in window if s.kind == "metering"], args.scale),
            "price": latency([s for s in window if s.kind == "price"], args.scale),
            "tunnel": latency([s for s in window if s.kind == "tunnel"], args.scale),
            "loop_lag_ms": {"median": statistics.median(lag) * 1000 if lag else None, "p95": lag[int(0.95 * (len(lag) - 1))] * 1000 if lag else None},
        }
        if engine is not None:
            block = min(config.block_cap, model.max_block(link, specs[0].max_data_size))
            cap = model.capacity(link, block).bytes_per_s / args.scale
            goodput = args.devices * args.image / result["seconds"]
            result |= {"block": block, "capacity_bytes_per_s": cap, "goodput_bytes_per_s": goodput, "goodput_share": goodput / cap}
    finally:
        ticker.cancel()
        await traffic.stop()
        service.close()
        await tunnels.close()
        if engine is not None:
            await engine.drain()
            await engine.close()
        await app.shutdown()
        await app.han.stop()
    return result


def _f(value: Any, fmt: str) -> str:
    return "-" if value is None else fmt.format(value)


def render(results: list[dict[str, Any]]) -> str:
    lines = [f"{'run':<22} {'s':>6} {'median ms':>10} {'p95 ms':>8} {'loss':>6} {'metering med':>13} {'price med':>10} {'tunnel med':>11} {'OTA B/s':>8} {'of cap':>7} {'air busy':>9} {'loop lag med/p95 ms':>20}"]
    for r in results:
        bg = r["background"]
        lines.append(
            f"{r['run']:<22} {r['seconds']:>6.1f} {_f(bg['median_ms'], '{:.1f}'):>10} {_f(bg['p95_ms'], '{:.1f}'):>8} "
            f"{_f(bg['loss'], '{:.1%}'):>6} {_f(r['metering']['median_ms'], '{:.1f}'):>13} {_f(r['price']['median_ms'], '{:.1f}'):>10} "
            f"{_f(r['tunnel']['median_ms'], '{:.1f}'):>11} "
            f"{_f(r.get('goodput_bytes_per_s'), '{:.0f}'):>8} {_f(r.get('goodput_share'), '{:.0%}'):>7} {_f(r['channel_busy'], '{:.0%}'):>9} "
            f"{_f(r['loop_lag_ms']['median'], '{:.1f}') + ' / ' + _f(r['loop_lag_ms']['p95'], '{:.1f}'):>20}"
        )
    base = results[0]["background"]["median_ms"]
    for r in results[1:]:
        med = r["background"]["median_ms"]
        if base and med is not None:
            per_kind = ", ".join(
                f"{k} {r[k]['median_ms'] / results[0][k]['median_ms']:.2f}x"
                for k in ("metering", "price", "tunnel")
                if r[k]["median_ms"] is not None and results[0][k]["median_ms"]
            )
            lines.append(f"{r['run']}: background median {med / base:.2f}x its latency without OTA ({per_kind}; {r['ota']})")
    shared = results[-1]
    # Issue 15's targets for the han_share run.
    share_ok = shared.get("goodput_share") is not None and shared["goodput_share"] <= 0.5
    med = shared["background"]["median_ms"]
    latency_ok = bool(base) and med is not None and med <= 1.5 * base
    lines.append(f"target: OTA goodput at han_share 0.5 <= 50 % of capacity: {_f(shared.get('goodput_share'), '{:.0%}')}: {'PASS' if share_ok else 'MISS'}")
    lines.append(f"target: background median at han_share 0.5 <= 1.5x without OTA: {_f(med / base if base and med is not None else None, '{:.2f}x')}: {'PASS' if latency_ok else 'MISS'}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--devices", type=int, default=4)
    p.add_argument("--image", type=int, default=24 * 1024, help="image size in bytes")
    p.add_argument("--metering", type=float, default=1.0, help="seconds between a device's reports")
    p.add_argument("--price", type=float, default=2.0, help="seconds between the hub's prices to a device")
    p.add_argument("--size", type=int, default=40, help="metering and price message size (APS payload bytes)")
    p.add_argument("--tunnel", type=float, default=5.0, help="seconds between the hub's tunnel messages to a device (0: none)")
    p.add_argument("--tunnel-size", type=int, default=200, help="tunnel message size (bytes of GBCS message)")
    p.add_argument("--quiet", type=float, default=20.0, help="seconds of the no-OTA run")
    p.add_argument("--warmup", type=float, default=3.0)
    p.add_argument("--timeout", type=float, default=600.0)
    p.add_argument("--scale", type=float, default=1.0)
    p.add_argument("--json", type=Path)
    args = p.parse_args(argv)
    quiet_logging()

    async def all_runs() -> list[dict[str, Any]]:
        return [
            await run("no OTA", args, None, push=False),
            await run("push", args, None, push=True),
            await run("push, han_share 0.5", args, 0.5, push=True),
        ]

    results = asyncio.run(all_runs())
    print(render(results))
    if args.json is not None:
        args.json.write_text(json.dumps({"args": vars(args) | {"json": str(args.json)}, "han_share_on_main": HAS_HAN_SHARE, "runs": results}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
