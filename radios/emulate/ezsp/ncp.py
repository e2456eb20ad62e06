"""The emulated EmberZNet NCP: its state, its EZSP command handlers, and the HAN behind it.

State comes in two lifetimes, as on a real dongle:

* :class:`Nvram` survives resets and reconnections: the EUI64, the formed network
  (channel, PAN IDs, keys, frame counters), the devices that joined, the key table.
* everything else (negotiated EZSP version, whether the network is up, registered
  endpoints, configuration and values, policies, multicast table, counters,
  in-flight sends) is lost by :meth:`EmberNcp.power_cycle`, i.e. by an ASH RST from
  the host or an injected reset.

Command handlers are ``_cmd_<name>`` methods taking the command's parameters by name and
returning its response fields by name; names follow bellows' EZSPv14+ tables, which is
the NCP's own (see ``frames.SUPPORTED_VERSIONS``); for EZSP 13 the frame codec renames
fields (``layouts.py``) and turns ``sl_Status`` into EmberStatus/EzspStatus codes
(``status.py``). A command without a handler is answered with EZSP ``invalidCommand``
as the firmware encodes it (one EzspStatus byte) and logged at WARNING, so gaps show.

The HAN (``radios.sim.han.SimHan`` or anything with its interface) is the air:
``sendUnicast`` becomes ``await han.send(packet)`` in a task, then ``messageSentHandler``;
packets the HAN hands us become ``incomingMessageHandler``; joins become
``trustCenterJoinHandler`` (and ``childJoinHandler`` for end devices).
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import enum
import json
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import bellows.types as t
import zigpy.types as zt

from radios.coordinator_zdo import EMBERZNET, Coordinator, Endpoint, ZdoFrame, answer as zdo_answer
from . import layouts
from .faults import Faults
from .fragments import FRAGMENTATION_OVERHEAD, NcpFragments
from .failure_timing import FailureTiming
from .frames import (
    SUPPORTED_VERSIONS,
    EzspFrameError,
    FrameFormat,
    HostFrame,
    build_ncp_frame,
    command_table,
    decode_params,
    encode_fields,
    parse_host_frame,
)

LOGGER = logging.getLogger(__name__)

DEFAULT_EUI64 = zt.EUI64.convert("00:0b:57:ff:fe:4a:10:01")  # Silicon Labs OUI
DEFAULT_MANUFACTURER_CODE = 0x1002  # Ember, what an EmberZNet sample NCP reports
STACK_TYPE_ZIGBEE_PRO = 0x02
COORDINATOR_NWK = 0x0000
# The EZSP protocol version a new emulator speaks: what most lab dongles ship today.
# EmberZNet 7.4.x (EZSP 13) is the firmware Home Assistant's ZBT-1/SkyConnect web
# flasher installs (Koenkk/zigbee2mqtt#22635: a freshly flashed SkyConnect answers 13),
# while 8.0.x (14) was judged broken by bellows' own maintainer when v14 support landed
# (zigpy/bellows#631) and shipped on few dongles.
DEFAULT_PROTOCOL_VERSION = 13
# emberMaximumApsPayloadLength() for a NWK-secured unicast without source route
# What the stack accepts for one APS frame (emberAfMaximumApsPayloadLength, Ember AF
# util.c, with EMBER_AF_MAXIMUM_APS_PAYLOAD_LENGTH 82 under NWK security and these
# overheads from af.h / config.h): less 9 for APS encryption (auxiliary header 5 + MIC
# 4), less 2 + 2 per relay when the frame carries a source route. A longer payload is
# refused at once with MESSAGE_TOO_LONG (EMBER_MESSAGE_TOO_LONG 0x74 on EZSP 13).
MAX_APS_PAYLOAD = 82
APS_ENCRYPTION_OVERHEAD = 9  # EMBER_AF_APS_ENCRYPTION_OVERHEAD
SOURCE_ROUTE_OVERHEAD = 2  # EMBER_AF_NWK_SOURCE_ROUTE_OVERHEAD: relay count + relay index
SOURCE_ROUTE_PER_RELAY = 2  # EMBER_AF_NWK_SOURCE_ROUTE_PER_RELAY_ADDRESS_OVERHEAD
NULL_NODE_ID = 0xFFFF
BROADCAST_ADDRESSES = frozenset({0xFFFF, 0xFFFD, 0xFFFC, 0xFFFB})
EMPTY_EUI64 = zt.EUI64.convert("00:00:00:00:00:00:00:00")
WILDCARD_EUI64 = zt.EUI64.convert("ff:ff:ff:ff:ff:ff:ff:ff")
WELL_KNOWN_TCLK = t.KeyData(b"ZigBeeAlliance09")

# (major, minor, patch, special, build) of the EmberZNet release each version belongs to.
# 13: 7.4.4.0 build 0, as Nabu Casa's SkyConnect/ZBT-1 firmware reports it (bellows
# special-cases exactly "7.4.4.0 build 0" in ezsp/__init__.py get_xncp_features).
STACK_RELEASES = {
    13: (7, 4, 4, 0, 0),
    14: (8, 0, 2, 0, 401),
    16: (8, 1, 0, 0, 200),
    17: (8, 2, 0, 0, 100),
    18: (8, 2, 2, 0, 100),
    19: (9, 0, 0, 0, 100),
}

DEFAULT_CONFIG: dict[str, int] = {
    "CONFIG_PACKET_BUFFER_COUNT": 75,
    "CONFIG_NEIGHBOR_TABLE_SIZE": 16,
    "CONFIG_APS_UNICAST_MESSAGE_COUNT": 10,
    "CONFIG_BINDING_TABLE_SIZE": 32,
    "CONFIG_ADDRESS_TABLE_SIZE": 8,
    "CONFIG_MULTICAST_TABLE_SIZE": 8,
    "CONFIG_ROUTE_TABLE_SIZE": 16,
    "CONFIG_DISCOVERY_TABLE_SIZE": 8,
    "CONFIG_BROADCAST_ALARM_DATA_SIZE": 0,
    "CONFIG_UNICAST_ALARM_DATA_SIZE": 0,
    "CONFIG_STACK_PROFILE": 2,
    "CONFIG_SECURITY_LEVEL": 5,
    "CONFIG_MAX_HOPS": 30,
    "CONFIG_MAX_END_DEVICE_CHILDREN": 6,
    "CONFIG_INDIRECT_TRANSMISSION_TIMEOUT": 7680,
    "CONFIG_END_DEVICE_POLL_TIMEOUT": 8,
    "CONFIG_TX_POWER_MODE": 0,
    "CONFIG_DISABLE_RELAY": 0,
    "CONFIG_TRUST_CENTER_ADDRESS_CACHE_SIZE": 0,
    "CONFIG_SOURCE_ROUTE_TABLE_SIZE": 7,
    "CONFIG_FRAGMENT_WINDOW_SIZE": 1,
    "CONFIG_FRAGMENT_DELAY_MS": 0,
    # The SDK's own NCP image (ncp-uart-hw.slcp, gecko_sdk and simplicity_sdk
    # protocol/zigbee/app/ncp/sample-app/ncp-uart-hw) sets EMBER_KEY_TABLE_SIZE /
    # SL_ZIGBEE_KEY_TABLE_SIZE to 12; the zigbee_security_link_keys component's own
    # default is 6 and the stack's fallback without that component 0
    # (stack/config/ember-configuration-defaults.h).
    "CONFIG_KEY_TABLE_SIZE": 12,
    "CONFIG_APS_ACK_TIMEOUT": 1600,
    "CONFIG_ACTIVE_SCAN_DURATION": 3,
    "CONFIG_END_DEVICE_BIND_TIMEOUT": 60,
    "CONFIG_PAN_ID_CONFLICT_REPORT_THRESHOLD": 1,
    "CONFIG_REQUEST_KEY_TIMEOUT": 0,
    "CONFIG_CERTIFICATE_TABLE_SIZE": 0,
    "CONFIG_APPLICATION_ZDO_FLAGS": 0,
    "CONFIG_BROADCAST_TABLE_SIZE": 15,
    "CONFIG_MAC_FILTER_TABLE_SIZE": 0,
    "CONFIG_SUPPORTED_NETWORKS": 1,
    "CONFIG_SEND_MULTICASTS_TO_SLEEPY_ADDRESS": 0,
    "CONFIG_ZLL_GROUP_ADDRESSES": 0,
    "CONFIG_MTORR_FLOW_CONTROL": 1,
    "CONFIG_RETRY_QUEUE_SIZE": 16,
    "CONFIG_NEW_BROADCAST_ENTRY_THRESHOLD": 10,
    "CONFIG_TRANSIENT_KEY_TIMEOUT_S": 300,
    "CONFIG_BROADCAST_MIN_ACKS_NEEDED": 1,
    "CONFIG_TC_REJOINS_USING_WELL_KNOWN_KEY_TIMEOUT_S": 300,
    "CONFIG_ASSUME_TC_CONCENTRATOR_TYPE": 0,
    "CONFIG_GP_PROXY_TABLE_SIZE": 5,
    "EZSP_CONFIG_GP_SINK_TABLE_SIZE": 5,
}

APP_RECEIVES_SUPPORTED_ZDO_REQUESTS = 0x01
INVALID_COMMAND_FRAME_ID = 0x0058


class HanLike(Protocol):
    """What the emulator needs from ``radios.sim.han.SimHan``."""

    def attach(self, *, uplink: Callable[[zt.ZigbeePacket], None], on_join: Callable[[zt.EUI64, zt.NWK], None]) -> None: ...
    async def start(self) -> None: ...
    async def send(self, packet: zt.ZigbeePacket) -> Any: ...
    async def stop(self) -> None: ...


class HanStart(enum.Enum):
    """When the emulator powers up the HAN's devices (``await han.start()``)."""

    # The first time the host opens permit-joining on an up network; or when the network
    # comes up if NVRAM says HAN devices joined it before (an emulator restarted on the
    # same nvram_path: those devices are commissioned and just power up)
    PERMIT = "permit"
    NETWORK_UP = "network-up"  # the first time the network comes up
    MANUAL = "manual"  # never by itself: call EmberNcp.start_han()


