"""`SimControllerApplication`: a zigpy radio whose "NCP" is a `SimHan`.

Two ways to make one:

1. In code (tests, benchmarks)::

       app = SimControllerApplication.new_sim(specs, link=LinkModel.instant())
       await app.startup(auto_form=True)          # or: app = await start_sim_app(specs)

   ``new_sim`` also takes ``han=`` (an existing `SimHan`: then the app does not own it,
   so stopping the app leaves the devices running, as a restarted hub would find
   them), ``database_path=`` and ``config=`` (zigpy config merged over the defaults).

2. From a zigpy config (the daemon's TOML), with the devices in a ``sim`` table::

       {"device": {"path": "sim://"},
        "sim": {"devices": [{"kind": "hcalcs", "ieee": "00:11:...", ...}, ...],
                "link": "instant" | "realistic" | {"mode": "realistic", "scale": 0.1,
                                                   "uart_baud": 115200},
                "coordinator_ieee": "00:0d:6f:ff:fe:00:5e:1d"}}

   ``SimControllerApplication(config)`` builds the `SimHan` from it on ``connect()``
   (so zigpy's own ``ControllerApplication.new(config)`` works too).

The radio keeps its "NVRAM" (network and node info) in a `SimNvram`; pass the same
one to a second app to restart on the same network. ``send_packet`` hands packets to
``SimHan.send`` and raises `zigpy.exceptions.DeliveryError` when the link reports a
failure; the devices' frames come back through ``packet_received``; joins through
``handle_join``. ZDO requests addressed to the coordinator itself are answered here
(as an NCP answers its own ZDO, by radios/coordinator_zdo.py with the ``SIM`` quirks):
Node/Active_EP/Simple descriptors, address requests, Mgmt_Lqi (the joined devices);
Mgmt_NWK_Update goes unanswered (energy scans go through ``energy_scan``). A device's
Match_Desc_req is answered the same way from the registered endpoints, as EmberZNet and
Z-Stack answer it from theirs, and still passed up to zigpy, as they pass it (so a
device asking on Smart Energy finds the SE endpoint and its Key Establishment server).

Defaults applied by ``new_sim`` (overridable with ``config=``): channel 15 (so forming
needs no energy scan), zigpy's OTA providers off (no network fetches when a device
queries), topology scans and periodic backups off.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping, Sequence
import copy
from dataclasses import dataclass
import logging
import os
import random
from typing import Any, Final

import zigpy.application
import zigpy.config as conf
import zigpy.device
import zigpy.exceptions
import zigpy.state
import zigpy.types as t
import zigpy.zdo.types as zdo_t

from radios.coordinator_zdo import SIM, Coordinator, Endpoint
from radios.coordinator_zdo import answer as zdo_answer

from .han import DeliveryResult, SimHan
from .link import LinkModel
from .spec import SimDeviceSpec, parse_ieee

__all__ = [
    "SimControllerApplication",
    "SimCoordinator",
    "SimNvram",
    "SimStartError",
    "link_from_config",
    "start_sim_app",
]

LOGGER = logging.getLogger(__name__)

SIM_PATH_PREFIX: Final = "sim://"
CONF_SIM: Final = "sim"
DEFAULT_COORDINATOR_IEEE: Final = "00:0d:6f:ff:fe:00:5e:1d"
DEFAULT_CHANNEL: Final = 15

_FAILURE_STATUS: Final = {
    "no ack": t.MACStatus.MAC_NO_ACK,
    "no aps ack": t.APSStatus.APS_NO_ACK,
    "indirect timeout": t.MACStatus.MAC_TRANSACTION_EXPIRED,
    "unknown destination": t.NWKStatus.NWK_UNKNOWN_DEVICE,
    "stopped": t.MACStatus.MAC_CHANNEL_ACCESS_FAILURE,
    "message too long": t.MACStatus.MAC_FRAME_TOO_LONG,
}


class SimStartError(RuntimeError):
    """The simulated network did not come up: names the devices that did not initialise."""


@dataclass
class SimNvram:
    """The simulated coordinator's non-volatile network settings."""

    network_info: zigpy.state.NetworkInfo | None = None
    node_info: zigpy.state.NodeInfo | None = None


