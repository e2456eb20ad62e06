"""The simulated devices' OTA Upgrade *client* (cluster 0x0019), written from ZCL §11.

Sans-I/O: `OtaClient` is given parsed-header commands and the time, and returns
actions (commands to send, "activate now"); it keeps one timer (`get_timer` /
`handle_timer`). The device (device.py) owns the radio, the ZCL header, the asyncio
timer and the reboot. It is written independently of the gateway's OTA server and
shares no code with it: payloads are built and parsed with zigpy's ZCL schemas
(zigpy.zcl.clusters.general.Ota and foundation), nothing else.

Theory of operation
===================

States and what the timer means in each (ImageUpgradeStatus, attribute 0x0006, is
kept in `Flash.status` so it survives a reboot)::

    IDLE               next Query Next Image at the deadline           status 0 (or 1 if
                                                                       a stalled partial
                                                                       download is kept)
    QUERYING           Query Next Image sent; deadline = no answer     unchanged
    DOWNLOADING        awaiting a block/page: deadline = response      1 download in progress
                       timeout (retry; give up after max_retries);
                       or pausing (flash write, MinimumBlockPeriod,
                       WAIT_FOR_DATA): deadline = next request
    WAITING_END_RESPONSE  Upgrade End Request sent; deadline = no      2 download complete
                       answer (counts one unanswered request); or
                       pausing until the next one (wait_interval)
    HOLDING            told upgrade_time 0xFFFFFFFF; re-asks with      3 waiting to upgrade
                       Upgrade End Request every wait_interval
    COUNTDOWN          told a real upgrade time; deadline = reboot     4 count down
    ACTIVATING         handed `Activate` to the device                 (device reboots)

Choices, where the spec leaves room (each is what common clients do):

* Image Notify: unicast always triggers a query (ZCL 11.13.3.4: the jitter and the
  payload filters are for broadcasts); broadcast is filtered by manufacturer / image
  type / version (0xFFFF.. wildcards) and answered if a draw in 1..100 is <= the query
  jitter. Either way the query goes out after a random delay in [0, notify_delay]. A
  notify is ignored unless the client is IDLE.
* A block is accepted only for the expected file offset and the queried image; others
  are ignored (not answered). Page mode asks again from the current offset when a
  page stalls.
* WAIT_FOR_DATA: wait request_time - current_time seconds, or request_time seconds
  when current_time is 0; a MinimumBlockPeriod in it is adopted (attribute 0x0009,
  milliseconds: cluster revision 3). zigpy's schema insists on that field; the spec
  made it optional, so it is parsed by hand here.
* ABORT (or any other failure status in a block response) ends the download and
  erases the partial image; the client goes back to querying.
* No answer after max_retries retries: give up, keep the partial image (status 1) so a
  later query offering the same image resumes at the offset.
* Upgrade End Request unanswered for response_timeout counts one *consecutive*
  unanswered request (an answer resets the count). With self_activate_after = N > 0
  and UpgradeTimeoutPolicy 0 the device activates by itself after N of them (the
  misbehaviour the gateway's hold must survive); otherwise it asks again every
  wait_interval.
* Upgrade End Response: matching ids or the wildcards 0xFFFF / 0xFFFF / 0xFFFFFFFF;
  upgrade_time 0xFFFFFFFF holds; current_time 0 makes upgrade_time an offset in
  seconds; otherwise both are UTC seconds since 2000-01-01 and the delay is their
  difference (never negative). Accepted while WAITING_END_RESPONSE, HOLDING or
  COUNTDOWN: an unsolicited one is the server's word to activate (or to hold again).
* Default Response ABORT to an Upgrade End Request (while WAITING_END_RESPONSE or
  HOLDING): the server does not want this image applied (ZCL 11.13.6.4, Upgrade End
  Request, effect on receipt). The client erases the downloaded image and returns to
  normal operation: IDLE, querying again after query_interval. Other failure
  statuses in such a Default Response are ignored (the request stays unanswered).
* The received image is verified before Upgrade End: OTA header magic, header
  length, total size equal to the received length and to the queried size,
  manufacturer / image type / file version equal to the query response, the hardware
  version range if the header has one, the destination IEEE if it has one, and, on
  a device given its supplier's key (``supplier_key``), the GBCS supplier signature
  over the Manufacturer Image (signature.py). Failure sends Upgrade End Request
  INVALID_IMAGE (0x96) and erases the image.
"""

