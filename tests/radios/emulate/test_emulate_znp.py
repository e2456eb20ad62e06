"""Unmodified zigpy-znp 1.1.1 against our Z-Stack 3.30 MT emulator (radios/emulate/znp).

Every test drives the real ``zigpy_znp.zigbee.application.ControllerApplication`` over a
real byte stream (TCP ``socket://`` or a pty). Nothing in zigpy-znp is patched.
"""

from __future__ import annotations

import asyncio
import contextlib

import pytest
import zigpy.config as zconf
import zigpy.exceptions
import zigpy.types as t
import zigpy_znp.commands as c
import zigpy_znp.exceptions
import zigpy_znp.types as zt
from zigpy_znp.types.nvids import ExNvIds, OsalNvIds
from zigpy.zcl import ClusterType
from zigpy_znp.zigbee.application import ControllerApplication

from radios.emulate.znp import (
    DEFAULT_IEEE,
    Faults,
    FaultSpecError,
    running_znp_emulator,
    serve_znp,
    serve_znp_pty,
)
from radios.emulate.znp import mt
from radios.sim.link import LinkModel
from radios.sim.spec import parse_sim_device

HCALCS_IEEE = t.EUI64.convert("00:0d:6f:00:0b:12:34:56")
HCALCS_VERSION = 0x00000123
OTA_CURRENT_FILE_VERSION = 0x0002



def app_config(path: str) -> dict:
    return {
        zconf.CONF_DEVICE: {zconf.CONF_DEVICE_PATH: path},
        zconf.CONF_DATABASE: None,
        zconf.CONF_NWK_BACKUP_ENABLED: False,
        zconf.CONF_TOPO_SCAN_ENABLED: False,
        zconf.CONF_OTA: {zconf.CONF_OTA_ENABLED: False},
    }


async def start_app(path: str, *, auto_form: bool = True) -> ControllerApplication:
    async with asyncio.timeout(30):
        return await ControllerApplication.new(app_config(path), auto_form=auto_form)


@pytest.fixture
async def emulator():
    server = await serve_znp("127.0.0.1", 0, None)
    try:
        yield server
    finally:
        await server.close()


@pytest.fixture
async def han_emulator():
    """One simulated HCALCS behind the emulator (instant link).

    Its OTA client is kept quiet (no query after boot or Image Notify for an hour) so
    that the only unicasts are the ones a test makes: fault counts stay exact.
    """
    spec = parse_sim_device(
        f"hcalcs:{HCALCS_IEEE}:file_version=0x{HCALCS_VERSION:08X}:query_delay=3600:notify_delay=3600"
    )
    async with running_znp_emulator([spec], LinkModel.instant()) as (path, server):
        yield path, server


class InitWatcher:
    """zigpy listener: resolves when a device finished its interview."""

    def __init__(self) -> None:
        self.initialized: dict[t.EUI64, asyncio.Event] = {}

    def _event(self, ieee: t.EUI64) -> asyncio.Event:
        return self.initialized.setdefault(ieee, asyncio.Event())

    def device_initialized(self, device) -> None:
        self._event(device.ieee).set()

    async def wait(self, ieee: t.EUI64, timeout: float = 15.0) -> None:
        async with asyncio.timeout(timeout):
            await self._event(ieee).wait()


async def start_app_with_hcalcs(path: str) -> ControllerApplication:
    app = ControllerApplication(app_config(path))
    watcher = InitWatcher()
    app.add_listener(watcher)
    async with asyncio.timeout(30):
        await app.startup(auto_form=True)
    await watcher.wait(HCALCS_IEEE)
    return app


async def read_ota_version(app: ControllerApplication, **kwargs) -> int:
    device = app.get_device(ieee=HCALCS_IEEE)
    ota = device.find_cluster(0x0019, ClusterType.Client)
    success, failure = await ota.read_attributes([OTA_CURRENT_FILE_VERSION], **kwargs)
    assert failure == {}
    return success[OTA_CURRENT_FILE_VERSION]


class ConnectionWatcher:
    """A zigpy application listener: zigpy calls ``connection_lost`` on it."""

    def __init__(self) -> None:
        self.lost = asyncio.Event()
        self.exc: Exception | None = None

    def connection_lost(self, exc: Exception) -> None:
        self.exc = exc
        self.lost.set()


async def reconnect(app: ControllerApplication) -> None:
    """What a supervisor must do after zigpy reports connection_lost: zigpy 2.4 and
    zigpy-znp 1.1.1 only *report* it (application.connection_lost -> listener event);
    neither reconnects on its own."""
    await app.disconnect()
    async with asyncio.timeout(30):
        await app.startup(auto_form=False)


# ------------------------------------------------------------------- framing ----


