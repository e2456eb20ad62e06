"""A `SimHan` in a child process, and the thin radio driver that talks to it.

Why: with the simulated devices and air in the hub's own process, the hub's CPU time,
peak RSS and event-loop latency include the simulation. Put the HAN in a child
process and the hub process holds what a real hub holds: the OTA server, zigpy and a
radio driver reading frames from a byte stream, as bellows or zigpy-znp read a UART.

Hub side::

    han = await RemoteHan.spawn(specs, LinkModel.instant())  # child up, devices built
    app = RemoteSimControllerApplication.new_remote(han)      # the app owns (ends) the child
    await app.startup(auto_form=True)      # or: app = await start_remote_sim_app(specs)
    ...
    await app.shutdown()                   # stops the devices and ends the child

`RemoteHan` offers the part of the `SimHan` contract the sim app uses (``attach``,
``start``, ``stop``, ``send`` -> `DeliveryResult`, ``devices`` with ``ieee``, ``nwk``,
``spec``, ``online``, ``rx_on_when_idle``, ``leave``; ``coordinator_ieee`` /
``extended_pan_id`` reach the child with ``start``), plus ``report()`` (the devices'
counters and states, the child's CPU time and RSS) and ``events`` (the device events
named in ``report_events``, with the child's loop time: CLOCK_MONOTONIC, the same
clock as the hub's ``loop.time()`` on Linux).

Child side: ``python -m radios.sim.remote --fd N [--loop select|epoll]``, started by
`RemoteHan.spawn` with one end of a socket pair. It exits when that connection closes,
so a hub that dies (even by SIGKILL) leaves no simulation behind.

Wire format: frames of ``u32 length | u8 type | body`` (little-endian; length counts
the type byte and the body). Packets (SEND, UPLINK) are a fixed struct followed by the
APS payload, so a frame costs the hub a ``struct.unpack_from`` and a `ZigbeePacket`.
Control calls and their replies (rare) are JSON.
"""

from __future__ import annotations

import argparse
import asyncio
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
import contextlib
import dataclasses
import itertools
import json
import logging
import os
from pathlib import Path
import signal
import socket
import struct
import subprocess
import sys
import time
from typing import Any, Final

import zigpy.config as conf
import zigpy.exceptions
import zigpy.types as t

from .app import CONF_SIM, SIM_PATH_PREFIX, SimControllerApplication, SimNvram, link_from_config
from .han import DeliveryResult, SimHan, relays_for
from .link import LinkModel
from .spec import SimDeviceSpec

__all__ = [
    "RemoteDevice",
    "RemoteEvent",
    "RemoteHan",
    "RemoteHanError",
    "RemoteSimControllerApplication",
    "han_report",
    "start_remote_sim_app",
]

LOGGER = logging.getLogger(__name__)

# -- wire format -------------------------------------------------------------------------

HEADER: Final = struct.Struct("<IB")  # length of (type + body), type
ID: Final = struct.Struct("<I")
# flags, src mode, src address, dst mode, dst address, src_ep, dst_ep, tsn, profile,
# cluster, tx_options, radius, lqi, rssi; the APS payload follows.
PACKET: Final = struct.Struct("<BBQBQBBBHHBBBb")
RESULT: Final = struct.Struct("<IB")  # id, ok; the reason (UTF-8) follows
JOIN: Final = struct.Struct("<QH")  # ieee, nwk
STATE: Final = struct.Struct("<QB")  # ieee, online
EVENT: Final = struct.Struct("<Qd")  # ieee, loop time; JSON [kind, detail] follows

# hub -> child
T_SEND: Final = 1  # id + packet
T_CALL: Final = 2  # id + JSON {"op": ..., ...}
# child -> hub
T_UPLINK: Final = 16  # packet
T_RESULT: Final = 17  # the DeliveryResult of a SEND
T_REPLY: Final = 18  # id + JSON {"value": ...} or {"error": "..."}
T_JOIN: Final = 19
T_STATE: Final = 20  # a device's online flag changed (power off, leave, join)
T_EVENT: Final = 21  # a device event the hub asked for (report_events)

_F_SRC, _F_DST, _F_SRC_EP, _F_DST_EP, _F_LQI, _F_RSSI = 1, 2, 4, 8, 16, 32
_ADDR_TYPES: Final = {
    t.AddrMode.Group: t.Group,
    t.AddrMode.NWK: t.NWK,
    t.AddrMode.Broadcast: t.BroadcastAddress,
}
_MODES: Final = {int(m): m for m in t.AddrMode}

GONE: Final = "sim HAN process gone"


def _ieee_int(ieee: t.EUI64) -> int:
    return int.from_bytes(ieee.serialize(), "little")


def _ieee_from_int(value: int) -> t.EUI64:
    return t.EUI64(value.to_bytes(8, "little"))


def _frame(kind: int, body: bytes) -> bytes:
    return HEADER.pack(len(body) + 1, kind) + body


