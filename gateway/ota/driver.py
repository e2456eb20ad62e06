"""The thin asyncio layer between a zigpy ControllerApplication and OTA sessions.

It is the only OTA code that awaits the radio. For every frame a device sends on
cluster 0x0019 it feeds the decoded event to that device's session with
``loop.time()``, carries out the actions the session returns, and re-arms one timer
per session. It works with any zigpy radio (sim, bellows, zigpy-znp).

It listens through zigpy's application listener (``handle_message``), which sees the
raw APS payload before zigpy's own Ota cluster handler does; while a session owns a
device, ``device.ota_in_progress`` is set so zigpy's handler stays quiet (zigpy would
otherwise answer NO_IMAGE_AVAILABLE to queries and ABORT to block requests).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import zigpy.exceptions
import zigpy.types as zt
from zigpy.application import ControllerApplication
from zigpy.device import Device

from gateway.ota import codec
from gateway.ota import events as ev

LOGGER = logging.getLogger(__name__)

SMART_ENERGY_PROFILE = 0x0109
# Our OTA server endpoint on the coordinator.
SERVER_ENDPOINT = 1
# Attribute reads may wait for a sleepy device's next poll.
ATTRIBUTE_READ_TIMEOUT_S = 30.0


class Session(Protocol):
    """What the driver needs of an OTA session (gateway.ota.session.OtaSession)."""

    state: ev.SessionState

    def start(self, now: float) -> list[ev.Action]: ...
    def handle(self, event: ev.Event, now: float) -> list[ev.Action]: ...
    def get_timer(self) -> float | None: ...
    def handle_timer(self, now: float) -> list[ev.Action]: ...


# Observer of everything a session does: (ieee, action). Notes, progress and state
# changes go here; so do Send* actions after they were sent (for audit trails).
Observer = Callable[[zt.EUI64, ev.Action], None]


@dataclass
class _Binding:
    session: Session
    profile: int | None = None
    device_ep: int | None = None
    server_ep: int = SERVER_ENDPOINT
    timer: asyncio.TimerHandle | None = None
    outbox: asyncio.Queue[tuple[ev.Action, int | None]] = field(default_factory=asyncio.Queue)
    sender: asyncio.Task[None] | None = None


class OtaDriver:
    def __init__(
        self,
        app: ControllerApplication,
        *,
        observer: Observer | None = None,
        pacer: Any = None,
        aps_encryption: bool = False,
    ) -> None:
        self._app = app
        self._observer = observer
        self._pacer = pacer
        self._aps_encryption = aps_encryption
        self._bindings: dict[zt.EUI64, _Binding] = {}
        self._loop = asyncio.get_running_loop()
        self._listener_id = app.add_listener(self)
        self.unparseable_frames = 0

    # ------------------------------------------------------------------ sessions

    def attach(self, ieee: zt.EUI64, session: Session, *, start: bool = True) -> None:
        """Give the device to a session; ``start`` sends the Image Notify."""
        self.detach(ieee)
        binding = _Binding(session=session)
        self._bindings[ieee] = binding
        binding.sender = self._loop.create_task(self._send_loop(ieee, binding), name=f"ota-send-{ieee}")
        self._set_ota_in_progress(ieee, True)
        if start:
            self.run(ieee, lambda now: session.start(now))
        else:
            self._rearm(ieee, binding)

    def detach(self, ieee: zt.EUI64) -> None:
        binding = self._bindings.pop(ieee, None)
        if binding is None:
            return
        if binding.timer is not None:
            binding.timer.cancel()
        if binding.sender is not None:
            binding.sender.cancel()
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

    async def close(self) -> None:
        for ieee in list(self._bindings):
            self.detach(ieee)
        self._app.remove_listener(self._listener_id)

    # ------------------------------------------------------------------ zigpy listener

    def handle_message(
        self, device: Device, profile: int, cluster: int, src_ep: int, dst_ep: int, message: bytes
    ) -> None:
        if cluster != codec.OTA_CLUSTER_ID:
            return
        binding = self._bindings.get(device.ieee)
        if binding is None:
            return
        # Ensure zigpy's own Ota handler stays out of it, even for a device that
        # (re)joined after the session was attached.
        device.ota_in_progress = True
        binding.profile, binding.device_ep, binding.server_ep = profile, src_ep, dst_ep
        decoded = codec.decode_device_frame(bytes(message))
        if isinstance(decoded, codec.Unparseable):
            self.unparseable_frames += 1
            LOGGER.warning("%s: ignored an OTA frame with no readable ZCL header (%s): %s", device.ieee, decoded.reason, bytes(message).hex())
            return
        if isinstance(decoded, codec.Unsupported):
            self._enqueue(binding, ("unsupported", decoded), decoded.tsn)
            return
        if isinstance(decoded, codec.NotForSession):
            return
        try:
            actions = binding.session.handle(decoded, self._loop.time())
        except Exception:  # a session bug must not take the radio listener down
            LOGGER.exception("%s: OTA session failed on %r", device.ieee, decoded)
            return
        self._execute(device.ieee, binding, actions)

    # ------------------------------------------------------------------ actions

    def _execute(self, ieee: zt.EUI64, binding: _Binding, actions: list[ev.Action]) -> None:
        for action in actions:
            if isinstance(action, (ev.Note, ev.Progress, ev.StateChanged)):
                self._observe(ieee, action)
            elif isinstance(action, ev.ReadAttributes):
                self._loop.create_task(self._read_attributes(ieee, action), name=f"ota-read-{ieee}")
            else:
                self._enqueue(binding, action, codec.reply_tsn(action))
        self._rearm(ieee, binding)

    def _enqueue(self, binding: _Binding, item: Any, tsn: int | None) -> None:
        binding.outbox.put_nowait((item, tsn))

    def _observe(self, ieee: zt.EUI64, action: ev.Action) -> None:
        if self._observer is not None:
            try:
                self._observer(ieee, action)
            except Exception:
                LOGGER.exception("OTA observer failed on %r", action)

    def _rearm(self, ieee: zt.EUI64, binding: _Binding) -> None:
        if binding.timer is not None:
            binding.timer.cancel()
            binding.timer = None
        when = binding.session.get_timer()
        if when is not None:
            binding.timer = self._loop.call_at(when, self._on_timer, ieee)

    def _on_timer(self, ieee: zt.EUI64) -> None:
        binding = self._bindings.get(ieee)
        if binding is None:
            return
        binding.timer = None
        self._execute(ieee, binding, binding.session.handle_timer(self._loop.time()))

    def _feed(self, ieee: zt.EUI64, event: ev.Event) -> None:
        binding = self._bindings.get(ieee)
        if binding is not None:
            self._execute(ieee, binding, binding.session.handle(event, self._loop.time()))

    async def _send_loop(self, ieee: zt.EUI64, binding: _Binding) -> None:
        # One sender per device keeps frames in the order the session emitted them.
        while True:
            item, tsn = await binding.outbox.get()
            if isinstance(item, tuple):  # ("unsupported", codec.Unsupported)
                await self._send(ieee, binding, codec.encode_unsupported(item[1]), item[1].tsn)
                continue
            action: ev.Action = item
            seq = tsn if tsn is not None else self._app.get_sequence()
            try:
                data = codec.encode_action(action, seq)
            except (ValueError, TypeError) as exc:
                LOGGER.error("%s: cannot encode %r: %s", ieee, action, exc)
                continue
            error = await self._send(ieee, binding, data, seq)
            if isinstance(action, ev.SendImageNotify):
                self._feed(ieee, ev.NotifyDelivered() if error is None else ev.NotifyFailed(error))
            if error is None:
                self._observe(ieee, action)

    async def _send(self, ieee: zt.EUI64, binding: _Binding, data: bytes, seq: int) -> str | None:
        """Send one frame; returns None on success or why it failed."""
        try:
            device = self._app.get_device(ieee=ieee)
        except KeyError:
            return "device not known to the radio"
        profile, device_ep = self._addressing(device, binding)
        if self._pacer is not None:
            self._pacer.sent_started(self._loop.time())
        try:
            await self._app.request(
                device,
                profile,
                codec.OTA_CLUSTER_ID,
                binding.server_ep,
                device_ep,
                seq,
                data,
                expect_reply=False,
                aps_encryption=self._aps_encryption,
            )
        except (zigpy.exceptions.DeliveryError, asyncio.TimeoutError, zigpy.exceptions.ZigbeeException) as exc:
            LOGGER.info("%s: OTA frame (seq %d) not delivered: %s", ieee, seq, exc)
            return str(exc) or type(exc).__name__
        finally:
            if self._pacer is not None:
                self._pacer.sent_finished(self._loop.time())
        return None

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


def _endpoints(device: Device) -> list[tuple[int, Any]]:
    return [(ep_id, ep) for ep_id, ep in device.endpoints.items() if ep_id != 0]


def _ota_client_cluster(device: Device) -> Any:
    for _ep_id, ep in _endpoints(device):
        if codec.OTA_CLUSTER_ID in ep.out_clusters:
            return ep.out_clusters[codec.OTA_CLUSTER_ID]
    raise LookupError(f"{device.ieee} has no OTA client cluster")