def test_mt_framing_roundtrip_and_resync():
    ping = mt.MtFrame(cmd0=0x21, cmd1=0x01, data=b"")
    assert ping.encode() == bytes.fromhex("fe00210120")  # SYS.Ping as in the MT spec
    version = mt.encode(c.SYS.Version.Rsp(TransportRev=2, ProductId=1, MajorRel=2, MinorRel=7, MaintRel=1))
    wire = version.encode()
    assert wire[0] == 0xFE and wire[1] == 5 and wire[2:4] == bytes([0x61, 0x02])

    parser = mt.MtParser()
    corrupt = bytearray(wire)
    corrupt[-1] ^= 0xFF
    frames = parser.feed(b"\x00\x13" + bytes(corrupt) + wire[:3])
    assert frames == [] and parser.bad_frames == 1
    frames = parser.feed(wire[3:] + ping.encode())
    assert frames == [version, ping]
    assert mt.decode(frames[0]) == c.SYS.Version.Rsp(TransportRev=2, ProductId=1, MajorRel=2, MinorRel=7, MaintRel=1)


def test_fault_option_strings():
    faults = Faults.parse(["fail-deliveries=3", "reset-after-frames=200,drop-after-frames=300"])
    assert faults.fail_deliveries == 3 and faults.fail_status == zt.Status.MAC_NO_ACK
    assert faults.reset_after_frames == 200 and faults.drop_after_frames == 300
    assert Faults.parse("fail-deliveries=2:APS_NO_ACK").fail_status == zt.Status.APS_NO_ACK
    for bad in ("fail-deliveries", "explode=1", "reset-after-frames=0", "drop-after-frames=x"):
        with pytest.raises(FaultSpecError):
            Faults.parse(bad)

    faults = Faults.parse("reset-after-frames=2")
    assert [faults.on_host_frame() for _ in range(3)] == [None, "reset", None]
    assert faults.resets_injected == 1


# ------------------------------------------------------------ start / restart ----


async def test_first_start_forms_and_restart_loads_network(emulator):
    coord = emulator.coordinator
    app = await start_app(emulator.url)
    try:
        nib = coord.nib
        info = app.state.network_info
        assert coord.formed and coord.network_up
        assert app.state.node_info.ieee == DEFAULT_IEEE
        assert app.state.node_info.nwk == 0x0000
        assert app.state.node_info.model == "CC2652"  # zigpy-znp saw Z-Stack 3.30
        assert app._znp.version == 3.30 and app._znp.nvram.align_structs is True
        assert info.channel == nib.nwkLogicalChannel != 0
        assert info.pan_id == nib.nwkPanId
        assert info.extended_pan_id == nib.extendedPANID
        active_key = coord.nv.get(OsalNvIds.NWK_ACTIVE_KEY_INFO, zt.NwkKeyDesc)
        assert info.network_key.key == active_key.Key
        # zigpy formed twice (a quick temporary network for the energy scan, then the real one)
        assert coord.formations == 2
        # the coordinator device was interviewed through ZDO requests answered by "our" ZDO
        assert app._device.is_initialized
        assert sorted(app._device.endpoints) == [0, 1, 2, 242]
        assert 1 in coord.endpoints and 0xFFFF in coord.zdo_callbacks
    finally:
        await app.shutdown()

    formed = (info.extended_pan_id, info.pan_id, info.channel, info.network_key.key)

    app2 = await start_app(emulator.url, auto_form=False)
    try:
        info2 = app2.state.network_info
        assert (info2.extended_pan_id, info2.pan_id, info2.channel, info2.network_key.key) == formed
        assert coord.formations == 2  # resumed from NVRAM, not re-formed
        assert coord.network_up
    finally:
        await app2.shutdown()

    assert emulator.connections_made == 2
    assert coord.unimplemented == []


def nv_frame_counter(coord) -> int:
    epid = coord.nib.extendedPANID
    for raw in coord.nv.table(ExNvIds.NWK_SEC_MATERIAL_TABLE):
        entry, _ = zt.NwkSecMaterialDesc.deserialize(bytes(raw), align=mt.ALIGN_STRUCTS)
        if entry.ExtendedPanID == epid:
            return int(entry.FrameCounter)
    raise AssertionError("no NWK security material for the network")


async def test_frame_counter_saved_every_thousand_frames_and_restored_past_them(emulator):
    coord = emulator.coordinator
    app = await start_app(emulator.url)
    try:
        saves = set()
        for _ in range(2500):
            coord._frame_sent()
            saved = nv_frame_counter(coord)
            saves.add(saved)
            # The NV copy lags the counter by at most what Z-Stack lets pass unsaved.
            assert 0 <= coord.nwk_frame_counter - saved <= 1000
        assert len(saves) >= 3  # saved along the way, not only at the start
        used = coord.nwk_frame_counter
        coord.inject_reset()
        await reconnect(app)
        assert coord.network_up
        # Restored past every counter used before the reset, and saved at once (the
        # frames zigpy-znp sent since then are not saved yet).
        assert used < nv_frame_counter(coord) <= coord.nwk_frame_counter
    finally:
        await app.shutdown()


