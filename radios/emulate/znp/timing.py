"""How long the emulated Z-Stack takes to report a failed unicast in AF.DataConfirm.

A real stack reports a failure only after it has tried everything: the MAC's frame
retries for each NWK attempt, the NWK's data retries, the APS's retries while it
waits for an APS ack, or a route discovery that finds nobody. The emulator's air
(radios/sim) answers in milliseconds, so with ``--link realistic`` the confirmation of
a failure is held until at least the time this model gives (scaled like the link).

Values (Koenkk's 20230507 coordinator, firmware.patch preinclude.h, and the NV a
formed CC2652R holds, zigpy-znp tests/nvram/CC2652R-ZStack4.formed.json):

* ZMAC_MAX_FRAME_RETRIES 7, NWK_MAX_DATA_RETRIES 4 (preinclude.h);
* one MAC attempt: a CSMA backoff (macMinBE 3: 3.5 backoff periods of 320 us on
  average), CCA, an 82-byte frame and macAckWaitDuration (864 us): about 5 ms;
* the NWK retries a failed MAC transmission after nwkcDataRetryDelay (~50 ms);
* APS: APS_ACK_WAIT_DURATION 500 (NV; "value * 2 = value in ms", preinclude.h) and
  APS_FRAME_RETRIES 3 (NV): four waits of 1 s;
* ROUTE_DISCOVERY_TIME 13 in 100 ms units (preinclude.h; zigpy-znp waits 0.1 * 13 s
  after asking for one, zigbee/application.py _discover_route);
* an indirect frame for a sleepy child waits NWK_INDIRECT_MSG_TIMEOUT 8 s.

Sans-I/O: ``failure_delay(status)`` is arithmetic; the coordinator does the waiting.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable

from ..failure_timing import TimingSpecError, parse_failure_timing

#: zigpy-znp's Status codes for the failures (zigpy_znp.types.Status)
MAC_NO_ACK = 0xE9
MAC_TRANSACTION_EXPIRED = 0xF0
APS_NO_ACK = 0xB7
NWK_NO_ROUTE = 0xCD


@dataclasses.dataclass(frozen=True)
class FailureTiming:
    """Seconds (unscaled) the firmware spends before each failure is confirmed."""

    mac_attempt: float = 0.005
    mac_retries: int = 7
    nwk_retries: int = 4
    nwk_retry_delay: float = 0.05
    aps_ack_wait: float = 1.0
    aps_retries: int = 3
    route_discovery: float = 1.3
    indirect_timeout: float = 8.0
    scale: float = 1.0
    enabled: bool = True

    @classmethod
    def instant(cls) -> FailureTiming:
        """Failures confirmed as soon as the air says so (the default with an instant link)."""
        return cls(enabled=False)

    @classmethod
    def realistic(cls, scale: float = 1.0, **overrides: float) -> FailureTiming:
        return cls(scale=scale, **overrides)  # type: ignore[arg-type]

    def mac_failure(self) -> float:
        """Every MAC attempt of every NWK attempt unacknowledged."""
        attempts = (self.mac_retries + 1) * (self.nwk_retries + 1)
        return attempts * self.mac_attempt + self.nwk_retries * self.nwk_retry_delay

    def failure_delay(self, status: int) -> float:
        """Seconds from the data request to the AF.DataConfirm reporting ``status``."""
        if not self.enabled:
            return 0.0
        if status == MAC_NO_ACK:
            seconds = self.mac_failure()
        elif status == APS_NO_ACK:
            seconds = (self.aps_retries + 1) * self.aps_ack_wait
        elif status == NWK_NO_ROUTE:
            seconds = self.route_discovery
        elif status == MAC_TRANSACTION_EXPIRED:
            seconds = self.indirect_timeout
        else:
            seconds = self.mac_failure()
        return seconds * self.scale

    @classmethod
    def parse(cls, specs: str | Iterable[str] | None, *, scale: float = 1.0) -> FailureTiming:
        """``NAME=SECONDS`` (or a count for ``*_retries``), comma-joined or repeated;
        the names are this class's fields, e.g. ``aps_ack_wait=0.5,route_discovery=2``
        (radios/emulate/failure_timing.py reads them)."""
        return parse_failure_timing(cls, specs, fixed=("scale", "enabled"), scale=scale)


__all__ = ["APS_NO_ACK", "FailureTiming", "MAC_NO_ACK", "MAC_TRANSACTION_EXPIRED", "NWK_NO_ROUTE", "TimingSpecError"]
