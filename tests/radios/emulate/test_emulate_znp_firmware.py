"""The Z-Stack emulator answers as Koenkk's 20230507 CC2652 coordinator firmware does.

Each expected value comes from the firmware source, a real dongle's debug log or
zigpy-znp's NV dump of a real CC2652R (radios/emulate/znp/firmware.py names them);
the tests drive unmodified zigpy-znp over TCP wherever the host can see the behaviour.
"""

from __future__ import annotations

import asyncio
import contextlib
import time

import pytest
import zigpy.exceptions
import zigpy.types as t
import zigpy_znp.commands as c
import zigpy_znp.types as zt
from zigpy_znp.types.nvids import ExNvIds, OsalNvIds

from radios.emulate.znp import FailureTiming, TimingSpecError, ZnpCoordinator, mt, serve_znp
from radios.emulate.znp import firmware
from radios.sim.link import LinkModel
from radios.sim.han import SimHan
from tests.radios.emulate.test_emulate_znp import (  # noqa: F401 (han_emulator is a fixture)
    HCALCS_IEEE,
    HCALCS_VERSION,
    han_emulator,
    read_ota_version,
    start_app,
    start_app_with_hcalcs,
)


@pytest.fixture
async def emulator():
    # Firmware without APS fragmentation (ZIGBEE_FRAGMENTATION): long unicasts refused
    server = await serve_znp("127.0.0.1", 0, None, aps_fragmentation=False)
    try:
        yield server
    finally:
        await server.close()


@contextlib.asynccontextmanager
async def hcalcs_app(path: str):
    """zigpy-znp started on the emulator, the HCALCS interviewed; shut down after."""
    app = await start_app_with_hcalcs(path)
    try:
        yield app
    finally:
        await app.shutdown()


def frames_from(coordinator: ZnpCoordinator, request: mt.MtFrame) -> list[mt.MtFrame]:
    """What the firmware writes back for one host frame (no transport, no host)."""
    out: list[mt.MtFrame] = []
    parser = mt.MtParser()
    coordinator.connection_made(lambda data: out.extend(parser.feed(data)))
    coordinator.frame_received(request)
    coordinator.connection_lost()
    return out


# ------------------------------------------------------------------------ SYS ----


def test_sys_version_is_the_nine_bytes_of_the_patched_mt_version_string():
    (reply,) = frames_from(ZnpCoordinator(), mt.encode(c.SYS.Version.Req()))
    assert (reply.cmd0, reply.cmd1) == (0x61, 0x02)
    # TransportRev 2, ProductId 1, 2.7.1, CODE_REVISION_NUMBER 20230507 little-endian
    assert reply.data == bytes([2, 1, 2, 7, 1]) + (20230507).to_bytes(4, "little")


async def test_zigpy_znp_reads_the_version_ping_and_detects_z_stack_3_30(emulator):
    app = await start_app(emulator.url)
    try:
        version = await app._znp.request(c.SYS.Version.Req())
        assert (version.TransportRev, version.ProductId, version.MajorRel, version.MinorRel, version.MaintRel) == (2, 1, 2, 7, 1)
        assert version.CodeRevision == 20230507
        assert version.BootloaderBuildType is None and version.BootloaderRevision is None
        # Domoticz-Zigbee#1142: SYS|AF|ZDO|UTIL|GP|APP_CNF
        assert app._znp.capabilities == zt.MTCapabilities(1625)
        assert not app._znp.capabilities & (zt.MTCapabilities.SAPI | zt.MTCapabilities.MAC | zt.MTCapabilities.APP)
        assert app._znp.version == 3.30
        assert app.state.node_info.version == "Z-Stack 20230507"
        assert emulator.coordinator.unimplemented == []
    finally:
        await app.shutdown()


def test_reset_indication_says_reason_zero_and_the_first_five_version_bytes():
    coordinator = ZnpCoordinator()
    out: list[mt.MtFrame] = []
    parser = mt.MtParser()

    async def run() -> None:
        coordinator.connection_made(lambda data: out.extend(parser.feed(data)))
        coordinator.inject_reset()  # a watchdog reset reads the same on a CC26xx
        async with asyncio.timeout(5):
            while not out:
                await asyncio.sleep(0.005)
        await coordinator.close()

    asyncio.run(run())
    (indication,) = out
    assert (indication.cmd0, indication.cmd1) == (0x41, 0x80)
    assert indication.data == bytes([0, 2, 1, 2, 7, 1])