async def test_unknown_command_gets_rpc_error(emulator):
    app = await start_app(emulator.url)
    try:
        # UTIL.SrcMatchEnable is a real MT command this emulator does not implement
        with pytest.raises(zigpy_znp.exceptions.CommandNotRecognized):
            await app._znp.request(c.UTIL.SrcMatchEnable.Req())
        assert any("UTIL.SrcMatchEnable" in gap for gap in emulator.coordinator.unimplemented)
        # the link is still fine afterwards
        rsp = await app._znp.request(c.SYS.Ping.Req())
        assert rsp.Capabilities & zt.MTCapabilities.APP_CNF
    finally:
        await app.shutdown()


async def test_pty_transport_form_restart_and_drop():
    path, server = await serve_znp_pty(None)
    try:
        app = await start_app(path)
        epid = app.state.network_info.extended_pan_id
        await app.shutdown()

        app = await start_app(path, auto_form=False)
        try:
            assert app.state.network_info.extended_pan_id == epid
            watcher = ConnectionWatcher()
            app.add_listener(watcher)
            server.drop_connection()  # pty hung up; a fresh pty appears behind the same path
            async with asyncio.timeout(5):
                await watcher.lost.wait()
            await reconnect(app)
            assert app.state.network_info.extended_pan_id == epid
            assert (await app._znp.request(c.SYS.Ping.Req())).Capabilities
        finally:
            await app.shutdown()
        assert server.coordinator.formations == 2
        assert server.coordinator.unimplemented == []
    finally:
        await server.close()


# -------------------------------------------------------------------- faults ----


async def test_dropped_connection_reported_and_reconnect(han_emulator):
    path, server = han_emulator
    app = await start_app_with_hcalcs(path)
    try:
        epid = app.state.network_info.extended_pan_id
        watcher = ConnectionWatcher()
        app.add_listener(watcher)

        server.faults.drop_after_frames = 1
        # The link goes away right after the emulator handled this frame; whether its
        # SRSP made it out first is as undefined as with a real yanked cable.
        with contextlib.suppress(ConnectionError, TimeoutError, RuntimeError, AttributeError):
            async with asyncio.timeout(2):
                await app._znp.request(c.SYS.Ping.Req())
        async with asyncio.timeout(5):
            await watcher.lost.wait()
        assert server.faults.drops_injected == 1
        assert not server.connected

        await reconnect(app)
        assert server.connections_made == 2
        assert app.state.network_info.extended_pan_id == epid
        assert server.coordinator.network_up
        # the device is still on the network and reachable through the new link
        assert await read_ota_version(app) == HCALCS_VERSION
        assert server.coordinator.unimplemented == []
    finally:
        await app.shutdown()


async def test_coordinator_reset_fault(han_emulator):
    path, server = han_emulator
    coord = server.coordinator
    app = await start_app_with_hcalcs(path)
    try:
        epid = app.state.network_info.extended_pan_id
        resets = []
        # zigpy-znp ignores an unsolicited SYS.ResetInd (it only logs "Command was not
        # handled"); a gateway has to listen for it. This is zigpy-znp's public listener
        # API on its ZNP object, not a patch.
        app._znp.callback_for_response(c.SYS.ResetInd.Callback(partial=True), resets.append)

        used = coord.nwk_frame_counter  # frames sent so far, fewer than one NV save's worth
        server.faults.reset_after_frames = 1
        await app._znp.request(c.SYS.Ping.Req())  # the frame that trips the fault
        async with asyncio.timeout(2):
            while not resets:
                await asyncio.sleep(0.01)
        # a CC26xx reports reason 0 whatever reset it (SDK mt_sys.c MT_SysResetInd)
        assert resets[0].Reason == zt.ResetReason.PowerUp
        assert server.faults.resets_injected == 1

        # The firmware rebooted: endpoints and the running network are gone until the
        # host starts them again, so traffic fails (AF SRSP error) instead of vanishing.
        assert not coord.network_up and not coord.endpoints
        with pytest.raises(zigpy.exceptions.DeliveryError) as info:
            await read_ota_version(app)
        assert info.value.status == zt.Status.INVALID_PARAMETER  # AF: no such source endpoint

        await reconnect(app)
        assert app.state.network_info.extended_pan_id == epid
        assert coord.network_up
        assert coord.formations == 2  # resumed from NVRAM, not re-formed
        # The RAM counter was lost; the firmware skipped past the frames it had not saved,
        # so no counter is used twice (devices would drop those frames as replays).
        assert coord.nwk_frame_counter > used
        assert HCALCS_IEEE in coord.children  # association rebuilt from NV address manager
        assert await read_ota_version(app) == HCALCS_VERSION
        assert coord.unimplemented == []
    finally:
        await app.shutdown()