def encode_packet(packet: t.ZigbeePacket) -> bytes:
    """The fixed struct and the APS payload of one packet."""
    flags = 0
    src_mode = src_addr = dst_mode = dst_addr = 0
    src, dst = packet.src, packet.dst
    if src is not None:
        flags |= _F_SRC
        src_mode = int(src.addr_mode)
        src_addr = _ieee_int(src.address) if src_mode == t.AddrMode.IEEE else int(src.address)
    if dst is not None:
        flags |= _F_DST
        dst_mode = int(dst.addr_mode)
        dst_addr = _ieee_int(dst.address) if dst_mode == t.AddrMode.IEEE else int(dst.address)
    src_ep, dst_ep, lqi, rssi = packet.src_ep, packet.dst_ep, packet.lqi, packet.rssi
    if src_ep is not None:
        flags |= _F_SRC_EP
    if dst_ep is not None:
        flags |= _F_DST_EP
    if lqi is not None:
        flags |= _F_LQI
    if rssi is not None:
        flags |= _F_RSSI
    tx = packet.tx_options
    return PACKET.pack(
        flags,
        src_mode,
        src_addr,
        dst_mode,
        dst_addr,
        src_ep or 0,
        dst_ep or 0,
        packet.tsn,
        packet.profile_id,
        packet.cluster_id,
        tx.value if isinstance(tx, t.TransmitOptions) else int(tx),
        packet.radius,
        lqi or 0,
        rssi or 0,
    ) + packet.data.serialize()


def _new_address(mode: int, value: int) -> t.AddrModeAddress:
    addr_mode = _MODES[mode]
    if addr_mode == t.AddrMode.IEEE:
        return t.AddrModeAddress(addr_mode=addr_mode, address=_ieee_from_int(value))
    return t.AddrModeAddress(addr_mode=addr_mode, address=_ADDR_TYPES[addr_mode](value))


# A HAN has few addresses and every frame carries two: one instance per address
# serves every packet (zigpy reads packet addresses, never changes them), which saves
# two dataclass constructions with their type conversions per frame.
_ADDRESSES: dict[tuple[int, int], t.AddrModeAddress] = {}
_ADDRESSES_MAX: Final = 4096


def _address(mode: int, value: int) -> t.AddrModeAddress:
    key = (mode, value)
    cached = _ADDRESSES.get(key)
    if cached is None:
        if len(_ADDRESSES) >= _ADDRESSES_MAX:
            _ADDRESSES.clear()
        cached = _ADDRESSES[key] = _new_address(mode, value)
    return cached


# zigpy's integer types are immutable: one instance per value serves every packet,
# which saves the hub a constructor call per field per frame.
_U8: Final = tuple(t.uint8_t(i) for i in range(256))
_I8: Final = {i: t.int8s(i) for i in range(-128, 128)}
_TX: Final = {i: t.TransmitOptions(i) for i in range(8)}
_U16: dict[int, t.uint16_t] = {}


def _u16(value: int) -> t.uint16_t:
    cached = _U16.get(value)
    if cached is None:
        cached = _U16[value] = t.uint16_t(value)
    return cached


def decode_packet(body: bytes | bytearray | memoryview, offset: int = 0) -> t.ZigbeePacket:
    """The inverse of `encode_packet` (``offset``: where the struct starts)."""
    (flags, src_mode, src_addr, dst_mode, dst_addr, src_ep, dst_ep, tsn, profile, cluster,
     tx, radius, lqi, rssi) = PACKET.unpack_from(body, offset)
    return t.ZigbeePacket(
        src=_address(src_mode, src_addr) if flags & _F_SRC else None,
        src_ep=_U8[src_ep] if flags & _F_SRC_EP else None,
        dst=_address(dst_mode, dst_addr) if flags & _F_DST else None,
        dst_ep=_U8[dst_ep] if flags & _F_DST_EP else None,
        tsn=_U8[tsn],
        profile_id=_u16(profile),
        cluster_id=_u16(cluster),
        data=t.SerializableBytes(bytes(body[offset + PACKET.size :])),
        tx_options=_TX[tx] if tx in _TX else t.TransmitOptions(tx),
        radius=_U8[radius],
        lqi=_U8[lqi] if flags & _F_LQI else None,
        rssi=_I8[rssi] if flags & _F_RSSI else None,
    )


class _Framer:
    """Splits a byte stream into (type, body) frames; bodies are views of the bytes read."""

    def __init__(self) -> None:
        self._rest = b""

    def feed(self, data: bytes) -> list[tuple[int, memoryview]]:
        if self._rest:
            data = self._rest + data
        view = memoryview(data)
        out = []
        pos, size = 0, len(data)
        while size - pos >= HEADER.size:
            length, kind = HEADER.unpack_from(data, pos)
            end = pos + 4 + length
            if end > size:
                break
            out.append((kind, view[pos + HEADER.size : end]))
            pos = end
        self._rest = data[pos:] if pos < size else b""
        return out


