"""Each radio family's payload limit for one unfragmented APS unicast, as its stack counts it.

A coordinator's stack refuses a unicast longer than it can put in one frame to that
destination, at once, before anything goes on air. The limit falls with APS encryption
(auxiliary header and MIC in the APS frame) and with a source route (the NWK source-route
subframe: relay count, relay index, then two bytes per relay). The gateway sizes its OTA
blocks from these numbers (gateway/ota/limits.py); the numbers live here because they
are the radios', and `radios/` never imports `gateway/`.

* EZSP (EmberZNet): ``emberAfMaximumApsPayloadLength`` (Ember AF util.c):
  EMBER_AF_MAXIMUM_APS_PAYLOAD_LENGTH 82 under NWK security, less
  EMBER_AF_APS_ENCRYPTION_OVERHEAD 9, less EMBER_AF_NWK_SOURCE_ROUTE_OVERHEAD 2 and
  EMBER_AF_NWK_SOURCE_ROUTE_PER_RELAY_ADDRESS_OVERHEAD 2 per relay. A longer payload:
  sendUnicast answers MESSAGE_TOO_LONG (EMBER_MESSAGE_TOO_LONG 0x74 on EZSP 13,
  SL_STATUS_MESSAGE_TOO_LONG on 14+); bellows raises DeliveryError with that status.
  The emulator holds the same numbers (radios/emulate/ezsp/ncp.py, ``max_payload``).
* Z-Stack 3.x: ``AF_DataRequest`` (af.c in TI's SimpleLink SDK) refuses ``len >
  afDataReqMTU()`` with afStatus_INVALID_PARAMETER (0x02) unless the build has APS
  fragmentation (then it fragments, which an OTA client need not reassemble).
  ``afDataReqMTU`` is APSDE_DataReqMTU less AF_HDR_V1_1_MAX_LEN (0); APSDE_DataReqMTU
  is in TI's binary stack library, not in the sources, so the number is the frame
  format's, as the Z-Stack emulator has it (radios/emulate/znp/firmware.py ``af_mtu``):
  127 less MAC 11, NWK 8, NWK security 18 and APS 8 = 82, less 9 for APS security, less
  the NWK source-route subframe (2 + 2 per relay). zigpy-znp raises DeliveryError with
  the SRSP's status; MAC_FRAME_TOO_LONG (0xE5) is the MAC's word for the same thing in
  a data confirm.
* sim: the simulated air's own frame budget (radios/sim/link.py ``max_aps_payload``:
  aMaxPHYPacketSize 127 less MAC, NWK, NWK security and APS overheads = 82). The sim
  never refuses a long payload (it fragments in its timing), so nothing is "too long".
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from radios.sim.link import LinkModel

__all__ = ["EZSP", "SIM", "ZSTACK", "PayloadLimits", "for_app"]


@dataclass(frozen=True)
class PayloadLimits:
    """One radio family's APS payload limit and how it shrinks per destination."""

    #: The family's name as log lines give it ("EZSP", "Z-Stack", "sim").
    family: str
    #: The longest APS payload of a NWK-secured unicast without a source route.
    max_aps_payload: int
    #: Taken off by APS encryption (auxiliary header 5 + MIC 4).
    aps_encryption_overhead: int = 9
    #: Taken off by a source route: relay count and relay index ...
    source_route_overhead: int = 2
    #: ... and each relay's NWK address.
    per_relay_overhead: int = 2
    #: The names of the statuses the radio library's DeliveryError carries when the
    #: stack refused a payload as too long.
    too_long_statuses: frozenset[str] = frozenset()

    def max_payload(self, *, aps_encrypted: bool, relays: int) -> int:
        """The longest APS payload the stack takes for one frame to that destination."""
        limit = self.max_aps_payload
        if aps_encrypted:
            limit -= self.aps_encryption_overhead
        if relays > 0:
            limit -= self.source_route_overhead + self.per_relay_overhead * relays
        return limit

    def refused_as_too_long(self, exc: BaseException) -> bool:
        """Whether a send failure is the stack refusing the payload's length."""
        status = getattr(exc, "status", None)
        return status is not None and getattr(status, "name", None) in self.too_long_statuses


EZSP = PayloadLimits("EZSP", 82, too_long_statuses=frozenset({"MESSAGE_TOO_LONG"}))
ZSTACK = PayloadLimits("Z-Stack", 82, too_long_statuses=frozenset({"INVALID_PARAMETER", "MAC_FRAME_TOO_LONG"}))
SIM = PayloadLimits("sim", LinkModel().max_aps_payload)

# The top-level package of each radio library's ControllerApplication.
_BY_PACKAGE = {"bellows": EZSP, "zigpy_znp": ZSTACK, "radios": SIM}


def for_app(app: Any) -> PayloadLimits:
    """The limits of the family a zigpy ControllerApplication drives (sim if unknown:
    the Zigbee frame budget, and no status taken as "too long")."""
    package = type(app).__module__.split(".", 1)[0]
    return _BY_PACKAGE.get(package, SIM)
