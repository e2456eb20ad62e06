"""The hub's key-establishment responder (gateway/se/ke_server) and the simulated
device's initiator (radios/sim/key_establishment), paired in memory with a fake clock.

Two sans-I/O machines written apart from the specification, each fed the other's bytes:
what a bench would see on the air, in milliseconds and without asyncio. The pairing
itself (``Pair``) is bench/cbke.py's, which times the same exchange.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # bench/ is not an installed package

from bench.cbke import DEVICE, pair  # noqa: E402  the pairing bench/cbke.py times
from gateway.se import ke_server as ks  # noqa: E402
from radios.sim import key_establishment as kc  # noqa: E402

bench = pair


@pytest.mark.parametrize("number", [1, 2])
def test_hub_and_device_establish_the_same_link_key(number: int) -> None:
    b = bench(number)
    b.run()
    [hub] = b.hub_outcomes
    [dev] = b.device_outcomes
    assert isinstance(hub, ks.Established) and isinstance(dev, kc.Established)
    assert hub.suite.number == dev.suite == number and hub.key_data == dev.key_data
    assert hub.peer_ieee == bytes(DEVICE)
    assert [s.command_id for s in b.sent_by_hub] == [0x00, 0x01, 0x02]  # Initiate, Ephemeral, Confirm responses


@pytest.mark.parametrize(
    ("fault", "status"),
    [
        ("unknown-issuer", ks.KeStatus.UNKNOWN_ISSUER),
        ("bad-certificate", ks.KeStatus.INVALID_CERTIFICATE),
        ("bad-mac", ks.KeStatus.BAD_KEY_CONFIRM),
    ],
)
def test_a_faulty_device_is_terminated_with_the_specifications_status_and_leaves(fault: str, status: int) -> None:
    b = bench(1, fault)
    b.run()
    assert b.hub_outcomes and all(isinstance(o, ks.Failed) for o in b.hub_outcomes)
    first = b.hub_outcomes[0]
    assert isinstance(first, ks.Failed) and (first.status, first.side) == (status, "hub")
    # The device retries as it was built to, then gives up and leaves the network.
    assert [type(o) for o in b.device_outcomes] == [kc.Leave]
    assert b.client.counters.terminates_received >= 1


def test_a_device_that_falls_silent_after_initiating_times_the_hub_out() -> None:
    b = bench(1, "silent")
    b.to_server(b.client.start(b.now))
    assert b.server.state is ks.KeState.AWAIT_EPHEMERAL
    deadline = b.server.get_timer()
    assert deadline is not None
    b.now = deadline
    b.to_client(b.server.handle_timer(b.now))
    [failed] = b.hub_outcomes
    assert isinstance(failed, ks.Failed) and failed.status is None and failed.side == "hub" and "timeout" in failed.why
