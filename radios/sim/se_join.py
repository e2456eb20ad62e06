"""A simulated SE device's registration after joining: find the Key Establishment
server, run CBKE as initiator, hand the link key to the device.

This is the asyncio side of key_establishment.py's sans-I/O `KeyEstablishmentClient`,
one `SeJoin` per boot of a ``security=se`` device that holds no APS link key (device.py
starts it after the join, and drops it with the device's RAM at power off).

Theory of operation
===================

1. **Credentials.** ``credentials_for`` (se_identity.py) checks the spec's key
   against its certificate by ECQV (and, for ``unknown-issuer``, makes a rogue CA):
   curve arithmetic, so it runs in a thread like every step below.
2. **Discovery.** ZDO Match_Desc_req to the coordinator (NWK 0x0000) for profile
   0x0109 with input (server) cluster 0x0800. zigpy answers every Match_Desc_req that
   reaches the host, with an empty list for any profile but HA (han_services.py), and
   the coordinator firmware answers from its registered endpoints: the first answer
   listing an endpoint wins, empty ones are counted and ignored. No such answer in
   ``ke_server_wait`` seconds: the request is sent again, three requests in all;
   then "ke_no_server" and the device leaves (``Host.se_failed``).
3. **Key establishment.** The client's inputs (start, the server's commands, its
   Default Responses, the timer) go through one queue, one at a time: each handle
   call runs in a worker thread (``asyncio.to_thread``) because a step costs 0.1 s
   (suite 1) to 0.5 s (suite 2) of arithmetic, and the event loop it would block
   carries the whole simulated HAN and, in tests and the one-process daemon, the hub.
   The client's own records are collected during the call and replayed on the loop
   afterwards (a device's history and waiters are not thread-safe). The client's
   timer is a ``loop.call_at`` that queues a timer input.
4. **Outcome.** Established: ``Host.se_established`` (the device takes the key, and
   only then starts its OTA client). Leave (attempts exhausted): ``Host.se_failed``.
   ``ke_timeout`` bounds the whole registration: a client that fell silent
   (``cbke_fail=silent``) never ends by itself, and a device that cannot register in
   that time gives up and leaves too.

Choices: a device that fails leaves *without* rejoining (it stays off the network
until it is power cycled or started again, so a lab sees one failure per boot rather
than a device cycling through joins); SE leaves rejoin policy to the product. Key
Establishment frames go on the Smart Energy profile from the device's endpoint
whatever its ``profile`` (an HA endpoint is only there so zigpy can interview it).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
import contextlib
from dataclasses import dataclass
import logging
import random
from typing import Any, Final, Protocol

from .key_establishment import (
    ClientState,
    Established,
    InitiatorConfig,
    KeyEstablishmentClient,
    Leave,
    Refuse,
    SendCommand,
)
from .se_keys import Credentials

__all__ = ["DISCOVERY_REQUESTS", "Host", "SeJoin", "SeJoinConfig"]

LOGGER = logging.getLogger(__name__)

DISCOVERY_REQUESTS: Final = 3
# Records the host makes itself, with what the device knows (seconds, its reason).
_HOST_RECORDS: Final = frozenset({"ke_established", "ke_failed"})


class Host(Protocol):
    """What a `SeJoin` needs of its device (`SimDevice` provides it)."""

    def record(self, kind: str, **detail: Any) -> None: ...
    def se_send_match_desc(self) -> int: ...  # returns the request's TSN
    def se_send_command(self, command_id: int, payload: bytes, dst_ep: int) -> None: ...
    def se_refuse(self, request: object, status: int) -> None: ...
    def se_established(self, suite: int, key_data: bytes, seconds: float) -> None: ...
    def se_failed(self, reason: str) -> None: ...


@dataclass(frozen=True, slots=True)
class SeJoinConfig:
    ieee: bytes  # certificate (written) order
    trust_center_ieee: bytes
    fault: str | None
    server_wait: float
    attempts: int
    retry_delay: float
    timeout: float


@dataclass(frozen=True, slots=True)
class _Input:
    kind: str  # "start", "command", "default_response", "timer"
    command_id: int = 0
    payload: bytes = b""
    status: int = 0
    request: object = None


class SeJoin:
    """One boot's registration. ``start()`` once; ``stop()`` at power off."""

    def __init__(
        self,
        host: Host,
        cfg: SeJoinConfig,
        load_credentials: Callable[[], Credentials],
        rng: random.Random,
    ) -> None:
        self._host = host
        self.cfg = cfg
        self._load_credentials = load_credentials
        self._rng = rng
        self.client: KeyEstablishmentClient | None = None
        self.server_ep: int | None = None
        self.empty_answers = 0
        self.done = False
        self._match_tsn: int | None = None
        self._found: asyncio.Future[int] | None = None
        self._inputs: asyncio.Queue[_Input] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._started_at = 0.0
        # The client's records during one call (made in the worker thread), replayed after.
        self._trace: list[tuple[str, dict[str, Any]]] = []

    @property
    def active(self) -> bool:
        """Registration still running (the device holds no key yet)."""
        return self._task is not None and not self.done

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._started_at = loop.time()
        self._task = loop.create_task(self._run())
        self._task.add_done_callback(self._finished)

    def stop(self) -> None:
        self.done = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._task is not None:
            self._task.cancel()

    def _finished(self, task: asyncio.Task[None]) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if not task.cancelled() and task.exception() is not None:
            exc = task.exception()
            LOGGER.error("SE registration failed", exc_info=exc)
            self._host.record("crash", error=repr(exc))

    # -- what the device hands in ----------------------------------------------------

    def match_desc_response(self, tsn: int, status: int, endpoints: list[int]) -> None:
        if self._found is None or self._found.done() or tsn != self._match_tsn:
            return
        if status != 0 or not endpoints:
            self.empty_answers += 1
            self._host.record("ke_discovery_empty", status=status, tsn=tsn)
            return
        self._found.set_result(endpoints[0])

    def command(self, command_id: int, payload: bytes, request: object) -> None:
        """A server -> client Key Establishment cluster command."""
        if self.client is not None and not self.done:
            self._inputs.put_nowait(_Input("command", command_id, payload, request=request))

    def default_response(self, command_id: int, status: int) -> None:
        if self.client is not None and not self.done:
            self._inputs.put_nowait(_Input("default_response", command_id, status=status))

    # -- the registration ----------------------------------------------------------------

    async def _run(self) -> None:
        try:
            async with asyncio.timeout(self.cfg.timeout):
                creds = await asyncio.to_thread(self._load_credentials)
                endpoint = await self._discover()
                if endpoint is None:
                    self._host.record("ke_no_server", requests=DISCOVERY_REQUESTS, empty_answers=self.empty_answers)
                    self._end_failed("no Key Establishment server answered Match_Desc")
                    return
                self.server_ep = endpoint
                self._host.record("ke_server", endpoint=endpoint)
                self.client = KeyEstablishmentClient(
                    InitiatorConfig(
                        ieee=self.cfg.ieee,
                        trust_center_ieee=self.cfg.trust_center_ieee,
                        credentials=[creds],
                        max_attempts=self.cfg.attempts,
                        retry_delay=self.cfg.retry_delay,
                        fault=self.cfg.fault,
                    ),
                    self._rng,
                    record=lambda kind, **detail: self._trace.append((kind, detail)),
                )
                await self._serve()
        except TimeoutError:
            state = self.client.state.value if self.client is not None else "discovery"
            self._end_failed(f"no key after {self.cfg.timeout:g} s (client {state})")

    async def _discover(self) -> int | None:
        loop = asyncio.get_running_loop()
        for _ in range(DISCOVERY_REQUESTS):
            self._found = loop.create_future()
            self._match_tsn = self._host.se_send_match_desc()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.cfg.server_wait):
                    return await self._found
        return None

    async def _serve(self) -> None:
        self._inputs.put_nowait(_Input("start"))
        while not self.done:
            item = await self._inputs.get()
            client = self.client
            assert client is not None
            now = asyncio.get_running_loop().time()
            self._trace = []
            actions = await asyncio.to_thread(self._call, client, item, now)
            trace, self._trace = self._trace, []
            for kind, detail in trace:
                if kind not in _HOST_RECORDS:
                    self._host.record(kind, **detail)
            self._apply(actions, item)
            self._rearm()

    @staticmethod
    def _call(client: KeyEstablishmentClient, item: _Input, now: float) -> list[Any]:
        if item.kind == "start":
            return client.start(now)
        if item.kind == "command":
            return client.handle_command(item.command_id, item.payload, now)
        if item.kind == "default_response":
            return client.handle_default_response(item.command_id, item.status, now)
        return client.handle_timer(now)

    def _apply(self, actions: list[Any], item: _Input) -> None:
        assert self.client is not None and self.server_ep is not None
        for action in actions:
            if isinstance(action, SendCommand):
                self._host.se_send_command(action.command_id, action.payload, self.server_ep)
            elif isinstance(action, Refuse):
                self._host.se_refuse(item.request, action.status)
            elif isinstance(action, Established):
                self.done = True
                seconds = asyncio.get_running_loop().time() - self._started_at
                self._host.se_established(action.suite, action.key_data, seconds)
            elif isinstance(action, Leave):
                self._end_failed(action.reason)

    def _end_failed(self, reason: str) -> None:
        self.done = True
        self._host.se_failed(reason)

    def _rearm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self.done or self.client is None or self.client.state is ClientState.SILENT:
            return
        deadline = self.client.get_timer()
        if deadline is not None:
            self._timer = asyncio.get_running_loop().call_at(deadline, self._inputs.put_nowait, _Input("timer"))
