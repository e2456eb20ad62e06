"""The hub's key-establishment responder (gateway/se/ke_server) and the simulated
device's initiator (radios/sim/key_establishment), paired in memory with a fake clock.

Two sans-I/O machines written apart from the specification, each fed the other's bytes:
what a bench would see on the air, in milliseconds and without asyncio.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

import pytest
import zigpy.types as zt

from gateway.se import ecqv
from gateway.se import ke_server as ks
from gateway.se.suites import suite as hub_suite
from radios.sim import key_establishment as kc
from radios.sim import se_keys

HUB = zt.EUI64.convert("00:0d:6f:00:00:ab:00:01")
DEVICE = zt.EUI64.convert("00:0d:6f:00:00:cd:00:02")
ISSUER = bytes.fromhex("5445535453454341")


def display(ieee: zt.EUI64) -> bytes:
    return bytes(ieee)[::-1]


@dataclass
class Bench:
    server: ks.KeServer
    client: kc.KeyEstablishmentClient
    now: float = 0.0
    hub_outcomes: list[object] = field(default_factory=list)
    device_outcomes: list[object] = field(default_factory=list)
    sent_by_hub: list[ks.Send] = field(default_factory=list)
    tsn: int = 0

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
                try:
                    event: ks.Event = ks.Computed(action.kind, action.ticket, action.work())
                except Exception as exc:  # what the asyncio layer does with a failed work
                    event = ks.ComputeFailed(action.kind, action.ticket, exc)
                self.to_client(self.server.handle(event, self.now))
            elif isinstance(action, ks.Send):
                self.sent_by_hub.append(action)
                self.to_server(self.client.handle_command(action.command_id, action.payload, self.now))
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


def bench(number: int, fault: str | None = None, seed: int = 7) -> Bench:
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
    return Bench(server, client)


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
