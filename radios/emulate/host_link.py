"""How an emulator meets its host: one TCP listener and the pty primitives, for both emulators.

The EZSP and ZNP emulators each speak their own framing (ASH, MT) over one host link
at a time. What they share is here:

* `listen_tcp(host, port, on_connect)`: a listener whose every accepted connection is
  handed to ``on_connect(write, abort, name)``, which returns the emulator's
  `HostSession` for it (the emulator decides what a second connection does to the
  first: both replace it, as a serial-over-TCP bridge would). Bytes and the loss of
  the connection go to that session.
* `open_raw_pty()` and `point_symlink()`: a pseudo-terminal in raw mode (no echo, no
  line discipline before the host configures it) and a stable path to it, re-pointed
  atomically when a dropped-link fault replaces the pty.

How each emulator notices a host opening or closing its pty stays with the emulator
(radios/emulate/ezsp/server.py, radios/emulate/znp/server.py).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
import contextlib
import os
import tty
from typing import Protocol

__all__ = ["HostSession", "OnConnect", "listen_tcp", "open_raw_pty", "point_symlink"]


class HostSession(Protocol):
    """The emulator's side of one host connection."""

    def data_received(self, data: bytes) -> None: ...

    def lost(self) -> None: ...


#: ``on_connect(write, abort, name)``: a new host connection; ``abort`` cuts it from our side.
OnConnect = Callable[[Callable[[bytes], None], Callable[[], None], str], HostSession]


class _TcpConnection(asyncio.Protocol):
    def __init__(self, on_connect: OnConnect) -> None:
        self._on_connect = on_connect
        self._transport: asyncio.Transport | None = None
        self._session: HostSession | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if not isinstance(transport, asyncio.Transport):
            raise TypeError(f"a stream transport was expected, not {transport!r}")
        self._transport = transport
        peer = transport.get_extra_info("peername")
        name = f"tcp {peer[0]}:{peer[1]}" if peer else "tcp"
        self._session = self._on_connect(self._write, transport.abort, name)

    def _write(self, data: bytes) -> None:
        if self._transport is not None and not self._transport.is_closing():
            self._transport.write(data)

    def data_received(self, data: bytes) -> None:
        if self._session is not None:
            self._session.data_received(data)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._session is not None:
            self._session.lost()


async def listen_tcp(host: str, port: int, on_connect: OnConnect) -> tuple[asyncio.Server, str, int]:
    """Listen on ``host:port`` (``port=0``: any free port); returns the server and where it listens."""
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: _TcpConnection(on_connect), host, port)
    bound_host, bound_port = server.sockets[0].getsockname()[:2]
    return server, str(bound_host), int(bound_port)


def open_raw_pty() -> tuple[int, int, str]:
    """A new pty pair: (master, slave, slave's name); the master is non-blocking."""
    master, slave = os.openpty()
    tty.setraw(slave)  # no echo, no line discipline before the host configures it
    os.set_blocking(master, False)
    return master, slave, os.ttyname(slave)


def point_symlink(path: str, target: str) -> None:
    """Make ``path`` a symlink to ``target``, replacing any old link in one step."""
    tmp = f"{path}.new"
    with contextlib.suppress(FileNotFoundError):
        os.unlink(tmp)
    os.symlink(target, tmp)
    os.replace(tmp, path)
