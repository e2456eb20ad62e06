"""Transports for the emulated NCP: a TCP listener and a pseudo-terminal.

bellows opens ``socket://HOST:PORT`` (a serial-over-TCP bridge, like ser2net or zigbeed)
or a serial device path; both reach the same :class:`~.ncp.EmberNcp`, one host at a
time. The NCP (its "NVRAM") outlives connections: a host that reconnects finds the
network it formed.

* TCP: a new connection replaces the previous one, as a bridge would. Dropping the
  connection (fault) aborts the socket; the listener stays up so the host can reconnect.
* pty: the host opens the slave side (``/dev/pts/N``, or a stable symlink we keep). We
  detect the host opening and closing it by the master side's EIO while no one has the
  slave open. Dropping the connection closes the pty pair (the host sees a hang-up, as
  when a dongle is unplugged) and makes a fresh one; ``server.path`` (and the symlink)
  point to the new one.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import tempfile
from collections.abc import AsyncIterator, Iterable
from typing import Any

from ..host_link import listen_tcp, open_raw_pty, point_symlink
from . import ash
from .faults import Faults
from .ncp import EmberNcp, HanLike, NetworkSettings

LOGGER = logging.getLogger(__name__)

PTY_POLL_INTERVAL = 0.02


class _Session:
    """One host connection: its ASH state, bound to the NCP while it lasts."""

    def __init__(self, server: EzspServer, write, close, name: str, config: ash.AshConfig,
                 failed_with: int | None = None) -> None:
        self.server = server
        self.name = name
        self._write_raw = write
        self._close = close
        self.closed = False
        self.ash = ash.AshNcp(
            self._write, server.ncp.handle_frame, server.ncp.power_cycle, config=config,
        )
        self.ash.signals = server.ash_signals
        if failed_with is not None:
            # The dongle stays not-connected across the host closing and reopening the
            # port: only an RST brings it back (ash-ncp.c keeps its flags until reboot)
            self.ash.enter_failed_quietly(failed_with)
        server.ncp.attach(self.ash.send)

    def _write(self, data: bytes) -> None:
        if not self.closed:
            self._write_raw(data)

    def data_received(self, data: bytes) -> None:
        if not self.closed:
            self.ash.data_received(data)

    def lost(self) -> None:
        if self.closed:
            return
        self.closed = True
        self.server._failed_with = self.ash.pending_error
        self.ash.close()
        self.server.ncp.detach(self.ash.send)
        self.server._session_lost(self)

    def drop(self) -> None:
        """Cut the connection from our side."""
        self._close()
        self.lost()


class EzspServer:
    """A running emulator: ``path`` is what to give bellows as the device path."""

    def __init__(self, ncp: EmberNcp, faults: Faults, *, ash_config: ash.AshConfig | None = None) -> None:
        self.ncp = ncp
        self.faults = faults
        self.ash_config = ash_config if ash_config is not None else ash.AshConfig()
        self._failed_with: int | None = None  # the NCP's ASH error while no host is attached
        # Every RSTACK/ERROR the NCP signalled, over all host connections (ash.AshNcp.signals)
        self.ash_signals: list[tuple[str, int]] = []
        self.path: str = ""
        self.connections = 0  # host connections accepted so far
        self.session: _Session | None = None
        self._closing = False
        self._connected = asyncio.Condition()
        loop = asyncio.get_running_loop()
        faults.bind("reset", lambda: loop.call_soon(self.reset_ncp))
        faults.bind("drop", lambda: loop.call_soon(self.drop_connection))
        faults.bind("error", lambda: loop.call_soon(self.fail_ash))

    @property
    def han(self) -> HanLike | None:
        return self.ncp.han

    # -- faults --------------------------------------------------------------------
    def reset_ncp(self, reset_code: int = ash.RESET_WATCHDOG) -> None:
        """The NCP resets by itself: stack state lost; after its reboot delay a watchdog
        (or assert) reset is signalled as Cancel + ERROR(code) and the NCP waits for the
        host's RST; a power-on or software reset as Cancel + RSTACK (see ash.py)."""
        LOGGER.warning("EZSP emulator: NCP reset (code 0x%02x)", reset_code)
        self.ncp.power_cycle()
        if self.session is not None:
            self.session.ash.restart(reset_code)
        elif reset_code not in ash.RSTACK_RESETS:
            self._failed_with = reset_code

    def drop_connection(self) -> None:
        """The link to the host goes away (cable pulled / socket closed)."""
        if self.session is not None:
            LOGGER.warning("EZSP emulator: dropping the host connection %s", self.session.name)
            self.session.drop()

    def fail_ash(self, error_code: int = ash.ERROR_EXCEEDED_MAXIMUM_ACK_TIMEOUT_COUNT) -> None:
        """The NCP's ASH layer gives up: ERROR frame, FAILED until the host sends RST."""
        if self.session is not None:
            self.session.ash.fail(error_code)

    # -- sessions ------------------------------------------------------------------
    def _new_session(self, write, close, name: str) -> _Session:
        if self.session is not None:
            LOGGER.warning("EZSP emulator: new host connection replaces %s", self.session.name)
            self.session.drop()
        self.session = _Session(self, write, close, name, self.ash_config, self._failed_with)
        self.connections += 1
        LOGGER.info("EZSP emulator: host connected (%s), connection #%d", name, self.connections)
        asyncio.get_running_loop().create_task(self._notify())
        return self.session

    async def _notify(self) -> None:
        async with self._connected:
            self._connected.notify_all()

    def _session_lost(self, session: _Session) -> None:
        if self.session is session:
            self.session = None
            LOGGER.info("EZSP emulator: host disconnected (%s)", session.name)
        asyncio.get_running_loop().create_task(self._notify())

    async def wait_for_connections(self, count: int, timeout: float = 10.0) -> None:
        """Wait until ``count`` host connections have been made in total."""
        async with asyncio.timeout(timeout):
            async with self._connected:
                await self._connected.wait_for(lambda: self.connections >= count)

    async def close(self) -> None:
        self._closing = True
        if self.session is not None:
            self.session.drop()
        await self.ncp.close()

    async def __aenter__(self) -> EzspServer:
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.close()


