"""A Smart Energy lab on disk, as tests/system/test_se_push.py and tests/system/test_se_daemon.py use
it: a test CA, the hub's certificate for the coordinator and the device's own, the
[key_establishment] table and ``security = "se"`` in a config.toml, and the simulated
PPMID's spec naming its own files."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import zigpy.types as t

from gateway.image_build import build_image
from gateway.se import ecqv
from gateway.se.suites import suite as hub_suite
from radios.sim.app import DEFAULT_COORDINATOR_IEEE

PPMID = "00:db:12:34:56:78:90:a1"
ISSUER = bytes.fromhex("5445535453454341")


def written(ieee: str) -> bytes:
    return bytes.fromhex(ieee.replace(":", ""))


def lab(
    tmp_path: Path, number: int, *, device_ca_is_the_hubs: bool = True, coordinator: str = DEFAULT_COORDINATOR_IEEE,
    device_lines: str = "", tables: str = "",
) -> tuple[Path, str]:
    """Files and config for one suite; the device's certificate from the hub's CA, or
    from a CA the hub does not know. ``device_lines`` go into the PPMID's [[device]]
    table (a supplier, say), ``tables`` after it."""
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
        f'[[device]]\nieee = "{PPMID}"\nkind = "ppmid"\nsecurity = "se"\n{device_lines}{tables}'
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


def assert_the_whole_push_went_under_the_derived_key(han: Any) -> None:
    """The coordinator's key table holds the PPMID's own key (the one it derived), every
    block it asked for reached it APS-secured (it takes no unsecured OTA frame once
    keyed), and it dropped nothing once it held its key.

    A frame may still be dropped in one window: the hub's key is in force once the
    Confirm Key Data Response is delivered, but the device takes its key only after it
    has checked our MACV in it; a frame the hub starts meanwhile (an Image Notify) is
    secured with a key the device does not hold yet. The device does not ack it and the
    hub sends it again; blocks are the device's own requests, made after it took the key.
    """
    device = han.devices[t.EUI64.convert(PPMID)]
    assert device.aps_link_key is not None and han.link_key(device.ieee) == device.aps_link_key
    keyed = next(e.time for e in device.history if e.kind == "ke_established")
    assert [e for e in device.history if e.kind == "aps_drop" and e.time > keyed] == []
    blocks = [e for e in device.history if e.kind == "block_request"]
    assert blocks and all(e.time >= keyed for e in blocks)
    assert device.radio.aps_secured_received >= len(blocks)