@dataclasses.dataclass
class NetworkSettings:
    """A formed network, as the NCP keeps it in NVRAM."""

    channel: int = 15
    pan_id: int = 0x1A62
    extended_pan_id: zt.ExtendedPanId = dataclasses.field(
        default_factory=lambda: zt.ExtendedPanId(os.urandom(8))
    )
    network_key: t.KeyData = dataclasses.field(default_factory=lambda: t.KeyData(os.urandom(16)))
    network_key_seq: int = 0
    tc_link_key: t.KeyData = dataclasses.field(default_factory=lambda: WELL_KNOWN_TCLK)
    hashed_tclk: bool = False
    tc_eui64: zt.EUI64 | None = None  # None: the NCP's own EUI64
    tx_power: int = 8
    nwk_update_id: int = 0
    nwk_manager_id: int = COORDINATOR_NWK
    channel_mask: int | None = None  # None: just the channel
    nwk_frame_counter: int = 0
    aps_frame_counter: int = 0

    @property
    def channels(self) -> t.Channels:
        if self.channel_mask is not None:
            return t.Channels(self.channel_mask)
        return t.Channels.from_channel_list([self.channel])


@dataclasses.dataclass
class JoinedDevice:
    ieee: zt.EUI64
    nwk: int
    node_type: t.EmberNodeType = t.EmberNodeType.ROUTER


