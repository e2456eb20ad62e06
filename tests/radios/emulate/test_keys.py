"""Installing APS link keys through the REAL radio libraries against the emulators, then
APS-secured traffic both ways (radios/keys.py, radios/emulate/ezsp/ncp.py,
radios/emulate/znp): bellows 1.2.1 on EZSP 13 and zigpy-znp 1.1.1 on Z-Stack 3.30.

Set up as tests/radios/emulate/test_drivers.py (``driver_test_support.Radio``): a fresh emulator, two
simulated HCALCS that join when the gateway permits (EZSP) or when zigpy-znp's start-up
is done (Z-Stack), nothing in bellows or zigpy-znp patched. The behaviour both radios
share runs on both (the ``radio`` fixture); what only one firmware has (the NCP's key
table and its commands, Z-Stack's NV across a reset) is tested on that one.
"""

from __future__ import annotations

from typing import Any

import bellows.types as bt
import pytest
import zigpy.types as t
import zigpy_znp.commands as c
import zigpy_znp.types as zt

import aps_test_support as aps
from driver_test_support import Radio, wait_known
from radios.keys import LinkKeyError, install_link_key, radio_family

EZSP, ZNP = Radio("ezsp13"), Radio("znp")
RENEWED = t.KeyData(bytes(range(0xA0, 0xB0)))


@pytest.fixture(params=[EZSP, ZNP], ids=repr)
def radio(request) -> Radio:
    return request.param


async def open_and_join(radio: Radio, path: str) -> Any:
    app = await radio.open(path)
    if radio.family == "ezsp":
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


# ----------------------------------------------------------------------------- every radio


async def test_two_keys_at_once_then_secured_traffic_both_ways(radio: Radio) -> None:
    async with radio.emulator(aps.device_specs()) as (path, server):
        app = await open_and_join(radio, path)
        try:
            assert radio_family(app) == radio.family
            if radio.family == "ezsp":
                assert app._ezsp.ezsp_version >= 13
                # the SDK's NCP key table (12), which bellows' minimum of 4 leaves alone
                assert server.ncp.config["CONFIG_KEY_TABLE_SIZE"] == 12
            await aps.two_keys_then_secured_traffic(app, radio.han(server))
            if radio.family == "ezsp":
                assert await table(app) == {0: (aps.A_IEEE, bytes(aps.KEY_A)), 1: (aps.B_IEEE, bytes(aps.KEY_B))}
                assert "importLinkKey" in server.ncp.command_log
                # The air used the NCP's network TC link key for the devices it had no entry for
                assert server.han.tc_link_key == bytes(server.ncp.nvram.network.tc_link_key)
            else:
                coordinator = server.coordinator
                assert coordinator.aps_link_keys == {aps.A_IEEE: aps.KEY_A, aps.B_IEEE: aps.KEY_B}
                assert coordinator.requests["ZDO.SetLinkKey"] == 2
            assert radio.unhandled(server) == []
        finally:
            await app.shutdown()


#: Why each firmware refuses a key when its table is full, as LinkKeyError says it.
FULL = {
    "ezsp": "the key table is full (1 entries, all in use)",
    "znp": "its security manager's link key entries are all taken (firmware status BUFFER_FULL (0x11))",
}


async def test_full_key_table_is_a_typed_refusal_naming_radio_and_device(radio: Radio) -> None:
    """A coordinator with room for one key: A's entry can be renewed, B's key is refused
    with a LinkKeyError naming the radio, the device and the firmware's reason (never the
    key), and A's entry is left alone."""
    async with radio.emulator(aps.device_specs()) as (path, server):
        app = await open_and_join(radio, path)
        try:
            if radio.family == "ezsp":
                server.ncp.config["CONFIG_KEY_TABLE_SIZE"] = 1  # a small NCP image
            else:
                server.coordinator.link_key_entries = 1  # a build with ZDSECMGR_DEVICE_MAX 1
            await install_link_key(app, aps.A_IEEE, aps.KEY_A)
            await install_link_key(app, aps.A_IEEE, RENEWED)  # A's own entry: renewed
            with pytest.raises(LinkKeyError) as caught:
                await install_link_key(app, aps.B_IEEE, aps.KEY_B)
            err = caught.value
            assert (err.radio, err.ieee) == (radio.family, aps.B_IEEE)
            assert str(err) == (
                f"{radio.family}: the coordinator did not take the APS link key for 00:db:12:34:56:78:aa:02:"
                f" {FULL[radio.family]}"
            )
            assert bytes(aps.KEY_B).hex() not in str(err)
            han = radio.han(server)
            assert han.link_key(aps.B_IEEE) is None and han.link_key(aps.A_IEEE) == bytes(RENEWED)
            if radio.family == "ezsp":
                assert await table(app) == {0: (aps.A_IEEE, bytes(RENEWED))}  # A's entry untouched
        finally:
            await app.shutdown()


# ----------------------------------------------------------------------------- EZSP: the NCP's key table


async def test_ezsp_renewing_a_key_rewrites_its_own_entry() -> None:
    async with EZSP.emulator(aps.device_specs()) as (path, server):
        app = await open_and_join(EZSP, path)
        try:
            await install_link_key(app, aps.A_IEEE, aps.KEY_A)
            await install_link_key(app, aps.B_IEEE, aps.KEY_B)
            await install_link_key(app, aps.A_IEEE, RENEWED)
            assert await table(app) == {0: (aps.A_IEEE, bytes(RENEWED)), 1: (aps.B_IEEE, bytes(aps.KEY_B))}
            assert server.han.link_key(aps.A_IEEE) == bytes(RENEWED)
        finally:
            await app.shutdown()


async def test_ezsp_emulator_import_past_the_table_fails_as_the_firmware_does() -> None:
    async with EZSP.emulator(aps.device_specs()) as (path, server):
        app = await open_and_join(EZSP, path)
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


# ----------------------------------------------------------------------------- Z-Stack: NV and NWK addresses


async def test_znp_keys_survive_a_coordinator_reset() -> None:
    async with ZNP.emulator(aps.device_specs()) as (path, server):
        app = await open_and_join(ZNP, path)
        try:
            await install_link_key(app, aps.A_IEEE, aps.KEY_A)
            await app._znp.request(c.SYS.ResetReq.Req(Type=zt.ResetType.Soft))
            assert server.coordinator.aps_link_keys == {aps.A_IEEE: aps.KEY_A}  # in NV
            assert server.coordinator.han.link_key(aps.A_IEEE) == bytes(aps.KEY_A)
        finally:
            await app.shutdown()


async def test_znp_unknown_device_is_refused_before_asking_the_coordinator() -> None:
    """ZDO.SetLinkKey takes the device's NWK address: without one there is nothing to ask
    (EZSP's importLinkKey takes the EUI64 alone)."""
    async with ZNP.emulator(aps.device_specs()) as (path, server):
        app = await open_and_join(ZNP, path)
        try:
            stranger = t.EUI64.convert("00:db:12:34:56:78:aa:ff")
            with pytest.raises(LinkKeyError, match="unknown device: zigpy has no NWK address for it"):
                await install_link_key(app, stranger, aps.KEY_A)
            assert server.coordinator.requests["ZDO.SetLinkKey"] == 0
        finally:
            await app.shutdown()