@pytest.mark.parametrize(
    ("operation", "value", "answer"),
    [
        (firmware.StackTuneOp.TX_POWER, 5, 0x00),  # the CC2652R's top power
        (firmware.StackTuneOp.TX_POWER, 0xEC, 0x00),  # -20 dBm as an int8_t
        (firmware.StackTuneOp.TX_POWER, 6, 0xE8),  # MAC_INVALID_PARAMETER
        (firmware.StackTuneOp.TX_POWER, 0xEB, 0xE8),  # -21 dBm
        (firmware.StackTuneOp.RX_ON_IDLE, 2, 0x01),  # neither TRUE nor FALSE: the current setting
        (firmware.StackTuneOp.RX_ON_IDLE, 0, 0x00),
        (firmware.StackTuneOp.RX_ON_IDLE, 1, 0x00),
        (2, 0, 0x02),  # any other operation: ZInvalidParameter
    ],
)
def test_stack_tune_answers_as_mt_sys_stack_tune(operation, value, answer):
    assert firmware.StackTuneState().tune(operation, value) == answer


def test_stack_tune_state_changes_only_on_success():
    state = firmware.StackTuneState()
    assert state.tune(firmware.StackTuneOp.RX_ON_IDLE, 0) == 0 and state.rx_on_idle is False
    assert state.tune(firmware.StackTuneOp.RX_ON_IDLE, 0xFF) == 0  # reads it back: off
    assert state.tune(firmware.StackTuneOp.TX_POWER, 0xFB) == 0 and state.tx_power == -5
    assert state.tune(firmware.StackTuneOp.TX_POWER, 9) == 0xE8 and state.tx_power == -5


async def test_stack_tune_and_tx_power_through_zigpy_znp(emulator):
    app = await start_app(emulator.url)
    try:
        Op = c.sys.StackTuneOperation
        assert (await app._znp.request(c.SYS.StackTune.Req(Operation=Op.SetRxOnWhenIdle, Value=2))).Value == 1
        assert (await app._znp.request(c.SYS.StackTune.Req(Operation=Op.PowerLevel, Value=3))).Value == 0
        assert emulator.coordinator.stack_tune.tx_power == 3
        await app.set_tx_power(dbm=5)
        with pytest.raises(Exception, match="Failed to set TX power"):  # zigpy-znp: 3.30 reports the MAC status
            await app.set_tx_power(dbm=20)
        assert emulator.coordinator.stack_tune.tx_power == 5
        assert emulator.coordinator.unimplemented == []
    finally:
        await app.shutdown()


# ------------------------------------------------------------ AF.IncomingMsg ----


async def test_incoming_messages_carry_the_fields_a_real_coordinator_fills(han_emulator):
    path, server = han_emulator
    coord = server.coordinator
    async with hcalcs_app(path) as app:
        seen: list[c.AF.IncomingMsg.Callback] = []
        app._znp.callback_for_response(c.AF.IncomingMsg.Callback(partial=True), seen.append)
        before = (time.monotonic() - coord.booted_at) / firmware.BACKOFF_PERIOD
        assert await read_ota_version(app) == HCALCS_VERSION
        assert await read_ota_version(app) == HCALCS_VERSION
        after = (time.monotonic() - coord.booted_at) / firmware.BACKOFF_PERIOD
        nwk = coord.children[HCALCS_IEEE].nwk
        assert len(seen) == 2
        for msg in seen:
            assert msg.SrcAddr == nwk and msg.MacSrcAddr == nwk  # a neighbour: its own last hop
            assert msg.TSN == 0  # zigpy/zigpy-znp#81: every AF.IncomingMsg
            assert msg.MsgResultRadius == 29  # sent with 30, one hop
            assert not msg.WasBroadcast and msg.GroupId == 0 and not msg.SecurityUse
            assert before <= msg.TimeStamp <= after  # MAC backoffs (320 us) since the chip booted
        assert seen[0].TimeStamp <= seen[1].TimeStamp


