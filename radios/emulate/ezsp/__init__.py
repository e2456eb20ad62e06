"""An emulated Silicon Labs EmberZNet NCP (ASH + EZSPv14) for unmodified bellows.

The simulated HAN (``radios.sim.han``) sits behind it as the air. Entry points::

    server = await serve_ezsp("127.0.0.1", 0, han)          # server.path: socket://...
    path, server = await serve_ezsp_pty(han)                 # /dev/pts/N
    async with running_ezsp_emulator(specs, link) as (path, server): ...

Faults: ``server.faults`` (:class:`Faults`), or ``faults="fail-deliveries=3,..."``.
"""

from .ash import RESET_POWER_ON, RESET_SOFTWARE, RESET_WATCHDOG
from .faults import Faults
from .frames import SUPPORTED_VERSIONS
from .ncp import EmberNcp, HanStart, JoinedDevice, NetworkSettings
from .server import (
    EzspServer,
    PtyEzspServer,
    TcpEzspServer,
    running_ezsp_emulator,
    serve_ezsp,
    serve_ezsp_pty,
)

__all__ = [
    "RESET_POWER_ON",
    "RESET_SOFTWARE",
    "RESET_WATCHDOG",
    "SUPPORTED_VERSIONS",
    "EmberNcp",
    "EzspServer",
    "Faults",
    "HanStart",
    "JoinedDevice",
    "NetworkSettings",
    "PtyEzspServer",
    "TcpEzspServer",
    "running_ezsp_emulator",
    "serve_ezsp",
    "serve_ezsp_pty",
]
