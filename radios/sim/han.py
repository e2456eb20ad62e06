"""`SimHan`: the simulated air and the simulated devices behind one coordinator.

Shared contract (ARCHITECTURE.md, "The simulated HAN contract"): the sim zigpy radio
(app.py), the EZSP emulator and the ZNP emulator all put one `SimHan` behind their
coordinator::

    han = SimHan(specs, link=None)             # default LinkModel.instant() (or
                                               # realistic() if a spec says link=realistic)
    han.attach(uplink, on_join=None)           # uplink(packet), on_join(ieee, nwk)
    await han.start()                          # devices power up, join, announce
    result = await han.send(packet)            # coordinator -> device: DeliveryResult
    await han.stop()
    han.devices[ieee], han.device_by_nwk(nwk)  # SimDevice (or None for an unknown NWK)
    han.power_cycle(ieee)                      # reboot; flash (partial download) kept

Uplink packets come from the device's NWK address (AddrMode.NWK) to the coordinator
(NWK 0x0000), with real endpoints, profile, cluster, APS payload bytes, lqi and rssi.
`send` takes packets as zigpy's ``send_packet`` gets them: NWK or IEEE unicast,
broadcast (0xFFFF all, 0xFFFD receivers-on-when-idle, 0xFFFC routers; sleepy devices
get 0xFFFF broadcasts at their next poll), groups (no member: ignored, ok).

Timing, loss, the shared channel, the UART and the indirect queue are link.py's; this
module only applies them: every exchange is booked on the one `Channel` (so devices
contend), and the task sleeps until the booked end (no sleeping at all when instant).
All devices are children of the coordinator (one hop).

Optional extras beyond the contract: ``han.coordinator_ieee`` and
``han.extended_pan_id`` (set them once the network is formed: devices report them as
their parent and as UpgradeServerID), ``han.link``, ``han.channel`` (busy totals).

APS fragmentation (Zigbee 2.2.8.4.5, aps_fragments.py): a unicast longer than one frame
(``link.frame_capacity``: 82 bytes, 73 APS-secured) goes, either way, as blocks behind
the extended header, ``link.aps_window`` per APS ack, lost blocks resent; the receiving
APS layer (the device's, or the coordinator's before the host hears of it) hands up
the reassembled ASDU. Every fragmented exchange is recorded on the device
("aps_fragmented", and "aps_fragment_retry" per resent window). A broadcast or group
frame that long is refused ("message too long"): fragmentation is unicast only.
Two hooks for a coordinator whose host does the cutting and the reassembly (EmberZNet:
radios/emulate/ezsp/fragments.py): ``await han.send_fragment_window(packet, blocks)``
puts one window of host-cut blocks on the air (the device reassembles across windows),
and ``attach(..., on_fragment=callback(packet, block, total))`` hands each block of a
fragmented uplink up as it lands instead of the whole ASDU.

APS security (the coordinator's key table lives here, since the air is where frames
are secured and checked)::

    han.install_link_key(ieee, key)    # the coordinator's APS link key for a device
    han.remove_link_key(ieee); han.clear_link_keys(); han.link_key(ieee)
    han.tc_link_key = key              # the network's trust-centre link key
    han.aps_mic_failures               # secured uplinks the coordinator could not verify

A downlink whose ``tx_options`` hold ``TransmitOptions.APS_Encryption`` is secured with
the table's key for its destination or, without an entry, with ``tc_link_key``: a
trust centre that holds no application link key for a device shares only its TC link
key with it, and EmberZNet and Z-Stack secure with that one (EmberZNet's key table
holds the per-device keys, the TC link key token the rest; Z-Stack's APSME looks in
its APS link key table, then in its TCLK table). We rely on that and do not model
hashed TC link keys (EmberZNet's hashed TCLK, Z-Stack's TCLK seed): the air uses one
``tc_link_key`` for every device without an entry, and so does each device.
The device is handed the key its frame was secured with (None when unsecured); it
decides whether to drop it (device.py). A device that cannot unsecure a frame (it holds
another key) sends no APS ack, so that send ends in DeliveryResult(False, "no aps ack"). APS security is unicast only: broadcasts and
groups reach devices unsecured. An uplink the device sent secured reaches the host
with ``APS_Encryption`` when the coordinator's key for the device (entry or TC link
key) is the device's; otherwise the coordinator's MIC check fails and the frame is
dropped (counted in ``aps_mic_failures``, recorded as "uplink_aps_rejected" on the
device). Keys are never logged.
"""

