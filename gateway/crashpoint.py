"""Named points where a test may kill the process, to prove each step is recoverable.

``HAN_OTA_CRASH_AT=NAME`` makes the process exit at once (as SIGKILL would: no
cleanup, no flush) when it reaches the point called NAME. Unset, a point costs one
dictionary lookup. The names are listed in ``POINTS``; the kill tests walk them all.
"""

from __future__ import annotations

import os

ENV = "HAN_OTA_CRASH_AT"

#: The steps of accepting a CS06, in order.
SUBMIT_POINTS = ("submit.verified", "submit.accepted", "submit.acted", "submit.audited")
#: The hub's own alert (han_ota/hub_alerts.py): its counter reserved, then its bytes signed
#: but not yet recorded (issue 13).
HUB_ALERT_POINTS = ("hub_alert.reserved", "hub_alert.signed")
#: A command forwarded over the GBCS tunnel (han_ota/tunnels.py): kept in the store but
#: not yet sent, then acknowledged by the device with its response not yet in (issue 13).
TUNNEL_POINTS = ("tunnel.recorded", "tunnel.acknowledged")
POINTS = frozenset(SUBMIT_POINTS + HUB_ALERT_POINTS + TUNNEL_POINTS)


def crashpoint(name: str) -> None:
    if os.environ.get(ENV) == name:
        os._exit(137)  # 128 + SIGKILL, what a shell reports for kill -9
