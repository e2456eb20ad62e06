"""Key establishment (CBKE) time per crypto suite, beside the OTA time of a push to an
APS-encrypted device, ours against zigpy's.

Run by hand: ``.venv/bin/python bench/cbke.py [--repeat N] [--exchanges N] [--ota-kib K] [--json PATH]``.
Nothing is asserted. Three parts:

1. the primitives: one scalar multiplication, one ECQV reconstruction, one ephemeral
   key pair plus ECMQV and the KDF, per suite (milliseconds);
2. whole exchanges, per suite: the hub's responder (gateway/se/ke_server.py) and the
   simulated device's initiator (radios/sim/key_establishment.py, written apart from
   it) paired in memory, each fed the other's frames at once, with no air and no
   asyncio: the wall time of Initiate to both sides holding the key, and its heavy
   steps (the hub's two ``Compute`` works, the device's handling of each response, in
   which its crypto runs); this is the crypto cost a real exchange adds to its air time;
3. the OTA time of one HCALCS, block requests, APS-encrypted (key in force as after
   CBKE), on the realistic link: ours (56-byte blocks) and zigpy's ``update_firmware``
   with its Ota cluster's ``aps_encryption`` set, the ``one-aps/block`` scenarios of
   bench/ota.py, run here by the same code (``--ota-kib 0`` skips them; 256 KiB takes
   about five minutes).
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # run as a script from a checkout

import zigpy.types as zt  # noqa: E402

from gateway.se import ecqv  # noqa: E402
from gateway.se import ke_server as ks  # noqa: E402
from gateway.se.ecmqv import agree  # noqa: E402
from gateway.se.ecqv import issue, new_key_pair, reconstruct_public_key  # noqa: E402
from gateway.se.suites import SUITES, Suite  # noqa: E402
from gateway.se.suites import suite as hub_suite  # noqa: E402
from radios.sim import key_establishment as kc  # noqa: E402
from radios.sim import se_keys  # noqa: E402

HUB = zt.EUI64.convert("00:0d:6f:00:00:ab:00:01")
DEVICE = zt.EUI64.convert("00:0d:6f:00:00:cd:00:02")
ISSUER = bytes.fromhex("5445535453454341")
#: What the device's handling of each hub answer is called in the step timings.
_DEVICE_STEPS = {0x00: "device: initiate response", 0x01: "device: ephemeral response", 0x02: "device: confirm response"}


def display(ieee: zt.EUI64) -> bytes:
    return bytes(ieee)[::-1]


# ---------------------------------------------------------------------------- 1. primitives


def _ms(start: float, count: int) -> float:
    return (time.perf_counter() - start) * 1000 / count


def bench_suite(s: Suite, repeat: int) -> dict[str, float]:
    curve = s.curve
    scalars = [new_key_pair(s).private_key for _ in range(repeat)]
    start = time.perf_counter()
    for d in scalars:
        curve.multiply_base(int.from_bytes(d, "big"))
    multiply = _ms(start, repeat)

    ca = new_key_pair(s)
    hub_cert, hub_key = issue(s, ca, subject=bytes.fromhex("00124B0001020304"), issuer=b"BENCHCA1")
    dev_cert, _ = issue(s, ca, subject=bytes.fromhex("000D6F0000ABCDEF"), issuer=b"BENCHCA1")
    start = time.perf_counter()
    for _ in range(repeat):
        reconstruct_public_key(dev_cert, ca.public_key)
    reconstruct = _ms(start, repeat)

    peer_static = reconstruct_public_key(dev_cert, ca.public_key)
    peer_eph = new_key_pair(s)
    start = time.perf_counter()
    for _ in range(repeat):
        own_eph = new_key_pair(s)
        agree(
            s, initiator=False, own_static_private=hub_key, own_ephemeral_private=own_eph.private_key,
            own_ephemeral_public=own_eph.public_key, own_ieee=hub_cert.subject, peer_static_public=peer_static,
            peer_ephemeral_public=peer_eph.public_key, peer_ieee=dev_cert.subject,
        )  # fmt: skip
    agreement = _ms(start, repeat)
    return {"multiply": multiply, "reconstruct": reconstruct, "ephemeral+agree": agreement}


# ---------------------------------------------------------------------------- 2. whole exchanges


@dataclass
class Pair:
    """The hub's responder and the device's initiator joined in memory with a fake clock:
    each side's frames go straight to the other; the hub's ``Compute`` works run at once,
    as the asyncio layer would run them in its executor. ``steps`` collects the seconds
    each heavy step took (tests/gateway/se/test_se_pair.py drives the same pair without looking)."""

    server: ks.KeServer
    client: kc.KeyEstablishmentClient
    now: float = 0.0
    hub_outcomes: list[object] = field(default_factory=list)
    device_outcomes: list[object] = field(default_factory=list)
    sent_by_hub: list[ks.Send] = field(default_factory=list)
    tsn: int = 0
    steps: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))

    def to_server(self, actions: list[kc.Action]) -> None:
        for action in actions:
            if isinstance(action, kc.SendCommand):
                self.tsn = (self.tsn + 1) & 0xFF
                self.to_client(self.server.handle(ks.FrameReceived(self.tsn, action.command_id, action.payload), self.now))
            elif isinstance(action, (kc.Established, kc.Leave)):
                self.device_outcomes.append(action)

    def to_client(self, actions: list[ks.Action]) -> None:
        for action in actions:
            if isinstance(action, ks.Compute):
                start = time.perf_counter()
                try:
                    event: ks.Event = ks.Computed(action.kind, action.ticket, action.work())
                except Exception as exc:  # what the asyncio layer does with a failed work
                    event = ks.ComputeFailed(action.kind, action.ticket, exc)
                self.steps[f"hub: {action.kind.value}"].append(time.perf_counter() - start)
                self.to_client(self.server.handle(event, self.now))
            elif isinstance(action, ks.Send):
                self.sent_by_hub.append(action)
                start = time.perf_counter()
                answer = self.client.handle_command(action.command_id, action.payload, self.now)
                self.steps[_DEVICE_STEPS.get(action.command_id, "device: other")].append(time.perf_counter() - start)
                self.to_server(answer)
            elif isinstance(action, (ks.Established, ks.Failed)):
                self.hub_outcomes.append(action)

    def run(self, until: float = 600.0) -> None:
        """Start the device, then fire whichever timer is next until both are quiet."""
        self.to_server(self.client.start(self.now))
        while True:
            timers = [t for t in (self.server.get_timer(), self.client.get_timer()) if t is not None]
            if not timers or min(timers) > until:
                return
            self.now = max(self.now, min(timers))
            if self.server.get_timer() is not None and self.server.get_timer() <= self.now:
                self.to_client(self.server.handle_timer(self.now))
            if self.client.get_timer() is not None and self.client.get_timer() <= self.now:
                self.to_server(self.client.handle_timer(self.now))


def pair(number: int, fault: str | None = None, seed: int = 7) -> Pair:
    """A hub and a device for suite ``number``, their certificates from one lab CA
    (``fault``: the simulated device's cbke_fail, e.g. "unknown-issuer")."""
    rng = random.Random(seed)
    hs = hub_suite(number)
    ca = ecqv.new_key_pair(hs, rng.randbytes)
    hub_cert, hub_key = ecqv.issue(hs, ca, display(HUB), ISSUER, rng.randbytes)
    config = ks.KeConfig.build([ks.HubIdentity.load(number, hub_cert.raw, hub_key, [ca.public_key])], [number])
    server = ks.KeServer(config, DEVICE, rng=rng.randbytes)

    ss = se_keys.SUITES[number]
    sim_ca = se_keys.KeyPair(int.from_bytes(ca.private_key, "big"), ss.curve.decompress(ca.public_key))
    creds = kc.device_credentials(number, display(DEVICE), sim_ca, ISSUER, rng, fault)
    client = kc.KeyEstablishmentClient(
        kc.InitiatorConfig(ieee=display(DEVICE), trust_center_ieee=display(HUB), credentials=[creds], fault=fault),
        rng,
    )
    return Pair(server, client)


def bench_exchange(number: int, exchanges: int) -> dict[str, Any]:
    """Median seconds of a whole exchange and of each heavy step, over ``exchanges``
    exchanges with fresh keys."""
    walls: list[float] = []
    steps: dict[str, list[float]] = defaultdict(list)
    for n in range(exchanges):
        p = pair(number, seed=100 + n)
        start = time.perf_counter()
        p.run()
        walls.append(time.perf_counter() - start)
        [hub], [device] = p.hub_outcomes, p.device_outcomes
        if not (isinstance(hub, ks.Established) and isinstance(device, kc.Established) and hub.key_data == device.key_data):
            raise RuntimeError(f"suite {number}: the exchange did not end with one key on both sides: {hub!r}, {device!r}")
        for name, seconds in p.steps.items():
            steps[name].append(sum(seconds))
    return {
        "exchanges": exchanges,
        "wall_s": statistics.median(walls),
        "wall_s_max": max(walls),
        "steps_s": {name: statistics.median(values) for name, values in sorted(steps.items())},
    }


# ---------------------------------------------------------------------------- 3. OTA, APS-encrypted


def bench_ota_aps(kib: int) -> dict[str, dict[str, Any] | None]:
    """The ``one-aps/block`` scenarios of bench/ota.py (ours, zigpy), one after the
    other, each in its own process as bench/ota.py runs them."""
    from bench import ota

    args = argparse.Namespace(quick=False, one_kib=kib, many_kib=16, hub_kib=64, scale=1.0, loop="select", only=["one-aps/block"])
    out: dict[str, dict[str, Any] | None] = {}
    for sc in ota.plan(args):
        done = ota._launch(sc)
        print(f"  {sc.name:<24} {done.wall_s or 0:7.1f} s wall  {'ok' if done.result else f'FAILED ({done.error})'}", flush=True)
        out[sc.name.rsplit("/", 1)[-1]] = done.result
    return out


# ---------------------------------------------------------------------------- report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=20, help="primitives: operations per figure (default 20)")
    parser.add_argument("--exchanges", type=int, default=5, help="whole exchanges per suite (default 5; medians)")
    parser.add_argument("--ota-kib", type=int, default=256, help="image size of the APS-encrypted OTA runs; 0 skips them (default 256)")
    parser.add_argument("--json", type=Path, default=None, help="also write every figure here")
    args = parser.parse_args(argv)
    doc: dict[str, Any] = {"primitives_ms": {}, "exchange": {}, "ota_aps": None}

    print("1. Primitives (ms each)")
    for s in SUITES:
        result = bench_suite(s, args.repeat)
        doc["primitives_ms"][s.number] = result
        cells = "  ".join(f"{name} {ms:7.1f}" for name, ms in result.items())
        print(f"   suite {s.number} ({s.curve.name}): {cells}")

    print(f"2. Whole key establishment, hub responder + simulated device in memory (median of {args.exchanges}; no air time)")
    for s in SUITES:
        r = bench_exchange(s.number, args.exchanges)
        doc["exchange"][s.number] = r
        print(f"   suite {s.number} ({s.curve.name}): {r['wall_s']:.3f} s (max {r['wall_s_max']:.3f} s)")
        for name, seconds in r["steps_s"].items():
            print(f"      {name:<30}{1000 * seconds:8.1f} ms")

    if args.ota_kib:
        print(f"3. OTA to one APS-encrypted HCALCS, {args.ota_kib} KiB, block requests, realistic link (bench/ota.py one-aps/block)")
        runs = bench_ota_aps(args.ota_kib)
        doc["ota_aps"] = runs
        ours, zigpy = runs.get("ours"), runs.get("zigpy")
        for name, r in (("ours", ours), ("zigpy (aps_encryption=True)", zigpy)):
            if r is None or r.get("seconds_to_end") is None:
                print(f"   {name:<30}FAILED")
                continue
            print(f"   {name:<30}{r['seconds_to_end']:8.1f} s to Upgrade End  block {r.get('block_size')} B, {r.get('blocks')} blocks, "
                  f"aps_secured={r.get('aps_secured_received')} aps_drops={r.get('aps_drops')}")
        if ours and zigpy and ours.get("seconds_to_end") and zigpy.get("seconds_to_end"):
            print(f"   zigpy/ours {zigpy['seconds_to_end'] / ours['seconds_to_end']:.2f}x")

    if doc["exchange"] and doc["ota_aps"] is not None:
        ours = (doc["ota_aps"].get("ours") or {}).get("seconds_to_end")
        zigpy = (doc["ota_aps"].get("zigpy") or {}).get("seconds_to_end")
        cells = "  ".join(f"CBKE suite {n} {r['wall_s']:.2f} s" for n, r in doc["exchange"].items())
        print(f"\nSide by side: {cells}  |  APS-encrypted {args.ota_kib} KiB push: ours {ours if ours is None else round(ours, 1)} s, "
              f"zigpy {zigpy if zigpy is None else round(zigpy, 1)} s")
    if args.json:
        args.json.write_text(json.dumps(doc, indent=1, default=str))
        print(f"JSON: {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
