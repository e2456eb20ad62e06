"""The thin asyncio layer between a zigpy ControllerApplication and OTA sessions.

It is the only OTA code that awaits the radio. For every frame a device sends on
cluster 0x0019 it feeds the decoded event to that device's session with
``loop.time()``, carries out the actions the session returns, and re-arms one timer
per session. It works with any zigpy radio (sim, bellows, zigpy-znp).

Requests from a device with a session (cluster-specific, client to server) are
taken off zigpy's receive path by a packet tap (radios/tap.py) before zigpy parses
them: the parse costs more than everything else per block, and zigpy's Ota handler
must not answer them. An OTA frame with no readable ZCL header is dropped there too
(counted in ``unparseable_frames``): zigpy would raise on it. Everything else on the
cluster (attribute reports and read responses, Default Responses) goes on through
zigpy and reaches us as an application listener (``handle_message``). While a
session owns a device
``device.ota_in_progress`` is set as well, so zigpy's handler stays quiet even for
frames that take that path (it would answer NO_IMAGE_AVAILABLE and ABORT).

Each frame a session emits is encoded at once and handed to the radio in its own
task, in the order emitted (zigpy's request queue is FIFO per priority). A device's
next answer does not wait for the radio to confirm the previous one: the APS ack and
the radio's confirmation of a block arrive after the device has already asked for the
next one. The driver builds the `ZigbeePacket` itself and calls the radio's
``send_packet``, as zigpy's ``ControllerApplication.request`` would (NWK addressing,
APS ack, source route when configured), with the addresses kept per device rather
than built per frame.

Every frame's outcome goes back to the session that made it, one event per frame
(``NotifyDelivered``/``NotifyFailed`` for Image Notify, ``FrameDelivered``/
``FrameNotDelivered`` for the rest), also when it was never sent (withheld, not
encodable, or its task cancelled by a detach before it ran): the session counts the
frame in flight on its pacer until then. The driver itself never touches the pacer,
and answers nothing by itself: a command the server does not implement reaches the
session as ``UnsupportedCommandReceived``.

HAN security (gateway.se.security): with a `SecurityRegistry`, each device's frames
follow its state. A device with APS link-key security in force (its key established)
gets every OTA frame with ``TransmitOptions.APS_Encryption``, and its OTA frames that
arrive without APS security (``packet.tx_options``, as bellows and zigpy-znp report
it) are dropped at the tap, counted (``unsecured_frames``) and logged once a minute
per device: a frame an attacker could have forged with the network key alone must not
move the session. A device the registry does not allow OTA to (an SE device before its
key) is sent nothing at all (``withheld_frames``; an Image Notify then fails as
undelivered) and what it sends on the cluster is not fed to its session
(``blocked_frames``). The flags live on the binding, refreshed by the registry's
listener, so the per-block path reads an attribute rather than hashing an EUI64.

Block size (issue 14): before a device's request reaches its session, the driver checks
the radio's limit for that device (gateway/ota/limits.py: the radio family's numbers
from radios/limits.py, the device's APS security, ``len(device.relays)`` as the radio
library reported its route) and, when it changed, tells the session (``BlockLimitSet``:
the session notes the size chosen and why, so the log and the audit say it). A block the
radio refuses as too long anyway (EZSP MESSAGE_TOO_LONG; the stack learnt a route the
host has not heard of) is answered by ``BlockTooLong`` with a smaller limit instead of
``FrameNotDelivered``: the session serves it again, smaller.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import zigpy.config as zconf
import zigpy.exceptions
import zigpy.types as zt
from zigpy.application import ControllerApplication
from zigpy.device import Device

from gateway.ota import codec
from gateway.ota import events as ev
from gateway.ota.limits import BlockLimit, after_too_long, block_limit
from gateway.se.security import DeviceSecurity, SecurityRegistry, arrived_unsecured
from radios.limits import PayloadLimits, for_app
from radios.tap import install_packet_tap

LOGGER = logging.getLogger(__name__)

SMART_ENERGY_PROFILE = 0x0109
# Our OTA server endpoint on the coordinator.
SERVER_ENDPOINT = 1
# Attribute reads may wait for a sleepy device's next poll.
ATTRIBUTE_READ_TIMEOUT_S = 30.0
# zigpy sets Device.last_seen on every frame it receives, and with a database each set
# queues an SQL UPDATE (zigpy/appdb.py, device_last_seen_updated): one per block
# served. The database keeps last_seen at 30 s resolution; the tap sets it at most
# this often per device.
LAST_SEEN_EVERY_S = 1.0
# A device that keeps sending unsecured (or too early) frames is logged this often.
SECURITY_LOG_EVERY_S = 60.0


class Session(Protocol):
    """What the driver needs of an OTA session (gateway.ota.session.OtaSession)."""

    state: ev.SessionState

    def start(self, now: float) -> list[ev.Action]: ...
    def handle(self, event: ev.Event, now: float) -> list[ev.Action]: ...
    def get_timer(self) -> float | None: ...
    def handle_timer(self, now: float) -> list[ev.Action]: ...


# Observer of everything a session does: (ieee, action, session). Notes, progress and
# state changes go here; so do Send* actions after they were sent (for audit trails).
# The session comes along so an observer can find its job without hashing the EUI64.
Observer = Callable[[zt.EUI64, ev.Action, "Session"], None]


@dataclass
class _Binding:
    session: Session
    profile: int | None = None
    device_ep: int | None = None
    server_ep: int = SERVER_ENDPOINT
    timer: asyncio.TimerHandle | None = None
    sends: set[asyncio.Task[None]] = field(default_factory=set)
    #: zigpy's Device the last request came from (None: look it up again).
    device: Device | None = None
    #: The destination of our frames, kept while the device's NWK address holds.
    dst: zt.AddrModeAddress | None = None
    #: Loop time at which the tap last set the device's last_seen.
    last_seen_set: float = float("-inf")
    #: The device's security, as the registry says (see the module docstring);
    #: ``tx_options`` None: the driver's own (set by attach).
    tx_options: zt.TransmitOptions | None = None
    aps: bool = False
    allowed: bool = True
    why_not: str | None = None
    #: (APS-encrypted, relays) the session's block limit was last set for.
    limit_for: tuple[bool, int] | None = None


class _TooLong(Exception):
    """The radio refused a frame as longer than it can send to the device."""


class OtaDriver:
    def __init__(
        self,
        app: ControllerApplication,
        *,
        observer: Observer | None = None,
        aps_encryption: bool = False,
        security: SecurityRegistry | None = None,
        radio_limits: PayloadLimits | None = None,
    ) -> None:
        self._app = app
        #: The radio family's payload limits (radios/limits.py), by the app's library.
        self.radio_limits = radio_limits if radio_limits is not None else for_app(app)
        self._observer = observer
        self._bindings: dict[zt.EUI64, _Binding] = {}
        self._loop = asyncio.get_running_loop()
        self._listener_id = app.add_listener(self)
        self._remove_tap = install_packet_tap(app, self.handle_packet)
        # NWK address -> (device, binding) for the tap: hashing a zigpy EUI64 costs
        # microseconds (its repr), and zigpy's get_device(nwk=) walks every device.
        # Emptied whenever a session or zigpy's device table changes.
        self._routes: dict[int, tuple[Device, _Binding]] = {}
        self._src: zt.AddrModeAddress | None = None
        # asyncio runs a timer up to the clock's resolution before its time.
        self._timer_slack = time.get_clock_info("monotonic").resolution
        tx = zt.TransmitOptions.ACK  # zigpy's request() with expect_reply=False
        self._tx_options = tx | zt.TransmitOptions.APS_Encryption if aps_encryption else tx
        self._aps_all = aps_encryption
        self.unparseable_frames = 0
        #: OTA frames from an APS-secured device that arrived without APS security.
        self.unsecured_frames = 0
        #: OTA frames from a device not yet allowed OTA, not fed to its session.
        self.blocked_frames = 0
        #: OTA frames a session emitted for a device not allowed OTA, not sent.
        self.withheld_frames = 0
        self._security_logged: dict[tuple[zt.EUI64, str], float] = {}
        self.security = security
        self._unlisten = security.listen(self._security_changed) if security is not None else None

    # ------------------------------------------------------------------ sessions

    def attach(self, ieee: zt.EUI64, session: Session, *, start: bool = True) -> None:
        """Give the device to a session; ``start`` sends the Image Notify."""
        self.detach(ieee)
        binding = _Binding(session=session)
        self._apply_security(binding, None if self.security is None else self.security.get(ieee))
        self._bindings[ieee] = binding
        self._routes.clear()
        self._set_ota_in_progress(ieee, True)
        if start:
            self.run(ieee, lambda now: session.start(now))
        else:
            self._rearm(ieee, binding)

    def detach(self, ieee: zt.EUI64, *, hand_back: bool = True) -> None:
        """Take the device from its session: its timer stops, frames not yet sent are
        cancelled (the session hears of each). ``hand_back`` False keeps zigpy's own OTA
        handler out (``ota_in_progress`` stays set): it would answer a parked device's
        request with ABORT or NO_IMAGE_AVAILABLE, and a device erases a partial download
        on ABORT."""
        binding = self._bindings.pop(ieee, None)
        if binding is None:
            return
        self._routes.clear()
        if binding.timer is not None:
            binding.timer.cancel()
        for task in list(binding.sends):
            task.cancel()
        if hand_back:
            self._set_ota_in_progress(ieee, False)

    def session(self, ieee: zt.EUI64) -> Session | None:
        binding = self._bindings.get(ieee)
        return None if binding is None else binding.session

    def run(self, ieee: zt.EUI64, call: Callable[[float], list[ev.Action]]) -> None:
        """Call into a session with the current time and carry out what it returns.

        The way in for the engine and the activation gate (activate, cancel, ...).
        """
        binding = self._bindings[ieee]
        self._execute(ieee, binding, call(self._loop.time()))

    def run_unbound(self, ieee: zt.EUI64, session: Session, call: Callable[[float], list[ev.Action]]) -> None:
        """Call into a session no device is bound to (parked while the radio is away):
        its notes and state changes are observed; a frame it returns cannot go out, and
        is answered as not sent."""
        for action in call(self._loop.time()):
            if isinstance(action, (ev.Note, ev.Progress, ev.StateChanged)):
                self._observe_session(ieee, session, action)
            elif isinstance(action, ev.FRAME_ACTION_TYPES):
                self._outcome(ieee, session, action, "not sent: the session is not bound to the radio")

    async def drain(self, timeout: float) -> None:
        """Wait (up to ``timeout``) for frames already handed to the radio to be sent.

        Closing the radio under a frame in flight leaves the radio library's own send
        task to fail on a closed connection ("Task exception was never retrieved").
        """
        sends = [task for binding in self._bindings.values() for task in binding.sends]
        if sends:
            await asyncio.wait(sends, timeout=timeout)

    async def close(self) -> None:
        for ieee in list(self._bindings):
            self.detach(ieee)
        self._app.remove_listener(self._listener_id)
        self._remove_tap()
        if self._unlisten is not None:
            self._unlisten()
            self._unlisten = None

    # ------------------------------------------------------------------ security

    def _apply_security(self, binding: _Binding, security: DeviceSecurity | None) -> None:
        aps = self._aps_all or (security is not None and security.aps)
        binding.aps = aps
        binding.tx_options = self._tx_options | zt.TransmitOptions.APS_Encryption if aps else self._tx_options
        binding.allowed = security is None or security.ota_allowed
        binding.why_not = None if security is None else security.waiting_reason

    def _security_changed(self, ieee: zt.EUI64, security: DeviceSecurity) -> None:
        """Registry listener: a device's key was established, failed or renewed."""
        binding = self._bindings.get(ieee)
        if binding is not None:
            self._apply_security(binding, security)
        if security.aps:
            # zigpy's own OTA traffic with the device (its interview's read, its Ota
            # handler's answers) goes APS-encrypted too from now on: the device drops
            # anything else. Cluster.aps_encryption is zigpy's per-cluster switch.
            device = self._app.devices.get(ieee)
            with contextlib.suppress(LookupError):
                if device is not None:
                    _ota_client_cluster(device).aps_encryption = True

    def _log_security(self, ieee: zt.EUI64, kind: str, msg: str, *args: Any) -> None:
        """One warning per device and kind a minute; the counters carry the rest."""
        now = self._loop.time()
        key = (ieee, kind)
        if now - self._security_logged.get(key, float("-inf")) < SECURITY_LOG_EVERY_S:
            return
        self._security_logged[key] = now
        LOGGER.warning("%s: " + msg + " (further ones this minute only counted)", ieee, *args)

    # ------------------------------------------------------------------ receiving

    def handle_packet(self, packet: zt.ZigbeePacket) -> bool:
        """The packet tap: True when the packet was a request for one of our sessions,
        or an OTA frame with no readable ZCL header (dropped)."""
        # ZDO's cluster 0x0019 (Active_EP_store_req) is not the OTA cluster.
        if packet.cluster_id != codec.OTA_CLUSTER_ID or packet.dst_ep == 0 or packet.src_ep == 0:
            return False
        data = packet.data.serialize()
        header = codec.parse_header(data)
        if isinstance(header, codec.Unparseable):
            # zigpy raises on it (ZCLHeader.deserialize, uncaught in packet_received),
            # and the radio library logs a traceback per frame: nobody can use it.
            self._drop_unreadable(packet.src, header, data)
            return True
        if not self._bindings:
            return False
        route = self._route(packet.src)
        if route is None:
            return False
        device, binding = route
        if arrived_unsecured(binding.aps, packet.tx_options):
            # Every OTA frame of a secured device, replies included: zigpy must not
            # match an unsecured read response to our read either.
            self.unsecured_frames += 1
            self._log_security(
                device.ieee, "unsecured", "ignored an OTA frame without APS security (command 0x%02X, %d so far)",
                header.command_id, self.unsecured_frames,
            )
            return True
        # Only requests: the rest (reports, read responses, Default Responses) must
        # reach zigpy, which matches replies.
        if header.frame_type == 0 or header.server_to_client:
            return False
        # What zigpy's Device.packet_received would have recorded (last_seen less often).
        now = self._loop.time()
        if now - binding.last_seen_set >= LAST_SEEN_EVERY_S:
            binding.last_seen_set = now
            device.last_seen = packet.timestamp
        if packet.lqi is not None:
            device.lqi = packet.lqi
        if packet.rssi is not None:
            device.rssi = packet.rssi
        self._receive(device, binding, packet.profile_id, packet.src_ep, packet.dst_ep, data, header)
        return True

    def _route(self, src: zt.AddrModeAddress | None) -> tuple[Device, _Binding] | None:
        if src is None:
            return None
        if src.addr_mode == zt.AddrMode.IEEE:
            device = self._app.devices.get(src.address)
        elif src.addr_mode == zt.AddrMode.NWK:
            route = self._routes.get(src.address)
            if route is not None and route[0].nwk == src.address:
                return route
            try:
                device = self._app.get_device(nwk=src.address)
            except KeyError:
                return None
        else:
            return None
        if not isinstance(device, Device):
            return None
        binding = self._bindings.get(device.ieee)
        if binding is None:
            return None
        if src.addr_mode == zt.AddrMode.NWK:
            self._routes[src.address] = (device, binding)
        return device, binding

    def _forget_devices(self, *_: Any) -> None:
        self._routes.clear()
        for binding in self._bindings.values():
            binding.device = None

    # zigpy application listener events that change which Device an address means.
    device_joined = device_left = device_removed = _forget_devices
    raw_device_initialized = device_initialized = device_reinterviewed = _forget_devices

    def handle_message(
        self, device: Device, profile: int, cluster: int, src_ep: int, dst_ep: int, message: bytes
    ) -> None:
        """zigpy application listener: the OTA frames the tap left to zigpy."""
        if cluster != codec.OTA_CLUSTER_ID:
            return
        binding = self._bindings.get(device.ieee)
        if binding is None:
            return
        self._receive(device, binding, profile, src_ep, dst_ep, bytes(message))

    def _receive(
        self, device: Device, binding: _Binding, profile: int, src_ep: int, dst_ep: int, data: bytes,
        header: codec.ZclHeader | None = None,
    ) -> None:
        # Ensure zigpy's own Ota handler stays out of it, even for a device that
        # (re)joined after the session was attached.
        if not device.ota_in_progress:
            device.ota_in_progress = True
        if not binding.allowed:
            self.blocked_frames += 1
            self._log_security(device.ieee, "blocked", "OTA frame not served: %s", binding.why_not)
            return
        binding.profile, binding.device_ep, binding.server_ep = profile, src_ep, dst_ep
        binding.device = device
        decoded = codec.decode_device_frame(data, header)
        if isinstance(decoded, codec.Unparseable):  # only if the tap was bypassed
            self._drop_unreadable(device.ieee, decoded, data)
            return
        if isinstance(decoded, codec.NotForSession):
            return
        if isinstance(decoded, _SIZED_REQUESTS):
            self._check_block_limit(device, binding)
        try:
            actions = binding.session.handle(decoded, self._loop.time())
        except Exception:  # a session bug must not take the radio listener down
            LOGGER.exception("%s: OTA session failed on %r", device.ieee, decoded)
            return
        self._execute(device.ieee, binding, actions)

    def _check_block_limit(self, device: Device, binding: _Binding) -> None:
        """Tell the session the radio's block limit when the device's security or route
        changed since it was last told (a tuple compare per request otherwise)."""
        key = (binding.aps, len(device.relays or ()))
        if key == binding.limit_for:
            return
        binding.limit_for = key
        limit = block_limit(self.radio_limits, aps_encrypted=key[0], relays=key[1])
        self._feed_limit(device.ieee, binding, ev.BlockLimitSet(limit.size, limit.why))

    def _feed_limit(self, ieee: zt.EUI64, binding: _Binding, event: ev.BlockLimitSet) -> None:
        try:
            actions = binding.session.handle(event, self._loop.time())
        except Exception:
            LOGGER.exception("%s: OTA session failed on %r", ieee, event)
            return
        self._execute(ieee, binding, actions)

    def _drop_unreadable(self, src: object, why: codec.Unparseable, data: bytes) -> None:
        # A fuzzing or faulty device can send thousands: one warning line, then debug.
        self.unparseable_frames += 1
        level = logging.WARNING if self.unparseable_frames == 1 else logging.DEBUG
        more = "; further ones are only counted (unparseable_frames) and logged at debug" if level == logging.WARNING else ""
        LOGGER.log(level, "%s: dropped an OTA frame with no readable ZCL header (%s): %s%s", src, why.reason, data.hex(), more)

    # ------------------------------------------------------------------ actions

    def _execute(self, ieee: zt.EUI64, binding: _Binding, actions: list[ev.Action]) -> None:
        for action in actions:
            if isinstance(action, (ev.Note, ev.Progress, ev.StateChanged)):
                self._observe(ieee, binding, action)
            elif isinstance(action, ev.ReadAttributes):
                self._loop.create_task(self._read_attributes(ieee, action), name=f"ota-read-{ieee}")
            else:
                tsn = codec.reply_tsn(action)
                seq = tsn if tsn is not None else self._app.get_sequence()
                try:
                    data = codec.encode_action(action, seq)
                except (ValueError, TypeError) as exc:
                    LOGGER.error("%s: cannot encode %r: %s", ieee, action, exc)
                    self._outcome(ieee, binding.session, action, f"not encodable: {exc}")
                    continue
                self._start_send(ieee, binding, data, seq, action)
        self._rearm(ieee, binding)

    def _observe(self, ieee: zt.EUI64, binding: _Binding, action: ev.Action) -> None:
        self._observe_session(ieee, binding.session, action)

    def _observe_session(self, ieee: zt.EUI64, session: Session, action: ev.Action) -> None:
        if self._observer is not None:
            try:
                self._observer(ieee, action, session)
            except Exception:
                LOGGER.exception("OTA observer failed on %r", action)

    def _rearm(self, ieee: zt.EUI64, binding: _Binding) -> None:
        when = binding.session.get_timer()
        timer = binding.timer
        if timer is not None:
            # Every block moves the stall deadline later: a timer due no later than the
            # session's time stays, and _on_timer re-arms it when it fires early.
            if when is not None and timer.when() <= when:
                return
            timer.cancel()
            binding.timer = None
        if when is not None:
            binding.timer = self._loop.call_at(when, self._on_timer, ieee)

    def _on_timer(self, ieee: zt.EUI64) -> None:
        binding = self._bindings.get(ieee)
        if binding is None:
            return
        binding.timer = None
        when = binding.session.get_timer()
        if when is None:
            return
        if when > self._loop.time() + self._timer_slack:
            binding.timer = self._loop.call_at(when, self._on_timer, ieee)
            return
        self._execute(ieee, binding, binding.session.handle_timer(self._loop.time()))

    def _feed(self, ieee: zt.EUI64, event: ev.Event) -> None:
        binding = self._bindings.get(ieee)
        if binding is not None:
            self._execute(ieee, binding, binding.session.handle(event, self._loop.time()))

    def _start_send(self, ieee: zt.EUI64, binding: _Binding, data: bytes, seq: int, action: ev.Action) -> None:
        # The security of the moment the frame was made: a block cut to 63 bytes before
        # the device's key came into force must not go out APS-encrypted (too long for
        # one frame); it goes as it was made, and the device asks again.
        task = self._loop.create_task(self._send_one(ieee, binding, data, seq, action, binding.tx_options))
        binding.sends.add(task)
        session = binding.session

        def done(task: asyncio.Task[None]) -> None:
            binding.sends.discard(task)
            if task.cancelled():
                # Detached (or closed) with the frame unsent, perhaps before the task
                # ever ran: the session still hears of it, or its pacer counts it in
                # flight for ever.
                self._outcome(ieee, session, action, "cancelled: the session was detached")

        task.add_done_callback(done)

    async def _send_one(
        self, ieee: zt.EUI64, binding: _Binding, data: bytes, seq: int, action: ev.Action, tx_options: zt.TransmitOptions | None,
    ) -> None:
        too_long: ev.BlockTooLong | None = None
        try:
            error = await self._send(ieee, binding, data, seq, tx_options)
        except _TooLong as exc:
            error = str(exc)
            if isinstance(action, ev.SendImageBlock):
                too_long = self._too_long(ieee, binding, action, tx_options)
        except Exception as exc:  # a radio library's own failure (a closed link): the frame is lost
            LOGGER.warning("%s: OTA frame (seq %d) not sent: %s: %s", ieee, seq, type(exc).__name__, exc)
            error = f"{type(exc).__name__}: {exc}"
        self._outcome(ieee, binding.session, action, error, too_long)
        if error is None:
            self._observe(ieee, binding, action)

    def _too_long(self, ieee: zt.EUI64, binding: _Binding, action: ev.SendImageBlock, tx_options: zt.TransmitOptions | None) -> ev.BlockTooLong:
        """The outcome of a block the radio refused as too long: a smaller limit."""
        device = binding.device or self._app.devices.get(ieee)
        relays = len(device.relays or ()) if device is not None else 0
        aps = tx_options is not None and zt.TransmitOptions.APS_Encryption in tx_options
        limit: BlockLimit = after_too_long(self.radio_limits, aps_encrypted=aps, relays=relays, refused=len(action.data))
        LOGGER.warning("%s: the radio refused a %d-byte block at offset %d as too long; blocks of at most %s",
                       ieee, len(action.data), action.file_offset, limit.why)
        return ev.BlockTooLong(action.tsn, action.file_offset, len(action.data), limit.size, limit.why)

    def _outcome(self, ieee: zt.EUI64, session: Session, action: ev.Action, error: str | None,
                 too_long: ev.BlockTooLong | None = None) -> None:
        """Hand a frame's send outcome back to the session that made it (SEND_OUTCOMES)."""
        if too_long is not None:
            event: ev.Event = too_long
        elif isinstance(action, ev.SendImageNotify):
            event = ev.NotifyDelivered() if error is None else ev.NotifyFailed(error)
        else:
            event = ev.FRAME_DELIVERED if error is None else ev.FrameNotDelivered(error)
        binding = self._bindings.get(ieee)
        if binding is not None and binding.session is session:
            self._execute(ieee, binding, session.handle(event, self._loop.time()))
            return
        # A session no longer bound (parked, replaced, closed): it must still hear the
        # outcome; what it answers has nowhere to go.
        try:
            session.handle(event, self._loop.time())
        except Exception:
            LOGGER.exception("%s: OTA session failed on %r", ieee, event)

    async def _send(self, ieee: zt.EUI64, binding: _Binding, data: bytes, seq: int, tx_options: zt.TransmitOptions | None = None) -> str | None:
        """Send one frame; returns None on success or why it failed."""
        if not binding.allowed:
            # The engine does not start a session before the registry allows it; this
            # catches a key lost (or renegotiating) mid-push.
            self.withheld_frames += 1
            self._log_security(ieee, "withheld", "OTA frame not sent: %s", binding.why_not)
            return f"not sent: {binding.why_not}"
        device = binding.device
        if device is None:
            try:
                device = self._app.get_device(ieee=ieee)
            except KeyError:
                return "device not known to the radio"
        packet = self._packet(device, binding, data, seq, tx_options)
        try:
            await self._app.send_packet(packet)
        except (zigpy.exceptions.DeliveryError, asyncio.TimeoutError, zigpy.exceptions.ZigbeeException) as exc:
            if self.radio_limits.refused_as_too_long(exc):
                raise _TooLong(str(exc) or type(exc).__name__) from exc
            LOGGER.info("%s: OTA frame (seq %d) not delivered: %s", ieee, seq, exc)
            return str(exc) or type(exc).__name__
        return None

    def _packet(self, device: Device, binding: _Binding, data: bytes, seq: int, tx_options: zt.TransmitOptions | None = None) -> zt.ZigbeePacket:
        """What zigpy's ``request(..., expect_reply=False)`` hands the radio."""
        profile, device_ep = self._addressing(device, binding)
        own = self._app.state.node_info.nwk
        src = self._src
        if src is None or src.address != own:
            src = self._src = zt.AddrModeAddress(addr_mode=zt.AddrMode.NWK, address=own)
        dst = binding.dst
        if dst is None or dst.address != device.nwk:
            dst = binding.dst = zt.AddrModeAddress(addr_mode=zt.AddrMode.NWK, address=device.nwk)
        return zt.ZigbeePacket(
            src=src,
            src_ep=binding.server_ep,
            dst=dst,
            dst_ep=device_ep,
            tsn=seq,
            profile_id=profile,
            cluster_id=codec.OTA_CLUSTER_ID,
            data=zt.SerializableBytes(data),
            source_route=self._app.build_source_route_to(dest=device) if self._app.config[zconf.CONF_SOURCE_ROUTING] else None,
            tx_options=tx_options or binding.tx_options or self._tx_options,
            priority=zt.PacketPriority.NORMAL,
        )

    def _addressing(self, device: Device, binding: _Binding) -> tuple[int, int]:
        if binding.profile is not None and binding.device_ep is not None:
            return binding.profile, binding.device_ep
        # Nothing heard yet (an Image Notify): use the endpoint with an OTA client.
        for ep_id, ep in _endpoints(device):
            if codec.OTA_CLUSTER_ID in ep.out_clusters:
                profile = ep.profile_id if ep.profile_id is not None else SMART_ENERGY_PROFILE
                return profile, ep_id
        return SMART_ENERGY_PROFILE, 1

    async def _read_attributes(self, ieee: zt.EUI64, action: ev.ReadAttributes) -> None:
        try:
            device = self._app.get_device(ieee=ieee)
            cluster = _ota_client_cluster(device)
            binding = self._bindings.get(ieee)
            if binding is not None and not binding.allowed:
                raise PermissionError(f"not sent: {binding.why_not}")
            if binding is not None and binding.aps:
                # zigpy's Cluster.aps_encryption: all of the cluster's requests and
                # replies go APS-encrypted (zigpy/zcl/__init__.py, Cluster.request).
                # Never cleared here: the device insists from now on.
                cluster.aps_encryption = True
            async with asyncio.timeout(ATTRIBUTE_READ_TIMEOUT_S):
                success, _failure = await cluster.read_attributes(list(action.attribute_ids), allow_cache=False)
        except Exception as exc:  # any radio, any failure: the session decides what it means
            self._feed(ieee, ev.AttributeReadFailed(f"{type(exc).__name__}: {exc}"))
            return
        values = {int(k): int(v) for k, v in success.items() if isinstance(k, int) and isinstance(v, int)}
        self._feed(ieee, ev.AttributesRead(values))

    def _set_ota_in_progress(self, ieee: zt.EUI64, value: bool) -> None:
        device = self._app.devices.get(ieee)
        if device is not None:
            device.ota_in_progress = value


# Requests after which blocks follow: the session must know the limit before it answers.
_SIZED_REQUESTS = (ev.QueryNextImageRequested, ev.ImageBlockRequested, ev.ImagePageRequested)


def _endpoints(device: Device) -> list[tuple[int, Any]]:
    return [(ep_id, ep) for ep_id, ep in device.endpoints.items() if ep_id != 0]


def _ota_client_cluster(device: Device) -> Any:
    for _ep_id, ep in _endpoints(device):
        if codec.OTA_CLUSTER_ID in ep.out_clusters:
            return ep.out_clusters[codec.OTA_CLUSTER_ID]
    raise LookupError(f"{device.ieee} has no OTA client cluster")
