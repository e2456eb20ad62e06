"""An emulated Silicon Labs EmberZNet NCP (ASH + EZSP) for unmodified bellows.

The simulated HAN (``radios.sim.han.SimHan``) sits behind it as the air. Entry points::

    server = await serve_ezsp("127.0.0.1", 0, han)          # server.path: socket://...
    path, server = await serve_ezsp_pty(han)                 # /dev/pts/N (or symlink=...)
    async with running_ezsp_emulator(specs, link) as (path, server): ...

Give ``path`` to bellows as the device path. Faults: ``server.faults`` (:class:`Faults`),
or ``faults="fail-deliveries=3,reset-after-frames=200,drop-after-frames=300"``.

EZSP version: the NCP speaks **EZSPv14** (EmberZNet 8.0) by default; 16-19 work too
(``protocol_version=``), they share every layout emulated here. Why 14: it is the first
version where bellows needs no status translation (sl_status_t throughout, the status
first in responses), it has the modern ``messageSentHandler``/``incomingMessageHandler``
layouts bellows reads natively, the security-manager key export (``exportKey``,
``getNetworkKeyInfo``) bellows uses since v13, and NV3 token access; v13 (EmberZNet 7.4)
would need EmberStatus and older layouts for many commands and is not emulated.
bellows opens with a legacy-format ``version(4)``; the NCP answers 14 and bellows
re-negotiates in the extended frame format, as with a real dongle.

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
getExtendedTimeout, setExtendedTimeout, replaceAddressTableEntry, getAddressTableInfo,
removeDevice, sendUnicast, sendBroadcast, sendMulticast.
Callbacks: stackStatusHandler, messageSentHandler, incomingMessageHandler,
trustCenterJoinHandler, childJoinHandler, energyScanResultHandler, scanCompleteHandler.
The stack answers the ZDO requests EmberZNet answers itself (Node/Power/Simple/Active EP
descriptors, Match_Desc, NWK/IEEE address of the coordinator), see
``radios/coordinator_zdo.py`` (``EMBERZNET``).
"""

from .ash import RESET_POWER_ON, RESET_SOFTWARE, RESET_WATCHDOG
from .faults import Faults
from .frames import SUPPORTED_VERSIONS
from .ncp import EmberNcp, HanStart, JoinedDevice, NetworkSettings
from .server import (
    EzspServer,
    PtyEzspServer,
    TcpEzspServer,
    running_ezsp_emulator,
    serve_ezsp,
    serve_ezsp_pty,
)

__all__ = [
    "RESET_POWER_ON",
    "RESET_SOFTWARE",
    "RESET_WATCHDOG",
    "SUPPORTED_VERSIONS",
    "EmberNcp",
    "EzspServer",
    "Faults",
    "HanStart",
    "JoinedDevice",
    "NetworkSettings",
    "PtyEzspServer",
    "TcpEzspServer",
    "running_ezsp_emulator",
    "serve_ezsp",
    "serve_ezsp_pty",
]
