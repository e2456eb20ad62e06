"""The daemon's GBCS tunnels (issue 13): wiring only, the protocol is gateway/tunnel.

One ``TunnelService`` for the daemon's life: started when the radio first comes up,
rebound to each new application after a reconnect (every tunnel asked for again),
closed (CloseTunnel) when the daemon stops.

HCALCS activation as a real hub does it: once the gate has verified a CS06 (a refused
command is never forwarded), ``carry_out`` acts on the device's `activation` config:
"tunnel" forwards the unchanged command bytes over the tunnel and leaves the hold as
it is (every Upgrade End Request still gets 0xFFFFFFFF; the device releases itself),
"upgrade-end" releases with the Upgrade End Response as before, "both" does both.
What comes back is seen by ``on_message`` listeners (the message store plugs in with
``add_listener``) and audited (gbcs.tunnel: direction, device, length, SHA-256).

Listeners see a forwarded command ("out") when it is handed to the tunnel, before the
device has it, so a kill between the send and the device's response loses no message
from the store (a forward that then fails is audited, gbcs.forward_failed); the
device's acknowledgement is the gbcs.tunnel "out" record. Messages from the device
("in") as they arrive. Crash points (gateway/crashpoint.py TUNNEL_POINTS): the command
kept but not yet sent, and acknowledged with its response not yet in. After a restart
``reforward`` sends each kept command no response answers again, once (see there).

``send_command`` is `han-ota gbcs send`: a CS06 goes through the gate first (and is
forwarded whatever the device's `activation` says, the user asked for it); any other
GBCS command (CS08 Read Firmware Version, say) is checked to be a well-formed command
for that device (its MAC, if ciphered, is the device's to check) and forwarded. The
answer is the first message the device sends back.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections import deque
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

import zigpy.types as zt

from eui64 import Eui64
from gateway.config import Config
from gateway.crashpoint import crashpoint
from gateway.gbcs.codes import CraFlag
from gateway.gbcs.command import parse_command
from gateway.gbcs.errors import GbcsError
from gateway.se.security import SecurityRegistry
from gateway.tunnel.service import OnMessage, TunnelSendError, TunnelService

if TYPE_CHECKING:
    from gateway.engine import Engine

LOGGER = logging.getLogger("han_ota.tunnels")

#: How long `gbcs send` waits for the device's answer by default.
RESPONSE_TIMEOUT_S = 60.0
#: How long a re-forward after a restart waits for the device's tunnel and acknowledgement.
REFORWARD_TIMEOUT_S = 300.0
RECENT = 200

Audit = Callable[..., object]


class CommandRefused(ValueError):
    """`gbcs send` will not forward this command; the message says why."""


class DaemonTunnels:
    def __init__(self, config: Config, registry: SecurityRegistry, *, audit: Audit | None = None) -> None:
        self.config = config
        self.registry = registry
        self._audit = audit
        self.service: TunnelService | None = None
        #: The daemon's engine (set when it is made): a tunnel-only activation tells it.
        self.engine: Engine | None = None
        self._listeners: list[OnMessage] = []
        self._forwards: dict[zt.EUI64, asyncio.Task[bytes | None]] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        #: The last messages carried, newest last (direction, device, hex).
        self.recent: deque[dict[str, Any]] = deque(maxlen=RECENT)

    # ------------------------------------------------------------------ lifecycle

    async def radio_up(self, app: Any) -> None:
        if self.service is None:
            self.service = TunnelService(app, self.registry, on_message=self._on_message)
            await self.service.start()
        else:
            await self.service.rebind(app)

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        if self.service is not None:
            try:
                await self.service.close()
            except Exception:  # shutting down: nothing of it is needed any more
                LOGGER.debug("closing the tunnel service failed", exc_info=True)
            self.service = None

    def add_listener(self, listener: OnMessage) -> Callable[[], None]:
        """``listener(direction, ieee, data)`` for every GBCS message carried."""
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener) if listener in self._listeners else None

    def _on_message(self, direction: str, ieee: zt.EUI64, data: bytes) -> None:
        """The service's report: a message in, or one out acknowledged by the device."""
        if self._audit is not None:
            self._audit("gbcs.tunnel", ieee, direction=direction, length=len(data), sha256=hashlib.sha256(data).hexdigest())
        if direction == "out":
            crashpoint("tunnel.acknowledged")  # the device has it; its response is not in yet
            return  # the listeners had it when it was handed over (_forward)
        self._tell(direction, ieee, data)

    def _tell(self, direction: str, ieee: zt.EUI64, data: bytes) -> None:
        self.recent.append({"direction": direction, "device": str(ieee), "hex": data.hex().upper()})
        for listener in list(self._listeners):
            try:
                listener(direction, ieee, data)
            except Exception:
                LOGGER.exception("a GBCS message listener failed")

    # ------------------------------------------------------------------ activation

    def _activation(self, ieee: zt.EUI64) -> str:
        device = self.config.device(Eui64.from_air(ieee))
        return device.activation if device is not None else "upgrade-end"

    def carry_out(self, job: Any, command_hex: str, release: Callable[[], None], carried_out: Callable[[], None]) -> None:
        """A CS06 the gate accepted for a held device: release it (``release``, the
        activation service's own act) and/or forward it, as its `activation` says.
        Without a release the kept decision is ``carried_out`` at once: a restart must
        not release the device by Upgrade End Response after all."""
        mode = self._activation(job.ieee)
        if mode in ("upgrade-end", "both"):
            release()
        else:
            carried_out()
            LOGGER.info("%s job=%s: activation = \"tunnel\": the hold stays, the device releases itself", job.ieee, job.id)
            try:  # before the forward: its reporting the new version is then the confirmation
                if self.engine is not None:
                    self.engine.release_by_command(job.ieee, why="CS06 verified, forwarded over the tunnel")
            except Exception as exc:  # not held any more: nothing to confirm, the forward still goes
                LOGGER.warning("%s job=%s: not marked as released by its command: %s", job.ieee, job.id, exc)
        if mode in ("tunnel", "both"):
            self.forward(job.ieee, bytes.fromhex(command_hex))

    def forward(self, ieee: zt.EUI64, command: bytes, timeout: float = RESPONSE_TIMEOUT_S) -> asyncio.Task[bytes | None]:
        """Send ``command`` unchanged over the device's tunnel; the task's result is the
        device's first message back (None if none came in ``timeout``)."""
        task = asyncio.get_running_loop().create_task(self._forward(ieee, command, timeout))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        # Logged and audited in _forward; a forward nobody awaits must not warn again.
        task.add_done_callback(lambda t: t.cancelled() or t.exception())
        self._forwards[ieee] = task
        return task

    async def _forward(self, ieee: zt.EUI64, command: bytes, timeout: float) -> bytes | None:
        if self.service is None:
            raise TunnelSendError("the radio is not up: no tunnel")
        self._tell("out", ieee, command)  # kept before it leaves: see the module docstring
        crashpoint("tunnel.recorded")
        try:
            return await self.service.request(ieee, command, timeout)
        except TunnelSendError as exc:
            LOGGER.warning("%s: the command was not forwarded: %s", ieee, exc)
            if self._audit is not None:
                self._audit("gbcs.forward_failed", ieee, length=len(command), reason=str(exc))
            raise

    def reforward(self, pending: Iterable[Any], done: Callable[[int], None], timeout: float = REFORWARD_TIMEOUT_S) -> None:
        """After a restart: send each kept command in ``pending`` (rows of
        ``HubMessages.unanswered_forwards``) again, unchanged, once its tunnel is open. A real
        device outlives the daemon, and a command forwarded before a kill may never have
        reached it (or its response was lost with the daemon: the device refuses the
        replayed counter). No second "out" row: the kept one is the message; ``done(id)``
        notes the device's acknowledgement in it, so a later restart does not send it again.
        A re-forward that fails is audited (gbcs.reforward_failed) and tried at the next start."""
        for row in pending:
            ieee = zt.EUI64(Eui64.parse(row.device).air)
            task = asyncio.get_running_loop().create_task(self._reforward(ieee, row, done, timeout))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _reforward(self, ieee: zt.EUI64, row: Any, done: Callable[[int], None], timeout: float) -> None:
        data = bytes(row.data)
        LOGGER.warning("%s: command %s (counter %s) was forwarded before a stop and never answered: forwarding it again", ieee, row.message_id, row.counter)
        if self._audit is not None:
            self._audit("gbcs.reforward", ieee, message_id=row.message_id, length=len(data), sha256=hashlib.sha256(data).hexdigest())
        try:
            if self.service is None:
                raise TunnelSendError("the radio is not up: no tunnel")
            await self.service.send(ieee, data, timeout)
        except TunnelSendError as exc:
            LOGGER.warning("%s: command %s was not forwarded again: %s", ieee, row.message_id, exc)
            if self._audit is not None:
                self._audit("gbcs.reforward_failed", ieee, message_id=row.message_id, reason=str(exc))
            return
        try:
            done(row.message_id)
        except Exception:  # the store: logged; the next start sends it again, which the device refuses as a replay
            LOGGER.exception("%s: the re-forward of command %s could not be noted", ieee, row.message_id)

    async def send_command(self, activation: Any, raw: bytes, device: zt.EUI64 | None, timeout: float = RESPONSE_TIMEOUT_S) -> dict[str, Any]:
        """`han-ota gbcs send`: see the module docstring. Raises ``CommandRefused``."""
        try:
            cmd = parse_command(raw)
        except GbcsError as exc:
            raise CommandRefused(f"not a GBCS command: {exc}") from None
        if cmd.apdu.cra_flag is not CraFlag.COMMAND:
            raise CommandRefused(f"a {cmd.apdu.cra_flag.name.lower()}, not a command: only commands are sent to a device")
        recipient = zt.EUI64(Eui64(cmd.recipient.raw).air)
        ieee = recipient if device is None else device
        if recipient != ieee:
            raise CommandRefused(f"the command is addressed to {cmd.recipient}, not to {Eui64.from_air(ieee)}")
        out: dict[str, Any] = {"device": str(ieee), "message_code": f"0x{int(cmd.message_code):04X}", "verdict": None}
        task: asyncio.Task[bytes | None] | None = None
        if cmd.activation is not None:
            before = self._forwards.get(ieee)
            result = activation.submit(raw, device=ieee)
            out["verdict"] = result.to_dict()
            if not result.accepted:
                return {**out, "forwarded": False, "error": result.message, "response": None}
            task = self._forwards.get(ieee)
            if task is before:
                task = None  # its `activation` does not forward: gbcs send does, as asked
        if task is None:
            task = self.forward(ieee, raw, timeout)
        try:
            response = await asyncio.shield(task)
        except TunnelSendError as exc:
            return {**out, "forwarded": False, "error": str(exc), "response": None}
        return {**out, "forwarded": True, "error": None, "response": None if response is None else response.hex().upper(), **_describe(response)}

    def state(self, ieee: zt.EUI64) -> dict[str, Any]:
        return self.service.tunnel_state(ieee) if self.service is not None else {"state": "none"}


def _describe(response: bytes | None) -> dict[str, Any]:
    if response is None:
        return {"response_message_code": None}
    try:
        parsed = parse_command(response)
    except GbcsError:
        return {"response_message_code": None}
    return {"response_message_code": f"0x{int(parsed.message_code):04X}"}


__all__ = ["CommandRefused", "DaemonTunnels", "RESPONSE_TIMEOUT_S"]
