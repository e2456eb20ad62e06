"""A lost APS block through the emulators: the stack resends it on the air (EmberZNet's
and Z-Stack's APS, here the simulated air's), the host sends the message once, and the
1,400-byte message still crosses both ways."""

from __future__ import annotations

from typing import Any

import pytest

from tunnel_emulator_support import IEEE, RADIOS, fragmented, reversing, tunnel_through


class DropBlock:
    """The air's link model, but the ``nth`` block put on the air (counting from 1,
    either way) is lost at every MAC attempt, once."""

    def __init__(self, link: Any, nth: int) -> None:
        self._link = link
        self._nth = nth
        self._block_next = False
        self.blocks = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._link, name)

    def fragment_psdu(self, part_len: int, secured: bool) -> int:
        self._block_next = True  # han.py sizes each block just before it transmits it
        return self._link.fragment_psdu(part_len, secured)

    def mac_transmit(self, channel: Any, when: float, psdu: int, loss: float, rng: Any) -> Any:
        if self._block_next:
            self._block_next = False
            self.blocks += 1
            if self.blocks == self._nth:
                loss = 1.0
        return self._link.mac_transmit(channel, when, psdu, loss, rng)


@pytest.mark.parametrize("direction", ["down", "up"])
@pytest.mark.parametrize(("kind", "options"), [p for p in RADIOS if p.id != "ezsp14"])
async def test_a_lost_block_is_resent_and_the_message_arrives(kind: str, options: dict[str, Any], direction: str) -> None:
    async with tunnel_through(kind, options) as (service, device, server):
        received = reversing(device)
        han = server.han if kind == "ezsp" else server.coordinator.han
        message = b"\xdd" + bytes(i % 251 for i in range(1, 1400))
        # 18 blocks each way: the 3rd of the downlink, or the 3rd of the reply
        han.link = drop = DropBlock(han.link, 3 if direction == "down" else 18 + 3)
        reply = await service.request(IEEE, message, timeout=60)
        assert received == [message]
        assert reply == b"\xdf" + message[1:][::-1]
        assert drop.blocks == 18 + 18 + 1  # the lost block went again
        retries = [e.detail for e in device.events("aps_fragment_retry")]
        assert [r["downlink"] for r in retries] == [direction == "down"]
        assert all(f["delivered"] for f in fragmented(device, True) + fragmented(device, False))
        if kind == "ezsp":
            # The host cut and sent each block once: the resend was the stack's
            assert server.ncp.fragments.blocks_from_host == 18


def test_the_znp_stack_refuses_stores_and_retrieves_that_name_nothing() -> None:
    """MT_AF's huge-data commands out of turn: a store with no announced request, past
    its announced length, a retrieve of a message nobody holds, one longer than a frame."""
    import zigpy_znp.commands as c
    import zigpy_znp.types as zt

    from radios.emulate.znp.coordinator import ZnpCoordinator

    huge = ZnpCoordinator().huge
    assert huge.data_store(c.AF.DataStore.Req(Index=0, Data=b"abc")).Status == zt.Status.FAILURE
    assert huge.data_retrieve(c.AF.DataRetrieve.Req(TimeStamp=1, Index=0, Length=10)).Status == zt.Status.FAILURE
    huge._held[7] = bytes(300)
    assert huge.data_retrieve(c.AF.DataRetrieve.Req(TimeStamp=7, Index=0, Length=249)).Status == zt.Status.INVALID_PARAMETER
    assert bytes(huge.data_retrieve(c.AF.DataRetrieve.Req(TimeStamp=7, Index=290, Length=248)).Data) == bytes(10)
    assert huge.data_retrieve(c.AF.DataRetrieve.Req(TimeStamp=7, Index=0, Length=0)).Status == zt.Status.SUCCESS
    assert 7 not in huge._held  # freed by the zero-length retrieve
