"""Milliseconds per scalar multiplication and per ECMQV agreement, for each crypto suite.

Run by hand: ``.venv/bin/python bench/cbke.py [--repeat N]``. Nothing is asserted; it
tells whether the key-establishment crypto fits the cluster's generate times on this
machine (each side does about four multiplications per establishment).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # run as a script from a checkout

from gateway.se.ecmqv import agree  # noqa: E402
from gateway.se.ecqv import issue, new_key_pair, reconstruct_public_key  # noqa: E402
from gateway.se.suites import SUITES, Suite  # noqa: E402


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


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=20)
    args = parser.parse_args(argv)
    for s in SUITES:
        result = bench_suite(s, args.repeat)
        cells = "  ".join(f"{name} {ms:7.1f} ms" for name, ms in result.items())
        print(f"suite {s.number} ({s.curve.name}): {cells}")


if __name__ == "__main__":
    main()
