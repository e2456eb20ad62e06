"""What an OTA session is given: the image it serves and its configuration.

Both are frozen dataclasses that check their values when built, so that a session
never has to. Nothing here knows about zigpy, clocks or the radio.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

# The largest Image Block Response data that fits one unfragmented frame with
# room for a source route (Silicon Labs' MAX_CLIENT_DATA_SIZE, zigbee-ota-notes.md
# "Frame budget"), and the same less the APS encryption overhead.
MAX_BLOCK_DATA = 63
MAX_BLOCK_DATA_APS_ENCRYPTED = 56


def _check_uint(name: str, value: int, bits: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < (1 << bits):
        raise ValueError(f"{name} must be an unsigned {bits}-bit integer, not {value!r}")


@dataclass(frozen=True)
class ImageInfo:
    """What the session needs of a firmware image.

    Built by the caller from ``gateway.image.FirmwareImage``. ``data`` is the whole
    OTA file, header included, served byte for byte; its length is the image size
    of the Query Next Image Response. ``destination`` is the upgrade file
    destination of a device-specific file, in file (over-the-air, little-endian)
    byte order, as ``bytes(zigpy.types.EUI64)`` gives it.
    """

    manufacturer_code: int
    image_type: int
    file_version: int
    data: bytes
    min_hardware_version: int | None = None
    max_hardware_version: int | None = None
    destination: bytes | None = None

    def __post_init__(self) -> None:
        _check_uint("manufacturer_code", self.manufacturer_code, 16)
        _check_uint("image_type", self.image_type, 16)
        _check_uint("file_version", self.file_version, 32)
        if not isinstance(self.data, bytes) or not self.data:
            raise ValueError("data must be the non-empty bytes of the OTA file")
        if len(self.data) >= 1 << 32:
            raise ValueError(f"data is {len(self.data)} bytes; an OTA image size is a u32")
        for name in ("min_hardware_version", "max_hardware_version"):
            value = getattr(self, name)
            if value is not None:
                _check_uint(name, value, 16)
        if (
            self.min_hardware_version is not None
            and self.max_hardware_version is not None
            and self.min_hardware_version > self.max_hardware_version
        ):
            raise ValueError(
                f"min_hardware_version 0x{self.min_hardware_version:04X} is above "
                f"max_hardware_version 0x{self.max_hardware_version:04X}"
            )
        if self.destination is not None and (not isinstance(self.destination, bytes) or len(self.destination) != 8):
            raise ValueError(f"destination must be 8 bytes (an IEEE address), not {self.destination!r}")

    @property
    def size(self) -> int:
        return len(self.data)


@dataclass(frozen=True)
class SessionConfig:
    """Per-session settings. Times are seconds unless the name says otherwise."""

    #: Configured cap on data per Image Block Response (never above 63, see MAX_BLOCK_DATA).
    block_cap: int = MAX_BLOCK_DATA
    #: APS-encrypted OTA traffic costs about 9 bytes of frame: cap blocks at 56.
    aps_encryption: bool = False
    #: While TRANSFERRING, no request from the device for this long fails the push.
    stall_timeout_s: float = 120.0
    #: While PENDING, re-send Image Notify this often, up to ``notify_attempts`` in all.
    notify_interval_s: float = 60.0
    notify_attempts: int = 3
    #: After activation, no report of the new version for this long fails the push.
    confirm_timeout_s: float = 300.0
    #: After activation, read CurrentFileVersion this long after the activation
    #: time, and again every this many seconds until the confirm timeout. A report
    #: of the old version before the first read is not yet a failure.
    confirm_read_after_s: float = 15.0
    #: A lower bound on the spacing of the blocks of a page.
    page_spacing_floor_ms: int = 0
    #: The longest WAIT_FOR_DATA delay the session asks of a device.
    max_wait_for_data_s: int = 60

    def __post_init__(self) -> None:
        if not isinstance(self.block_cap, int) or self.block_cap < 1:
            raise ValueError(f"block_cap must be a positive integer, not {self.block_cap!r}")
        for name in ("stall_timeout_s", "notify_interval_s", "confirm_timeout_s", "confirm_read_after_s"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
                raise ValueError(f"{name} must be a positive number of seconds, not {value!r}")
        if not isinstance(self.notify_attempts, int) or self.notify_attempts < 1:
            raise ValueError(f"notify_attempts must be at least 1, not {self.notify_attempts!r}")
        if not isinstance(self.page_spacing_floor_ms, int) or self.page_spacing_floor_ms < 0:
            raise ValueError(f"page_spacing_floor_ms must be a non-negative integer, not {self.page_spacing_floor_ms!r}")
        if not isinstance(self.max_wait_for_data_s, int) or self.max_wait_for_data_s < 1:
            raise ValueError(f"max_wait_for_data_s must be at least 1, not {self.max_wait_for_data_s!r}")

    @property
    def effective_block_cap(self) -> int:
        """The most image data one Image Block Response may carry."""
        limit = MAX_BLOCK_DATA_APS_ENCRYPTED if self.aps_encryption else MAX_BLOCK_DATA
        return min(limit, self.block_cap)