async def test_a_device_behind_a_relay_is_announced_with_src_rtg_ind_once_per_route(han_emulator):
    path, server = han_emulator
    coord = server.coordinator
    async with hcalcs_app(path) as app:
        nwk = int(coord.children[HCALCS_IEEE].nwk)
        route = {nwk: (0x7001,)}
        # the HAN's optional hops extra (radios/sim has none yet): this device is behind 0x7001
        coord.han.relays_of = lambda address: route.get(int(address), ())
        order: list[str] = []
        app._znp.callback_for_response(c.ZDO.SrcRtgInd.Callback(partial=True), lambda m: order.append(f"route {m.Relays}"))
        incoming: list[c.AF.IncomingMsg.Callback] = []
        app._znp.callback_for_response(c.AF.IncomingMsg.Callback(partial=True),
                                       lambda m: (order.append("data"), incoming.append(m)))

        await read_ota_version(app)
        await read_ota_version(app)
        assert order == ["route [0x7001]", "data", "data"]  # the route record precedes its frame
        assert incoming[0].MacSrcAddr == 0x7001 and incoming[0].MsgResultRadius == 28
        assert app.get_device(ieee=HCALCS_IEEE).relays == [0x7001]  # zigpy-znp's handle_relays

        route[nwk] = (0x7002, 0x7001)  # the route changed
        await read_ota_version(app)
        assert order[-2:] == ["route [0x7002, 0x7001]", "data"]
        assert coord.source_routes[nwk] == (0x7002, 0x7001)

        route[nwk] = ()  # a neighbour now: no route record, and the old route is dropped
        await read_ota_version(app)
        assert order[-1] == "data" and nwk not in coord.source_routes

        coord.learn_source_route(nwk, [0x7003])  # a test may tell the concentrator a route
        async with asyncio.timeout(5):
            while order[-1] != "route [0x7003]":
                await asyncio.sleep(0.01)


# ------------------------------------------------------------- payload limits ----


@pytest.mark.parametrize(
    ("aps_secure", "relays", "limit"),
    [(False, 0, 82), (True, 0, 73), (False, 1, 78), (True, 1, 69), (True, 2, 67)],
)
def test_af_mtu_counts_aps_security_and_the_source_route(aps_secure, relays, limit):
    assert firmware.af_mtu(aps_secure=aps_secure, relays=relays) == limit


def packet(nwk: int, size: int, *, secure: bool = False) -> t.ZigbeePacket:
    return t.ZigbeePacket(
        src=t.AddrModeAddress(addr_mode=t.AddrMode.NWK, address=0x0000), src_ep=1,
        dst=t.AddrModeAddress(addr_mode=t.AddrMode.NWK, address=t.NWK(nwk)), dst_ep=1,
        tsn=1, profile_id=0x0104, cluster_id=0x0019, data=t.SerializableBytes(bytes(size)),
        tx_options=t.TransmitOptions.APS_Encryption if secure else t.TransmitOptions.NONE, radius=30,
    )


async def test_a_payload_over_the_limit_is_refused_at_once_with_invalid_parameter(emulator):
    """AF_DataRequest's afStatus_INVALID_PARAMETER: zigpy-znp raises DeliveryError with
    that status from the SRSP; nothing reaches the air, no AF.DataConfirm is awaited."""
    coord = emulator.coordinator
    app = await start_app(emulator.url)
    try:
        async def status_of(size: int, *, secure: bool = False) -> zt.Status:
            with pytest.raises(zigpy.exceptions.DeliveryError) as info:
                await app.send_packet(packet(0x1234, size, secure=secure))
            return info.value.status

        # No HAN behind this coordinator: a frame that fits is sent and fails on the air
        assert await status_of(82) == zt.Status.MAC_NO_ACK
        assert await status_of(83) == zt.Status.INVALID_PARAMETER
        assert await status_of(73, secure=True) == zt.Status.MAC_NO_ACK
        assert await status_of(74, secure=True) == zt.Status.INVALID_PARAMETER
        coord.learn_source_route(0x1234, [0x7001])  # one relay: 2 + 2 bytes of source route
        assert await status_of(78) == zt.Status.MAC_NO_ACK
        assert await status_of(79) == zt.Status.INVALID_PARAMETER
        assert coord.payloads_refused == 3
        assert coord.unimplemented == []
    finally:
        await app.shutdown()


# ------------------------------------------------------------ failure timing ----


def test_failure_timing_model():
    real = FailureTiming.realistic()
    assert real.failure_delay(zt.Status.MAC_NO_ACK) == pytest.approx(8 * 5 * 0.005 + 4 * 0.05)
    assert real.failure_delay(zt.Status.APS_NO_ACK) == pytest.approx(4.0)  # 4 waits of 2 * 500 ms
    assert real.failure_delay(zt.Status.NWK_NO_ROUTE) == pytest.approx(1.3)
    assert real.failure_delay(zt.Status.MAC_TRANSACTION_EXPIRED) == pytest.approx(8.0)
    assert FailureTiming.realistic(scale=0.1).failure_delay(zt.Status.APS_NO_ACK) == pytest.approx(0.4)
    assert FailureTiming.instant().failure_delay(zt.Status.APS_NO_ACK) == 0.0
    parsed = FailureTiming.parse(["aps_ack_wait=0.5", "aps-retries=1,route_discovery=2"], scale=0.5)
    assert parsed.failure_delay(zt.Status.APS_NO_ACK) == pytest.approx(2 * 0.5 * 0.5)
    assert parsed.failure_delay(zt.Status.NWK_NO_ROUTE) == pytest.approx(1.0)