@dataclasses.dataclass
class Nvram:
    eui64: zt.EUI64 = dataclasses.field(default_factory=lambda: DEFAULT_EUI64)
    network: NetworkSettings | None = None
    devices: dict[zt.EUI64, JoinedDevice] = dataclasses.field(default_factory=dict)
    key_table: dict[int, tuple[zt.EUI64, t.KeyData]] = dataclasses.field(default_factory=dict)
    mfg_string: bytes = b"han-ota emulator"
    mfg_board_name: bytes = b"EZSP emulator"
    boot_counter: int = 0

    def to_json(self) -> dict[str, Any]:
        net = self.network
        return {
            "eui64": str(self.eui64),
            "boot_counter": self.boot_counter,
            "network": None if net is None else {
                "channel": net.channel,
                "pan_id": net.pan_id,
                "extended_pan_id": str(zt.ExtendedPanId(net.extended_pan_id)),
                "network_key": bytes(net.network_key).hex(),
                "network_key_seq": net.network_key_seq,
                "tc_link_key": bytes(net.tc_link_key).hex(),
                "hashed_tclk": net.hashed_tclk,
                "tc_eui64": None if net.tc_eui64 is None else str(net.tc_eui64),
                "tx_power": net.tx_power,
                "nwk_update_id": net.nwk_update_id,
                "nwk_manager_id": net.nwk_manager_id,
                "channel_mask": net.channel_mask,
                "nwk_frame_counter": net.nwk_frame_counter,
                "aps_frame_counter": net.aps_frame_counter,
            },
            "devices": [
                {"ieee": str(d.ieee), "nwk": d.nwk, "node_type": d.node_type.name}
                for d in self.devices.values()
            ],
            "key_table": [
                {"index": i, "eui64": str(eui64), "key": bytes(key).hex()}
                for i, (eui64, key) in sorted(self.key_table.items())
            ],
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Nvram:
        nvram = cls(eui64=zt.EUI64.convert(data["eui64"]), boot_counter=data.get("boot_counter", 0))
        net = data.get("network")
        if net is not None:
            nvram.network = NetworkSettings(
                channel=net["channel"],
                pan_id=net["pan_id"],
                extended_pan_id=zt.ExtendedPanId.convert(net["extended_pan_id"]),
                network_key=t.KeyData(bytes.fromhex(net["network_key"])),
                network_key_seq=net["network_key_seq"],
                tc_link_key=t.KeyData(bytes.fromhex(net["tc_link_key"])),
                hashed_tclk=net["hashed_tclk"],
                tc_eui64=None if net["tc_eui64"] is None else zt.EUI64.convert(net["tc_eui64"]),
                tx_power=net["tx_power"],
                nwk_update_id=net["nwk_update_id"],
                nwk_manager_id=net["nwk_manager_id"],
                channel_mask=net["channel_mask"],
                nwk_frame_counter=net["nwk_frame_counter"],
                aps_frame_counter=net["aps_frame_counter"],
            )
        for dev in data.get("devices", []):
            ieee = zt.EUI64.convert(dev["ieee"])
            nvram.devices[ieee] = JoinedDevice(ieee, dev["nwk"], t.EmberNodeType[dev["node_type"]])
        for entry in data.get("key_table", []):
            nvram.key_table[entry["index"]] = (
                zt.EUI64.convert(entry["eui64"]), t.KeyData(bytes.fromhex(entry["key"])))
        return nvram


class EmberNcp:
    """One emulated NCP; the server attaches at most one host connection at a time."""

    def __init__(
        self,
        han: HanLike | None = None,
        *,
        eui64: zt.EUI64 | str | None = None,
        network: NetworkSettings | None = None,
        protocol_version: int = DEFAULT_PROTOCOL_VERSION,
        faults: Faults | None = None,
        han_start: HanStart | str = HanStart.PERMIT,
        stack_zdo: bool = True,
        delivery_delay: float = 0.0,
        nvram_path: str | os.PathLike | None = None,
        failure_timing: FailureTiming | None = None,
    ) -> None:
        if protocol_version not in SUPPORTED_VERSIONS:
            raise ValueError(
                f"EZSP protocol version {protocol_version} not emulated; pick one of"
                f" {SUPPORTED_VERSIONS}"
            )
        self.version = protocol_version
        self.commands = command_table(protocol_version)
        # NVRAM: from nvram_path if that file exists (eui64/network then only apply to a
        # new file), else fresh; written back to nvram_path whenever it changes
        self.nvram_path = Path(nvram_path) if nvram_path is not None else None
        if self.nvram_path is not None and self.nvram_path.exists():
            self.nvram = Nvram.from_json(json.loads(self.nvram_path.read_text()))
            LOGGER.info("EZSP NCP: NVRAM loaded from %s", self.nvram_path)
        else:
            self.nvram = Nvram()
            if eui64 is not None:
                self.nvram.eui64 = zt.EUI64.convert(eui64) if isinstance(eui64, str) else eui64
            self.nvram.network = network
        self._nvram_written: str | None = None
        self._persist()
        self.faults = faults if faults is not None else Faults()
        self.han = han
        self.han_start = HanStart(han_start)
        self.han_started = False
        self.stack_zdo = stack_zdo
        self.delivery_delay = delivery_delay
        # When a lost unicast is reported (failure_timing.py): EmberZNet's seconds on a
        # timed HAN link (--link realistic), at once on an instant one, unless given.
        self.failure_timing = failure_timing if failure_timing is not None else FailureTiming.for_link(getattr(han, "link", None))
        #: Unicasts reported lost: (destination, seconds from sendUnicast to the report).
        self.failed_unicasts: list[tuple[int, float]] = []
        # Commands answered with invalidCommand: not emulated (gaps) / refused by the
        # protocol state (e.g. a command before the version was negotiated)
        self.unhandled: list[str] = []
        self.rejected: list[str] = []
        # Recent command and callback names, for tests and post-mortems
        self.command_log: collections.deque[str] = collections.deque(maxlen=10_000)
        self.callback_log: collections.deque[str] = collections.deque(maxlen=10_000)
        self._sink: Callable[[bytes], None] | None = None
        self._tasks: set[asyncio.Task] = set()  # in-flight sends: lost on reset
        self._background: set[asyncio.Task] = set()  # e.g. starting the HAN: survives resets
        self._han_task: asyncio.Task | None = None
        self._boot()
        if han is not None:
            if hasattr(han, "send_fragment_window"):
                # EmberZNet hands fragmented uplinks to the host block by block (fragments.py)
                han.attach(uplink=self._uplink, on_join=self._on_join, on_fragment=self._on_fragment)
            else:
                han.attach(uplink=self._uplink, on_join=self._on_join)
            self._publish_key_table()  # a key table loaded from nvram_path

    # ==================================================================== lifecycle
    def _boot(self) -> None:
        """Volatile state of a freshly started NCP."""
        self.negotiated: int | None = None
        self.network_up = False
        self.stack_initialised = False  # configuration is frozen once the stack runs
        self.endpoints: dict[int, Endpoint] = {}
        self.config: dict[str, int] = dict(DEFAULT_CONFIG)
        self.fragments = NcpFragments(self)  # the host's fragmented unicasts in flight
        self.values: dict[int, bytes] = {
            t.EzspValueId.VALUE_FORCE_TX_AFTER_FAILED_CCA_ATTEMPTS: b"\x00",
        }
        self.policies: dict[int, int] = {}
        self.permit_until = 0.0
        self.initial_security: t.EmberInitialSecurityState | None = None
        self.multicast: dict[int, t.EmberMulticastTableEntry] = {}
        self.address_table: dict[int, tuple[int, zt.EUI64, bool]] = {}
        self.extended_timeout: set[zt.EUI64] = set()
        self.transient_keys: dict[zt.EUI64, t.KeyData] = {}
        self.counters = [0] * len(t.EmberCounterType)
        self.manufacturer_code = DEFAULT_MANUFACTURER_CODE
        self.radio_power: int | None = None
        self.concentrator = False
        # The source route table (RAM, CONFIG_SOURCE_ROUTE_TABLE_SIZE): destination ->
        # relays nearest the destination first, as Route Records carry them; lost at reset
        self.source_routes: dict[int, tuple[int, ...]] = {}
        self._routes_from_han: set[int] = set()  # source routes the HAN's hops gave, not a test
        #: Unicasts refused as longer than max_payload: (destination, length, limit).
        self.refused_too_long: list[tuple[int, int, int]] = []
        self.aps_counter = int.from_bytes(os.urandom(1), "little")
        self.boot_time = time.monotonic()
        self._last_seq = 0
        # Frame counters the host set for the next formNetwork (setValue before forming)
        self._pending_counters: dict[int, int] = {}
        for task in self._tasks:
            task.cancel()
        self._tasks.clear()

    def power_cycle(self) -> None:
        """The NCP restarts: volatile state is gone, NVRAM stays."""
        LOGGER.info("EZSP NCP: reset (network %s)", "up -> down" if self.network_up else "down")
        self.nvram.boot_counter += 1
        self._boot()
        self._persist()

    def _persist(self) -> None:
        """Write the NVRAM file if it changed (no-op without ``nvram_path``)."""
        if self.nvram_path is None:
            return
        text = json.dumps(self.nvram.to_json(), indent=1, sort_keys=True)
        if text == self._nvram_written:
            return
        tmp = self.nvram_path.with_name(self.nvram_path.name + ".tmp")
        tmp.write_text(text)
        os.replace(tmp, self.nvram_path)
        self._nvram_written = text

    def attach(self, sink: Callable[[bytes], None]) -> None:
        """A host connected: EZSP frames for it go to ``sink``."""
        self._sink = sink

    def detach(self, sink: Callable[[bytes], None] | None = None) -> None:
        if sink is None or self._sink == sink:
            self._sink = None

    @property
    def host_attached(self) -> bool:
        return self._sink is not None

    async def start_han(self) -> None:
        """Power up the HAN's devices (they join and announce)."""
        if self.han is None or self.han_started:
            return
        self.han_started = True
        LOGGER.info("EZSP NCP: starting the simulated HAN")
        await self.han.start()

    def _maybe_start_han(self, trigger: HanStart) -> None:
        if self.han is None or self.han_started:
            return
        commissioned = trigger is HanStart.NETWORK_UP and self.han_start is HanStart.PERMIT and any(
            ieee in self.nvram.devices for ieee in getattr(self.han, "devices", {})
        )
        if self.han_start is not trigger and not commissioned:
            return
        self._han_task = self._spawn(self.start_han(), "start HAN", volatile=False)

    async def close(self) -> None:
        tasks = list(self._tasks) + list(self._background)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        self._tasks.clear()
        self._background.clear()
        self._sink = None

    def _spawn(self, coro, what: str, *, volatile: bool = True) -> asyncio.Task:
        task = asyncio.get_running_loop().create_task(coro, name=f"ezsp-ncp: {what}")
        owner = self._tasks if volatile else self._background
        owner.add(task)

        def done(task: asyncio.Task) -> None:
            owner.discard(task)
            if not task.cancelled() and task.exception() is not None:
                LOGGER.error("EZSP NCP: %s failed", what, exc_info=task.exception())

        task.add_done_callback(done)
        return task

    # ==================================================================== EZSP I/O
    def handle_frame(self, data: bytes) -> None:
        """One EZSP frame from the host (already de-framed by ASH)."""
        try:
            frame = parse_host_frame(data)
        except EzspFrameError as exc:
            LOGGER.warning("EZSP NCP: unparsable frame: %s", exc)
            return
        self._last_seq = frame.seq
        self.faults.frame_received()

        if frame.fmt is not FrameFormat.EXTENDED:
            if frame.frame_id == 0x00 and frame.params:
                self._version_request(frame)
            else:
                LOGGER.warning(
                    "EZSP NCP: legacy-format frame 0x%02x ignored (this NCP speaks EZSPv%d)",
                    frame.frame_id, self.version,
                )
            return

        cmd = self.commands.by_id.get(frame.frame_id)
        if cmd is None:
            self._invalid_command(frame, f"unknown frame ID 0x{frame.frame_id:04x}", gap=True)
            return
        if cmd.name == "version":
            self._version_request(frame)
            return
        if self.negotiated is None:
            self._invalid_command(frame, f"{cmd.name} before the version was negotiated",
                                  reason=t.EzspStatus.ERROR_VERSION_NOT_SET)
            return
        handler = getattr(self, f"_cmd_{cmd.name}", None)
        if handler is None:
            self._invalid_command(frame, f"{cmd.name} is not emulated", gap=True)
            return
        try:
            params = layouts.handler_params(self.version, cmd.name, decode_params(cmd, frame.params))
        except Exception as exc:  # noqa: BLE001 - a malformed command must not kill the NCP
            LOGGER.warning("EZSP NCP: %s: bad parameters %s: %s", cmd.name, frame.params.hex(), exc)
            # (which EzspStatus the firmware gives short parameters is our guess)
            self._invalid_command(frame, f"{cmd.name}: bad parameters",
                                  reason=t.EzspStatus.ERROR_INVALID_VALUE, gap=True)
            return
        self.command_log.append(cmd.name)
        LOGGER.debug("EZSP NCP: <- %s %s", cmd.name, params)
        try:
            fields = handler(**params)
        except Exception:  # noqa: BLE001 - an emulator bug must not leave the host hanging
            LOGGER.exception("EZSP NCP: %s handler failed on %s", cmd.name, params)
            self._invalid_command(frame, f"{cmd.name}: emulator error", gap=True)
            return
        self._persist()
        LOGGER.debug("EZSP NCP: -> %s %s", cmd.name, fields)
        self._send(build_ncp_frame(frame.seq, frame.fmt, cmd.frame_id, self._encode(cmd, fields)))

    def _send(self, data: bytes) -> None:
        if self._sink is not None:
            self._sink(data)

    def _encode(self, cmd: Any, fields: dict[str, Any]) -> bytes:
        return encode_fields(cmd, layouts.wire_fields(self.version, cmd.name, fields))

    def _invalid_command(self, frame: HostFrame, why: str, *,
                         reason: t.EzspStatus = t.EzspStatus.ERROR_INVALID_FRAME_ID,
                         gap: bool = False) -> None:
        if gap:
            LOGGER.warning("EZSP NCP: NOT EMULATED, answering invalidCommand: %s", why)
            self.unhandled.append(why)
        else:
            LOGGER.info("EZSP NCP: invalidCommand: %s", why)
            self.rejected.append(why)
        # invalidCommand carries one EzspStatus byte in every protocol version, 14+
        # included: Silicon Labs' own host reads exactly that byte (simplicity_sdk
        # protocol/zigbee/app/util/ezsp/ezsp.c, responseReceived), where bellows' v14+
        # table expects a four-byte sl_status_t and cannot parse the frame.
        self._send(build_ncp_frame(frame.seq, FrameFormat.EXTENDED, INVALID_COMMAND_FRAME_ID,
                                   bytes((int(reason),))))

    def callback(self, name: str, **fields: Any) -> bool:
        """Send an asynchronous callback; False if no host could receive it."""
        if self._sink is None or self.negotiated is None:
            LOGGER.debug("EZSP NCP: callback %s dropped, no host session", name)
            return False
        cmd = self.commands[name]
        LOGGER.debug("EZSP NCP: => %s %s", name, fields)
        self.callback_log.append(name)
        self._send(build_ncp_frame(self._last_seq, FrameFormat.EXTENDED, cmd.frame_id,
                                   self._encode(cmd, fields), callback=True))
        return True

    def _version_request(self, frame: HostFrame) -> None:
        desired = frame.params[0]
        major, minor, patch, special, _build = STACK_RELEASES[self.version]
        stack_version = (major << 12) | (minor << 8) | (patch << 4) | special
        if desired == self.version:
            self.negotiated = self.version
        LOGGER.debug("EZSP NCP: version(%d) -> %d%s", desired, self.version,
                     " (negotiated)" if self.negotiated else "")
        payload = bytes((self.version, STACK_TYPE_ZIGBEE_PRO)) + stack_version.to_bytes(2, "little")
        self._send(build_ncp_frame(frame.seq, frame.fmt, 0x0000, payload))

    # ==================================================================== helpers
    @property
    def node_id(self) -> int:
        return COORDINATOR_NWK if self.network_up else 0xFFFE

    def _uptime_ms(self) -> int:
        return int((time.monotonic() - self.boot_time) * 1000) & 0xFFFFFFFF

    def _count(self, counter: t.EmberCounterType, n: int = 1) -> None:
        self.counters[counter] = min(0xFFFF, self.counters[counter] + n)

    def _permit_open(self) -> bool:
        return time.monotonic() < self.permit_until

    def _stack_status(self, status: t.sl_Status) -> None:
        self.callback("stackStatusHandler", status=status)

    def _device_by_nwk(self, nwk: int) -> JoinedDevice | None:
        for dev in self.nvram.devices.values():
            if dev.nwk == nwk:
                return dev
        return None

    def _network_up(self) -> None:
        self.network_up = True
        self.stack_initialised = True
        size = self.config["CONFIG_MULTICAST_TABLE_SIZE"]
        self.multicast = {
            i: t.EmberMulticastTableEntry(multicastId=0, endpoint=0, networkIndex=0)
            for i in range(size)
        }
        # The stack reports NETWORK_UP shortly after the command that started it
        asyncio.get_running_loop().call_soon(self._after_network_up)

    def _after_network_up(self) -> None:
        if not self.network_up:
            return
        self._tell_han_about_network()
        self._stack_status(t.sl_Status.NETWORK_UP)
        self._maybe_start_han(HanStart.NETWORK_UP)

    # ==================================================================== core commands
    def _cmd_nop(self) -> dict:
        return {}

    def _cmd_echo(self, data: bytes) -> dict:
        return {"echo": data}

    def _cmd_callback(self) -> dict:
        # A UART NCP sends callbacks asynchronously; there is never one left to poll
        return {}

    def _cmd_getValue(self, valueId: t.EzspValueId) -> dict:
        vid = t.EzspValueId(valueId)
        if vid == t.EzspValueId.VALUE_VERSION_INFO:
            major, minor, patch, special, build = STACK_RELEASES[self.version]
            value = build.to_bytes(2, "little") + bytes((major, minor, patch, special, 0x00))
        elif vid == t.EzspValueId.VALUE_FREE_BUFFERS:
            free = self.config["CONFIG_PACKET_BUFFER_COUNT"] - len(self._tasks)
            value = bytes((max(0, min(255, free)),))
        elif vid == t.EzspValueId.VALUE_NODE_SHORT_ID:
            value = t.uint16_t(self.node_id).serialize()
        elif vid == t.EzspValueId.VALUE_NWK_FRAME_COUNTER:
            net = self.nvram.network
            value = t.uint32_t(net.nwk_frame_counter if net else 0).serialize()
        elif vid == t.EzspValueId.VALUE_APS_FRAME_COUNTER:
            net = self.nvram.network
            value = t.uint32_t(net.aps_frame_counter if net else 0).serialize()
        elif vid in self.values:
            value = self.values[vid]
        else:
            LOGGER.warning("EZSP NCP: getValue(%s) not emulated", vid.name)
            return {"status": t.sl_Status.INVALID_PARAMETER, "value": b""}
        return {"status": t.sl_Status.OK, "value": value}

    def _cmd_setValue(self, valueId: t.EzspValueId, value: bytes) -> dict:
        vid = t.EzspValueId(valueId)
        if vid in (t.EzspValueId.VALUE_NWK_FRAME_COUNTER, t.EzspValueId.VALUE_APS_FRAME_COUNTER):
            # Frame counters can only be written while not on a network
            if self.network_up:
                return {"status": t.sl_Status.INVALID_STATE}
            counter, _ = t.uint32_t.deserialize(value)
            self._pending_counters[vid] = counter
            return {"status": t.sl_Status.OK}
        if vid in (
            t.EzspValueId.VALUE_FORCE_TX_AFTER_FAILED_CCA_ATTEMPTS,
            t.EzspValueId.VALUE_TRANSIENT_KEY_TIMEOUT_S,
            t.EzspValueId.VALUE_END_DEVICE_KEEP_ALIVE_SUPPORT_MODE,
            t.EzspValueId.VALUE_MAX_NWK_RETRIES,
            t.EzspValueId.VALUE_CCA_THRESHOLD,
        ):
            self.values[vid] = bytes(value)
            return {"status": t.sl_Status.OK}
        if vid == t.EzspValueId.VALUE_CLEAR_COUNTERS:
            self.counters = [0] * len(self.counters)
            return {"status": t.sl_Status.OK}
        LOGGER.warning("EZSP NCP: setValue(%s) not emulated", vid.name)
        return {"status": t.sl_Status.INVALID_PARAMETER}

    def _cmd_getConfigurationValue(self, configId: t.EzspConfigId) -> dict:
        name = t.EzspConfigId(configId).name
        if name not in self.config:
            LOGGER.warning("EZSP NCP: getConfigurationValue(%s) not emulated", name)
            return {"status": t.sl_Status.INVALID_PARAMETER, "value": 0}
        return {"status": t.sl_Status.OK, "value": self.config[name]}

    def _cmd_setConfigurationValue(self, configId: t.EzspConfigId, value: int) -> dict:
        name = t.EzspConfigId(configId).name
        if self.stack_initialised:
            return {"status": t.sl_Status.INVALID_STATE}
        if name not in self.config:
            LOGGER.warning("EZSP NCP: setConfigurationValue(%s) not emulated", name)
            return {"status": t.sl_Status.INVALID_PARAMETER}
        self.config[name] = int(value)
        return {"status": t.sl_Status.OK}

    def _cmd_setPolicy(self, policyId: t.EzspPolicyId, decisionId: int) -> dict:
        self.policies[int(policyId)] = int(decisionId)
        return {"status": t.sl_Status.OK}

    def _cmd_getPolicy(self, policyId: t.EzspPolicyId) -> dict:
        if int(policyId) not in self.policies:
            return {"status": t.sl_Status.INVALID_PARAMETER, "decisionId": 0}
        return {"status": t.sl_Status.OK, "decisionId": self.policies[int(policyId)]}

    def _cmd_customFrame(self, payload: bytes) -> dict:
        # No XNCP extensions in this firmware
        return {"status": t.sl_Status.NOT_SUPPORTED, "reply": b""}

    def _cmd_getMfgToken(self, tokenId: t.EzspMfgTokenId) -> dict:
        tid = t.EzspMfgTokenId(tokenId)
        if tid == t.EzspMfgTokenId.MFG_STRING:
            data = self.nvram.mfg_string.ljust(16, b"\x00")[:16]
        elif tid == t.EzspMfgTokenId.MFG_BOARD_NAME:
            data = self.nvram.mfg_board_name.ljust(16, b"\x00")[:16]
        elif tid == t.EzspMfgTokenId.MFG_CUSTOM_EUI_64:
            data = b"\xff" * 8  # never burnt
        elif tid == t.EzspMfgTokenId.MFG_MANUF_ID:
            data = t.uint16_t(DEFAULT_MANUFACTURER_CODE).serialize()
        else:
            data = b"\xff" * 2
        return {"tokenData": data}

    def _cmd_getEui64(self) -> dict:
        return {"eui64": self.nvram.eui64}

    def _cmd_getNodeId(self) -> dict:
        return {"nodeId": self.node_id}

    def _cmd_setManufacturerCode(self, code: int) -> dict:
        self.manufacturer_code = int(code)
        return {"status": t.sl_Status.OK}

    def _cmd_setRadioPower(self, power: int) -> dict:
        if not -43 <= power <= 20:
            return {"status": t.sl_Status.INVALID_PARAMETER}
        self.radio_power = int(power)
        if self.nvram.network is not None:
            self.nvram.network.tx_power = int(power)
        return {"status": t.sl_Status.OK}

    def _cmd_readCounters(self) -> dict:
        return {"values": [t.uint16_t(v) for v in self.counters]}

    def _cmd_readAndClearCounters(self) -> dict:
        values = [t.uint16_t(v) for v in self.counters]
        self.counters = [0] * len(self.counters)
        return {"values": values}

    def _cmd_maximumPayloadLength(self) -> dict:
        return {"apsLength": MAX_APS_PAYLOAD}

    def _cmd_getLibraryStatus(self, libraryId: int) -> dict:
        return {"status": 0x01}  # present

    # ==================================================================== endpoints
    def _cmd_addEndpoint(
        self, endpoint, profileId, deviceId, deviceVersion, inputClusterCount,
        outputClusterCount, inputClusterList, outputClusterList,
    ) -> dict:
        if self.stack_initialised or endpoint in self.endpoints or endpoint in (0, 0xFF):
            return {"status": t.sl_Status.INVALID_STATE}
        self.endpoints[int(endpoint)] = Endpoint(
            endpoint=int(endpoint), profile=int(profileId), device_type=int(deviceId),
            device_version=int(deviceVersion),
            input_clusters=tuple(int(c) for c in inputClusterList),
            output_clusters=tuple(int(c) for c in outputClusterList),
        )
        return {"status": t.sl_Status.OK}

    def _cmd_getMulticastTableEntry(self, index: int) -> dict:
        if index not in self.multicast:
            return {"status": t.sl_Status.INVALID_INDEX,
                    "value": t.EmberMulticastTableEntry(multicastId=0, endpoint=0, networkIndex=0)}
        return {"status": t.sl_Status.OK, "value": self.multicast[index]}

    def _cmd_setMulticastTableEntry(self, index: int, value: t.EmberMulticastTableEntry) -> dict:
        if index not in self.multicast:
            return {"status": t.sl_Status.INVALID_INDEX}
        self.multicast[index] = value
        return {"status": t.sl_Status.OK}

    # ==================================================================== network
    def _cmd_networkState(self) -> dict:
        state = t.EmberNetworkStatus.JOINED_NETWORK if self.network_up else t.EmberNetworkStatus.NO_NETWORK
        return {"status": state}

    def _cmd_networkInit(self, networkInitBitmask) -> dict:
        if self.network_up:
            return {"status": t.sl_Status.INVALID_STATE}
        if self.nvram.network is None:
            self.stack_initialised = True
            return {"status": t.sl_Status.NOT_JOINED}
        self._network_up()
        return {"status": t.sl_Status.OK}

    def _cmd_getNetworkParameters(self) -> dict:
        net = self.nvram.network
        if not self.network_up or net is None:
            return {
                "status": t.sl_Status.NOT_JOINED,
                "nodeType": t.EmberNodeType.UNKNOWN_DEVICE,
                "parameters": t.EmberNetworkParameters(
                    extendedPanId=t.ExtendedPanId.convert("00:00:00:00:00:00:00:00"), panId=0xFFFF,
                    radioTxPower=0, radioChannel=0, joinMethod=t.EmberJoinMethod.USE_MAC_ASSOCIATION,
                    nwkManagerId=0, nwkUpdateId=0, channels=t.Channels.NO_CHANNELS,
                ),
            }
        return {
            "status": t.sl_Status.OK,
            "nodeType": t.EmberNodeType.COORDINATOR,
            "parameters": t.EmberNetworkParameters(
                extendedPanId=t.ExtendedPanId(net.extended_pan_id),
                panId=net.pan_id,
                radioTxPower=net.tx_power & 0xFF,
                radioChannel=net.channel,
                joinMethod=t.EmberJoinMethod.USE_MAC_ASSOCIATION,
                nwkManagerId=net.nwk_manager_id,
                nwkUpdateId=net.nwk_update_id,
                channels=net.channels,
            ),
        }

    def _cmd_setInitialSecurityState(self, state: t.EmberInitialSecurityState) -> dict:
        if self.network_up:
            return {"status": t.sl_Status.INVALID_STATE}
        self.initial_security = state
        return {"status": t.sl_Status.OK}

    def _cmd_formNetwork(self, parameters: t.EmberNetworkParameters) -> dict:
        if self.network_up:
            return {"status": t.sl_Status.INVALID_STATE}
        sec = self.initial_security
        if sec is None or t.EmberInitialSecurityBitmask.HAVE_NETWORK_KEY not in sec.bitmask:
            LOGGER.warning("EZSP NCP: formNetwork without setInitialSecurityState")
            return {"status": t.sl_Status.INVALID_STATE}
        if not 11 <= parameters.radioChannel <= 26:
            return {"status": t.sl_Status.INVALID_PARAMETER}
        tx_power = t.int8s(parameters.radioTxPower if parameters.radioTxPower < 128 else parameters.radioTxPower - 256)
        if not -43 <= tx_power <= 20:
            return {"status": t.sl_Status.TRANSMIT_INVALID_POWER}
        hashed = (
            t.EmberInitialSecurityBitmask.TRUST_CENTER_USES_HASHED_LINK_KEY in sec.bitmask
        )
        tc_eui64 = (
            sec.preconfiguredTrustCenterEui64
            if t.EmberInitialSecurityBitmask.HAVE_TRUST_CENTER_EUI64 in sec.bitmask
            else None
        )
        counters = self._pending_counters
        self.nvram.network = NetworkSettings(
            channel=int(parameters.radioChannel),
            pan_id=int(parameters.panId),
            extended_pan_id=zt.ExtendedPanId(parameters.extendedPanId),
            network_key=t.KeyData(sec.networkKey),
            network_key_seq=int(sec.networkKeySequenceNumber),
            tc_link_key=t.KeyData(sec.preconfiguredKey),
            hashed_tclk=hashed,
            tc_eui64=tc_eui64,
            tx_power=int(tx_power),
            nwk_update_id=0,  # formNetwork does not take the update ID (bellows knows)
            nwk_manager_id=COORDINATOR_NWK,
            channel_mask=int(parameters.channels),
            nwk_frame_counter=counters.pop(t.EzspValueId.VALUE_NWK_FRAME_COUNTER, 0),
            aps_frame_counter=counters.pop(t.EzspValueId.VALUE_APS_FRAME_COUNTER, 0),
        )
        self.nvram.devices.clear()
        LOGGER.info(
            "EZSP NCP: formed network channel %d PAN 0x%04x EPID %s",
            parameters.radioChannel, parameters.panId, parameters.extendedPanId,
        )
        self._network_up()
        return {"status": t.sl_Status.OK}

    def _cmd_leaveNetwork(self, options=0) -> dict:
        if not self.network_up:
            return {"status": t.sl_Status.NOT_JOINED}
        self.network_up = False
        self.nvram.network = None
        self.nvram.devices.clear()
        asyncio.get_running_loop().call_soon(self._stack_status, t.sl_Status.NETWORK_DOWN)
        return {"status": t.sl_Status.OK}

    def _cmd_tokenFactoryReset(self, excludeOutgoingFC, excludeBootCounter) -> dict:
        # All stack tokens back to their defaults: the network is forgotten
        self.nvram.network = None
        self.nvram.devices.clear()
        self.nvram.key_table.clear()
        self._publish_key_table()
        return {}

    def _cmd_clearKeyTable(self) -> dict:
        self.nvram.key_table.clear()
        self._publish_key_table()
        return {"status": t.sl_Status.OK}

    def _cmd_gpSinkTableClearAll(self) -> dict:
        return {}

    def _cmd_gpClearProxyTable(self) -> dict:
        return {}

    def _cmd_setConcentrator(self, on, concentratorType, minTime, maxTime,
                             routeErrorThreshold, deliveryFailureThreshold, maxHops) -> dict:
        self.concentrator = bool(on)
        return {"status": t.sl_Status.OK}

    def _cmd_setSourceRouteDiscoveryMode(self, mode: int) -> dict:
        # Remaining time until the next many-to-one route request, in ms
        return {"remainingTime": 0 if mode == 0 else 10_000}

    def _cmd_permitJoining(self, duration: int) -> dict:
        if not self.network_up:
            return {"status": t.sl_Status.INVALID_STATE}
        if duration == 0xFF:
            self.permit_until = float("inf")
        else:
            self.permit_until = time.monotonic() + int(duration)
        LOGGER.info("EZSP NCP: permit joining %ss", "forever" if duration == 0xFF else duration)
        if duration:
            self._maybe_start_han(HanStart.PERMIT)
        return {"status": t.sl_Status.OK}

    def _cmd_startScan(self, scanType, channelMask, duration) -> dict:
        if t.EzspNetworkScanType(scanType) == t.EzspNetworkScanType.ENERGY_SCAN:
            channels = [c for c in range(11, 27) if int(channelMask) & (1 << c)]

            def report() -> None:
                for channel in channels:
                    # A quiet bench: every channel near the noise floor
                    self.callback("energyScanResultHandler", channel=channel,
                                  maxRssiValue=-90 + (channel % 5))
                self.callback("scanCompleteHandler", channel=0xFF, status=t.sl_Status.OK)

            asyncio.get_running_loop().call_soon(report)
        else:
            # Active scan: no other networks on the bench
            asyncio.get_running_loop().call_soon(
                lambda: self.callback("scanCompleteHandler", channel=0xFF, status=t.sl_Status.OK)
            )
        return {"status": t.sl_Status.OK}

    # ==================================================================== security
    def _current_security_bitmask(self) -> t.EmberCurrentSecurityBitmask:
        bits = t.EmberCurrentSecurityBitmask.GLOBAL_LINK_KEY | t.EmberCurrentSecurityBitmask.HAVE_TRUST_CENTER_LINK_KEY
        net = self.nvram.network
        if net is not None and net.hashed_tclk:
            bits |= t.EmberCurrentSecurityBitmask.TRUST_CENTER_USES_HASHED_LINK_KEY
        return bits

    def _cmd_getCurrentSecurityState(self) -> dict:
        net = self.nvram.network
        if not self.network_up or net is None:
            return {"status": t.sl_Status.NOT_JOINED,
                    "state": t.EmberCurrentSecurityState(bitmask=0, trustCenterLongAddress=EMPTY_EUI64)}
        return {
            "status": t.sl_Status.OK,
            "state": t.EmberCurrentSecurityState(
                bitmask=self._current_security_bitmask(),
                trustCenterLongAddress=self.nvram.eui64,
            ),
        }

    def _cmd_exportKey(self, context: t.SecurityManagerContextV13) -> dict:
        net = self.nvram.network
        key_type = t.SecurityManagerKeyType(context.core_key_type)
        if net is not None and key_type == t.SecurityManagerKeyType.NETWORK:
            return {"status": t.sl_Status.OK, "key": net.network_key, "context": context}
        if net is not None and key_type == t.SecurityManagerKeyType.TC_LINK:
            return {"status": t.sl_Status.OK, "key": net.tc_link_key, "context": context}
        return {"status": t.sl_Status.NOT_FOUND, "key": t.KeyData(bytes(16)), "context": context}

    def _cmd_getNetworkKeyInfo(self) -> dict:
        net = self.nvram.network
        return {
            "status": t.sl_Status.OK,
            "network_key_info": t.SecurityManagerNetworkKeyInfo(
                network_key_set=net is not None,
                alternate_network_key_set=False,
                network_key_sequence_number=net.network_key_seq if net else 0,
                alt_network_key_sequence_number=0,
                network_key_frame_counter=net.nwk_frame_counter if net else 0,
            ),
        }

    def _cmd_importTransientKey(self, eui64, plaintext_key, flags) -> dict:
        self.transient_keys[zt.EUI64(eui64)] = t.KeyData(plaintext_key)
        return {"status": t.sl_Status.OK}

    def _cmd_importLinkKey(self, index: int, address, key) -> dict:
        # sl_zb_sec_man_import_link_key -> zb_sec_man_store_in_link_key_table: the entry
        # at `index` is written whatever it held (the host picks the index); an index
        # past the table makes emSetKeyTableEntry fail, answered SL_STATUS_FAIL
        # (gecko_sdk stack/security/zigbee-security-manager-no-vault.c).
        if index >= self.config["CONFIG_KEY_TABLE_SIZE"]:
            return {"status": t.sl_Status.FAIL}
        self.nvram.key_table[int(index)] = (zt.EUI64(address), t.KeyData(key))
        self._publish_key_table()
        return {"status": t.sl_Status.OK}

    def _publish_key_table(self) -> None:
        """The air secures frames with the key table: hand it the table as it now is
        (a SimHan's optional key-table extras; other HANs have none)."""
        clear = getattr(self.han, "clear_link_keys", None)
        install = getattr(self.han, "install_link_key", None)
        if clear is None or install is None:
            return
        clear()
        # emberFindKeyTableEntry finds the lowest index: that entry is the one in use
        for _index, (eui64, key) in sorted(self.nvram.key_table.items(), reverse=True):
            install(eui64, bytes(key))

    def _cmd_exportLinkKeyByIndex(self, index: int) -> dict:
        context = t.SecurityManagerContextV13(
            core_key_type=t.SecurityManagerKeyType.APP_LINK, key_index=index,
            derived_type=t.SecurityManagerDerivedKeyTypeV13.NONE, eui64=EMPTY_EUI64,
            multi_network_index=0, flags=t.SecurityManagerContextFlags.NONE,
            psa_key_alg_permission=0,
        )
        meta = t.SecurityManagerAPSKeyMetadata(
            bitmask=t.EmberKeyStructBitmask(0), outgoing_frame_counter=0,
            incoming_frame_counter=0, ttl_in_seconds=0,
        )
        entry = self.nvram.key_table.get(int(index))
        if entry is None:
            return {"status": t.sl_Status.NOT_FOUND, "context": context,
                    "plaintext_key": t.KeyData(bytes(16)), "key_data": meta}
        eui64, key = entry
        return {"status": t.sl_Status.OK, "context": context.replace(eui64=eui64),
                "plaintext_key": key, "key_data": meta}

    def _cmd_findKeyTableEntry(self, address, linkKey) -> dict:
        # emberFindKeyTableEntry (stack/include/security.h): the lowest index holding a
        # key shared with `address`, or with an address of all zeros the first empty
        # entry; 0xFF when none. The table holds link keys only (no master keys).
        if not linkKey:
            return {"index": 0xFF}
        size = self.config["CONFIG_KEY_TABLE_SIZE"]
        if zt.EUI64(address) == EMPTY_EUI64:
            free = [i for i in range(size) if i not in self.nvram.key_table]
            return {"index": free[0] if free else 0xFF}
        for index, (eui64, _key) in sorted(self.nvram.key_table.items()):
            if eui64 == address:
                return {"index": index}
        return {"index": 0xFF}

    def _cmd_eraseKeyTableEntry(self, index: int) -> dict:
        self.nvram.key_table.pop(int(index), None)
        self._publish_key_table()
        return {"status": t.sl_Status.OK}

    # ==================================================================== NV3 tokens
    def _tokens(self) -> dict[int, bytes]:
        net = self.nvram.network
        tokens: dict[int, bytes] = {}
        if net is not None:
            tokens[t.NV3KeyId.NVM3KEY_STACK_NODE_DATA] = t.NV3StackNodeData(
                panId=net.pan_id, radioTxPower=net.tx_power, radioFreqChannel=net.channel,
                stackProfile=0x02, nodeType=t.EmberNodeType.COORDINATOR,
                zigbeeNodeId=COORDINATOR_NWK, extendedPanId=t.ExtendedPanId(net.extended_pan_id),
            ).serialize()
            tokens[t.NV3KeyId.NVM3KEY_STACK_TRUST_CENTER] = t.NV3StackTrustCenterToken(
                mode=0, eui64=self.nvram.eui64, key=net.tc_link_key,
            ).serialize()
            tokens[t.NV3KeyId.NVM3KEY_STACK_NETWORK_MANAGEMENT] = t.NV3StackNetworkManagementToken(
                active_channels=net.channels, manager_node_id=net.nwk_manager_id,
                update_id=net.nwk_update_id, padding=0,
            ).serialize()
        return tokens

    def _cmd_getTokenData(self, token: int, index: int) -> dict:
        value = self._tokens().get(int(token)) if index == 0 else None
        if value is None:
            return {"status": t.sl_Status.NOT_FOUND}
        return {"status": t.sl_Status.OK, "value": t.LVBytes32(value)}

    def _cmd_setTokenData(self, token: int, index: int, token_data: bytes) -> dict:
        net = self.nvram.network
        token = int(token)
        if net is None or index != 0 or token not in self._tokens():
            return {"status": t.sl_Status.NOT_FOUND}
        data = bytes(token_data)
        if token == t.NV3KeyId.NVM3KEY_STACK_NODE_DATA:
            value, _ = t.NV3StackNodeData.deserialize(data)
            net.tx_power = int(value.radioTxPower)
        elif token == t.NV3KeyId.NVM3KEY_STACK_NETWORK_MANAGEMENT:
            value, _ = t.NV3StackNetworkManagementToken.deserialize(data)
            net.nwk_update_id = int(value.update_id)
            net.nwk_manager_id = int(value.manager_node_id)
            net.channel_mask = int(value.active_channels)
        elif token == t.NV3KeyId.NVM3KEY_STACK_TRUST_CENTER:
            value, _ = t.NV3StackTrustCenterToken.deserialize(data)
            net.tc_link_key = t.KeyData(value.key)
        return {"status": t.sl_Status.OK}

    # ==================================================================== tables
    def _cmd_getChildData(self, index: int) -> dict:
        children = [d for d in self.nvram.devices.values()
                    if d.node_type in (t.EmberNodeType.END_DEVICE, t.EmberNodeType.SLEEPY_END_DEVICE)]
        if not self.network_up or index >= len(children):
            return {"status": t.sl_Status.NOT_JOINED, "child_data": t.EmberChildDataV10(
                eui64=EMPTY_EUI64, type=t.EmberNodeType.UNKNOWN_DEVICE, id=NULL_NODE_ID,
                phy=0, power=0, timeout=0, timeout_remaining=0)}
        child = children[index]
        return {"status": t.sl_Status.OK, "child_data": t.EmberChildDataV10(
            eui64=child.ieee, type=child.node_type, id=child.nwk, phy=0, power=0,
            timeout=8, timeout_remaining=0)}

    def _cmd_setChildData(self, index: int, child_data: t.EmberChildDataV10) -> dict:
        self.nvram.devices[zt.EUI64(child_data.eui64)] = JoinedDevice(
            zt.EUI64(child_data.eui64), int(child_data.id), t.EmberNodeType(child_data.type))
        return {"status": t.sl_Status.OK}

    def _cmd_lookupNodeIdByEui64(self, eui64) -> dict:
        if zt.EUI64(eui64) == self.nvram.eui64 and self.network_up:
            return {"status": t.sl_Status.OK, "nodeId": COORDINATOR_NWK}
        dev = self.nvram.devices.get(zt.EUI64(eui64))
        if dev is None:
            return {"status": t.sl_Status.NOT_FOUND, "nodeId": NULL_NODE_ID}
        return {"status": t.sl_Status.OK, "nodeId": dev.nwk}

    def _cmd_lookupEui64ByNodeId(self, nodeId: int) -> dict:
        if int(nodeId) == COORDINATOR_NWK and self.network_up:
            return {"status": t.sl_Status.OK, "eui64": self.nvram.eui64}
        dev = self._device_by_nwk(int(nodeId))
        if dev is None:
            return {"status": t.sl_Status.NOT_FOUND, "eui64": EMPTY_EUI64}
        return {"status": t.sl_Status.OK, "eui64": dev.ieee}

    def _cmd_getExtendedTimeout(self, remoteEui64) -> dict:
        extended = zt.EUI64(remoteEui64) in self.extended_timeout
        return {"status": t.sl_Status.OK if extended else t.sl_Status.FAIL}

    def _cmd_setExtendedTimeout(self, remoteEui64, extendedTimeout) -> dict:
        if extendedTimeout:
            self.extended_timeout.add(zt.EUI64(remoteEui64))
        else:
            self.extended_timeout.discard(zt.EUI64(remoteEui64))
        return {"status": t.sl_Status.OK}

    def _cmd_replaceAddressTableEntry(self, addressTableIndex, newEui64, newId, newExtendedTimeout) -> dict:
        if addressTableIndex >= self.config["CONFIG_ADDRESS_TABLE_SIZE"]:
            return {"status": t.sl_Status.INVALID_INDEX, "oldEui64": EMPTY_EUI64,
                    "oldId": NULL_NODE_ID, "oldExtendedTimeout": False}
        old_nwk, old_eui64, old_ext = self.address_table.get(
            int(addressTableIndex), (NULL_NODE_ID, EMPTY_EUI64, False))
        self.address_table[int(addressTableIndex)] = (int(newId), zt.EUI64(newEui64), bool(newExtendedTimeout))
        self._cmd_setExtendedTimeout(newEui64, newExtendedTimeout)
        return {"status": t.sl_Status.OK, "oldEui64": old_eui64, "oldId": old_nwk,
                "oldExtendedTimeout": old_ext}

    def _cmd_getAddressTableInfo(self, index: int) -> dict:
        entry = self.address_table.get(int(index))
        if entry is None:
            return {"status": t.sl_Status.INVALID_INDEX if index >= self.config["CONFIG_ADDRESS_TABLE_SIZE"]
                    else t.sl_Status.NOT_FOUND, "nwk": NULL_NODE_ID, "eui64": EMPTY_EUI64}
        nwk, eui64, _ = entry
        return {"status": t.sl_Status.OK, "nwk": nwk, "eui64": eui64}

    # EZSP 13 and older read the address table one field at a time (14 replaced these
    # with getAddressTableInfo); an unused entry reads as EMBER_TABLE_ENTRY_UNUSED_NODE_ID
    # (0xFFFF) and an EUI64 of zeros (stack/include/ember-types.h).
    def _cmd_getAddressTableRemoteNodeId(self, addressTableIndex: int) -> dict:
        entry = self.address_table.get(int(addressTableIndex))
        return {"nodeId": entry[0] if entry else NULL_NODE_ID}

    def _cmd_getAddressTableRemoteEui64(self, addressTableIndex: int) -> dict:
        entry = self.address_table.get(int(addressTableIndex))
        return {"eui64": entry[1] if entry else EMPTY_EUI64}

    def _cmd_removeDevice(self, destShort, destLong, targetLong) -> dict:
        self.nvram.devices.pop(zt.EUI64(targetLong), None)
        return {"status": t.sl_Status.OK}

    # ==================================================================== messaging
    def _next_aps_counter(self) -> int:
        self.aps_counter = (self.aps_counter + 1) & 0xFF
        return self.aps_counter

    def max_payload(self, aps_frame: t.EmberApsFrame, destination: int | None = None) -> int:
        """The longest APS payload the stack sends in one frame to ``destination``."""
        limit = MAX_APS_PAYLOAD
        if t.EmberApsOption.APS_OPTION_ENCRYPTION in aps_frame.options:
            limit -= APS_ENCRYPTION_OVERHEAD
        if t.EmberApsOption.APS_OPTION_FRAGMENT in aps_frame.options:
            limit -= FRAGMENTATION_OVERHEAD
        relays = self.source_routes.get(destination, ()) if destination is not None else ()
        if relays:
            limit -= SOURCE_ROUTE_OVERHEAD + SOURCE_ROUTE_PER_RELAY * len(relays)
        return limit

    def learn_source_route(self, nwk: int, relays: tuple[int, ...] | list[int], *, announce: bool = True) -> None:
        """A Route Record from ``nwk`` reached us through ``relays`` (nearest the device
        first): the stack keeps the source route and tells the host
        (incomingRouteRecordHandler, which bellows hands to zigpy as the device's relays).
        ``announce`` False: the host never hears of it (a callback lost, or one bellows
        dropped for a device it did not know yet), so it cannot size frames for it."""
        relays = tuple(int(r) for r in relays)
        if relays:
            self.source_routes[int(nwk)] = relays
        else:
            self.source_routes.pop(int(nwk), None)
        if not announce:
            return
        dev = self._device_by_nwk(int(nwk))
        self.callback("incomingRouteRecordHandler", source=int(nwk),
                      sourceEui=dev.ieee if dev else WILDCARD_EUI64, lastHopLqi=0xFF,
                      lastHopRssi=-40, relayList=[t.EmberNodeId(r) for r in relays])

    def _outgoing_packet(self, dst: zt.AddrModeAddress, aps_frame: t.EmberApsFrame,
                         message: bytes, radius: int = 0) -> zt.ZigbeePacket:
        tx_options = zt.TransmitOptions.NONE
        if t.EmberApsOption.APS_OPTION_RETRY in aps_frame.options:
            tx_options |= zt.TransmitOptions.ACK
        if t.EmberApsOption.APS_OPTION_ENCRYPTION in aps_frame.options:
            # The stack APS-secures the frame with the key table's entry for the
            # destination, else the TC link key: the air does that (radios/sim/han.py)
            tx_options |= zt.TransmitOptions.APS_Encryption
        return zt.ZigbeePacket(
            src=zt.AddrModeAddress(addr_mode=zt.AddrMode.NWK, address=COORDINATOR_NWK),
            src_ep=aps_frame.sourceEndpoint,
            dst=dst,
            dst_ep=aps_frame.destinationEndpoint,
            tsn=aps_frame.sequence,
            profile_id=aps_frame.profileId,
            cluster_id=aps_frame.clusterId,
            data=zt.SerializableBytes(bytes(message)),
            tx_options=tx_options,
            radius=radius,
        )

    def _message_in_callback(self, message: bytes) -> bytes:
        # MESSAGE_CONTENTS_IN_CALLBACK_POLICY: MESSAGE_TAG_ONLY_IN_CALLBACK (0x40, the
        # default) or MESSAGE_TAG_AND_CONTENTS_IN_CALLBACK (0x41)
        policy = self.policies.get(t.EzspPolicyId.MESSAGE_CONTENTS_IN_CALLBACK_POLICY, 0x40)
        return bytes(message) if policy == 0x41 else b""

    def _cmd_sendUnicast(self, message_type, nwk, aps_frame, message_tag, message) -> dict:
        if not self.network_up:
            return {"status": t.sl_Status.NETWORK_DOWN, "sequence": 0}
        message_type = t.EmberOutgoingMessageType(message_type)
        if message_type == t.EmberOutgoingMessageType.OUTGOING_VIA_ADDRESS_TABLE:
            entry = self.address_table.get(int(nwk))
            if entry is None:
                return {"status": t.sl_Status.INVALID_PARAMETER, "sequence": 0}
            destination = entry[0]
        elif message_type == t.EmberOutgoingMessageType.OUTGOING_DIRECT:
            destination = int(nwk)
        else:
            LOGGER.warning("EZSP NCP: sendUnicast type %s not emulated", message_type.name)
            return {"status": t.sl_Status.INVALID_PARAMETER, "sequence": 0}
        if destination in BROADCAST_ADDRESSES:
            return {"status": t.sl_Status.INVALID_PARAMETER, "sequence": 0}
        limit = self.max_payload(aps_frame, destination)
        if len(message) > limit:
            self.refused_too_long.append((destination, len(message), limit))
            return {"status": t.sl_Status.MESSAGE_TOO_LONG, "sequence": 0}
        # A fragment after the first keeps the message's APS counter (fragments.py)
        sequence = int(aps_frame.sequence) if self.fragments.later_block(aps_frame) else self._next_aps_counter()
        aps = aps_frame.replace(sequence=sequence)
        if self.fragments.is_fragment(aps):
            self.fragments.submit(message_type, int(nwk), destination, aps, int(message_tag), bytes(message))
            return {"status": t.sl_Status.OK, "sequence": sequence}
        self._spawn(
            self._deliver_unicast(message_type, int(nwk), destination, aps, int(message_tag), bytes(message)),
            f"unicast to 0x{destination:04x}",
        )
        return {"status": t.sl_Status.OK, "sequence": sequence}

    async def _deliver_unicast(self, message_type, nwk_field: int, destination: int,
                               aps: t.EmberApsFrame, tag: int, message: bytes) -> None:
        started = asyncio.get_running_loop().time()
        if self.delivery_delay:
            await asyncio.sleep(self.delivery_delay)
        status = t.sl_Status.OK
        if self.faults.take_delivery_failure(destination, int(aps.clusterId)):
            LOGGER.info("EZSP NCP: injected delivery failure to 0x%04x", destination)
            status = t.sl_Status.ZIGBEE_DELIVERY_FAILED
        elif destination == COORDINATOR_NWK:
            await asyncio.sleep(0)  # loopback: after the sendUnicast response
            self._receive(self._outgoing_packet(
                zt.AddrModeAddress(addr_mode=zt.AddrMode.NWK, address=COORDINATOR_NWK), aps, message))
        elif self.han is None:
            status = t.sl_Status.ZIGBEE_DELIVERY_FAILED
        else:
            packet = self._outgoing_packet(
                zt.AddrModeAddress(addr_mode=zt.AddrMode.NWK, address=destination), aps, message)
            try:
                result = await self.han.send(packet)
            except Exception:  # noqa: BLE001 - the air does not raise into the NCP
                LOGGER.exception("EZSP NCP: HAN send to 0x%04x raised", destination)
                status = t.sl_Status.ZIGBEE_DELIVERY_FAILED
            else:
                if not getattr(result, "ok", bool(result)):
                    LOGGER.debug("EZSP NCP: delivery to 0x%04x failed: %s",
                                 destination, getattr(result, "reason", result))
                    status = t.sl_Status.ZIGBEE_DELIVERY_FAILED
        if status != t.sl_Status.OK and destination != COORDINATOR_NWK:
            # The stack reports the loss once its APS retries (and the route discoveries
            # between them) are spent; the air's MAC retries are already behind us.
            left = self.failure_timing.failure_delay_s - (asyncio.get_running_loop().time() - started)
            if left > 0:
                await asyncio.sleep(left)
            self.failed_unicasts.append((destination, asyncio.get_running_loop().time() - started))
        if status == t.sl_Status.OK:
            self._count(t.EmberCounterType.COUNTER_MAC_TX_UNICAST_SUCCESS)
            self._count(t.EmberCounterType.COUNTER_APS_DATA_TX_UNICAST_SUCCESS)
        else:
            self._count(t.EmberCounterType.COUNTER_MAC_TX_UNICAST_FAILED)
            self._count(t.EmberCounterType.COUNTER_APS_DATA_TX_UNICAST_FAILED)
        if not self.network_up:
            return  # the NCP reset meanwhile: the confirmation is lost with it
        self.callback(
            "messageSentHandler", status=status, message_type=message_type, nwk=nwk_field,
            aps_frame=aps, message_tag=tag, message=self._message_in_callback(message),
        )

    def _send_group_or_broadcast(self, kind: t.EmberOutgoingMessageType, dst: zt.AddrModeAddress,
                                 aps: t.EmberApsFrame, radius: int, tag: int, message: bytes,
                                 nwk_field: int) -> None:
        async def deliver() -> None:
            await asyncio.sleep(0)
            if self.han is not None:
                try:
                    await self.han.send(self._outgoing_packet(dst, aps, message, radius))
                except Exception:  # noqa: BLE001
                    LOGGER.exception("EZSP NCP: HAN broadcast raised")
            self._count(t.EmberCounterType.COUNTER_APS_DATA_TX_BROADCAST)
            if self.network_up:
                self.callback("messageSentHandler", status=t.sl_Status.OK, message_type=kind,
                              nwk=nwk_field, aps_frame=aps, message_tag=tag,
                              message=self._message_in_callback(message))

        self._spawn(deliver(), f"{kind.name} to 0x{dst.address:04x}")

    def _cmd_sendBroadcast(self, alias, destination, sequence, aps_frame, radius, message_tag, message) -> dict:
        if not self.network_up:
            return {"status": t.sl_Status.NETWORK_DOWN, "sequence": 0}
        if int(destination) not in BROADCAST_ADDRESSES:
            return {"status": t.sl_Status.INVALID_PARAMETER, "sequence": 0}
        if len(message) > self.max_payload(aps_frame):
            return {"status": t.sl_Status.MESSAGE_TOO_LONG, "sequence": 0}
        with_alias = alias != NULL_NODE_ID
        seq = int(sequence) if with_alias else self._next_aps_counter()
        aps = aps_frame.replace(sequence=seq)
        kind = (t.EmberOutgoingMessageType.OUTGOING_BROADCAST_WITH_ALIAS if with_alias
                else t.EmberOutgoingMessageType.OUTGOING_BROADCAST)
        dst = zt.AddrModeAddress(addr_mode=zt.AddrMode.Broadcast, address=int(destination))
        self._send_group_or_broadcast(kind, dst, aps, int(radius), int(message_tag), bytes(message),
                                      int(destination))
        return {"status": t.sl_Status.OK, "sequence": seq}

    def _cmd_sendMulticast(self, aps_frame, hops, broadcast_addr, alias, sequence, message_tag, message) -> dict:
        if not self.network_up:
            return {"status": t.sl_Status.NETWORK_DOWN, "sequence": 0}
        if len(message) > self.max_payload(aps_frame):
            return {"status": t.sl_Status.MESSAGE_TOO_LONG, "sequence": 0}
        with_alias = alias != NULL_NODE_ID
        seq = int(sequence) if with_alias else self._next_aps_counter()
        aps = aps_frame.replace(sequence=seq)
        kind = (t.EmberOutgoingMessageType.OUTGOING_MULTICAST_WITH_ALIAS if with_alias
                else t.EmberOutgoingMessageType.OUTGOING_MULTICAST)
        dst = zt.AddrModeAddress(addr_mode=zt.AddrMode.Group, address=int(aps_frame.groupId))
        self._send_group_or_broadcast(kind, dst, aps, int(hops), int(message_tag), bytes(message),
                                      int(aps_frame.groupId))
        return {"status": t.sl_Status.OK, "sequence": seq}

    # ==================================================================== the HAN side
    def _uplink(self, packet: zt.ZigbeePacket) -> None:
        """A packet on the air for the coordinator (called by the HAN)."""
        self._receive(packet)

    def _on_fragment(self, packet: zt.ZigbeePacket, block: int, total: int | None) -> None:
        self.fragments.incoming(packet, block, total)

    def _cmd_sendReply(self, sender, apsFrame, messageContents) -> dict:
        return self.fragments.send_reply(sender, apsFrame, bytes(messageContents))

    def _resolve_src(self, packet: zt.ZigbeePacket) -> tuple[int, zt.EUI64 | None]:
        src = packet.src
        if src is None:
            return NULL_NODE_ID, None
        if src.addr_mode == zt.AddrMode.IEEE:
            dev = self.nvram.devices.get(zt.EUI64(src.address))
            return (dev.nwk if dev else NULL_NODE_ID), zt.EUI64(src.address)
        nwk = int(src.address)
        if nwk == COORDINATOR_NWK:
            return nwk, self.nvram.eui64
        dev = self._device_by_nwk(nwk)
        return nwk, (dev.ieee if dev else None)

    def _receive(self, packet: zt.ZigbeePacket, fragment_group: int | None = None) -> None:
        """``fragment_group``: the packet is one block of a fragmented unicast (fragments.py)."""
        if not self.network_up:
            LOGGER.debug("EZSP NCP: network down, packet from the air dropped: %s", packet)
            return
        dst = packet.dst
        if dst is None or dst.addr_mode == zt.AddrMode.NWK:
            if dst is not None and int(dst.address) != COORDINATOR_NWK:
                return  # not for us
            message_type = t.EmberIncomingMessageType.INCOMING_UNICAST
            group = 0
        elif dst.addr_mode == zt.AddrMode.IEEE:
            if zt.EUI64(dst.address) != self.nvram.eui64:
                return
            message_type = t.EmberIncomingMessageType.INCOMING_UNICAST
            group = 0
        elif dst.addr_mode == zt.AddrMode.Broadcast:
            message_type = t.EmberIncomingMessageType.INCOMING_BROADCAST
            group = 0
        elif dst.addr_mode == zt.AddrMode.Group:
            group = int(dst.address)
            if not any(e.endpoint and e.multicastId == group for e in self.multicast.values()):
                LOGGER.debug("EZSP NCP: multicast to group 0x%04x we are not in", group)
                return
            message_type = t.EmberIncomingMessageType.INCOMING_MULTICAST
        else:
            LOGGER.warning("EZSP NCP: packet with unsupported destination %s", dst)
            return

        nwk, ieee = self._resolve_src(packet)
        self._route_record(nwk, message_type)
        message = bytes(packet.data.serialize())
        options = t.EmberApsOption.APS_OPTION_NONE
        # The air passes a frame on as APS-secured only once the coordinator's key
        # verified it; EmberZNet then reports APS_OPTION_ENCRYPTION in the apsFrame.
        if zt.TransmitOptions.APS_Encryption in packet.tx_options:
            options |= t.EmberApsOption.APS_OPTION_ENCRYPTION
        if fragment_group is not None:
            options |= t.EmberApsOption.APS_OPTION_FRAGMENT
            group = fragment_group
        aps = t.EmberApsFrame(
            profileId=packet.profile_id, clusterId=packet.cluster_id,
            sourceEndpoint=packet.src_ep or 0, destinationEndpoint=packet.dst_ep or 0,
            options=options, groupId=group, sequence=packet.tsn,
        )

        if message_type == t.EmberIncomingMessageType.INCOMING_UNICAST:
            self._count(t.EmberCounterType.COUNTER_MAC_RX_UNICAST)
            self._count(t.EmberCounterType.COUNTER_APS_DATA_RX_UNICAST)
        else:
            self._count(t.EmberCounterType.COUNTER_MAC_RX_BROADCAST)
            self._count(t.EmberCounterType.COUNTER_APS_DATA_RX_BROADCAST)

        pass_to_host = True
        if self.stack_zdo and aps.profileId == 0x0000 and aps.destinationEndpoint == 0 and aps.clusterId < 0x8000:
            # With CONFIG_APPLICATION_ZDO_FLAGS = APP_RECEIVES_SUPPORTED_ZDO_REQUESTS |
            # APP_HANDLES_UNSUPPORTED_ZDO_REQUESTS (what bellows configures), the NCP's stack
            # still answers the requests it supports *and* passes a copy to the host;
            # unsupported ones go to the host only. So a device's Match_Desc_req for the OTA
            # cluster gets the stack's answer and zigpy's, as on a real dongle. (The answers:
            # radios/coordinator_zdo.py, EMBERZNET; unreadable requests go to the host too.)
            result = zdo_answer(
                aps.clusterId, message,
                Coordinator(nwk=COORDINATOR_NWK, ieee=self.nvram.eui64, endpoints=self.endpoints,
                            manufacturer_code=self.manufacturer_code),
                EMBERZNET,
                broadcast=message_type != t.EmberIncomingMessageType.INCOMING_UNICAST,
            )
            if result.supported:
                flags = self.config["CONFIG_APPLICATION_ZDO_FLAGS"]
                pass_to_host = bool(flags & APP_RECEIVES_SUPPORTED_ZDO_REQUESTS)
            if result.reply is not None:
                self._stack_zdo_reply(nwk, aps, result.reply)

        if pass_to_host:
            self.callback(
                "incomingMessageHandler",
                message_type=message_type, aps_frame=aps, nwk=nwk,
                eui64=ieee if ieee is not None else WILDCARD_EUI64,
                binding_index=0xFF, address_index=0xFF,
                lqi=packet.lqi if packet.lqi is not None else 0xFF,
                rssi=packet.rssi if packet.rssi is not None else -40,
                timestamp=self._uptime_ms(), message=message,
            )

    def _route_record(self, nwk: int, message_type: t.EmberIncomingMessageType) -> None:
        """A device more than one hop away sends a Route Record with its unicasts to the
        concentrator; the HAN says which relays a device is behind, if it models hops
        (``han.relays_of(nwk)``, optional)."""
        relays_of = getattr(self.han, "relays_of", None)
        if relays_of is None or message_type != t.EmberIncomingMessageType.INCOMING_UNICAST:
            return
        relays = tuple(relays_of(nwk))
        # The HAN's hops decide the route, except that a device it has next to us keeps a
        # route a test taught the stack (learn_source_route) until the HAN says otherwise.
        if relays == self.source_routes.get(nwk, ()) or not (relays or nwk in self._routes_from_han):
            return
        self.learn_source_route(nwk, relays)
        if relays:
            self._routes_from_han.add(nwk)
        else:
            self._routes_from_han.discard(nwk)

    def _stack_zdo_reply(self, requester: int, request: t.EmberApsFrame, reply: ZdoFrame) -> None:
        aps = t.EmberApsFrame(
            profileId=0x0000, clusterId=reply.cluster_id, sourceEndpoint=0, destinationEndpoint=0,
            options=t.EmberApsOption.APS_OPTION_NONE, groupId=0, sequence=self._next_aps_counter(),
        )
        packet = self._outgoing_packet(
            zt.AddrModeAddress(addr_mode=zt.AddrMode.NWK, address=requester), aps, reply.payload)
        if requester == COORDINATOR_NWK:
            asyncio.get_running_loop().call_soon(self._receive, packet)
        elif self.han is not None and requester != NULL_NODE_ID:
            self._spawn(self.han.send(packet), f"stack ZDO reply to 0x{requester:04x}")

    def _on_join(self, ieee: zt.EUI64, nwk: int, node_type: t.EmberNodeType | None = None) -> None:
        """A device joined or rejoined through us (called by the HAN)."""
        ieee = zt.EUI64(ieee)
        previous = self.nvram.devices.get(ieee)
        if node_type is None:
            node_type = previous.node_type if previous else self._han_node_type(ieee)
        self.nvram.devices[ieee] = JoinedDevice(ieee, int(nwk), node_type)
        self._persist()
        self._count(t.EmberCounterType.COUNTER_JOIN_INDICATION)
        if not self.network_up:
            LOGGER.warning("EZSP NCP: %s joined while the network is down (recorded only)", ieee)
            return
        if previous is None and not self._permit_open():
            LOGGER.warning("EZSP NCP: %s joined while permit-joining is closed", ieee)
        LOGGER.info("EZSP NCP: %s %s as 0x%04x", ieee, "rejoined" if previous else "joined", nwk)
        self.callback(
            "trustCenterJoinHandler",
            newNodeId=int(nwk), newNodeEui64=ieee,
            status=(t.EmberDeviceUpdate.STANDARD_SECURITY_SECURED_REJOIN if previous
                    else t.EmberDeviceUpdate.STANDARD_SECURITY_UNSECURED_JOIN),
            policyDecision=(t.EmberJoinDecision.NO_ACTION if previous
                            else t.EmberJoinDecision.USE_PRECONFIGURED_KEY),
            parentOfNewNodeId=COORDINATOR_NWK,
        )
        if node_type in (t.EmberNodeType.END_DEVICE, t.EmberNodeType.SLEEPY_END_DEVICE):
            index = [d.ieee for d in self.nvram.devices.values()
                     if d.node_type in (t.EmberNodeType.END_DEVICE, t.EmberNodeType.SLEEPY_END_DEVICE)].index(ieee)
            self.callback("childJoinHandler", index=index, joining=True, childId=int(nwk),
                          childEui64=ieee, childType=node_type)

    def _han_node_type(self, ieee: zt.EUI64) -> t.EmberNodeType:
        """The device's node type, from the HAN's device spec when it has one."""
        devices = getattr(self.han, "devices", None)
        device = devices.get(ieee) if devices is not None else None
        spec = getattr(device, "spec", None)
        if spec is not None:
            if getattr(spec, "is_sleepy", False):
                return t.EmberNodeType.SLEEPY_END_DEVICE
            if not getattr(spec, "is_router", True):
                return t.EmberNodeType.END_DEVICE
        return t.EmberNodeType.ROUTER

    def _tell_han_about_network(self) -> None:
        """SimHan's optional extras: devices report these as their parent / OTA server."""
        net = self.nvram.network
        if self.han is None or net is None:
            return
        if hasattr(self.han, "coordinator_ieee"):
            self.han.coordinator_ieee = self.nvram.eui64
        if hasattr(self.han, "extended_pan_id"):
            self.han.extended_pan_id = zt.ExtendedPanId(net.extended_pan_id)
        if hasattr(self.han, "tc_link_key"):
            self.han.tc_link_key = bytes(net.tc_link_key)
