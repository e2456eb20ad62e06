"""How long EmberZNet takes to report a unicast it could not deliver (``--link realistic``).

A real NCP reports a lost unicast (messageSentHandler with DELIVERY_FAILED) only after
its stack gave up, seconds later, not in the milliseconds the simulated air's MAC
retries take:

* APS retries: bellows sends every unicast with EMBER_APS_OPTION_RETRY, "retransmitted
  until either a matching acknowledgment is received or three transmissions have been
  made" (EmberZNet stack/include/message.h, emberSendUnicast), each waiting
  ``emberApsAckTimeoutMs`` = EMBER_APSC_MAX_ACK_WAIT_HOPS_MULTIPLIER_MS (50) x
  EMBER_MAX_HOPS (30) + EMBER_APSC_MAX_ACK_WAIT_TERMINAL_SECURITY_MS (100) = 1600 ms
  (ember-configuration.c, message.h).
* Route discovery: bellows also sets EMBER_APS_OPTION_ENABLE_ROUTE_DISCOVERY, and a
  failed transmission breaks the route, so before each retry the NWK layer discovers
  one again: a route request broadcast nwkcInitialRREQRetries (3) times
  nwkcRREQRetryInterval (254 ms) apart (Zigbee PRO NWK constants), ~0.76 s.
* MAC retries (macMaxFrameRetries, ms each) are the simulated air's own
  (radios/sim/link.py) and already spent when the HAN reports the loss.

So a unicast to a device that is gone is reported after 3 x 1.6 + 2 x 0.762 = 6.3 s;
bellows itself gives up waiting for messageSentHandler after 3 s (its
MESSAGE_SEND_TIMEOUT_MAINS) and raises a timeout, as it does against real dongles.

The HAN draws a frame's loss once: the APS retransmissions are represented by their
time, not sent again (a retransmission the air would have delivered is not modelled).
``scale`` compresses the seconds as the HAN link's ``scale`` does; every number is a
field, so a test or a bench run can set its own model.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import Any

from ..failure_timing import TimingSpecError, parse_failure_timing

__all__ = ["APS_ACK_TIMEOUT_S", "FailureTiming", "TimingSpecError"]

#: emberApsAckTimeoutMs: 50 ms per hop x EMBER_MAX_HOPS 30 + 100 ms terminal security.
APS_ACK_TIMEOUT_S = (50 * 30 + 100) / 1000.0
#: EMBER_APS_OPTION_RETRY: three transmissions in all.
APS_TRANSMISSIONS = 3
#: nwkcInitialRREQRetries x nwkcRREQRetryInterval (Zigbee PRO NWK constants).
ROUTE_DISCOVERY_S = 3 * 0.254


@dataclass(frozen=True)
class FailureTiming:
    """When the NCP reports a unicast it could not deliver; ``instant()``: at once."""

    aps_ack_timeout_s: float = APS_ACK_TIMEOUT_S
    aps_transmissions: int = APS_TRANSMISSIONS
    #: Spent before each retransmission (the route broke with the failed one).
    route_discovery_s: float = ROUTE_DISCOVERY_S
    scale: float = 1.0

    def __post_init__(self) -> None:
        for name in ("aps_ack_timeout_s", "route_discovery_s", "scale"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or value < 0 or value != value or value == float("inf"):
                raise ValueError(f"FailureTiming.{name} must be a finite number >= 0, not {value!r}")
        if not isinstance(self.aps_transmissions, int) or self.aps_transmissions < 1:
            raise ValueError(f"FailureTiming.aps_transmissions must be at least 1, not {self.aps_transmissions!r}")

    @classmethod
    def instant(cls) -> FailureTiming:
        return cls(scale=0.0)

    @classmethod
    def for_link(cls, link: Any) -> FailureTiming:
        """EmberZNet's timing for a timed HAN link (at its scale), none for an instant one."""
        if link is None or not getattr(link, "timed", False):
            return cls.instant()
        return cls(scale=float(getattr(link, "scale", 1.0)))

    @classmethod
    def parse(cls, specs: str | Iterable[str] | None, *, scale: float = 1.0) -> FailureTiming:
        """``han-ota emulate ezsp --failure-timing``: ``NAME=VALUE`` parts, comma-joined
        or repeated, NAME one of this class's fields but ``scale``, e.g.
        ``aps_ack_timeout_s=0.5,aps_transmissions=2`` (radios/emulate/failure_timing.py)."""
        return parse_failure_timing(cls, specs, scale=scale)

    def replace(self, **changes: Any) -> FailureTiming:
        return replace(self, **changes)

    @property
    def failure_delay_s(self) -> float:
        """Seconds from the first transmission to messageSentHandler's failure."""
        retries = self.aps_transmissions - 1
        return self.scale * (self.aps_transmissions * self.aps_ack_timeout_s + retries * self.route_discovery_s)
