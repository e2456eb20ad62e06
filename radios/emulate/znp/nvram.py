"""NVRAM of the emulated Z-Stack 3.30 coordinator (the NVOCMP "extended" NV system).

Z-Stack 3.30 keys every NV item by ``(sys_id, item_id, sub_id)``.  The legacy OSAL items
(``SYS.OSALNV*``) live under ``(ZSTACK, LEGACY, nvid)``, so OSAL and extended commands see
the same bytes, as on the real firmware.  Tables (address manager, TC link keys, APS key
data, NWK security material) are ``(ZSTACK, table_id, index)`` with a fixed number of
pre-created entries: zigpy-znp writes a table by walking sub ids until one does not exist.

``boot()`` is what ``zgInit`` does on every start: honour ``STARTUP_OPTION`` (clear
network state and/or configuration) and re-create any missing item with its default.
The store lives in the coordinator object, so it survives host reconnects and resets.

Values are raw bytes; the structured defaults are built with zigpy-znp's type
definitions (``zigpy_znp.types``: NIB, AddrMgrEntry, ...), serialised with CC26x2 struct
alignment, because those definitions describe the firmware's C structs.
"""

from __future__ import annotations

import logging
import os

import zigpy_znp.const as zconst  # empty-entry constants for Z-Stack 3 tables
import zigpy_znp.types as zt  # struct/enum definitions used to build default values
from zigpy_znp.types.nvids import ExNvIds, NvSysIds, OsalNvIds

from .mt import ALIGN_STRUCTS

LOGGER = logging.getLogger(__name__)

Key = tuple[int, int, int]

#: Most bytes one SRSP carries back for an NV read (frame max 250 minus status/length).
MAX_READ_CHUNK = 244

#: TI's compiled-in default network key (f8wConfig.cfg DEFAULT_KEY).
TI_DEFAULT_KEY = bytes([1, 3, 5, 7, 9, 11, 13, 15, 0, 2, 4, 6, 8, 10, 12, 13])

#: Entries pre-created per extended table, as a formed CC2652R's NV has them (zigpy-znp
#: tests/nvram/CC2652R-ZStack4.formed.json: ADDRMGR 0x0000-0x0100, TCLK_TABLE 200 =
#: ZDSECMGR_TC_DEVICE_MAX in Koenkk's preinclude.h, APS_KEY_DATA_TABLE 3 =
#: ZDSECMGR_ENTRY_MAX, NWK_SEC_MATERIAL_TABLE 5). zigpy-znp walks a table until a sub
#: id does not exist, and writes every entry when it forms or restores a network.
TABLE_SIZES = {
    ExNvIds.ADDRMGR: 257,
    ExNvIds.TCLK_TABLE: 200,
    ExNvIds.APS_KEY_DATA_TABLE: 3,
    ExNvIds.NWK_SEC_MATERIAL_TABLE: 5,
}
#: ZCD_NV_APS_LINK_KEY_TABLE: a uint16 count and ZDSECMGR_ENTRY_MAX (3) entries of 6
#: aligned bytes (AddressManagerIndex, LinkKeyNvId, AuthenticationState): 20 bytes
#: (the same NV dump).
APS_LINK_KEY_TABLE_CAPACITY = 3

#: Items reset by StartupOptions.ClearState (network state).
STATE_ITEMS = {
    OsalNvIds.NIB,
    OsalNvIds.NWK_ACTIVE_KEY_INFO,
    OsalNvIds.NWK_ALTERN_KEY_INFO,
    OsalNvIds.BDBNODEISONANETWORK,
    OsalNvIds.APS_LINK_KEY_TABLE,
    OsalNvIds.EXTENDED_PAN_ID,
}


def legacy(nvid: int) -> Key:
    return (NvSysIds.ZSTACK, ExNvIds.LEGACY, int(nvid))


def _ser(value) -> bytes:
    if isinstance(value, zt.CStruct) or isinstance(value, zt.BaseListType):
        return value.serialize(align=ALIGN_STRUCTS)
    if isinstance(value, (bytes, bytearray)):
        return bytes(value)
    return value.serialize()


