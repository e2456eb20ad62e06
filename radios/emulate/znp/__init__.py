"""A Z-Stack 3.30 (CC26x2) ZNP coordinator emulator for unmodified zigpy-znp.

It speaks MT over a UART-like byte stream (TCP ``socket://`` or a pty) and puts a
``radios.sim.han.SimHan`` behind the real driver.  See coordinator.py for what is
emulated and server.py for the transports.
"""

from .coordinator import DEFAULT_IEEE, ZnpCoordinator
from .faults import Faults, FaultSpecError
from .timing import FailureTiming, TimingSpecError
from .server import (
    PtyZnpServer,
    TcpZnpServer,
    ZnpServer,
    running_znp_emulator,
    serve_znp,
    serve_znp_pty,
)

__all__ = [
    "DEFAULT_IEEE",
    "FailureTiming",
    "Faults",
    "FaultSpecError",
    "PtyZnpServer",
    "TcpZnpServer",
    "TimingSpecError",
    "ZnpCoordinator",
    "ZnpServer",
    "running_znp_emulator",
    "serve_znp",
    "serve_znp_pty",
]
