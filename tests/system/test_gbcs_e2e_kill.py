"""`han-ota run` SIGKILLed in the GBCS flow of issue 13 (the kill-test pattern of
tests/system/test_hub_alerts_kill.py, the simulated radio in the daemon's process, so the
simulated HCALCS dies with it and comes back fresh, its identity from files):

- between a forwarded CS06 and the device's response (the command kept but not yet
  sent; sent and acknowledged, the response not yet in);
- while the hub signs its CCS08 (counter reserved; signed, not yet recorded).

After the restart every message is in the store once, no two share an originator,
CRA flag and counter, the hub's counter never went back, and the flow still ends with
the device's own activation and its signed response (code 0) kept as "valid".
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization

from eui64 import Eui64
from gateway.audit import verify_log
from gateway.config import load_config
from gateway.crashpoint import HUB_ALERT_POINTS, TUNNEL_POINTS
from gateway.gbcs.sign import load_signing_key
from gateway.store import StateStore
from han_ota.client import DaemonError
from radios.sim.gbcs import generate_identity
from tests.system.test_daemon_kill import start_daemon
from tests.han_ota.test_daemon_restart import radio_up, wait_until
from tests.system.test_gbcs_e2e import cs06 as signed_cs06
from tests.system.test_gbcs_e2e import gbcs_config

DATA = Path(__file__).parents[1] / "data" / "gbcs"
HCALCS = "00:db:12:34:56:78:90:a0"
IMAGE = DATA / "sr11.1-firmware-image.bin"
NEW = 0xACDCACDC


@pytest.fixture
def bench_dir() -> Any:
    root = Path(tempfile.mkdtemp(prefix="hoek", dir="/tmp"))
    # The device's own identity in files: the device rebuilt after the kill signs with the same key.
    device = generate_identity(Eui64.parse(HCALCS), "simulated HCALCS")
    (root / "device.key").write_bytes(
        device.signing_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    (root / "device.pem").write_text(device.certificate_pem)
    sim = f"""\
[[sim_device]]
kind = "hcalcs"
ieee = "{HCALCS}"
manufacturer_code = 0x121D
image_type = 0
file_version = 0xACDCACDB
hardware_version = 0x1111
query_delay = 0.1
response_timeout = 0.5
wait_interval = 0.3
supplier_key = "{DATA / 'supplier-90b3d51f30010000-ds.pem'}"
gbcs_key = "{root / 'device.key'}"
gbcs_cert = "{root / 'device.pem'}"
"""
    gbcs_config(root, HCALCS, "hcalcs", "tunnel", sim)
    yield root
    shutil.rmtree(root, ignore_errors=True)


def cs06(counter: int) -> str:
    """A CS06 for the image's real hash, signed with the RTDS supplier key the device trusts."""
    return signed_cs06(load_signing_key((DATA / "supplier-90b3d51f30010000-ds.key").read_bytes()), HCALCS, IMAGE.name, counter).hex()


def kept(root: Path) -> list[Any]:
    with StateStore.in_state_dir(root / "state") as store:
        return store.list_messages(status=None)


def hub_counter(root: Path) -> Any:
    with StateStore.in_state_dir(root / "state") as store:
        return store.hub_counter()


def assert_each_once(messages: list[Any]) -> None:
    """No message twice, no counter reused by one originator for one kind of message."""
    assert len({m.data for m in messages}) == len(messages)
    keys = [(m.originator, m.cra, m.counter) for m in messages]
    assert len(set(keys)) == len(keys), keys


def killed_at(root: Path, point: str, body: Any) -> None:
    """A first daemon that dies at ``point`` while ``body(client)`` drives it."""
    cfg = load_config(root / "config.toml")
    first = start_daemon(root, "first.log", crash_at=point)
    try:
        client = wait_until(lambda: radio_up(cfg), 30, "the first daemon's radio", first)
        with contextlib.suppress(DaemonError, OSError):  # the daemon may die answering
            body(client)
        first.wait(60)
    finally:
        if first.poll() is None:
            first.kill()
            first.wait(10)
    assert first.returncode == 137, (root / "first.log").read_text()[-3000:]


def activated_after_restart(root: Path, command: str, counter: int) -> list[Any]:
    """Second daemon: the device (fresh) is held again, a new CS06 (``command``, with ``counter``) activates it."""
    cfg = load_config(root / "config.toml")
    second = start_daemon(root, "second.log")
    try:
        client = wait_until(lambda: radio_up(cfg), 30, "the second daemon's radio", second)
        client.wait_job("1", ("held",), timeout=60)
        result = client.activate(command, HCALCS)
        assert result["accepted"], result
        response = wait_until(
            lambda: next((m for m in client.messages(device=HCALCS)["messages"] if m["direction"] == "in" and m["code"] == 0x0012), None),
            60, "the device's CS06 response", second,
        )
        assert (response["counter"], response["signature"]) == (counter, "valid")
        status = client.status()
        assert any(m["hex"] == response["hex"] for job in status["jobs"] for m in job["messages"])
    finally:
        second.terminate()
        second.wait(15)
    assert verify_log(cfg.state_dir / "audit.jsonl").ok
    return kept(root)


@pytest.mark.parametrize("point", TUNNEL_POINTS)
def test_killed_between_the_forward_and_the_response(bench_dir: Path, point: str) -> None:
    command = cs06(5001)

    def body(client: Any) -> None:
        client.push(IMAGE, HCALCS)
        client.wait_job("1", ("held",), timeout=60)
        client.activate(command, HCALCS)

    killed_at(bench_dir, point, body)
    before = kept(bench_dir)
    [out] = [m for m in before if m.direction.value == "out"]
    assert out.data is not None and out.data.hex() == command and out.status == "recorded"
    assert not [m for m in before if m.direction.value == "in" and m.message_code == 0x0012]  # no response yet
    [ccs08] = [m for m in before if m.direction.value == "hub"]
    counter_at_kill = hub_counter(bench_dir)
    assert counter_at_kill == (ccs08.counter, ccs08.counter)

    again = cs06(5002)
    after = activated_after_restart(bench_dir, again, 5002)
    assert after[: len(before)] == before  # nothing kept before the kill was lost or changed
    assert [m.data for m in after if m.direction.value == "out"] == [bytes.fromhex(command), bytes.fromhex(again)]
    assert [m.counter for m in after if m.direction.value == "hub"] == [ccs08.counter]  # the job held again: no second alert
    assert_each_once(after)
    last, committed = hub_counter(bench_dir) or (0, None)
    assert last == committed and last >= counter_at_kill[0]


@pytest.mark.parametrize("point", HUB_ALERT_POINTS)
def test_killed_while_signing_the_ccs08_of_a_gbcs_device(bench_dir: Path, point: str) -> None:
    killed_at(bench_dir, point, lambda client: client.push(IMAGE, HCALCS))
    before = kept(bench_dir)
    [reserved] = [m for m in before if m.direction.value == "hub"]
    assert reserved.status == "reserved" and hub_counter(bench_dir) == (reserved.counter, None)

    after = activated_after_restart(bench_dir, cs06(5001), 5001)
    [ccs08] = [m for m in after if m.direction.value == "hub"]
    # Finished at start with the counter reserved for it; the job held again: not sent twice.
    assert (ccs08.message_id, ccs08.counter, ccs08.status, ccs08.signature) == (reserved.message_id, reserved.counter, "recorded", "valid")
    receipts = [m for m in after if m.message_code == 0x00CF]
    assert receipts and all(m.signature == "valid" for m in receipts)  # the device's, once per download
    assert_each_once(after)
    assert hub_counter(bench_dir) == (reserved.counter, reserved.counter)
