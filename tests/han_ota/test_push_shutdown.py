"""A one-shot push through real bellows closes the radio cleanly (issue 11 item 18).

After a successful EZSP push bellows logged "Task exception was never retrieved"
(its ASH send task failing on the connection the push had just closed under it).
"""

from __future__ import annotations

import dataclasses
import gc
import logging
from pathlib import Path

import pytest

from gateway.config import Config
from han_ota.push import PushRequest, run_push
from radios.emulate.ezsp.server import running_ezsp_emulator

import driver_test_support as support

HCALCS = "00:db:12:34:56:78:90:a0"


async def test_ezsp_push_leaves_no_orphaned_task(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    fw = tmp_path / "fw.ota"
    fw.write_bytes(support.make_image(size=2048).data)
    config = dataclasses.replace(Config(), state_dir=tmp_path / "state")
    caplog.set_level(logging.ERROR, logger="asyncio")
    async with running_ezsp_emulator([support.hcalcs_spec(HCALCS, support.FAST_DEVICE.replace("wait_interval=0.5", "wait_interval=0.05"))]) as (path, _server):
        for _ in range(3):
            outcome = await run_push(PushRequest(image=fw, device=HCALCS, radio="ezsp", path=path, config=config, progress=False, timeout_s=120))
            assert outcome.summary["state"] == "held", outcome.summary
            gc.collect()  # an unretrieved task exception is reported when the task is collected
    orphaned = [r.getMessage() for r in caplog.records if "never retrieved" in r.getMessage()]
    assert orphaned == []
