"""A simulated Smart Energy PPMID through the one-shot push, as a lab runs it: a test CA,
the hub's certificate for the coordinator and the device's own, the [key_establishment]
table and `security = "se"` in the config; the device runs key establishment with the
hub as it joins, and only then gets the push, APS-encrypted with the derived key.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from gateway.config import load_config
from han_ota.push import PushRequest, run_push
from radios.emulate.ezsp.ncp import DEFAULT_EUI64
from radios.emulate.ezsp.server import running_ezsp_emulator
from radios.emulate.znp import DEFAULT_IEEE as ZNP_IEEE
from radios.emulate.znp import running_znp_emulator
from radios.sim.spec import parse_sim_device
from se_lab import PPMID, assert_the_whole_push_went_under_the_derived_key, image, lab


async def test_an_se_ppmid_keys_with_the_hub_then_takes_the_push_aps_encrypted(tmp_path: Path) -> None:
    # Suite 1 here (suite 2's hub and device agree in test_se_service/test_sim_se_device;
    # the simulated device's affine arithmetic makes it seconds slower).
    number = 1
    config, spec = lab(tmp_path, number)
    outcome = await run_push(
        PushRequest(
            image=image(tmp_path), device=PPMID, radio="sim", sim_devices=[spec], config=load_config(config),
            activate_now=True, progress=False, timeout_s=120,
        )
    )
    s = outcome.summary
    assert outcome.reached and s["state"] == "confirmed", s
    assert s["security"]["mode"] == "se" and s["security"]["key_establishment"] == "established"
    assert s["security"]["aps_security"] is True and s["security"]["suite"] == number


async def test_a_device_from_an_unknown_issuer_is_refused_and_its_push_waits_with_that_reason(tmp_path: Path) -> None:
    config, spec = lab(tmp_path, 1, device_ca_is_the_hubs=False)
    outcome = await run_push(
        PushRequest(image=image(tmp_path), device=PPMID, radio="sim", sim_devices=[spec], config=load_config(config), progress=False, timeout_s=15)
    )
    s = outcome.summary
    assert not outcome.reached
    assert s["security"]["key_establishment"] == "failed" and s["security"]["status"] == "UNKNOWN_ISSUER"
    assert s["security"]["side"] == "hub" and s["bytes"] == 0
    # The push gave up, saying why it never started.
    assert "push timed out after 15 s (key establishment failed: UNKNOWN_ISSUER (hub)" in (s["reason"] or ""), s


#: Each emulated coordinator with its unmodified radio library: how the emulator runs and
#: the EUI-64 its coordinator reports (the hub's certificate must name it).
EMULATORS = {
    "ezsp": (running_ezsp_emulator, DEFAULT_EUI64),  # the key goes in with importLinkKey
    "znp": (running_znp_emulator, ZNP_IEEE),  # the key goes in with ZDO.SetLinkKey
}


def the_air(radio: str, server: Any) -> Any:
    """The SimHan behind an emulated coordinator."""
    return server.ncp.han if radio == "ezsp" else server.coordinator.han


@pytest.mark.parametrize("radio", sorted(EMULATORS))
async def test_the_same_through_an_emulated_coordinator_with_its_unmodified_library(tmp_path: Path, radio: str) -> None:
    running, coordinator = EMULATORS[radio]
    config, spec = lab(tmp_path, 1, coordinator=str(coordinator))
    async with running([parse_sim_device(spec)]) as (path, server):
        outcome = await run_push(
            PushRequest(
                image=image(tmp_path), device=PPMID, radio=radio, path=path, config=load_config(config),
                activate_now=True, progress=False, timeout_s=120,
            )
        )
        han = the_air(radio, server)
    s = outcome.summary
    assert outcome.reached and s["state"] == "confirmed", s
    assert s["security"]["key_establishment"] == "established" and s["security"]["aps_security"] is True
    assert_the_whole_push_went_under_the_derived_key(han)


async def test_a_fresh_ezsp_network_keeps_the_se_endpoint_bellows_registered_before_forming() -> None:
    # bellows resets the NCP while forming; EmberZNet forgets endpoints at a reset.
    from radios.han_services import CLUSTER_KEY_ESTABLISHMENT, HAN_ENDPOINT
    from radios.select import open_app

    async with running_ezsp_emulator([]) as (path, server):
        app = await open_app("ezsp", path=path, key_establishment=True)
        try:
            assert HAN_ENDPOINT in server.ncp.endpoints, server.ncp.endpoints
            assert CLUSTER_KEY_ESTABLISHMENT in server.ncp.endpoints[HAN_ENDPOINT].input_clusters
        finally:
            await app.shutdown()