# ------------------------------------------------------------------- devices ----


async def test_hcalcs_joins_is_interviewed_and_reports_ota_version(han_emulator):
    path, server = han_emulator
    coord = server.coordinator
    han = coord.han
    app = await start_app_with_hcalcs(path)
    try:
        sim = han.devices[HCALCS_IEEE]
        device = app.get_device(ieee=HCALCS_IEEE)
        # joined through ZDO.TCDevInd + Device_annce, interviewed over ZDO and ZCL
        assert device.nwk == sim.nwk
        assert device.is_initialized
        assert device.model == "HCALCS" and device.manufacturer == "GFI"
        assert device.node_desc.is_router
        assert 0x0019 in device.endpoints[1].out_clusters  # OTA client
        assert coord.requests["ZDO.ExtRouteChk"] >= 1  # zigpy-znp checked routes for ZDO
        # the trust center persisted the device: address manager + hashed TC link key
        assert coord.children[HCALCS_IEEE].nwk == sim.nwk
        # devices report the coordinator as their parent/upgrade server
        assert han.coordinator_ieee == DEFAULT_IEEE

        assert await read_ota_version(app) == HCALCS_VERSION == sim.current_file_version

        # permit joining through the router: ZDO.MgmtPermitJoinReq to it, answered by
        # the device itself (ZDO.MgmtPermitJoinRsp + MsgCbIncoming)
        async with asyncio.timeout(10):
            (status,) = await device.zdo.permit(30)
        assert status == 0
        assert any(e.detail.get("command") == "Mgmt_Permit_Joining_req" for e in sim.events("zdo"))

        # zigpy-znp can back the network up, reading the device tables from NVRAM
        await app.load_network_info(load_devices=True)
        info = app.state.network_info
        assert info.nwk_addresses[HCALCS_IEEE] == sim.nwk
        assert HCALCS_IEEE in info.children
        assert [k.partner_ieee for k in info.key_table] == [HCALCS_IEEE]
        assert coord.unimplemented == []
    finally:
        await app.shutdown()


async def test_delivery_failures(han_emulator):
    path, server = han_emulator
    han = server.coordinator.han
    app = await start_app_with_hcalcs(path)
    try:
        sim = han.devices[HCALCS_IEEE]
        frames_before = han.frames_down

        # zigpy tries a request 3 times (DEFAULT_REQUEST_RETRIES=2): fail all three
        server.faults.fail_next_deliveries(3, "MAC_NO_ACK")
        with pytest.raises(zigpy.exceptions.DeliveryError) as info:
            await read_ota_version(app)
        assert info.value.status == zt.Status.MAC_NO_ACK
        assert server.faults.deliveries_failed == 3
        assert han.frames_down == frames_before  # the failed frames never reached the air

        assert await read_ota_version(app) == HCALCS_VERSION  # the fourth gets through

        server.faults.fail_next_deliveries(3, "APS_NO_ACK")
        with pytest.raises(zigpy.exceptions.DeliveryError) as info:
            await read_ota_version(app)
        assert info.value.status == zt.Status.APS_NO_ACK

        # A real failure from the simulated air: the device is off, nobody acks
        sim.power_off()
        with pytest.raises(zigpy.exceptions.DeliveryError) as info:
            await read_ota_version(app)
        assert info.value.status == zt.Status.MAC_NO_ACK
        assert server.coordinator.unimplemented == []
    finally:
        await app.shutdown()


async def test_permit_join_and_install_code_key(emulator):
    coord = emulator.coordinator
    app = await start_app(emulator.url)
    try:
        assert not coord.permitting  # zigpy closes joins on startup
        await app.permit(60)
        assert coord.permitting
        await app.permit(0)
        assert not coord.permitting

        ieee = t.EUI64.convert("00:0d:6f:00:0a:bc:de:f0")
        key = t.KeyData(bytes(range(16)))
        await app.permit_with_link_key(ieee, key, time_s=1)
        assert coord.install_codes[ieee] == key.serialize()
        assert coord.join_uses_install_code is False  # zigpy-znp reverted it afterwards
        assert coord.requests["AppConfig.BDBSetJoinUsesInstallCodeKey"] == 2
        assert coord.unimplemented == []
    finally:
        await app.shutdown()