def link_from_config(value: Any) -> LinkModel:
    """``"instant"``, ``"realistic"`` or ``{"mode": ..., "scale": ..., "uart_baud": ...}``."""
    if value is None or isinstance(value, LinkModel):
        return value if value is not None else LinkModel.instant()
    if isinstance(value, str):
        value = {"mode": value}
    if not isinstance(value, Mapping):
        raise ValueError(f"sim.link={value!r}: expected 'instant', 'realistic' or a table with mode/scale/uart_baud")
    params = dict(value)
    mode = str(params.pop("mode", "instant")).lower()
    if mode == "instant":
        return LinkModel.instant(**params)
    if mode == "realistic":
        return LinkModel.realistic(**params)
    raise ValueError(f"sim.link.mode={mode!r}: expected 'instant' or 'realistic'")


def _merge(base: dict[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in extra.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


class SimCoordinator(zigpy.device.ZigbeeDevice):
    """The coordinator as a zigpy device (its descriptors come from the app's loopback)."""

    @property
    def manufacturer(self) -> str:
        return "han-ota-gateway"

    @manufacturer.setter
    def manufacturer(self, value: str) -> None:  # fixed by the "hardware"
        pass

    @property
    def model(self) -> str:
        return "SimCoordinator"

    @model.setter
    def model(self, value: str) -> None:
        pass


class SimControllerApplication(zigpy.application.ControllerApplication):
    """A zigpy radio backed by a `SimHan` (see the module docstring)."""

    def __init__(self, config: dict[str, Any], *, han: SimHan | None = None, nvram: SimNvram | None = None) -> None:
        super().__init__(config)
        self._han = han
        self._owns_han = han is None
        self.nvram = nvram if nvram is not None else SimNvram()
        self._connected = False
        self._endpoints: dict[int, Endpoint] = {}
        self._permit_until = 0.0
        self._link_keys: dict[t.EUI64, t.KeyData] = {}
        self._zdo_answers: set[asyncio.Task[Any]] = set()
        self._routes: dict[int, tuple[int, ...]] = {}  # the source route last told to zigpy, per device
        sim = self._config.get(CONF_SIM) or {}
        self._radio_ieee = parse_ieee(sim.get("coordinator_ieee", DEFAULT_COORDINATOR_IEEE))

    # -- construction ------------------------------------------------------------------

    @classmethod
    def new_sim(
        cls,
        specs: Sequence[SimDeviceSpec],
        link: LinkModel | None = None,
        database_path: str | None = None,
        *,
        han: SimHan | None = None,
        nvram: SimNvram | None = None,
        config: Mapping[str, Any] | None = None,
    ) -> SimControllerApplication:
        """An app (not started) over a new `SimHan(specs, link)`, or over ``han``."""
        base: dict[str, Any] = {
            conf.CONF_DEVICE: {conf.CONF_DEVICE_PATH: SIM_PATH_PREFIX},
            conf.CONF_DATABASE: database_path,
            conf.CONF_NWK: {conf.CONF_NWK_CHANNEL: DEFAULT_CHANNEL},
            conf.CONF_OTA: {conf.CONF_OTA_ENABLED: False},
            conf.CONF_TOPO_SCAN_ENABLED: False,
            conf.CONF_NWK_BACKUP_ENABLED: False,
        }
        if config:
            base = _merge(base, config)
        owned = han is None
        if han is None:
            han = SimHan(specs, link)
        elif specs and list(specs) != han.specs():
            raise ValueError("new_sim: give either specs or a han built from them, not different ones")
        app = cls(base, han=han, nvram=nvram)
        app._owns_han = owned
        return app

    @property
    def han(self) -> SimHan:
        if self._han is None:
            raise zigpy.exceptions.ControllerException("sim radio not connected: no SimHan yet")
        return self._han

    # -- radio lifecycle ---------------------------------------------------------------

    async def connect(self) -> None:
        path = str(self._config[conf.CONF_DEVICE][conf.CONF_DEVICE_PATH])
        if not path.startswith(SIM_PATH_PREFIX):
            raise zigpy.exceptions.TransientConnectionError(f"not a sim radio path: {path!r} (expected sim://)")
        if self._han is None:
            sim = self._config.get(CONF_SIM) or {}
            specs = [SimDeviceSpec.from_dict(d) for d in sim.get("devices", [])]
            self._han = SimHan(specs, link_from_config(sim.get("link")))
            self._owns_han = True
        self._han.attach(self._on_uplink, self._on_join)
        self._connected = True

    async def disconnect(self) -> None:
        self._connected = False
        if self._han is None:
            return
        self._han.attach(lambda packet: None, None)
        if self._owns_han:
            await self._han.stop()

    async def _watchdog_feed(self) -> None:
        if not self._connected:
            raise zigpy.exceptions.ControllerException("sim radio disconnected")

    async def start_network(self) -> None:
        await self.load_network_info(load_devices=False)
        han = self.han
        han.coordinator_ieee = self.state.node_info.ieee
        han.extended_pan_id = self.state.network_info.extended_pan_id
        han.tc_link_key = bytes(self.state.network_info.tc_link_key.key)
        await self.register_endpoints()
        ieee, nwk = self.state.node_info.ieee, self.state.node_info.nwk
        if not isinstance(self.devices.get(ieee), SimCoordinator):
            self.devices[ieee] = SimCoordinator(self, ieee, nwk)
        task = self._device.schedule_initialize()
        if task is not None:
            await task
        await han.start()

    async def load_network_info(self, *, load_devices: bool = False) -> None:
        if self.nvram.network_info is None or self.nvram.node_info is None:
            raise zigpy.exceptions.NetworkNotFormed("sim radio has no network settings")
        network_info = self.nvram.network_info
        if load_devices and self._han is not None:
            joined = [d for d in self._han.devices.values() if d.online]
            network_info = network_info.replace(
                nwk_addresses={d.ieee: d.nwk for d in joined},
                children=[d.ieee for d in joined if not d.spec.is_router],
            )
        self.state.network_info = network_info
        self.state.node_info = self.nvram.node_info

    async def write_network_info(
        self, *, network_info: zigpy.state.NetworkInfo, node_info: zigpy.state.NodeInfo
    ) -> None:
        if not 11 <= network_info.channel <= 26:
            raise zigpy.exceptions.CannotWriteNetworkSettings(
                f"channel {network_info.channel} outside 11..26 (2.4 GHz)"
            )
        ieee = self._radio_ieee if node_info.ieee == t.EUI64.UNKNOWN else node_info.ieee
        node = node_info.replace(
            ieee=ieee,
            nwk=t.NWK(0x0000),
            logical_type=zdo_t.LogicalType.Coordinator,
            model="SimCoordinator",
            manufacturer="han-ota-gateway",
            version="sim",
        )
        tc_key = network_info.tc_link_key
        if tc_key.partner_ieee == t.EUI64.UNKNOWN:
            tc_key = tc_key.replace(partner_ieee=ieee)
        self.nvram.network_info = network_info.replace(
            tc_link_key=tc_key,
            children=[],
            nwk_addresses={},
            source=f"han-ota-gateway sim radio ({os.path.basename(__file__)})",
            metadata={"sim": {"coordinator_ieee": str(ieee)}},
        )
        self.nvram.node_info = node
        self._radio_ieee = ieee

    async def reset_network_info(self) -> None:
        self.nvram.network_info = None
        self.nvram.node_info = None

    async def energy_scan(self, channels: t.Channels, duration_exp: int, count: int) -> dict[int, float]:
        # A quiet bench: low, deterministic energy on every channel.
        rng = random.Random(int.from_bytes(self._radio_ieee.serialize(), "little"))
        return {channel: float(rng.randint(5, 40)) for channel in channels}

    async def force_remove(self, dev: zigpy.device.ZigbeeDevice) -> None:
        device = self.han.devices.get(dev.ieee)
        if device is not None:
            device.leave(rejoin=False)

    async def add_endpoint(self, descriptor: zdo_t.SimpleDescriptor) -> None:
        self._endpoints[int(descriptor.endpoint)] = Endpoint.from_descriptor(descriptor)

    async def permit_ncp(self, time_s: int = 60) -> None:
        self._permit_until = asyncio.get_running_loop().time() + time_s

    async def permit_with_link_key(self, node: t.EUI64, link_key: t.KeyData, time_s: int = 60) -> None:
        self._link_keys[node] = link_key
        await self.permit_ncp(time_s)

    # -- APS link keys ---------------------------------------------------------------

    async def install_link_key(self, ieee: t.EUI64, key: t.KeyData) -> None:
        """The coordinator's APS link key for a device: the SimHan's key table holds it
        (the air secures and checks frames with it, see han.py). No table limit."""
        self.han.install_link_key(ieee, bytes(key))

    # -- packets -----------------------------------------------------------------------

    def _is_local(self, dst: t.AddrModeAddress | None) -> bool:
        if dst is None:
            return False
        if dst.addr_mode == t.AddrMode.NWK:
            return dst.address == self.state.node_info.nwk
        if dst.addr_mode == t.AddrMode.IEEE:
            return dst.address == self.state.node_info.ieee
        return False

    async def send_packet(self, packet: t.ZigbeePacket) -> None:
        if not self._connected or self._han is None:
            raise zigpy.exceptions.DeliveryError("sim radio is not connected")
        if self._is_local(packet.dst):
            self._loopback(packet)
            return
        async with self._limit_concurrency(priority=packet.priority):
            result: DeliveryResult = await self._han.send(packet)
        if not result.ok:
            raise zigpy.exceptions.DeliveryError(
                f"Failed to deliver packet to {packet.dst}: {result.reason}",
                status=_FAILURE_STATUS.get(result.reason),
            )

    def _on_uplink(self, packet: t.ZigbeePacket) -> None:
        self._note_route(packet)
        if packet.profile_id == 0 and packet.dst_ep == 0 and packet.cluster_id == zdo_t.ZDOCmd.Match_Desc_req:
            self._answer_match_desc(packet)
        self.packet_received(packet)

    def _note_route(self, packet: t.ZigbeePacket) -> None:
        """A frame from a device behind routers: its route, as the real stacks tell the
        host before the frame (EZSP incomingRouteRecordHandler, Z-Stack ZDO.SrcRtgInd),
        and only when it is new or changed."""
        if packet.src is None or packet.src.addr_mode != t.AddrMode.NWK:
            return
        nwk = int(packet.src.address)
        relays = self.han.relays_of(nwk)
        if self._routes.get(nwk, ()) == relays:
            return
        self._routes[nwk] = relays
        self.handle_relays(nwk=t.NWK(nwk), relays=[t.NWK(r) for r in relays])

    def _answer_match_desc(self, packet: t.ZigbeePacket) -> None:
        """A device's Match_Desc_req, answered from the registered endpoints as EmberZNet
        and Z-Stack answer it from theirs (radios/coordinator_zdo.py); zigpy gets the
        request too, as from those stacks."""
        if packet.src is None:
            return
        broadcast = packet.dst is not None and packet.dst.addr_mode == t.AddrMode.Broadcast
        reply, _ = self._zdo_reply(packet, to=packet.src.address, broadcast=broadcast)
        if reply is None:
            return
        task = asyncio.get_running_loop().create_task(self.han.send(reply))
        self._zdo_answers.add(task)
        task.add_done_callback(self._zdo_answers.discard)

    def _on_join(self, ieee: t.EUI64, nwk: t.NWK) -> None:
        # As an NCP's trust-centre join indication; the Device_annce that follows is
        # parsed by zigpy too (zigpy copes with both, as with real radios).
        self.handle_join(nwk=nwk, ieee=ieee, parent_nwk=t.NWK(0x0000))

    # -- the coordinator's own ZDO -----------------------------------------------------

    def _zdo_reply(
        self, packet: t.ZigbeePacket, *, to: int, broadcast: bool = False, lqi: int | None = None, rssi: int | None = None
    ) -> tuple[t.ZigbeePacket | None, str | None]:
        """The coordinator's answer to a ZDO request (radios/coordinator_zdo.py with the
        SIM quirks) as a packet to ``to``, or None; and the request's parse error, if any."""
        node = self.state.node_info
        me = Coordinator(nwk=node.nwk, ieee=node.ieee, endpoints=self._endpoints, neighbors=self._neighbors)
        result = zdo_answer(packet.cluster_id, packet.data.serialize(), me, SIM, broadcast=broadcast)
        if result.reply is None:
            return None, result.error
        reply = t.ZigbeePacket(
            src=t.AddrModeAddress(addr_mode=t.AddrMode.NWK, address=node.nwk),
            src_ep=t.uint8_t(0),
            dst=t.AddrModeAddress(addr_mode=t.AddrMode.NWK, address=t.NWK(to)),
            dst_ep=t.uint8_t(0),
            tsn=t.uint8_t(result.reply.tsn),
            profile_id=t.uint16_t(0),
            cluster_id=t.uint16_t(result.reply.cluster_id),
            data=t.SerializableBytes(result.reply.payload),
            lqi=lqi,
            rssi=rssi,
        )
        return reply, result.error

    def _loopback(self, packet: t.ZigbeePacket) -> None:
        if packet.dst_ep != 0 or packet.profile_id != 0:
            return  # ZCL to ourselves: nothing listens
        if packet.cluster_id & 0x8000:
            return  # a response to ourselves: nothing asked
        reply, error = self._zdo_reply(packet, to=self.state.node_info.nwk, lqi=255, rssi=0)
        if error is not None:
            LOGGER.debug("sim coordinator: unparsable ZDO to itself: %r (%s)", packet, error)
        # Effects (permit joining) are not applied here: zigpy opens the sim's network
        # through permit_ncp, as it does an NCP's.
        if reply is None:
            return
        asyncio.get_running_loop().call_soon(self.packet_received, reply)

    def _neighbors(self) -> list[zdo_t.Neighbor]:
        joined = [d for d in self.han.devices.values() if d.online]
        N = zdo_t.Neighbor
        table = [
            N(
                extended_pan_id=self.state.network_info.extended_pan_id,
                ieee=d.ieee,
                nwk=d.nwk,
                device_type=N.DeviceType.Router if d.spec.is_router else N.DeviceType.EndDevice,
                rx_on_when_idle=N.RxOnWhenIdle.On if d.rx_on_when_idle else N.RxOnWhenIdle.Off,
                relationship=N.Relationship.Child,
                reserved1=0,
                permit_joining=N.PermitJoins.NotAccepting,
                reserved2=0,
                depth=1,
                lqi=max(20, round(255 * (1 - d.spec.loss))),
            )
            for d in joined
        ]
        return table

    # -- waiting for the devices -------------------------------------------------------

    async def wait_initialized(self, ieees: Sequence[t.EUI64] | None = None, *, timeout: float = 30.0) -> None:
        """Until every (given) simulated device has joined and zigpy initialised it."""
        wanted = list(ieees) if ieees is not None else list(self.han.devices)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout

        def done(ieee: t.EUI64) -> bool:
            # zigpy's is_initialized turns True once the endpoints are known, before the
            # interview has read Basic and the OTA client: wait for the interview too.
            dev = self.devices.get(ieee)
            return dev is not None and dev.is_initialized and not getattr(dev, "initializing", False)

        def missing() -> list[t.EUI64]:
            return [i for i in wanted if not done(i)]

        while missing():
            if loop.time() >= deadline:
                details = []
                for ieee in missing():
                    sim = self.han.devices.get(ieee)
                    dev = self.devices.get(ieee)
                    if dev is None:
                        what = "never joined (zigpy never heard of it)"
                    else:
                        interview = "still running" if getattr(dev, "initializing", False) else "not running (failed)"
                        what = (
                            f"node_desc={'yes' if dev.node_desc is not None else 'no'},"
                            f" endpoints={sorted(dev.endpoints)}, model={dev.model!r}, interview {interview}"
                        )
                    kind = sim.spec.kind if sim is not None else "?"
                    nwk = f"0x{sim.nwk:04X}" if sim is not None else "?"
                    details.append(f"{kind} {ieee} (nwk {nwk}): {what}")
                raise SimStartError(
                    f"{len(details)} simulated device(s) did not initialise within {timeout} s: " + "; ".join(details)
                )
            await asyncio.sleep(0.01)


async def start_sim_app(
    specs: Sequence[SimDeviceSpec],
    link: LinkModel | None = None,
    *,
    database_path: str | None = None,
    auto_form: bool = True,
    timeout: float = 30.0,
    han: SimHan | None = None,
    nvram: SimNvram | None = None,
    config: Mapping[str, Any] | None = None,
    on_started: Callable[[SimControllerApplication], Awaitable[None]] | None = None,
) -> SimControllerApplication:
    """A started sim app with every device joined and initialised by zigpy.

    ``on_started(app)`` runs after the network is up, before the wait for the devices
    (which join at once): the hub's servers they need while joining go there.

    Raises `SimStartError` naming the devices that did not initialise in ``timeout``
    seconds (the app is shut down first).
    """
    app = SimControllerApplication.new_sim(
        specs, link, database_path, han=han, nvram=nvram, config=config
    )
    await app._load_db()
    await app.startup(auto_form=auto_form)
    try:
        if on_started is not None:
            await on_started(app)
        await app.wait_initialized(timeout=timeout)
    except BaseException:
        await app.shutdown()
        raise
    return app