from __future__ import annotations

from collections.abc import Callable
import dataclasses
from dataclasses import dataclass, field
import enum
import random
from typing import Any, Final

from cryptography.hazmat.primitives.asymmetric import ec
import zigpy.types as t
from zigpy.ota.image import OTAImageHeader
from zigpy.zcl import foundation
from zigpy.zcl.clusters.general import (
    ImageBlockCommand,
    ImageNotifyCommand,
    ImagePageCommand,
    ImageUpgradeStatus,
    Ota,
    QueryNextImageCommand,
)

from .signature import supplier_signature_error

__all__ = [
    "Activate",
    "ClientConfig",
    "ClientState",
    "Flash",
    "ImageTarget",
    "OtaClient",
    "SendCommand",
]

Status = foundation.Status
WILDCARD_MANUFACTURER: Final = 0xFFFF
WILDCARD_IMAGE_TYPE: Final = 0xFFFF
WILDCARD_FILE_VERSION: Final = 0xFFFFFFFF
UPGRADE_TIME_WAIT: Final = 0xFFFFFFFF
OTA_HEADER_MIN_LEN: Final = 56
CLUSTER_REVISION: Final = 3
ZIGBEE_PRO_STACK: Final = 0x0002

_ALL_ZEROS: Final = t.EUI64.convert("00:00:00:00:00:00:00:00")
_ALL_ONES: Final = t.EUI64.convert("ff:ff:ff:ff:ff:ff:ff:ff")
_S = Ota.ServerCommandDefs  # client -> server (what we send)
_C = Ota.ClientCommandDefs  # server -> client (what we receive)


class ClientState(enum.Enum):
    IDLE = "idle"
    QUERYING = "querying"
    DOWNLOADING = "downloading"
    WAITING_END_RESPONSE = "waiting_end_response"
    HOLDING = "holding"
    COUNTDOWN = "countdown"
    ACTIVATING = "activating"


@dataclass(frozen=True)
class ImageTarget:
    """The image a Query Next Image Response offered."""

    manufacturer_code: int
    image_type: int
    file_version: int
    image_size: int


@dataclass
class Flash:
    """What survives a reboot: the running version and the (partial) download."""

    current_file_version: int
    target: ImageTarget | None = None
    data: bytearray = field(default_factory=bytearray)
    status: ImageUpgradeStatus = ImageUpgradeStatus.Normal

    @property
    def offset(self) -> int:
        return len(self.data)

    def erase(self) -> None:
        self.target = None
        self.data = bytearray()
        self.status = ImageUpgradeStatus.Normal


@dataclass(frozen=True)
class ClientConfig:
    ieee: t.EUI64
    manufacturer_code: int
    image_type: int
    hardware_version: int
    max_data_size: int
    page_requests: bool
    page_size: int
    response_spacing_ms: int
    min_block_period_ms: int
    query_delay: float
    query_interval: float
    notify_delay: float
    response_timeout: float
    max_retries: int
    wait_interval: float
    self_activate_after: int
    timeout_policy: int
    activation_policy: int
    corrupt: bool
    flash_time: Callable[[int], float] = lambda n: 0.0
    supplier_key: ec.EllipticCurvePublicKey | None = None  # the GBCS trust anchor, if the device holds one


# -- actions -------------------------------------------------------------------------


@dataclass(frozen=True)
class SendCommand:
    """Send an OTA cluster command (client -> server direction)."""

    command_id: int
    payload: bytes
    disable_default_response: bool = True


@dataclass(frozen=True)
class Activate:
    """Reboot into the downloaded image (the device applies it to flash)."""

    file_version: int
    self_activated: bool


@dataclass(frozen=True)
class Refuse:
    """Answer the received command with a Default Response carrying this status."""

    status: Status


Action = SendCommand | Activate | Refuse


