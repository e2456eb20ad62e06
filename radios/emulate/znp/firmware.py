"""What the emulated Z-Stack firmware answers, and why: values taken from the firmware.

Variant: Koenkk's Z-Stack 3.x.0 coordinator build 20230507 for the CC2652 (the
firmware on most CC2652 lab dongles), which is TI's SimpleLink SDK 7.10 Z-Stack with
the patch in Koenkk/Z-Stack-firmware coordinator/Z-Stack_3.x.0/firmware.patch (commit
c80b77f, "CODE_REVISION_NUMBER 20230507"). Each value names its source:

* SDK: TexasInstruments/simplelink-lowpower-f2-sdk source/ti/zstack/... (mt/mt_sys.c,
  mt/mt_version.c, stack/af/af.c);
* patch: the Koenkk firmware.patch above;
* log: a debug log of a real dongle in a public issue;
* fixture: zigpy-znp's tests (tests/conftest.py, tests/nvram/CC2652R-ZStack4.formed.json,
  a real CC2652R's NV dump), zigpy/zigpy-znp e3c9fcf.

Pure data and arithmetic: no asyncio, no zigpy-znp command objects.
"""

from __future__ import annotations

import dataclasses
import enum

#: Koenkk's build id (patch: preinclude.h CODE_REVISION_NUMBER at c80b77f)
CODE_REVISION = 20230507


def version_payload(code_revision: int = CODE_REVISION) -> bytes:
    """SYS.Version's SRSP data: MTVersionString, 9 bytes.

    SDK mt_sys.c MT_SysVersion sends ``sizeof(MTVersionString)``; mt_version.c has five
    bytes (TransportRev 2, ProductId 0, 2.7.1) and the patch sets ProductId 1 and
    appends CODE_REVISION_NUMBER little-endian. No BootloaderBuildType and no
    BootloaderRevision: zigpy-znp reads both as None."""
    return bytes([2, 1, 2, 7, 1]) + code_revision.to_bytes(4, "little")


#: SYS.Ping capabilities. MT_SysPing ORs MT_CAP_* macros that are 0 unless the build
#: defines MT_<subsystem>_FUNC; the ZNP build gives SYS|AF|ZDO|UTIL|GP|APP_CNF = 1625
#: (log: zigbeefordomoticz/Domoticz-Zigbee#1142, "SYS.Ping.Rsp(Capabilities=
#: <MTCapabilities.APP_CNF|GP|UTIL|ZDO|AF|SYS: 1625>)" from a CC2652; fixture:
#: conftest.py BaseZStack3Device.ping_replier). No MAC, NWK, SAPI, DEBUG, APP or ZOAD:
#: zigpy-znp's SAPI fallback for unreadable NV items is therefore not available.
CAPABILITIES = 0x0001 | 0x0008 | 0x0010 | 0x0040 | 0x0200 | 0x0400

#: SYS.ResetInd: "reason deprecated on cc26xx platform" (SDK mt_sys.c MT_SysResetInd
#: sends 0, then the first five MTVersionString bytes); a watchdog reset reads as 0 too.
RESET_REASON = 0


class StackTuneOp(enum.IntEnum):
    """SDK mt_sys.c MT_SysStackTune's operations (STK_TX_PWR, STK_RX_ON_IDLE)."""

    TX_POWER = 0
    RX_ON_IDLE = 1


Z_SUCCESS = 0x00
Z_INVALID_PARAMETER = 0x02  # ZInvalidParameter
MAC_INVALID_PARAMETER = 0xE8

#: The CC2652R's TX power range in dBm (TI's RF_TxPowerTable for the CC26x2R:
#: -20 ... +5 dBm); the MAC refuses anything else with MAC_INVALID_PARAMETER.
TX_POWER_RANGE = (-20, 5)


def tx_power_status(dbm: int) -> int:
    """ZMacSetReq(ZMacPhyTransmitPowerSigned): the MAC's status for a power in dBm
    (SYS.SetTxPower and SYS.StackTune TX_POWER both end here in the SDK)."""
    if dbm > 127:  # the byte is an int8_t on the wire
        dbm -= 256
    low, high = TX_POWER_RANGE
    return Z_SUCCESS if low <= dbm <= high else MAC_INVALID_PARAMETER


