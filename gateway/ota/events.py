"""Inputs and outputs of the sans-I/O OTA server session.

Inputs are facts about what a device did, named in the past tense
(``ImageBlockRequested``). Outputs are things the driver must do, named as
commands (``SendImageBlock``). Neither knows about zigpy, sockets or clocks: the
codec (``gateway.ota.codec``) turns ZCL bytes into inputs and outputs into ZCL
bytes, and the driver (``gateway.ota.driver``) carries them to and from a radio.

Times given to the session are monotonic seconds (the driver's ``loop.time()``);
absolute activation times are UTC ``datetime`` values that the codec turns into
Zigbee UTCTime.
"""

from __future__ import annotations

import datetime as dt
import enum
import typing
from dataclasses import dataclass, field

# ZCL status codes the OTA cluster uses (ZCL 7, 11.13; zigbee-ota-notes.md).
class Status(enum.IntEnum):
    SUCCESS = 0x00
    FAILURE = 0x01
    NOT_AUTHORIZED = 0x7E
    MALFORMED_COMMAND = 0x80
    UNSUP_CLUSTER_COMMAND = 0x81
    UNSUP_MANUF_CLUSTER_COMMAND = 0x83
    ABORT = 0x95
    INVALID_IMAGE = 0x96
    WAIT_FOR_DATA = 0x97
    NO_IMAGE_AVAILABLE = 0x98
    REQUIRE_MORE_IMAGE = 0x99


# OTA cluster command ids, client to server (device to hub) and server to client.
class DeviceCommand(enum.IntEnum):
    QUERY_NEXT_IMAGE = 0x01
    IMAGE_BLOCK = 0x03
    IMAGE_PAGE = 0x04
    UPGRADE_END = 0x06
    QUERY_DEVICE_SPECIFIC_FILE = 0x08


class ServerCommand(enum.IntEnum):
    IMAGE_NOTIFY = 0x00
    QUERY_NEXT_IMAGE_RESPONSE = 0x02
    IMAGE_BLOCK_RESPONSE = 0x05
    UPGRADE_END_RESPONSE = 0x07
    QUERY_DEVICE_SPECIFIC_FILE_RESPONSE = 0x09


# Client attributes of the OTA cluster that the session reads.
class Attribute(enum.IntEnum):
    CURRENT_FILE_VERSION = 0x0002
    IMAGE_UPGRADE_STATUS = 0x0006
    MINIMUM_BLOCK_PERIOD = 0x0009
    UPGRADE_ACTIVATION_POLICY = 0x000B
    UPGRADE_TIMEOUT_POLICY = 0x000C


class SessionState(enum.Enum):
    """Where a push stands. The values are the ``state`` strings of ``--json`` output."""

    PENDING = "pending"  # job exists; waiting for the device's Query Next Image
    TRANSFERRING = "transferring"
    HELD = "held"  # device verified the image; every Upgrade End Request gets 0xFFFFFFFF
    SCHEDULED = "scheduled"  # held, with an activation time set by the activation gate
    ACTIVATED = "activated"  # activation sent; waiting for the device to report the version
    CONFIRMED = "confirmed"
    FAILED = "failed"
    CANCELLED = "cancelled"
    # Replaced by a push of higher priority (or equal, with --replace): ended as a
    # cancel is, the device made to discard the image (issue 15).
    SUPERSEDED = "superseded"


END_STATES = frozenset({SessionState.CONFIRMED, SessionState.FAILED, SessionState.CANCELLED, SessionState.SUPERSEDED})


# --------------------------------------------------------------------------- inputs


@dataclass(frozen=True)
class QueryNextImageRequested:
    tsn: int
    manufacturer_code: int
    image_type: int
    current_file_version: int
    hardware_version: int | None = None


@dataclass(frozen=True)
class ImageBlockRequested:
    tsn: int
    manufacturer_code: int
    image_type: int
    file_version: int
    file_offset: int
    maximum_data_size: int
    #: The device's MinimumBlockPeriod in milliseconds, when it sent the field.
    minimum_block_period_ms: int | None = None
    request_node_addr: bytes | None = None


@dataclass(frozen=True)
class ImagePageRequested:
    tsn: int
    manufacturer_code: int
    image_type: int
    file_version: int
    file_offset: int
    maximum_data_size: int
    page_size: int
    response_spacing_ms: int
    request_node_addr: bytes | None = None