class TcpEzspServer(EzspServer):
    """The NCP behind a TCP listener: ``path`` is ``socket://HOST:PORT``."""

    _listener: asyncio.base_events.Server | None = None

    async def start(self, host: str, port: int) -> None:
        # radios/emulate/host_link.py accepts; each connection becomes a _Session
        self._listener, self.host, self.port = await listen_tcp(host, port, self._new_session)
        self.path = f"socket://{self.host}:{self.port}"
        LOGGER.info("EZSP emulator listening on %s (EZSPv%d)", self.path, self.ncp.version)

    async def close(self) -> None:
        if self._listener is not None:
            self._listener.close()
        await super().close()
        if self._listener is not None:
            await self._listener.wait_closed()
            self._listener = None


class PtyEzspServer(EzspServer):
    """The NCP behind a pseudo-terminal: ``path`` is the slave device (or ``symlink``)."""

    def __init__(self, ncp: EmberNcp, faults: Faults, *, ash_config: ash.AshConfig | None = None,
                 symlink: str | None = None) -> None:
        super().__init__(ncp, faults, ash_config=ash_config)
        self.symlink = symlink
        self.pty_name = ""
        self._master: int | None = None
        self._out = bytearray()
        self._poll: asyncio.TimerHandle | None = None
        self._pty_session: _Session | None = None

    def start(self) -> None:
        master, slave, self.pty_name = open_raw_pty()
        os.close(slave)  # the host opens it by name; its EIO tells us when it is closed
        self._master = master
        self._out.clear()
        if self.symlink:
            point_symlink(self.symlink, self.pty_name)
            self.path = self.symlink
        else:
            self.path = self.pty_name
        LOGGER.info("EZSP emulator on pty %s (path %s, EZSPv%d)", self.pty_name, self.path, self.ncp.version)
        self._schedule_poll()

    # The slave side is closed: poll until the host opens it
    def _schedule_poll(self) -> None:
        loop = asyncio.get_running_loop()
        self._poll = loop.call_later(PTY_POLL_INTERVAL, self._poll_open)

    def _poll_open(self) -> None:
        self._poll = None
        if self._master is None:
            return
        try:
            data = os.read(self._master, 4096)
        except BlockingIOError:
            data = b""
        except OSError as exc:
            if exc.errno == errno.EIO:  # still no one on the slave side
                self._schedule_poll()
                return
            raise
        self._host_opened()
        if data:
            self._pty_session.data_received(data)

    def _host_opened(self) -> None:
        loop = asyncio.get_running_loop()
        master = self._master
        self._pty_session = self._new_session(self._pty_write, self._hang_up, f"pty {self.pty_name}")
        loop.add_reader(master, self._readable)

    def _readable(self) -> None:
        try:
            data = os.read(self._master, 4096)
        except BlockingIOError:
            return
        except OSError as exc:
            if exc.errno != errno.EIO:
                LOGGER.warning("EZSP emulator: pty read failed: %s", exc)
            self._host_closed()
            return
        if not data:
            self._host_closed()
            return
        self._pty_session.data_received(data)

    def _host_closed(self) -> None:
        loop = asyncio.get_running_loop()
        if self._master is not None:
            loop.remove_reader(self._master)
            loop.remove_writer(self._master)
        self._out.clear()
        session, self._pty_session = self._pty_session, None
        if session is not None:
            session.lost()
        if self._master is not None and not self._closing:
            self._schedule_poll()

    def _pty_write(self, data: bytes) -> None:
        if self._master is None:
            return
        if self._out:
            self._out += data
            return
        try:
            written = os.write(self._master, data)
        except BlockingIOError:
            written = 0
        except OSError as exc:
            LOGGER.debug("EZSP emulator: pty write failed: %s", exc)
            return
        if written < len(data):
            self._out += data[written:]
            asyncio.get_running_loop().add_writer(self._master, self._flush)

    def _flush(self) -> None:
        try:
            written = os.write(self._master, self._out)
        except BlockingIOError:
            return
        except OSError:
            self._out.clear()
            written = 0
        del self._out[:written]
        if not self._out:
            asyncio.get_running_loop().remove_writer(self._master)

    def _close_pty(self) -> None:
        loop = asyncio.get_running_loop()
        if self._poll is not None:
            self._poll.cancel()
            self._poll = None
        if self._master is not None:
            loop.remove_reader(self._master)
            loop.remove_writer(self._master)
            os.close(self._master)
            self._master = None
        self._out.clear()

    def _hang_up(self) -> None:
        """Dropping the connection: close this pty (host sees a hang-up), make a new one.

        The new pair is opened before the old one is closed, so it gets a new name, as a
        re-enumerated USB dongle would.
        """
        self._pty_session = None
        old_master, old_poll = self._master, self._poll
        self._master, self._poll = None, None
        if not self._closing:
            self.start()
        loop = asyncio.get_running_loop()
        if old_poll is not None:
            old_poll.cancel()
        if old_master is not None:
            loop.remove_reader(old_master)
            loop.remove_writer(old_master)
            os.close(old_master)

    async def close(self) -> None:
        self._closing = True
        await super().close()
        self._close_pty()
        if self.symlink:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.symlink)