class _Outbox:
    """Frames written in one pass of the event loop leave in one write: fewer syscalls
    on both ends, and fewer reads on the other when many devices answer at once, as a
    UART batches. ``transport_of`` gives the current transport (None: gone)."""

    def __init__(self, transport_of: Callable[[], asyncio.Transport | None]) -> None:
        self._transport_of = transport_of
        self._frames: list[bytes] = []

    def write(self, frame: bytes) -> None:
        if not self._frames:
            asyncio.get_running_loop().call_soon(self.flush)
        self._frames.append(frame)

    def flush(self) -> None:
        frames, self._frames = self._frames, []
        transport = self._transport_of()
        if frames and transport is not None and not transport.is_closing():
            transport.write(b"".join(frames))


def han_report(han: SimHan, event_counts: Mapping[t.EUI64, Counter[str]] | None = None) -> dict[str, Any]:
    """Plain facts about a HAN and its devices (JSON-able). Also for an in-process SimHan,
    so that callers read the same shape either way."""
    devices: dict[str, Any] = {}
    for ieee, d in han.devices.items():
        counts = event_counts.get(ieee) if event_counts is not None else Counter(e.kind for e in d.history)
        devices[str(ieee)] = {
            "nwk": int(d.nwk),
            "state": d.state,
            "online": d.online,
            "current_file_version": d.current_file_version,
            "file_offset": d.file_offset,
            "counters": d.counters.as_dict(),
            "radio": dataclasses.asdict(d.radio),
            "events": dict(counts or {}),
        }
    return {
        "devices": devices,
        "channel_busy_s": han.channel.busy_total,
        "frames_up": han.frames_up,
        "frames_down": han.frames_down,
        "pid": os.getpid(),
        "cpu_s": time.process_time(),
        "rss_kib": proc_status_kib("VmRSS"),
        "peak_rss_kib": proc_status_kib("VmHWM"),
    }


def proc_status_kib(name: str) -> int | None:
    """A kiB field of this process's /proc/self/status (VmRSS, VmHWM), or None."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith(name + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


# -- child side --------------------------------------------------------------------------


class _ChildProtocol(asyncio.Protocol):
    """The HAN's end of the connection: one per child process."""

    def __init__(self) -> None:
        loop = asyncio.get_running_loop()
        self.loop = loop
        self.han: SimHan | None = None
        self.transport: asyncio.Transport | None = None
        self.closed: asyncio.Future[None] = loop.create_future()
        self._framer = _Framer()
        self._outbox = _Outbox(lambda: self.transport)
        self._tasks: set[asyncio.Task[Any]] = set()
        self._report: frozenset[str] = frozenset()
        self._keep_history = True
        self._counts: dict[t.EUI64, Counter[str]] = {}

    # -- connection ---------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed.done():
            self.closed.set_result(None)

    def eof_received(self) -> bool:
        return False  # the hub closed its end: we are done

    def _write(self, frame: bytes) -> None:
        self._outbox.write(frame)

    def _spawn(self, coro: Any) -> None:
        task = self.loop.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def data_received(self, data: bytes) -> None:
        for kind, body in self._framer.feed(data):
            if kind == T_SEND:
                (ident,) = ID.unpack_from(body)
                self._spawn(self._send(ident, decode_packet(body, ID.size)))
            elif kind == T_CALL:
                (ident,) = ID.unpack_from(body)
                self._spawn(self._call(ident, json.loads(bytes(body[ID.size :]))))
            else:
                LOGGER.warning("sim HAN child: unknown frame type %d ignored", kind)

    async def shutdown(self) -> None:
        if self.han is not None:
            with contextlib.suppress(Exception):
                await self.han.stop()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=2)

    # -- requests -----------------------------------------------------------------------

    async def _send(self, ident: int, packet: t.ZigbeePacket) -> None:
        try:
            if self.han is None:
                result = DeliveryResult(False, "sim HAN not configured")
            else:
                result = await self.han.send(packet)
        except Exception as exc:  # the hub must hear of it rather than wait for ever
            LOGGER.exception("sim HAN child: send failed")
            result = DeliveryResult(False, f"sim HAN error: {exc!r}")
        self._write(_frame(T_RESULT, RESULT.pack(ident, result.ok) + result.reason.encode()))

    async def _call(self, ident: int, request: dict[str, Any]) -> None:
        try:
            reply = {"value": await self._do(request)}
        except Exception as exc:
            reply = {"error": f"{type(exc).__name__}: {exc}"}
        self._write(_frame(T_REPLY, ID.pack(ident) + json.dumps(reply, default=str).encode()))

    async def _do(self, request: dict[str, Any]) -> Any:
        op = request.get("op")
        if op == "config":
            return self._configure(request)
        han = self.han
        if han is None:
            raise RuntimeError(f"{op}: no HAN yet (send config first)")
        if op == "start":
            han.coordinator_ieee = t.EUI64.convert(request["coordinator_ieee"])
            han.extended_pan_id = t.ExtendedPanId.convert(request["extended_pan_id"])
            await han.start()
            return None
        if op == "stop":
            await han.stop()
            return None
        if op == "report":
            return han_report(han, self._counts)
        if op == "power_cycle":
            han.power_cycle(t.EUI64.convert(request["ieee"]), request.get("off_time"))
            return None
        if op == "leave":
            han.devices[t.EUI64.convert(request["ieee"])].leave(rejoin=bool(request.get("rejoin", False)))
            return None
        raise ValueError(f"unknown op {op!r}")

    def _configure(self, request: dict[str, Any]) -> dict[str, Any]:
        if self.han is not None:
            raise RuntimeError("config: already configured")
        specs = [SimDeviceSpec.from_dict(d) for d in request["specs"]]
        link = LinkModel(**request["link"]) if request.get("link") is not None else None
        self._report = frozenset(request.get("report_events", ()))
        self._keep_history = bool(request.get("keep_history", True))
        han = SimHan(specs, link)
        for device in han.devices.values():
            self._counts[device.ieee] = Counter()
            self._watch(device)
        han.attach(self._uplink, self._joined)
        self.han = han
        return {
            "pid": os.getpid(),
            "devices": [{"ieee": str(d.ieee), "nwk": int(d.nwk), "online": d.online} for d in han.devices.values()],
        }

    # -- the HAN's callbacks ------------------------------------------------------------

    def _uplink(self, packet: t.ZigbeePacket) -> None:
        self._write(_frame(T_UPLINK, encode_packet(packet)))

    def _joined(self, ieee: t.EUI64, nwk: t.NWK) -> None:
        self._write(_frame(T_JOIN, JOIN.pack(_ieee_int(ieee), nwk)))

    def _watch(self, device: Any) -> None:
        """Shadow the device's ``record`` (the OTA client takes it at power-on): count
        every event, forward the ones asked for, and report online changes."""
        original = device.record
        history = device.history
        counts = self._counts[device.ieee]
        key = _ieee_int(device.ieee)
        loop = self.loop

        def state_now() -> None:
            self._write(_frame(T_STATE, STATE.pack(key, device.online)))

        def record(kind: str, **detail: Any) -> None:
            original(kind, **detail)
            counts[kind] += 1
            if kind in self._report:
                body = EVENT.pack(key, loop.time()) + json.dumps([kind, detail], default=str).encode()
                self._write(_frame(T_EVENT, body))
            if kind in ("join", "power_off", "leave"):
                loop.call_soon(state_now)  # power_off records before the flags change
            if not self._keep_history:
                history.clear()  # nobody reads it here; a long run would grow it per block

        device.record = record


