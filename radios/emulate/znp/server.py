"""Transports for the ZNP emulator: a TCP listener and a pseudo-terminal.

One host link at a time, as with a real serial port (a new TCP client replaces the old
one).  The coordinator object, and so its NVRAM, outlives links: reconnecting to the same
server finds the network it formed.

* TCP: zigpy-znp opens ``socket://HOST:PORT`` (serialx's socket transport).
* pty: ``os.openpty()``; we hand out a stable symlink to the slave so that a
  dropped-link fault (we hang the pty up) can be followed by a reconnect to the same path
  (we re-point the link at a fresh pty).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import tempfile
from collections.abc import AsyncIterator, Callable, Iterable
from typing import Any

from ..host_link import listen_tcp, open_raw_pty, point_symlink
from . import mt
from .coordinator import ZnpCoordinator
from .faults import Faults

LOGGER = logging.getLogger(__name__)


class ZnpServer:
    """An emulated coordinator behind a transport. Create with the ``serve_*`` functions."""

    def __init__(self, coordinator: ZnpCoordinator) -> None:
        self.coordinator = coordinator
        self.faults = coordinator.faults
        self.url: str = ""
        self.connections_made = 0
        self.connections_lost = 0
        self._conn_events: list[asyncio.Event] = []
        self._link: _Link | None = None
        self._closed = False

    # ------------------------------------------------------------ link plumbing ----
    def _attach(self, link: _Link) -> None:
        if self._link is not None:
            LOGGER.warning("ZNP emulator: new host link replaces the current one")
            self._link.close(abort=True)
        self._link = link
        self.connections_made += 1
        self.coordinator.connection_made(link.write)
        LOGGER.info("ZNP emulator: host connected (%s), connection #%d", link, self.connections_made)
        for event in self._conn_events:
            event.set()

    def _detach(self, link: _Link) -> None:
        if self._link is link:
            self._link = None
            self.coordinator.connection_lost()
        self.connections_lost += 1
        LOGGER.info("ZNP emulator: host link closed (%s)", link)

    def _data(self, link: _Link, data: bytes) -> None:
        if link is not self._link:
            return
        for frame in link.parser.feed(data):
            action = self.faults.on_host_frame()
            self.coordinator.frame_received(frame)
            if action == "reset":
                self.coordinator.inject_reset()
            elif action == "drop":
                LOGGER.warning("ZNP emulator: FAULT dropping the host link")
                self.drop_connection()
                return

    # ------------------------------------------------------------------ public ----
    @property
    def connected(self) -> bool:
        return self._link is not None

    def drop_connection(self) -> None:
        """Fault: the link goes away (cable pulled / socket closed / pty hung up)."""
        link = self._link
        if link is not None:
            self._detach(link)
            link.close(abort=True)

    def inject_reset(self) -> None:
        """Fault: the firmware resets (watchdog); the host gets SYS.ResetInd."""
        self.faults.resets_injected += 1
        self.coordinator.inject_reset()

    async def wait_for_connections(self, count: int, timeout: float = 10.0) -> None:
        """Wait until ``connections_made >= count``."""
        async with asyncio.timeout(timeout):
            while self.connections_made < count:
                event = asyncio.Event()
                self._conn_events.append(event)
                try:
                    await event.wait()
                finally:
                    self._conn_events.remove(event)

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._link is not None:
            link = self._link
            self._detach(link)
            link.close(abort=True)
        await self._close_transport()
        await self.coordinator.close()

    async def _close_transport(self) -> None:  # pragma: no cover - overridden
        pass

    async def __aenter__(self) -> ZnpServer:
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.close()


class _Link:
    def __init__(self) -> None:
        self.parser = mt.MtParser()

    def write(self, data: bytes) -> None:
        raise NotImplementedError

    def close(self, *, abort: bool = False) -> None:
        raise NotImplementedError


# ====================================================================== TCP ====
class _TcpLink(_Link):
    """One TCP connection (radios/emulate/host_link.py accepts it)."""

    def __init__(self, server: TcpZnpServer, write: Callable[[bytes], None], abort: Callable[[], None], name: str) -> None:
        super().__init__()
        self.server = server
        self._write = write
        self._abort = abort
        self.name = name

    def data_received(self, data: bytes) -> None:
        self.server._data(self, data)

    def lost(self) -> None:
        if self.server._link is self:
            self.server._detach(self)

    def write(self, data: bytes) -> None:
        self._write(data)

    def close(self, *, abort: bool = False) -> None:
        self._abort()  # every close of a host link here is a cut (replaced, dropped, shut down)

    def __repr__(self) -> str:
        return self.name


class TcpZnpServer(ZnpServer):
    def __init__(self, coordinator: ZnpCoordinator) -> None:
        super().__init__(coordinator)
        self._server: asyncio.Server | None = None
        self.host = ""
        self.port = 0

    async def _start(self, host: str, port: int) -> None:
        self._server, self.host, self.port = await listen_tcp(host, port, self._connected)
        self.url = f"socket://{self.host}:{self.port}"
        LOGGER.info("ZNP emulator listening on %s", self.url)

    def _connected(self, write: Callable[[bytes], None], abort: Callable[[], None], name: str) -> _TcpLink:
        link = _TcpLink(self, write, abort, name)
        self._attach(link)
        return link

    async def _close_transport(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()


# ====================================================================== pty ====
class _PtyLink(_Link):
    def __init__(self, server: PtyZnpServer) -> None:
        super().__init__()
        self.server = server
        self.master, self.slave, self.name = open_raw_pty()
        self._out = bytearray()
        self._closed = False
        loop = asyncio.get_running_loop()
        self._loop = loop
        loop.add_reader(self.master, self._readable)

    def _readable(self) -> None:
        try:
            data = os.read(self.master, 4096)
        except BlockingIOError:
            return
        except OSError as e:
            if e.errno == errno.EIO:  # no process has the slave open (cannot happen: we hold it)
                return
            raise
        if data:
            if self.server._link is not self:
                # First bytes from a host on this pty: that is our "connection"
                self.server._attach(self)
            self.server._data(self, data)

    def write(self, data: bytes) -> None:
        if self._closed:
            return
        self._out += data
        self._flush()

    def _flush(self) -> None:
        while self._out:
            try:
                n = os.write(self.master, self._out)
            except BlockingIOError:
                self._loop.add_writer(self.master, self._writable)
                return
            del self._out[:n]

    def _writable(self) -> None:
        self._loop.remove_writer(self.master)
        self._flush()

    def close(self, *, abort: bool = False) -> None:
        if self._closed:
            return
        self._closed = True
        self._loop.remove_reader(self.master)
        self._loop.remove_writer(self.master)
        # Closing both ends hangs the line up: the host's reads fail (EIO/HUP)
        for fd in (self.master, self.slave):
            with contextlib.suppress(OSError):
                os.close(fd)
        self.server._pty_closed(self)

    def __repr__(self) -> str:
        return f"pty {self.name}"


class PtyZnpServer(ZnpServer):
    """The emulator on a pseudo-terminal; ``path`` is a stable symlink to the slave."""

    def __init__(self, coordinator: ZnpCoordinator, link_path: str | None = None) -> None:
        super().__init__(coordinator)
        self._tmpdir: str | None = None
        if link_path is None:
            self._tmpdir = tempfile.mkdtemp(prefix="znp-emu-")
            link_path = os.path.join(self._tmpdir, "ttyZNP0")
        self.path = link_path
        self.url = link_path
        self._pty: _PtyLink | None = None

    def _open_pty(self) -> None:
        self._pty = _PtyLink(self)
        point_symlink(self.path, self._pty.name)
        LOGGER.info("ZNP emulator on pty %s (link %s)", self._pty.name, self.path)

    def _pty_closed(self, link: _PtyLink) -> None:
        if self._pty is link and not self._closed:
            # A fresh line for the next host, behind the same path
            self._open_pty()

    async def _close_transport(self) -> None:
        if self._pty is not None:
            pty, self._pty = self._pty, None
            pty.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)
        if self._tmpdir is not None:
            with contextlib.suppress(OSError):
                os.rmdir(self._tmpdir)


# ============================================================ entry points ====
def _coordinator(han: Any, faults: Faults | str | Iterable[str] | None, **kwargs: Any) -> ZnpCoordinator:
    if not isinstance(faults, Faults):
        faults = Faults.parse(faults)
    return ZnpCoordinator(han, faults=faults, **kwargs)


async def serve_znp(
    host: str, port: int, han: Any, *, faults: Faults | str | Iterable[str] | None = None, **kwargs: Any
) -> TcpZnpServer:
    """Serve an emulated Z-Stack 3.30 coordinator on TCP; ``port=0`` picks a free port.

    ``han`` is a SimHan (or None for a coordinator with no devices).  The emulator attaches
    to it and powers it up per ``han_start`` ("ready": once the host has started the
    network; "permit": when the host first permits joining; "manual": never, you call
    ``han.start()``).  ``server.url`` is the ``socket://`` path for zigpy-znp.
    """
    server = TcpZnpServer(_coordinator(han, faults, **kwargs))
    await server._start(host, port)
    return server


async def serve_znp_pty(
    han: Any,
    *,
    faults: Faults | str | Iterable[str] | None = None,
    link_path: str | None = None,
    **kwargs: Any,
) -> tuple[str, PtyZnpServer]:
    """Serve the emulator on a pty; returns (path for zigpy-znp, server)."""
    server = PtyZnpServer(_coordinator(han, faults, **kwargs), link_path)
    server._open_pty()
    return server.path, server


@contextlib.asynccontextmanager
async def running_znp_emulator(
    specs: Any,
    link: Any = None,
    *,
    transport: str = "tcp",
    host: str = "127.0.0.1",
    port: int = 0,
    faults: Faults | str | Iterable[str] | None = None,
    **kwargs: Any,
) -> AsyncIterator[tuple[str, ZnpServer]]:
    """A SimHan(specs, link) behind an emulated coordinator: yields (path, server).

    ``specs`` are the simulated devices (see radios.sim.han); ``link`` a LinkModel
    (default: instant).  ``transport`` is "tcp" (path ``socket://...``) or "pty".
    Neither transport limits the byte rate, so a timed LinkModel's own UART model
    (``uart_baud``) is the only serial-speed model in the path; keep it for realistic
    timings.  Other keyword arguments go to ZnpCoordinator (``han_start``, ``ieee``).
    """
    from radios.sim.han import SimHan  # the simulated HAN (another module's contract)

    if link is None:
        from radios.sim.han import LinkModel

        link = LinkModel.instant()
    han = SimHan(specs, link)
    if transport == "tcp":
        server: ZnpServer = await serve_znp(host, port, han, faults=faults, **kwargs)
        path = server.url
    elif transport == "pty":
        path, server = await serve_znp_pty(han, faults=faults, **kwargs)
    else:
        raise ValueError(f"transport must be 'tcp' or 'pty', not {transport!r}")
    try:
        yield path, server
    finally:
        await server.close()
