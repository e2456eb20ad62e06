"""The floor of the hub-cost benchmark: the least an OTA server can do per frame
through zigpy's radio API.

Any OTA server in a zigpy-based hub receives each request from the radio driver as a
`ZigbeePacket` handed to ``packet_received`` and sends each answer as another
`ZigbeePacket` through the driver's ``send_packet`` coroutine, which passes zigpy's
concurrency limiter; asyncio runs both sides. `FloorResponder` does that and next to
nothing else: a packet tap takes each OTA request before zigpy parses it, decodes it
with our codec, encodes the answer with our codec and starts one task per answer. The
hub-cost scenario ``hub{N}/floor`` (bench/ota.py) runs it exactly where ``hub{N}/ours``
runs our Engine, so that its CPU seconds per MiB are what any zigpy-based hub pays on
this radio interface regardless of its OTA logic, and ``ours - floor`` is what the
gateway's own logic (sessions, pacing, observers, bookkeeping) costs on top.

It is not an OTA server anyone should use: it checks nothing (manufacturer, image
type, hardware or file version, offsets asked twice), keeps no session, follows no
resume or retry rules, paces nothing, logs nothing, and tells every device to apply
the image as soon as it reports SUCCESS.
"""

from __future__ import annotations

import asyncio
from typing import Any

import zigpy.types as zt

from gateway.image import FirmwareImage
from gateway.ota import codec
from gateway.ota import events as ev
from radios.tap import install_packet_tap

HA_PROFILE = 0x0104
#: Profile and endpoints used for a device before it sent anything (its Image Notify).
DEFAULT_ENDPOINT = 1
BLOCK_CAP = 63  # as ours (gateway/ota/config.py): room for a source route
NOTIFY_JITTER = 100  # every device that hears the Image Notify queries


class FloorResponder:
    """Answers the OTA requests of the devices it was started for, with ``image``.

    Query Next Image: SUCCESS with the image. Image Block Request: the block at the
    offset asked, at most min(maximum data size, ``block_cap`` (63), rest of the image) bytes. Upgrade
    End Request with status SUCCESS: upgrade now. Every other frame of a started device
    on the OTA cluster (client to server, cluster-specific) is taken and not answered;
    frames of other devices go on to zigpy.
    """

    def __init__(self, app: Any, image: FirmwareImage, *, block_cap: int = BLOCK_CAP) -> None:
        self._app = app
        #: The most image bytes per block (less behind a relay: the stack's limit).
        self._block_cap = block_cap
        self._data = image.data
        self._size = image.size
        self._ids = (image.manufacturer_code, image.image_type, image.file_version)
        self._loop = asyncio.get_running_loop()
        self._src = zt.AddrModeAddress(addr_mode=zt.AddrMode.NWK, address=app.state.node_info.nwk)
        # NWK address -> [destination address, profile, device endpoint, our endpoint]
        self._devices: dict[int, list[Any]] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        #: Answers whose send_packet raised (delivery failures; none on the instant link).
        self.send_failures = 0
        self._remove_tap = install_packet_tap(app, self._tap)

    def start(self, ieee: zt.EUI64) -> None:
        """Send the device an Image Notify for the image; its requests are answered from now on."""
        device = self._app.devices[ieee]
        device.ota_in_progress = True  # zigpy's own OTA handler stays out
        nwk = int(device.nwk)
        dst = zt.AddrModeAddress(addr_mode=zt.AddrMode.NWK, address=device.nwk)
        route = self._devices[nwk] = [dst, HA_PROFILE, DEFAULT_ENDPOINT, DEFAULT_ENDPOINT]
        tsn = self._app.get_sequence()
        self._send(route, tsn, codec.encode_action(ev.SendImageNotify(NOTIFY_JITTER, *self._ids), tsn))

    @property
    def pending(self) -> int:
        """Answers handed to the radio and not yet confirmed."""
        return len(self._tasks)

    def close(self) -> None:
        """Remove the tap and cancel the sends still under way."""
        self._remove_tap()
        for task in list(self._tasks):
            task.cancel()
        self._devices.clear()

    def _tap(self, packet: zt.ZigbeePacket) -> bool:
        if packet.cluster_id != codec.OTA_CLUSTER_ID:
            return False
        src = packet.src
        if src is None or src.addr_mode != zt.AddrMode.NWK:
            return False
        route = self._devices.get(src.address)
        if route is None:
            return False
        data = packet.data.serialize()
        if not codec.is_client_request(data):  # the rest (Default Responses, reports) is zigpy's
            return False
        route[1], route[2], route[3] = packet.profile_id, packet.src_ep, packet.dst_ep
        request = codec.decode_device_frame(data)
        if isinstance(request, ev.ImageBlockRequested):
            offset = request.file_offset
            size = min(request.maximum_data_size, self._block_cap, self._size - offset)
            if size <= 0:
                return True
            answer: ev.Action = ev.SendImageBlock(request.tsn, *self._ids, offset, self._data[offset : offset + size])
        elif isinstance(request, ev.QueryNextImageRequested):
            answer = ev.SendQueryNextImageResponse(request.tsn, ev.Status.SUCCESS, *self._ids, self._size)
        elif isinstance(request, ev.UpgradeEndRequested):
            if request.status != ev.Status.SUCCESS:
                return True
            answer = ev.SendUpgradeEndResponse(request.tsn, *self._ids, hold=False, upgrade_at=None)
        else:
            return True
        self._send(route, request.tsn, codec.encode_action(answer, request.tsn))
        return True

    def _send(self, route: list[Any], tsn: int, data: bytes) -> None:
        dst, profile, device_ep, own_ep = route
        packet = zt.ZigbeePacket(
            src=self._src,
            src_ep=own_ep,
            dst=dst,
            dst_ep=device_ep,
            tsn=tsn,
            profile_id=profile,
            cluster_id=codec.OTA_CLUSTER_ID,
            data=zt.SerializableBytes(data),
            tx_options=zt.TransmitOptions.ACK,
        )
        task = self._loop.create_task(self._app.send_packet(packet))
        self._tasks.add(task)
        task.add_done_callback(self._sent)

    def _sent(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:  # retrieved: no "never retrieved" warning
            self.send_failures += 1