async def _serve(sock: socket.socket) -> None:
    loop = asyncio.get_running_loop()
    _, protocol = await loop.create_unix_connection(_ChildProtocol, sock=sock)
    try:
        await protocol.closed
    finally:
        await protocol.shutdown()


def _new_loop(kind: str) -> asyncio.AbstractEventLoop:
    import selectors

    if kind == "select":
        # The simulated link is timed by the loop: select(2) wakes within microseconds,
        # epoll rounds its timeout up to whole milliseconds.
        return asyncio.SelectorEventLoop(selectors.SelectSelector())
    if kind == "epoll":
        return asyncio.new_event_loop()
    raise ValueError(f"loop {kind!r}: select or epoll")


def child_main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m radios.sim.remote", description="a SimHan served over an inherited socket")
    ap.add_argument("--fd", type=int, required=True, help="connected AF_UNIX stream socket")
    ap.add_argument("--loop", choices=("select", "epoll"), default="select")
    ap.add_argument("--log-level", default="WARNING")
    args = ap.parse_args(argv)
    # Ctrl-C in a terminal reaches the whole process group: the hub decides when the
    # simulation ends (by closing the connection), not the terminal.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    logging.basicConfig(level=args.log_level, format="sim-han[%(process)d] %(levelname)s %(name)s: %(message)s")
    sock = socket.socket(fileno=args.fd)
    with asyncio.Runner(loop_factory=lambda: _new_loop(args.loop)) as runner:
        runner.run(_serve(sock))
    return 0


# -- hub side ----------------------------------------------------------------------------


class RemoteHanError(RuntimeError):
    """The child HAN refused a call, or its process is gone."""


@dataclasses.dataclass(frozen=True)
class RemoteEvent:
    """A device event reported by the child (``time``: its loop time, CLOCK_MONOTONIC)."""

    time: float
    ieee: t.EUI64
    kind: str
    detail: dict[str, Any]


