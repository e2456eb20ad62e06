"""Fault injection for the ZNP emulator, for tests and for ``han-ota emulate znp``.

A ``Faults`` object is shared by the server and the coordinator; it is plain state plus
counters, safe to change while the emulator runs.  Option strings (CLI form)::

    fail-deliveries=N[:STATUS]   next N unicast AF deliveries answer AF.DataConfirm with
                                 STATUS (default MAC_NO_ACK; e.g. APS_NO_ACK, NWK_NO_ROUTE)
                                 and never reach the device
    reset-after-frames=N         after N more host frames the coordinator resets as after
                                 a watchdog reset: RAM state lost, SYS.ResetInd sent
    drop-after-frames=N          after N more host frames the emulator closes the link
                                 (socket closed / pty hung up)

Several options may be given as a list or joined with commas (read by
radios/emulate/fault_options.py, shared with the EZSP emulator).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable

import zigpy_znp.types as zt

from ..fault_options import FaultOption, FaultSpecError, parse_fault_options

__all__ = ["FaultSpecError", "Faults"]

#: option name -> smallest N
_OPTIONS = {"fail-deliveries": 0, "reset-after-frames": 1, "drop-after-frames": 1}


@dataclasses.dataclass
class Faults:
    fail_deliveries: int = 0
    fail_status: zt.Status = zt.Status.MAC_NO_ACK
    reset_after_frames: int | None = None
    drop_after_frames: int | None = None

    # What actually happened (for tests and logs)
    deliveries_failed: int = 0
    resets_injected: int = 0
    drops_injected: int = 0

    def fail_next_deliveries(self, n: int, status: zt.Status | str = zt.Status.MAC_NO_ACK) -> None:
        self.fail_deliveries = n
        self.fail_status = _status(status)

    def take_delivery_failure(self) -> zt.Status | None:
        """Called once per unicast AF delivery: the status to fail it with, or None."""
        if self.fail_deliveries <= 0:
            return None
        self.fail_deliveries -= 1
        self.deliveries_failed += 1
        return self.fail_status

    def on_host_frame(self) -> str | None:
        """Called once per frame received from the host: 'reset', 'drop' or None."""
        action = None
        if self.reset_after_frames is not None:
            self.reset_after_frames -= 1
            if self.reset_after_frames <= 0:
                self.reset_after_frames = None
                self.resets_injected += 1
                action = "reset"
        if self.drop_after_frames is not None:
            self.drop_after_frames -= 1
            if self.drop_after_frames <= 0:
                self.drop_after_frames = None
                self.drops_injected += 1
                action = "drop"  # a dropped link wins over a reset on the same frame
        return action

    @classmethod
    def parse(cls, specs: str | Iterable[str] | None) -> Faults:
        faults = cls()
        for option in parse_fault_options(specs, known=_OPTIONS, with_detail=frozenset({"fail-deliveries"})):
            faults._apply(option)
        return faults

    def _apply(self, option: FaultOption) -> None:
        if option.name == "fail-deliveries":
            try:
                status = _status(option.detail) if option.detail else zt.Status.MAC_NO_ACK
            except (ValueError, KeyError) as e:
                raise FaultSpecError(f"fault option {option.text!r}: status {option.detail!r}: {e}") from e
            self.fail_next_deliveries(option.count, status)
        elif option.name == "reset-after-frames":
            self.reset_after_frames = option.count
        elif option.name == "drop-after-frames":
            self.drop_after_frames = option.count


def _status(status: zt.Status | str | int) -> zt.Status:
    if isinstance(status, zt.Status):
        return status
    if isinstance(status, int):
        return zt.Status(status)
    try:
        return zt.Status[status.upper()]
    except KeyError:
        return zt.Status(int(status, 0))