@dataclass(frozen=True)
class UpgradeEndRequested:
    tsn: int
    status: int
    manufacturer_code: int
    image_type: int
    file_version: int


@dataclass(frozen=True)
class ManufacturerSpecificReceived:
    """A manufacturer-specific cluster command (ZCL frame control bit 2) from the device.

    Its command id and payload are that manufacturer's, not the OTA cluster's: a
    manufacturer-specific 0x06 is not an Upgrade End Request. Never changes a push.
    """

    tsn: int
    manufacturer_code: int
    command_id: int
    payload: bytes


@dataclass(frozen=True)
class UnsupportedCommandReceived:
    """An OTA cluster command (client to server) that this server does not implement,
    e.g. Query Device Specific File: answered Default Response UNSUP_CLUSTER_COMMAND."""

    tsn: int
    command_id: int


@dataclass(frozen=True)
class MalformedFrameReceived:
    """An OTA cluster frame from the device that did not parse."""

    tsn: int
    command_id: int
    reason: str


@dataclass(frozen=True)
class AttributesRead:
    """Values read from (or reported by) the device's OTA client cluster.

    Attributes the device does not support are simply absent.
    """

    values: dict[int, int] = field(default_factory=dict)


@dataclass(frozen=True)
class AttributeReadFailed:
    reason: str


@dataclass(frozen=True)
class NotifyDelivered:
    pass


@dataclass(frozen=True)
class NotifyFailed:
    """The radio could not deliver Image Notify (sleepy device, lost frame).

    Never fails the job: the device may still ask on its own.
    """

    reason: str


@dataclass(frozen=True)
class FrameDelivered:
    """The radio took one of the session's frames other than Image Notify (sent)."""


@dataclass(frozen=True)
class FrameNotDelivered:
    """One of the session's frames other than Image Notify was not sent (or not acked).

    Never changes a push: the device asks again for what it missed.
    """

    reason: str


#: The one FrameDelivered the driver hands back (the event has no fields).
FRAME_DELIVERED = FrameDelivered()


@dataclass(frozen=True)
class BlockLimitSet:
    """The radio's limit for this device's frames, from the driver (gateway/ota/limits.py):
    Image Block Responses carry at most ``limit`` data bytes from now on. ``why`` names
    what it comes from ("52 bytes: APS-encrypted, 1 relay, EZSP limit 82"). Sent before
    the device's first request and whenever its security or route changes."""

    limit: int
    why: str


@dataclass(frozen=True)
class BlockTooLong:
    """A send outcome: the radio refused the Image Block Response (``tsn``, None for a
    page block, ``file_offset``, ``size`` data bytes) as longer than it can send to the
    device (EZSP MESSAGE_TOO_LONG, Z-Stack INVALID_PARAMETER); serve at most ``limit``
    from now on, for the reason ``why``. Answers that frame in place of
    FrameNotDelivered: the session serves the block again, smaller, instead of the device
    asking for the same frame for ever."""

    tsn: int | None
    file_offset: int
    size: int
    limit: int
    why: str


Event = (
    QueryNextImageRequested
    | ImageBlockRequested
    | ImagePageRequested
    | UpgradeEndRequested
    | ManufacturerSpecificReceived
    | UnsupportedCommandReceived
    | MalformedFrameReceived
    | AttributesRead
    | AttributeReadFailed
    | NotifyDelivered
    | NotifyFailed
    | FrameDelivered
    | FrameNotDelivered
    | BlockLimitSet
    | BlockTooLong
)

#: Send outcomes: every frame action the session returns (``FrameAction``) is answered
#: by exactly one of these, fed back through ``handle`` -- NotifyDelivered/NotifyFailed
#: for Image Notify, FrameDelivered/FrameNotDelivered for the rest -- also when the frame
#: was never sent (withheld, not encodable, cancelled). The session counts each frame in
#: flight on its pacer from the moment it returns it until its outcome comes back.
#: A block the radio refused as too long is answered by BlockTooLong instead.
SEND_OUTCOMES: tuple[type, ...] = (NotifyDelivered, NotifyFailed, FrameDelivered, FrameNotDelivered, BlockTooLong)


# --------------------------------------------------------------------------- outputs


@dataclass(frozen=True)
class SendImageNotify:
    """Unicast Image Notify, payload type 0x03 (jitter, manufacturer, type, version)."""

    query_jitter: int
    manufacturer_code: int
    image_type: int
    file_version: int