@dataclasses.dataclass
class StackTuneState:
    """What MT_SysStackTune changes: the MAC's TX power and RxOnWhenIdle."""

    tx_power: int = 0
    rx_on_idle: bool = True  # a coordinator's receiver is on

    def tune(self, operation: int, value: int) -> int:
        """The one-byte SRSP value MT_SysStackTune returns (SDK mt_sys.c)."""
        if operation == StackTuneOp.TX_POWER:
            status = tx_power_status(value)
            if status == Z_SUCCESS:
                self.tx_power = value - 256 if value > 127 else value
            return status
        if operation == StackTuneOp.RX_ON_IDLE:
            if value not in (0, 1):  # neither TRUE nor FALSE: ZMacGetReq(ZMacRxOnIdle)
                return int(self.rx_on_idle)
            self.rx_on_idle = bool(value)
            return Z_SUCCESS
        return Z_INVALID_PARAMETER


# ------------------------------------------------------------------- payload limits --
# SDK stack/af/af.c AF_DataRequest: ``if (len > afDataReqMTU(&mtu))`` and no
# apsfSendFragmented -> ``stat = afStatus_INVALID_PARAMETER``, the SRSP of
# AF.DataRequest/DataRequestExt/DataRequestSrcRtg; nothing goes on the air and no
# AF.DataConfirm follows. afDataReqMTU = APSDE_DataReqMTU(aps) - AF_HDR_V1_1_MAX_LEN (0);
# APSDE_DataReqMTU is in TI's binary stack library, so its arithmetic here is the
# frame format's (the same that gives EmberZNet's 82): a 127-byte PSDU less MAC
# header and FCS (11), NWK header (8), NWK security (aux header 14 + MIC 4), APS
# header (8); APS security (``mtu.aps.secure``, ENABLE_SECURITY) costs its aux header
# (5) and MIC (4); a source-routed frame carries a source route subframe in its NWK
# header: relay count, relay index and 2 bytes per relay.
AF_INVALID_PARAMETER = Z_INVALID_PARAMETER  # afStatus_INVALID_PARAMETER == ZInvalidParameter
MAX_APS_PAYLOAD = 127 - 11 - 8 - (14 + 4) - 8  # 82
APS_SECURITY_OVERHEAD = 5 + 4


def af_mtu(*, aps_secure: bool, relays: int = 0) -> int:
    """The largest AF payload Z-Stack sends in one frame to this destination."""
    mtu = MAX_APS_PAYLOAD
    if aps_secure:
        mtu -= APS_SECURITY_OVERHEAD
    if relays:
        mtu -= 2 + 2 * relays
    return mtu


# -------------------------------------------------------------- AF.IncomingMsg fields --
#: afBuildMSGIncoming never copies the APS counter into ``cmd.TransSeqNumber``: every
#: AF.IncomingMsg from a real coordinator has TSN=0 (log: zigpy/zigpy-znp#81, CC2538,
#: and Domoticz-Zigbee#1142, CC2652: "TSN=0" on every frame).
INCOMING_TSN = 0

#: TimeStamp is the MAC receive timestamp in backoff periods (320 us) since the chip
#: booted (log: zigpy/zigpy-znp#81, TimeStamp 653080 -> 665244 over ~4 s, ~3125 s^-1).
BACKOFF_PERIOD = 320e-6

#: Radius a Z-Stack/HA device sends with (DEF_NWK_RADIUS = 2 * MAX_DEPTH 15); each hop,
#: the last included, takes one off (log: zigpy/zigpy-znp#81, a neighbour's frames
#: arrive with MsgResultRadius=29, relayed ones with less; MacSrcAddr is the last hop).
DEVICE_RADIUS = 30


def incoming_timestamp(seconds_since_boot: float) -> int:
    return int(seconds_since_boot / BACKOFF_PERIOD) & 0xFFFFFFFF


def result_radius(sent_radius: int | None, relays: int) -> int:
    radius = sent_radius if sent_radius else DEVICE_RADIUS
    return max(radius - (relays + 1), 0)
