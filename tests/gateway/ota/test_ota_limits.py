"""Block size from the radio's real limit (issue 14 item 2), without asyncio.

gateway/ota/limits.py turns a radio family's numbers (radios/limits.py), a device's APS
security and its relays into the Image Block Response data size and the sentence the
log gives for it; the session serves at most that (BlockLimitSet) and, when the radio
refuses a block as too long anyway (BlockTooLong), serves it again smaller.
"""

from __future__ import annotations

import types

import pytest

from gateway.ota import events as ev
from gateway.ota.config import SessionConfig
from gateway.ota.events import NoteKind, SessionState
from gateway.ota.limits import IMAGE_BLOCK_RESPONSE_OVERHEAD, after_too_long, block_limit
from gateway.ota.pacing import Pacer
from radios.limits import EZSP, SIM, ZSTACK, PayloadLimits, for_app
from radios.sim.link import ZCL_BLOCK_RESPONSE_OVERHEAD

from tests.gateway.ota.test_ota_session import block, make, notes, of, only, page, query

T = SessionState.TRANSFERRING


# --------------------------------------------------------------------------- the function


def test_the_image_block_response_overhead_is_the_zcl_one() -> None:
    assert IMAGE_BLOCK_RESPONSE_OVERHEAD == ZCL_BLOCK_RESPONSE_OVERHEAD == 17


# What the EZSP helper measured on the emulated NCP (EmberZNet's numbers): 82 less 17,
# less 9 APS-encrypted, less 2 + 2 per relay.
@pytest.mark.parametrize(("aps", "relays", "size"), [
    (False, 0, 65), (False, 1, 61), (False, 2, 59), (False, 3, 57),
    (True, 0, 56), (True, 1, 52), (True, 2, 50),
])
def test_ezsp_block_sizes(aps: bool, relays: int, size: int) -> None:
    limit = block_limit(EZSP, aps_encrypted=aps, relays=relays)
    assert limit.size == size
    assert limit.size + IMAGE_BLOCK_RESPONSE_OVERHEAD == EZSP.max_payload(aps_encrypted=aps, relays=relays)


def test_the_reason_names_security_route_and_radio() -> None:
    assert block_limit(EZSP, aps_encrypted=True, relays=1).why == "52 bytes: APS-encrypted, 1 relay, EZSP limit 82"
    assert block_limit(EZSP, aps_encrypted=False, relays=0).why == "65 bytes: NWK security only, direct, EZSP limit 82"
    assert block_limit(ZSTACK, aps_encrypted=False, relays=2).why == "59 bytes: NWK security only, 2 relays, Z-Stack limit 82"


def test_each_family_has_its_own_numbers() -> None:
    assert (EZSP.max_aps_payload, ZSTACK.max_aps_payload, SIM.max_aps_payload) == (82, 82, 82)
    assert block_limit(SIM, aps_encrypted=False, relays=0).size == 65


def test_refuses_a_negative_relay_count() -> None:
    with pytest.raises(ValueError, match="relays"):
        block_limit(EZSP, aps_encrypted=False, relays=-1)


def test_a_long_route_never_gives_a_block_below_one_byte() -> None:
    assert block_limit(EZSP, aps_encrypted=True, relays=40).size == 1


def test_after_too_long_uses_a_route_learnt_since_the_block_was_made() -> None:
    # 63 bytes refused; zigpy now knows of one relay: 61 fits.
    limit = after_too_long(EZSP, aps_encrypted=False, relays=1, refused=63)
    assert limit.size == 61 and limit.why == "61 bytes: NWK security only, 1 relay, EZSP limit 82 (the radio refused 63 bytes as too long)"


def test_after_too_long_assumes_relays_the_host_has_not_heard_of() -> None:
    # Direct as far as zigpy knows (65 allowed), yet 61 was refused: the stack's route is
    # longer than we know: two relays assumed gives 59.
    limit = after_too_long(EZSP, aps_encrypted=False, relays=0, refused=61)
    assert limit.size == 59 and "2 relays assumed (direct known)" in limit.why and "refused 61" in limit.why


@pytest.mark.parametrize("refused", range(1, 90))
def test_after_too_long_always_shrinks_until_one_byte(refused: int) -> None:
    for aps in (False, True):
        for relays in range(4):
            size = after_too_long(EZSP, aps_encrypted=aps, relays=relays, refused=refused).size
            assert 1 <= size and (size < refused or refused == 1)


def test_after_too_long_refuses_a_nonsense_size() -> None:
    with pytest.raises(ValueError, match="refused"):
        after_too_long(EZSP, aps_encrypted=False, relays=0, refused=0)


def test_which_statuses_mean_too_long() -> None:
    status = types.SimpleNamespace(name="MESSAGE_TOO_LONG")
    other = types.SimpleNamespace(name="DELIVERY_FAILED")
    assert EZSP.refused_as_too_long(types.SimpleNamespace(status=status))
    assert not EZSP.refused_as_too_long(types.SimpleNamespace(status=other))
    assert not EZSP.refused_as_too_long(ValueError("no status"))
    assert ZSTACK.refused_as_too_long(types.SimpleNamespace(status=types.SimpleNamespace(name="INVALID_PARAMETER")))
    assert not SIM.refused_as_too_long(types.SimpleNamespace(status=status))