class RemoteDevice:
    """The hub's view of one simulated device (what the sim app reads)."""

    def __init__(self, han: RemoteHan, spec: SimDeviceSpec, nwk: int, online: bool) -> None:
        self._han = han
        self.spec = spec
        self.ieee: t.EUI64 = spec.ieee
        self.nwk: t.NWK = t.NWK(nwk)
        self.online = online

    def __repr__(self) -> str:
        return f"<RemoteDevice {self.spec.kind} {self.ieee} nwk=0x{self.nwk:04X} {'online' if self.online else 'offline'}>"

    @property
    def rx_on_when_idle(self) -> bool:
        return not self.spec.is_sleepy

    def leave(self, rejoin: bool = False) -> None:
        self._han._fire("leave", ieee=str(self.ieee), rejoin=rejoin)

    def power_cycle(self, off_time: float | None = None) -> None:
        self._han.power_cycle(self.ieee, off_time)


class _HubProtocol(asyncio.Protocol):
    def __init__(self, han: RemoteHan) -> None:
        self._han = han
        self._framer = _Framer()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        pass

    def data_received(self, data: bytes) -> None:
        # Each frame goes to its handler as soon as it is parsed (uplinks straight into
        # zigpy's packet_received), as a radio library does with its serial frames.
        han = self._han
        han.reads += 1
        for kind, body in self._framer.feed(data):
            if kind == T_UPLINK:
                han._on_uplink(body)
            elif kind == T_RESULT:
                han._on_result(body)
            else:
                han._on_control(kind, body)

    def eof_received(self) -> bool:
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self._han._on_lost(exc)


_OK: Final = DeliveryResult(True)


