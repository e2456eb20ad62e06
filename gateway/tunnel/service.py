"""The GBCS tunnels' asyncio side: one ``TunnelClient`` per device on a zigpy app.

Like the key-establishment service (gateway/se/service.py) it takes the device's frames
off zigpy's receive path with a packet tap (radios/tap.py; zigpy 2.4 parses nothing on
the SE profile anyway): Tunneling (0x0704) frames server -> client to our SE endpoint,
cluster-specific ones and Default Responses; everything else goes on to zigpy. It feeds
them to the device's client with ``loop.time()``, carries out what the client returns
(each frame handed to ``app.send_packet`` in its own task, a delivery failure fed back
as ``SendFailed``) and keeps one timer per client.

When a tunnel opens: once the device is registered. That is when zigpy has
interviewed it (``device_initialized``) and the security registry allows frames to it
(an SE device: its key established, the registry's listener says so), or at start for
the devices zigpy already knows. The hub then asks the device for its Tunneling server
(Match_Desc, profile 0x0109, cluster 0x0704) and opens the tunnel there. A device
with no such endpoint gets no tunnel, and messages for it fail saying so.

Security: frames go APS-encrypted once the device's key is in force
(``DeviceSecurity.aps``), NWK-only before; a frame that arrives unsecured from a
device whose key is in force is ignored by the OTA driver's rule
(``gateway.se.security.arrived_unsecured``), counted in ``unsecured_frames``.

Restarts: ``rebind(app)`` (a radio reconnect) and the device rejoining reset its
client, which asks for the tunnel again and resends what was in flight; ``close``
sends CloseTunnel for each open tunnel (a daemon that restarts opens them anew).

``on_message(direction, ieee, data)`` sees every GBCS message the tunnels carry:
"in" as it arrives, "out" once the device acknowledged it. ``await send(ieee, data)``
returns when the device acknowledged the message and raises ``TunnelSendError`` with
the reason otherwise; ``await request(ieee, data, timeout)`` also returns the first
message the device sends back.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

import zigpy.config as zconf
import zigpy.exceptions
import zigpy.types as zt
import zigpy.zdo.types as zdo_t

from gateway.ota import codec
from gateway.se.security import SecurityRegistry, arrived_unsecured
from gateway.tunnel import client as tc
from gateway.tunnel import frames as tf
from radios.han_services import HAN_ENDPOINT
from radios.tap import install_packet_tap

__all__ = ["OnMessage", "TunnelSendError", "TunnelService"]

LOGGER = logging.getLogger(__name__)

SE_PROFILE = 0x0109
_FT_GENERAL, _FT_CLUSTER = 0x00, 0x01
_FC_DISABLE_DEFAULT_RESPONSE = 0x10
_DEFAULT_RESPONSE = 0x0B
#: Match_Desc attempts before a device is taken to have no Tunneling server.
DISCOVERY_ATTEMPTS = 3
DISCOVERY_TIMEOUT_S = 10.0
#: After a device's key is established, before its tunnel is asked for (see _security_changed).
KEY_SETTLE_S = 1.0

OnMessage = Callable[[str, zt.EUI64, bytes], object]


class TunnelSendError(RuntimeError):
    """A GBCS message did not reach the device; the message says why."""


@dataclass
class _Peer:
    ieee: zt.EUI64
    client: tc.TunnelClient
    endpoint: int | None = None
    discovery: asyncio.Task[None] | None = None
    no_server: str | None = None  # why the device has no tunnel (Match_Desc found none)
    timer: asyncio.TimerHandle | None = None
    waiting: dict[int, asyncio.Future[None]] = field(default_factory=dict)
    inboxes: list[asyncio.Queue[bytes]] = field(default_factory=list)


class TunnelService:
    def __init__(
        self,
        app: Any,
        registry: SecurityRegistry | None = None,
        *,
        on_message: OnMessage | None = None,
        config: tc.TunnelConfig | None = None,
        endpoint: int = HAN_ENDPOINT,
        wanted: Callable[[zt.EUI64], bool] | None = None,
    ) -> None:
        self.app = app
        self._registry = registry
        self._on_message = on_message
        self.config = config or tc.TunnelConfig()
        self.endpoint = endpoint
        self._wanted = wanted
        self._peers: dict[zt.EUI64, _Peer] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._remove_tap: Callable[[], None] | None = None
        self._listener_id: Any = None
        self._unlisten: Callable[[], None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._timer_slack = time.get_clock_info("monotonic").resolution
        self._closed = False
        #: Tunneling frames from a keyed device that arrived without APS security.
        self.unsecured_frames = 0

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Take Tunneling frames and open a tunnel to every registered device."""
        self._loop = asyncio.get_running_loop()
        self._attach(self.app)
        if self._registry is not None:
            self._unlisten = self._registry.listen(self._security_changed)
        for device in list(self.app.devices.values()):
            if getattr(device, "is_initialized", False):
                self._registered(device.ieee)

    async def rebind(self, app: Any) -> None:
        """A new application for the same network (radio reconnect): every tunnel is
        asked for again, what was in flight resent."""
        self._detach()
        self.app = app
        self._attach(app)
        for peer in list(self._peers.values()):
            self._run(peer, functools.partial(peer.client.reset, why="radio reconnected"))

    async def close(self, timeout: float = 2.0) -> None:
        """Shutdown: CloseTunnel to each device with an open tunnel (waited for up to
        ``timeout``), then stop taking frames."""
        if self._closed or self._loop is None:
            return
        self._closed = True
        for peer in list(self._peers.values()):
            if peer.discovery is not None:
                peer.discovery.cancel()
            self._run(peer, peer.client.close)
        sends = [t for t in self._tasks if not t.done()]
        if sends:
            await asyncio.wait(sends, timeout=timeout)
        self._detach()
        if self._unlisten is not None:
            self._unlisten()
            self._unlisten = None
        for peer in self._peers.values():
            if peer.timer is not None:
                peer.timer.cancel()
            for future in peer.waiting.values():
                if not future.done():
                    future.set_exception(TunnelSendError("the hub is shutting down"))
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    def _attach(self, app: Any) -> None:
        self._remove_tap = install_packet_tap(app, self.handle_packet)
        self._listener_id = app.add_listener(self)

    def _detach(self) -> None:
        if self._remove_tap is not None:
            self._remove_tap()
            self._remove_tap = None
        if self._listener_id is not None:
            with contextlib.suppress(Exception):
                self.app.remove_listener(self._listener_id)
            self._listener_id = None

    # ------------------------------------------------------------------ the callers'

    async def send(self, ieee: zt.EUI64, data: bytes, timeout: float = 120.0) -> None:
        """Carry one bare GBCS message to the device; returns once it acknowledged it.
        Raises ``TunnelSendError`` naming why it did not."""
        if self._closed or self._loop is None:
            raise TunnelSendError("the tunnel service is not running")
        peer = self._peer(ieee)
        if peer.no_server is not None:
            raise TunnelSendError(peer.no_server)
        future: asyncio.Future[None] = self._loop.create_future()
        now = self._loop.time()
        ticket, actions = peer.client.send(bytes(data), now)
        peer.waiting[ticket] = future
        self._execute(peer, actions)
        self._rearm(peer)
        self._registered(ieee)  # a device not yet asked for its tunnel is asked now
        try:
            async with asyncio.timeout(timeout):
                await asyncio.shield(future)
        except TimeoutError:
            raise TunnelSendError(f"no acknowledgement within {timeout:g} s (tunnel {peer.client.state.value}: {peer.client.reason})") from None
        finally:
            peer.waiting.pop(ticket, None)

    async def request(self, ieee: zt.EUI64, data: bytes, timeout: float = 120.0) -> bytes | None:
        """``send``, then the first message the device sends back within ``timeout``
        (None if none came)."""
        peer = self._peer(ieee)
        inbox: asyncio.Queue[bytes] = asyncio.Queue()
        peer.inboxes.append(inbox)  # before sending: the answer may beat the acknowledgement
        assert self._loop is not None
        deadline = self._loop.time() + timeout
        try:
            await self.send(ieee, data, timeout)
            try:
                async with asyncio.timeout(max(0.0, deadline - self._loop.time())):
                    return await inbox.get()
            except TimeoutError:
                return None
        finally:
            peer.inboxes.remove(inbox)

    def tunnel_state(self, ieee: zt.EUI64) -> dict[str, Any]:
        peer = self._peers.get(ieee)
        if peer is None:
            return {"state": "none"}
        client = peer.client
        return {
            "state": "no-server" if peer.no_server else client.state.value,
            "reason": peer.no_server or client.reason,
            "tunnel_id": client.tunnel_id,
            "endpoint": peer.endpoint,
            "queued": client.queued,
        }

    # ------------------------------------------------------------------ registration

    def _peer(self, ieee: zt.EUI64) -> _Peer:
        peer = self._peers.get(ieee)
        if peer is None:
            # Each client numbers its own frames; start where zigpy's counter is.
            peer = _Peer(ieee, tc.TunnelClient(self.config, tsn=self.app.get_sequence() & 0xFF))
            self._peers[ieee] = peer
        return peer

    def _allowed(self, ieee: zt.EUI64) -> bool:
        if ieee == self.app.state.node_info.ieee:
            return False
        if self._wanted is not None and not self._wanted(ieee):
            return False
        return self._registry is None or self._registry.get(ieee).ota_allowed

    def _registered(self, ieee: zt.EUI64) -> None:
        """The device may have a tunnel now: find its server and open one."""
        if self._closed or not self._allowed(ieee):
            return
        peer = self._peer(ieee)
        if peer.endpoint is not None:
            self._run(peer, peer.client.open)
        elif peer.discovery is None or peer.discovery.done():
            peer.no_server = None
            peer.discovery = self._spawn(self._discover(peer))

    async def _discover(self, peer: _Peer) -> None:
        why = "no answer"
        for attempt in range(DISCOVERY_ATTEMPTS):
            if attempt:
                await asyncio.sleep(self.config.open_retry)
            try:
                device = self.app.get_device(ieee=peer.ieee)
                async with asyncio.timeout(DISCOVERY_TIMEOUT_S):
                    status, _nwk, endpoints = await device.zdo.Match_Desc_req(device.nwk, SE_PROFILE, [tf.CLUSTER_ID], [])
            except KeyError:
                why = "the device is not known to the radio"
                continue
            except (TimeoutError, zigpy.exceptions.ZigbeeException, asyncio.TimeoutError) as exc:
                why = f"Match_Desc not answered: {exc or type(exc).__name__}"
                continue
            if status == zdo_t.Status.SUCCESS and endpoints:
                peer.endpoint = int(endpoints[0])
                LOGGER.info("%s: Tunneling server on endpoint %d: opening the GBCS tunnel", peer.ieee, peer.endpoint)
                self._run(peer, peer.client.open)
                return
            why = f"the device has no Tunneling server (Match_Desc for profile 0x0109, cluster 0x0704: status {status}, none found)"
            break
        peer.no_server = why
        LOGGER.info("%s: no GBCS tunnel: %s", peer.ieee, why)
        self._execute(peer, peer.client.abandon(why))

    # zigpy application listener
    def device_initialized(self, device: Any, *_: Any) -> None:
        self._registered(device.ieee)

    def device_joined(self, device: Any, *_: Any) -> None:
        peer = self._peers.get(device.ieee)
        if peer is not None:
            # A (re)joined device may have rebooted: its tunnel is in its RAM.
            self._run(peer, lambda now: peer.client.reset(now, "the device rejoined"))

    def _announced(self, data: bytes) -> None:
        """A Device_annce (TSN, NWK, IEEE, capability): a device that rebooted or
        rejoined has lost its tunnel with its RAM, and zigpy says nothing of a known
        device rejoining at the same address."""
        if len(data) < 11:
            return
        ieee, _ = zt.EUI64.deserialize(data[3:11])
        peer = self._peers.get(ieee)
        if peer is not None and peer.endpoint is not None:
            self._run(peer, lambda now: peer.client.reset(now, "the device announced itself (rebooted or rejoined)"))

    def _security_changed(self, ieee: zt.EUI64, security: Any) -> None:
        if not security.aps or self._loop is None:
            return
        # The registry says "established" as the hub sends its Confirm Key Data
        # Response; the device takes the key only once that has reached it, and drops
        # a frame secured with it before. Asking at once would cost an open_retry wait.
        self._loop.call_later(KEY_SETTLE_S, self._keyed, ieee)

    def _keyed(self, ieee: zt.EUI64) -> None:
        if self._closed:
            return
        peer = self._peers.get(ieee)
        if peer is not None and peer.endpoint is not None and peer.client.state is not tc.TunnelState.IDLE:
            # A new key: ask again, now APS-secured (the device insists from now on).
            self._run(peer, lambda now: peer.client.reset(now, "the device's key was established"))
        else:
            self._registered(ieee)

    # ------------------------------------------------------------------ receiving

    def handle_packet(self, packet: zt.ZigbeePacket) -> bool:
        """The packet tap: True for the Tunneling frames this service takes."""
        if packet.profile_id == 0 and packet.cluster_id == zdo_t.ZDOCmd.Device_annce:
            self._announced(packet.data.serialize())
            return False  # zigpy's, as ever
        if packet.cluster_id != tf.CLUSTER_ID or packet.dst_ep != self.endpoint or packet.src is None:
            return False
        data = packet.data.serialize()
        header = codec.parse_header(data)
        if isinstance(header, codec.Unparseable) or not header.server_to_client or header.manufacturer_code is not None:
            return False
        device = self._device(packet.src)
        if device is None or not self._allowed(device.ieee):
            return False
        security = self._registry.get(device.ieee) if self._registry is not None else None
        if security is not None and arrived_unsecured(security.aps, packet.tx_options):
            self.unsecured_frames += 1
            LOGGER.warning("%s: ignored a Tunneling frame without APS security (%d so far)", device.ieee, self.unsecured_frames)
            return True
        payload = data[header.length :]
        event: tc.Event
        if header.frame_type == _FT_CLUSTER:
            event = tc.FrameReceived(header.tsn, header.command_id, payload, not header.disable_default_response)
        elif header.frame_type == _FT_GENERAL and header.command_id == _DEFAULT_RESPONSE and len(payload) == 2:
            event = tc.DefaultResponseReceived(header.tsn, payload[0], payload[1])
        else:
            return False  # attribute reads and the like: zigpy's
        peer = self._peer(device.ieee)
        if peer.endpoint is None and packet.src_ep is not None:
            peer.endpoint = int(packet.src_ep)
        self._run(peer, lambda now: peer.client.handle(event, now))
        return True

    def _device(self, src: zt.AddrModeAddress) -> Any:
        try:
            if src.addr_mode == zt.AddrMode.NWK:
                return self.app.get_device(nwk=src.address)
            if src.addr_mode == zt.AddrMode.IEEE:
                return self.app.get_device(ieee=src.address)
        except KeyError:
            return None
        return None

    # ------------------------------------------------------------------ actions

    def _run(self, peer: _Peer, step: Callable[[float], list[tc.Action]]) -> None:
        assert self._loop is not None
        try:
            actions = step(self._loop.time())
        except Exception:  # a client bug must not take the radio's listener down
            LOGGER.exception("%s: tunnel client failed", peer.ieee)
            return
        self._execute(peer, actions)
        self._rearm(peer)

    def _execute(self, peer: _Peer, actions: list[tc.Action]) -> None:
        for action in actions:
            if isinstance(action, tc.SendFrame):
                flags = _FT_CLUSTER | (0 if action.default_response else _FC_DISABLE_DEFAULT_RESPONSE)
                frame = bytes([flags, action.tsn, action.command_id]) + action.frame.to_bytes()
                self._spawn(self._send_one(peer, frame, action.tsn))
            elif isinstance(action, tc.SendDefaultResponse):
                frame = bytes([_FT_GENERAL | _FC_DISABLE_DEFAULT_RESPONSE, action.tsn, _DEFAULT_RESPONSE, action.command_id, action.status])
                self._spawn(self._send_one(peer, frame, None))
            elif isinstance(action, tc.MessageReceived):
                self._message("in", peer.ieee, action.data)
                for inbox in peer.inboxes:
                    inbox.put_nowait(action.data)
            elif isinstance(action, tc.MessageSent):
                self._message("out", peer.ieee, action.data)
                self._settle(peer, action.ticket, None)
            elif isinstance(action, tc.MessageFailed):
                LOGGER.warning("%s: GBCS message (%d bytes) not carried: %s", peer.ieee, len(action.data), action.reason)
                self._settle(peer, action.ticket, TunnelSendError(action.reason))
            elif isinstance(action, tc.StateChanged):
                LOGGER.info("%s: GBCS tunnel %s -> %s (%s)", peer.ieee, action.old.value, action.new.value, action.reason)
            elif isinstance(action, tc.Note):
                LOGGER.debug("%s: tunnel: %s", peer.ieee, action.text)

    def _settle(self, peer: _Peer, ticket: int, error: Exception | None) -> None:
        future = peer.waiting.get(ticket)
        if future is None or future.done():
            return
        if error is None:
            future.set_result(None)
        else:
            future.set_exception(error)

    def _message(self, direction: str, ieee: zt.EUI64, data: bytes) -> None:
        if self._on_message is None:
            return
        try:
            self._on_message(direction, ieee, data)
        except Exception:
            LOGGER.exception("tunnel on_message callback failed (%s, %s)", direction, ieee)

    def _rearm(self, peer: _Peer) -> None:
        assert self._loop is not None
        if peer.timer is not None:
            peer.timer.cancel()
            peer.timer = None
        when = peer.client.get_timer()
        if when is not None and not self._closed:
            peer.timer = self._loop.call_at(when, self._on_timer, peer)

    def _on_timer(self, peer: _Peer) -> None:
        assert self._loop is not None
        peer.timer = None
        when = peer.client.get_timer()
        if when is None:
            return
        if when > self._loop.time() + self._timer_slack:
            peer.timer = self._loop.call_at(when, self._on_timer, peer)
            return
        self._run(peer, peer.client.handle_timer)

    # ------------------------------------------------------------------ sending

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        assert self._loop is not None
        task: asyncio.Task[None] = self._loop.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _send_one(self, peer: _Peer, data: bytes, tsn: int | None) -> None:
        """One frame to the device's Tunneling server; a failure goes back to the client
        (``tsn`` None: a Default Response, whose loss the device's retry covers)."""
        error = await self._deliver(peer, data)
        if error is not None and tsn is not None and not self._closed:
            self._run(peer, lambda now: peer.client.handle(tc.SendFailed(tsn, error), now))

    async def _deliver(self, peer: _Peer, data: bytes) -> str | None:
        try:
            device = self.app.get_device(ieee=peer.ieee)
        except KeyError:
            return "the device is not known to the radio"
        aps = self._registry is not None and self._registry.get(peer.ieee).aps
        # zigpy's integer types have untyped constructors; the radio libraries
        # serialize the fields by these types.
        packet = zt.ZigbeePacket(
            src=zt.AddrModeAddress(addr_mode=zt.AddrMode.NWK, address=self.app.state.node_info.nwk),
            src_ep=zt.uint8_t(self.endpoint),
            dst=zt.AddrModeAddress(addr_mode=zt.AddrMode.NWK, address=device.nwk),
            dst_ep=zt.uint8_t(peer.endpoint if peer.endpoint is not None else 1),
            tsn=zt.uint8_t(data[1]),
            profile_id=zt.uint16_t(SE_PROFILE),
            cluster_id=zt.uint16_t(tf.CLUSTER_ID),
            data=zt.SerializableBytes(data),
            source_route=self.app.build_source_route_to(dest=device) if self.app.config[zconf.CONF_SOURCE_ROUTING] else None,
            tx_options=zt.TransmitOptions.ACK | zt.TransmitOptions.APS_Encryption if aps else zt.TransmitOptions.ACK,
            priority=zt.PacketPriority.NORMAL,
        )
        try:
            await self.app.send_packet(packet)
        except (zigpy.exceptions.DeliveryError, asyncio.TimeoutError, zigpy.exceptions.ZigbeeException) as exc:
            LOGGER.info("%s: Tunneling frame (tsn %d) not delivered: %s", peer.ieee, data[1], exc)
            return str(exc) or type(exc).__name__
        except Exception as exc:  # the radio library refused the frame itself (bellows and
            # zigpy-znp raise ValueError on a payload longer than they can serialize)
            LOGGER.warning("%s: the radio library refused a %d-byte Tunneling frame: %s: %s", peer.ieee, len(data), type(exc).__name__, exc)
            return f"the radio library refused the frame ({len(data)} bytes): {type(exc).__name__}: {exc}"
        return None
