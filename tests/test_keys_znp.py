"""Installing APS link keys through the REAL zigpy-znp 1.1.1 against the Z-Stack
emulator, then APS-secured traffic both ways (radios/keys.py, radios/emulate/znp).

Set up as tests/test_drivers_znp.py: a fresh emulator, two simulated HCALCS, nothing
in zigpy-znp patched.
"""

from __future__ import annotations

from typing import Any

import pytest
import zigpy.types as t
import zigpy_znp.commands as c
import zigpy_znp.types as zt

import aps_test_support as aps
from driver_test_support import wait_known
from radios.emulate.znp import running_znp_emulator
from radios.keys import LinkKeyError, install_link_key, radio_family
from radios.select import open_app


async def open_and_join(path: str) -> Any:
    app = await open_app("znp", path=path)
    for ieee in (aps.A_IEEE, aps.B_IEEE):
        await wait_known(app, ieee)
    return app


async def test_two_keys_at_once_then_secured_traffic_both_ways() -> None:
    async with running_znp_emulator(aps.device_specs()) as (path, server):
        app = await open_and_join(path)
        try:
            assert radio_family(app) == "znp"
            await aps.two_keys_then_secured_traffic(app, server.coordinator.han)
            coordinator = server.coordinator
            assert coordinator.aps_link_keys == {aps.A_IEEE: aps.KEY_A, aps.B_IEEE: aps.KEY_B}
            assert coordinator.requests["ZDO.SetLinkKey"] == 2 and coordinator.unimplemented == []
        finally:
            await app.shutdown()


async def test_keys_survive_a_coordinator_reset() -> None:
    async with running_znp_emulator(aps.device_specs()) as (path, server):
        app = await open_and_join(path)
        try:
            await install_link_key(app, aps.A_IEEE, aps.KEY_A)
            await app._znp.request(c.SYS.ResetReq.Req(Type=zt.ResetType.Soft))
            assert server.coordinator.aps_link_keys == {aps.A_IEEE: aps.KEY_A}  # in NV
            assert server.coordinator.han.link_key(aps.A_IEEE) == bytes(aps.KEY_A)
        finally:
            await app.shutdown()


async def test_full_security_manager_is_a_typed_refusal_with_the_firmware_status() -> None:
    async with running_znp_emulator(aps.device_specs()) as (path, server):
        app = await open_and_join(path)
        try:
            server.coordinator.link_key_entries = 1  # a build with ZDSECMGR_DEVICE_MAX 1
            await install_link_key(app, aps.A_IEEE, aps.KEY_A)
            await install_link_key(app, aps.A_IEEE, t.KeyData(bytes(16)))  # A's own entry: renewed
            with pytest.raises(LinkKeyError) as caught:
                await install_link_key(app, aps.B_IEEE, aps.KEY_B)
            assert str(caught.value) == (
                "znp: the coordinator did not take the APS link key for 00:db:12:34:56:78:aa:02:"
                " its security manager's link key entries are all taken (firmware status BUFFER_FULL (0x11))"
            )
            assert server.coordinator.han.link_key(aps.B_IEEE) is None
        finally:
            await app.shutdown()


async def test_unknown_device_is_refused_before_asking_the_coordinator() -> None:
    async with running_znp_emulator(aps.device_specs()) as (path, server):
        app = await open_and_join(path)
        try:
            stranger = t.EUI64.convert("00:db:12:34:56:78:aa:ff")
            with pytest.raises(LinkKeyError, match="unknown device: zigpy has no NWK address for it"):
                await install_link_key(app, stranger, aps.KEY_A)
            assert server.coordinator.requests["ZDO.SetLinkKey"] == 0
        finally:
            await app.shutdown()
