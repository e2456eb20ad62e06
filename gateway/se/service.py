"""The hub's key-establishment service: the thin asyncio layer around ``KeServer``.

It takes every Key Establishment frame (cluster 0x0800, Smart Energy profile) a device
sends to our SE endpoint off zigpy's receive path with a packet tap (radios/tap.py;
zigpy 2.4 does not parse the SE profile anyway), feeds it to that device's responder
with ``loop.time()`` (and the hub's clock, ``time.time()``, against which a suite-2
certificate's validity is checked), and carries out what the responder returns, as the OTA driver
does for its sessions:

* ``Send`` / ``SendDefaultResponse``: a ZCL frame server -> client (cluster-specific,
  default response disabled; the Default Response is a general command), from our
  endpoint to the device's, handed to ``app.send_packet`` in its own task. NWK security
  only: Key Establishment is the SE cluster that runs before an APS link key exists.
* ``Compute``: the heavy crypto, run in an executor (a thread: the big-integer
  arithmetic gives the GIL back every switch interval, so the loop keeps running),
  the result fed back with its ticket to the responder that asked, if it is still the
  device's.
* one timer per responder, ``loop.call_at(get_timer())``.
* ``Established``: the key goes to the coordinator (``install_key``) *before* the
  Confirm Key Data Response that comes with it is sent: a device uses its new key as
  soon as it has verified our MACV, and the coordinator must be able to check its
  first secured frame. The registry says ESTABLISHED (and OTA may use the key) only
  once that confirmation is delivered. If the coordinator refuses the key, the device gets Terminate
  NO_RESOURCES instead of the confirmation (it drops the key and retries after the
  wait time), and the registry says FAILED with the radio's reason.
* ``Failed``: the registry says FAILED with the status name, side and why.

One responder per device exchange: a device's first frame creates one, and an
Initiate reaching a finished one (established or failed) replaces it (a device
re-keys with a new exchange). Read Attributes of KeyEstablishmentSuite (0x0000) on our
server cluster is answered with the offered suites' bitmap.

Without configuration the hub offers no suite. The specification has no separate
answer for a responder with no suites: every suite a device offers is then one the
responder does not support, so an Initiate gets Terminate UNSUPPORTED_SUITE with the
suite field 0x0000 (none offered), and the registry is left as it was. The audit
event names (``on_event(name, device=ieee, **fields)``, the shape of
``AuditLog.append``) are ke.started, ke.established (suite, seconds), ke.terminated
(status, side, why), ke.key_installed, ke.unconfigured. No key, agreement or private
scalar is ever logged or put in an event.
"""

from __future__ import annotations

import asyncio
import logging
import os
import struct
import time
from collections.abc import Callable, Coroutine, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Any

import zigpy.config as zconf
import zigpy.exceptions
import zigpy.types as zt

from eui64 import Eui64
from gateway.ota import codec
from gateway.se import ke_frames as kf
from gateway.se import ke_server as ks
from gateway.se.ecqv import Rng
from gateway.se.security import KeyState, SecurityRegistry
from radios.han_services import HAN_ENDPOINT
from radios.keys import install_link_key
from radios.tap import install_packet_tap

__all__ = ["KeyEstablishmentService", "KeyEstablishmentStartError", "SE_PROFILE", "UNCONFIGURED_HINT"]

LOGGER = logging.getLogger(__name__)

SE_PROFILE = 0x0109
#: Terminate's wait time when the hub has no configuration (it never will, this run).
UNCONFIGURED_WAIT_TIME = 10
UNCONFIGURED_HINT = "key establishment not configured: SE devices that require CBKE will leave; add [key_establishment]"

_FT_GENERAL, _FT_CLUSTER = 0, 1
_FC_SERVER_TO_CLIENT = 0x08
_FC_DISABLE_DEFAULT_RESPONSE = 0x10
_READ_ATTRIBUTES = 0x00
_READ_ATTRIBUTES_RSP = 0x01
_DEFAULT_RESPONSE = 0x0B
_STATUS_SUCCESS = 0x00
_STATUS_UNSUPPORTED_ATTRIBUTE = 0x86
_TYPE_MAP16 = 0x19  # KeyEstablishmentSuite is a 16-bit bitmap

