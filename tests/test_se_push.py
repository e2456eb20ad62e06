"""A simulated Smart Energy PPMID through the one-shot push, as a lab runs it: a test CA,
the hub's certificate for the coordinator and the device's own, the [key_establishment]
table and `security = "se"` in the config; the device runs key establishment with the
hub as it joins, and only then gets the push, APS-encrypted with the derived key.
"""

from __future__ import annotations

import random
from pathlib import Path

from gateway.config import load_config
from gateway.image_build import build_image
from gateway.se import ecqv
from gateway.se.suites import suite as hub_suite
from han_ota.push import PushRequest, run_push
from radios.emulate.ezsp.ncp import DEFAULT_EUI64
from radios.emulate.ezsp.server import running_ezsp_emulator
from radios.sim.app import DEFAULT_COORDINATOR_IEEE
from radios.sim.spec import parse_sim_device

PPMID = "00:db:12:34:56:78:90:a1"
ISSUER = bytes.fromhex("5445535453454341")


def written(ieee: str) -> bytes:
    return bytes.fromhex(ieee.replace(":", ""))


def lab(tmp_path: Path, number: int, *, device_ca_is_the_hubs: bool = True, coordinator: str = DEFAULT_COORDINATOR_IEEE) -> tuple[Path, str]:
    """Files and config for one suite; the device's certificate from the hub's CA, or
    from a CA the hub does not know."""
    rng = random.Random(number)
    s = hub_suite(number)
    ca = ecqv.new_key_pair(s, rng.randbytes)
    hub_cert, hub_key = ecqv.issue(s, ca, written(coordinator), ISSUER, rng.randbytes)
    device_ca = ca if device_ca_is_the_hubs else ecqv.new_key_pair(s, rng.randbytes)
    issuer = ISSUER if device_ca_is_the_hubs else bytes.fromhex("00000000C0FFEE00")
    dev_cert, dev_key = ecqv.issue(s, device_ca, written(PPMID), issuer, rng.randbytes)
    curve = {1: "163k1", 2: "283k1"}[number]
    for name, data in {"hub.cert": hub_cert.raw, "hub.key": hub_key, "dev.cert": dev_cert.raw, "dev.key": dev_key}.items():
        (tmp_path / name).write_text(data.hex() + "\n")
    (tmp_path / "ca.pub").write_text(ca.public_key.hex() + "\n")
    (tmp_path / "dev-ca.pub").write_text(device_ca.public_key.hex() + "\n")
    (tmp_path / "config.toml").write_text(
        f'state_dir = "state"\ncontrol_socket = "c.sock"\n'
        f"[key_establishment]\nsuites = [{number}]\n"
        f'certificate_{curve} = "hub.cert"\nprivate_key_{curve} = "hub.key"\nca_public_keys_{curve} = ["{ca.public_key.hex()}"]\n'
        f'[[device]]\nieee = "{PPMID}"\nkind = "ppmid"\nsecurity = "se"\n'
    )
    spec = (
        f"ppmid:{PPMID}:manufacturer_code=0x1234:image_type=0x0084:file_version=1:security=se:cbke_suite={number}"
        f":cbke_cert={tmp_path / 'dev.cert'}:cbke_key={tmp_path / 'dev.key'}:cbke_ca={tmp_path / 'dev-ca.pub'}"
    )
    return tmp_path / "config.toml", spec


def image(tmp_path: Path) -> Path:
    fw = tmp_path / "fw.ota"
    fw.write_bytes(build_image(bytes(range(256)) * 20, manufacturer_code=0x1234, image_type=0x0084, file_version=2))
    return fw


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


async def test_the_same_through_the_ezsp_emulator_with_unmodified_bellows(tmp_path: Path) -> None:
    # The hub's certificate names the NCP's EUI-64; the key goes in with importLinkKey.
    config, spec = lab(tmp_path, 1, coordinator=str(DEFAULT_EUI64))
    async with running_ezsp_emulator([parse_sim_device(spec)]) as (path, _server):
        outcome = await run_push(
            PushRequest(
                image=image(tmp_path), device=PPMID, radio="ezsp", path=path, config=load_config(config),
                activate_now=True, progress=False, timeout_s=120,
            )
        )
    s = outcome.summary
    assert outcome.reached and s["state"] == "confirmed", s
    assert s["security"]["key_establishment"] == "established" and s["security"]["aps_security"] is True


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
