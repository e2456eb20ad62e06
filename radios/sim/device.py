"""A simulated PPMID or HCALCS: ZDO, Basic, Identify and the OTA client, in real bytes.

A `SimDevice` lives inside a `SimHan` (han.py), which carries its frames over the
simulated air. Everything it hears and says is a `zigpy.types.ZigbeePacket` with the
APS payload as bytes, built and parsed with zigpy's ZDO and ZCL types; nothing here
knows the gateway.

Endpoint 1 (profile from the spec, 0x0104 by default, see spec.py): server clusters
Basic 0x0000 and Identify 0x0003; client clusters Time 0x000A and OTA Upgrade 0x0019.
The device answers the ZDO requests zigpy's interview sends (Node_Desc_req,
Active_EP_req, Simple_Desc_req), address lookups (NWK_addr_req, IEEE_addr_req),
Power_Desc_req, Match_Desc_req, Mgmt_Lqi_req / Mgmt_Rtg_req (routers), Bind/Unbind,
Mgmt_Permit_Joining_req and Mgmt_Leave_req; other unicast requests get
NOT_SUPPORTED. ZCL: Read Attributes, Write Attributes (all read-only), Discover
Attributes; anything else gets the Default Response the ZCL asks for
(UNSUP_GENERAL_COMMAND, UNSUP_CLUSTER_COMMAND, UNSUPPORTED_CLUSTER, MALFORMED_COMMAND,
never to a broadcast, never to a Default Response).

APS security (the air's side is in han.py): ``device.aps_link_key`` is the device's own
APS link key with the trust centre (None until key establishment sets it). Frames on
the clusters ``aps_required(cluster)`` names must arrive APS-secured (by default none;
OTA 0x0019 and Tunneling 0x0704 once the device holds a link key, as Smart Energy
requires); a frame secured with a key other than the device's (its own link key, else
the network's TC link key it joined with) or an unsecured frame on such a cluster is
dropped and recorded as "aps_drop". The device's own frames on those clusters go
secured with its link key.

Smart Energy registration (``security=se``, se_join.py): after joining, a device that
holds no APS link key finds the Key Establishment server (Match_Desc for 0x0800 on
profile 0x0109), runs CBKE as initiator, takes KeyData as ``aps_link_key`` and only
then starts its OTA client; a failure (or no server) makes it leave. Until it holds
its key, every OTA frame that reaches it is recorded as "ota_before_key" and dropped.
Its endpoint lists 0x0800 as a client cluster; Key Establishment frames travel on the
SE profile with NWK security only, both ways. A device that boots holding its key
(flash) skips all of this.

GBCS tunnel (issue 13, tunnel_server.py): the Tunneling server (0x0704) on the SE
endpoint (1 with ``profile=se``, else endpoint 2, SE profile, Tunneling only). Each GBCS
message it receives goes to ``device.tunnel_handler(data) -> list[bytes]`` (replies sent
back over the tunnel; by default the message is only kept in ``device.tunnel_messages``);
``device.tunnel_send(data)`` sends one of the device's own. A power cycle forgets the
tunnel (RAM).

The device's GBCS (issue 13, gbcs/peer.py): ``device.gbcs``, a `GbcsPeer` built once per
device from its spec (counters, held image and pending activation outlive a reboot, as
in a meter's non-volatile memory), is the tunnel handler. A finished download gives its
Firmware Distribution Receipt Alert and, if the image passed the checks, is held for a
CS06; a server abort drops it. A CS06 the peer accepts reboots the device into the held
download (the same path as the Upgrade End Response's release) once its response is on
the air; a future-dated one runs on a wall-clock (POSIX UTC) timer, re-armed at every
power-on. After an activation reboot the peer hears how it went (a PPMID's CS09).
``device.gbcs_certificate_pem`` is its certificate, for a hub or a test to trust.

Observability: ``device.history`` (a list of `SimEvent`: loop time, kind, details),
``device.counters`` (OTA client counters plus radio ones), ``device.state``,
``device.current_file_version``, and `wait_for` / `wait_for_event` for tests.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
import contextlib
from dataclasses import dataclass, field
import logging
import random
import time
from typing import Any, Final, Protocol

import zigpy.types as t
from zigpy.zcl import foundation
from zigpy.zcl.clusters.general import ImageUpgradeStatus
import zigpy.zdo.types as zdo_t

from eui64 import Eui64

from .gbcs import GbcsPeer, PeerOutput, peer_for_spec, receipt_hash
from .key_establishment import CLUSTER_KEY_ESTABLISHMENT
from .ota_client import (
    Activate,
    ClientConfig,
    ClientState,
    Counters,
    Flash,
    OtaClient,
    Refuse,
    SendCommand,
)
from .link import LinkModel
from .se_identity import credentials_for
from .se_join import SeJoin, SeJoinConfig
from .se_keys import SUITES, Credentials
from .signature import load_supplier_key
from .spec import PROFILE_SE, SimDeviceSpec
from .tunnel_server import Answer, TunnelFaults, TunnelServer, TunnelServerSend



class Air(Protocol):
    """What a device needs of the network it lives in (``SimHan`` provides it).

    Written here, on the device's side, so that the device does not import the HAN
    that creates it.
    """

    link: LinkModel
    coordinator_ieee: t.EUI64
    extended_pan_id: t.ExtendedPanId
    tc_link_key: bytes

    def _device_joined(self, device: SimDevice) -> None: ...
    async def _transmit_uplink(self, device: SimDevice, packet: t.ZigbeePacket, aps_key: bytes | None = None) -> bool: ...
    async def _poll(self, device: SimDevice) -> None: ...

__all__ = ["Air", "SimDevice", "SimEvent"]

LOGGER = logging.getLogger(__name__)

ENDPOINT: Final = 1
ZDO_ENDPOINT: Final = 0
COORDINATOR_NWK: Final = t.NWK(0x0000)
CLUSTER_BASIC: Final = 0x0000
CLUSTER_IDENTIFY: Final = 0x0003
CLUSTER_TIME: Final = 0x000A
CLUSTER_OTA: Final = 0x0019
CLUSTER_TUNNELING: Final = 0x0704
# Smart Energy: frames on these clusters must be APS-secured once a link key is established
SE_APS_CLUSTERS: Final = frozenset({CLUSTER_OTA, CLUSTER_TUNNELING})
SERVER_CLUSTERS: Final = (CLUSTER_BASIC, CLUSTER_IDENTIFY)
# The Tunneling server lives on a Smart Energy endpoint (Match_Desc matches profiles
# exactly): endpoint 1 when that is SE, else this second endpoint (SE, Tunneling only).
TUNNEL_ENDPOINT: Final = 2
CLIENT_CLUSTERS: Final = (CLUSTER_TIME, CLUSTER_OTA)
# Smart Energy device ids: Prepayment Terminal (PPMID), Load Control Device (HCALCS)
DEVICE_TYPE: Final = {"ppmid": 0x0507, "hcalcs": 0x0505}
STACK_COMPLIANCE_R22: Final = 22 << 9  # server mask bits 9..15: stack compliance revision

Status = foundation.Status
GC = foundation.GeneralCommand
Dir = foundation.Direction


@dataclass(frozen=True)
class SimEvent:
    time: float
    kind: str
    detail: dict[str, Any] = field(default_factory=dict)

    def __repr__(self) -> str:
        return f"SimEvent({self.time:.3f}, {self.kind!r}, {self.detail!r})"


@dataclass
class RadioCounters:
    boots: int = 0
    joins: int = 0
    power_cycles: int = 0
    polls: int = 0
    frames_received: int = 0
    frames_sent: int = 0
    uplink_lost: int = 0
    default_responses_sent: int = 0
    zdo_requests: int = 0
    attribute_reads: int = 0
    aps_secured_received: int = 0
    aps_secured_sent: int = 0
    aps_drops: int = 0


def _zdo_rsp_payload(*fields: Any) -> bytes:
    return b"".join(f.serialize() for f in fields)


class SimDevice:
    """One simulated device. Created by `SimHan`; powered by ``han.start()``."""

    def __init__(self, spec: SimDeviceSpec, han: Air, nwk: t.NWK) -> None:
        self.spec = spec
        self.ieee: t.EUI64 = spec.ieee
        self.nwk: t.NWK = nwk
        self._han = han
        seed = spec.seed if spec.seed is not None else int.from_bytes(spec.ieee.serialize(), "little")
        self.rng = random.Random(seed)  # device behaviour (jitter)
        self.link_rng = random.Random(seed ^ 0x5EED_5EED)  # its radio link (loss, backoff)
        self.flash = Flash(current_file_version=spec.file_version)
        self.counters = Counters()
        self.radio = RadioCounters()
        self.history: list[SimEvent] = []
        self.client: OtaClient | None = None
        self.powered = False
        self.joined = False
        self._tsn = seed & 0xFF
        self._server_ep = ENDPOINT
        self._report_version_on_boot = False
        self._inbox: asyncio.Queue[tuple[t.ZigbeePacket, bool, bytes | None]] | None = None
        self._outbox: asyncio.Queue[tuple[t.ZigbeePacket, bytes | None]] | None = None
        # The device's APS link key with the trust centre (set by key establishment);
        # kept in its flash, so a power cycle keeps it.
        self.aps_link_key: bytes | None = None
        # Clusters that must be APS-secured; None: the Smart Energy rule (SE_APS_CLUSTERS
        # once aps_link_key is set, none before).
        self.aps_secured_clusters: frozenset[int] | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._lifecycle: set[asyncio.Task[Any]] = set()
        self._timer: asyncio.TimerHandle | None = None
        self._fast_until = 0.0
        self._poll_wakeup: asyncio.Event | None = None
        self._polls_allowed = asyncio.Event()  # cleared by hold_polls()
        self._polls_allowed.set()
        self._waiters: list[tuple[Callable[[SimDevice], bool], asyncio.Future[None]]] = []
        # Smart Energy registration (security=se): one per boot while no key is held.
        self.se: SeJoin | None = None
        self._ke_rng = random.Random(seed ^ 0xCB4E_0800)
        self._ke_seed = seed ^ 0x1D_0800
        self._credentials: Credentials | None = None
        # The GBCS tunnel; its handler is the device's GBCS peer (a test may replace it).
        self.tunnel_messages: list[bytes] = []
        self.gbcs: GbcsPeer = peer_for_spec(spec)
        self.tunnel_handler: Callable[[bytes], list[bytes]] = self._gbcs_message
        self._gbcs_timer: asyncio.TimerHandle | None = None
        # Set by an activation reboot (did the image take?), told to the peer at the next boot.
        self._activated: bool | None = None
        self.tunnel = TunnelServer(
            handler=lambda data: self.tunnel_handler(data),
            faults=TunnelFaults(spec.tunnel_busy, spec.tunnel_no_ids, spec.tunnel_drop, spec.tunnel_refuse),
        )
        self.tunnel_endpoint = ENDPOINT if spec.profile == PROFILE_SE else TUNNEL_ENDPOINT
        self._tunnel_peer_ep = ENDPOINT

    # -- facts -----------------------------------------------------------------------

    def __repr__(self) -> str:
        return f"<SimDevice {self.spec.kind} {self.ieee} nwk=0x{self.nwk:04X} v=0x{self.current_file_version:08X} {self.state}>"

    @property
    def gbcs_certificate_pem(self) -> str:
        """The device's GBCS digital-signing certificate (PEM): what a hub trusts it by."""
        return self.gbcs.certificate_pem

    @property
    def current_file_version(self) -> int:
        return self.flash.current_file_version

    @property
    def image_upgrade_status(self) -> ImageUpgradeStatus:
        return ImageUpgradeStatus(self.flash.status)

    @property
    def file_offset(self) -> int:
        return self.flash.offset

    @property
    def state(self) -> str:
        if not self.powered:
            return "off"
        if not self.joined:
            return "left"
        if self.client is None and self.se is not None and self.se.active:
            return "key_establishment"
        return self.client.state.value if self.client is not None else "booting"

    @property
    def se_security(self) -> bool:
        """A Smart Energy device: registers with key establishment after joining."""
        return self.spec.security == "se"

    @property
    def awaiting_key(self) -> bool:
        """An SE device without its APS link key: no OTA yet, either way."""
        return self.se_security and self.aps_link_key is None

    @property
    def client_clusters(self) -> tuple[int, ...]:
        return (*CLIENT_CLUSTERS, CLUSTER_KEY_ESTABLISHMENT) if self.se_security else CLIENT_CLUSTERS

    @property
    def rx_on_when_idle(self) -> bool:
        return not self.spec.is_sleepy

    @property
    def online(self) -> bool:
        return self.powered and self.joined

    def aps_required(self, cluster: int) -> bool:
        """Must frames on this (non-ZDO) cluster be APS-secured, both ways?"""
        if self.aps_secured_clusters is not None:
            return cluster in self.aps_secured_clusters
        return self.aps_link_key is not None and cluster in SE_APS_CLUSTERS

    def events(self, kind: str) -> list[SimEvent]:
        return [e for e in self.history if e.kind == kind]

    # -- recording and waiting -------------------------------------------------------

    def _now(self) -> float:
        return asyncio.get_running_loop().time()

    def record(self, kind: str, **detail: Any) -> None:
        try:
            now = self._now()
        except RuntimeError:
            now = 0.0
        self.history.append(SimEvent(now, kind, detail))
        LOGGER.debug("%s 0x%04X %s %s", self.spec.kind, self.nwk, kind, detail)
        self._check_waiters()

    def _check_waiters(self) -> None:
        for pred, fut in list(self._waiters):
            if fut.done():
                self._waiters.remove((pred, fut))
                continue
            try:
                ok = pred(self)
            except Exception as exc:  # a test's predicate failing is the test's error
                fut.set_exception(exc)
                continue
            if ok:
                fut.set_result(None)

    async def wait_for(self, predicate: Callable[[SimDevice], bool], timeout: float) -> None:
        """Until ``predicate(device)`` holds (checked at every recorded event and poll)."""
        if predicate(self):
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        entry = (predicate, fut)
        self._waiters.append(entry)
        try:
            async with asyncio.timeout(timeout):
                await fut
        except TimeoutError:
            raise TimeoutError(
                f"{self!r}: condition not reached in {timeout} s; last events: {self.history[-8:]}"
            ) from None
        finally:
            with contextlib.suppress(ValueError):
                self._waiters.remove(entry)

    async def wait_for_event(self, kind: str, timeout: float, *, since: int = 0) -> SimEvent:
        """The first event of ``kind`` at history index >= ``since``."""
        await self.wait_for(lambda d: any(e.kind == kind for e in d.history[since:]), timeout)
        return next(e for e in self.history[since:] if e.kind == kind)

    # -- power -----------------------------------------------------------------------

    def _spawn(self, coro: Any, *, lifecycle: bool = False) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(coro)
        bucket = self._lifecycle if lifecycle else self._tasks
        bucket.add(task)
        task.add_done_callback(bucket.discard)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        if not task.cancelled() and task.exception() is not None:
            exc = task.exception()
            LOGGER.error("%r: task failed", self, exc_info=exc)
            self.record("crash", error=repr(exc))

    async def power_on(self) -> None:
        """Boot: join the network, announce, start the OTA client (resuming from flash)."""
        if self.powered:
            return
        loop = asyncio.get_running_loop()
        self.powered = True
        self.radio.boots += 1
        self._inbox = asyncio.Queue()
        self._outbox = asyncio.Queue()
        self._poll_wakeup = asyncio.Event()
        self.client = None
        self.record(
            "boot",
            boot=self.radio.boots,
            file_version=self.flash.current_file_version,
            status=ImageUpgradeStatus(self.flash.status).name,
            offset=self.flash.offset,
        )
        self._spawn(self._inbox_worker())
        self._spawn(self._outbox_worker())
        self._join(rejoin=self.radio.boots > 1)
        if self._activated is not None:
            ok, self._activated = self._activated, None
            for message in self.gbcs.on_activated(ok, time.time()):
                self.tunnel_send(message)  # sent once the hub opens the tunnel again
        self._rearm_gbcs()
        if self.awaiting_key:
            self._start_registration()
        else:
            if self.se_security:
                self.record("ke_skipped", reason="APS link key held in flash")
            self._start_ota(loop.time())
        if self.spec.is_sleepy:
            self._spawn(self._poll_loop())

    def _start_ota(self, now: float) -> None:
        """The OTA client: at boot, or for an SE device once it holds its link key
        (it does not query for images before it is registered)."""
        self.client = OtaClient(self._client_config(), self.flash, self.rng, self.counters, self._client_event)
        if self._report_version_on_boot:
            self._report_version_on_boot = False
            self._send_report_version()
        self._apply(self.client.boot(now))

    # -- Smart Energy registration (se_join.Host) ---------------------------------------

    def _start_registration(self) -> None:
        s = self.spec
        cfg = SeJoinConfig(
            ieee=Eui64.from_air(self.ieee).written,
            trust_center_ieee=Eui64.from_air(self._han.coordinator_ieee).written,
            fault=s.cbke_fail,
            server_wait=s.ke_server_wait,
            attempts=s.ke_attempts,
            retry_delay=s.ke_retry_delay,
            timeout=s.ke_timeout,
        )
        self.se = SeJoin(self, cfg, self._load_credentials, self._ke_rng)
        self.se.start()

    def _load_credentials(self) -> Credentials:
        """What the device holds (computed once, in a worker thread: curve arithmetic)."""
        if self._credentials is None:
            s = self.spec
            assert s.cbke_cert is not None and s.cbke_key is not None and s.cbke_ca is not None  # the spec's check
            # Its own generator: the result must not depend on which thread or boot asks.
            rng = random.Random(self._ke_seed)
            self._credentials = credentials_for(s.cbke_suite, s.cbke_cert, s.cbke_key, s.cbke_ca, self.ieee, s.cbke_fail, rng)
        return self._credentials

    def se_send_match_desc(self) -> int:
        tsn = self._next_tsn()
        clusters = t.LVList[t.uint16_t, t.uint8_t]
        payload = _zdo_rsp_payload(
            COORDINATOR_NWK, t.uint16_t(PROFILE_SE), clusters([CLUSTER_KEY_ESTABLISHMENT]), clusters([])
        )
        self.record("ke_discovery", tsn=tsn)
        self._send_zdo(zdo_t.ZDOCmd.Match_Desc_req, tsn, payload)
        return tsn

    def se_send_command(self, command_id: int, payload: bytes, dst_ep: int) -> None:
        self._send_zcl(
            CLUSTER_KEY_ESTABLISHMENT,
            general=False,
            command_id=command_id,
            direction=Dir.Client_to_Server,
            payload=payload,
            dst_ep=dst_ep,
            profile=PROFILE_SE,
        )

    def se_refuse(self, request: object, status: int) -> None:
        if isinstance(request, tuple):
            packet, hdr, broadcast = request
            self._default_response(packet, hdr, Status(status), broadcast)

    def se_established(self, suite: int, key_data: bytes, seconds: float) -> None:
        if not self.powered:
            return
        self.aps_link_key = bytes(key_data)  # the air now requires APS on OTA and Tunneling
        attempts = self.se.client.counters.attempts if self.se is not None and self.se.client is not None else 0
        self.record("ke_established", suite=suite, seconds=round(seconds, 3), attempts=attempts)
        self._start_ota(self._now())

    def se_failed(self, reason: str) -> None:
        if not self.powered:
            return
        self.record("ke_failed", reason=reason)
        self.leave(rejoin=False)

    def _join(self, *, rejoin: bool) -> None:
        self.joined = True
        self.radio.joins += 1
        self._fast_until = self._now() + self.spec.join_fast_poll
        self.record("join", nwk=self.nwk, rejoin=rejoin)
        self._han._device_joined(self)
        capability = self._mac_capability()
        payload = _zdo_rsp_payload(self.nwk, self.ieee, t.uint8_t(capability))
        self._send_zdo(zdo_t.ZDOCmd.Device_annce, self._next_tsn(), payload)

    def power_off(self, reason: str = "power off") -> None:
        """Lose power: RAM (the OTA client, queues, timers) is gone; flash stays."""
        if not self.powered:
            return
        self.record("power_off", reason=reason)
        self.powered = False
        self.joined = False
        if self.se is not None:
            self.se.stop()
            self.se = None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._gbcs_timer is not None:
            self._gbcs_timer.cancel()
            self._gbcs_timer = None
        for task in list(self._tasks):
            task.cancel()
        self._tasks.clear()
        self.client = None
        self.tunnel.forget()
        self._inbox = None
        self._outbox = None

    def power_cycle(self, off_time: float | None = None) -> None:
        """Reboot (power off now, on after ``off_time`` or the spec's reboot_time)."""
        self.radio.power_cycles += 1
        self.power_off("power cycle")
        delay = self.spec.reboot_time if off_time is None else off_time
        self._spawn(self._boot_after(delay), lifecycle=True)

    async def _boot_after(self, delay: float) -> None:
        if delay > 0:
            await asyncio.sleep(delay)
        await self.power_on()

    async def shutdown(self) -> None:
        """Stop everything (the simulation ends)."""
        self.power_off("stop")
        for task in list(self._lifecycle):
            task.cancel()
        for _, fut in self._waiters:
            if not fut.done():
                fut.cancel()

    # -- activation ------------------------------------------------------------------

    def _activate(self, action: Activate) -> None:
        target = self.flash.target
        self.power_off("activate")
        if self.spec.activation_fails:
            self.record("activation_failed", kept=self.flash.current_file_version, image=action.file_version)
        else:
            self.flash.current_file_version = action.file_version
        self._activated = not self.spec.activation_fails
        self.flash.erase()
        self._report_version_on_boot = True
        self.record(
            "rebooting_into",
            file_version=self.flash.current_file_version,
            image=None if target is None else target.file_version,
        )
        self._spawn(self._boot_after(self.spec.reboot_time), lifecycle=True)

    # -- OTA client plumbing ---------------------------------------------------------

    def _client_config(self) -> ClientConfig:
        s = self.spec
        assert s.manufacturer_code is not None and s.image_type is not None  # filled by the spec
        assert s.hardware_version is not None and s.max_data_size is not None
        return ClientConfig(
            ieee=self.ieee,
            manufacturer_code=s.manufacturer_code,
            image_type=s.image_type,
            hardware_version=s.hardware_version,
            max_data_size=s.max_data_size,
            page_requests=s.page_requests,
            page_size=s.page_size,
            response_spacing_ms=s.response_spacing_ms,
            min_block_period_ms=s.min_block_period_ms,
            query_delay=s.query_delay,
            query_interval=s.query_interval,
            notify_delay=s.notify_delay,
            response_timeout=s.response_timeout,
            max_retries=s.max_retries,
            wait_interval=s.wait_interval,
            self_activate_after=s.self_activate_after,
            timeout_policy=s.timeout_policy,
            activation_policy=s.activation_policy,
            corrupt=s.corrupt,
            flash_time=self._han.link.flash_time,
            supplier_key=None if s.supplier_key is None else load_supplier_key(s.supplier_key),
        )

    def _apply(self, actions: list[Any], *, request: tuple[t.ZigbeePacket, foundation.ZCLHeader, bool] | None = None) -> None:
        for action in actions:
            if isinstance(action, SendCommand):
                self._send_ota(action)
            elif isinstance(action, Activate):
                # Out of the current task: activation powers off (cancelling workers).
                asyncio.get_running_loop().call_soon(self._activate_if_powered, action)
            elif isinstance(action, Refuse) and request is not None:
                packet, hdr, broadcast = request
                self._default_response(packet, hdr, action.status, broadcast)
        self._rearm()

    def _activate_if_powered(self, action: Activate) -> None:
        if self.powered:
            self._activate(action)

    def _rearm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self.client is None or not self.powered:
            return
        deadline = self.client.get_timer()
        if deadline is not None:
            self._timer = asyncio.get_running_loop().call_at(deadline, self._on_timer)
        if self._poll_wakeup is not None and self.client.busy:
            self._poll_wakeup.set()

    def _on_timer(self) -> None:
        self._timer = None
        if self.client is None or not self.powered:
            return
        self._apply(self.client.handle_timer(self._now()))

    # -- sending -----------------------------------------------------------------------

    def _next_tsn(self) -> int:
        self._tsn = (self._tsn + 1) & 0xFF
        return self._tsn

    def _mac_capability(self) -> zdo_t.MACCapabilityFlags:
        flags = zdo_t.MACCapabilityFlags.AllocateAddress
        if self.spec.is_router:
            flags |= zdo_t.MACCapabilityFlags.FullFunctionDevice
        if not self.spec.is_sleepy:
            flags |= zdo_t.MACCapabilityFlags.MainsPowered | zdo_t.MACCapabilityFlags.RxOnWhenIdle
        return flags

    def _uplink(self, *, profile: int, cluster: int, src_ep: int, dst_ep: int, tsn: int, data: bytes) -> None:
        if self._outbox is None or not self.online:
            return
        loss = self.spec.loss
        packet = t.ZigbeePacket(
            src=t.AddrModeAddress(addr_mode=t.AddrMode.NWK, address=self.nwk),
            src_ep=t.uint8_t(src_ep),
            dst=t.AddrModeAddress(addr_mode=t.AddrMode.NWK, address=COORDINATOR_NWK),
            dst_ep=t.uint8_t(dst_ep),
            tsn=t.uint8_t(tsn),
            profile_id=t.uint16_t(profile),
            cluster_id=t.uint16_t(cluster),
            data=t.SerializableBytes(data),
            lqi=max(20, round(255 * (1 - loss))),
            rssi=round(-40 - 50 * loss),
        )
        # Key Establishment runs before there is a key: NWK security only, always.
        aps_key = (
            self.aps_link_key
            if profile != 0x0000 and cluster != CLUSTER_KEY_ESTABLISHMENT and self.aps_required(cluster)
            else None
        )
        if aps_key is not None:
            packet = packet.replace(tx_options=t.TransmitOptions.APS_Encryption)
            self.radio.aps_secured_sent += 1
        self._outbox.put_nowait((packet, aps_key))
        if self.spec.is_sleepy:
            # An SE sleepy device polls fast after sending, to pick up the answer.
            self._fast_until = max(self._fast_until, self._now() + self.spec.response_timeout)
            if self._poll_wakeup is not None:
                self._poll_wakeup.set()

    async def _outbox_worker(self) -> None:
        assert self._outbox is not None
        outbox = self._outbox
        while True:
            packet, aps_key = await outbox.get()
            ok = await self._han._transmit_uplink(self, packet, aps_key)
            self.radio.frames_sent += 1
            if not ok:
                self.radio.uplink_lost += 1
                self.record("uplink_lost", cluster=packet.cluster_id, data=packet.data.serialize().hex())
            outbox.task_done()  # _activate_after_sending waits for the queue to drain

    def _send_zdo(self, command: int, tsn: int, payload: bytes) -> None:
        self._uplink(
            profile=0x0000,
            cluster=command,
            src_ep=ZDO_ENDPOINT,
            dst_ep=ZDO_ENDPOINT,
            tsn=tsn,
            data=t.uint8_t(tsn).serialize() + payload,
        )

    def _send_zcl(
        self,
        cluster: int,
        *,
        general: bool,
        command_id: int,
        direction: foundation.Direction,
        payload: bytes,
        tsn: int | None = None,
        disable_default_response: bool = True,
        dst_ep: int | None = None,
        profile: int | None = None,
        src_ep: int = ENDPOINT,
    ) -> None:
        hdr = foundation.ZCLHeader(
            frame_control=foundation.FrameControl(
                frame_type=foundation.FrameType.GLOBAL_COMMAND if general else foundation.FrameType.CLUSTER_COMMAND,
                is_manufacturer_specific=False,
                direction=direction,
                disable_default_response=disable_default_response,
                reserved=0,
            ),
            tsn=self._next_tsn() if tsn is None else tsn,
            command_id=command_id,
        )
        self._uplink(
            profile=self.spec.profile if profile is None else profile,
            cluster=cluster,
            src_ep=src_ep,
            dst_ep=self._server_ep if dst_ep is None else dst_ep,
            tsn=hdr.tsn,
            data=hdr.serialize() + payload,
        )

    def _send_ota(self, action: SendCommand) -> None:
        self._send_zcl(
            CLUSTER_OTA,
            general=False,
            command_id=action.command_id,
            direction=Dir.Client_to_Server,
            payload=action.payload,
            disable_default_response=action.disable_default_response,
        )

    def _send_report_version(self) -> None:
        record = foundation.Attribute(
            attrid=0x0002,
            value=foundation.TypeValue(type=foundation.DataTypeId.uint32, value=t.uint32_t(self.current_file_version)),
        )
        self.record("report_attributes", attrid=0x0002, value=self.current_file_version)
        self._send_zcl(
            CLUSTER_OTA,
            general=True,
            command_id=GC.Report_Attributes,
            direction=Dir.Client_to_Server,
            payload=t.List[foundation.Attribute]([record]).serialize(),
        )

    def send_zcl_frame(self, cluster: int, frame: Callable[[int], bytes]) -> None:
        """A ZCL frame built elsewhere (the background traffic, traffic.py) from endpoint 1
        to the hub's, through the one transmit queue: ``frame(tsn)`` gives its bytes."""
        tsn = self._next_tsn()
        self._uplink(profile=self.spec.profile, cluster=cluster, src_ep=ENDPOINT, dst_ep=self._server_ep, tsn=tsn, data=frame(tsn))

    def _default_response(self, packet: t.ZigbeePacket, hdr: foundation.ZCLHeader, status: Status, broadcast: bool) -> None:
        # ZCL 2.5.12.2: never to a broadcast, never to a Default Response.
        if broadcast or (hdr.frame_control.is_general and hdr.command_id == GC.Default_Response):
            return
        self.radio.default_responses_sent += 1
        self.record("default_response", cluster=packet.cluster_id, command_id=hdr.command_id, status=status.name)
        self._send_zcl(
            packet.cluster_id,
            general=True,
            command_id=GC.Default_Response,
            direction=hdr.direction.flip(),
            payload=t.uint8_t(hdr.command_id).serialize() + status.serialize(),
            tsn=hdr.tsn,
            dst_ep=packet.src_ep,
            profile=PROFILE_SE if packet.cluster_id in (CLUSTER_KEY_ESTABLISHMENT, CLUSTER_TUNNELING) else None,
            src_ep=packet.dst_ep if packet.dst_ep not in (None, 0xFF) else ENDPOINT,
        )

    # -- receiving ---------------------------------------------------------------------

    def deliver(self, packet: t.ZigbeePacket, *, broadcast: bool = False, aps_key: bytes | None = None) -> None:
        """The radio hands a received frame to the device (called by the han).

        ``aps_key``: the key the sender secured the frame with at the APS layer, None
        for an unsecured frame.
        """
        if not self.online or self._inbox is None:
            return
        self._inbox.put_nowait((packet, broadcast, aps_key))

    async def _inbox_worker(self) -> None:
        assert self._inbox is not None
        inbox = self._inbox
        while True:
            packet, broadcast, aps_key = await inbox.get()
            self.radio.frames_received += 1
            try:
                if self._aps_accepts(packet, aps_key):
                    self._handle(packet, broadcast)
            except Exception as exc:  # a device never crashes on a frame: log it instead
                LOGGER.exception("%r: failed to handle %r", self, packet)
                self.record("handler_error", error=repr(exc), data=packet.data.serialize().hex())

    def aps_key_matches(self, aps_key: bytes) -> bool:
        """Can this device unsecure a frame secured with ``aps_key``? Its key with the
        trust centre is its own link key once it holds one, else the network's TC link
        key it joined with; another key fails the APS MIC check."""
        ours = self.aps_link_key if self.aps_link_key is not None else self._han.tc_link_key
        return aps_key == ours

    def _aps_accepts(self, packet: t.ZigbeePacket, aps_key: bytes | None) -> bool:
        """The APS layer's check before the frame reaches ZDO or ZCL."""
        cluster = int(packet.cluster_id)
        if aps_key is not None:
            if not self.aps_key_matches(aps_key):
                self.radio.aps_drops += 1
                self.record("aps_drop", cluster=cluster, reason="secured with another key")
                return False
            self.radio.aps_secured_received += 1
            return True
        if packet.profile_id != 0x0000 and self.aps_required(cluster):
            self.radio.aps_drops += 1
            self.record("aps_drop", cluster=cluster, reason="not APS-secured")
            return False
        return True

    def _handle(self, packet: t.ZigbeePacket, broadcast: bool) -> None:
        data = packet.data.serialize()
        if packet.cluster_id == CLUSTER_OTA and packet.profile_id != 0x0000 and self.awaiting_key:
            # An SE device takes no OTA before it is registered: tests assert on this.
            self.record("ota_before_key", data=data.hex(), broadcast=broadcast)
            return
        if packet.dst_ep == ZDO_ENDPOINT and packet.profile_id == 0x0000:
            self._handle_zdo(packet, data, broadcast)
        elif packet.dst_ep in (ENDPOINT, self.tunnel_endpoint, 0xFF):
            self._handle_zcl(packet, data, broadcast)
        else:
            self.record("ignored", reason=f"endpoint {packet.dst_ep}", cluster=packet.cluster_id)

    # ZDO ------------------------------------------------------------------------------

    def _node_descriptor(self) -> zdo_t.NodeDescriptor:
        return zdo_t.NodeDescriptor(
            logical_type=zdo_t.LogicalType.Router if self.spec.is_router else zdo_t.LogicalType.EndDevice,
            complex_descriptor_available=0,
            user_descriptor_available=0,
            reserved=0,
            aps_flags=0,
            frequency_band=zdo_t.NodeDescriptor.FrequencyBand.Freq2400MHz,
            mac_capability_flags=self._mac_capability(),
            manufacturer_code=self.spec.manufacturer_code,
            maximum_buffer_size=82,
            maximum_incoming_transfer_size=82,
            server_mask=STACK_COMPLIANCE_R22,
            maximum_outgoing_transfer_size=82,
            descriptor_capability_field=zdo_t.NodeDescriptor.DescriptorCapability.NONE,
        )

    @property
    def endpoints(self) -> list[int]:
        return sorted({ENDPOINT, self.tunnel_endpoint})

    def _server_clusters(self, endpoint: int) -> list[int]:
        clusters = list(SERVER_CLUSTERS) if endpoint == ENDPOINT else []
        return clusters + [CLUSTER_TUNNELING] if endpoint == self.tunnel_endpoint else clusters

    def simple_descriptor(self, endpoint: int = ENDPOINT) -> zdo_t.SimpleDescriptor:
        return zdo_t.SizePrefixedSimpleDescriptor(
            endpoint=endpoint,
            profile=self.spec.profile if endpoint == ENDPOINT else PROFILE_SE,
            device_type=DEVICE_TYPE[self.spec.kind],
            device_version=0,
            input_clusters=self._server_clusters(endpoint),
            output_clusters=list(self.client_clusters) if endpoint == ENDPOINT else [],
        )

    def _power_descriptor(self) -> zdo_t.PowerDescriptor:
        pd = zdo_t.PowerDescriptor
        if self.spec.is_sleepy:
            return pd(
                current_power_mode=zdo_t.CurrentPowerMode.RxOnPeriodically,
                available_power_sources=zdo_t.PowerSources.RechargeableBattery,
                current_power_source=zdo_t.PowerSources.RechargeableBattery,
                current_power_source_level=zdo_t.PowerSourceLevel.Percent100,
            )
        sources = zdo_t.PowerSources.MainsPower
        if self.spec.kind == "ppmid":
            sources |= zdo_t.PowerSources.RechargeableBattery
        return pd(
            current_power_mode=zdo_t.CurrentPowerMode.RxOnSyncedWithNodeDesc,
            available_power_sources=sources,
            current_power_source=zdo_t.PowerSources.MainsPower,
            current_power_source_level=zdo_t.PowerSourceLevel.Percent100,
        )

    def _handle_zdo(self, packet: t.ZigbeePacket, data: bytes, broadcast: bool) -> None:
        cluster = packet.cluster_id
        try:
            command = zdo_t.ZDOCmd(cluster)
            _, param_types = zdo_t.CLUSTERS[command]
            hdr, rest = zdo_t.ZDOHeader.deserialize(cluster, data)
            args, _ = t.deserialize(rest, param_types)
        except (KeyError, ValueError) as exc:
            self.record("zdo_malformed", cluster=cluster, error=str(exc), data=data.hex())
            return
        if command == zdo_t.ZDOCmd.Match_Desc_rsp and self.se is not None:
            status, _nwk, matches = args
            self.record("zdo", command=command.name, endpoints=[int(e) for e in matches])
            self.se.match_desc_response(hdr.tsn, int(status), [int(e) for e in matches])
            return
        if command & 0x8000:
            self.record("zdo_ignored", command=command.name)
            return
        self.radio.zdo_requests += 1
        self.record("zdo", command=command.name, broadcast=broadcast)
        tsn = hdr.tsn
        rsp = zdo_t.ZDOCmd(command | 0x8000) if (command | 0x8000) in zdo_t.ZDOCmd._value2member_map_ else None
        ok = zdo_t.Status.SUCCESS
        C = zdo_t.ZDOCmd

        def reply(*fields: Any) -> None:
            assert rsp is not None
            self._send_zdo(rsp, tsn, _zdo_rsp_payload(*fields))

        if command in (C.NWK_addr_req, C.IEEE_addr_req):
            if command == C.NWK_addr_req:
                mine = args[0] == self.ieee
            else:
                mine = args[0] == self.nwk or (args[0] >= 0xFFFC)
            if not mine:
                if not broadcast:
                    reply(zdo_t.Status.DEVICE_NOT_FOUND, args[0] if command == C.NWK_addr_req else self.ieee, self.nwk)
                return
            fields: list[Any] = [ok, self.ieee, self.nwk]
            if args[1] == zdo_t.AddrRequestType.Extended:
                fields += [t.uint8_t(0), t.uint8_t(0)]
            reply(*fields)
        elif command == C.Node_Desc_req:
            if args[0] == self.nwk:
                reply(ok, self.nwk, self._node_descriptor())
            elif not broadcast:
                reply(zdo_t.Status.DEVICE_NOT_FOUND, args[0])
        elif command == C.Power_Desc_req:
            if args[0] == self.nwk:
                reply(ok, self.nwk, self._power_descriptor())
            elif not broadcast:
                reply(zdo_t.Status.DEVICE_NOT_FOUND, args[0])
        elif command == C.Active_EP_req:
            if args[0] == self.nwk:
                reply(ok, self.nwk, t.LVList[t.uint8_t, t.uint8_t](self.endpoints))
            elif not broadcast:
                reply(zdo_t.Status.DEVICE_NOT_FOUND, args[0], t.LVList[t.uint8_t, t.uint8_t]([]))
        elif command == C.Simple_Desc_req:
            nwk, ep = args
            if nwk != self.nwk:
                if not broadcast:
                    reply(zdo_t.Status.DEVICE_NOT_FOUND, nwk, t.uint8_t(0))
            elif ep in self.endpoints:
                reply(ok, self.nwk, self.simple_descriptor(ep))
            else:
                status = zdo_t.Status.NOT_ACTIVE if 1 <= ep <= 240 else zdo_t.Status.INVALID_EP
                reply(status, self.nwk, t.uint8_t(0))
        elif command == C.Match_Desc_req:
            nwk, profile, in_clusters, out_clusters = args
            # Our server clusters match the requester's client list and vice versa.
            hits = []
            for ep in self.endpoints:
                desc = self.simple_descriptor(ep)
                if profile in (desc.profile, 0xFFFF) and (
                    bool(set(in_clusters) & set(desc.input_clusters)) or bool(set(out_clusters) & set(desc.output_clusters))
                ):
                    hits.append(ep)
            if nwk not in (self.nwk,) and nwk < 0xFFFC:
                return
            if hits or not broadcast:
                reply(ok, self.nwk, t.LVList[t.uint8_t, t.uint8_t](hits))
        elif command == C.Mgmt_Lqi_req:
            if not self.spec.is_router:
                if not broadcast:
                    reply(zdo_t.Status.NOT_SUPPORTED)
                return
            parent = zdo_t.Neighbor(
                extended_pan_id=self._han.extended_pan_id,
                ieee=self._han.coordinator_ieee,
                nwk=COORDINATOR_NWK,
                device_type=zdo_t.Neighbor.DeviceType.Coordinator,
                rx_on_when_idle=zdo_t.Neighbor.RxOnWhenIdle.On,
                relationship=zdo_t.Neighbor.Relationship.Parent,
                reserved1=0,
                permit_joining=zdo_t.Neighbor.PermitJoins.NotAccepting,
                reserved2=0,
                depth=0,
                lqi=max(20, round(255 * (1 - self.spec.loss))),
            )
            table = [parent] if args[0] == 0 else []
            reply(ok, zdo_t.Neighbors(Entries=1, StartIndex=args[0], NeighborTableList=table))
        elif command == C.Mgmt_Rtg_req:
            if not self.spec.is_router:
                if not broadcast:
                    reply(zdo_t.Status.NOT_SUPPORTED)
                return
            reply(ok, zdo_t.Routes(Entries=0, StartIndex=args[0], RoutingTableList=[]))
        elif command in (C.Bind_req, C.Unbind_req):
            if not broadcast:
                reply(ok)
        elif command == C.Mgmt_Permit_Joining_req:
            if not broadcast:
                reply(ok)
        elif command == C.Mgmt_Leave_req:
            target, options = args
            if target not in (self.ieee, t.EUI64.convert("00:00:00:00:00:00:00:00")):
                if not broadcast:
                    reply(zdo_t.Status.NOT_SUPPORTED)
                return
            if not broadcast:
                reply(ok)
            rejoin = bool(options & 0x80)
            asyncio.get_running_loop().call_soon(self.leave, rejoin)
        elif command == C.Device_annce:
            return
        elif not broadcast and rsp is not None:
            reply(zdo_t.Status.NOT_SUPPORTED)

    def leave(self, rejoin: bool = False) -> None:
        """Mgmt_Leave_req: leave the network; with the rejoin flag, come back after a reboot."""
        if not self.powered:
            return
        self.record("leave", rejoin=rejoin)

        async def _later() -> None:
            await asyncio.sleep(0)  # let the Mgmt_Leave_rsp go out first
            self.power_off("leave")
            if rejoin:
                await self._boot_after(self.spec.reboot_time)

        self._spawn(_later(), lifecycle=True)

    # ZCL ------------------------------------------------------------------------------

    def _basic_attributes(self) -> dict[int, foundation.TypeValue]:
        D = foundation.DataTypeId
        s = self.spec
        assert s.model is not None and s.hardware_version is not None
        if s.kind == "hcalcs":
            power_source = 0x01  # mains (single phase)
        elif s.is_sleepy:
            power_source = 0x03  # battery
        else:
            power_source = 0x81  # mains, with battery backup (bit 7)
        v = self.current_file_version

        def tv(type_id: foundation.DataTypeId, value: Any) -> foundation.TypeValue:
            return foundation.TypeValue(type=type_id, value=value)

        return {
            0x0000: tv(D.uint8, t.uint8_t(8)),  # ZCLVersion
            0x0001: tv(D.uint8, t.uint8_t(v & 0xFF)),  # ApplicationVersion
            0x0002: tv(D.uint8, t.uint8_t(0x02)),  # StackVersion
            0x0003: tv(D.uint8, t.uint8_t(s.hardware_version & 0xFF)),  # HWVersion
            0x0004: tv(D.string, t.CharacterString(s.manufacturer_name)),
            0x0005: tv(D.string, t.CharacterString(s.model)),
            0x0006: tv(D.string, t.CharacterString("20240101")),  # DateCode
            0x0007: tv(D.enum8, t.enum8(power_source)),
            0x4000: tv(D.string, t.CharacterString(f"{v:08X}")),  # SWBuildID
            0xFFFD: tv(D.uint16, t.uint16_t(3)),
        }

    def _attributes(self, cluster: int) -> dict[int, foundation.TypeValue]:
        D = foundation.DataTypeId
        if cluster == CLUSTER_BASIC:
            return self._basic_attributes()
        if cluster == CLUSTER_IDENTIFY:
            return {
                0x0000: foundation.TypeValue(type=D.uint16, value=t.uint16_t(0)),
                0xFFFD: foundation.TypeValue(type=D.uint16, value=t.uint16_t(2)),
            }
        if cluster == CLUSTER_TIME:
            return {0xFFFD: foundation.TypeValue(type=D.uint16, value=t.uint16_t(2))}
        if cluster == CLUSTER_KEY_ESTABLISHMENT and self.se_security:
            suite_bit = SUITES[self.spec.cbke_suite].bit  # client KeyEstablishmentSuite
            return {0x0000: foundation.TypeValue(type=D.enum16, value=t.uint16_t(suite_bit))}
        if cluster == CLUSTER_OTA and self.client is not None:
            out = {}
            for attrid in self.client.SUPPORTED_ATTRIBUTES:
                value = self.client.read_attribute(attrid)
                if value is not None:
                    out[attrid] = value
            return out
        return {}

    def _handle_zcl(self, packet: t.ZigbeePacket, data: bytes, broadcast: bool) -> None:
        cluster = packet.cluster_id
        try:
            hdr, payload = foundation.ZCLHeader.deserialize(data)
        except ValueError as exc:
            self.record("zcl_malformed", cluster=cluster, error=str(exc), data=data.hex())
            return  # no header, no TSN: nothing can be answered
        if cluster not in (CLUSTER_KEY_ESTABLISHMENT, CLUSTER_TUNNELING):  # those peers' endpoints are their own
            self._server_ep = packet.src_ep if packet.src_ep is not None else self._server_ep
        fc = hdr.frame_control
        self.record(
            "zcl",
            cluster=cluster,
            command_id=hdr.command_id,
            general=fc.is_general,
            direction=hdr.direction.name,
            broadcast=broadcast,
        )
        if fc.frame_type not in (foundation.FrameType.GLOBAL_COMMAND, foundation.FrameType.CLUSTER_COMMAND):
            self._default_response(packet, hdr, Status.MALFORMED_COMMAND, broadcast)
            return
        server_clusters = self._server_clusters(packet.dst_ep) if packet.dst_ep != 0xFF else SERVER_CLUSTERS
        ours = (cluster in server_clusters and hdr.direction == Dir.Client_to_Server) or (
            cluster in self.client_clusters and hdr.direction == Dir.Server_to_Client and packet.dst_ep != TUNNEL_ENDPOINT
        )
        if not ours:
            if not (fc.is_general and hdr.command_id == GC.Default_Response):
                self._default_response(packet, hdr, Status.UNSUPPORTED_CLUSTER, broadcast)
            return
        if fc.is_manufacturer_specific:
            status = Status.UNSUP_MANUF_GENERAL_COMMAND if fc.is_general else Status.UNSUP_MANUF_CLUSTER_COMMAND
            self._default_response(packet, hdr, status, broadcast)
            return
        if fc.is_general:
            self._handle_general(packet, hdr, payload, broadcast)
        else:
            self._handle_cluster_command(packet, hdr, payload, broadcast)

    def _handle_general(self, packet: t.ZigbeePacket, hdr: foundation.ZCLHeader, payload: bytes, broadcast: bool) -> None:
        cluster = packet.cluster_id
        command = hdr.command_id
        reply_dir = hdr.direction.flip()
        if command == GC.Read_Attributes:
            try:
                ids, rest = t.List[t.uint16_t].deserialize(payload)
                if rest or not ids:
                    raise ValueError(f"{len(rest)} trailing bytes" if rest else "no attribute ids")
            except ValueError as exc:
                self.counters.malformed += 1
                self.record("malformed", cluster=cluster, command_id=command, error=str(exc))
                self._default_response(packet, hdr, Status.MALFORMED_COMMAND, broadcast)
                return
            attrs = self._attributes(cluster)
            records = []
            for attrid in ids:
                self.radio.attribute_reads += 1
                if attrid in attrs:
                    records.append(foundation.ReadAttributeRecord(attrid, Status.SUCCESS, attrs[attrid]))
                else:
                    records.append(foundation.ReadAttributeRecord(attrid, Status.UNSUPPORTED_ATTRIBUTE))
            self.record("read_attributes", cluster=cluster, ids=[int(i) for i in ids])
            self._send_zcl(
                cluster,
                general=True,
                command_id=GC.Read_Attributes_rsp,
                direction=reply_dir,
                payload=b"".join(r.serialize() for r in records),
                tsn=hdr.tsn,
                dst_ep=packet.src_ep,
            )
        elif command in (GC.Write_Attributes, GC.Write_Attributes_Undivided, GC.Write_Attributes_No_Response):
            try:
                writes, _ = t.List[foundation.Attribute].deserialize(payload)
            except (ValueError, KeyError) as exc:
                self.record("malformed", cluster=cluster, command_id=command, error=str(exc))
                self._default_response(packet, hdr, Status.MALFORMED_COMMAND, broadcast)
                return
            attrs = self._attributes(cluster)
            self.record("write_attributes_refused", cluster=cluster, ids=[int(w.attrid) for w in writes])
            if command == GC.Write_Attributes_No_Response:
                return
            out = b"".join(
                foundation.WriteAttributesStatusRecord(
                    status=Status.READ_ONLY if w.attrid in attrs else Status.UNSUPPORTED_ATTRIBUTE, attrid=w.attrid
                ).serialize()
                for w in writes
            )
            self._send_zcl(
                cluster,
                general=True,
                command_id=GC.Write_Attributes_rsp,
                direction=reply_dir,
                payload=out,
                tsn=hdr.tsn,
                dst_ep=packet.src_ep,
            )
        elif command in (GC.Discover_Attributes, GC.Discover_Attribute_Extended):
            try:
                start, rest = t.uint16_t.deserialize(payload)
                maximum, _ = t.uint8_t.deserialize(rest)
            except ValueError:
                self._default_response(packet, hdr, Status.MALFORMED_COMMAND, broadcast)
                return
            attrs = self._attributes(cluster)
            ids = sorted(a for a in attrs if a >= start)
            chosen = ids[:maximum]
            out = t.Bool(len(chosen) == len(ids)).serialize()
            for attrid in chosen:
                out += t.uint16_t(attrid).serialize() + t.uint8_t(attrs[attrid].type).serialize()
                if command == GC.Discover_Attribute_Extended:
                    out += t.uint8_t(0b001).serialize()  # readable
            self._send_zcl(
                cluster,
                general=True,
                command_id=command + 1,
                direction=reply_dir,
                payload=out,
                tsn=hdr.tsn,
                dst_ep=packet.src_ep,
            )
        elif command == GC.Default_Response:
            try:
                rsp, _ = foundation.DefaultResponse.deserialize(payload)
                self.record("default_response_received", cluster=cluster, command_id=rsp.command_id, status=rsp.status.name)
            except ValueError:
                self.record("malformed", cluster=cluster, command_id=command)
                return
            if cluster == CLUSTER_KEY_ESTABLISHMENT and self.se is not None:
                self.se.default_response(int(rsp.command_id), int(rsp.status))
            if cluster == CLUSTER_OTA and self.client is not None:
                # ABORT to an Upgrade End Request makes the client drop its image.
                self._apply(self.client.handle_default_response(rsp.command_id, rsp.status, now=self._now()))
        elif command in (
            GC.Read_Attributes_rsp,
            GC.Write_Attributes_rsp,
            GC.Report_Attributes,
            GC.Configure_Reporting_rsp,
            GC.Discover_Attributes_rsp,
        ):
            self.record("ignored", cluster=cluster, command_id=command)
        else:
            self._default_response(packet, hdr, Status.UNSUP_GENERAL_COMMAND, broadcast)

    def _handle_cluster_command(
        self, packet: t.ZigbeePacket, hdr: foundation.ZCLHeader, payload: bytes, broadcast: bool
    ) -> None:
        cluster = packet.cluster_id
        if cluster == CLUSTER_KEY_ESTABLISHMENT:
            if self.se is not None and self.se.active and not broadcast:
                self.se.command(hdr.command_id, payload, request=(packet, hdr, broadcast))
            else:
                self.record("ke_ignored", command_id=hdr.command_id, reason="not registering")
            return
        if cluster == CLUSTER_TUNNELING:
            self._handle_tunnel(packet, hdr, payload, broadcast)
            return
        if cluster == CLUSTER_OTA and self.client is not None:
            self.client.note_server(self._han.coordinator_ieee)
            actions = self.client.handle_command(hdr.command_id, payload, broadcast=broadcast, now=self._now())
            refused = any(isinstance(a, Refuse) for a in actions)
            self._apply(actions, request=(packet, hdr, broadcast))
            # Image Notify and Upgrade End Response get no specific response: answer
            # SUCCESS if asked to (disable-default-response clear). Responses don't.
            if not refused and not hdr.frame_control.disable_default_response and hdr.command_id in (0x00, 0x07):
                self._default_response(packet, hdr, Status.SUCCESS, broadcast)
            return
        if cluster == CLUSTER_BASIC and hdr.command_id == 0x00:  # Reset to Factory Defaults: no-op
            self.record("basic_reset_to_factory_defaults")
            status = Status.SUCCESS
        elif cluster == CLUSTER_IDENTIFY and hdr.command_id in (0x00, 0x01):
            self.record("identify", command_id=hdr.command_id, payload=payload.hex())
            status = Status.SUCCESS
        else:
            status = Status.UNSUP_CLUSTER_COMMAND
        if status != Status.SUCCESS or not hdr.frame_control.disable_default_response:
            self._default_response(packet, hdr, status, broadcast)

    # -- the GBCS tunnel ----------------------------------------------------------------

    # -- the device's GBCS ----------------------------------------------------------------

    def _gbcs_message(self, data: bytes) -> list[bytes]:
        """The tunnel handler: the message goes to the peer, its replies back over the tunnel."""
        self.tunnel_messages.append(bytes(data))
        out = self.gbcs.on_message(data, time.time())
        self._gbcs_apply(out)
        return list(out.replies)

    def _gbcs_apply(self, out: PeerOutput) -> None:
        for note in out.notes:
            self.record("gbcs_note", note=note)
        if out.activate is not None and out.firmware_version is not None:
            version = int.from_bytes(out.firmware_version, "big")
            self.record("gbcs_activate", file_version=version, image_hash=out.activate.hex())
            self._spawn(self._activate_after_sending(version), lifecycle=True)
        self._rearm_gbcs()

    async def _activate_after_sending(self, file_version: int) -> None:
        """Reboot into the held download once what the device queued (its CS06 response,
        its 0x00CA alert) is on the air: a power-off would drop the queue."""
        outbox = self._outbox
        if outbox is not None:
            await outbox.join()
        if self.powered and self._outbox is outbox:
            self._activate(Activate(file_version, self_activated=False))

    def _rearm_gbcs(self) -> None:
        if self._gbcs_timer is not None:
            self._gbcs_timer.cancel()
            self._gbcs_timer = None
        due = self.gbcs.get_timer()
        if due is not None and self.powered:
            # GBCS dates are wall-clock dates: the peer's timer is POSIX UTC, not loop time.
            self._gbcs_timer = asyncio.get_running_loop().call_later(max(0.0, due - time.time()), self._on_gbcs_timer)

    def _on_gbcs_timer(self) -> None:
        self._gbcs_timer = None
        if not self.powered:
            return
        out = self.gbcs.handle_timer(time.time())
        for message in out.replies:
            self.tunnel_send(message)
        self._gbcs_apply(out)

    def _client_event(self, kind: str, **detail: Any) -> None:
        """The OTA client's record, and what its downloads mean to the peer (called
        before the client erases a refused image, so the hash is of what arrived)."""
        self.record(kind, **detail)
        if kind in ("download_complete", "verify_failed"):
            ok = kind == "download_complete"
            image_hash = receipt_hash(bytes(self.flash.data))
            for message in self.gbcs.on_image_downloaded(image_hash, ok, time.time()):
                self.tunnel_send(message)
            target = self.flash.target
            if ok and target is not None:
                self.gbcs.hold_image(image_hash, target.file_version.to_bytes(4, "big"))
        elif kind == "server_abort":
            self.gbcs.drop_image()

    def _handle_tunnel(self, packet: t.ZigbeePacket, hdr: foundation.ZCLHeader, payload: bytes, broadcast: bool) -> None:
        if broadcast or packet.src is None:
            return  # a tunnel is between two devices
        if hdr.command_id == 0x00 and packet.src_ep is not None:
            self._tunnel_peer_ep = int(packet.src_ep)  # where the client's endpoint is
        self.record("tunnel_rx", command_id=hdr.command_id, length=len(payload))
        wants = not hdr.frame_control.disable_default_response
        self._tunnel_out(self.tunnel.receive(int(packet.src.address), hdr.tsn, hdr.command_id, payload, wants), packet, hdr)

    def tunnel_send(self, data: bytes) -> None:
        """A GBCS message of the device's own (an alert): over the tunnel, now or once
        one opens."""
        self.record("tunnel_originate", length=len(data))
        self._tunnel_out(self.tunnel.originate(data))

    def _tunnel_out(self, out: list[Any], packet: t.ZigbeePacket | None = None, hdr: foundation.ZCLHeader | None = None) -> None:
        for item in out:
            if isinstance(item, Answer):
                assert packet is not None and hdr is not None  # answers answer a frame
                self._default_response(packet, hdr, Status(item.status), False)
            elif isinstance(item, TunnelServerSend):
                # A response carries the request's TSN; the device's own frames a new one.
                tsn = hdr.tsn if hdr is not None and item.command_id == 0x00 and not item.wants_default_response else None
                self.record("tunnel_tx", command_id=item.command_id, length=len(item.payload))
                self._send_zcl(
                    CLUSTER_TUNNELING,
                    general=False,
                    command_id=item.command_id,
                    direction=Dir.Server_to_Client,
                    payload=item.payload,
                    tsn=tsn,
                    disable_default_response=not item.wants_default_response,
                    dst_ep=self._tunnel_peer_ep,
                    profile=PROFILE_SE,
                    src_ep=self.tunnel_endpoint,
                )

    # -- sleepy polling ----------------------------------------------------------------

    def poll_interval(self) -> float:
        now = self._now()
        registering = self.se is not None and self.se.active
        fast = now < self._fast_until or registering or (self.client is not None and self.client.busy)
        return self.spec.fast_poll if fast else self.spec.sleepy_poll

    def hold_polls(self, held: bool = True) -> None:
        """Test hook: while held, a sleepy device sends no MAC Data Request (so a test
        can say exactly when it polls, whatever the machine's load)."""
        if held:
            self._polls_allowed.clear()
        else:
            self._polls_allowed.set()

    async def _poll_loop(self) -> None:
        assert self._poll_wakeup is not None
        wake = self._poll_wakeup
        while True:
            interval = self.poll_interval()
            wake.clear()
            if interval > self.spec.fast_poll:
                # Sleep slowly, but wake early if we start expecting an answer.
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(interval):
                        await wake.wait()
                        await asyncio.sleep(self.spec.fast_poll)
            else:
                await asyncio.sleep(interval)
            await self._polls_allowed.wait()
            self.radio.polls += 1
            await self._han._poll(self)
            self._check_waiters()  # so wait_for() can wait on radio.polls
