"""The emulated Z-Stack coordinator firmware: MT command handlers in front of a SimHan.

Variant: Z-Stack 3.30 ("Z-Stack 3.x.0") on a CC26x2, as the common CC2652 dongles ship
it (Koenkk's coordinator builds; we report build 20230507).  This is the variant
zigpy-znp 1.1.1 treats as first-class:

* ``SYS.NVLength`` on ``ExNvIds.TCLK_TABLE`` is recognised -> version 3.30 (the NVOCMP
  extended NV tables are used for keys, address manager and frame counters);
* a 36-byte ``UTIL.AssocFindDevice`` record -> aligned structs (32-bit ARM);
* build id >= 20210708 -> endpoint-1 sending, routers may permit joins without the
  coordinator, ``UTIL.AssocRemove`` exists, 16 concurrent requests.

Z-Stack 1.2/3.0 (CC2531) would push zigpy-znp into legacy OSAL-table paths that no one
should build a new bench on.

What the firmware does, and we do, for the host (zigpy-znp):

* start-up: SYS.Ping/Version, UTIL.AssocFindDevice, NV reads/writes (OSAL and
  extended), SYS.ResetReq -> SYS.ResetInd (RAM state lost, STARTUP_OPTION honoured),
  AppConfig.BDBSetChannel and BDBStartCommissioning(NwkFormation) -> ZDO.StateChangeInd
  and AppConfig.BDBCommissioningNotification (Success when forming, FormationFailure
  when an existing network is resumed from NV, exactly as real firmware reports it);
* AF.Register, AF.DataRequest/DataRequestExt/DataRequestSrcRtg -> SRSP, then (unicast,
  non-ZDO) AF.DataConfirm with SUCCESS or the delivery failure;
* messages longer than one MT frame: AF.DataRequestExt announcing the length, then
  AF.DataStore; AF.IncomingMsgExt holding the data for AF.DataRetrieve (fragments.py);
* incoming traffic: AF.IncomingMsg; ZDO frames as ZDO.MsgCbIncoming (after the host's
  ZDO.MsgCallbackRegister), plus ZDO.EndDeviceAnnceInd and ZDO.MgmtPermitJoinRsp;
* joins: ZDO.TCDevInd, the device's own Device_annce, NV address-manager and hashed
  TC link key entries;
* APS link keys: ZDO.SetLinkKey / RemoveLinkKey (ZDSecMgrAddLinkKey: ZBufferFull once
  its ``link_key_entries`` are taken), kept across resets; AF data requests with
  ENABLE_SECURITY are APS-secured on the air with them, and AF.IncomingMsg's
  SecurityUse says whether the device's frame was;
* ZDO requests addressed to the coordinator itself (Node/Simple/Active EP descriptors,
  address requests, Mgmt_Lqi/Rtg/Bind, Mgmt_NWK_Update energy scans and channel change,
  Mgmt_Permit_Joining) are answered by "our" ZDO, as Z-Stack's ZDO does
  (radios/coordinator_zdo.py, ``ZSTACK``).

* as the shipped firmware answers (firmware.py, each value with its source): SYS.Version
  (9 bytes), SYS.Ping (1625), SYS.StackTune/SetTxPower (the MAC's status), SYS.ResetInd
  (reason 0), AF.IncomingMsg (TSN 0, MAC timestamp, last hop, radius left), ZDO.SrcRtgInd
  before a routed device's unicasts, AF payloads over one frame refused with
  INVALID_PARAMETER; failures confirmed after the stack's retries on a timed air
  (timing.py).

Anything else gets an RPC error SRSP (or a ZDO NOT_SUPPORTED) and an ERROR log line, and
is recorded in ``ZnpCoordinator.unimplemented`` so tests can assert there were no gaps.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import logging
import random
import time
from collections.abc import Callable
from typing import Any

import zigpy.types as t
import zigpy.zdo.types as zdo_t
import zigpy_znp.commands as c  # command schemas (see mt.py)
import zigpy_znp.types as zt
from zigpy_znp.types.nvids import ExNvIds, NvSysIds, OsalNvIds

from radios.coordinator_zdo import ZSTACK, ChangeChannel, Coordinator, Endpoint, EnergyScan, Handling, PermitJoining
from radios.coordinator_zdo import answer as zdo_answer

from . import firmware, mt
from .fragments import HugeMessages
from .faults import Faults
from .timing import FailureTiming
from .nvram import NvStore, legacy

LOGGER = logging.getLogger(__name__)

DEFAULT_IEEE = t.EUI64.convert("00:12:4b:00:2a:5e:c0:01")  # TI OUI

#: SYS.Version, SYS.Ping and SYS.ResetInd as Koenkk's 20230507 build answers them
#: (the values and their sources: firmware.py)
VERSION_PAYLOAD = firmware.version_payload()
CAPABILITIES = zt.MTCapabilities(firmware.CAPABILITIES)

#: When the emulator powers the SimHan up:
#: "ready"  - once the host has started the network and issued its first permit-join
#:            request (zigpy's start-up ends with permit(0)); bench devices behave as
#:            already commissioned and join/announce right away;
#: "permit" - at the first permit-join with a non-zero duration (devices join when the
#:            host opens the network, as new devices would);
#: "manual" - never; the caller starts the HAN.
HAN_START_MODES = ("ready", "permit", "manual")

#: Largest APS payload that fits one AF.IncomingMsg (250 minus 20 bytes of fields).
MAX_INCOMING_MSG_DATA = 230

#: Delay between the firmware's startup callbacks, to keep them asynchronous
CALLBACK_GAP = 0.005
#: How long a soft reset takes before SYS.ResetInd
RESET_TIME = 0.02
# Z-Stack 3.x (ZDApp.c) saves its NWK frame counter to NV once it has changed more
# than MAX_NWK_FRAMECOUNTER_CHANGES times, and on the first network start after a boot
# restores it that far ahead plus NWK_FRAMECOUNTER_CHANGES_RESTORE_DELTA, past every
# counter used since the last save.
#: Z-Stack's security manager entries for application link keys: ZDSECMGR_ENTRY_MAX is
#: ZDSECMGR_DEVICE_MAX, 3 unless the build defines it (stack/zdo/zd_sec_mgr.c).
ZDSECMGR_ENTRY_MAX = 3
NWK_FRAMECOUNTER_SAVE_AFTER = 1000
NWK_FRAMECOUNTER_RESTORE_AHEAD = 1000 + 250

@dataclasses.dataclass
class Child:
    ieee: t.EUI64
    nwk: t.NWK
    relation: c.util.NodeRelation = c.util.NodeRelation.CHILD_FFD_RX_IDLE


class ZnpCoordinator:
    """Z-Stack 3.30 coordinator state and MT handlers; transport-agnostic.

    ``connection_made(write)`` / ``connection_lost()`` bind it to a host link;
    ``frame_received(frame)`` handles one MT frame from the host.
    """

    def __init__(
        self,
        han: Any = None,
        *,
        ieee: t.EUI64 = DEFAULT_IEEE,
        faults: Faults | None = None,
        han_start: str = "ready",
        link_key_entries: int = ZDSECMGR_ENTRY_MAX,
        failure_timing: FailureTiming | None = None,
        aps_fragmentation: bool = True,
    ) -> None:
        if han_start not in HAN_START_MODES:
            raise ValueError(f"han_start must be one of {HAN_START_MODES}, not {han_start!r}")
        self.nv = NvStore(ieee)
        #: ZDSecMgr's application link keys (ZCD_NV_APS_LINK_KEY_TABLE in the firmware's
        #: NV: they survive resets; STARTUP_OPTION ClearState wipes them)
        self.aps_link_keys: dict[t.EUI64, t.KeyData] = {}
        self.link_key_entries = link_key_entries
        self.faults = faults if faults is not None else Faults()
        self.han = han
        #: Z-Stack built with ZIGBEE_FRAGMENTATION (APSF; issue 13 needs it): AF_DataRequest
        #: hands a unicast over afDataReqMTU to apsfSendFragmented (stack/af/af.c) and the
        #: air fragments it; without, it is refused (firmware.py, ``_too_long``)
        self.aps_fragmentation = aps_fragmentation
        #: how long a failed unicast takes to be confirmed (timing.py): by default the
        #: real stack's retries and route discovery when the air is timed (``--link
        #: realistic``), at the air's scale; none with an instant air
        if failure_timing is None:
            link = getattr(han, "link", None)
            failure_timing = (FailureTiming.realistic(scale=link.scale)
                              if link is not None and getattr(link, "timed", False) else FailureTiming.instant())
        self.failure_timing = failure_timing
        self.han_start = han_start
        self._han_task: asyncio.Task | None = None
        self._han_started_by_us = False

        self._write: Callable[[bytes], None] | None = None
        self._tasks: set[asyncio.Task] = set()
        self._deferred: list[Any] = []

        #: "Subsystem.Command" names the firmware had to refuse (gaps, for tests)
        self.unimplemented: list[str] = []
        #: how often the host sent each request, by "Subsystem.Command" (for tests)
        self.requests: collections.Counter[str] = collections.Counter()
        self.resets = 0
        self.formations = 0
        #: AF data requests refused as longer than one frame carries (for tests)
        self.payloads_refused = 0
        self.host_frames = 0
        self._power_on()

        if han is not None:
            han.attach(uplink=self._on_uplink, on_join=self._on_join)

    # ================================================================ RAM state ====
    def _power_on(self) -> None:
        """Everything the firmware keeps in RAM, as after a (re)boot."""
        self.booted_at = time.monotonic()  # the MAC timestamps count from here
        self.stack_tune = firmware.StackTuneState()
        #: the concentrator's source route table (RAM): relays per destination NWK
        self.source_routes: dict[int, tuple[int, ...]] = {}
        self.nwk_frame_counter = 0  # restored from NV when the network starts
        self._counter_changes = 0
        self._counter_restored = False
        self.endpoints: dict[int, Endpoint] = {}
        self.network_up = False
        self.zdo_callbacks: set[int] = set()
        self.permit_until = 0.0
        self.bdb_primary = zt.Channels.ALL_CHANNELS
        self.bdb_secondary = zt.Channels.NO_CHANNELS
        self.install_codes: dict[t.EUI64, bytes] = {}
        self.join_uses_install_code = False
        self.children: dict[t.EUI64, Child] = {}
        self.huge = HugeMessages(self)  # MT_AF's stored request and held messages (fragments.py)
        self._deferred = []
        for task in list(self._tasks):
            if task is not self._han_task:
                task.cancel()

    @property
    def ieee(self) -> t.EUI64:
        try:
            return self.nv.get(OsalNvIds.EXTADDR, t.EUI64)
        except KeyError:  # the host deleted EXTADDR; zgInit restores the chip's own
            return self.nv.hw_ieee

    @property
    def nib(self) -> zt.NIB:
        return self.nv.get(OsalNvIds.NIB, zt.NIB)

    @property
    def formed(self) -> bool:
        try:
            nib = self.nib
            on_nwk = self.nv.get(OsalNvIds.BDBNODEISONANETWORK, zt.uint8_t)
        except (KeyError, ValueError):  # deleted by the host until the next zgInit
            return False
        return bool(nib.nwkLogicalChannel != 0 and nib.nwkKeyLoaded and on_nwk == 1)

    # ================================================================ host link ====
    def connection_made(self, write: Callable[[bytes], None]) -> None:
        if self._write is not None:
            LOGGER.warning("ZNP emulator: a new host connection replaces the old one")
        self._write = write

    def connection_lost(self) -> None:
        self._write = None

    @property
    def host_connected(self) -> bool:
        return self._write is not None

    def _send_frame(self, frame: mt.MtFrame) -> None:
        if self._write is None:
            LOGGER.debug("ZNP emulator: no host connected, dropping %r", frame)
            return
        LOGGER.debug("ZNP emulator -> host: %r", frame)
        self._write(frame.encode())

    def send(self, command) -> None:
        """Send an SRSP or AREQ (a zigpy-znp command object, or a frame built as bytes
        where the firmware's layout is not the schema's) to the host now."""
        if isinstance(command, mt.MtFrame):
            self._send_frame(command)
            return
        LOGGER.debug("ZNP emulator sends %s", command)
        self._send_frame(mt.encode(command))

    def _defer(self, command) -> None:
        """An AREQ to send right after the SRSP being built."""
        self._deferred.append(command)

    def _spawn(self, coro, name: str) -> asyncio.Task:
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            LOGGER.error("ZNP emulator task %s failed", task.get_name(), exc_info=task.exception())

    def _gap(self, what: str) -> None:
        LOGGER.error("ZNP emulator: UNIMPLEMENTED %s", what)
        self.unimplemented.append(what)

    # ================================================================= dispatch ====
    def frame_received(self, frame: mt.MtFrame) -> None:
        self.host_frames += 1
        LOGGER.debug("ZNP emulator <- host: %r", frame)

        if frame.type not in (mt.CmdType.SREQ, mt.CmdType.AREQ):
            LOGGER.error("ZNP emulator: host sent a frame of type %d, ignoring: %r", frame.type, frame)
            return

        if self.huge.take_request(frame):
            return  # a huge AF.DataRequestExt: its data follows in AF.DataStore
        cls = mt.lookup_command(frame)
        if cls is None or cls.Req is not cls:
            name = f"unknown command cmd0=0x{frame.cmd0:02X} cmd1=0x{frame.cmd1:02X}"
            self._refuse(frame, name, mt.RpcErrorCode.INVALID_COMMAND_ID)
            return

        try:
            request = mt.decode(frame)
        except (ValueError, KeyError) as e:
            LOGGER.error("ZNP emulator: cannot parse %s: %s", cls.__qualname__, e)
            if frame.type == mt.CmdType.SREQ:
                self._send_frame(mt.rpc_error(frame, mt.RpcErrorCode.INVALID_PARAMETER))
            return

        name = cls.__qualname__.rsplit(".", 1)[0]
        self.requests[name] += 1
        handler = self._handlers().get(cls)
        if handler is None:
            self._refuse(frame, name, mt.RpcErrorCode.INVALID_COMMAND_ID)
            return

        self._deferred = []
        try:
            response = handler(request)
        except Exception:
            LOGGER.exception("ZNP emulator: BUG handling %s", request)
            self._gap(f"MT {name} (emulator error)")
            if frame.type == mt.CmdType.SREQ:
                self._send_frame(mt.rpc_error(frame, mt.RpcErrorCode.INVALID_PARAMETER))
            return

        if frame.type == mt.CmdType.SREQ:
            if response is None:
                LOGGER.error("ZNP emulator: handler for %s returned no SRSP", name)
                self._send_frame(mt.rpc_error(frame, mt.RpcErrorCode.INVALID_PARAMETER))
            else:
                self.send(response)
        deferred, self._deferred = self._deferred, []
        for command in deferred:
            self.send(command)

    def _refuse(self, frame: mt.MtFrame, name: str, code: mt.RpcErrorCode) -> None:
        self._gap(f"MT {name} ({frame!r})")
        if frame.type == mt.CmdType.SREQ:
            self._send_frame(mt.rpc_error(frame, code))

    def _handlers(self) -> dict[type, Callable]:
        h = getattr(self, "_handler_table", None)
        if h is None:
            h = self._handler_table = {
                # SYS
                c.SYS.Ping.Req: self._sys_ping,
                c.SYS.Version.Req: self._sys_version,
                c.SYS.ResetReq.Req: self._sys_reset_req,
                c.SYS.GetExtAddr.Req: lambda r: c.SYS.GetExtAddr.Rsp(ExtAddr=self.ieee),
                c.SYS.SetExtAddr.Req: self._sys_set_ext_addr,
                c.SYS.Random.Req: lambda r: c.SYS.Random.Rsp(Value=random.getrandbits(16)),
                c.SYS.SetTxPower.Req: self._sys_set_tx_power,
                c.SYS.StackTune.Req: self._sys_stack_tune,
                c.SYS.OSALNVItemInit.Req: self._osal_item_init,
                c.SYS.OSALNVRead.Req: self._osal_read,
                c.SYS.OSALNVReadExt.Req: self._osal_read,
                c.SYS.OSALNVWrite.Req: self._osal_write,
                c.SYS.OSALNVWriteExt.Req: self._osal_write,
                c.SYS.OSALNVDelete.Req: self._osal_delete,
                c.SYS.OSALNVLength.Req: self._osal_length,
                c.SYS.NVCreate.Req: self._nv_create,
                c.SYS.NVDelete.Req: self._nv_delete,
                c.SYS.NVLength.Req: self._nv_length,
                c.SYS.NVRead.Req: self._nv_read,
                c.SYS.NVWrite.Req: self._nv_write,
                c.SYS.NVUpdate.Req: self._nv_update,
                c.SYS.NVCompact.Req: lambda r: c.SYS.NVCompact.Rsp(Status=zt.Status.SUCCESS),
                # UTIL
                c.UTIL.AssocFindDevice.Req: self._util_assoc_find_device,
                c.UTIL.AssocGetWithAddress.Req: self._util_assoc_get_with_address,
                c.UTIL.AssocRemove.Req: self._util_assoc_remove,
                c.UTIL.AssocAdd.Req: self._util_assoc_add,
                c.UTIL.AssocCount.Req: self._util_assoc_count,
                c.UTIL.LEDControl.Req: lambda r: c.UTIL.LEDControl.Rsp(Status=zt.Status.SUCCESS),
                c.UTIL.GetDeviceInfo.Req: self._util_get_device_info,
                c.UTIL.TimeAlive.Req: self._util_time_alive,
                c.UTIL.AddrMgrExtAddrLookup.Req: self._util_ext_addr_lookup,
                c.UTIL.AddrMgwNwkAddrLookUp.Req: self._util_nwk_addr_lookup,
                # AppConfig (BDB)
                c.AppConfig.BDBSetChannel.Req: self._bdb_set_channel,
                c.AppConfig.BDBStartCommissioning.Req: self._bdb_start_commissioning,
                c.AppConfig.BDBAddInstallCode.Req: self._bdb_add_install_code,
                c.AppConfig.BDBSetJoinUsesInstallCodeKey.Req: self._bdb_join_uses_ic,
                c.AppConfig.BDBSetTcRequireKeyExchange.Req: lambda r: c.AppConfig.BDBSetTcRequireKeyExchange.Rsp(
                    Status=zt.Status.SUCCESS
                ),
                c.AppConfig.SetAllowRejoinTCPolicy.Req: lambda r: c.AppConfig.SetAllowRejoinTCPolicy.Rsp(
                    Status=zt.Status.SUCCESS
                ),
                c.AppConfig.SetNwkFrameCounter.Req: self._set_nwk_frame_counter,
                # AF
                c.AF.Register.Req: self._af_register,
                c.AF.Delete.Req: self._af_delete,
                c.AF.DataRequest.Req: self._af_data_request,
                c.AF.DataRequestExt.Req: self._af_data_request,
                c.AF.DataRequestSrcRtg.Req: self._af_data_request,
                c.AF.DataStore.Req: lambda r: self.huge.data_store(r),  # self.huge is new at each boot
                c.AF.DataRetrieve.Req: lambda r: self.huge.data_retrieve(r),
                # ZDO
                c.ZDO.MsgCallbackRegister.Req: self._zdo_msg_cb_register,
                c.ZDO.MsgCallbackRemove.Req: self._zdo_msg_cb_remove,
                c.ZDO.MgmtPermitJoinReq.Req: self._zdo_mgmt_permit_join,
                c.ZDO.ExtRouteChk.Req: self._zdo_ext_route_chk,
                c.ZDO.ExtRouteDisc.Req: lambda r: c.ZDO.ExtRouteDisc.Rsp(Status=zt.Status.SUCCESS),
                c.ZDO.MgmtNWKUpdateReq.Req: self._zdo_mgmt_nwk_update,
                c.ZDO.ExtNwkInfo.Req: self._zdo_ext_nwk_info,
                c.ZDO.StartupFromApp.Req: self._zdo_startup_from_app,
                c.ZDO.SetLinkKey.Req: self._zdo_set_link_key,
                c.ZDO.RemoveLinkKey.Req: self._zdo_remove_link_key,
            }
        return h

    # ====================================================================== SYS ====
    def _sys_ping(self, req):
        return c.SYS.Ping.Rsp(Capabilities=CAPABILITIES)

    def _sys_version(self, req) -> mt.MtFrame:
        # Built as bytes: zigpy-znp's schema would serialise the optional
        # BootloaderBuildType/BootloaderRevision the real firmware does not send
        return mt.MtFrame(cmd0=(mt.CmdType.SRSP << 5) | 0x01, cmd1=0x02, data=VERSION_PAYLOAD)

    def _sys_stack_tune(self, req):
        return c.SYS.StackTune.Rsp(Value=self.stack_tune.tune(int(req.Operation), int(req.Value)))

    def _sys_set_tx_power(self, req):
        # MT_SysSetTxPower: MAC_MlmeSetReq(MAC_PHY_TRANSMIT_POWER_SIGNED) -> its status
        status = firmware.tx_power_status(int(req.TXPower) & 0xFF)
        if status == firmware.Z_SUCCESS:
            self.stack_tune.tx_power = int(req.TXPower)
        # the status byte travels in zigpy-znp's signed StatusOrPower field
        return c.SYS.SetTxPower.Rsp(StatusOrPower=status - 256 if status > 127 else status)

    def _sys_set_ext_addr(self, req):
        self.nv.put(OsalNvIds.EXTADDR, req.ExtAddr)
        return c.SYS.SetExtAddr.Rsp(Status=zt.Status.SUCCESS)

    def _sys_reset_req(self, req) -> None:
        LOGGER.info("ZNP emulator: host requested a %s reset", req.Type.name)
        self._reset(zt.ResetReason.PowerUp)
        return None

    def _reset(self, reason: zt.ResetReason) -> None:
        """Reboot the firmware: RAM state lost, zgInit, then SYS.ResetInd.

        The NWK frame counter is not saved here: a reset loses the RAM counter, and the
        NV copy is whatever was last saved (by the firmware every
        ``NWK_FRAMECOUNTER_SAVE_AFTER`` frames, or by the host, as zigpy-znp's restore does
        just before it resets). The next network start skips ahead of it."""
        self.resets += 1
        self._power_on()
        if self.nv.boot() & zt.StartupOptions.ClearState:
            self.aps_link_keys.clear()
            self._publish_link_keys()

        async def indicate():
            await asyncio.sleep(RESET_TIME)
            # MT_SysResetInd: reason 0 on the CC26xx whatever the cause, then the
            # first five MTVersionString bytes (SDK mt_sys.c)
            self._send_frame(mt.MtFrame(cmd0=(mt.CmdType.AREQ << 5) | 0x01, cmd1=0x80,
                                        data=bytes([firmware.RESET_REASON]) + VERSION_PAYLOAD[:5]))

        self._spawn(indicate(), "reset-indication")

    def inject_reset(self) -> None:
        """Fault: the firmware crashed and the watchdog rebooted it."""
        LOGGER.warning("ZNP emulator: FAULT coordinator reset (watchdog)")
        self._reset(zt.ResetReason.Watchdog)

    # ------------------------------------------------------------------- NVRAM ----
    def _osal_length(self, req):
        return c.SYS.OSALNVLength.Rsp(ItemLen=self.nv.length(legacy(req.Id)))

    def _osal_item_init(self, req):
        status = self.nv.item_init(legacy(req.Id), req.ItemLen, bytes(req.Value))
        return c.SYS.OSALNVItemInit.Rsp(Status=status)

    def _osal_read(self, req):
        status, value = self.nv.read(legacy(req.Id), req.Offset)
        return type(req).Rsp(Status=status, Value=zt.ShortBytes(value))

    def _osal_write(self, req):
        status = self.nv.write(legacy(req.Id), req.Offset, bytes(req.Value))
        return type(req).Rsp(Status=status)

    def _osal_delete(self, req):
        return c.SYS.OSALNVDelete.Rsp(Status=self.nv.delete(legacy(req.Id), req.ItemLen))

    def _nv_key(self, req) -> tuple[int, int, int]:
        return (int(req.SysId), int(req.ItemId), int(req.SubId))

    def _nv_length(self, req):
        return c.SYS.NVLength.Rsp(Length=self.nv.length(self._nv_key(req)))

    def _nv_create(self, req):
        return c.SYS.NVCreate.Rsp(Status=self.nv.create(self._nv_key(req), req.Length))

    def _nv_delete(self, req):
        return c.SYS.NVDelete.Rsp(Status=self.nv.delete(self._nv_key(req)))

    def _nv_read(self, req):
        status, value = self.nv.read(self._nv_key(req), req.Offset, req.Length)
        return c.SYS.NVRead.Rsp(Status=status, Value=zt.ShortBytes(value))

    def _nv_write(self, req):
        return c.SYS.NVWrite.Rsp(Status=self.nv.write(self._nv_key(req), req.Offset, bytes(req.Value)))

    def _nv_update(self, req):
        return c.SYS.NVUpdate.Rsp(Status=self.nv.update(self._nv_key(req), bytes(req.Value)))

    def _set_nwk_frame_counter(self, req):
        self.nwk_frame_counter = int(req.FrameCounterValue)
        self._persist_frame_counter()
        return c.AppConfig.SetNwkFrameCounter.Rsp(Status=zt.Status.SUCCESS)

    def _frame_sent(self) -> None:
        """One more NWK frame secured with the network key."""
        self.nwk_frame_counter += 1
        self._counter_changes += 1
        if self._counter_changes > NWK_FRAMECOUNTER_SAVE_AFTER:
            self._persist_frame_counter()

    def _persist_frame_counter(self) -> None:
        self._counter_changes = 0
        if not self.formed:
            return
        epid = self.nib.extendedPANID
        key = (NvSysIds.ZSTACK, ExNvIds.NWK_SEC_MATERIAL_TABLE, 0)
        for sub, raw in enumerate(self.nv.table(ExNvIds.NWK_SEC_MATERIAL_TABLE)):
            entry, _ = zt.NwkSecMaterialDesc.deserialize(bytes(raw), align=mt.ALIGN_STRUCTS)
            if entry.ExtendedPanID == epid:
                key = (NvSysIds.ZSTACK, ExNvIds.NWK_SEC_MATERIAL_TABLE, sub)
                break
        self.nv.put(0, zt.NwkSecMaterialDesc(FrameCounter=self.nwk_frame_counter, ExtendedPanID=epid), key=key)
        # ZCD_NV_NWKKEY keeps the active key with the same counter (a formed CC2652R's
        # NV: NWKKEY's counter equals NWK_SEC_MATERIAL_TABLE[0]'s)
        active = self.nv.get(OsalNvIds.NWK_ACTIVE_KEY_INFO, zt.NwkKeyDesc)
        self.nv.put(OsalNvIds.NWKKEY, zt.NwkActiveKeyItems(Active=active, FrameCounter=self.nwk_frame_counter))

    def _load_frame_counter(self) -> None:
        """Once per boot, as ZDApp_RestoreNwkSecMaterial: the counters used since the
        last save were lost with the RAM counter, so start past them."""
        if self._counter_restored:
            return
        self._counter_restored = True
        epid = self.nib.extendedPANID
        for raw in self.nv.table(ExNvIds.NWK_SEC_MATERIAL_TABLE):
            entry, _ = zt.NwkSecMaterialDesc.deserialize(bytes(raw), align=mt.ALIGN_STRUCTS)
            if entry.ExtendedPanID == epid:
                self.nwk_frame_counter = int(entry.FrameCounter) + NWK_FRAMECOUNTER_RESTORE_AHEAD
                self._persist_frame_counter()
                return

    # ===================================================================== UTIL ====
    def _assoc_record(self, child: Child | None, index: int = 0) -> zt.AssociatedDeviceZStack3:
        return zt.AssociatedDeviceZStack3(
            shortAddr=child.nwk if child else 0xFFFF,
            addrIdx=index if child else 0xFFFF,
            nodeRelation=child.relation if child else c.util.NodeRelation.NOTUSED,
            devStatus=0,
            assocCnt=0,
            age=0,
            linkInfo=zt.LinkInfo(txCounter=0, txCost=1 if child else 0, rxLqi=200 if child else 0,
                                 inKeySeqNum=0, inFrmCntr=0, txFailure=0),
            endDev=zt.AgingEndDevice(endDevCfg=0, deviceTimeout=0),
            timeoutCounter=0,
            keepaliveRcv=False,
            ctrl=0,
        )

    def _util_assoc_find_device(self, req):
        children = list(self.children.values())
        child = children[req.Index] if req.Index < len(children) else None
        record = self._assoc_record(child, req.Index)
        return c.UTIL.AssocFindDevice.Rsp(Device=zt.Bytes(record.serialize(align=mt.ALIGN_STRUCTS)))

    def _util_assoc_get_with_address(self, req):
        child = self.children.get(req.IEEE)
        if child is None and req.IEEE == t.EUI64(bytes(8)):
            child = next((ch for ch in self.children.values() if ch.nwk == req.NWK), None)
        index = list(self.children).index(child.ieee) if child else 0
        record = self._assoc_record(child, index)
        device = c.util.Device(**record.as_dict())
        return c.UTIL.AssocGetWithAddress.Rsp(Device=device)

    def _util_assoc_remove(self, req):
        child = self.children.pop(req.IEEE, None)
        return c.UTIL.AssocRemove.Rsp(Status=zt.Status.SUCCESS if child else zt.Status.FAILURE)

    def _util_assoc_add(self, req):
        self.children[req.IEEE] = Child(ieee=req.IEEE, nwk=req.NWK, relation=req.NodeRelation)
        return c.UTIL.AssocAdd.Rsp(Status=zt.Status.SUCCESS)

    def _util_assoc_count(self, req):
        lo, hi = int(req.StartRelation), int(req.EndRelation)
        n = sum(1 for ch in self.children.values() if lo <= int(ch.relation) <= hi)
        return c.UTIL.AssocCount.Rsp(Count=n)

    def _util_get_device_info(self, req):
        nib = self.nib
        return c.UTIL.GetDeviceInfo.Rsp(
            Status=zt.Status.SUCCESS,
            IEEE=self.ieee,
            NWK=nib.nwkDevAddress,
            DeviceType=zt.DeviceTypeCapabilities(0x07),
            DeviceState=(zt.DeviceState.StartedAsCoordinator if self.network_up else zt.DeviceState.InitializedNotStarted),
            AssociatedDevices=zt.NWKList([ch.nwk for ch in self.children.values()]),
        )

    def _util_time_alive(self, req):
        return c.UTIL.TimeAlive.Rsp(Seconds=int(asyncio.get_running_loop().time()) & 0xFFFFFFFF)

    def _util_ext_addr_lookup(self, req):
        child = self.children.get(req.IEEE)
        nwk = child.nwk if child else (0x0000 if req.IEEE == self.ieee else 0xFFFE)
        return c.UTIL.AddrMgrExtAddrLookup.Rsp(NWK=nwk)

    def _util_nwk_addr_lookup(self, req):
        ieee = self._ieee_of(req.NWK) or t.EUI64(bytes(8))
        return c.UTIL.AddrMgwNwkAddrLookUp.Rsp(IEEE=ieee)

    # ====================================================================== BDB ====
    def _bdb_set_channel(self, req):
        if req.IsPrimary:
            self.bdb_primary = req.Channel
        else:
            self.bdb_secondary = req.Channel
        return c.AppConfig.BDBSetChannel.Rsp(Status=zt.Status.SUCCESS)

    def _bdb_add_install_code(self, req):
        self.install_codes[req.IEEE] = bytes(req.InstallCode)
        LOGGER.info("ZNP emulator: install code/key stored for %s (format %s)", req.IEEE, req.InstallCodeFormat)
        return c.AppConfig.BDBAddInstallCode.Rsp(Status=zt.Status.SUCCESS)

    def _bdb_join_uses_ic(self, req):
        self.join_uses_install_code = bool(req.BdbJoinUsesInstallCodeKey)
        return c.AppConfig.BDBSetJoinUsesInstallCodeKey.Rsp(Status=zt.Status.SUCCESS)

    def _bdb_start_commissioning(self, req):
        mode = req.Mode
        if not mode & c.app_config.BDBCommissioningMode.NwkFormation:
            self._gap(f"BDBStartCommissioning mode {mode!r} (only NwkFormation)")
            return c.AppConfig.BDBStartCommissioning.Rsp(Status=zt.Status.FAILURE)
        self._spawn(self._commission_formation(), "bdb-formation")
        return c.AppConfig.BDBStartCommissioning.Rsp(Status=zt.Status.SUCCESS)

    async def _commission_formation(self) -> None:
        BDB = c.app_config.BDBCommissioningMode
        Status = c.app_config.BDBCommissioningStatus
        resuming = self.formed

        await asyncio.sleep(CALLBACK_GAP)
        self.send(c.ZDO.StateChangeInd.Callback(State=zt.DeviceState.StartingAsCoordinator))
        await asyncio.sleep(CALLBACK_GAP)
        self.send(
            c.AppConfig.BDBCommissioningNotification.Callback(
                Status=Status.InProgress, Mode=BDB.NwkFormation, RemainingModes=BDB.NwkFormation
            )
        )
        await asyncio.sleep(CALLBACK_GAP)

        if resuming:
            LOGGER.info("ZNP emulator: resuming network from NV (channel %d, PAN 0x%04X)",
                        self.nib.nwkLogicalChannel, self.nib.nwkPanId)
        else:
            self._form_network()

        nib = self.nib.replace(nwkState=zt.NwkState.NWK_ROUTER, nwkDevAddress=0x0000, nwkCoordAddress=0x0000)
        self.nv.put(OsalNvIds.NIB, nib)
        self._load_frame_counter()
        self._restore_children()
        self.network_up = True
        if self.han is not None:
            # SimHan extras: devices report these as their parent and UpgradeServerID
            if hasattr(self.han, "coordinator_ieee"):
                self.han.coordinator_ieee = self.ieee
            if hasattr(self.han, "extended_pan_id"):
                self.han.extended_pan_id = t.ExtendedPanId(nib.extendedPANID)

        self.send(c.ZDO.StateChangeInd.Callback(State=zt.DeviceState.StartedAsCoordinator))
        await asyncio.sleep(CALLBACK_GAP)
        self.send(
            c.AppConfig.BDBCommissioningNotification.Callback(
                Status=Status.FormationFailure if resuming else Status.Success,
                Mode=BDB.NwkFormation,
                RemainingModes=BDB.NONE,
            )
        )

    def _form_network(self) -> None:
        """Form a new network from the configuration items, as BDB formation does."""
        channels = [ch for ch in range(11, 27) if self.bdb_primary & zt.Channels.from_channel_list([ch])]
        if not channels:
            chanlist = self.nv.get(OsalNvIds.CHANLIST, zt.Channels)
            channels = [ch for ch in range(11, 27) if chanlist & zt.Channels.from_channel_list([ch])] or [11]
        channel = channels[0]  # our "energy scan" finds every channel equally quiet

        pan_id = int(self.nv.get(OsalNvIds.PANID, zt.uint16_t))
        if pan_id in (0xFFFF, 0xFFFE):
            pan_id = random.randint(0x0001, 0xFFF7)

        epid = self.nv.get(OsalNvIds.APS_USE_EXT_PANID, t.EUI64)
        if epid == t.EUI64(bytes(8)):
            epid = self.ieee

        key = bytes(self.nv.items[legacy(OsalNvIds.PRECFGKEY)])
        self.formations += 1
        LOGGER.info("ZNP emulator: forming network channel %d PAN 0x%04X EPID %s", channel, pan_id, epid)

        nib = self.nib.replace(
            nwkLogicalChannel=channel,
            nwkPanId=pan_id,
            extendedPANID=epid,
            channelList=zt.Channels.from_channel_list([channel]),
            nwkKeyLoaded=True,
            SecurityLevel=5,
            nwkUpdateId=0,
            nwkManagerAddr=0x0000,
        )
        self.nv.put(OsalNvIds.NIB, nib)
        self.nv.put(OsalNvIds.EXTENDED_PAN_ID, epid)
        key_desc = zt.NwkKeyDesc(KeySeqNum=0, Key=zt.KeyData(key))
        self.nv.put(OsalNvIds.NWK_ACTIVE_KEY_INFO, key_desc)
        self.nv.put(OsalNvIds.NWK_ALTERN_KEY_INFO, key_desc)
        self.nv.put(OsalNvIds.BDBNODEISONANETWORK, zt.uint8_t(1))
        self.nwk_frame_counter = 0
        self._persist_frame_counter()
        self._counter_restored = True  # a new network starts at 0: nothing to skip

    # ====================================================================== AF ====
    def _af_register(self, req):
        if req.Endpoint in self.endpoints or req.Endpoint in (0, 0xFF):
            return c.AF.Register.Rsp(Status=zt.Status.APS_DUPLICATE_ENTRY)
        self.endpoints[req.Endpoint] = Endpoint(
            endpoint=int(req.Endpoint),
            profile=int(req.ProfileId),
            device_type=int(req.DeviceId),
            device_version=int(req.DeviceVersion),
            input_clusters=tuple(int(cluster) for cluster in req.InputClusters),
            output_clusters=tuple(int(cluster) for cluster in req.OutputClusters),
        )
        return c.AF.Register.Rsp(Status=zt.Status.SUCCESS)

    def _af_delete(self, req):
        found = self.endpoints.pop(req.Endpoint, None)
        return c.AF.Delete.Rsp(Status=zt.Status.SUCCESS if found else zt.Status.INVALID_PARAMETER)

    def _af_data_request(self, req):
        Rsp = type(req).Rsp
        if isinstance(req, c.AF.DataRequestExt.Req):
            dst = req.DstAddrModeAddress.as_zigpy_type()
        else:
            dst = t.AddrModeAddress(addr_mode=t.AddrMode.NWK, address=req.DstAddr)

        if req.SrcEndpoint != 0 and req.SrcEndpoint not in self.endpoints:
            LOGGER.warning("ZNP emulator: AF data request from unregistered endpoint %d", req.SrcEndpoint)
            return Rsp(Status=zt.Status.INVALID_PARAMETER)
        if not self.network_up:
            LOGGER.warning("ZNP emulator: AF data request while the network is down")
            return Rsp(Status=zt.Status.NWK_INVALID_REQUEST)

        if dst.addr_mode == t.AddrMode.IEEE:
            if dst.address == self.ieee:
                nwk = 0x0000
            else:
                child = self.children.get(dst.address)
                if child is None:
                    return Rsp(Status=zt.Status.NWK_UNKNOWN_DEVICE)
                nwk = child.nwk
            dst = t.AddrModeAddress(addr_mode=t.AddrMode.NWK, address=t.NWK(nwk))

        source_route = list(req.SourceRoute) if isinstance(req, c.AF.DataRequestSrcRtg.Req) else None
        refusal = self._too_long(req, dst, source_route)
        if refusal is not None:
            return Rsp(Status=refusal)

        profile = 0x0000 if req.SrcEndpoint == 0 else self.endpoints[req.SrcEndpoint].profile
        tx_options = t.TransmitOptions.NONE
        if req.Options & c.af.TransmitOptions.ACK_REQUEST:
            tx_options |= t.TransmitOptions.ACK
        if req.Options & c.af.TransmitOptions.ENABLE_SECURITY:
            tx_options |= t.TransmitOptions.APS_Encryption

        packet = t.ZigbeePacket(
            src=t.AddrModeAddress(addr_mode=t.AddrMode.NWK, address=t.NWK(0x0000)),
            src_ep=req.SrcEndpoint,
            dst=dst,
            dst_ep=req.DstEndpoint,
            source_route=source_route,
            tsn=req.TSN,
            profile_id=profile,
            cluster_id=req.ClusterId,
            data=t.SerializableBytes(bytes(req.Data)),
            tx_options=tx_options,
            radius=req.Radius,
        )
        self._frame_sent()

        to_self = dst.addr_mode == t.AddrMode.NWK and dst.address == 0x0000
        is_zdo = req.DstEndpoint == 0 and req.SrcEndpoint == 0

        if is_zdo:
            # ZDO frames are confirmed to Z-Stack's own ZDO task, never with AF.DataConfirm
            if to_self:
                self._spawn(self._zdo_local(packet), "zdo-local")
            else:
                if dst.addr_mode == t.AddrMode.Broadcast:
                    self._spawn(self._zdo_local(packet, broadcast=True), "zdo-local-bcast")
                self._spawn(self._deliver(packet, confirm=False), "zdo-deliver")
        elif to_self:
            self._spawn(self._loopback(packet), "af-loopback")
        elif dst.addr_mode == t.AddrMode.NWK:
            failure = self.faults.take_delivery_failure()
            if failure is not None:
                LOGGER.warning("ZNP emulator: FAULT failing delivery TSN %d to 0x%04X with %s",
                               req.TSN, dst.address, failure.name)
                self._spawn(self._confirm_later(req.SrcEndpoint, req.TSN, failure), "af-fail")
            else:
                self._spawn(self._deliver(packet, confirm=True), "af-deliver")
        else:
            self._spawn(self._deliver(packet, confirm=True, multicast=True), "af-deliver-bcast")

        return Rsp(Status=zt.Status.SUCCESS)

    def _too_long(self, req, dst: t.AddrModeAddress, source_route: list[int] | None) -> zt.Status | None:
        """AF_DataRequest's refusal of a payload over afDataReqMTU (firmware.py): the
        SRSP says INVALID_PARAMETER, nothing is sent, no AF.DataConfirm follows.
        The MTU counts APS security (ENABLE_SECURITY) and the source route the NWK
        header will carry: the one the host gave, else the concentrator's own.
        With APS fragmentation a unicast that long is fragmented, not refused."""
        if self.aps_fragmentation and dst.addr_mode == t.AddrMode.NWK:
            return None
        if source_route is not None:
            relays = len(source_route)
        elif dst.addr_mode == t.AddrMode.NWK:
            relays = len(self.source_routes.get(int(dst.address), ()))
        else:
            relays = 0
        secure = bool(req.Options & c.af.TransmitOptions.ENABLE_SECURITY)
        limit = firmware.af_mtu(aps_secure=secure, relays=relays)
        if len(req.Data) <= limit:
            return None
        LOGGER.warning("ZNP emulator: %d-byte payload to %s refused: over the %d bytes one frame carries "
                       "(APS security %s, %d relay(s))", len(req.Data), dst, limit, "on" if secure else "off", relays)
        self.payloads_refused += 1
        return zt.Status(firmware.AF_INVALID_PARAMETER)

    async def _confirm_later(self, endpoint: int, tsn: int, status: zt.Status) -> None:
        await asyncio.sleep(max(CALLBACK_GAP, self.failure_timing.failure_delay(int(status))))
        self.send(c.AF.DataConfirm.Callback(Status=status, Endpoint=endpoint, TSN=tsn))

    async def _deliver(self, packet: t.ZigbeePacket, *, confirm: bool, multicast: bool = False) -> None:
        started = time.monotonic()
        if self.han is None:
            status = zt.Status.MAC_NO_ACK if not multicast else zt.Status.SUCCESS
            unicast = packet.dst.addr_mode in (t.AddrMode.NWK, t.AddrMode.IEEE)
            LOGGER.log(logging.WARNING if unicast else logging.DEBUG,
                       "ZNP emulator: no HAN attached; cluster 0x%04X to %s goes nowhere", packet.cluster_id, packet.dst)
        else:
            try:
                result = await self.han.send(packet)
            except Exception:
                LOGGER.exception("ZNP emulator: SimHan.send raised for %r", packet)
                status = zt.Status.MAC_NO_ACK
            else:
                status = zt.Status.SUCCESS if (multicast or result.ok) else self._failure_status(result)
                if status != zt.Status.SUCCESS:
                    LOGGER.info("ZNP emulator: delivery TSN %d to %s failed: %s -> %s",
                                packet.tsn, packet.dst, getattr(result, "reason", None), status.name)
        if confirm:
            if status != zt.Status.SUCCESS:
                # the stack's retries and route discovery take seconds (timing.py)
                wait = self.failure_timing.failure_delay(int(status)) - (time.monotonic() - started)
                if wait > 0:
                    await asyncio.sleep(wait)
            self.send(c.AF.DataConfirm.Callback(Status=status, Endpoint=packet.src_ep, TSN=packet.tsn))

    @staticmethod
    def _failure_status(result) -> zt.Status:
        code = getattr(result, "status", None)
        if isinstance(code, int) and not isinstance(code, bool):
            try:
                return zt.Status(code)
            except ValueError:
                pass
        # SimHan reasons (radios/sim/link.py): "no ack" (MAC retries exhausted, or the
        # APS ack lost), "indirect timeout" (a sleepy device did not poll in time).
        reason = str(getattr(result, "reason", "") or "").lower()
        if "indirect" in reason or "expired" in reason or "poll" in reason:
            return zt.Status.MAC_TRANSACTION_EXPIRED
        if "aps" in reason:
            return zt.Status.APS_NO_ACK
        if "route" in reason or "unknown" in reason or "no such" in reason:
            return zt.Status.NWK_NO_ROUTE
        return zt.Status.MAC_NO_ACK

    async def _loopback(self, packet: t.ZigbeePacket) -> None:
        """A unicast to ourselves: Z-Stack hands it to our own endpoint, i.e. the host."""
        await asyncio.sleep(CALLBACK_GAP)
        self.send(c.AF.DataConfirm.Callback(Status=zt.Status.SUCCESS, Endpoint=packet.src_ep, TSN=packet.tsn))
        if packet.dst_ep in self.endpoints:
            self._incoming_af(packet.replace(src=t.AddrModeAddress(addr_mode=t.AddrMode.NWK, address=0x0000)),
                              src_nwk=0x0000)

    # ================================================================ link keys ====
    def _zdo_set_link_key(self, req):
        """MT_ZDO_SET_LINK_KEY -> MT_ZdoSetLinkKey -> ZDSecMgrAddLinkKey(nwk, ieee, key)
        (Z-Stack mt/MT_ZDO.c, stack/zdo/zd_sec_mgr.c): store the address, find or make
        the device's security manager entry (ZBufferFull when all ZDSECMGR_ENTRY_MAX are
        taken), APSME_LinkKeySet, write NV. The device need not have joined: the
        address is simply stored. Frames sent with AF security to it then use this key."""
        ieee = t.EUI64(req.IEEE)
        if ieee not in self.aps_link_keys and len(self.aps_link_keys) >= self.link_key_entries:
            LOGGER.warning("ZNP emulator: no security manager entry left for %s's link key", ieee)
            return c.ZDO.SetLinkKey.Rsp(Status=zt.Status.BUFFER_FULL)
        self.aps_link_keys[ieee] = t.KeyData(req.LinkKeyData)
        nwk = int(req.NWK)
        self._persist_link_keys({ieee: nwk} if nwk < 0xFFF8 else {})
        self._publish_link_keys()
        LOGGER.info("ZNP emulator: APS link key set for %s (0x%04X)", ieee, req.NWK)
        return c.ZDO.SetLinkKey.Rsp(Status=zt.Status.SUCCESS)

    def _zdo_remove_link_key(self, req):
        # MT_ZdoRemoveLinkKey answers ZNwkUnknownDevice for a device without a key
        if self.aps_link_keys.pop(t.EUI64(req.IEEE), None) is None:
            return c.ZDO.RemoveLinkKey.Rsp(Status=zt.Status.NWK_UNKNOWN_DEVICE)
        self._persist_link_keys({})
        self._publish_link_keys()
        return c.ZDO.RemoveLinkKey.Rsp(Status=zt.Status.SUCCESS)

    def _persist_link_keys(self, nwks: dict[t.EUI64, int]) -> None:
        """ZDSecMgr's NV: each key in APS_KEY_DATA_TABLE[n] (key, tx and rx counters) and
        an APS_LINK_KEY_TABLE entry (address manager index of the device, n,
        AuthenticatedCBCK), the device's address entry marked a security user, as a
        formed CC2652R's NV holds them (zigpy-znp tests/nvram/CC2652R-ZStack4.formed.json).
        zigpy-znp reads them back as its key table (read_unhashed_link_keys)."""
        entries = []
        for slot, (ieee, key) in enumerate(self.aps_link_keys.items()):
            index = self._address_entry(ieee, nwks.get(ieee), zt.AddrMgrUserType.Security)
            if index is None:
                continue
            self.nv.put(0, zt.APSKeyDataTableEntry(Key=key, TxFrameCounter=0, RxFrameCounter=0),
                        key=(NvSysIds.ZSTACK, ExNvIds.APS_KEY_DATA_TABLE, slot))
            entries.append(zt.APSLinkKeyTableEntry(AddressManagerIndex=index, LinkKeyNvId=slot,
                                                   AuthenticationState=zt.AuthenticationOption.AuthenticatedCBCK))
        for slot in range(len(self.aps_link_keys), len(self.nv.table(ExNvIds.APS_KEY_DATA_TABLE))):
            self.nv.put(0, zt.APSKeyDataTableEntry(Key=t.KeyData(bytes(16)), TxFrameCounter=0, RxFrameCounter=0),
                        key=(NvSysIds.ZSTACK, ExNvIds.APS_KEY_DATA_TABLE, slot))
        raw = zt.APSLinkKeyTable(entries).serialize(align=mt.ALIGN_STRUCTS)
        size = len(self.nv.items[legacy(OsalNvIds.APS_LINK_KEY_TABLE)])
        self.nv.update(legacy(OsalNvIds.APS_LINK_KEY_TABLE), raw.ljust(size, b"\x00"))

    def _publish_link_keys(self) -> None:
        """The air secures frames with the coordinator's keys (a SimHan's optional extras)."""
        clear = getattr(self.han, "clear_link_keys", None)
        install = getattr(self.han, "install_link_key", None)
        if clear is None or install is None:
            return
        clear()
        for ieee, key in self.aps_link_keys.items():
            install(ieee, bytes(key))

    # ================================================================= ZDO (host) ====
    def _zdo_msg_cb_register(self, req):
        self.zdo_callbacks.add(int(req.ClusterId))
        return c.ZDO.MsgCallbackRegister.Rsp(Status=zt.Status.SUCCESS)

    def _zdo_msg_cb_remove(self, req):
        self.zdo_callbacks.discard(int(req.ClusterId))
        return c.ZDO.MsgCallbackRemove.Rsp(Status=zt.Status.SUCCESS)

    def _zdo_mgmt_permit_join(self, req):
        if not self.network_up:
            return c.ZDO.MgmtPermitJoinReq.Rsp(Status=zt.Status.NWK_INVALID_REQUEST)

        local = req.AddrMode == zt.AddrMode.Broadcast or req.Dst == 0x0000
        if local:
            self._set_permit(req.Duration)
            self._maybe_start_han(req.Duration)
            self._defer(c.ZDO.MgmtPermitJoinRsp.Callback(Src=0x0000, Status=zdo_t.Status.SUCCESS))
        if req.AddrMode == zt.AddrMode.Broadcast or req.Dst != 0x0000:
            # The request goes over the air too; a unicast target answers for itself
            dst = (t.AddrModeAddress(addr_mode=t.AddrMode.Broadcast, address=req.Dst)
                   if req.AddrMode == zt.AddrMode.Broadcast
                   else t.AddrModeAddress(addr_mode=t.AddrMode.NWK, address=req.Dst))
            self._tsn = (getattr(self, "_tsn", 0) + 1) & 0xFF
            data = bytes([self._tsn, req.Duration, req.TCSignificance])
            packet = t.ZigbeePacket(
                src=t.AddrModeAddress(addr_mode=t.AddrMode.NWK, address=0x0000), src_ep=0, dst=dst, dst_ep=0,
                tsn=self._tsn, profile_id=0, cluster_id=zdo_t.ZDOCmd.Mgmt_Permit_Joining_req,
                data=t.SerializableBytes(data),
            )
            self._spawn(self._deliver(packet, confirm=False), "permit-deliver")
        return c.ZDO.MgmtPermitJoinReq.Rsp(Status=zt.Status.SUCCESS)

    def _set_permit(self, duration: int) -> None:
        loop = asyncio.get_running_loop()
        self.permit_until = loop.time() + duration if duration else 0.0
        LOGGER.info("ZNP emulator: permit joining %s", f"for {duration} s" if duration else "off")

    @property
    def permitting(self) -> bool:
        return asyncio.get_running_loop().time() < self.permit_until

    def _zdo_ext_route_chk(self, req):
        known = req.Dst == 0x0000 or any(ch.nwk == req.Dst for ch in self.children.values())
        status = c.zdo.RoutingStatus.SUCCESS if known and self.network_up else c.zdo.RoutingStatus.FAIL
        return c.ZDO.ExtRouteChk.Rsp(Status=status)

    def _zdo_mgmt_nwk_update(self, req):
        if req.ScanDuration == zdo_t.NwkUpdate.CHANNEL_CHANGE_REQ:
            channels = [ch for ch in range(11, 27) if req.Channels & zt.Channels.from_channel_list([ch])]
            if len(channels) == 1:
                self._change_channel(channels[0])
        return c.ZDO.MgmtNWKUpdateReq.Rsp(Status=zt.Status.SUCCESS)

    def _change_channel(self, channel: int) -> None:
        nib = self.nib
        nib = nib.replace(nwkLogicalChannel=channel, nwkUpdateId=(nib.nwkUpdateId + 1) & 0xFF,
                          channelList=zt.Channels.from_channel_list([channel]))
        self.nv.put(OsalNvIds.NIB, nib)
        LOGGER.info("ZNP emulator: moved network to channel %d (update id %d)", channel, nib.nwkUpdateId)

    def _zdo_ext_nwk_info(self, req):
        nib = self.nib
        return c.ZDO.ExtNwkInfo.Rsp(
            Dst=nib.nwkDevAddress, PanId=nib.nwkPanId, ParentNWK=0xFFFE, ExtendedPanId=nib.extendedPANID,
            ParentIEEE=t.EUI64(bytes(8)), Channel=zt.Channels.from_channel_list([nib.nwkLogicalChannel])
            if nib.nwkLogicalChannel else zt.Channels.NO_CHANNELS,
        )

    def _zdo_startup_from_app(self, req):
        resuming = self.formed
        self._spawn(self._commission_formation(), "startup-from-app")
        state = c.zdo.StartupState.RestoredNetworkState if resuming else c.zdo.StartupState.NewNetworkState
        return c.ZDO.StartupFromApp.Rsp(State=state)

    # ============================================================ ZDO (our own) ====
    async def _zdo_local(self, packet: t.ZigbeePacket, *, broadcast: bool = False, requester: int = 0x0000) -> None:
        """Z-Stack's ZDO answering a request addressed to the coordinator.

        The answer is built by radios/coordinator_zdo.py (``ZSTACK``). Its effects (permit
        join, channel change) apply at once, in the host's request order as Z-Stack's one
        ZDO task does; only the reply waits CALLBACK_GAP. (A delayed effect let a
        permit(60) broadcast land after a later permit(0).)

        The reply goes back to whoever asked: the host's own requests to the host, a
        device's over the air to the device. Z-Stack's ZDP_IncomingData hands a device's
        request to the MT callbacks (ZDO_SendMsgCBs: the host's copy) and then to the
        stack's own processor (zdpMsgProcs, e.g. ZDO_ProcessMatchDescReq), which answers
        inMsg->srcAddr (stack/zdo/ZDProfile.c, ZDObject.c). An SE device's Match_Desc for
        the Key Establishment cluster is answered so, by the stack, not by the host."""
        data = bytes(packet.data.serialize())
        cluster = int(packet.cluster_id)
        if cluster & 0x8000:
            LOGGER.debug("ZNP emulator: ZDO response 0x%04X addressed to us, consumed", cluster)
            return
        if not data:
            return
        result = zdo_answer(cluster, data, self._zdo_coordinator(), ZSTACK, broadcast=broadcast)
        if not broadcast:
            if result.handling is Handling.MALFORMED:
                self._gap(f"ZDO request 0x{cluster:04X} to coordinator (unparsable: {result.error})")
            elif result.handling is Handling.UNSUPPORTED and result.command is not None:
                self._gap(f"ZDO {result.command.name} to coordinator")
        for effect in result.effects:
            if isinstance(effect, PermitJoining):
                self._set_permit(effect.duration)
            elif isinstance(effect, ChangeChannel):
                self._change_channel(effect.channel)
        if result.reply is None:
            return
        await asyncio.sleep(CALLBACK_GAP)
        if requester == 0x0000:
            self._zdo_reply(result.reply.cluster_id, result.reply.tsn, result.reply.body)
        else:
            await self._deliver(self._zdo_air_reply(requester, result.reply), confirm=False)

    def _zdo_air_reply(self, requester: int, reply: Any) -> t.ZigbeePacket:
        """Our ZDO's answer as the frame the air carries to the device that asked."""
        self._frame_sent()
        return t.ZigbeePacket(
            src=t.AddrModeAddress(addr_mode=t.AddrMode.NWK, address=t.NWK(0x0000)), src_ep=0,
            dst=t.AddrModeAddress(addr_mode=t.AddrMode.NWK, address=t.NWK(requester)), dst_ep=0,
            tsn=reply.tsn, profile_id=0x0000, cluster_id=reply.cluster_id,
            data=t.SerializableBytes(reply.payload), tx_options=t.TransmitOptions.NONE,
        )

    def _zdo_coordinator(self) -> Coordinator:
        return Coordinator(
            nwk=0x0000,
            ieee=self.ieee,
            endpoints=self.endpoints,
            neighbors=self._neighbors,
            energy_scan=self._energy_scan,
        )

    def _neighbors(self) -> list[zdo_t.Neighbor]:
        nib = self.nib
        return [
            zdo_t.Neighbor(
                extended_pan_id=nib.extendedPANID, ieee=ch.ieee, nwk=ch.nwk,
                device_type=zdo_t.Neighbor.DeviceType.Router, rx_on_when_idle=zdo_t.Neighbor.RxOnWhenIdle.On,
                relationship=zdo_t.Neighbor.Relationship.Child, reserved1=0,
                permit_joining=zdo_t.Neighbor.PermitJoins.Unknown, reserved2=0, depth=1, lqi=200,
            )
            for ch in self.children.values()
        ]

    def _energy_scan(self, channels: t.Channels) -> EnergyScan:
        # A quiet lab: every channel reads low energy, with small fixed differences
        energies = tuple((ch * 37) % 23 + 5 for ch in channels)
        return EnergyScan(total_transmissions=self.nwk_frame_counter & 0xFFFF, transmission_failures=0,
                          energies=energies)

    def _zdo_reply(self, cluster: int, tsn: int, body: bytes, *, src: int = 0x0000, broadcast: bool = False) -> None:
        if 0xFFFF not in self.zdo_callbacks and cluster not in self.zdo_callbacks:
            LOGGER.debug("ZNP emulator: no ZDO callback registered for 0x%04X, not forwarded", cluster)
            return
        self.send(
            c.ZDO.MsgCbIncoming.Callback(
                Src=src, IsBroadcast=broadcast, ClusterId=cluster, SecurityUse=0, TSN=tsn,
                MacDst=0xFFFF if broadcast else 0x0000, Data=zt.Bytes(body),
            )
        )

    # ====================================================================== HAN ====
    def _maybe_start_han(self, permit_duration: int) -> None:
        """Power the simulated HAN up when the host is ready for it (see HAN_START_MODES).

        The marker is the host's ZDO.MgmtPermitJoinReq: zigpy sends ``permit(0)`` as the
        last step of its start-up, after any temporary formation (zigpy forms a
        throw-away network for its energy scan and then wipes it, so devices powered up
        earlier would be stranded on a network that no longer exists).
        """
        if (
            self.han is None
            or self.han_start == "manual"
            or self._han_task is not None
            or not self.network_up
            or not self.zdo_callbacks
        ):
            return
        if self.han_start == "permit" and not permit_duration:
            return
        LOGGER.info("ZNP emulator: network up and host ready; powering up the simulated HAN")
        self._han_started_by_us = True
        self._han_task = self._spawn(self.han.start(), "han-start")

    def _ieee_of(self, nwk: int) -> t.EUI64 | None:
        if nwk == 0x0000:
            return self.ieee
        for child in self.children.values():
            if child.nwk == nwk:
                return child.ieee
        return None

    def _on_join(self, ieee: t.EUI64, nwk: t.NWK) -> None:
        if not self.network_up:
            LOGGER.warning("ZNP emulator: %s (0x%04X) tried to join while the network is down; ignored", ieee, nwk)
            return
        if ieee not in self.children and not self.permitting:
            LOGGER.info("ZNP emulator: %s joins while permit-join is off (pre-commissioned bench device)", ieee)
        self._add_child(ieee, nwk)
        relays = self._relays_of(int(nwk))
        # the trust centre hears of a join through the parent (the last relay)
        # (its route record comes with its first unicast to us, not with the join)
        self.send(c.ZDO.TCDevInd.Callback(SrcNwk=nwk, SrcIEEE=ieee, ParentNwk=relays[-1] if relays else 0x0000))

    def _add_child(self, ieee: t.EUI64, nwk: t.NWK) -> None:
        # A moved device loses its old short address
        for other in [ch for ch in self.children.values() if ch.nwk == nwk and ch.ieee != ieee]:
            del self.children[other.ieee]
        self.children[ieee] = Child(ieee=ieee, nwk=t.NWK(nwk))
        self._store_device(ieee, nwk)

    def _store_device(self, ieee: t.EUI64, nwk: int) -> None:
        """Address manager entry + hashed TC link key, as the trust center persists them."""
        if self._address_entry(ieee, nwk, zt.AddrMgrUserType.Assoc | zt.AddrMgrUserType.Security) is None:
            return

        tclk = self.nv.table(ExNvIds.TCLK_TABLE)
        slot = None
        for sub, raw in enumerate(tclk):
            dev, _ = zt.TCLKDevEntry.deserialize(bytes(raw), align=mt.ALIGN_STRUCTS)
            if dev.extAddr == ieee:
                slot = sub
                break
            if slot is None and dev.extAddr == t.EUI64(bytes(8)):
                slot = sub
        if slot is None:
            LOGGER.error("ZNP emulator: TC link key table full, no key stored for %s", ieee)
            return
        dev = zt.TCLKDevEntry(txFrmCntr=0, rxFrmCntr=0, extAddr=ieee, keyAttributes=zt.KeyAttributes.VERIFIED_KEY,
                              keyType=zt.KeyType.NONE, SeedShift_IcIndex=0)
        self.nv.put(0, dev, key=(NvSysIds.ZSTACK, ExNvIds.TCLK_TABLE, slot))

    def _address_entry(self, ieee: t.EUI64, nwk: int | None, user: zt.AddrMgrUserType) -> int | None:
        """The address manager's entry for ``ieee`` (found or taken), with ``user`` added
        to its users and ``nwk`` (None: the one it has): its index, or None when full."""
        empty = t.EUI64.convert("FF:FF:FF:FF:FF:FF:FF:FF")
        target = None
        users = zt.AddrMgrUserType(0)
        known = 0xFFFE
        for sub, raw in enumerate(self.nv.table(ExNvIds.ADDRMGR)):
            entry, _ = zt.AddrMgrEntry.deserialize(bytes(raw), align=mt.ALIGN_STRUCTS)
            if entry.extAddr == ieee:
                target, users, known = sub, entry.type, int(entry.nwkAddr)
                break
            if target is None and entry.extAddr == empty:
                target = sub
        if target is None:
            LOGGER.error("ZNP emulator: address manager table full, %s not persisted", ieee)
            return None
        entry = zt.AddrMgrEntry(type=users | user, nwkAddr=known if nwk is None else nwk, extAddr=ieee)
        self.nv.put(0, entry, key=(NvSysIds.ZSTACK, ExNvIds.ADDRMGR, target))
        return target

    def _restore_children(self) -> None:
        """On network start the firmware rebuilds its association table from NV."""
        self.children = {}
        for raw in self.nv.table(ExNvIds.ADDRMGR):
            entry, _ = zt.AddrMgrEntry.deserialize(bytes(raw), align=mt.ALIGN_STRUCTS)
            if entry.type & zt.AddrMgrUserType.Assoc and entry.extAddr not in (
                t.EUI64.convert("FF:FF:FF:FF:FF:FF:FF:FF"), t.EUI64(bytes(8))
            ):
                self.children[entry.extAddr] = Child(ieee=entry.extAddr, nwk=entry.nwkAddr)

    def _on_uplink(self, packet: t.ZigbeePacket) -> None:
        if not self.network_up:
            LOGGER.info("ZNP emulator: radio down, frame from %s lost", packet.src)
            return
        src = packet.src
        if src is not None and src.addr_mode == t.AddrMode.IEEE:
            child = self.children.get(src.address)
            src_nwk = child.nwk if child else 0xFFFE
        else:
            src_nwk = int(src.address) if src is not None else 0xFFFE

        if (packet.dst_ep == 0 or packet.src_ep == 0) and packet.profile_id == 0x0000:
            self._incoming_zdo(packet, src_nwk)
        else:
            self._incoming_af(packet, src_nwk)

    def _incoming_zdo(self, packet: t.ZigbeePacket, src_nwk: int) -> None:
        data = bytes(packet.data.serialize())
        if not data:
            LOGGER.warning("ZNP emulator: empty ZDO frame from 0x%04X dropped", src_nwk)
            return
        tsn, body = data[0], data[1:]
        cluster = int(packet.cluster_id)
        broadcast = packet.dst is not None and packet.dst.addr_mode == t.AddrMode.Broadcast
        if not broadcast:
            self._route_record(src_nwk)

        if cluster == zdo_t.ZDOCmd.Device_annce:
            try:
                (nwk, ieee, capability), _ = t.deserialize(body, zdo_t.CLUSTERS[zdo_t.ZDOCmd.Device_annce][1])
            except ValueError:
                LOGGER.warning("ZNP emulator: malformed Device_annce from 0x%04X", src_nwk)
            else:
                if self.children.get(ieee) is None or self.children[ieee].nwk != nwk:
                    self._add_child(ieee, nwk)
                self.send(c.ZDO.EndDeviceAnnceInd.Callback(
                    Src=src_nwk, NWK=nwk, IEEE=ieee, Capabilities=c.zdo.MACCapabilities(capability)))
        elif cluster == zdo_t.ZDOCmd.Mgmt_Permit_Joining_rsp and body:
            self.send(c.ZDO.MgmtPermitJoinRsp.Callback(Src=src_nwk, Status=zdo_t.Status(body[0])))
        elif not cluster & 0x8000 and packet.dst is not None and (broadcast or packet.dst.address == 0x0000):
            # A device asking our ZDO something (e.g. IEEE_addr_req, Match_Desc_req):
            # answered to it over the air (broadcasts only where ZSTACK answers them)
            self._spawn(self._zdo_local(packet, broadcast=broadcast, requester=src_nwk), "zdo-local-from-device")

        self._zdo_reply(cluster, tsn, body, src=src_nwk, broadcast=broadcast)

    def _incoming_af(self, packet: t.ZigbeePacket, src_nwk: int) -> None:
        dst = packet.dst
        group = 0
        broadcast = False
        if dst is not None and dst.addr_mode == t.AddrMode.Group:
            group = int(dst.address)
        elif dst is not None and dst.addr_mode == t.AddrMode.Broadcast:
            broadcast = True

        if packet.dst_ep not in self.endpoints and packet.dst_ep != 0xFF:
            LOGGER.warning("ZNP emulator: frame for unregistered endpoint %s from 0x%04X dropped (as Z-Stack does)",
                           packet.dst_ep, src_nwk)
            return

        data = bytes(packet.data.serialize())
        relays = self._route_record(src_nwk) if not (group or broadcast) else ()
        if len(data) > MAX_INCOMING_MSG_DATA:
            self.huge.hold(packet, src_nwk=src_nwk, group=group, broadcast=broadcast, data=data,
                           timestamp=firmware.incoming_timestamp(time.monotonic() - self.booted_at),
                           tsn=firmware.INCOMING_TSN, mac_src=relays[-1] if relays else src_nwk,
                           radius=firmware.result_radius(packet.radius, len(relays)))
            return

        self.send(
            c.AF.IncomingMsg.Callback(
                GroupId=group,
                ClusterId=packet.cluster_id,
                SrcAddr=src_nwk,
                SrcEndpoint=packet.src_ep,
                DstEndpoint=packet.dst_ep,
                WasBroadcast=broadcast,
                LQI=packet.lqi if packet.lqi is not None else 200,
                # the air passes a frame on as APS-secured only once the coordinator's
                # key verified it (radios/sim/han.py)
                SecurityUse=t.TransmitOptions.APS_Encryption in packet.tx_options,
                # TSN, TimeStamp, MacSrcAddr and MsgResultRadius as a real coordinator
                # fills them (firmware.py: always 0; MAC backoffs since boot; the last
                # hop; the radius left after every hop)
                TimeStamp=firmware.incoming_timestamp(time.monotonic() - self.booted_at),
                TSN=firmware.INCOMING_TSN,
                Data=zt.ShortBytes(data),
                MacSrcAddr=relays[-1] if relays else src_nwk,
                MsgResultRadius=firmware.result_radius(packet.radius, len(relays)),
            )
        )

    # ============================================================ source routes ====
    def _relays_of(self, nwk: int) -> tuple[int, ...]:
        """The relays a device's frames come through, device side first, if the HAN
        models hops (``han.relays_of(nwk)``, optional, as for the EZSP emulator)."""
        relays_of = getattr(self.han, "relays_of", None)
        if relays_of is None:
            return self.source_routes.get(nwk, ())
        return tuple(int(r) for r in relays_of(nwk))

    def _route_record(self, nwk: int) -> tuple[int, ...]:
        """A device behind relays sends a Route Record to the concentrator with its
        unicast; Z-Stack's NWK hands each one to ZDO_SrcRtgIndCB, and MT_ZDO
        (MT_ZdoSrcRtgCB, ZDO.SrcRtgInd) tells the host, before the data frame it
        precedes. Told here once per new or changed route."""
        relays = self._relays_of(nwk)
        if relays and relays != self.source_routes.get(nwk):
            self.learn_source_route(nwk, relays)
        elif not relays:
            # now a neighbour (it sends no route record): the stale source route goes
            self.source_routes.pop(nwk, None)
        return relays

    def learn_source_route(self, nwk: int, relays: tuple[int, ...] | list[int]) -> None:
        """The concentrator learns (or is told, by a test) the relays to ``nwk``:
        its source route table takes them and the host gets ZDO.SrcRtgInd."""
        relays = tuple(int(r) for r in relays)
        self.source_routes[int(nwk)] = relays
        LOGGER.info("ZNP emulator: route to 0x%04X through %s", nwk, ", ".join(f"0x{r:04X}" for r in relays) or "no relay")
        self.send(c.ZDO.SrcRtgInd.Callback(DstAddr=int(nwk), Relays=[t.NWK(r) for r in relays]))

    # ================================================================ lifecycle ====
    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            try:
                await task
            except (asyncio.CancelledError, Exception):
                pass
        self._tasks.clear()
        if self.han is not None and self._han_started_by_us:
            try:
                await self.han.stop()
            except Exception:
                LOGGER.exception("ZNP emulator: SimHan.stop failed")