class RemoteHan:
    """A `SimHan` in a child process (see the module docstring)."""

    def __init__(
        self,
        specs: Sequence[SimDeviceSpec],
        link: LinkModel | None = None,
        *,
        report_events: Sequence[str] = (),
        keep_history: bool = True,
        child_loop: str = "select",
        child_log_level: str = "WARNING",
    ) -> None:
        self._specs = list(specs)
        self.link = link
        self.report_events = tuple(report_events)
        self.keep_history = keep_history
        self.child_loop = child_loop
        self.child_log_level = child_log_level
        self.coordinator_ieee: t.EUI64 = t.EUI64.convert("00:00:00:00:00:00:00:00")
        self.extended_pan_id: t.ExtendedPanId = t.ExtendedPanId.convert("00:00:00:00:00:00:00:00")
        self.events: list[RemoteEvent] = []
        self.on_event: Callable[[RemoteEvent], None] | None = None
        #: Called once if the connection to the child drops while not closing.
        self.on_lost: Callable[[Exception], None] | None = None
        self.pid: int | None = None
        self._devices: dict[t.EUI64, RemoteDevice] = {}
        self._by_key: dict[int, RemoteDevice] = {}
        self._by_nwk: dict[int, RemoteDevice] = {}
        self._uplink: Callable[[t.ZigbeePacket], None] | None = None
        self._on_join: Callable[[t.EUI64, t.NWK], None] | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._transport: asyncio.Transport | None = None
        self._ids = itertools.count(1)
        self._sends: dict[int, asyncio.Future[DeliveryResult]] = {}
        self._calls: dict[int, asyncio.Future[Any]] = {}
        self._fired: set[asyncio.Task[Any]] = set()
        self._waiters: list[tuple[Callable[[RemoteEvent], bool], asyncio.Future[RemoteEvent]]] = []
        self._gone: str | None = "not started"
        self._closing = False
        self._exited: asyncio.Future[int] | None = None
        self._pidfd: int | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._started = False
        self._outbox = _Outbox(lambda: self._transport)
        #: Reads from the child's socket, and the packets (uplinks) they carried.
        self.reads = 0
        self.uplinks = 0

    # -- lifecycle ----------------------------------------------------------------------

    @classmethod
    async def spawn(cls, specs: Sequence[SimDeviceSpec], link: LinkModel | None = None, *, timeout: float = 30.0,
                    **options: Any) -> RemoteHan:
        """Start the child process and build the HAN in it (devices not powered yet)."""
        han = cls(specs, link, **options)
        await han.open(timeout=timeout)
        return han

    async def open(self, *, timeout: float = 30.0) -> None:
        if self._proc is not None:
            raise RemoteHanError("already opened")
        loop = asyncio.get_running_loop()
        self._loop = loop
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        env = dict(os.environ)
        # The child imports the same radios package as this process, whatever the cwd.
        root = str(Path(__file__).resolve().parents[2])
        env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        try:
            self._proc = subprocess.Popen(
                [sys.executable, "-m", "radios.sim.remote", "--fd", str(theirs.fileno()),
                 "--loop", self.child_loop, "--log-level", self.child_log_level],
                pass_fds=(theirs.fileno(),),
                stdin=subprocess.DEVNULL,
                env=env,
            )
        except BaseException:
            ours.close()
            raise
        finally:
            theirs.close()
        self.pid = self._proc.pid
        self._exited = loop.create_future()
        self._watch_exit()
        self._gone = None
        try:
            self._transport, _ = await loop.create_unix_connection(lambda: _HubProtocol(self), sock=ours)
            hello = await asyncio.wait_for(
                self._call(
                    "config",
                    specs=[s.to_dict() for s in self._specs],
                    link=None if self.link is None else dataclasses.asdict(self.link),
                    report_events=list(self.report_events),
                    keep_history=self.keep_history,
                ),
                timeout,
            )
        except BaseException:
            if self._transport is None:
                ours.close()  # the transport would have owned it
            self._kill()
            raise
        by_ieee = {d["ieee"]: d for d in hello["devices"]}
        for spec in self._specs:
            info = by_ieee[str(spec.ieee)]
            device = RemoteDevice(self, spec, info["nwk"], info["online"])
            self._devices[spec.ieee] = device
            self._by_key[_ieee_int(spec.ieee)] = device
            self._by_nwk[int(device.nwk)] = device

    def _watch_exit(self) -> None:
        # No thread waits on the child: a pidfd becomes readable when it exits (Linux
        # 5.3+); elsewhere poll from the loop.
        assert self._proc is not None and self._loop is not None
        try:
            self._pidfd = os.pidfd_open(self._proc.pid)
            self._loop.add_reader(self._pidfd, self._check_exit)
        except (AttributeError, OSError, NotImplementedError):
            self._pidfd = None
            self._loop.call_later(0.1, self._poll_exit)

    def _poll_exit(self) -> None:
        if not self._check_exit() and self._loop is not None and not self._loop.is_closed():
            self._loop.call_later(0.1, self._poll_exit)

    def _check_exit(self) -> bool:
        if self._proc is None or self._proc.poll() is None:
            return False
        if self._pidfd is not None:
            with contextlib.suppress(Exception):
                assert self._loop is not None
                self._loop.remove_reader(self._pidfd)
            os.close(self._pidfd)
            self._pidfd = None
        if self._exited is not None and not self._exited.done():
            self._exited.set_result(self._proc.returncode)
        return True

    @property
    def returncode(self) -> int | None:
        return None if self._proc is None else self._proc.poll()

    @property
    def connected(self) -> bool:
        return self._gone is None

    def _kill(self) -> None:
        """End the child now (cancellation, a failed start): closing our end is enough
        for a healthy child; SIGKILL makes sure of one that is not."""
        self._closing = True
        self._close_transport()
        proc = self._proc
        if proc is not None and proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=2)  # reaps at once after SIGKILL
        self._check_exit()
        self._on_lost(None)

    def _close_transport(self) -> None:
        if self._transport is not None:
            self._outbox.flush()  # what was written before close still goes
            self._transport.close()

    async def close(self, timeout: float = 5.0) -> None:
        """Close the connection; the child stops its devices and exits. Idempotent."""
        if self._proc is None:
            return
        self._closing = True
        self._close_transport()
        assert self._exited is not None
        try:
            await asyncio.wait_for(asyncio.shield(self._exited), timeout)
        except TimeoutError:
            LOGGER.warning("sim HAN process %s did not exit within %s s: killed", self.pid, timeout)
            self._kill()
        except BaseException:
            self._kill()
            raise
        finally:
            self._check_exit()

    async def __aenter__(self) -> RemoteHan:
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.close()

    # -- the SimHan contract ------------------------------------------------------------

    @property
    def devices(self) -> Mapping[t.EUI64, RemoteDevice]:
        return self._devices

    def device_by_nwk(self, nwk: int) -> RemoteDevice | None:
        return self._by_nwk.get(nwk)

    def relays_of(self, nwk: int) -> tuple[int, ...]:
        """The routers the child's HAN puts between the coordinator and ``nwk`` (SimHan.relays_of)."""
        device = self._by_nwk.get(int(nwk))
        return () if device is None else relays_for(self._by_nwk, int(nwk), device.spec.hops)

    def specs(self) -> list[SimDeviceSpec]:
        return list(self._specs)

    def attach(self, uplink: Callable[[t.ZigbeePacket], None], on_join: Callable[[t.EUI64, t.NWK], None] | None = None) -> None:
        self._uplink = uplink
        self._on_join = on_join

    async def start(self) -> None:
        """Power the devices up (with the coordinator's IEEE and extended PAN ID)."""
        if self._started:
            return
        await self._call("start", coordinator_ieee=str(self.coordinator_ieee), extended_pan_id=str(self.extended_pan_id))
        self._started = True

    async def stop(self, timeout: float = 5.0) -> None:
        """Stop the devices (the child keeps running; `close` ends it). A child that is
        gone has nothing left to stop."""
        self._started = False
        if self._gone is not None:
            return
        try:
            await asyncio.wait_for(self._call("stop"), timeout)
        except RemoteHanError:
            if self._gone is None:
                raise
        except TimeoutError:
            LOGGER.warning("sim HAN process %s: stop not answered in %s s", self.pid, timeout)

    async def send(self, packet: t.ZigbeePacket) -> DeliveryResult:
        if self._gone is not None:
            return DeliveryResult(False, f"{GONE} ({self._gone})")
        assert self._transport is not None and self._loop is not None
        ident = next(self._ids) & 0xFFFFFFFF
        fut: asyncio.Future[DeliveryResult] = self._loop.create_future()
        self._sends[ident] = fut
        body = ID.pack(ident) + encode_packet(packet)
        self._outbox.write(HEADER.pack(len(body) + 1, T_SEND) + body)
        try:
            return await fut
        finally:
            self._sends.pop(ident, None)

    def power_cycle(self, ieee: t.EUI64, off_time: float | None = None) -> None:
        self._fire("power_cycle", ieee=str(ieee), off_time=off_time)

    # -- extras -------------------------------------------------------------------------

    async def report(self, timeout: float = 10.0) -> dict[str, Any]:
        """`han_report` of the child's HAN: device states and counters, event counts,
        channel busy time, the child's CPU time and RSS."""
        return await asyncio.wait_for(self._call("report"), timeout)

    async def wait_event(self, ieee: t.EUI64 | None, kind: str, timeout: float, *, since: int = 0) -> RemoteEvent:
        """The first reported event of ``kind`` (of device ``ieee``, or any) at index
        >= ``since`` of ``events``. Only kinds in ``report_events`` are reported."""
        if kind not in self.report_events:
            raise ValueError(f"{kind!r} is not reported: spawn with report_events including it")

        def match(e: RemoteEvent) -> bool:
            return e.kind == kind and (ieee is None or e.ieee == ieee)

        for e in self.events[since:]:
            if match(e):
                return e
        assert self._loop is not None
        fut: asyncio.Future[RemoteEvent] = self._loop.create_future()
        entry = (match, fut)
        self._waiters.append(entry)
        try:
            async with asyncio.timeout(timeout):
                return await fut
        finally:
            with contextlib.suppress(ValueError):
                self._waiters.remove(entry)

    # -- internals ----------------------------------------------------------------------

    async def _call(self, op: str, **args: Any) -> Any:
        if self._gone is not None:
            raise RemoteHanError(f"{op}: {GONE} ({self._gone})")
        assert self._transport is not None and self._loop is not None
        ident = next(self._ids) & 0xFFFFFFFF
        fut: asyncio.Future[Any] = self._loop.create_future()
        self._calls[ident] = fut
        self._outbox.write(_frame(T_CALL, ID.pack(ident) + json.dumps({"op": op, **args}).encode()))
        try:
            reply = await fut
        finally:
            self._calls.pop(ident, None)
        if "error" in reply:
            raise RemoteHanError(f"{op}: {reply['error']}")
        return reply.get("value")

    def _fire(self, op: str, **args: Any) -> None:
        """A call whose answer nobody waits for (zigpy's force_remove is synchronous)."""
        assert self._loop is not None
        task = self._loop.create_task(self._call(op, **args))
        self._fired.add(task)

        def done(task: asyncio.Task[Any]) -> None:
            self._fired.discard(task)
            if not task.cancelled() and task.exception() is not None:
                LOGGER.warning("sim HAN %s failed: %s", op, task.exception())

        task.add_done_callback(done)

    def _on_uplink(self, body: memoryview) -> None:
        self.uplinks += 1
        uplink = self._uplink
        if uplink is None:
            return
        packet = decode_packet(body)
        try:
            uplink(packet)
        except Exception:  # the coordinator's bug must not kill the connection
            LOGGER.exception("RemoteHan: uplink callback failed for %r", packet)

    def _on_result(self, body: memoryview) -> None:
        ident, ok = RESULT.unpack_from(body)
        fut = self._sends.get(ident)
        if fut is None or fut.done():
            return  # the sender gave up (cancelled) before the answer
        fut.set_result(_OK if ok else DeliveryResult(False, bytes(body[RESULT.size :]).decode(errors="replace")))

    def _on_control(self, kind: int, body: memoryview) -> None:
        if kind == T_REPLY:
            (ident,) = ID.unpack_from(body)
            fut = self._calls.get(ident)
            if fut is not None and not fut.done():
                fut.set_result(json.loads(bytes(body[ID.size :])))
        elif kind == T_JOIN:
            key, nwk = JOIN.unpack_from(body)
            device = self._by_key.get(key)
            ieee = device.ieee if device is not None else _ieee_from_int(key)
            if device is not None:
                device.online = True
                if device.nwk != nwk:
                    self._by_nwk.pop(int(device.nwk), None)
                    device.nwk = t.NWK(nwk)
                    self._by_nwk[nwk] = device
            if self._on_join is not None:
                try:
                    self._on_join(ieee, t.NWK(nwk))
                except Exception:
                    LOGGER.exception("RemoteHan: on_join callback failed for %s", ieee)
        elif kind == T_STATE:
            key, online = STATE.unpack_from(body)
            device = self._by_key.get(key)
            if device is not None:
                device.online = bool(online)
        elif kind == T_EVENT:
            key, when = EVENT.unpack_from(body)
            event_kind, detail = json.loads(bytes(body[EVENT.size :]))
            device = self._by_key.get(key)
            event = RemoteEvent(when, device.ieee if device is not None else _ieee_from_int(key), event_kind, detail)
            self.events.append(event)
            if self.on_event is not None:
                self.on_event(event)
            for match, fut in list(self._waiters):
                if not fut.done() and match(event):
                    fut.set_result(event)
        else:
            LOGGER.warning("RemoteHan: unknown frame type %d ignored", kind)

    def _on_lost(self, exc: Exception | None) -> None:
        if self._gone is not None:
            return
        rc = self.returncode
        self._gone = "closed" if self._closing else (
            f"connection lost: {exc!r}" if exc is not None else f"child exited{'' if rc is None else f' with code {rc}'}"
        )
        self._transport = None
        for fut in self._sends.values():
            if not fut.done():
                fut.set_result(DeliveryResult(False, f"{GONE} ({self._gone})"))
        for fut in self._calls.values():
            if not fut.done():
                fut.set_exception(RemoteHanError(f"{GONE} ({self._gone})"))
        for _, fut in self._waiters:
            if not fut.done():
                fut.set_exception(RemoteHanError(f"{GONE} ({self._gone})"))
        for device in self._devices.values():
            device.online = False
        if not self._closing and self.on_lost is not None:
            try:
                self.on_lost(RemoteHanError(f"{GONE} ({self._gone})"))
            except Exception:
                LOGGER.exception("RemoteHan: on_lost callback failed")