@dataclass
class Counters:
    """What the OTA client did; the device exposes them as ``device.counters``."""

    queries_sent: int = 0
    notifies_received: int = 0
    block_requests_sent: int = 0
    page_requests_sent: int = 0
    blocks_received: int = 0
    bytes_received: int = 0
    blocks_ignored: int = 0
    wait_for_data: int = 0
    aborts: int = 0
    response_timeouts: int = 0
    retries: int = 0
    gave_up: int = 0
    resumed: int = 0
    downloads_completed: int = 0
    invalid_images: int = 0
    upgrade_end_sent: int = 0
    upgrade_end_answered: int = 0
    upgrade_end_unanswered: int = 0
    holds: int = 0
    server_aborts: int = 0
    activations: int = 0
    self_activations: int = 0
    unexpected: int = 0
    malformed: int = 0

    def as_dict(self) -> dict[str, int]:
        return dataclasses.asdict(self)


Recorder = Callable[..., None]


def _serialize(schema: type[foundation.CommandSchema], **fields: Any) -> bytes:
    return schema(**fields).serialize()


def _parse_block_response(payload: bytes) -> dict[str, Any]:
    """Image Block Response (0x05), all three forms. Raises ValueError if malformed."""
    status, rest = Status.deserialize(payload)
    out: dict[str, Any] = {"status": status}
    if status == Status.SUCCESS:
        out["manufacturer_code"], rest = t.uint16_t.deserialize(rest)
        out["image_type"], rest = t.uint16_t.deserialize(rest)
        out["file_version"], rest = t.uint32_t.deserialize(rest)
        out["file_offset"], rest = t.uint32_t.deserialize(rest)
        out["image_data"], rest = t.LVBytes.deserialize(rest)
    elif status == Status.WAIT_FOR_DATA:
        out["current_time"], rest = t.uint32_t.deserialize(rest)
        out["request_time"], rest = t.uint32_t.deserialize(rest)
        # Optional in ZCL rev 6+ (absent in older servers); zigpy's schema requires it.
        if len(rest) >= 2:
            out["minimum_block_period"], rest = t.uint16_t.deserialize(rest)
        else:
            out["minimum_block_period"] = None
    return out


def verify_image(image: bytes, target: ImageTarget, cfg: ClientConfig) -> str | None:
    """Why ``image`` is not the offered image, or None if it is (see module docstring)."""
    if len(image) < OTA_HEADER_MIN_LEN:
        return f"image is {len(image)} bytes, shorter than an OTA header ({OTA_HEADER_MIN_LEN})"
    try:
        hdr, _ = OTAImageHeader.deserialize(image)
    except ValueError as exc:
        return f"OTA header does not parse: {exc}"
    if not OTA_HEADER_MIN_LEN <= hdr.header_length <= len(image):
        return f"header length {hdr.header_length} outside {OTA_HEADER_MIN_LEN}..{len(image)}"
    if hdr.image_size != len(image) or len(image) != target.image_size:
        return f"total image size {hdr.image_size} in header, {len(image)} received, {target.image_size} offered"
    if (hdr.manufacturer_id, hdr.image_type, hdr.file_version) != (
        target.manufacturer_code,
        target.image_type,
        target.file_version,
    ):
        return (
            f"header ids 0x{hdr.manufacturer_id:04X}/0x{hdr.image_type:04X}/0x{hdr.file_version:08X}"
            f" differ from offered 0x{target.manufacturer_code:04X}/0x{target.image_type:04X}"
            f"/0x{target.file_version:08X}"
        )
    if hdr.hardware_versions_present and not (
        hdr.minimum_hardware_version <= cfg.hardware_version <= hdr.maximum_hardware_version
    ):
        return (
            f"hardware version 0x{cfg.hardware_version:04X} outside"
            f" 0x{hdr.minimum_hardware_version:04X}..0x{hdr.maximum_hardware_version:04X}"
        )
    if hdr.device_specific_file and hdr.upgrade_file_destination != cfg.ieee:
        return f"image is for {hdr.upgrade_file_destination}, not {cfg.ieee}"
    if cfg.supplier_key is not None:
        return supplier_signature_error(image, hdr.header_length, cfg.supplier_key)
    return None