def test_for_app_by_the_radio_library() -> None:
    def app_of(module: str) -> object:
        return type("ControllerApplication", (), {"__module__": module})()

    assert for_app(app_of("bellows.zigbee.application")) is EZSP
    assert for_app(app_of("zigpy_znp.zigbee.application")) is ZSTACK
    assert for_app(app_of("radios.sim.app")) is SIM
    assert for_app(app_of("somebody.else")) is SIM


def test_bellows_status_names_match(ezsp_status_names: set[str]) -> None:
    assert EZSP.too_long_statuses <= ezsp_status_names


@pytest.fixture
def ezsp_status_names() -> set[str]:
    import bellows.types as bt

    return {s.name for s in bt.sl_Status} & {s.name for s in bt.EmberStatus}


def test_zstack_status_names_match() -> None:
    import zigpy_znp.types as zt

    assert ZSTACK.too_long_statuses <= {s.name for s in zt.Status}


# --------------------------------------------------------------------------- the session


def transferring(size: int = 1000, config: SessionConfig | None = None, pacer: Pacer | None = None):
    s = make(size, config, pacer)
    s.start(0.0)
    s.handle(query(), 1.0)
    assert s.state is T
    return s


def test_block_limit_set_caps_blocks_and_is_noted_with_its_reason() -> None:
    s = transferring()
    acts = s.handle(ev.BlockLimitSet(52, "52 bytes: APS-encrypted, 1 relay, EZSP limit 82"), 2.0)
    assert [n.message for n in notes(acts, NoteKind.BLOCK_SIZE)] == ["blocks of at most 52 bytes: APS-encrypted, 1 relay, EZSP limit 82"]
    sent = only(s.handle(block(0, size=64), 2.1), ev.SendImageBlock)
    assert len(sent.data) == 52
    # The same limit again is not noted twice; a larger radio limit leaves the configured cap.
    assert not notes(s.handle(ev.BlockLimitSet(52, "again"), 2.2), NoteKind.BLOCK_SIZE)
    acts = s.handle(ev.BlockLimitSet(65, "65 bytes: NWK security only, direct, EZSP limit 82"), 2.3)
    assert notes(acts, NoteKind.BLOCK_SIZE)[0].message == (
        "blocks of at most 63 bytes: the configured cap (the radio allows 65 bytes: NWK security only, direct, EZSP limit 82)"
    )
    assert len(only(s.handle(block(52, size=64), 2.4), ev.SendImageBlock).data) == 63


def test_the_first_limit_is_noted_even_when_the_configured_cap_wins() -> None:
    s = make()
    acts = s.handle(ev.BlockLimitSet(65, "65 bytes: direct"), 0.5)
    assert "configured cap" in notes(acts, NoteKind.BLOCK_SIZE)[0].message


def test_the_device_asking_for_less_still_gets_less() -> None:
    s = transferring()
    s.handle(ev.BlockLimitSet(61, "61"), 2.0)
    assert len(only(s.handle(block(0, size=40), 2.1), ev.SendImageBlock).data) == 40


def test_aps_encryption_coming_into_force_keeps_the_radio_limit() -> None:
    s = transferring()
    s.handle(ev.BlockLimitSet(50, "50"), 2.0)
    s.set_aps_encryption(True)  # config cap 56; the radio's 50 still wins
    assert len(only(s.handle(block(0), 2.1), ev.SendImageBlock).data) == 50


def test_block_too_long_serves_the_same_request_again_smaller() -> None:
    pacer = Pacer(1e9, 1 << 30, 8)
    s = transferring(pacer=pacer)
    before = pacer.inflight  # the notify and the query's answer, never answered here
    sent = only(s.handle(block(126, tsn=9), 2.0), ev.SendImageBlock)
    assert len(sent.data) == 63 and s.offset == 189 and pacer.inflight == before + 1
    acts = s.handle(ev.BlockTooLong(9, 126, 63, 61, "61 bytes: NWK security only, 1 relay, EZSP limit 82 (the radio refused 63 bytes as too long)"), 2.1)
    again = only(acts, ev.SendImageBlock)
    assert (again.tsn, again.file_offset, again.data) == (9, 126, s.image.data[126:187])
    assert s.offset == 187 and pacer.inflight == before + 1  # the refused frame left the pacer, the new one is on it
    note = only(notes(acts, NoteKind.BLOCK_SIZE), ev.Note)
    assert note.warning and note.offset == 126
    assert note.message.startswith("block of 63 bytes at offset 126 refused by the radio as too long; blocks of at most 61 bytes")
    # Later blocks are the smaller size too.
    assert len(only(s.handle(block(187), 2.2), ev.SendImageBlock).data) == 61


def test_block_too_long_always_shrinks_even_with_a_wrong_limit() -> None:
    s = transferring()
    acts = s.handle(ev.BlockTooLong(9, 0, 40, 70, "nonsense"), 2.0)
    assert len(only(acts, ev.SendImageBlock).data) == 39