@pytest.mark.parametrize(
    ("spec", "message"),
    [("aps_ack_wait", "give NAME=VALUE"), ("bogus=1", "give NAME=VALUE"), ("aps_retries=x", "'x' is not a number"),
     ("route_discovery=-1", "must not be negative")],
)
def test_failure_timing_refusals_name_the_part(spec, message):
    with pytest.raises(TimingSpecError, match=message):
        FailureTiming.parse(spec)


def test_a_timed_air_brings_the_stacks_failure_timing_at_its_scale():
    assert ZnpCoordinator(SimHan([], LinkModel.realistic(scale=0.2))).failure_timing == FailureTiming.realistic(scale=0.2)
    assert not ZnpCoordinator(SimHan([], LinkModel.instant())).failure_timing.enabled


async def test_realistic_timing_confirms_an_aps_failure_after_the_stacks_retries(han_emulator):
    path, server = han_emulator
    coord = server.coordinator
    async with hcalcs_app(path) as app:
        coord.failure_timing = FailureTiming.realistic(scale=0.05)  # 4 s of APS retries, scaled
        confirms: list[float] = []
        app._znp.callback_for_response(c.AF.DataConfirm.Callback(partial=True),
                                       lambda m: confirms.append(time.monotonic()))
        server.faults.fail_next_deliveries(1, "APS_NO_ACK")
        sent = time.monotonic()
        assert await read_ota_version(app) == HCALCS_VERSION  # zigpy's retry gets through
        # not milliseconds: the failure's confirm came no earlier than the model says
        assert confirms and confirms[0] - sent >= coord.failure_timing.failure_delay(zt.Status.APS_NO_ACK)


# ---------------------------------------------------------------------- NV ----

#: Lengths of the NV items zigpy-znp reads when it starts on a formed network, and of
#: each table's entries and their number, as a formed CC2652R has them (zigpy/zigpy-znp
#: e3c9fcf tests/nvram/CC2652R-ZStack4.formed.json, a dump of a real dongle).
REAL_LEGACY_LENGTHS = {
    OsalNvIds.EXTADDR: 8, OsalNvIds.NIB: 116, OsalNvIds.BCAST_DELIVERY_TIME: 1, OsalNvIds.CONCENTRATOR_ENABLE: 1,
    OsalNvIds.CONCENTRATOR_DISCOVERY: 1, OsalNvIds.CONCENTRATOR_RC: 1, OsalNvIds.SRC_RTG_EXPIRY_TIME: 1,
    OsalNvIds.NWK_ACTIVE_KEY_INFO: 17, OsalNvIds.NWK_CHILD_AGE_ENABLE: 1, OsalNvIds.BDBNODEISONANETWORK: 1,
    OsalNvIds.LOGICAL_TYPE: 1, OsalNvIds.ZDO_DIRECT_CB: 1, OsalNvIds.TCLK_SEED: 16,
    OsalNvIds.APS_LINK_KEY_TABLE: 20, OsalNvIds.NWKKEY: 24, OsalNvIds.POLL_RATE: 40, OsalNvIds.GROUP_TABLE: 22,
    OsalNvIds.NWKMGR_MIN_TX: 1, OsalNvIds.NWK_ALTERN_KEY_INFO: 17, OsalNvIds.PRECFGKEY: 16,
    OsalNvIds.APS_ACK_WAIT_DURATION: 2, OsalNvIds.USERDESC: 17, OsalNvIds.PANID: 2, OsalNvIds.CHANLIST: 4,
}
REAL_TABLES = {  # table: (entries, bytes per entry)
    ExNvIds.ADDRMGR: (257, 12), ExNvIds.TCLK_TABLE: (200, 20),
    ExNvIds.APS_KEY_DATA_TABLE: (3, 24), ExNvIds.NWK_SEC_MATERIAL_TABLE: (5, 12),
}
#: Items a CC2652R running Z-Stack 3.30 does not have (absent from the dump)
NOT_ON_A_CC2652R = (OsalNvIds.BOOTCOUNTER, OsalNvIds.SECURITY_LEVEL, OsalNvIds.SECURITY_MODE, OsalNvIds.NWKMGR_ADDR)