def _faults(faults: Faults | str | Iterable[str] | None) -> Faults:
    if isinstance(faults, Faults):
        return faults
    return Faults.parse(faults)


def _make_ncp(han: HanLike | None, faults: Faults, ncp_options: dict[str, Any]) -> EmberNcp:
    return EmberNcp(han, faults=faults, **ncp_options)


async def serve_ezsp(
    host: str,
    port: int,
    han: HanLike | None,
    *,
    faults: Faults | str | Iterable[str] | None = None,
    ash_config: ash.AshConfig | None = None,
    **ncp_options: Any,
) -> TcpEzspServer:
    """Serve an emulated NCP in front of ``han`` on TCP (``port=0``: any free port).

    ``ash_config`` (:class:`~.ash.AshConfig`): the NCP's ASH window, reboot delay and
    timeouts, the firmware's by default (tests shorten ``reboot_delay``).
    ``ncp_options`` go to :class:`~.ncp.EmberNcp`: ``eui64``, ``network`` (a
    :class:`~.ncp.NetworkSettings` to start already formed), ``protocol_version``,
    ``han_start``, ``stack_zdo``, ``delivery_delay``, ``failure_timing`` (a
    :class:`~.failure_timing.FailureTiming`; by default from the HAN link: EmberZNet's
    seconds on a timed one, none on an instant one).
    """
    faults = _faults(faults)
    server = TcpEzspServer(_make_ncp(han, faults, ncp_options), faults, ash_config=ash_config)
    await server.start(host, port)
    return server


