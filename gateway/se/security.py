"""Each device's HAN security as the hub sees it: what the config asks, and how far its
key establishment got.

One registry, read by everything that sends to a device: the OTA driver asks it whether
a frame may go at all (an SE device gets no OTA frame before its key is established)
and whether it goes APS-encrypted; the key-establishment service writes it; status and
audit read it. Keyed by zigpy's EUI64, as the drivers hold devices.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any

import zigpy.types as zt

__all__ = ["DeviceSecurity", "KeyState", "SecurityMode", "SecurityRegistry", "arrived_unsecured"]


class SecurityMode(enum.Enum):
    """The config's per-device `security` key."""

    SE = "se"  # key establishment required before any OTA; OTA APS-encrypted after
    INSTALL_CODE = "install-code"  # today's behaviour: network key only, no key establishment
    AUTO = "auto"  # unset: SE once the device starts key establishment, else install-code


class KeyState(enum.Enum):
    NONE = "none"  # no key establishment seen (yet)
    ESTABLISHING = "establishing"
    ESTABLISHED = "established"  # link key derived and installed on the coordinator
    FAILED = "failed"


@dataclass(frozen=True, slots=True)
class DeviceSecurity:
    mode: SecurityMode = SecurityMode.AUTO
    state: KeyState = KeyState.NONE
    suite: int | None = None
    status: str | None = None  # a failure's Terminate status name, e.g. "UNKNOWN_ISSUER"
    side: str | None = None  # who ended a failed exchange: "hub" or "device"
    why: str | None = None
    seconds: float | None = None  # how long the last successful exchange took

    @property
    def aps(self) -> bool:
        """APS link-key security in force for this device's OTA and Tunneling frames."""
        return self.state is KeyState.ESTABLISHED

    @property
    def ota_allowed(self) -> bool:
        """May an OTA frame go to this device now? An SE device (configured, or one that
        started key establishment) only once its key is established."""
        if self.state is KeyState.ESTABLISHED:
            return True
        return self.mode is not SecurityMode.SE and self.state is KeyState.NONE

    @property
    def waiting_reason(self) -> str | None:
        """Why an OTA push to this device cannot start, for `status`; None if it can."""
        if self.ota_allowed:
            return None
        if self.state is KeyState.FAILED:
            who = f" ({self.side})" if self.side else ""
            return f"key establishment failed: {self.status or 'no status'}{who}: {self.why or 'no reason given'}"
        if self.state is KeyState.ESTABLISHING:
            return "waiting for key establishment to finish"
        return "waiting for the device to run key establishment (security = \"se\")"

    def to_dict(self) -> dict[str, Any]:
        return {
            "mode": self.mode.value,
            "key_establishment": self.state.value,
            "aps_security": self.aps,
            "suite": self.suite,
            "status": self.status,
            "side": self.side,
            "reason": self.why,
            "seconds": self.seconds,
        }


def arrived_unsecured(aps_in_force: bool, tx_options: zt.TransmitOptions) -> bool:
    """The one rule for a received OTA or Tunneling frame: from a device whose APS link
    key is in force, a frame without APS security (``packet.tx_options``, as bellows and
    zigpy-znp report it) could have been forged with the network key alone, and is
    ignored."""
    return aps_in_force and zt.TransmitOptions.APS_Encryption not in tx_options


Listener = Callable[[zt.EUI64, DeviceSecurity], None]


class SecurityRegistry:
    def __init__(self, modes: Mapping[zt.EUI64, SecurityMode] | None = None) -> None:
        self._modes = dict(modes or {})
        self._states: dict[zt.EUI64, DeviceSecurity] = {}
        self._listeners: list[Listener] = []

    def get(self, ieee: zt.EUI64) -> DeviceSecurity:
        found = self._states.get(ieee)
        if found is None:
            return DeviceSecurity(mode=self._modes.get(ieee, SecurityMode.AUTO))
        return found

    def update(self, ieee: zt.EUI64, **changes: Any) -> DeviceSecurity:
        """Set fields of the device's security (e.g. state=KeyState.ESTABLISHED, suite=2)
        and tell the listeners."""
        new = replace(self.get(ieee), **changes)
        self._states[ieee] = new
        for listener in list(self._listeners):
            listener(ieee, new)
        return new

    def listen(self, listener: Listener) -> Callable[[], None]:
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener) if listener in self._listeners else None

    def known(self) -> dict[zt.EUI64, DeviceSecurity]:
        """Every device the config names or whose security changed."""
        return {**{ieee: self.get(ieee) for ieee in self._modes}, **self._states}