@dataclass(frozen=True)
class SendQueryNextImageResponse:
    tsn: int
    status: Status
    #: Present only when status is SUCCESS.
    manufacturer_code: int | None = None
    image_type: int | None = None
    file_version: int | None = None
    image_size: int | None = None


@dataclass(frozen=True)
class SendImageBlock:
    """An Image Block Response with status SUCCESS.

    ``tsn`` is the request's for a block request and None for the unsolicited
    responses that make up a page (the driver takes a fresh sequence number).
    """

    tsn: int | None
    manufacturer_code: int
    image_type: int
    file_version: int
    file_offset: int
    data: bytes


@dataclass(frozen=True)
class SendWaitForData:
    """Image Block Response WAIT_FOR_DATA: ask again after ``delay_s`` seconds.

    Sent with current time 0 so that request time is an offset (ZCL 11.13.8.2.3).
    """

    tsn: int
    delay_s: int
    minimum_block_period_ms: int


@dataclass(frozen=True)
class SendAbort:
    """Image Block Response ABORT: the device must stop this download."""

    tsn: int


# Upgrade time meaning "wait for the server's word" (ZCL 11.13.9.6).
UPGRADE_TIME_WAIT = 0xFFFFFFFF


@dataclass(frozen=True)
class SendUpgradeEndResponse:
    """Upgrade End Response.

    ``tsn`` is None when unsolicited (the activation itself). ``upgrade_at`` is
    None for "now" (current time 0, upgrade time 0), a UTC datetime for an absolute
    time, and ``hold=True`` means upgrade time 0xFFFFFFFF.
    """

    tsn: int | None
    manufacturer_code: int
    image_type: int
    file_version: int
    hold: bool = False
    upgrade_at: dt.datetime | None = None


@dataclass(frozen=True)
class SendDefaultResponse:
    tsn: int
    command_id: int
    status: Status


@dataclass(frozen=True)
class ReadAttributes:
    attribute_ids: tuple[int, ...]


class NoteKind(enum.Enum):
    """What a ``Note`` records; the driver logs and audits every one."""

    NOTIFY = "notify"
    QUERY = "query"
    ATTRIBUTES = "attributes"
    TRANSFER_START = "transfer_start"
    FIRST_BLOCK = "first_block"
    LAST_BLOCK = "last_block"
    RESUME = "resume"
    PACING = "pacing"
    END_REQUEST = "end_request"
    HOLD = "hold"
    ACTIVATION = "activation"
    CONFIRMATION = "confirmation"
    WARNING = "warning"
    FAILURE = "failure"
    CANCEL = "cancel"
    IGNORED = "ignored"
    # Added with the session (item 3):
    PAGE = "page"  # an Image Page Request accepted: range, block size, spacing
    SCHEDULE = "schedule"  # activation scheduled or the schedule withdrawn
    # Issue 11 item 5:
    DISCARD = "discard"  # Upgrade End Request answered ABORT: the device must drop that image
    # Issue 17 item 1:
    NUDGE = "nudge"  # Image Notify to a transfer silent since the radio came back (resume)
    # Issue 14 item 2:
    BLOCK_SIZE = "block_size"  # the block size chosen for the device's frames, and why


@dataclass(frozen=True)
class Note:
    """Something worth a log line: the driver adds device and image."""

    kind: NoteKind
    message: str
    offset: int | None = None
    warning: bool = False


@dataclass(frozen=True)
class Progress:
    """Bytes the device has been sent up to (a high-water mark) out of the image size."""

    offset: int
    total: int


@dataclass(frozen=True)
class StateChanged:
    old: SessionState
    new: SessionState
    reason: str | None = None
    # The ZCL status a device's Upgrade End Request reported, when that is what moved
    # the push (INVALID_IMAGE: the device refused the image itself).
    device_status: int | None = None


#: The actions that are frames for the device (each answered by one send outcome).
FrameAction = (
    SendImageNotify
    | SendQueryNextImageResponse
    | SendImageBlock
    | SendWaitForData
    | SendAbort
    | SendUpgradeEndResponse
    | SendDefaultResponse
)

Action = (
    FrameAction
    | ReadAttributes
    | Note
    | Progress
    | StateChanged
)

#: The ``FrameAction`` types, for isinstance checks.
FRAME_ACTION_TYPES: tuple[type, ...] = typing.get_args(FrameAction)
