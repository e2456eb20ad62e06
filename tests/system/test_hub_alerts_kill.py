"""`han-ota run` killed while it signs its CCS08 (the kill-test pattern of
tests/system/test_daemon_kill.py, on the simulated radio as tests/han_ota/test_daemon_restart.py):
after the restart the alert is there once, with the counter reserved for it, and the
hub's counter never goes back."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import pytest

from gateway.audit import read_records, verify_log
from gateway.config import load_config
from gateway.crashpoint import ENV as CRASH_ENV
from gateway.crashpoint import HUB_ALERT_POINTS
from gateway.gbcs.ids import EntityId
from gateway.gbcs.sign import generate_supplier_identity
from gateway.store import StateStore
from radios.sim.testing import build_ota_image
from tests.han_ota.test_daemon_restart import CONFIG as RESTART_CONFIG
from tests.system.test_daemon_kill import HCALCS as KILL_HCALCS
from tests.system.test_daemon_kill import bench, start_daemon  # noqa: F401 - bench is the emulator fixture
from tests.han_ota.test_daemon_restart import radio_up, wait_until

HCALCS = "00:11:22:33:44:55:66:77"
# The restart test's bench (one simulated HCALCS), fast, with a hub key.
CONFIG = RESTART_CONFIG + """\
[ota]
rate_bytes_per_s = 1000000
burst_bytes = 100000
[hub]
signing_key = "hub.key"
certificate = "hub.pem"
"""


#: The simulated HCALCS's own receipt alert (0x00CF, radios/sim/gbcs) comes over the
#: tunnel after its download, apart from the hub's counter: not what these tests count.
RECEIPT = 0x00CF


def hubs(messages: list[Any]) -> list[Any]:
    return [m for m in messages if (m["code"] if isinstance(m, dict) else m.message_code) != RECEIPT]


@pytest.fixture
def bench_dir() -> Any:
    path = Path(tempfile.mkdtemp(prefix="hoak", dir="/tmp"))
    (path / "state").mkdir()
    (path / "config.toml").write_text(CONFIG)
    key_pem, cert_pem = generate_supplier_identity(EntityId.parse("00DB1234567890A2"), role="CHF")
    (path / "hub.key").write_bytes(key_pem)
    (path / "hub.pem").write_bytes(cert_pem)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.mark.parametrize("point", HUB_ALERT_POINTS)
def test_killed_while_signing_the_alert_nothing_lost_no_counter_reused(bench_dir: Path, point: str) -> None:
    cfg = load_config(bench_dir / "config.toml")
    fw = bench_dir / "fw.ota"
    fw.write_bytes(build_ota_image(0x121D, 0x0000, 2, os.urandom(6000), min_hw=0x1111, max_hw=0x1111))

    first = start_daemon(bench_dir, "first.log", crash_at=point)
    try:
        client = wait_until(lambda: radio_up(cfg), 30, "the first daemon's radio", first)
        client.push(fw, HCALCS)
        first.wait(60)  # it dies at the crash point as the transfer ends
    finally:
        if first.poll() is None:
            first.kill()
            first.wait(10)
    assert first.returncode == 137, (bench_dir / "first.log").read_text()
    with StateStore.in_state_dir(cfg.state_dir) as store:
        [reserved] = store.pending_hub_messages()
        assert hubs(store.list_messages()) == []
        counter_at_kill = store.hub_counter()
    assert reserved.counter is not None and counter_at_kill == (reserved.counter, None)

    second = start_daemon(bench_dir, "second.log")
    try:
        client = wait_until(lambda: radio_up(cfg), 30, "the second daemon's radio", second)
        client.wait_job("1", ("held",), timeout=60)
        kept = hubs(client.messages()["messages"])
        # The reservation finished at start with its counter; the job held again: no second alert.
        assert [(m["id"], m["counter"], m["signature"], m["job"]) for m in kept] == [(reserved.message_id, reserved.counter, "valid", "1")]
        client.cancel("1")
        kept = wait_until(lambda: (lambda ms: ms if len(ms) == 2 else None)(hubs(client.messages()["messages"])), 30, "the discard alert", second)
        assert kept[1]["counter"] > reserved.counter
    finally:
        second.terminate()
        second.wait(15)
    with StateStore.in_state_dir(cfg.state_dir) as store:
        assert store.pending_hub_messages() == []
        last, committed = store.hub_counter() or (0, None)
        assert last == committed == kept[1]["counter"]
    assert verify_log(cfg.state_dir / "audit.jsonl").ok
    audited = [r.fields["counter"] for r in read_records(cfg.state_dir / "audit.jsonl") if r.event == "gbcs.message" and r.fields["code_hex"] != f"0x{RECEIPT:04X}"]
    assert audited == [reserved.counter, kept[1]["counter"]]


def test_through_the_zstack_emulator_a_kill_while_signing_leaves_one_alert(bench: Path) -> None:
    """test_daemon_kill's bench: the emulated Z-Stack dongle and its HCALCS outlive the
    daemon, so after the restart the device, still holding the image, ends the transfer
    again; the alert reserved before the kill is the only one."""
    from gateway.image_build import build_image

    key_pem, cert_pem = generate_supplier_identity(EntityId.parse("00DB1234567890A2"), role="CHF")
    (bench / "hub.key").write_bytes(key_pem)
    (bench / "hub.pem").write_bytes(cert_pem)
    with open(bench / "config.toml", "a") as f:
        f.write('[hub]\nsigning_key = "hub.key"\ncertificate = "hub.pem"\n')
    cfg = load_config(bench / "config.toml")
    image = bench / "fw.ota"
    image.write_bytes(build_image(bytes(range(256)) * 20, manufacturer_code=0x121D, image_type=0, file_version=2, min_hw=0x1111, max_hw=0x1211))

    daemon = start_daemon(bench, "daemon1.log", crash_at="hub_alert.signed")
    try:
        client = wait_until(lambda: radio_up(cfg), 30, "the radio to come up", daemon)
        client.push(image, KILL_HCALCS)
        daemon.wait(120)
        assert daemon.returncode == 137, (bench / "daemon1.log").read_text()[-2000:]
        with StateStore.in_state_dir(cfg.state_dir) as store:
            [reserved] = store.pending_hub_messages()

        daemon = start_daemon(bench, "daemon2.log")
        client = wait_until(lambda: radio_up(cfg), 30, "the radio after restart", daemon)
        client.wait_job("1", ("held",), timeout=120)
        [alert] = hubs(client.messages()["messages"])
        assert (alert["id"], alert["counter"], alert["signature"], alert["code_hex"]) == (reserved.message_id, reserved.counter, "valid", "0x0128")
        assert alert["details"]["response_code"] == 0
        # The device asks again while held (each answered with the hold): still one alert.
        wait_until(lambda: client.job("1")["held_requests"] >= 2, 60, "a second Upgrade End Request", daemon)
        assert len(hubs(client.messages()["messages"])) == 1
    finally:
        if daemon.poll() is None:
            daemon.terminate()
            daemon.wait(20)