def test_block_too_long_of_one_byte_is_not_sent_again() -> None:
    s = transferring()
    acts = s.handle(ev.BlockTooLong(9, 0, 1, 1, "one"), 2.0)
    assert not of(acts, ev.SendImageBlock) and notes(acts, NoteKind.BLOCK_SIZE)


def test_block_too_long_of_a_page_block_goes_on_from_that_block() -> None:
    s = transferring()
    first = only(s.handle(page(0, page_size=200, spacing=0), 2.0), ev.SendImageBlock)
    assert first.tsn is None and len(first.data) == 63
    acts = s.handle(ev.BlockTooLong(None, 0, 63, 59, "59"), 2.1)
    again = only(acts, ev.SendImageBlock)
    assert (again.tsn, again.file_offset, len(again.data)) == (None, 0, 59)
    # The page continues right after it, in the smaller size, with no gap.
    got = [again]
    now = 2.1
    while s.get_timer() is not None and s._page is not None:
        now = max(now, s.get_timer())
        got += of(s.handle_timer(now), ev.SendImageBlock)
    offsets = [(b.file_offset, len(b.data)) for b in got]
    assert offsets == [(0, 59), (59, 59), (118, 59), (177, 23)]


def test_block_too_long_after_the_transfer_moved_on_only_notes() -> None:
    s = transferring(size=63)
    only(s.handle(block(0), 2.0), ev.SendImageBlock)
    s.handle(ev.UpgradeEndRequested(4, 0, s.image.manufacturer_code, s.image.image_type, s.image.file_version), 2.1)
    assert s.state is SessionState.HELD
    acts = s.handle(ev.BlockTooLong(2, 0, 63, 61, "61"), 2.2)
    assert not of(acts, ev.SendImageBlock) and notes(acts, NoteKind.BLOCK_SIZE) and s.radio_block_limit == 61


def test_block_too_long_reaches_a_parked_session_but_sends_nothing() -> None:
    s = transferring()
    only(s.handle(block(0), 2.0), ev.SendImageBlock)
    s.park(2.1)
    acts = s.handle(ev.BlockTooLong(2, 0, 63, 61, "61"), 2.2)
    assert not of(acts, ev.SendImageBlock) and s.radio_block_limit == 61
    s.resume(3.0)
    assert len(only(s.handle(block(0), 3.1), ev.SendImageBlock).data) == 61


def test_payload_limits_numbers_are_frozen() -> None:
    with pytest.raises(AttributeError):
        EZSP.max_aps_payload = 100  # type: ignore[misc]
    assert PayloadLimits("x", 70).max_payload(aps_encrypted=True, relays=2) == 70 - 9 - 6


# --------------------------------------------------------------------------- the driver


async def test_the_driver_shrinks_on_zstacks_refusal_and_the_push_completes() -> None:
    """Z-Stack's equivalent of MESSAGE_TOO_LONG: AF_DataRequest refuses a payload over
    afDataReqMTU with INVALID_PARAMETER, which zigpy-znp raises as DeliveryError with that
    status. Here a sim radio's send_packet refuses as a Z-Stack holding a one-relay route
    the host does not know would (82 - 2 - 2 = 78 bytes): the first 63-byte block is
    refused, the driver answers BlockTooLong, and the push completes in 61-byte blocks."""
    import zigpy.exceptions
    import zigpy_znp.types as znp_t

    from tests.system.test_engine_e2e import IEEE, image, network

    async with network() as (app, engine, seen):
        engine.driver.radio_limits = ZSTACK
        send_packet = app.send_packet
        refused: list[int] = []
        delivered: list[int] = []

        async def zstack_send_packet(packet):
            if packet.cluster_id == 0x0019 and len(packet.data.serialize()) > 78:
                refused.append(len(packet.data.serialize()) - 17)
                raise zigpy.exceptions.DeliveryError(f"Failed to send request: {znp_t.Status.INVALID_PARAMETER!r}",
                                                     status=znp_t.Status.INVALID_PARAMETER)
            if packet.cluster_id == 0x0019 and packet.data.serialize()[2] == 0x05:  # Image Block Response
                delivered.append(len(packet.data.serialize()) - 17)
            return await send_packet(packet)

        app.send_packet = zstack_send_packet
        fw = image(3000)
        job = engine.push(fw, IEEE)
        assert await engine.wait(job, {SessionState.HELD}, timeout=30) is SessionState.HELD
        assert refused == [63] and set(delivered[:-1]) == {61} and job.session.offset == fw.size
        messages = [a.message for _, a in seen if isinstance(a, ev.Note) and a.kind is NoteKind.BLOCK_SIZE]
        assert messages[0] == ("blocks of at most 63 bytes: the configured cap "
                               "(the radio allows 65 bytes: NWK security only, direct, Z-Stack limit 82)")
        assert "61 bytes: NWK security only, 1 relay assumed (direct known), Z-Stack limit 82 (the radio refused 63 bytes as too long)" in messages[1]
