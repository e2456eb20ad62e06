"""An emulated Silicon Labs EmberZNet NCP (ASH + EZSP) for unmodified bellows.

The simulated HAN (``radios.sim.han.SimHan``) sits behind it as the air. Entry points::

    server = await serve_ezsp("127.0.0.1", 0, han)          # server.path: socket://...
    path, server = await serve_ezsp_pty(han)                 # /dev/pts/N (or symlink=...)
    async with running_ezsp_emulator(specs, link) as (path, server): ...

Give ``path`` to bellows as the device path. Faults: ``server.faults`` (:class:`Faults`),
or ``faults="fail-deliveries=3,reset-after-frames=200,drop-after-frames=300"``.

EZSP version: the NCP speaks **EZSPv13** (EmberZNet 7.4.4, what most lab dongles ship, e.g. a
ZBT-1/SkyConnect as Home Assistant's flasher leaves it) by default, or 14 (8.0.2) and 16-19
(``protocol_version=``, ``han-ota emulate ezsp --ezsp-version``). 14 and later share
every layout emulated here (sl_Status throughout, the status first in responses); 13
carries EmberStatus/EzspStatus codes (``status.py``) and the older messaging layouts
(``layouts.py``), and bellows runs its v13 code for it. bellows opens with a
legacy-format ``version(4)``; the NCP answers its version and bellows re-negotiates in
the extended frame format, as with a real dongle.

ASH is the firmware's (simplicity_sdk platform/service/legacy_ncp_ash/src/ash-ncp.c): a
window of 5, Cancel before the RSTACK or ERROR of a start, ERROR to every frame until
the host's RST, a reboot of ``reboot_delay`` (1 s, ASH_REBOOT_DELAY) before each RSTACK,
and a watchdog reset signalled as Cancel + ERROR(0x03), never an unsolicited RSTACK.

Emulated commands (all others get ``invalidCommand`` and a WARNING, and are listed in
``server.ncp.unhandled``): version, nop, echo, callback, getLibraryStatus, getValue,
setValue, getConfigurationValue, setConfigurationValue, setPolicy, getPolicy,
customFrame (no XNCP), getMfgToken, getEui64, getNodeId, setManufacturerCode,
setRadioPower, readCounters, readAndClearCounters, maximumPayloadLength, addEndpoint,
getMulticastTableEntry, setMulticastTableEntry, networkState, networkInit,
getNetworkParameters, setInitialSecurityState, formNetwork, leaveNetwork,
tokenFactoryReset, clearKeyTable, gpSinkTableClearAll, gpClearProxyTable,
setConcentrator, setSourceRouteDiscoveryMode, permitJoining, startScan (energy/active),
getCurrentSecurityState, exportKey, getNetworkKeyInfo, importTransientKey,
importLinkKey, exportLinkKeyByIndex, findKeyTableEntry, eraseKeyTableEntry,
getTokenData/setTokenData (NV3 node data, trust center, network management),
getChildData, setChildData, lookupNodeIdByEui64, lookupEui64ByNodeId,
getExtendedTimeout, setExtendedTimeout, replaceAddressTableEntry, getAddressTableInfo
(14+) or getAddressTableRemoteNodeId/Eui64 (13), removeDevice, sendUnicast,
sendBroadcast, sendMulticast.
Callbacks: stackStatusHandler, messageSentHandler, incomingMessageHandler,
trustCenterJoinHandler, childJoinHandler, energyScanResultHandler, scanCompleteHandler,
incomingRouteRecordHandler (a source route learnt: ``EmberNcp.learn_source_route``).
Unicasts longer than the stack takes (82, less 9 APS-encrypted, less 2 + 2 per relay)
are refused with MESSAGE_TOO_LONG (``EmberNcp.max_payload``).
On a timed HAN link (``--link realistic``) a lost unicast's messageSentHandler comes
after the seconds EmberZNet's APS retries and route discoveries take
(``failure_timing.FailureTiming``: 3 x 1.6 s + 2 x 0.76 s at scale 1), not at once.
The stack answers the ZDO requests EmberZNet answers itself (Node/Power/Simple/Active EP
descriptors, Match_Desc, NWK/IEEE address of the coordinator), see
``radios/coordinator_zdo.py`` (``EMBERZNET``).
"""

from .ash import RESET_POWER_ON, RESET_SOFTWARE, RESET_WATCHDOG, AshConfig
from .failure_timing import FailureTiming, TimingSpecError
from .faults import Faults
from .frames import SUPPORTED_VERSIONS
from .ncp import DEFAULT_PROTOCOL_VERSION, EmberNcp, HanStart, JoinedDevice, NetworkSettings
from .server import (
    EzspServer,
    PtyEzspServer,
    TcpEzspServer,
    running_ezsp_emulator,
    serve_ezsp,
    serve_ezsp_pty,
)

__all__ = [
    "AshConfig",
    "DEFAULT_PROTOCOL_VERSION",
    "RESET_POWER_ON",
    "RESET_SOFTWARE",
    "RESET_WATCHDOG",
    "SUPPORTED_VERSIONS",
    "EmberNcp",
    "EzspServer",
    "FailureTiming",
    "Faults",
    "HanStart",
    "TimingSpecError",
    "JoinedDevice",
    "NetworkSettings",
    "PtyEzspServer",
    "TcpEzspServer",
    "running_ezsp_emulator",
    "serve_ezsp",
    "serve_ezsp_pty",
]
