"""Fail fast on an EZSP answer bellows cannot read, instead of a 10 s hang.

bellows matches an NCP response to its command by sequence number only after parsing
it with that command's response schema (bellows/ezsp/protocol.py, ``__call__``). An
answer it cannot parse is logged ("Failed to parse frame", bellows/ezsp/__init__.py
``frame_received``) and dropped, and the command waits out ``EZSP_CMD_TIMEOUT`` (10 s).

Real firmware makes that happen for every command it does not know: EmberZNet answers
with ``invalidCommand`` (0x0058) carrying one ``EzspStatus`` byte in every protocol
version (Silicon Labs' own host reads exactly one byte: simplicity_sdk
protocol/zigbee/app/util/ezsp/ezsp.c, ``responseReceived``), while bellows' EZSP 14+
table types it as a four-byte ``sl_status_t``. On EZSP 13 bellows reads it and raises
``InvalidCommandError`` at once; on 14+ it hangs.

The guard sits where bellows hands each received EZSP frame to its protocol handler:
``EZSP.frame_received``, which bellows' UART gateway looks up on the EZSP object for
every frame, so an attribute on the instance takes its place without touching bellows.
bellows has its go first; if a *response* (not a callback) leaves the command it
answers still pending, bellows could not read it, and the guard fails that command:
``InvalidCommandError`` (bellows' own, so its callers' handling stays) naming the
firmware's reason for an invalidCommand, :class:`UnreadableResponse` otherwise. Nothing
is parsed twice: the check is a dict lookup per response.

Limit: the guard is installed when bellows' ``connect()`` returns (the EZSP object is
created inside it), so commands of bellows' own start-up are not covered.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from bellows.exception import EzspError, InvalidCommandError
import bellows.types as t

LOGGER = logging.getLogger(__name__)

INVALID_COMMAND = 0x0058
# Frame control, low byte: the callback type bits (0x08 synchronous, 0x10 asynchronous)
# are clear in a response to a command (UG100, "Frame Control")
CALLBACK_TYPE_MASK = 0x18


class UnreadableResponse(EzspError):  # type: ignore[misc]  # bellows ships no type hints
    """The NCP answered a command with a frame bellows could not parse."""


def install(ezsp: Any) -> None:
    """Guard one bellows ``EZSP`` object (idempotent)."""
    if getattr(ezsp, "_han_ota_guarded", False):
        return
    original: Callable[[bytes], None] = ezsp.frame_received

    def frame_received(data: bytes) -> None:
        original(data)
        if len(data) < 3 or data[1] & CALLBACK_TYPE_MASK:
            return
        protocol = getattr(ezsp, "_protocol", None)
        awaiting = getattr(protocol, "_awaiting", None)
        if not awaiting or data[0] not in awaiting:
            return  # answered (or nothing was waiting for this sequence number)
        _fail_pending(protocol, data)

    ezsp.frame_received = frame_received
    ezsp._han_ota_guarded = True


def _fail_pending(protocol: Any, data: bytes) -> None:
    try:
        sequence, frame_id, params = protocol._ezsp_frame_rx(data)
    except Exception:  # noqa: BLE001 - an unreadable header names nothing better
        sequence, frame_id, params = data[0], -1, data[3:]
    expected_id, _schema, future = protocol._awaiting.pop(sequence)
    sent = protocol.COMMANDS_BY_ID.get(expected_id, (f"0x{expected_id:04x}",))[0]
    if frame_id == INVALID_COMMAND:
        reason = _ezsp_status(params)
        error: Exception = InvalidCommandError(
            f"{sent} command is an invalidCommand, was sent under {sequence} sequence number: {reason}"
        )
    else:
        error = UnreadableResponse(
            f"{sent}: the NCP's answer (frame 0x{frame_id:04x}, parameters {params.hex() or 'none'})"
            " does not parse as bellows expects it"
        )
    LOGGER.warning("EZSP: %s (failing the command now instead of after bellows' 10 s timeout)", error)
    if not future.done():
        future.set_exception(error)


def _ezsp_status(params: bytes) -> str:
    if not params:
        return "no reason given"
    try:
        return str(t.EzspStatus(params[0]).name)
    except ValueError:
        return f"EzspStatus 0x{params[0]:02x}"


def guard_app(app: Any) -> None:
    """Guard every EZSP object ``app`` (a bellows ControllerApplication) connects with:
    bellows makes a new one in each ``connect()``."""
    connect = getattr(app, "connect", None)
    if connect is None or getattr(app, "_han_ota_guarded_connect", False):
        return

    async def connect_then_guard() -> None:
        await connect()
        ezsp = getattr(app, "_ezsp", None)
        if ezsp is not None:
            install(ezsp)

    app.connect = connect_then_guard
    app._han_ota_guarded_connect = True