class OtaClient:
    """One device's OTA client state machine; RAM state, recreated at every boot."""

    def __init__(
        self,
        cfg: ClientConfig,
        flash: Flash,
        rng: random.Random,
        counters: Counters,
        record: Recorder,
    ) -> None:
        self.cfg = cfg
        self.flash = flash
        self.rng = rng
        self.counters = counters
        self._record = record
        self.state = ClientState.IDLE
        self.upgrade_server_id: t.EUI64 = _ALL_ONES
        self.minimum_block_period_ms = cfg.min_block_period_ms
        self._deadline: float | None = None
        self._awaiting = False  # a request is outstanding (deadline = its timeout)
        self._retries = 0
        self._last_request_at = float("-inf")
        self._page_end = 0
        self._unanswered = 0

    # -- timer -----------------------------------------------------------------------

    def get_timer(self) -> float | None:
        return self._deadline

    def _set_state(self, state: ClientState, now: float, **detail: Any) -> None:
        old, self.state = self.state, state
        if state is not old:
            self._record("state", old=old.value, new=state.value, **detail)

    def _idle(self, now: float, delay: float | None = None) -> None:
        self._set_state(ClientState.IDLE, now)
        self._awaiting = False
        self._deadline = now + (self.cfg.query_interval if delay is None else delay)

    # -- attributes (0x0019 client side) ---------------------------------------------

    def read_attribute(self, attrid: int) -> foundation.TypeValue | None:
        f = self.flash
        values: dict[int, tuple[foundation.DataTypeId, Any]] = {
            0x0000: (foundation.DataTypeId.EUI64, self.upgrade_server_id),
            0x0001: (foundation.DataTypeId.uint32, t.uint32_t(f.offset)),
            0x0002: (foundation.DataTypeId.uint32, t.uint32_t(f.current_file_version)),
            0x0003: (foundation.DataTypeId.uint16, t.uint16_t(ZIGBEE_PRO_STACK)),
            0x0004: (
                foundation.DataTypeId.uint32,
                t.uint32_t(f.target.file_version if f.target else WILDCARD_FILE_VERSION),
            ),
            0x0005: (foundation.DataTypeId.uint16, t.uint16_t(ZIGBEE_PRO_STACK if f.target else 0xFFFF)),
            0x0006: (foundation.DataTypeId.enum8, ImageUpgradeStatus(f.status)),
            0x0007: (foundation.DataTypeId.uint16, t.uint16_t(self.cfg.manufacturer_code)),
            0x0008: (foundation.DataTypeId.uint16, t.uint16_t(self.cfg.image_type)),
            0x0009: (foundation.DataTypeId.uint16, t.uint16_t(self.minimum_block_period_ms)),
            0x000B: (foundation.DataTypeId.enum8, t.enum8(self.cfg.activation_policy)),
            0x000C: (foundation.DataTypeId.enum8, t.enum8(self.cfg.timeout_policy)),
            0xFFFD: (foundation.DataTypeId.uint16, t.uint16_t(CLUSTER_REVISION)),
        }
        if attrid not in values:
            return None
        type_id, value = values[attrid]
        return foundation.TypeValue(type=type_id, value=value)

    SUPPORTED_ATTRIBUTES: Final = (0x0000, 0x0001, 0x0002, 0x0003, 0x0004, 0x0005, 0x0006, 0x0007, 0x0008, 0x0009, 0x000B, 0x000C, 0xFFFD)

    # -- boot --------------------------------------------------------------------------

    def boot(self, now: float) -> list[Action]:
        """Power-up: resume a download in progress, re-ask for a completed one, or query."""
        f = self.flash
        delay = self.cfg.query_delay
        if f.target is not None and f.status == ImageUpgradeStatus.Download_in_progress and f.offset < f.target.image_size:
            self._record("resume", offset=f.offset, file_version=f.target.file_version)
            self.counters.resumed += 1
            self._set_state(ClientState.DOWNLOADING, now)
            self._retries = 0
            self._page_end = f.offset
            self._awaiting = False
            self._deadline = now + delay
        elif f.target is not None and f.status in (
            ImageUpgradeStatus.Download_complete,
            ImageUpgradeStatus.Waiting_to_upgrade,
            ImageUpgradeStatus.Count_down,
        ):
            self._record("resume_upgrade_end", file_version=f.target.file_version)
            self._set_state(ClientState.WAITING_END_RESPONSE, now)
            self._awaiting = False
            self._deadline = now + delay
        else:
            self._idle(now, delay)
        return []

    # -- commands we send ------------------------------------------------------------

    def _query(self, now: float) -> list[Action]:
        self.counters.queries_sent += 1
        self._record("query", current_file_version=self.flash.current_file_version)
        self._set_state(ClientState.QUERYING, now)
        self._awaiting = True
        self._deadline = now + self.cfg.response_timeout
        payload = _serialize(
            QueryNextImageCommand,
            field_control=QueryNextImageCommand.FieldControl.HardwareVersion,
            manufacturer_code=self.cfg.manufacturer_code,
            image_type=self.cfg.image_type,
            current_file_version=self.flash.current_file_version,
            hardware_version=self.cfg.hardware_version,
        )
        return [SendCommand(_S.query_next_image.id, payload)]

    def _request(self, now: float) -> list[Action]:
        target = self.flash.target
        if target is None:  # pragma: no cover - guarded by callers
            self._idle(now)
            return []
        offset = self.flash.offset
        self._awaiting = True
        self._last_request_at = now
        if self.cfg.page_requests:
            page_size = min(self.cfg.page_size, target.image_size - offset)
            self._page_end = offset + page_size
            n_blocks = -(-page_size // self.cfg.max_data_size)
            self._deadline = now + self.cfg.response_timeout + n_blocks * self.cfg.response_spacing_ms / 1000
            self.counters.page_requests_sent += 1
            self._record("page_request", offset=offset, page_size=self.cfg.page_size)
            payload = _serialize(
                ImagePageCommand,
                field_control=0,
                manufacturer_code=target.manufacturer_code,
                image_type=target.image_type,
                file_version=target.file_version,
                file_offset=offset,
                maximum_data_size=self.cfg.max_data_size,
                page_size=self.cfg.page_size,
                response_spacing=self.cfg.response_spacing_ms,
            )
            return [SendCommand(_S.image_page.id, payload)]
        self._deadline = now + self.cfg.response_timeout
        self.counters.block_requests_sent += 1
        self._record("block_request", offset=offset)
        fields: dict[str, Any] = {
            "field_control": 0,
            "manufacturer_code": target.manufacturer_code,
            "image_type": target.image_type,
            "file_version": target.file_version,
            "file_offset": offset,
            "maximum_data_size": self.cfg.max_data_size,
        }
        if self.minimum_block_period_ms:
            fields["field_control"] = ImageBlockCommand.FieldControl.MinimumBlockPeriod
            fields["minimum_block_period"] = self.minimum_block_period_ms
        return [SendCommand(_S.image_block.id, _serialize(ImageBlockCommand, **fields))]

    def _upgrade_end(self, now: float, status: Status) -> list[Action]:
        target = self.flash.target
        if target is None:  # pragma: no cover - guarded by callers
            self._idle(now)
            return []
        self.counters.upgrade_end_sent += 1
        self._record("upgrade_end_request", status=status.name, file_version=target.file_version)
        payload = (
            status.serialize()
            + t.uint16_t(target.manufacturer_code).serialize()
            + t.uint16_t(target.image_type).serialize()
            + t.uint32_t(target.file_version).serialize()
        )
        # A failure status is answered with a Default Response (ZCL 11.13.6.4), so ask for it.
        return [SendCommand(_S.upgrade_end.id, payload, disable_default_response=status == Status.SUCCESS)]

    def _ask_end(self, now: float) -> list[Action]:
        self._set_state(ClientState.WAITING_END_RESPONSE, now)
        self._awaiting = True
        self._last_request_at = now
        self._deadline = now + self.cfg.response_timeout
        return self._upgrade_end(now, Status.SUCCESS)

    def _activate(self, now: float, *, self_activated: bool) -> list[Action]:
        target = self.flash.target
        if target is None:  # pragma: no cover - guarded by callers
            self._idle(now)
            return []
        self._set_state(ClientState.ACTIVATING, now, self_activated=self_activated)
        self._deadline = None
        self._awaiting = False
        self.counters.activations += 1
        if self_activated:
            self.counters.self_activations += 1
        self._record("activate", file_version=target.file_version, self_activated=self_activated)
        return [Activate(target.file_version, self_activated)]

    # -- timer -------------------------------------------------------------------------

    def handle_timer(self, now: float) -> list[Action]:
        if self._deadline is None or now < self._deadline:
            return []
        self._deadline = None
        state = self.state
        if state is ClientState.IDLE:
            return self._query(now)
        if state is ClientState.QUERYING:
            self.counters.response_timeouts += 1
            self._record("timeout", waiting_for="query_next_image_response")
            self._idle(now)
            return []
        if state is ClientState.DOWNLOADING:
            if not self._awaiting:
                return self._request(now)
            self.counters.response_timeouts += 1
            self._retries += 1
            if self._retries > self.cfg.max_retries:
                self.counters.gave_up += 1
                self._record("give_up", offset=self.flash.offset, retries=self._retries - 1)
                self._idle(now)
                return []
            self.counters.retries += 1
            self._record("retry", offset=self.flash.offset, attempt=self._retries)
            return self._request(now)
        if state is ClientState.WAITING_END_RESPONSE:
            if not self._awaiting:
                return self._ask_end(now)
            self._awaiting = False
            self._unanswered += 1
            self.counters.upgrade_end_unanswered += 1
            self._record("upgrade_end_unanswered", consecutive=self._unanswered)
            if self.cfg.self_activate_after > 0 and self.cfg.timeout_policy == 0 and (
                self._unanswered >= self.cfg.self_activate_after
            ):
                return self._activate(now, self_activated=True)
            self._deadline = max(now, self._last_request_at + self.cfg.wait_interval)
            return []
        if state is ClientState.HOLDING:
            return self._ask_end(now)
        if state is ClientState.COUNTDOWN:
            return self._activate(now, self_activated=False)
        return []

    # -- received commands -----------------------------------------------------------

    def handle_command(self, command_id: int, payload: bytes, *, broadcast: bool, now: float) -> list[Action]:
        """A cluster-specific command from the server (direction server -> client)."""
        handler = {
            _C.image_notify.id: self._on_image_notify,
            _C.query_next_image_response.id: self._on_query_response,
            _C.image_block_response.id: self._on_block_response,
            _C.upgrade_end_response.id: self._on_upgrade_end_response,
            _C.query_specific_file_response.id: self._on_unexpected,
        }.get(command_id)
        if handler is None:
            return [Refuse(Status.UNSUP_CLUSTER_COMMAND)]
        try:
            return handler(payload, broadcast, now)
        except (ValueError, KeyError) as exc:
            self.counters.malformed += 1
            self._record("malformed", command_id=command_id, error=str(exc), payload=payload.hex())
            return [Refuse(Status.MALFORMED_COMMAND)]

    def handle_default_response(self, command_id: int, status: Status, *, now: float) -> list[Action]:
        """A Default Response from the server to one of our commands."""
        if command_id != _S.upgrade_end.id or status != Status.ABORT:
            return []
        target = self.flash.target
        if self.state not in (ClientState.WAITING_END_RESPONSE, ClientState.HOLDING) or target is None:
            self._record("server_abort_ignored", state=self.state.value)
            return []
        # The server will not let this image be applied: drop it, back to normal operation.
        self.counters.server_aborts += 1
        self._unanswered = 0
        self._record("server_abort", file_version=target.file_version)
        self.flash.erase()
        self._idle(now)
        return []

    def _on_unexpected(self, payload: bytes, broadcast: bool, now: float) -> list[Action]:
        self.counters.unexpected += 1
        self._record("unexpected", state=self.state.value, payload=payload.hex())
        return []

    def _on_image_notify(self, payload: bytes, broadcast: bool, now: float) -> list[Action]:
        cmd, rest = ImageNotifyCommand.deserialize(payload)
        self.counters.notifies_received += 1
        self._record("image_notify", payload_type=int(cmd.payload_type), jitter=cmd.query_jitter, broadcast=broadcast)
        if self.state is not ClientState.IDLE:
            self._record("notify_ignored", reason=f"state {self.state.value}")
            return []
        if broadcast:
            pt = cmd.payload_type
            if not 1 <= cmd.query_jitter <= 100:
                raise ValueError(f"query jitter {cmd.query_jitter} outside 1..100")
            if pt >= 1 and cmd.manufacturer_code not in (WILDCARD_MANUFACTURER, self.cfg.manufacturer_code):
                self._record("notify_ignored", reason="manufacturer")
                return []
            if pt >= 2 and cmd.image_type not in (WILDCARD_IMAGE_TYPE, self.cfg.image_type):
                self._record("notify_ignored", reason="image type")
                return []
            if pt >= 3 and cmd.new_file_version == self.flash.current_file_version:
                self._record("notify_ignored", reason="same version")
                return []
            if self.rng.randint(1, 100) > cmd.query_jitter:
                self._record("notify_ignored", reason="jitter")
                return []
        delay = self.rng.uniform(0, self.cfg.notify_delay) if self.cfg.notify_delay > 0 else 0.0
        self._deadline = min(self._deadline if self._deadline is not None else now + delay, now + delay)
        return []

    def _on_query_response(self, payload: bytes, broadcast: bool, now: float) -> list[Action]:
        schema = _C.query_next_image_response.schema
        rsp, _ = schema.deserialize(payload)
        if self.state is not ClientState.QUERYING:
            return self._on_unexpected(payload, broadcast, now)
        self._record("query_response", status=rsp.status.name)
        if rsp.status != Status.SUCCESS:
            self._idle(now)
            return []
        if rsp.image_size is None:
            raise ValueError("SUCCESS without manufacturer, image type, file version and size")
        if rsp.manufacturer_code != self.cfg.manufacturer_code or rsp.image_type != self.cfg.image_type:
            self._record(
                "query_response_refused",
                reason=f"offered 0x{rsp.manufacturer_code:04X}/0x{rsp.image_type:04X}",
            )
            self._idle(now)
            return []
        if rsp.image_size == 0:
            raise ValueError("image size 0")
        target = ImageTarget(rsp.manufacturer_code, rsp.image_type, rsp.file_version, rsp.image_size)
        f = self.flash
        if f.target == target and f.status == ImageUpgradeStatus.Download_in_progress and f.offset < target.image_size:
            self.counters.resumed += 1
            self._record("resume", offset=f.offset, file_version=target.file_version)
        else:
            f.erase()
            f.target = target
        f.status = ImageUpgradeStatus.Download_in_progress
        self._set_state(ClientState.DOWNLOADING, now, file_version=target.file_version, size=target.image_size)
        self._retries = 0
        return self._request(now)

    def _on_block_response(self, payload: bytes, broadcast: bool, now: float) -> list[Action]:
        rsp = _parse_block_response(payload)
        status = rsp["status"]
        if self.state is not ClientState.DOWNLOADING:
            return self._on_unexpected(payload, broadcast, now)
        target = self.flash.target
        if target is None:  # pragma: no cover - DOWNLOADING always has a target
            return self._on_unexpected(payload, broadcast, now)
        if status == Status.SUCCESS:
            return self._on_block(rsp, target, now)
        if status == Status.WAIT_FOR_DATA:
            current, request = rsp["current_time"], rsp["request_time"]
            delay = float(request if current == 0 else max(0, request - current))
            self.counters.wait_for_data += 1
            self._retries = 0
            if rsp["minimum_block_period"] is not None:
                self.minimum_block_period_ms = int(rsp["minimum_block_period"])
            self._record(
                "wait_for_data",
                delay=delay,
                minimum_block_period=rsp["minimum_block_period"],
                current_time=current,
                request_time=request,
            )
            self._awaiting = False
            self._deadline = now + delay
            return []
        self.counters.aborts += 1
        self._record("abort", status=status.name, offset=self.flash.offset)
        self.flash.erase()
        self._idle(now)
        return []

    def _on_block(self, rsp: dict[str, Any], target: ImageTarget, now: float) -> list[Action]:
        data: bytes = rsp["image_data"]
        f = self.flash
        reason = None
        if (rsp["manufacturer_code"], rsp["image_type"], rsp["file_version"]) != (
            target.manufacturer_code,
            target.image_type,
            target.file_version,
        ):
            reason = "another image"
        elif rsp["file_offset"] != f.offset:
            reason = f"offset {rsp['file_offset']}, expected {f.offset}"
        elif not 0 < len(data) <= self.cfg.max_data_size:
            reason = f"{len(data)} bytes, maximum {self.cfg.max_data_size}"
        elif f.offset + len(data) > target.image_size:
            reason = f"{len(data)} bytes at {f.offset} overrun size {target.image_size}"
        if reason is not None:
            self.counters.blocks_ignored += 1
            self._record("block_ignored", reason=reason, offset=int(rsp["file_offset"]))
            return []
        f.data += data
        self.counters.blocks_received += 1
        self.counters.bytes_received += len(data)
        self._retries = 0
        self._record("block", offset=int(rsp["file_offset"]), size=len(data))
        if f.offset >= target.image_size:
            return self._download_complete(now)
        pause = self.cfg.flash_time(len(data))
        if self.cfg.page_requests:
            if f.offset < self._page_end:
                self._deadline = now + pause + self.cfg.response_timeout  # more of this page to come
                return []
            self._awaiting = False
            self._deadline = now + pause
            return []
        self._awaiting = False
        self._deadline = max(now + pause, self._last_request_at + self.minimum_block_period_ms / 1000)
        return []

    def _download_complete(self, now: float) -> list[Action]:
        f = self.flash
        target = f.target
        if target is None:  # pragma: no cover
            return []
        self.counters.downloads_completed += 1
        if self.cfg.corrupt:
            f.data[0] ^= 0xFF  # the magic number: the header check must catch it
            self._record("corrupted_copy", offset=0)
        error = verify_image(bytes(f.data), target, self.cfg)
        if error is not None:
            self.counters.invalid_images += 1
            self._record("verify_failed", reason=error)
            actions = self._upgrade_end(now, Status.INVALID_IMAGE)
            f.erase()
            self._idle(now)
            return actions
        self._record("download_complete", file_version=target.file_version, size=target.image_size)
        f.status = ImageUpgradeStatus.Download_complete
        self._unanswered = 0
        return self._ask_end(now)

    def _on_upgrade_end_response(self, payload: bytes, broadcast: bool, now: float) -> list[Action]:
        schema = _C.upgrade_end_response.schema
        rsp, _ = schema.deserialize(payload)
        target = self.flash.target
        solicited = self.state is ClientState.WAITING_END_RESPONSE and self._awaiting
        if self.state not in (ClientState.WAITING_END_RESPONSE, ClientState.HOLDING, ClientState.COUNTDOWN) or (
            target is None
        ):
            return self._on_unexpected(payload, broadcast, now)
        ids_ok = (
            rsp.manufacturer_code in (WILDCARD_MANUFACTURER, target.manufacturer_code)
            and rsp.image_type in (WILDCARD_IMAGE_TYPE, target.image_type)
            and rsp.file_version in (WILDCARD_FILE_VERSION, target.file_version)
        )
        if not ids_ok:
            self._record(
                "upgrade_end_response_ignored",
                reason=f"ids 0x{rsp.manufacturer_code:04X}/0x{rsp.image_type:04X}/0x{rsp.file_version:08X}",
            )
            return []
        if solicited:
            self.counters.upgrade_end_answered += 1
        self._unanswered = 0
        self._awaiting = False
        current, upgrade = int(rsp.current_time), int(rsp.upgrade_time)
        self._record("upgrade_end_response", current_time=current, upgrade_time=upgrade, solicited=solicited)
        if upgrade == UPGRADE_TIME_WAIT:
            self.counters.holds += 1
            self.flash.status = ImageUpgradeStatus.Waiting_to_upgrade
            self._set_state(ClientState.HOLDING, now)
            self._deadline = now + self.cfg.wait_interval
            return []
        delay = float(upgrade if current == 0 else max(0, upgrade - current))
        if delay <= 0:
            return self._activate(now, self_activated=False)
        self.flash.status = ImageUpgradeStatus.Count_down
        self._set_state(ClientState.COUNTDOWN, now, delay=delay)
        self._deadline = now + delay
        return []

    # -- for the device ------------------------------------------------------------------

    @property
    def busy(self) -> bool:
        """Expecting an answer soon (a sleepy device fast-polls meanwhile)."""
        return self.state in (ClientState.QUERYING, ClientState.DOWNLOADING) or (
            self.state is ClientState.WAITING_END_RESPONSE and self._awaiting
        )

    def note_server(self, ieee: t.EUI64 | None) -> None:
        """The server's IEEE (attribute 0x0000), once the han knows the coordinator's."""
        if ieee is not None and ieee not in (_ALL_ZEROS, _ALL_ONES):
            self.upgrade_server_id = ieee