def default_nib(channel_list: zt.Channels) -> zt.NIB:
    """A factory NIB of a CC26x2 coordinator that has not formed a network.

    The stack's compile-time values are those of a formed CC2652R (zigpy-znp
    tests/nvram/CC2652R-ZStack4.formed.json): MaxChildren/MaxRouters 51, MaxDepth 15,
    RouteDiscoveryTime 13 (Koenkk's ROUTE_DISCOVERY_TIME), nwkRouterAgeLimit 5
    (NWK_ROUTE_AGE_LIMIT), scanDuration 4."""
    empty_key = zt.NwkKeyDesc(KeySeqNum=0, Key=zt.KeyData(bytes(16)))
    return zt.NIB(
        SequenceNum=0,
        PassiveAckTimeout=5,
        MaxBroadcastRetries=2,
        MaxChildren=51,
        MaxDepth=15,
        MaxRouters=51,
        dummyNeighborTable=0,
        BroadcastDeliveryTime=30,
        ReportConstantCost=0,
        RouteDiscRetries=0,
        dummyRoutingTable=0,
        SecureAllFrames=1,
        SecurityLevel=5,
        SymLink=1,
        CapabilityFlags=0x8F,
        TransactionPersistenceTime=7,
        nwkProtocolVersion=2,
        RouteDiscoveryTime=13,
        RouteExpiryTime=30,
        nwkDevAddress=0xFFFE,
        nwkLogicalChannel=0,
        nwkCoordAddress=0xFFFE,
        nwkCoordExtAddress=zt.EUI64(bytes(8)),
        nwkPanId=0xFFFF,
        nwkState=zt.NwkState.NWK_INIT,
        channelList=channel_list,
        beaconOrder=15,
        superFrameOrder=15,
        scanDuration=4,
        battLifeExt=0,
        allocatedRouterAddresses=0,
        allocatedEndDeviceAddresses=0,
        nodeDepth=0,
        extendedPANID=zt.EUI64(bytes(8)),
        nwkKeyLoaded=False,
        spare1=empty_key,
        spare2=empty_key,
        spare3=0,
        spare4=0,
        nwkLinkStatusPeriod=15,
        nwkRouterAgeLimit=5,
        nwkUseMultiCast=False,
        nwkIsConcentrator=True,
        nwkConcentratorDiscoveryTime=120,
        nwkConcentratorRadius=10,
        nwkAllFresh=1,
        nwkManagerAddr=0x0000,
        nwkTotalTransmissions=0,
        nwkUpdateId=0,
    )


DEFAULT_CHANLIST = zt.Channels.from_channel_list([11])

EMPTY_TCLK_ENTRY = zt.TCLKDevEntry(
    txFrmCntr=0,
    rxFrmCntr=0,
    extAddr=zt.EUI64(bytes(8)),
    keyAttributes=zt.KeyAttributes.DEFAULT_KEY,
    keyType=zt.KeyType.NONE,
    SeedShift_IcIndex=0,
)
EMPTY_APS_KEY = zt.APSKeyDataTableEntry(Key=zt.KeyData(bytes(16)), TxFrameCounter=0, RxFrameCounter=0)
EMPTY_SEC_MATERIAL = zt.NwkSecMaterialDesc(FrameCounter=0, ExtendedPanID=zt.EUI64(bytes(8)))