# -- the zigpy application ---------------------------------------------------------------


class RemoteSimControllerApplication(SimControllerApplication):
    """`SimControllerApplication` over a `RemoteHan`.

    Given ``han=``, the app uses it and closes it on shutdown only with
    ``owns_han=True``; built from a config (``sim`` table as for the sim app), it spawns
    its own child on ``connect()`` and ends it on ``disconnect()``. A lost child is a
    lost radio: sends fail with DeliveryError and zigpy hears ``connection_lost``.
    """

    @classmethod
    def new_remote(
        cls,
        han: RemoteHan,
        *,
        owns_han: bool = True,
        database_path: str | None = None,
        nvram: SimNvram | None = None,
        config: Mapping[str, Any] | None = None,
    ) -> RemoteSimControllerApplication:
        app = cls.new_sim(han.specs(), han.link, database_path, han=han, nvram=nvram, config=config)  # type: ignore[arg-type]
        app._owns_han = owns_han  # new_sim marks a given han as not ours
        return app  # type: ignore[return-value]

    async def connect(self) -> None:
        path = str(self._config[conf.CONF_DEVICE][conf.CONF_DEVICE_PATH])
        if self._han is None:
            if not path.startswith(SIM_PATH_PREFIX):
                raise zigpy.exceptions.TransientConnectionError(f"not a sim radio path: {path!r} (expected sim://)")
            sim = self._config.get(CONF_SIM) or {}
            specs = [SimDeviceSpec.from_dict(d) for d in sim.get("devices", [])]
            self._han = await RemoteHan.spawn(specs, link_from_config(sim.get("link")))  # type: ignore[assignment]
            self._owns_han = True
        await super().connect()
        han = self._han
        if isinstance(han, RemoteHan):
            han.on_lost = self._han_lost

    def _han_lost(self, exc: Exception) -> None:
        self._connected = False  # send_packet now fails at once; the watchdog notices
        self.connection_lost(exc)

    async def disconnect(self) -> None:
        han = self._han
        try:
            await super().disconnect()
        finally:
            if self._owns_han and isinstance(han, RemoteHan):
                await han.close()


async def start_remote_sim_app(
    specs: Sequence[SimDeviceSpec],
    link: LinkModel | None = None,
    *,
    database_path: str | None = None,
    auto_form: bool = True,
    timeout: float = 30.0,
    nvram: SimNvram | None = None,
    config: Mapping[str, Any] | None = None,
    **remote: Any,
) -> RemoteSimControllerApplication:
    """Like `start_sim_app`, with the HAN in a child process that the app owns (ended by
    ``app.shutdown()``, or here if the start fails or is cancelled). ``remote``: options
    of `RemoteHan` (report_events, keep_history, child_loop)."""
    han = await RemoteHan.spawn(specs, link, timeout=timeout, **remote)
    app: RemoteSimControllerApplication | None = None
    try:
        app = RemoteSimControllerApplication.new_remote(han, database_path=database_path, nvram=nvram, config=config)
        await app._load_db()
        await app.startup(auto_form=auto_form)
        await app.wait_initialized(timeout=timeout)
    except BaseException:
        try:
            if app is not None:
                await app.shutdown()
        finally:
            await han.close()
        raise
    return app


if __name__ == "__main__":
    sys.exit(child_main())
