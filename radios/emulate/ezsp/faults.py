"""Fault injection for the emulated NCP.

One :class:`Faults` object per emulator. Tests call its methods; the CLI passes option
strings such as ``"fail-deliveries=3"``, ``"reset-after-frames=200"``,
``"drop-after-frames=300"`` (see :meth:`Faults.parse`; read by
radios/emulate/fault_options.py, shared with the ZNP emulator).

* ``fail-deliveries=N``: the next N unicasts get ``messageSentHandler`` with a delivery
  failure (``ZIGBEE_DELIVERY_FAILED``) and never reach the device.
  :meth:`Faults.fail_next_deliveries` can narrow this to one destination and/or cluster,
  so background traffic (a device's own OTA queries, zigpy's replies) does not use up
  the failures meant for the exchange under test.
* ``reset-after-frames=N``: after N more EZSP command frames from the host, the NCP
  resets as if its watchdog fired: volatile stack state is lost and, after its reboot
  delay, it sends Cancel + ERROR(0x03) and answers nothing but ERROR until the host's
  RST (ash-ncp.c ``ashStart``; never an unsolicited RSTACK).
* ``drop-after-frames=N``: after N more command frames the connection is cut (TCP
  socket closed / pty hung up), as when a USB dongle is pulled.
* ``error-after-frames=N``: after N more command frames the NCP's ASH layer enters the
  FAILED state and sends an ERROR frame.

Immediate versions of the last three are :meth:`reset_now`, :meth:`drop_now` and
:meth:`error_now`; they act through the server the object is bound to.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Iterable

from ..fault_options import FaultOption, parse_fault_options

LOGGER = logging.getLogger(__name__)

_FRAME_FAULTS = ("reset", "drop", "error")
#: option name -> smallest N
_OPTIONS = {"fail-deliveries": 0, **{f"{name}-after-frames": 0 for name in _FRAME_FAULTS}}


@dataclasses.dataclass
class Faults:
    fail_deliveries: int = 0
    # Only unicasts matching these fail (None: any); set by fail_next_deliveries()
    fail_nwk: int | None = None
    fail_cluster: int | None = None
    frames_seen: int = 0
    _armed: dict[str, int] = dataclasses.field(default_factory=dict)
    _actions: dict[str, Callable[[], None]] = dataclasses.field(default_factory=dict)
    history: list[str] = dataclasses.field(default_factory=list)

    # -- configuration ------------------------------------------------------------
    @classmethod
    def parse(cls, options: str | Iterable[str] | None) -> Faults:
        """Build from ``"fail-deliveries=3,reset-after-frames=200"`` or a list of such."""
        faults = cls()
        for option in parse_fault_options(options, known=_OPTIONS):
            faults._arm(option)
        return faults

    def apply(self, option: str) -> None:
        """One more option, e.g. ``"drop-after-frames=0x10"`` (`FaultSpecError` if bad)."""
        for parsed in parse_fault_options(option, known=_OPTIONS):
            self._arm(parsed)

    def _arm(self, option: FaultOption) -> None:
        if option.name == "fail-deliveries":
            self.fail_next_deliveries(option.count)
        else:
            self._armed[option.name.removesuffix("-after-frames")] = self.frames_seen + option.count

    def fail_next_deliveries(self, count: int, *, nwk: int | None = None,
                             cluster: int | None = None) -> None:
        """The next ``count`` unicasts (to ``nwk`` / of ``cluster``, if given) fail."""
        self.fail_deliveries = count
        self.fail_nwk = nwk
        self.fail_cluster = cluster

    def reset_after_frames(self, count: int) -> None:
        self._armed["reset"] = self.frames_seen + count

    def drop_after_frames(self, count: int) -> None:
        self._armed["drop"] = self.frames_seen + count

    def error_after_frames(self, count: int) -> None:
        self._armed["error"] = self.frames_seen + count

    def clear(self) -> None:
        self.fail_deliveries = 0
        self.fail_nwk = self.fail_cluster = None
        self._armed.clear()

    # -- immediate faults (need a bound server) -------------------------------------
    def reset_now(self) -> None:
        self._fire("reset")

    def drop_now(self) -> None:
        self._fire("drop")

    def error_now(self) -> None:
        self._fire("error")

    # -- used by the emulator -------------------------------------------------------
    def bind(self, name: str, action: Callable[[], None]) -> None:
        self._actions[name] = action

    def take_delivery_failure(self, nwk: int | None = None, cluster: int | None = None) -> bool:
        if self.fail_deliveries <= 0:
            return False
        if self.fail_nwk is not None and nwk != self.fail_nwk:
            return False
        if self.fail_cluster is not None and cluster != self.fail_cluster:
            return False
        self.fail_deliveries -= 1
        self.history.append("delivery-failed")
        return True

    def frame_received(self) -> None:
        """Count one host command frame and fire any fault that is now due."""
        self.frames_seen += 1
        for name, due in list(self._armed.items()):
            if self.frames_seen >= due:
                del self._armed[name]
                self._fire(name)

    def _fire(self, name: str) -> None:
        action = self._actions.get(name)
        if action is None:
            raise RuntimeError(f"fault {name!r}: no emulator bound to act on it")
        LOGGER.warning("EZSP emulator fault injected: %s (after %d frames)", name, self.frames_seen)
        self.history.append(name)
        action()

    def __repr__(self) -> str:
        armed = ", ".join(f"{k}-at-frame={v}" for k, v in self._armed.items())
        return (
            f"Faults(fail_deliveries={self.fail_deliveries}, frames_seen={self.frames_seen}"
            f"{', ' + armed if armed else ''})"
        )