class NvStore:
    """Byte-exact NV items plus the MT semantics of reading/writing them."""

    def __init__(self, hw_ieee: zt.EUI64, *, tclk_seed: bytes | None = None) -> None:
        self.hw_ieee = zt.EUI64(hw_ieee)
        # Generated once per "chip", as the firmware does on its first boot
        self.factory_tclk_seed = tclk_seed if tclk_seed is not None else os.urandom(16)
        self.items: dict[Key, bytearray] = {}
        self.boot()

    # ----------------------------------------------------------------- defaults ----
    def _legacy_defaults(self) -> dict[int, bytes]:
        return {
            OsalNvIds.EXTADDR: _ser(self.hw_ieee),
            OsalNvIds.STARTUP_OPTION: _ser(zt.StartupOptions.NONE),
            OsalNvIds.NIB: _ser(default_nib(DEFAULT_CHANLIST)),
            OsalNvIds.START_DELAY: _ser(zt.uint8_t(10)),
            # Z-Stack 3.30's poll rate table (40 bytes) and the old 16-bit item beside it
            OsalNvIds.POLL_RATE: bytes(40),
            OsalNvIds.POLL_RATE_OLD16: _ser(zt.uint16_t(0)),
            OsalNvIds.DATA_RETRIES: _ser(zt.uint8_t(2)),
            OsalNvIds.POLL_FAILURE_RETRIES: _ser(zt.uint8_t(2)),
            OsalNvIds.STACK_PROFILE: _ser(zt.uint8_t(2)),
            OsalNvIds.INDIRECT_MSG_TIMEOUT: _ser(zt.uint8_t(7)),
            OsalNvIds.ROUTE_EXPIRY_TIME: _ser(zt.uint8_t(30)),
            OsalNvIds.EXTENDED_PAN_ID: _ser(zt.EUI64(bytes(8))),
            OsalNvIds.BCAST_RETRIES: _ser(zt.uint8_t(2)),
            OsalNvIds.PASSIVE_ACK_TIMEOUT: _ser(zt.uint8_t(5)),
            OsalNvIds.BCAST_DELIVERY_TIME: _ser(zt.uint8_t(30)),
            OsalNvIds.CONCENTRATOR_ENABLE: _ser(zt.Bool(False)),
            OsalNvIds.CONCENTRATOR_DISCOVERY: _ser(zt.uint8_t(120)),
            OsalNvIds.CONCENTRATOR_RADIUS: _ser(zt.uint8_t(10)),
            OsalNvIds.CONCENTRATOR_RC: _ser(zt.Bool(False)),
            OsalNvIds.NWK_MGR_MODE: _ser(zt.uint8_t(1)),
            OsalNvIds.SRC_RTG_EXPIRY_TIME: _ser(zt.uint8_t(10)),
            OsalNvIds.ROUTE_DISCOVERY_TIME: _ser(zt.uint8_t(5)),
            OsalNvIds.NWK_ACTIVE_KEY_INFO: _ser(zconst.EMPTY_KEY),
            OsalNvIds.NWK_ALTERN_KEY_INFO: _ser(zconst.EMPTY_KEY),
            OsalNvIds.ROUTER_OFF_ASSOC_CLEANUP: _ser(zt.Bool(False)),
            OsalNvIds.NWK_LEAVE_REQ_ALLOWED: _ser(zt.Bool(True)),
            OsalNvIds.NWK_CHILD_AGE_ENABLE: _ser(zt.Bool(True)),
            OsalNvIds.GROUP_TABLE: bytes(2) + b"\xff" * 20,  # no group, empty slots
            OsalNvIds.APS_FRAME_RETRIES: _ser(zt.uint8_t(3)),
            OsalNvIds.APS_ACK_WAIT_DURATION: _ser(zt.uint16_t(6000)),
            OsalNvIds.APS_ACK_WAIT_MULTIPLIER: _ser(zt.uint8_t(2)),
            OsalNvIds.BINDING_TIME: _ser(zt.uint16_t(8000)),
            OsalNvIds.APS_USE_EXT_PANID: _ser(zt.EUI64(bytes(8))),
            OsalNvIds.APS_USE_INSECURE_JOIN: _ser(zt.Bool(True)),
            OsalNvIds.COMMISSIONED_NWK_ADDR: _ser(zt.NWK(0xFFFE)),
            OsalNvIds.APS_NONMEMBER_RADIUS: _ser(zt.uint8_t(2)),
            OsalNvIds.APS_LINK_KEY_TABLE: bytes(2 + APS_LINK_KEY_TABLE_CAPACITY * 6),
            OsalNvIds.APS_DUPREJ_TIMEOUT_INC: _ser(zt.uint16_t(1000)),
            OsalNvIds.APS_DUPREJ_TIMEOUT_COUNT: _ser(zt.uint8_t(10)),
            OsalNvIds.APS_DUPREJ_TABLE_SIZE: _ser(zt.uint16_t(5)),
            OsalNvIds.NWK_ENDDEV_TIMEOUT_DEF: _ser(zt.uint8_t(8)),
            OsalNvIds.END_DEV_TIMEOUT_VALUE: _ser(zt.uint8_t(8)),
            OsalNvIds.END_DEV_CONFIGURATION: _ser(zt.uint8_t(0)),
            OsalNvIds.BDBNODEISONANETWORK: _ser(zt.uint8_t(0)),
            OsalNvIds.PRECFGKEY: TI_DEFAULT_KEY,
            OsalNvIds.PRECFGKEYS_ENABLE: _ser(zt.Bool(True)),
            OsalNvIds.SECURE_PERMIT_JOIN: _ser(zt.Bool(True)),
            OsalNvIds.APS_LINK_KEY_TYPE: _ser(zt.uint8_t(1)),
            OsalNvIds.APS_ALLOW_R19_SECURITY: _ser(zt.uint8_t(0)),
            OsalNvIds.USE_DEFAULT_TCLK: _ser(zt.Bool(True)),
            OsalNvIds.TRUSTCENTER_ADDR: _ser(zt.EUI64(bytes(8))),
            OsalNvIds.USERDESC: bytes(17),
            OsalNvIds.PANID: _ser(zt.uint16_t(0xFFFF)),
            OsalNvIds.CHANLIST: _ser(DEFAULT_CHANLIST),
            OsalNvIds.LEAVE_CTRL: _ser(zt.uint8_t(0)),
            OsalNvIds.SCAN_DURATION: _ser(zt.uint8_t(4)),
            OsalNvIds.LOGICAL_TYPE: _ser(zt.DeviceLogicalType.Coordinator),
            OsalNvIds.NWKMGR_MIN_TX: _ser(zt.uint8_t(0)),  # ZDNWKMGR_MIN_TRANSMISSIONS 0 (preinclude.h)
            OsalNvIds.NWK_PARENT_INFO: _ser(zt.uint8_t(1)),
            OsalNvIds.SAPI_ENDPOINT: _ser(zt.uint8_t(0xE0)),
            # ZCD_NV_NWKKEY: the active key and its frame counter (written when forming)
            OsalNvIds.NWKKEY: _ser(zt.NwkActiveKeyItems(Active=zconst.EMPTY_KEY, FrameCounter=0)),
            OsalNvIds.ZDO_DIRECT_CB: _ser(zt.Bool(False)),
            OsalNvIds.TCLK_SEED: self.factory_tclk_seed,
        }

    def _table_default(self, table: int) -> bytes:
        if table == ExNvIds.ADDRMGR:
            return _ser(zconst.EMPTY_ADDR_MGR_ENTRY_ZSTACK3)
        if table == ExNvIds.TCLK_TABLE:
            return _ser(EMPTY_TCLK_ENTRY)
        if table == ExNvIds.APS_KEY_DATA_TABLE:
            return _ser(EMPTY_APS_KEY)
        if table == ExNvIds.NWK_SEC_MATERIAL_TABLE:
            return _ser(EMPTY_SEC_MATERIAL)
        raise KeyError(table)

    def boot(self) -> zt.StartupOptions:
        """zgInit: apply STARTUP_OPTION, then create missing items with defaults."""
        options = zt.StartupOptions.NONE
        raw = self.items.get(legacy(OsalNvIds.STARTUP_OPTION))
        if raw:
            options = zt.StartupOptions(raw[0])

        defaults = self._legacy_defaults()

        if options & zt.StartupOptions.ClearConfig:
            LOGGER.info("NV: STARTUP_OPTION ClearConfig: restoring configuration items to defaults")
            for nvid, value in defaults.items():
                if nvid not in STATE_ITEMS and nvid not in (OsalNvIds.EXTADDR, OsalNvIds.TCLK_SEED):
                    self.items[legacy(nvid)] = bytearray(value)

        if options & zt.StartupOptions.ClearState:
            LOGGER.info("NV: STARTUP_OPTION ClearState: clearing network state")
            for nvid in STATE_ITEMS:
                self.items[legacy(nvid)] = bytearray(defaults[nvid])
            for table, size in TABLE_SIZES.items():
                for sub in range(size):
                    self.items[(NvSysIds.ZSTACK, table, sub)] = bytearray(self._table_default(table))

        for nvid, value in defaults.items():
            self.items.setdefault(legacy(nvid), bytearray(value))
        for table, size in TABLE_SIZES.items():
            for sub in range(size):
                self.items.setdefault((NvSysIds.ZSTACK, table, sub), bytearray(self._table_default(table)))

        self.items[legacy(OsalNvIds.STARTUP_OPTION)] = bytearray(_ser(zt.StartupOptions.NONE))
        return options

    # ----------------------------------------------------------- typed helpers ----
    def get(self, nvid: int, item_type, key: Key | None = None):
        raw = self.items[key if key is not None else legacy(nvid)]
        if issubclass(item_type, (zt.CStruct, zt.BaseListType)):
            value, _ = item_type.deserialize(bytes(raw), align=ALIGN_STRUCTS)
        else:
            value, _ = item_type.deserialize(bytes(raw))
        return value

    def put(self, nvid: int, value, key: Key | None = None) -> None:
        self.items[key if key is not None else legacy(nvid)] = bytearray(_ser(value))

    def table(self, table: int) -> list[bytearray]:
        out = []
        sub = 0
        while (NvSysIds.ZSTACK, table, sub) in self.items:
            out.append(self.items[(NvSysIds.ZSTACK, table, sub)])
            sub += 1
        return out

    # ------------------------------------------------------------ MT semantics ----
    def length(self, key: Key) -> int:
        item = self.items.get(key)
        return 0 if item is None else len(item)

    def item_init(self, key: Key, length: int, init: bytes) -> zt.Status:
        """osal_nv_item_init: SUCCESS if it existed, NV_ITEM_UNINIT if just created."""
        if key in self.items:
            return zt.Status.SUCCESS
        if length == 0:
            return zt.Status.NV_OPER_FAILED
        self.items[key] = bytearray(init[:length].ljust(length, b"\x00"))
        return zt.Status.NV_ITEM_UNINIT

    def create(self, key: Key, length: int) -> zt.Status:
        if key in self.items:
            return zt.Status.FAILURE
        if length == 0:
            return zt.Status.NV_OPER_FAILED
        self.items[key] = bytearray(length)
        return zt.Status.SUCCESS

    def read(self, key: Key, offset: int, max_len: int = MAX_READ_CHUNK) -> tuple[zt.Status, bytes]:
        item = self.items.get(key)
        if item is None:
            return zt.Status.NV_OPER_FAILED, b""
        if offset > len(item):
            return zt.Status.INVALID_PARAMETER, b""
        return zt.Status.SUCCESS, bytes(item[offset : offset + min(max_len, MAX_READ_CHUNK)])

    def write(self, key: Key, offset: int, value: bytes) -> zt.Status:
        item = self.items.get(key)
        if item is None:
            return zt.Status.NV_ITEM_UNINIT
        if offset + len(value) > len(item):
            return zt.Status.NV_BAD_ITEM_LEN
        item[offset : offset + len(value)] = value
        return zt.Status.SUCCESS

    def update(self, key: Key, value: bytes) -> zt.Status:
        self.items[key] = bytearray(value)
        return zt.Status.SUCCESS

    def delete(self, key: Key, length: int | None = None) -> zt.Status:
        item = self.items.get(key)
        if item is None:
            return zt.Status.NV_ITEM_UNINIT
        if length is not None and length != len(item):
            return zt.Status.NV_BAD_ITEM_LEN
        del self.items[key]
        return zt.Status.SUCCESS