from __future__ import annotations

import asyncio
import functools
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
import logging
import types
from typing import Any, Final

import zigpy.types as t

from .aps_fragments import Fragment, FragmentAck, Reassembly, split
from .device import SimDevice
from .link import Channel, LinkModel, MacAttempt
from .spec import SimDeviceSpec

__all__ = ["DeliveryResult", "SimHan"]

LOGGER = logging.getLogger(__name__)

UplinkCallback = Callable[[t.ZigbeePacket], None]
JoinCallback = Callable[[t.EUI64, t.NWK], None]
#: One received block of a fragmented uplink: the packet (its data the block's part),
#: the block number, and the block count (known from the first block only, else None)
FragmentCallback = Callable[[t.ZigbeePacket, int, "int | None"], None]


@dataclass(frozen=True)
class DeliveryResult:
    """What the coordinator learns about one downlink."""

    ok: bool
    reason: str = ""  # "" when ok; else "no ack", "no aps ack", "indirect timeout", "unknown destination", ...


@dataclass
class _Indirect:
    packet: t.ZigbeePacket
    future: asyncio.Future[DeliveryResult]
    enqueued_at: float
    broadcast: bool
    in_flight: bool = False
    aps_key: bytes | None = None  # secured when queued, as a stack secures before queueing


# What a trust centre uses when no other TC link key was configured (Zigbee 3.0, BDB 10.3)
WELL_KNOWN_TC_LINK_KEY: Final = b"ZigBeeAlliance09"


def _nwk_for(ieee: t.EUI64, taken: set[int]) -> t.NWK:
    """A stable NWK address from the IEEE (same device, same address, every run)."""
    value = int.from_bytes(ieee.serialize(), "little")
    nwk = (value ^ (value >> 16) ^ (value >> 32) ^ (value >> 48)) & 0xFFFF
    for _ in range(0xFFF7):
        if 0x0001 <= nwk <= 0xFFF7 and nwk not in taken:
            return t.NWK(nwk)
        nwk = (nwk * 0x9E37 + 0x79B9) & 0xFFFF
    raise ValueError("no free NWK address")  # pragma: no cover


def relays_for(nwks: Iterable[int], nwk: int, hops: int) -> tuple[int, ...]:
    """The routers (our own making, above the devices' addresses: 0xF000 + 8 * slot + i)
    between the coordinator and the device at ``nwk``, ``hops`` away, nearest the device
    first; ``nwks``: every device's address on the HAN. One rule for the HAN in this
    process and the hub's view of one in a child (remote.py)."""
    if hops <= 1:
        return ()
    slot = sorted(int(n) for n in nwks).index(nwk) % 0x1FF
    return tuple(0xF000 + 8 * slot + i for i in range(hops - 1))