async def serve_ezsp_pty(
    han: HanLike | None,
    *,
    faults: Faults | str | Iterable[str] | None = None,
    symlink: str | None = None,
    ash_config: ash.AshConfig | None = None,
    **ncp_options: Any,
) -> tuple[str, PtyEzspServer]:
    """Serve an emulated NCP on a new pty; returns (device path, server)."""
    faults = _faults(faults)
    server = PtyEzspServer(_make_ncp(han, faults, ncp_options), faults,
                           ash_config=ash_config, symlink=symlink)
    server.start()
    return server.path, server


@contextlib.asynccontextmanager
async def running_ezsp_emulator(
    specs: Iterable[Any] | None = None,
    link: Any = None,
    *,
    han: HanLike | None = None,
    transport: str = "tcp",
    host: str = "127.0.0.1",
    port: int = 0,
    faults: Faults | str | Iterable[str] | None = None,
    **ncp_options: Any,
) -> AsyncIterator[tuple[str, EzspServer]]:
    """An emulator for a test or a bench run: yields (device path for bellows, server).

    With ``specs`` (and optionally ``link``) a ``radios.sim.han.SimHan`` is built and
    stopped on exit; or pass a ready ``han``; or neither, for an NCP with no devices.
    ``transport`` is ``"tcp"`` or ``"pty"``.
    """
    own_han = False
    if han is None and specs is not None:
        from radios.sim.han import SimHan  # the HAN engineer's module

        # link=None: SimHan picks the model from the specs' link key (instant by default)
        han = SimHan(list(specs), link)
        own_han = True
    if transport == "tcp":
        server: EzspServer = await serve_ezsp(host, port, han, faults=faults, **ncp_options)
    elif transport == "pty":
        tmpdir = tempfile.mkdtemp(prefix="han-ota-ezsp-")
        _, server = await serve_ezsp_pty(han, faults=faults, symlink=os.path.join(tmpdir, "ttyEZSP0"),
                                         **ncp_options)
    else:
        raise ValueError(f"transport must be 'tcp' or 'pty', not {transport!r}")
    try:
        yield server.path, server
    finally:
        await server.close()
        if transport == "pty":
            with contextlib.suppress(OSError):
                os.rmdir(os.path.dirname(server.path))
        if own_han and han is not None and server.ncp.han_started:
            await han.stop()


__all__ = [
    "EzspServer",
    "NetworkSettings",
    "PtyEzspServer",
    "TcpEzspServer",
    "running_ezsp_emulator",
    "serve_ezsp",
    "serve_ezsp_pty",
]
