"""The simulated devices' OTA client, driven by hand-built server frames (no gateway).

Every server frame here is built in the test with zigpy's Ota schemas and sent
through `SimHan.send`; every check reads the device's own frames back as bytes.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
import zigpy.types as t
from zigpy.zcl import foundation
from zigpy.zcl.clusters.general import ImageBlockCommand, ImageUpgradeStatus

from radios.sim.han import SimHan
from radios.sim.link import LinkModel
from radios.sim.spec import SimDeviceSpec
from radios.sim.testing import HandCoordinator, Heard, build_ota_image

Status = foundation.Status
OTA = 0x0019
QNI, QNI_RSP, BLOCK_REQ, PAGE_REQ, BLOCK_RSP, UE_REQ, UE_RSP, NOTIFY = 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x00
MFR = 0x121D
HCALCS_IEEE = t.EUI64.convert("00:11:22:33:44:55:66:01")
PPMID_IEEE = t.EUI64.convert("00:11:22:33:44:55:66:02")
NEW_VERSION = 0x00000002

# Fast device timers for tests (seconds): nothing here waits for realistic defaults.
FAST = {
    "query_delay": 0.01,
    "query_interval": 60.0,
    "notify_delay": 0.0,
    "response_timeout": 0.3,
    "wait_interval": 0.1,
    "reboot_time": 0.02,
    "max_retries": 2,
}


def hcalcs(**overrides: object) -> SimDeviceSpec:
    return SimDeviceSpec(kind="hcalcs", ieee=HCALCS_IEEE, **{**FAST, **overrides})  # type: ignore[arg-type]


def ppmid(**overrides: object) -> SimDeviceSpec:
    return SimDeviceSpec(kind="ppmid", ieee=PPMID_IEEE, **{**FAST, **overrides})  # type: ignore[arg-type]


@pytest.fixture
async def make_han() -> AsyncIterator[object]:
    hans: list[SimHan] = []

    async def make(*specs: SimDeviceSpec, link: LinkModel | None = None) -> tuple[SimHan, HandCoordinator]:
        han = SimHan(list(specs), link)
        hc = HandCoordinator(han)
        hans.append(han)
        await han.start()
        return han, hc

    yield make
    for han in hans:
        await han.stop()


def image_for(spec: SimDeviceSpec, version: int = NEW_VERSION, size: int = 300) -> bytes:
    payload = (bytes(range(256)) * (size // 256 + 1))[:size]
    return build_ota_image(spec.manufacturer_code, spec.image_type, version, payload=payload)


async def answer_query(hc: HandCoordinator, nwk: int, heard: Heard, image: bytes, status: Status = Status.SUCCESS) -> None:
    q = heard.command
    if status != Status.SUCCESS:
        await hc.send_ota(nwk, QNI_RSP, tsn=heard.hdr.tsn, status=status)
        return
    await hc.send_ota(
        nwk,
        QNI_RSP,
        tsn=heard.hdr.tsn,
        status=Status.SUCCESS,
        manufacturer_code=q.manufacturer_code,
        image_type=q.image_type,
        file_version=int.from_bytes(image[14:18], "little"),
        image_size=len(image),
    )


async def serve_blocks(hc: HandCoordinator, nwk: int, image: bytes, since: int, *, stop_after: int | None = None) -> int:
    """Answer Image Block Requests from ``since`` until the Upgrade End Request; returns its index."""
    served = 0
    while True:
        heard = await hc.expect(cluster=OTA, src=nwk, since=since, general=False)
        since = hc.heard.index(heard) + 1
        cmd_id = heard.hdr.command_id
        if cmd_id == UE_REQ:
            return since - 1
        if cmd_id != BLOCK_REQ:
            continue
        req = heard.command
        block = image[req.file_offset : req.file_offset + req.maximum_data_size]
        await hc.send_ota(
            nwk,
            BLOCK_RSP,
            tsn=heard.hdr.tsn,
            status=Status.SUCCESS,
            manufacturer_code=req.manufacturer_code,
            image_type=req.image_type,
            file_version=req.file_version,
            file_offset=req.file_offset,
            image_data=block,
        )
        served += 1
        if stop_after is not None and served >= stop_after:
            return since


async def download(hc: HandCoordinator, dev: object, image: bytes) -> Heard:
    """Boot query -> SUCCESS -> all blocks; returns the Upgrade End Request."""
    query = await hc.expect(cluster=OTA, command_id=QNI, src=dev.nwk)
    await answer_query(hc, dev.nwk, query, image)
    idx = await serve_blocks(hc, dev.nwk, image, hc.heard.index(query) + 1)
    return hc.heard[idx]


async def test_notify_query_blocks_hold_reask_then_unsolicited_activation(make_han) -> None:
    spec = hcalcs()
    han, hc = await make_han(spec)
    dev = han.devices[spec.ieee]
    image = image_for(spec)

    # Boot: Device_annce, then the query at boot; no image yet.
    annce = await hc.expect(cluster=0x0013, src=dev.nwk)
    assert annce.packet.data.serialize()[1:3] == dev.nwk.serialize()
    boot_query = await hc.expect(cluster=OTA, command_id=QNI, src=dev.nwk)
    q = boot_query.command
    assert (q.manufacturer_code, q.image_type, q.current_file_version, q.hardware_version) == (MFR, 0x0000, 1, 0x1111)
    assert q.field_control == 0x01  # hardware version present
    await answer_query(hc, dev.nwk, boot_query, image, Status.NO_IMAGE_AVAILABLE)
    await dev.wait_for(lambda d: d.state == "idle", 2)

    # Unicast Image Notify -> Query Next Image -> SUCCESS -> blocks.
    mark = len(hc.heard)
    await hc.send_ota(dev.nwk, NOTIFY, payload_type=0, query_jitter=100)
    query = await hc.expect(cluster=OTA, command_id=QNI, src=dev.nwk, since=mark)
    await answer_query(hc, dev.nwk, query, image)
    end_idx = await serve_blocks(hc, dev.nwk, image, hc.heard.index(query) + 1)
    end = hc.heard[end_idx].command
    assert end.status == Status.SUCCESS
    assert (end.manufacturer_code, end.image_type, end.file_version) == (MFR, 0x0000, NEW_VERSION)
    assert bytes(dev.flash.data) == image
    assert dev.counters.blocks_received == -(-len(image) // spec.max_data_size)
    assert dev.image_upgrade_status == ImageUpgradeStatus.Download_complete

    # Hold: upgrade time 0xFFFFFFFF; the device re-asks every wait_interval, stays on v1.
    for _ in range(3):
        ue = await hc.expect(cluster=OTA, command_id=UE_REQ, src=dev.nwk, since=end_idx)
        end_idx = hc.heard.index(ue) + 1
        await hc.send_ota(
            dev.nwk,
            UE_RSP,
            tsn=ue.hdr.tsn,
            manufacturer_code=MFR,
            image_type=0,
            file_version=NEW_VERSION,
            current_time=0,
            upgrade_time=0xFFFFFFFF,
        )
    await dev.wait_for(lambda d: d.counters.upgrade_end_answered >= 3 and d.state == "holding", 2)
    assert dev.current_file_version == 1
    assert dev.image_upgrade_status == ImageUpgradeStatus.Waiting_to_upgrade
    requests = [e.time for e in dev.events("upgrade_end_request")]
    assert all(b - a >= spec.wait_interval * 0.9 for a, b in zip(requests[1:], requests[2:], strict=False))

    # The server's word: unsolicited Upgrade End Response with wildcards, now.
    mark = len(hc.heard)
    await hc.send_ota(
        dev.nwk,
        UE_RSP,
        manufacturer_code=0xFFFF,
        image_type=0xFFFF,
        file_version=0xFFFFFFFF,
        current_time=0,
        upgrade_time=0,
    )
    await hc.expect(cluster=0x0013, src=dev.nwk, since=mark)  # rejoin announce
    report = await hc.expect(cluster=OTA, command_id=0x0A, general=True, src=dev.nwk, since=mark)
    (attr,) = report.command.attribute_reports
    assert attr.attrid == 0x0002 and attr.value.value == NEW_VERSION
    requery = await hc.expect(cluster=OTA, command_id=QNI, src=dev.nwk, since=mark)
    assert requery.command.current_file_version == NEW_VERSION
    assert dev.current_file_version == NEW_VERSION
    assert dev.counters.activations == 1 and dev.counters.self_activations == 0
    assert dev.radio.boots == 2


async def test_upgrade_time_offset_counts_down(make_han) -> None:
    spec = hcalcs()
    han, hc = await make_han(spec)
    dev = han.devices[spec.ieee]
    image = image_for(spec)
    ue = await download(hc, dev, image)
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    # current_time != 0: both UTC; activation after their difference (1 s).
    await hc.send_ota(
        dev.nwk, UE_RSP, tsn=ue.hdr.tsn, manufacturer_code=MFR, image_type=0, file_version=NEW_VERSION,
        current_time=700_000_000, upgrade_time=700_000_001,
    )
    await dev.wait_for(lambda d: d.state == "countdown", 1)
    assert dev.image_upgrade_status == ImageUpgradeStatus.Count_down
    await dev.wait_for(lambda d: d.current_file_version == NEW_VERSION, 3)
    assert loop.time() - t0 >= 0.95


async def test_page_requests(make_han) -> None:
    spec = ppmid(page_requests=True, page_size=100, max_data_size=40, response_spacing_ms=0)
    han, hc = await make_han(spec)
    dev = han.devices[spec.ieee]
    image = image_for(spec, size=250)
    query = await hc.expect(cluster=OTA, command_id=QNI, src=dev.nwk)
    await answer_query(hc, dev.nwk, query, image)
    since = hc.heard.index(query) + 1
    offsets = []
    skipped = False
    while True:
        heard = await hc.expect(cluster=OTA, src=dev.nwk, since=since, general=False)
        since = hc.heard.index(heard) + 1
        if heard.hdr.command_id == UE_REQ:
            break
        assert heard.hdr.command_id == PAGE_REQ
        req = heard.command
        assert (req.maximum_data_size, req.page_size, req.response_spacing) == (40, 100, 0)
        offsets.append(req.file_offset)
        end = min(req.file_offset + req.page_size, len(image))
        for off in range(req.file_offset, end, 40):
            if off == 40 and not skipped:
                skipped = True  # lose one block: the client must re-ask from offset 40
                continue
            await hc.send_ota(
                dev.nwk, BLOCK_RSP, status=Status.SUCCESS, manufacturer_code=req.manufacturer_code,
                image_type=req.image_type, file_version=req.file_version, file_offset=off,
                image_data=image[off : min(off + 40, end)],
            )
    assert heard.command.status == Status.SUCCESS
    assert offsets[:2] == [0, 40]  # the stalled page is asked again from where it stopped
    assert bytes(dev.flash.data) == image
    assert dev.counters.blocks_ignored == 1  # the block at 80 came before 40
    assert dev.counters.page_requests_sent == len(offsets)


async def test_power_cycle_resumes_at_offset(make_han) -> None:
    spec = hcalcs(query_interval=60)
    han, hc = await make_han(spec)
    dev = han.devices[spec.ieee]
    image = image_for(spec, size=600)
    query = await hc.expect(cluster=OTA, command_id=QNI, src=dev.nwk)
    await answer_query(hc, dev.nwk, query, image)
    await serve_blocks(hc, dev.nwk, image, hc.heard.index(query) + 1, stop_after=4)
    await dev.wait_for(lambda d: d.file_offset == 4 * spec.max_data_size, 2)

    mark = len(hc.heard)
    han.power_cycle(dev.ieee)
    assert dev.state == "off"
    await hc.expect(cluster=0x0013, src=dev.nwk, since=mark)
    first = await hc.expect(cluster=OTA, src=dev.nwk, general=False, since=mark)
    assert first.hdr.command_id == BLOCK_REQ  # straight back to the download, no new query
    assert first.command.file_offset == 4 * spec.max_data_size
    assert dev.image_upgrade_status == ImageUpgradeStatus.Download_in_progress
    end_idx = await serve_blocks(hc, dev.nwk, image, hc.heard.index(first))
    assert hc.heard[end_idx].command.status == Status.SUCCESS
    assert bytes(dev.flash.data) == image
    assert dev.counters.resumed == 1 and dev.radio.boots == 2


async def test_corrupt_copy_is_refused_with_invalid_image(make_han) -> None:
    spec = hcalcs(corrupt=True)
    han, hc = await make_han(spec)
    dev = han.devices[spec.ieee]
    ue = await download(hc, dev, image_for(spec))
    assert ue.command.status == Status.INVALID_IMAGE
    assert ue.hdr.frame_control.disable_default_response == 0  # the server answers with a Default Response
    assert dev.counters.invalid_images == 1
    assert "magic" in dev.events("verify_failed")[0].detail["reason"].lower()
    assert dev.image_upgrade_status == ImageUpgradeStatus.Normal and dev.file_offset == 0
    assert dev.current_file_version == 1


async def test_image_for_other_hardware_is_invalid(make_han) -> None:
    spec = hcalcs(hardware_version=0x2000)
    han, hc = await make_han(spec)
    dev = han.devices[spec.ieee]
    image = build_ota_image(MFR, 0, NEW_VERSION, min_hw=0x1111, max_hw=0x1211)
    ue = await download(hc, dev, image)
    assert ue.command.status == Status.INVALID_IMAGE
    assert "hardware version 0x2000" in dev.events("verify_failed")[0].detail["reason"]


async def test_gbcs_sample_images_verify_with_kind_defaults(make_han) -> None:
    from pathlib import Path

    data = Path(__file__).parents[2] / "data" / "gbcs"
    for spec, name in (
        (ppmid(), "sr11.4-ppmid-firmware-image.bin"),
        (hcalcs(), "sr11.1-firmware-image.bin"),
    ):
        han, hc = await make_han(spec)
        dev = han.devices[spec.ieee]
        image = (data / name).read_bytes()
        ue = await download(hc, dev, image)
        assert ue.command.status == Status.SUCCESS, dev.events("verify_failed")
        assert ue.command.file_version == 0xACDCACDC


@pytest.mark.parametrize("policy", [0, 1])
async def test_self_activation_after_unanswered_upgrade_end(make_han, policy: int) -> None:
    spec = hcalcs(self_activate_after=3, timeout_policy=policy, response_timeout=0.05, wait_interval=0.05)
    han, hc = await make_han(spec)
    dev = han.devices[spec.ieee]
    ue = await download(hc, dev, image_for(spec))
    assert ue.command.status == Status.SUCCESS
    # Never answer the Upgrade End Requests.
    if policy == 0:
        await dev.wait_for(lambda d: d.current_file_version == NEW_VERSION, 3)
        assert dev.counters.self_activations == 1
        assert dev.counters.upgrade_end_unanswered == 3
        assert dev.events("activate")[0].detail["self_activated"] is True
    else:
        await dev.wait_for(lambda d: d.counters.upgrade_end_unanswered >= 6, 3)
        assert dev.current_file_version == 1 and dev.counters.self_activations == 0


async def test_activation_that_fails_keeps_old_version(make_han) -> None:
    spec = hcalcs(activation_fails=True)
    han, hc = await make_han(spec)
    dev = han.devices[spec.ieee]
    ue = await download(hc, dev, image_for(spec))
    mark = len(hc.heard)
    await hc.send_ota(
        dev.nwk, UE_RSP, tsn=ue.hdr.tsn, manufacturer_code=MFR, image_type=0, file_version=NEW_VERSION,
        current_time=0, upgrade_time=0,
    )
    report = await hc.expect(cluster=OTA, command_id=0x0A, general=True, src=dev.nwk, since=mark)
    assert report.command.attribute_reports[0].value.value == 1
    assert dev.current_file_version == 1 and dev.events("activation_failed")


async def test_wait_for_data_adopts_minimum_block_period(make_han) -> None:
    spec = hcalcs()
    han, hc = await make_han(spec)
    dev = han.devices[spec.ieee]
    image = image_for(spec)
    query = await hc.expect(cluster=OTA, command_id=QNI, src=dev.nwk)
    await answer_query(hc, dev.nwk, query, image)
    first = await hc.expect(cluster=OTA, command_id=BLOCK_REQ, src=dev.nwk)
    assert first.command.field_control == 0
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    mark = len(hc.heard)
    await hc.send_ota(
        dev.nwk, BLOCK_RSP, tsn=first.hdr.tsn, status=Status.WAIT_FOR_DATA,
        current_time=0, request_time=1, minimum_block_period=50,
    )
    again = await hc.expect(cluster=OTA, command_id=BLOCK_REQ, src=dev.nwk, since=mark)
    assert loop.time() - t0 >= 0.95
    req = again.command
    assert req.file_offset == 0
    assert req.field_control & ImageBlockCommand.FieldControl.MinimumBlockPeriod
    assert req.minimum_block_period == 50
    assert dev.client.read_attribute(0x0009).value == 50
    assert dev.counters.wait_for_data == 1 and dev.counters.retries == 0


async def test_wait_for_data_without_minimum_block_period_field(make_han) -> None:
    spec = hcalcs()
    han, hc = await make_han(spec)
    dev = han.devices[spec.ieee]
    image = image_for(spec)
    query = await hc.expect(cluster=OTA, command_id=QNI, src=dev.nwk)
    await answer_query(hc, dev.nwk, query, image)
    first = await hc.expect(cluster=OTA, command_id=BLOCK_REQ, src=dev.nwk)
    # Older servers omit MinimumBlockPeriod (zigpy's schema would insist on it): hand-built.
    hdr = foundation.ZCLHeader.cluster(tsn=first.hdr.tsn, command_id=BLOCK_RSP, direction=foundation.Direction.Server_to_Client)
    payload = Status.WAIT_FOR_DATA.serialize() + t.uint32_t(5).serialize() + t.uint32_t(5).serialize()
    mark = len(hc.heard)
    await hc.send(dev.nwk, OTA, hdr.serialize() + payload)
    again = await hc.expect(cluster=OTA, command_id=BLOCK_REQ, src=dev.nwk, since=mark)
    assert again.command.file_offset == 0 and again.command.field_control == 0


async def test_abort_stops_and_erases(make_han) -> None:
    spec = hcalcs()
    han, hc = await make_han(spec)
    dev = han.devices[spec.ieee]
    image = image_for(spec)
    query = await hc.expect(cluster=OTA, command_id=QNI, src=dev.nwk)
    await answer_query(hc, dev.nwk, query, image)
    await serve_blocks(hc, dev.nwk, image, hc.heard.index(query) + 1, stop_after=2)
    req = await hc.expect(cluster=OTA, command_id=BLOCK_REQ, src=dev.nwk, since=len(hc.heard) - 1)
    await hc.send_ota(dev.nwk, BLOCK_RSP, tsn=req.hdr.tsn, status=Status.ABORT)
    await dev.wait_for(lambda d: d.state == "idle", 1)
    assert dev.counters.aborts == 1 and dev.file_offset == 0
    assert dev.image_upgrade_status == ImageUpgradeStatus.Normal


async def test_default_response_abort_to_upgrade_end_discards_the_image(make_han) -> None:
    """ZCL OTA: a server that will not let the image be applied answers the Upgrade End
    Request with Default Response ABORT; the client drops it and queries again."""
    spec = hcalcs(query_interval=0.2)
    han, hc = await make_han(spec)
    dev = han.devices[spec.ieee]
    image = image_for(spec)
    ue = await download(hc, dev, image)
    assert dev.image_upgrade_status == ImageUpgradeStatus.Download_complete

    def default_response(tsn: int, command_id: int, status: Status) -> bytes:
        hdr = foundation.ZCLHeader.general(tsn=tsn, command_id=0x0B, direction=foundation.Direction.Server_to_Client)
        return hdr.serialize() + foundation.DefaultResponse(command_id=command_id, status=status).serialize()

    # Another command's ABORT, or another status, is not the server's word on the image.
    await hc.send(dev.nwk, OTA, default_response(ue.hdr.tsn, QNI, Status.ABORT))
    await hc.send(dev.nwk, OTA, default_response(ue.hdr.tsn, UE_REQ, Status.FAILURE))
    await dev.wait_for(lambda d: len(d.events("default_response_received")) == 2, 2)
    assert dev.flash.target is not None and dev.counters.server_aborts == 0

    mark = len(hc.heard)
    await hc.send(dev.nwk, OTA, default_response(ue.hdr.tsn, UE_REQ, Status.ABORT))
    await dev.wait_for(lambda d: d.counters.server_aborts == 1, 2)
    assert dev.flash.target is None and dev.file_offset == 0
    assert dev.image_upgrade_status == ImageUpgradeStatus.Normal
    assert dev.current_file_version == 1 and dev.counters.activations == 0
    # Back to normal operation: it queries again, for its old version.
    query = await hc.expect(cluster=OTA, command_id=QNI, src=dev.nwk, since=mark)
    assert query.command.current_file_version == 1


async def test_unanswered_block_requests_retry_then_give_up_and_resume_later(make_han) -> None:
    spec = hcalcs(response_timeout=0.05, max_retries=2, query_interval=0.2)
    han, hc = await make_han(spec)
    dev = han.devices[spec.ieee]
    image = image_for(spec)
    query = await hc.expect(cluster=OTA, command_id=QNI, src=dev.nwk)
    await answer_query(hc, dev.nwk, query, image)
    await serve_blocks(hc, dev.nwk, image, hc.heard.index(query) + 1, stop_after=1)
    await dev.wait_for(lambda d: d.counters.gave_up == 1, 2)
    assert dev.counters.retries == 2
    offsets = [h.command.file_offset for h in hc.heard if h.hdr and h.hdr.command_id == BLOCK_REQ and not h.hdr.frame_control.is_general]
    assert offsets == [0, 64, 64, 64]
    assert dev.image_upgrade_status == ImageUpgradeStatus.Download_in_progress  # partial image kept
    # Next periodic query, same image offered: resume at 64, not 0.
    requery = await hc.expect(cluster=OTA, command_id=QNI, src=dev.nwk, since=hc.heard.index(query) + 1)
    await answer_query(hc, dev.nwk, requery, image)
    nxt = await hc.expect(cluster=OTA, command_id=BLOCK_REQ, src=dev.nwk, since=hc.heard.index(requery) + 1)
    assert nxt.command.file_offset == 64
    assert dev.counters.resumed == 1


async def test_blocks_for_wrong_offset_or_image_are_ignored(make_han) -> None:
    spec = hcalcs(response_timeout=5)
    han, hc = await make_han(spec)
    dev = han.devices[spec.ieee]
    image = image_for(spec)
    query = await hc.expect(cluster=OTA, command_id=QNI, src=dev.nwk)
    await answer_query(hc, dev.nwk, query, image)
    req = (await hc.expect(cluster=OTA, command_id=BLOCK_REQ, src=dev.nwk)).command
    common = {"status": Status.SUCCESS, "manufacturer_code": MFR, "image_type": 0}
    await hc.send_ota(dev.nwk, BLOCK_RSP, **common, file_version=NEW_VERSION, file_offset=64, image_data=image[64:128])
    await hc.send_ota(dev.nwk, BLOCK_RSP, **common, file_version=NEW_VERSION + 1, file_offset=0, image_data=image[:64])
    await hc.send_ota(dev.nwk, BLOCK_RSP, **common, file_version=NEW_VERSION, file_offset=0, image_data=image[:65])
    await dev.wait_for(lambda d: d.counters.blocks_ignored == 3, 1)
    assert dev.file_offset == 0 and req.file_offset == 0
    await hc.send_ota(dev.nwk, BLOCK_RSP, **common, file_version=NEW_VERSION, file_offset=0, image_data=image[:64])
    await dev.wait_for(lambda d: d.file_offset == 64, 1)


async def test_broadcast_notify_filters_and_jitter(make_han) -> None:
    spec = hcalcs(query_delay=100)
    han, hc = await make_han(spec)
    dev = han.devices[spec.ieee]
    bcast = 0xFFFD
    # Another manufacturer: ignored.
    await hc.send(dev.nwk, OTA, hc.ota_frame(NOTIFY, payload_type=1, query_jitter=100, manufacturer_code=0x1234), broadcast=bcast)
    # Our own version: ignored.
    await hc.send(
        dev.nwk, OTA,
        hc.ota_frame(NOTIFY, payload_type=3, query_jitter=100, manufacturer_code=MFR, image_type=0, new_file_version=1),
        broadcast=bcast,
    )
    await dev.wait_for(lambda d: len(d.events("notify_ignored")) == 2, 1)
    assert dev.counters.queries_sent == 0
    # Wildcards, jitter 100: always answered.
    await hc.send(
        dev.nwk, OTA,
        hc.ota_frame(NOTIFY, payload_type=2, query_jitter=100, manufacturer_code=0xFFFF, image_type=0xFFFF),
        broadcast=bcast,
    )
    await hc.expect(cluster=OTA, command_id=QNI, src=dev.nwk)
    # No default responses to broadcasts, even for a bad jitter.
    assert not dev.events("default_response")


async def test_malformed_and_unsupported_frames_get_default_responses(make_han) -> None:
    spec = hcalcs(query_delay=100)
    han, hc = await make_han(spec)
    dev = han.devices[spec.ieee]

    def hdr(cmd: int, *, general: bool = False, direction=foundation.Direction.Server_to_Client, tsn: int = 0x42) -> bytes:
        make = foundation.ZCLHeader.general if general else foundation.ZCLHeader.cluster
        h = make(tsn=tsn, command_id=cmd, direction=direction)
        return h.serialize()

    cases = [
        (OTA, hdr(QNI_RSP) + b"\x00\x1d", Status.MALFORMED_COMMAND),  # SUCCESS, truncated
        (OTA, hdr(NOTIFY) + b"\x03", Status.MALFORMED_COMMAND),  # notify, truncated
        (OTA, hdr(0x0A), Status.UNSUP_CLUSTER_COMMAND),
        (0x0006, hdr(0x01, direction=foundation.Direction.Client_to_Server), Status.UNSUPPORTED_CLUSTER),
        (OTA, hdr(0x01, direction=foundation.Direction.Client_to_Server), Status.UNSUPPORTED_CLUSTER),  # no OTA server here
        (0x0000, hdr(0x77, general=True, direction=foundation.Direction.Client_to_Server), Status.UNSUP_GENERAL_COMMAND),
        (0x0000, hdr(0x00, general=True, direction=foundation.Direction.Client_to_Server) + b"\x04", Status.MALFORMED_COMMAND),
    ]
    for i, (cluster, data, status) in enumerate(cases):
        data = data[:1] + bytes([0x40 + i]) + data[2:]  # distinct TSN per case
        mark = len(hc.heard)
        await hc.send(dev.nwk, cluster, data)
        rsp = await hc.expect(cluster=cluster, command_id=0x0B, general=True, src=dev.nwk, since=mark)
        assert rsp.hdr.tsn == 0x40 + i
        assert rsp.command.status == status, (i, rsp.command)
        assert rsp.command.command_id == data[2]

    # Garbage that is not even a ZCL header: ignored, no crash, still answering.
    await hc.send(dev.nwk, OTA, b"\x19")
    assert not dev.events("crash") and not dev.events("handler_error")
    mark = len(hc.heard)
    await hc.send_ota(dev.nwk, NOTIFY, payload_type=0, query_jitter=100)
    await hc.expect(cluster=OTA, command_id=QNI, src=dev.nwk, since=mark)


async def test_read_ota_client_attributes(make_han) -> None:
    spec = hcalcs(query_delay=100, activation_policy=1, timeout_policy=1)
    han, hc = await make_han(spec)
    dev = han.devices[spec.ieee]
    han.coordinator_ieee = t.EUI64.convert("00:0d:6f:ff:fe:00:5e:1d")
    await hc.send_ota(dev.nwk, NOTIFY, payload_type=0, query_jitter=100)  # learns the server
    ids = [0x0000, 0x0001, 0x0002, 0x0004, 0x0006, 0x0009, 0x000B, 0x000C, 0x000A]
    h = foundation.ZCLHeader.general(tsn=7, command_id=0x00, direction=foundation.Direction.Server_to_Client)
    await hc.send(dev.nwk, OTA, h.serialize() + t.List[t.uint16_t](ids).serialize())
    rsp = await hc.expect(cluster=OTA, command_id=0x01, general=True, src=dev.nwk)
    assert rsp.hdr.direction == foundation.Direction.Client_to_Server
    records = {r.attrid: r for r in rsp.command.status_records}
    assert records[0x0000].value.value == han.coordinator_ieee
    assert records[0x0001].value.value == 0
    assert records[0x0002].value.value == 1
    assert records[0x0004].value.value == 0xFFFFFFFF
    assert records[0x0006].value.value == ImageUpgradeStatus.Normal
    assert records[0x0009].value.value == 0
    assert records[0x000B].value.value == 1 and records[0x000C].value.value == 1
    assert records[0x000A].status == Status.UNSUPPORTED_ATTRIBUTE


async def test_sleepy_device_downloads_through_polls(make_han) -> None:
    spec = ppmid(sleepy_poll=5.0, fast_poll=0.01, join_fast_poll=0.0, response_timeout=0.3, wait_interval=10)
    han, hc = await make_han(spec)
    dev = han.devices[spec.ieee]
    image = image_for(spec, size=200)
    query = await hc.expect(cluster=OTA, command_id=QNI, src=dev.nwk)
    assert dev.poll_interval() == 0.01  # expecting an answer: fast poll
    ue = await download_after_query(hc, dev, query, image)
    assert ue.command.status == Status.SUCCESS
    delivered = dev.events("poll_delivered")
    assert len(delivered) >= dev.counters.blocks_received + 1  # every frame came on a poll
    await hc.send_ota(
        dev.nwk, UE_RSP, tsn=ue.hdr.tsn, manufacturer_code=MFR, image_type=0x0084, file_version=NEW_VERSION,
        current_time=0, upgrade_time=0xFFFFFFFF,
    )
    await dev.wait_for(lambda d: d.state == "holding", 2)
    await asyncio.sleep(spec.response_timeout + 0.05)  # the fast-poll window after its last frame
    assert dev.poll_interval() == 5.0  # holding: back to slow polling


async def download_after_query(hc: HandCoordinator, dev: object, query: Heard, image: bytes) -> Heard:
    await answer_query(hc, dev.nwk, query, image)
    idx = await serve_blocks(hc, dev.nwk, image, hc.heard.index(query) + 1)
    return hc.heard[idx]


async def test_random_frames_never_crash_the_device(make_han) -> None:
    import random

    spec = hcalcs(response_timeout=5)
    han, hc = await make_han(spec)
    dev = han.devices[spec.ieee]
    image = image_for(spec)
    query = await hc.expect(cluster=OTA, command_id=QNI, src=dev.nwk)
    await answer_query(hc, dev.nwk, query, image)  # downloading: the busiest state
    rng = random.Random(1234)
    for _ in range(400):
        cluster = rng.choice([0x0000, 0x0003, 0x000A, 0x0019, 0x0019, 0x0019, 0x0006, 0x0002, 0x0005, 0x0031])
        zdo = rng.random() < 0.25
        head = bytes([rng.choice([0x00, 0x01, 0x08, 0x09, 0x19, 0x1D, 0x04, 0xFF]), rng.randrange(256), rng.randrange(16)])
        data = (b"" if zdo else head) + rng.randbytes(rng.randrange(0, 40))
        await hc.send(
            dev.nwk, cluster, data,
            profile=0 if zdo else rng.choice([0x0104, 0x0109, 0xC05E]),
            src_ep=0 if zdo else 1, dst_ep=0 if zdo else rng.choice([1, 1, 2, 0xFF]),
        )
    await asyncio.sleep(0.05)
    assert not dev.events("crash") and not dev.events("handler_error")
    assert dev.powered and dev.online
    # Still a working device: it answers a read.
    mark = len(hc.heard)
    h = foundation.ZCLHeader.general(tsn=0x99, command_id=0x00)
    await hc.send(dev.nwk, 0x0000, h.serialize() + t.List[t.uint16_t]([5]).serialize())
    rsp = await hc.expect(cluster=0x0000, command_id=0x01, general=True, src=dev.nwk, since=mark)
    assert rsp.command.status_records[0].value.value == "HCALCS"