class SimHan:
    """The air and the devices. See the module docstring for the contract."""

    def __init__(self, specs: Sequence[SimDeviceSpec], link: LinkModel | None = None) -> None:
        if link is None:
            # The specs' ``link`` key picks the model when none is given: one channel has
            # one timing, so any device asking for "realistic" makes the air realistic.
            realistic = any(s.link == "realistic" for s in specs)
            link = LinkModel.realistic() if realistic else LinkModel.instant()
        self.link: LinkModel = link
        self.channel = Channel()
        self.uart_tx = Channel()  # host -> coordinator
        self.uart_rx = Channel()  # coordinator -> host
        self.coordinator_ieee: t.EUI64 = t.EUI64.convert("00:00:00:00:00:00:00:00")
        self.extended_pan_id: t.ExtendedPanId = t.ExtendedPanId.convert("00:00:00:00:00:00:00:00")
        self._devices: dict[t.EUI64, SimDevice] = {}
        self._by_nwk: dict[int, SimDevice] = {}
        self._uplink: UplinkCallback | None = None
        self._on_fragment: FragmentCallback | None = None
        self._host_cut: dict[tuple[t.EUI64, int | None], Reassembly] = {}
        self._on_join: JoinCallback | None = None
        self._indirect: dict[t.EUI64, deque[_Indirect]] = {}
        self._started = False
        self._tasks: set[asyncio.Task[Any]] = set()
        self.frames_down = 0
        self.frames_up = 0
        self.tc_link_key: bytes = WELL_KNOWN_TC_LINK_KEY
        self._link_keys: dict[t.EUI64, bytes] = {}
        self.aps_mic_failures = 0
        taken = {s.nwk for s in specs if s.nwk is not None}
        for spec in specs:
            if spec.ieee in self._devices:
                raise ValueError(f"SimHan: two devices with IEEE {spec.ieee}")
            if spec.nwk is not None:
                if spec.nwk in self._by_nwk:
                    raise ValueError(f"SimHan: two devices with NWK 0x{spec.nwk:04X}")
                nwk = t.NWK(spec.nwk)
            else:
                nwk = _nwk_for(spec.ieee, taken)
                taken.add(nwk)
            device = SimDevice(spec, self, nwk)
            self._devices[spec.ieee] = device
            self._by_nwk[nwk] = device
            self._indirect[spec.ieee] = deque()

    # -- the contract ------------------------------------------------------------------

    @property
    def devices(self) -> Mapping[t.EUI64, SimDevice]:
        return types.MappingProxyType(self._devices)

    def device_by_nwk(self, nwk: int) -> SimDevice | None:
        return self._by_nwk.get(nwk)

    def attach(self, uplink: UplinkCallback, on_join: JoinCallback | None = None,
               on_fragment: FragmentCallback | None = None) -> None:
        """``on_fragment``: the coordinator hands fragmented uplinks to its host block by
        block (EmberZNet: the host's fragmentation library reassembles) instead of
        whole (Z-Stack, the sim app); see `FragmentCallback`."""
        self._uplink = uplink
        self._on_join = on_join
        self._on_fragment = on_fragment

    async def start(self) -> None:
        """Power every device up (each joins and sends Device_annce)."""
        if self._started:
            return
        self._started = True
        for device in self._devices.values():
            await device.power_on()

    async def stop(self) -> None:
        self._started = False
        for device in self._devices.values():
            await device.shutdown()
        for queue in self._indirect.values():
            while queue:
                item = queue.popleft()
                if not item.future.done():
                    item.future.set_result(DeliveryResult(False, "stopped"))
        for task in list(self._tasks):
            task.cancel()

    # -- the coordinator's APS key table -------------------------------------------------

    def install_link_key(self, ieee: t.EUI64, key: bytes) -> None:
        """The coordinator holds ``key`` as its APS link key with ``ieee`` (replacing one)."""
        key = bytes(key)
        if len(key) != 16:
            raise ValueError(f"SimHan: an APS link key is 16 bytes, not {len(key)}")
        self._link_keys[t.EUI64(ieee)] = key
        LOGGER.debug("SimHan: APS link key installed for %s", ieee)

    def remove_link_key(self, ieee: t.EUI64) -> None:
        self._link_keys.pop(t.EUI64(ieee), None)

    def clear_link_keys(self) -> None:
        self._link_keys.clear()

    def link_key(self, ieee: t.EUI64) -> bytes | None:
        """The table's entry for ``ieee`` (None: the device shares only the TC link key)."""
        return self._link_keys.get(t.EUI64(ieee))

    def _coordinator_key(self, ieee: t.EUI64) -> bytes:
        return self._link_keys.get(ieee, self.tc_link_key)

    def power_cycle(self, ieee: t.EUI64, off_time: float | None = None) -> None:
        """Reboot a device: RAM state is lost, its flash (partial download) is kept."""
        self._devices[ieee].power_cycle(off_time)

    async def send(self, packet: t.ZigbeePacket) -> DeliveryResult:
        """Coordinator -> device(s). Returns when the link delivered or gave up."""
        dst = packet.dst
        if dst is None:
            return DeliveryResult(False, "no destination")
        loop = asyncio.get_running_loop()
        payload_len = len(packet.data.serialize())
        self.frames_down += 1
        ready = self._uart(self.uart_tx, loop.time(), payload_len)

        if dst.addr_mode in (t.AddrMode.Broadcast, t.AddrMode.Group) and payload_len > self.link.max_aps_payload:
            await self._sleep_until(ready)
            return DeliveryResult(False, "message too long")
        if dst.addr_mode == t.AddrMode.Broadcast:
            return await self._broadcast(packet, int(dst.address), ready)
        if dst.addr_mode == t.AddrMode.Group:
            await self._sleep_until(ready)
            return DeliveryResult(True)
        if dst.addr_mode == t.AddrMode.IEEE:
            device = self._devices.get(dst.address)
        elif dst.addr_mode == t.AddrMode.NWK:
            device = self._by_nwk.get(int(dst.address))
        else:  # pragma: no cover - zigpy has no other modes
            device = None
        if device is None:
            await self._sleep_until(ready)
            return DeliveryResult(False, "unknown destination")
        aps_key = self._coordinator_key(device.ieee) if t.TransmitOptions.APS_Encryption in packet.tx_options else None
        if device.spec.is_sleepy:
            return await self._send_indirect(device, packet, ready, aps_key)
        result = await self._unicast(device, packet, ready, aps_key)
        await self._sleep_until(self._uart(self.uart_rx, loop.time(), 0))  # the confirmation
        return result

    # -- the air -----------------------------------------------------------------------

    def _uart(self, direction: Channel, now: float, payload_len: int) -> float:
        duration = self.link.uart_time(payload_len)
        if duration <= 0:
            return now
        return direction.reserve(now, duration) + duration

    @staticmethod
    async def _sleep_until(when: float) -> None:
        delay = when - asyncio.get_running_loop().time()
        if delay > 0:
            await asyncio.sleep(delay)

    def _over_hops(self, device: SimDevice, when: float, psdu: int, loss: float) -> MacAttempt:
        """One PSDU between the coordinator and ``device`` over its ``hops``: each relay
        sends it again on the same channel (with its own MAC retries); lost at any hop,
        lost. The device's loss stands for its own link; the relays' links are clean."""
        attempt = self.link.mac_transmit(self.channel, when, psdu, loss, device.link_rng)
        tries = attempt.attempts
        for _ in range(device.spec.hops - 1):
            if not attempt.delivered:
                break
            attempt = self.link.mac_transmit(self.channel, attempt.end, psdu, 0.0, device.link_rng)
            tries += attempt.attempts
        return MacAttempt(attempt.delivered, attempt.end, tries)

    def relays_of(self, nwk: int) -> tuple[int, ...]:
        """The routers between the coordinator and the device at ``nwk``, nearest the
        device first (as a source route lists them): what the emulators announce
        (EZSP incomingRouteRecordHandler, Z-Stack ZDO.SrcRtgInd). Empty for a neighbour."""
        device = self._by_nwk.get(int(nwk))
        return () if device is None else relays_for(self._by_nwk, int(nwk), device.spec.hops)

    def _frames(self, payload_len: int) -> list[int]:
        return self.link.data_psdus(payload_len)

    async def _unicast(
        self, device: SimDevice, packet: t.ZigbeePacket, start: float, aps_key: bytes | None = None
    ) -> DeliveryResult:
        """Direct transmission: data frame(s) with MAC retries, delivery, APS ack back."""
        loop = asyncio.get_running_loop()
        data = packet.data.serialize()
        if len(data) > self.link.frame_capacity(aps_key is not None):
            accepts = aps_key is None or device.aps_key_matches(aps_key)
            whole, ok, when = self._fragmented(device, data, start, aps_key is not None, accepts, downlink=True)
            if whole is not None:
                loop.call_at(when, self._deliver, device, packet.replace(data=t.SerializableBytes(whole)), False, aps_key)
            await self._sleep_until(when)
            if ok:
                return DeliveryResult(True)
            return DeliveryResult(False, "no ack" if not device.online else "no aps ack")
        when = start
        for psdu in self._frames(len(packet.data.serialize())):
            if not device.online:
                # Nobody acks: all MAC attempts are spent.
                attempt = self.link.mac_transmit(self.channel, when, psdu, 1.0, device.link_rng)
                await self._sleep_until(attempt.end)
                return DeliveryResult(False, "no ack")
            attempt = self._over_hops(device, when, psdu, device.spec.loss)
            when = attempt.end
            if not attempt.delivered:
                device.record("downlink_lost", cluster=packet.cluster_id, attempts=attempt.attempts)
                await self._sleep_until(when)
                return DeliveryResult(False, "no ack")
        loop.call_at(when, self._deliver, device, packet, False, aps_key)
        if aps_key is not None and not device.aps_key_matches(aps_key):
            # Its APS layer cannot unsecure the frame, so it sends no APS ack: the
            # sender's stack reports a delivery failure (APS retries are not modelled).
            await self._sleep_until(when)
            return DeliveryResult(False, "no aps ack")
        ack = self._over_hops(device, when, self.link.aps_ack_psdu, device.spec.loss)
        await self._sleep_until(ack.end)
        if not ack.delivered:
            device.record("aps_ack_lost", cluster=packet.cluster_id)
            return DeliveryResult(False, "no ack")
        return DeliveryResult(True)

    @staticmethod
    def _deliver(device: SimDevice, packet: t.ZigbeePacket, broadcast: bool, aps_key: bytes | None = None) -> None:
        device.deliver(packet, broadcast=broadcast, aps_key=aps_key)

    async def _broadcast(self, packet: t.ZigbeePacket, address: int, ready: float) -> DeliveryResult:
        loop = asyncio.get_running_loop()
        when = ready
        for psdu in self._frames(len(packet.data.serialize())):
            duration = self.link.frame_air_time(psdu)
            when = self.channel.reserve(when + self.link.average_backoff, duration) + duration
        for device in self._devices.values():
            if address == t.BroadcastAddress.ALL_ROUTERS_AND_COORDINATOR and not device.spec.is_router:
                continue
            if device.spec.is_sleepy:
                if address == t.BroadcastAddress.ALL_DEVICES:
                    item = _Indirect(packet, loop.create_future(), loop.time(), broadcast=True)
                    self._indirect[device.ieee].append(item)
                continue
            if device.spec.loss > 0 and device.link_rng.random() < device.spec.loss:
                continue  # broadcasts are not acked: a lost one is just lost
            loop.call_at(when, self._deliver, device, packet, True)
        await self._sleep_until(when)
        return DeliveryResult(True)

    async def _send_indirect(
        self, device: SimDevice, packet: t.ZigbeePacket, ready: float, aps_key: bytes | None = None
    ) -> DeliveryResult:
        """Queue at the parent until the device polls, or drop after the persistence time."""
        loop = asyncio.get_running_loop()
        await self._sleep_until(ready)
        item = _Indirect(packet, loop.create_future(), loop.time(), broadcast=False, aps_key=aps_key)
        queue = self._indirect[device.ieee]
        queue.append(item)
        device.record("indirect_queued", cluster=packet.cluster_id)
        try:
            async with asyncio.timeout(self.link.persistence):
                return await asyncio.shield(item.future)
        except TimeoutError:
            if not item.in_flight:
                if item in queue:
                    queue.remove(item)
                device.record("indirect_timeout", cluster=packet.cluster_id)
                return DeliveryResult(False, "indirect timeout")
            return await item.future

    async def _poll(self, device: SimDevice) -> None:
        """A sleepy device's MAC Data Request; the parent answers with queued frames."""
        loop = asyncio.get_running_loop()
        request = self.link.mac_transmit(
            self.channel, loop.time(), self.link.data_request_psdu, device.spec.loss, device.link_rng
        )
        await self._sleep_until(request.end)
        if not request.delivered:
            return
        queue = self._indirect[device.ieee]
        now = loop.time()
        while queue and device.online:
            item = queue.popleft()
            if item.future.done():
                continue
            if now - item.enqueued_at > self.link.persistence:
                item.future.set_result(DeliveryResult(False, "indirect timeout"))
                continue
            item.in_flight = True
            device.record("poll_delivered", cluster=item.packet.cluster_id, waited=now - item.enqueued_at)
            if item.broadcast:
                loop.call_soon(self._deliver, device, item.packet, True)
                result = DeliveryResult(True)
            else:
                result = await self._unicast(device, item.packet, loop.time(), item.aps_key)
            if not item.future.done():
                item.future.set_result(result)
            now = loop.time()

    async def _transmit_uplink(self, device: SimDevice, packet: t.ZigbeePacket, aps_key: bytes | None = None) -> bool:
        """Device -> coordinator (called by the device's single transmit queue).

        ``aps_key``: the key the device secured the frame with (the packet then carries
        ``APS_Encryption``), None when unsecured.
        """
        loop = asyncio.get_running_loop()
        data = packet.data.serialize()
        payload_len = len(data)
        when = loop.time()
        accepts = aps_key is None or aps_key == self._coordinator_key(device.ieee)
        if payload_len > self.link.frame_capacity(aps_key is not None) and accepts:
            # The coordinator's APS layer reassembles before the host hears of it,
            # unless its host does (on_fragment): then each block goes up as it lands.
            on_block = None
            if self._on_fragment is not None:
                on_block = functools.partial(self._block_to_host, loop, packet, aps_key is not None)
            whole, ok, when = self._fragmented(device, data, when, aps_key is not None, True, downlink=False,
                                               on_block=on_block)
            if whole is not None and on_block is None:
                packet = packet.replace(data=t.SerializableBytes(whole))
                secured = t.TransmitOptions.APS_Encryption if aps_key is not None else t.TransmitOptions.NONE
                tx_options = (packet.tx_options & ~t.TransmitOptions.APS_Encryption) | secured
                loop.call_at(self._uart(self.uart_rx, when, payload_len), self._to_host, packet.replace(tx_options=tx_options))
            await self._sleep_until(when)
            return ok
        for psdu in self._frames(payload_len):
            attempt = self._over_hops(device, when, psdu, device.spec.loss)
            when = attempt.end
            if not attempt.delivered:
                await self._sleep_until(when)
                return False
        host_at = self._uart(self.uart_rx, when, payload_len)
        if not accepts:
            # The coordinator's APS MIC check fails: the frame goes no further than its
            # radio (it is still acked at the MAC layer, as the MAC knows nothing of APS).
            self.aps_mic_failures += 1
            device.record("uplink_aps_rejected", cluster=packet.cluster_id)
            LOGGER.info("SimHan: APS MIC failure on a frame from %s (cluster 0x%04X): dropped",
                        device.ieee, packet.cluster_id)
        else:
            secured = t.TransmitOptions.APS_Encryption if aps_key is not None else t.TransmitOptions.NONE
            tx_options = (packet.tx_options & ~t.TransmitOptions.APS_Encryption) | secured
            loop.call_at(host_at, self._to_host, packet.replace(tx_options=tx_options))
        # The coordinator's APS ack back to the device (its loss is not the device's concern
        # here: no APS retries are modelled).
        ack = self._over_hops(device, when, self.link.aps_ack_psdu, device.spec.loss)
        await self._sleep_until(ack.end)
        return True

    def _block_to_host(self, loop: asyncio.AbstractEventLoop, packet: t.ZigbeePacket, secured: bool,
                       fragment: Fragment, at: float) -> None:
        secured_option = t.TransmitOptions.APS_Encryption if secured else t.TransmitOptions.NONE
        block = packet.replace(data=t.SerializableBytes(fragment.part),
                               tx_options=(packet.tx_options & ~t.TransmitOptions.APS_Encryption) | secured_option)
        total = fragment.total if fragment.block == 0 else None  # only the first block says
        host_at = self._uart(self.uart_rx, at, len(fragment.part))
        # In order: the loop's timers do not keep the order of equal times (instant link)
        if host_at <= loop.time():
            loop.call_soon(self._fragment_up, block, fragment.block, total)
        else:
            loop.call_at(host_at, self._fragment_up, block, fragment.block, total)

    def _fragment_up(self, packet: t.ZigbeePacket, block: int, total: int | None) -> None:
        self.frames_up += 1
        if self._on_fragment is None:
            return
        try:
            self._on_fragment(packet, block, total)
        except Exception:  # the coordinator's bug must not kill the air
            LOGGER.exception("SimHan: fragment callback failed for %r", packet)

    def _to_host(self, packet: t.ZigbeePacket) -> None:
        self.frames_up += 1
        if self._uplink is None:
            LOGGER.debug("SimHan: no coordinator attached, dropping %r", packet)
            return
        try:
            self._uplink(packet)
        except Exception:  # the coordinator's bug must not kill the air
            LOGGER.exception("SimHan: uplink callback failed for %r", packet)

    def _fragmented(
        self, device: SimDevice, asdu: bytes, when: float, secured: bool, accepts: bool, *, downlink: bool,
        on_block: Callable[[Fragment, float], None] | None = None,
    ) -> tuple[bytes | None, bool, float]:
        """One fragmented unicast between the coordinator and ``device`` (either way),
        window by window (aps_fragments.py). Returns the reassembled ASDU (None unless
        every block got in), whether the sender saw every window acked, and when it
        knows. ``accepts``: the receiver can unsecure the blocks (else it drops them
        and acks nothing, as for a single frame). ``on_block(fragment, at)``: each block
        the receiver got, when it got it (a coordinator that hands blocks up one by one)."""
        link = self.link
        fragments = split(asdu, link.fragment_part_size(secured))
        rx = Reassembly()
        acked_all = True
        for first in range(0, len(fragments), link.aps_window):
            missing, when = self._window(device, rx, fragments[first : first + link.aps_window], when, secured,
                                         accepts, downlink=downlink, on_block=on_block)
            if missing:
                acked_all = False
                break
        whole = rx.complete()
        device.record("aps_fragmented", downlink=downlink, blocks=len(fragments), length=len(asdu), delivered=whole is not None)
        return whole, acked_all and whole is not None, when

    def _window(
        self, device: SimDevice, rx: Reassembly, window: Sequence[Fragment], when: float, secured: bool,
        accepts: bool, *, downlink: bool, on_block: Callable[[Fragment, float], None] | None = None,
    ) -> tuple[list[Fragment], float]:
        """One window's blocks, its ack and its resends; returns the blocks never acked
        (all of them when nothing will ack) and when the sender knows."""
        link = self.link
        missing = list(window)
        for attempt in range(link.aps_max_frame_retries + 1):
            for fragment in missing:
                loss = device.spec.loss if device.online else 1.0
                tx = self._over_hops(device, when, link.fragment_psdu(len(fragment.part), secured), loss)
                when = tx.end
                if tx.delivered and accepts and (device.online or not downlink):
                    rx.receive(fragment.to_bytes())
                    if on_block is not None:
                        on_block(fragment, when)
            if not accepts or not (device.online or not downlink):
                break  # nothing will ack: the sender's ack wait runs out
            ack = rx.ack(window[0].block, len(window))
            back = self._over_hops(device, when, link.fragment_ack_psdu, device.spec.loss)
            when = back.end
            if back.delivered:
                got = FragmentAck.parse(ack.to_bytes()).blocks()
                missing = [f for f in window if f.block not in got]
            if not missing:
                break
            device.record("aps_fragment_retry", downlink=downlink, first_block=window[0].block, attempt=attempt + 1)
        return missing, when

    async def send_fragment_window(self, packet: t.ZigbeePacket, blocks: Sequence[Fragment]) -> DeliveryResult:
        """One window of a fragmented unicast whose blocks the coordinator's host cut
        (EmberZNet: the host's fragmentation library sends each block with
        EMBER_APS_OPTION_FRAGMENT; radios/emulate/ezsp/fragments.py). ``packet`` says
        where (its data is ignored), ``blocks`` are one window, numbered with the total.
        The device's reassembly lasts across the windows of one (device, tsn) and hands
        the ASDU up once complete. Ok when the device acked every block of the window."""
        loop = asyncio.get_running_loop()
        dst = packet.dst
        device = None
        if dst is not None and dst.addr_mode == t.AddrMode.NWK:
            device = self._by_nwk.get(int(dst.address))
        elif dst is not None and dst.addr_mode == t.AddrMode.IEEE:
            device = self._devices.get(dst.address)
        ready = self._uart(self.uart_tx, loop.time(), sum(len(b.part) for b in blocks))
        if device is None or not blocks:
            await self._sleep_until(ready)
            return DeliveryResult(False, "unknown destination" if device is None else "no blocks")
        if device.spec.is_sleepy:
            # Indirect fragments are not modelled: a parent holds whole frames only here.
            await self._sleep_until(ready)
            return DeliveryResult(False, "fragments to a sleepy device not modelled")
        aps_key = self._coordinator_key(device.ieee) if t.TransmitOptions.APS_Encryption in packet.tx_options else None
        accepts = aps_key is None or device.aps_key_matches(aps_key)
        key = (device.ieee, packet.tsn)
        rx = self._host_cut.setdefault(key, Reassembly())
        missing, when = self._window(device, rx, blocks, ready, aps_key is not None, accepts, downlink=True)
        whole = rx.complete()
        if whole is not None or missing:
            del self._host_cut[key]
        if whole is not None:
            device.record("aps_fragmented", downlink=True, blocks=rx.total, length=len(whole), delivered=True)
            loop.call_at(when, self._deliver, device, packet.replace(data=t.SerializableBytes(whole)), False, aps_key)
        await self._sleep_until(when)
        if not missing:
            return DeliveryResult(True)
        return DeliveryResult(False, "no ack" if not device.online else "no aps ack")

    def _device_joined(self, device: SimDevice) -> None:
        if self._on_join is not None:
            try:
                self._on_join(device.ieee, device.nwk)
            except Exception:
                LOGGER.exception("SimHan: on_join callback failed for %s", device.ieee)

    # -- conveniences ------------------------------------------------------------------

    def specs(self) -> list[SimDeviceSpec]:
        return [d.spec for d in self._devices.values()]