InstallKey = Callable[[Any, zt.EUI64, zt.KeyData], Coroutine[Any, Any, None]]
OnEvent = Callable[..., object]


class KeyEstablishmentStartError(RuntimeError):
    """The configured hub identity cannot serve; the message names the fix."""


@dataclass
class _Peer:
    """One device's current exchange and where to answer it."""

    ieee: zt.EUI64
    server: ks.KeServer
    device_ep: int = 1
    timer: asyncio.TimerHandle | None = None


class KeyEstablishmentService:
    def __init__(
        self,
        app: Any,
        ke_config: ks.KeConfig | None,
        registry: SecurityRegistry,
        *,
        install_key: InstallKey = install_link_key,
        on_event: OnEvent | None = None,
        endpoint: int = HAN_ENDPOINT,
        executor: Executor | None = None,
        rng: Rng = os.urandom,
    ) -> None:
        self._app = app
        self.ke_config = ke_config
        self._registry = registry
        self._install_key = install_key
        self._on_event = on_event
        self.endpoint = endpoint
        self._executor = executor
        self._rng = rng
        self._peers: dict[zt.EUI64, _Peer] = {}
        self._tasks: set[asyncio.Future[Any]] = set()
        self._remove_tap: Callable[[], None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._timer_slack = time.get_clock_info("monotonic").resolution
        self.unconfigured_initiates = 0

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Check the hub's identity (if configured) and start taking frames."""
        self._loop = asyncio.get_running_loop()
        # Taking frames first: devices key as they join, which is now, and the identity
        # check below takes two scalar multiplications (up to a few hundred ms); a
        # device's Initiate lost meanwhile would cost it a timeout and a retry wait.
        self._remove_tap = install_packet_tap(self._app, self.handle_packet)
        if self.ke_config is None:
            LOGGER.info(UNCONFIGURED_HINT)
            return
        try:
            await self._check_identities(self.ke_config)
        except BaseException:
            await self.close()
            raise
        LOGGER.info(
            "key establishment: offering suites %s on endpoint %d",
            ", ".join(str(n) for n in self.ke_config.suites), self.endpoint,
        )

    async def close(self) -> None:
        if self._remove_tap is not None:
            self._remove_tap()
            self._remove_tap = None
        for peer in self._peers.values():
            if peer.timer is not None:
                peer.timer.cancel()
        self._peers.clear()
        # Sends, key installs and computations (a computation's thread runs on; its
        # result finds no exchange and is dropped).
        pending = set(self._tasks)
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)

    async def _check_identities(self, config: ks.KeConfig) -> None:
        assert self._loop is not None
        own = Eui64.from_air(self._app.state.node_info.ieee)
        for number in config.suites:
            identity = config.identities[number]
            subject = Eui64(identity.certificate.subject)
            if subject != own:
                raise KeyEstablishmentStartError(
                    f"key establishment: the hub's suite-{number} certificate is for {subject}, but this coordinator is {own}: "
                    f"issue a certificate for {own} (han-ota cbke issue --subject {own} --suite {number}) "
                    f"and name it in [key_establishment] certificate_{_curve(number)}"
                )
            try:
                await self._loop.run_in_executor(self._executor, identity.check_key)
            except ks.KeConfigError as err:
                raise KeyEstablishmentStartError(
                    f"key establishment: {err}: give the private key issued with the certificate "
                    f"([key_establishment] private_key_{_curve(number)}), and the CA that issued it in ca_public_keys_{_curve(number)}"
                ) from None

    # ------------------------------------------------------------------ receiving

    def handle_packet(self, packet: zt.ZigbeePacket) -> bool:
        """The packet tap: True for the Key Establishment frames this service answers."""
        if packet.cluster_id != kf.CLUSTER_ID or packet.profile_id != SE_PROFILE or packet.dst_ep != self.endpoint:
            return False
        data = packet.data.serialize()
        header = codec.parse_header(data)
        if isinstance(header, codec.Unparseable) or header.server_to_client or header.manufacturer_code is not None:
            return False
        is_request = header.frame_type == _FT_CLUSTER
        if not is_request and not (header.frame_type == _FT_GENERAL and header.command_id == _READ_ATTRIBUTES):
            return False  # Default Responses and the like: zigpy's to match
        device = self._device(packet.src)
        if device is None:
            LOGGER.info("key establishment: a frame from %s, which zigpy does not know: ignored", packet.src)
            return True
        payload = data[header.length:]
        device_ep = int(packet.src_ep) if packet.src_ep is not None else 1
        if not is_request:
            self._answer_read(device, device_ep, header.tsn, payload)
        elif self.ke_config is None:
            self._unconfigured(device, device_ep, header.tsn, header.command_id)
        else:
            self._feed_frame(device, device_ep, ks.FrameReceived(header.tsn, header.command_id, payload, utc=time.time()))
        return True

    def _device(self, src: zt.AddrModeAddress | None) -> Any:
        if src is None:
            return None
        try:
            if src.addr_mode == zt.AddrMode.NWK:
                return self._app.get_device(nwk=src.address)
            if src.addr_mode == zt.AddrMode.IEEE:
                return self._app.get_device(ieee=src.address)
        except KeyError:
            return None
        return None

    def _feed_frame(self, device: Any, device_ep: int, event: ks.FrameReceived) -> None:
        assert self.ke_config is not None
        ieee = device.ieee
        peer = self._peers.get(ieee)
        starts = event.command_id == kf.ClientCommand.INITIATE_KEY_ESTABLISHMENT_REQUEST
        if peer is None or (peer.server.done and starts):
            if peer is not None and peer.timer is not None:
                peer.timer.cancel()
            peer = _Peer(ieee, ks.KeServer(self.ke_config, bytes(ieee), rng=self._rng))
            self._peers[ieee] = peer
        peer.device_ep = device_ep
        self._run(peer, lambda now: peer.server.handle(event, now))

    def _answer_read(self, device: Any, device_ep: int, tsn: int, payload: bytes) -> None:
        bitmap = self.ke_config.suite_bitmap if self.ke_config is not None else 0
        records = b""
        for (attribute,) in struct.iter_unpack("<H", payload[: len(payload) // 2 * 2]):
            if attribute == kf.KEY_ESTABLISHMENT_SUITE_ATTRIBUTE:
                records += struct.pack("<HBBH", attribute, _STATUS_SUCCESS, _TYPE_MAP16, bitmap)
            else:
                records += struct.pack("<HB", attribute, _STATUS_UNSUPPORTED_ATTRIBUTE)
        self._send(device.ieee, device_ep, _header(_FT_GENERAL, tsn, _READ_ATTRIBUTES_RSP) + records, tsn)

    def _unconfigured(self, device: Any, device_ep: int, tsn: int, command_id: int) -> None:
        if command_id != kf.ClientCommand.INITIATE_KEY_ESTABLISHMENT_REQUEST:
            return  # no exchange can have begun: nothing to end
        self.unconfigured_initiates += 1
        status = kf.KeStatus.UNSUPPORTED_SUITE
        LOGGER.warning(
            "%s: started key establishment, but this hub has none configured: answered Terminate %s; "
            "add a [key_establishment] table (suites, certificate_283k1/_163k1, private_key_..., ca_public_keys_...) "
            "or the device will leave", device.ieee, status.name,
        )
        frame = kf.TerminateKeyEstablishment(int(status), UNCONFIGURED_WAIT_TIME, 0x0000)
        self._send(device.ieee, device_ep, _header(_FT_CLUSTER, tsn, frame.command_id) + frame.to_bytes(), tsn)
        self._event("ke.unconfigured", device.ieee, status=status.name)

    # ------------------------------------------------------------------ actions

    def _run(self, peer: _Peer, step: Callable[[float], list[ks.Action]]) -> None:
        assert self._loop is not None
        if self._peers.get(peer.ieee) is not peer:
            return  # a replaced exchange: nothing of it may act any more
        try:
            actions = step(self._loop.time())
        except Exception:  # a responder bug must not take the radio's listener down
            LOGGER.exception("%s: key establishment responder failed", peer.ieee)
            return
        if any(isinstance(a, ks.Established) for a in actions):
            # The key first, then the answers (see the module docstring).
            self._spawn(self._establish(peer, actions))
        else:
            self._execute(peer, actions)
        self._rearm(peer)

    def _execute(self, peer: _Peer, actions: Sequence[ks.Action]) -> None:
        for action in actions:
            if isinstance(action, ks.Send):
                self._send(peer.ieee, peer.device_ep, _cluster_frame(action), action.tsn)
            elif isinstance(action, ks.SendDefaultResponse):
                data = _header(_FT_GENERAL, action.tsn, _DEFAULT_RESPONSE) + bytes([action.command_id, action.status])
                self._send(peer.ieee, peer.device_ep, data, action.tsn)
            elif isinstance(action, ks.Compute):
                self._compute(peer, action)
            elif isinstance(action, ks.Failed):
                self._failed(peer, action)
            elif isinstance(action, ks.Note):
                self._note(peer, action)
            # Established is taken by _run before it gets here.

    async def _establish(self, peer: _Peer, actions: list[ks.Action]) -> None:
        established = next(a for a in actions if isinstance(a, ks.Established))
        number = established.suite.number
        self._event("ke.established", peer.ieee, suite=number, seconds=round(established.seconds, 3))
        try:
            await self._install_key(self._app, peer.ieee, zt.KeyData(established.key_data))
        except Exception as exc:
            why = f"the coordinator did not take the link key: {getattr(exc, 'reason', None) or exc}"
            LOGGER.warning("%s: key establishment succeeded but %s", peer.ieee, why)
            assert self.ke_config is not None
            rest = [a for a in actions if not isinstance(a, (ks.Established, ks.Send))]
            self._execute(peer, rest)
            # The device must not keep a key the coordinator does not hold.
            tsn = next((a.tsn for a in actions if isinstance(a, ks.Send)), 0)
            frame = kf.TerminateKeyEstablishment(int(kf.KeStatus.NO_RESOURCES), self.ke_config.wait_time, self.ke_config.suite_bitmap)
            self._send(peer.ieee, peer.device_ep, _header(_FT_CLUSTER, tsn, frame.command_id) + frame.to_bytes(), tsn)
            self._registry.update(peer.ieee, state=KeyState.FAILED, suite=number, status=None, side="hub", why=why, seconds=None)
            self._event("ke.terminated", peer.ieee, status=kf.KeStatus.NO_RESOURCES.name, side="hub", why=why)
            return
        # The Confirm Key Data Response is delivered (awaited, not spawned) before the
        # registry lets OTA use the key: a device takes its new key only once it has
        # verified our MACV, and it drops a frame secured with a key it does not yet
        # hold (an Image Notify sent beside the confirmation was lost so).
        for action in actions:
            if isinstance(action, ks.Send):
                await self._send_one(peer.ieee, peer.device_ep, _cluster_frame(action), action.tsn)
        self._execute(peer, [a for a in actions if not isinstance(a, (ks.Established, ks.Send))])
        self._registry.update(
            peer.ieee, state=KeyState.ESTABLISHED, suite=number, seconds=established.seconds, status=None, side=None, why=None
        )
        LOGGER.info("%s: key establishment done (suite %d, %.2f s); APS link key installed", peer.ieee, number, established.seconds)
        self._event("ke.key_installed", peer.ieee, suite=number)

    def _compute(self, peer: _Peer, action: ks.Compute) -> None:
        assert self._loop is not None
        future = self._loop.run_in_executor(self._executor, action.work)

        def done(f: asyncio.Future[object]) -> None:
            if f.cancelled():
                return
            error = f.exception()
            event: ks.Event = ks.Computed(action.kind, action.ticket, f.result()) if error is None else ks.ComputeFailed(action.kind, action.ticket, error)
            self._run(peer, lambda now: peer.server.handle(event, now))

        self._tasks.add(future)
        future.add_done_callback(self._tasks.discard)
        future.add_done_callback(done)

    def _failed(self, peer: _Peer, action: ks.Failed) -> None:
        status = _status_name(action.status)
        LOGGER.warning("%s: key establishment failed (%s, %s side): %s", peer.ieee, status or "no status", action.side, action.why)
        suite = peer.server.suite
        self._registry.update(
            peer.ieee, state=KeyState.FAILED, status=status, side=action.side, why=action.why,
            suite=suite.number if suite is not None else None, seconds=None,
        )
        self._event("ke.terminated", peer.ieee, status=status, side=action.side, why=action.why)

    def _note(self, peer: _Peer, note: ks.Note) -> None:
        if note.kind in (ks.NoteKind.STARTED, ks.NoteKind.RESTARTED) and peer.server.suite is not None:
            suite = peer.server.suite.number
            self._registry.update(peer.ieee, state=KeyState.ESTABLISHING, suite=suite, status=None, side=None, why=None)
            self._event("ke.started", peer.ieee, suite=suite)
        LOGGER.debug("%s: key establishment: %s", peer.ieee, note.text)

    def _rearm(self, peer: _Peer) -> None:
        assert self._loop is not None
        if peer.timer is not None:
            peer.timer.cancel()
            peer.timer = None
        when = peer.server.get_timer()
        if when is not None:
            peer.timer = self._loop.call_at(when, self._on_timer, peer)

    def _on_timer(self, peer: _Peer) -> None:
        assert self._loop is not None
        peer.timer = None
        when = peer.server.get_timer()
        if when is None:
            return
        if when > self._loop.time() + self._timer_slack:
            peer.timer = self._loop.call_at(when, self._on_timer, peer)
            return
        self._run(peer, peer.server.handle_timer)

    # ------------------------------------------------------------------ sending

    def _send(self, ieee: zt.EUI64, device_ep: int, data: bytes, tsn: int) -> None:
        # Each frame in its own task: send_packet waits for the radio's confirmation.
        self._spawn(self._send_one(ieee, device_ep, data, tsn))

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        assert self._loop is not None
        task: asyncio.Task[None] = self._loop.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _send_one(self, ieee: zt.EUI64, device_ep: int, data: bytes, tsn: int) -> None:
        try:
            device = self._app.get_device(ieee=ieee)
        except KeyError:
            LOGGER.info("%s: key establishment frame not sent: the device is gone", ieee)
            return
        own = self._app.state.node_info.nwk
        # zigpy's integer types have untyped constructors (hence the ignores); the
        # radio libraries serialize the fields by these types.
        packet = zt.ZigbeePacket(
            src=zt.AddrModeAddress(addr_mode=zt.AddrMode.NWK, address=own),
            src_ep=zt.uint8_t(self.endpoint),  # type: ignore[no-untyped-call]
            dst=zt.AddrModeAddress(addr_mode=zt.AddrMode.NWK, address=device.nwk),
            dst_ep=zt.uint8_t(device_ep),  # type: ignore[no-untyped-call]
            tsn=zt.uint8_t(tsn & 0xFF),  # type: ignore[no-untyped-call]
            profile_id=zt.uint16_t(SE_PROFILE),  # type: ignore[no-untyped-call]
            cluster_id=zt.uint16_t(kf.CLUSTER_ID),  # type: ignore[no-untyped-call]
            data=zt.SerializableBytes(data),
            source_route=self._app.build_source_route_to(dest=device) if self._app.config[zconf.CONF_SOURCE_ROUTING] else None,
            # NWK security only: no APS link key exists before this exchange ends.
            tx_options=zt.TransmitOptions.ACK,
            priority=zt.PacketPriority.NORMAL,
        )
        try:
            await self._app.send_packet(packet)
        except (zigpy.exceptions.DeliveryError, asyncio.TimeoutError, zigpy.exceptions.ZigbeeException) as exc:
            # The device repeats its request, or the responder times out: nothing to do here.
            LOGGER.info("%s: key establishment frame (tsn %d) not delivered: %s", ieee, tsn, exc)

    def _event(self, name: str, ieee: zt.EUI64 | None, **fields: Any) -> None:
        if self._on_event is None:
            return
        try:
            self._on_event(name, device=ieee, **fields)
        except Exception:
            LOGGER.exception("key establishment event callback failed on %s", name)


def _cluster_frame(action: ks.Send) -> bytes:
    return _header(_FT_CLUSTER, action.tsn, action.command_id) + action.payload


def _header(frame_type: int, tsn: int, command_id: int) -> bytes:
    """A ZCL header, server to client, default response disabled (answers need none)."""
    return bytes([frame_type | _FC_SERVER_TO_CLIENT | _FC_DISABLE_DEFAULT_RESPONSE, tsn & 0xFF, command_id])


def _status_name(status: int | None) -> str | None:
    if status is None:
        return None
    try:
        return kf.KeStatus(status).name
    except ValueError:
        return f"0x{status:02X}"


def _curve(number: int) -> str:
    return {1: "163k1", 2: "283k1"}.get(number, str(number))

