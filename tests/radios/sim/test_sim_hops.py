"""A simulated device some radio hops from the coordinator (`hops=N`): its frames take
airtime once per hop, and its route (relays) is what the radios report to the host."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import zigpy.types as t
import zigpy.zdo.types as zdo_t

from radios.sim.han import SimHan
from radios.sim.link import LinkModel
from radios.sim.spec import SimDeviceSpec, parse_sim_device
from radios.sim.testing import HandCoordinator

NEAR = t.EUI64.convert("00:0d:6f:00:00:00:00:01")
FAR = t.EUI64.convert("00:0d:6f:00:00:00:00:02")
QUIET = {"query_delay": 1000.0}


@pytest.fixture
async def han_factory() -> AsyncIterator[object]:
    hans: list[SimHan] = []

    async def make(*specs: SimDeviceSpec, link: LinkModel | None = None) -> tuple[SimHan, HandCoordinator]:
        han = SimHan(list(specs), link)
        hans.append(han)
        hc = HandCoordinator(han)
        await han.start()
        return han, hc

    yield make
    for han in hans:
        await han.stop()


def test_hops_option_is_read_and_bounded() -> None:
    assert parse_sim_device("hcalcs:0011223344556677:hops=3").hops == 3
    assert parse_sim_device("hcalcs:0011223344556677").hops == 1
    with pytest.raises(ValueError, match="hops"):
        parse_sim_device("hcalcs:0011223344556677:hops=0")


async def test_relays_name_the_routers_between_nearest_the_device_first(han_factory) -> None:
    han, _ = await han_factory(
        SimDeviceSpec(kind="hcalcs", ieee=NEAR, nwk=0x1001, **QUIET),
        SimDeviceSpec(kind="ppmid", ieee=FAR, nwk=0x2002, hops=3, **QUIET),
    )
    assert han.relays_of(0x1001) == ()
    relays = han.relays_of(0x2002)
    assert len(relays) == 2 and len(set(relays)) == 2
    assert not {0x0000, 0x1001, 0x2002} & set(relays)
    assert han.relays_of(0x2002) == relays  # the same route each time
    assert han.relays_of(0x4242) == ()


async def _busy_for_one_exchange(han: SimHan, hc: HandCoordinator, nwk: int) -> float:
    """Channel time of a request, its APS ack, the answer and the answer's APS ack (all
    four are booked by the time the host hears the answer)."""
    before = han.channel.busy_total
    mark = len(hc.heard)
    data = bytes([0x21]) + t.NWK(nwk).serialize()
    result = await hc.send(nwk, zdo_t.ZDOCmd.Node_Desc_req, data, profile=0, src_ep=0, dst_ep=0)
    assert result.ok
    await hc.expect(cluster=zdo_t.ZDOCmd.Node_Desc_rsp, src=nwk, since=mark, timeout=30)
    return han.channel.busy_total - before


async def test_each_hop_takes_the_channel_again(han_factory) -> None:
    han, hc = await han_factory(
        SimDeviceSpec(kind="hcalcs", ieee=NEAR, nwk=0x1001, seed=1, **QUIET),
        SimDeviceSpec(kind="hcalcs", ieee=FAR, nwk=0x2002, hops=2, seed=1, **QUIET),
        link=LinkModel.realistic(scale=0.01, uart_baud=None),
    )
    for nwk in (0x1001, 0x2002):  # past the start-up's own frames (announcements)
        await _busy_for_one_exchange(han, hc, nwk)
    near = await _busy_for_one_exchange(han, hc, 0x1001)
    far = await _busy_for_one_exchange(han, hc, 0x2002)
    assert near > 0
    # Every frame of the exchange crosses two hops: twice the channel time.
    assert far == pytest.approx(2 * near, rel=0.05)


async def test_the_sim_radio_tells_zigpy_the_route_as_real_stacks_do() -> None:
    from radios.sim.app import start_sim_app

    fast = {"query_delay": 1000.0}
    app = await start_sim_app(
        [SimDeviceSpec(kind="hcalcs", ieee=NEAR, **fast), SimDeviceSpec(kind="hcalcs", ieee=FAR, hops=3, **fast)], timeout=10
    )
    try:
        far, near = app.devices[FAR], app.devices[NEAR]
        assert far.is_initialized and near.is_initialized  # the interview's answers came over the route
        assert [int(r) for r in far.relays] == list(app.han.relays_of(far.nwk))
        assert len(far.relays) == 2
        assert not near.relays  # a neighbour: no route record, nothing told
    finally:
        await app.shutdown()
