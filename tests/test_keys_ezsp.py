"""Installing APS link keys through the REAL bellows 1.2.1 against the EZSP emulator,
then APS-secured traffic both ways (radios/keys.py, radios/emulate/ezsp/ncp.py).

Set up as tests/test_drivers_ezsp.py: a fresh emulator with a formed network, two
simulated HCALCS that join when the gateway permits, nothing in bellows patched.
"""

from __future__ import annotations

from typing import Any

import bellows.types as bt
import pytest
import zigpy.types as t

import aps_test_support as aps
from driver_test_support import wait_known
from radios.emulate.ezsp import NetworkSettings, running_ezsp_emulator
from radios.keys import LinkKeyError, install_link_key, radio_family
from radios.select import open_app


def formed() -> NetworkSettings:
    return NetworkSettings(channel=20, pan_id=0x4D2C)


async def open_and_join(path: str) -> Any:
    app = await open_app("ezsp", path=path)
    await app.permit(60)
    for ieee in (aps.A_IEEE, aps.B_IEEE):
        await wait_known(app, ieee)
    return app


async def table(app: Any) -> dict[int, tuple[t.EUI64, bytes]]:
    """The NCP's key table as bellows reads it back (exportLinkKeyByIndex), by field name:
    EZSP 13 (the emulator's default) answers the EUI64 itself, 14+ a key context."""
    (status, size) = await app._ezsp.getConfigurationValue(configId=bt.EzspConfigId.CONFIG_KEY_TABLE_SIZE)
    names = list(app._ezsp._protocol.COMMANDS["exportLinkKeyByIndex"][2])
    out = {}
    for index in range(size):
        entry = dict(zip(names, await app._ezsp.exportLinkKeyByIndex(index=index)))
        if bt.sl_Status.from_ember_status(entry["status"]) == bt.sl_Status.OK:
            eui64 = entry["eui64"] if "eui64" in entry else entry["context"].eui64
            out[index] = (eui64, bytes(entry["plaintext_key"]))
    return out


async def test_two_keys_at_once_then_secured_traffic_both_ways() -> None:
    async with running_ezsp_emulator(aps.device_specs(), network=formed()) as (path, server):
        app = await open_and_join(path)
        try:
            assert radio_family(app) == "ezsp" and app._ezsp.ezsp_version >= 13
            # the SDK's NCP key table (12), which bellows' minimum of 4 leaves alone
            assert server.ncp.config["CONFIG_KEY_TABLE_SIZE"] == 12
            await aps.two_keys_then_secured_traffic(app, server.han)
            assert await table(app) == {0: (aps.A_IEEE, bytes(aps.KEY_A)), 1: (aps.B_IEEE, bytes(aps.KEY_B))}
            assert "importLinkKey" in server.ncp.command_log and server.ncp.unhandled == []
            # The air used the NCP's network TC link key for the devices it had no entry for
            assert server.han.tc_link_key == bytes(server.ncp.nvram.network.tc_link_key)
        finally:
            await app.shutdown()


async def test_renewing_a_key_rewrites_its_own_entry() -> None:
    async with running_ezsp_emulator(aps.device_specs(), network=formed()) as (path, server):
        app = await open_and_join(path)
        try:
            await install_link_key(app, aps.A_IEEE, aps.KEY_A)
            await install_link_key(app, aps.B_IEEE, aps.KEY_B)
            renewed = t.KeyData(bytes(range(0xA0, 0xB0)))
            await install_link_key(app, aps.A_IEEE, renewed)
            assert await table(app) == {0: (aps.A_IEEE, bytes(renewed)), 1: (aps.B_IEEE, bytes(aps.KEY_B))}
            assert server.han.link_key(aps.A_IEEE) == bytes(renewed)
        finally:
            await app.shutdown()


async def test_full_key_table_is_a_typed_refusal_naming_radio_and_device() -> None:
    async with running_ezsp_emulator(aps.device_specs(), network=formed()) as (path, server):
        app = await open_and_join(path)
        try:
            server.ncp.config["CONFIG_KEY_TABLE_SIZE"] = 1  # a small NCP image
            await install_link_key(app, aps.A_IEEE, aps.KEY_A)
            with pytest.raises(LinkKeyError) as caught:
                await install_link_key(app, aps.B_IEEE, aps.KEY_B)
            err = caught.value
            assert (err.radio, err.ieee) == ("ezsp", aps.B_IEEE)
            assert str(err) == (
                "ezsp: the coordinator did not take the APS link key for 00:db:12:34:56:78:aa:02:"
                " the key table is full (1 entries, all in use)"
            )
            assert bytes(aps.KEY_B).hex() not in str(err)
            assert await table(app) == {0: (aps.A_IEEE, bytes(aps.KEY_A))}  # A's entry untouched
        finally:
            await app.shutdown()


async def test_emulator_import_past_the_table_fails_as_the_firmware_does() -> None:
    async with running_ezsp_emulator(aps.device_specs(), network=formed()) as (path, server):
        app = await open_and_join(path)
        try:
            (status,) = await app._ezsp.importLinkKey(index=12, address=aps.A_IEEE, key=aps.KEY_A)
            assert status == bt.sl_Status.FAIL
            (free,) = await app._ezsp.findKeyTableEntry(address=t.EUI64(bytes(8)), linkKey=True)
            assert free == 0  # all zeros: the first empty entry
            (missing,) = await app._ezsp.findKeyTableEntry(address=aps.A_IEEE, linkKey=True)
            assert missing == 0xFF
        finally:
            await app.shutdown()


class _FakeEzspV8:
    """An EZSP 8 NCP as bellows presents it: only addOrUpdateKeyTableEntry exists."""

    ezsp_version = 8

    def __init__(self, status: bt.EmberStatus) -> None:
        self.status = status
        self.calls: list[dict[str, Any]] = []

    async def addOrUpdateKeyTableEntry(self, **kwargs: Any) -> list[Any]:
        self.calls.append(kwargs)
        return [self.status]


class _BellowsLikeApp:
    __module__ = "bellows.zigbee.application"

    def __init__(self, ezsp: _FakeEzspV8) -> None:
        self._ezsp = ezsp


async def test_before_ezsp_13_add_or_update_key_table_entry_with_link_key_true() -> None:
    ezsp = _FakeEzspV8(bt.EmberStatus.SUCCESS)
    await install_link_key(_BellowsLikeApp(ezsp), aps.A_IEEE, aps.KEY_A)
    assert ezsp.calls == [{"address": aps.A_IEEE, "linkKey": True, "keyData": aps.KEY_A}]

    refusing = _FakeEzspV8(bt.EmberStatus.TABLE_FULL)
    with pytest.raises(LinkKeyError, match=r"^ezsp: .* 00:db:12:34:56:78:aa:01: addOrUpdateKeyTableEntry refused .*TABLE_FULL"):
        await install_link_key(_BellowsLikeApp(refusing), aps.A_IEEE, aps.KEY_A)
