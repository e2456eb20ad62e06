"""radios/ezsp_guard.py: an NCP answer bellows cannot read fails its command at once.

Against the EZSP emulator with unmodified bellows, opened as the gateway opens it
(radios.select.open_app). The emulator answers a command it lacks as EmberZNet does,
invalidCommand with one EzspStatus byte: bellows reads that on EZSP 13 but not on 14+,
where without the guard the command would wait out bellows' 10 s timeout.
"""

from __future__ import annotations

import logging
import time

from bellows.exception import InvalidCommandError
import bellows.types as bt
import pytest

from radios.emulate.ezsp import AshConfig, NetworkSettings, running_ezsp_emulator
from radios.ezsp_guard import UnreadableResponse
from radios.select import open_app

LOGGER = logging.getLogger(__name__)
# Generous: the guard answers in milliseconds, bellows alone after 10 s
BOUND_S = 5.0


def _emulator(version: int):
    return running_ezsp_emulator(network=NetworkSettings(channel=20, pan_id=0x4D2C), protocol_version=version,
                                 ash_config=AshConfig(reboot_delay=0.05))


async def _timed(awaitable) -> tuple[BaseException, float]:
    started = time.monotonic()
    with pytest.raises(Exception) as caught:
        await awaitable
    return caught.value, time.monotonic() - started


def test_bellows_alone_cannot_read_the_firmwares_invalid_command_on_14() -> None:
    """The premise: one EzspStatus byte, as EmberZNet sends it, parses with bellows' v13
    table and not with its v14 one (a four-byte sl_Status)."""
    import bellows.ezsp.v13.commands as v13
    import bellows.ezsp.v14.commands as v14

    reason = bytes([bt.EzspStatus.ERROR_INVALID_FRAME_ID])
    (_, _, schema13) = v13.COMMANDS["invalidCommand"]
    (_, _, schema14) = v14.COMMANDS["invalidCommand"]
    values, rest = bt.deserialize_dict(reason, schema13)
    assert values == {"status": bt.EzspStatus.ERROR_INVALID_FRAME_ID} and rest == b""
    with pytest.raises(ValueError):
        bt.deserialize_dict(reason, schema14)


@pytest.mark.parametrize("version", [13, 14, 18])
async def test_a_command_the_firmware_lacks_is_an_error_at_once(version: int) -> None:
    async with _emulator(version) as (path, server):
        app = await open_app("ezsp", path=path, han_endpoint=False)
        try:
            assert app._ezsp.ezsp_version == version
            error, elapsed = await _timed(app._ezsp.getXncpInfo())
            LOGGER.info("EZSP %d: invalidCommand reported after %.3f s", version, elapsed)
            assert isinstance(error, InvalidCommandError), error
            assert "getXncpInfo" in str(error) and "ERROR_INVALID_FRAME_ID" in str(error)
            assert elapsed < BOUND_S
            assert server.ncp.unhandled == ["getXncpInfo is not emulated"]
            # The NCP and bellows carry on: the next command gets its own answer
            (state,) = await app._ezsp.networkState()
            assert state == bt.EmberNetworkStatus.JOINED_NETWORK
        finally:
            await app.shutdown()


async def test_an_unparseable_answer_fails_its_command_and_names_the_frame() -> None:
    async with _emulator(14) as (path, server):
        app = await open_app("ezsp", path=path, han_endpoint=False)
        try:
            send = server.ncp._send

            def truncate_network_state(frame: bytes) -> None:
                # networkState's response (frame 0x0018) without its status byte
                send(frame[:5] if frame[3:5] == b"\x18\x00" and frame[1] & 0x18 == 0 else frame)

            server.ncp._send = truncate_network_state
            error, elapsed = await _timed(app._ezsp.networkState())
            LOGGER.info("unparseable answer reported after %.3f s", elapsed)
            assert isinstance(error, UnreadableResponse), error
            assert "networkState" in str(error) and "0x0018" in str(error)
            assert elapsed < BOUND_S
            server.ncp._send = send
            (state,) = await app._ezsp.networkState()
            assert state == bt.EmberNetworkStatus.JOINED_NETWORK
        finally:
            await app.shutdown()