async def test_a_formed_network_has_the_nv_items_of_a_real_cc2652r(emulator):
    coord = emulator.coordinator
    app = await start_app(emulator.url)
    try:
        await app._znp.load_network_info(load_devices=True)  # every table, as a backup reads them
    finally:
        await app.shutdown()
    nv = coord.nv
    legacy = {key[2]: len(value) for key, value in nv.items.items() if key[1] == ExNvIds.LEGACY}
    assert {nvid: legacy.get(nvid) for nvid in REAL_LEGACY_LENGTHS} == REAL_LEGACY_LENGTHS
    assert [nvid for nvid in NOT_ON_A_CC2652R if nvid in legacy] == []
    assert {table: (len(nv.table(table)), {len(e) for e in nv.table(table)}) for table in REAL_TABLES} == {
        table: (count, {size}) for table, (count, size) in REAL_TABLES.items()
    }
    nib = nv.get(OsalNvIds.NIB, zt.NIB)
    # the stack's compile-time values in the real NIB
    assert (nib.MaxChildren, nib.MaxDepth, nib.MaxRouters, nib.RouteDiscoveryTime, nib.nwkRouterAgeLimit,
            nib.scanDuration) == (51, 15, 51, 13, 5, 4)
    assert (nib.nwkState, nib.nwkDevAddress, nib.nwkKeyLoaded, nib.SecurityLevel) == (zt.NwkState.NWK_ROUTER, 0x0000, True, 5)
    # NWKKEY: the active key and the counter NWK_SEC_MATERIAL_TABLE holds for this network
    key_items = nv.get(OsalNvIds.NWKKEY, zt.NwkActiveKeyItems)
    material = nv.get(0, zt.NwkSecMaterialDesc, key=(1, ExNvIds.NWK_SEC_MATERIAL_TABLE, 0))
    assert key_items.Active == nv.get(OsalNvIds.NWK_ACTIVE_KEY_INFO, zt.NwkKeyDesc)
    assert key_items.FrameCounter == material.FrameCounter and material.ExtendedPanID == nib.extendedPANID
    assert coord.unimplemented == []


# ---------------------------------------------------------------------- CLI ----


def test_cli_failure_timing_is_read_once_and_refused_with_the_part_named():
    from typer.testing import CliRunner

    from han_ota.cli_radio import standalone

    bad = CliRunner().invoke(standalone, ["emulate", "znp", "--failure-timing", "aps_ack_wait=soon"])
    assert bad.exit_code == 2 and "--failure-timing" in bad.output and "'soon' is not a number" in bad.output


async def test_cli_failure_timing_reaches_the_coordinator(monkeypatch):
    import io

    import radios.emulate.znp as znp_package
    from han_ota.cli_radio import serve_emulator

    servers: list = []
    real_serve = znp_package.serve_znp

    async def keep(*args, **kwargs):
        servers.append(await real_serve(*args, **kwargs))
        return servers[-1]

    monkeypatch.setattr(znp_package, "serve_znp", keep)
    ready, stop = asyncio.Event(), asyncio.Event()
    task = asyncio.ensure_future(serve_emulator(
        "znp", "127.0.0.1", 0, [], LinkModel.instant(), None, ready=ready, stop=stop, out=io.StringIO(),
        znp_options={"failure_timing": FailureTiming.parse("route_discovery=2.5")}))
    async with asyncio.timeout(10):
        await ready.wait()
    assert servers[0].coordinator.failure_timing.failure_delay(zt.Status.NWK_NO_ROUTE) == 2.5
    stop.set()
    await task


async def test_link_keys_are_kept_in_nv_where_zigpy_znp_reads_its_key_table(emulator):
    coord = emulator.coordinator
    app = await start_app(emulator.url)
    try:
        ieee = t.EUI64.convert("00:0d:6f:00:0a:bc:de:f0")
        key = t.KeyData(bytes(range(16)))
        status = await app._znp.request(c.ZDO.SetLinkKey.Req(NWK=0x4321, IEEE=ieee, LinkKeyData=key))
        assert status.Status == zt.Status.SUCCESS
        await app._znp.load_network_info(load_devices=True)
        (entry,) = [k for k in app._znp.network_info.key_table if k.partner_ieee == ieee]
        assert entry.key == key
        assert app._znp.network_info.nwk_addresses[ieee] == 0x4321
        assert len(coord.nv.items[(1, 0, OsalNvIds.APS_LINK_KEY_TABLE)]) == 20  # still the real item's size

        await app._znp.request(c.ZDO.RemoveLinkKey.Req(IEEE=ieee))
        await app._znp.load_network_info(load_devices=True)
        assert [k for k in app._znp.network_info.key_table if k.partner_ieee == ieee] == []
    finally:
        await app.shutdown()
