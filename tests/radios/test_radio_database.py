"""zigpy's database is kept per radio (issue 11 item 6)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from gateway.config import Config
from han_ota.push import PushRequest, run_push
from radios.emulate.ezsp.server import running_ezsp_emulator
from radios.emulate.znp.server import running_znp_emulator
from radios.select import LEGACY_DATABASE, database_for

import driver_test_support as support

HCALCS = "00:db:12:34:56:78:90:a0"


def test_one_database_per_radio_kind_and_path(tmp_path: Path) -> None:
    znp = database_for(tmp_path, "znp", "/dev/serial/by-id/usb-Texas_Instruments_CC2652-if00")
    ezsp = database_for(tmp_path, "ezsp", "socket://127.0.0.1:6638")
    other = database_for(tmp_path, "ezsp", "/dev/ttyUSB1")
    assert len({znp, ezsp, other}) == 3
    assert all(p is not None and p.parent == tmp_path for p in (znp, ezsp, other))
    assert znp is not None and znp.name == "zigbee-znp-serial_by-id_usb-Texas_Instruments_CC2652-if00.db"
    assert database_for(tmp_path, "sim", None) is None  # the simulated radio remembers nothing


def test_the_old_shared_database_goes_to_the_first_radio_only(tmp_path: Path) -> None:
    (tmp_path / LEGACY_DATABASE).write_bytes(b"old")
    first = database_for(tmp_path, "znp", "/dev/ttyACM0")
    assert first is not None and first.read_bytes() == b"old" and not (tmp_path / LEGACY_DATABASE).exists()
    second = database_for(tmp_path, "ezsp", "/dev/ttyUSB0")
    assert second is not None and not second.exists()


async def test_push_through_znp_then_through_ezsp_in_one_state_dir(tmp_path: Path) -> None:
    fw = tmp_path / "fw.ota"
    image = support.make_image(size=2048)
    fw.write_bytes(image.data)
    config = dataclasses.replace(Config(), state_dir=tmp_path / "state")
    for emulator, kind in ((running_znp_emulator, "znp"), (running_ezsp_emulator, "ezsp")):
        async with emulator([support.hcalcs_spec(HCALCS, support.FAST_DEVICE)]) as (path, _server):
            outcome = await run_push(PushRequest(image=fw, device=HCALCS, radio=kind, path=path, config=config, progress=False, timeout_s=120))
        assert outcome.summary["state"] == "held", (kind, outcome.summary)
    assert sorted(p.name.split("-")[1] for p in (tmp_path / "state").glob("zigbee-*.db")) == ["ezsp", "znp"]
