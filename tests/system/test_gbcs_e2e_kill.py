"""`han-ota run` SIGKILLed in the GBCS flow of issue 13 (the kill points of
gateway/crashpoint.py):

- between a forwarded CS06 and the device's response (the command kept but not yet
  sent; sent and acknowledged, the response not yet in). The HCALCS sits behind the
  emulated Z-Stack coordinator in the test's process, so it outlives the daemon as a
  real device does: after the restart the kept command goes to it again, once, from
  the same row of the store;
- while the hub signs its CCS08 (counter reserved; signed, not yet recorded), with the
  simulated radio in the daemon's process (the pattern of
  tests/system/test_hub_alerts_kill.py): the simulated HCALCS dies with it and comes back
  fresh, its identity from files.

After the restart every message is in the store once, no two share an originator,
CRA flag and counter, and the hub's counter never went back.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

import pytest
import zigpy.types as zt
from cryptography.hazmat.primitives import serialization

from eui64 import Eui64
from gateway.audit import verify_log
from gateway.config import load_config
from gateway.crashpoint import HUB_ALERT_POINTS, TUNNEL_POINTS
from gateway.gbcs.sign import load_signing_key
from gateway.store import StateStore
from han_ota.client import DaemonError
from han_ota.hub_alerts import REFORWARDED
from radios.emulate.znp.server import running_znp_emulator
from radios.sim.spec import parse_sim_device
from radios.sim.gbcs import generate_identity
from tests.system.test_daemon_kill import start_daemon
from tests.han_ota.test_daemon_restart import radio_up, wait_until
from tests.system.test_gbcs_e2e import cs06 as signed_cs06
from tests.system.test_gbcs_e2e import HCALCS_SPEC, OLD, gbcs_config

DATA = Path(__file__).parents[1] / "data" / "gbcs"
HCALCS = "00:db:12:34:56:78:90:a0"
IMAGE = DATA / "sr11.1-firmware-image.bin"
NEW = 0xACDCACDC
IEEE = zt.EUI64.convert(HCALCS)


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


def forwards(root: Path) -> list[Any]:
    return [m for m in kept(root) if m.direction.value == "out"]


@pytest.mark.parametrize("point", TUNNEL_POINTS)
async def test_a_forward_killed_before_its_response_goes_again_once_to_the_device_that_outlived_the_daemon(point: str) -> None:
    """The HCALCS sits behind the emulated Z-Stack coordinator in this process, so it
    outlives the daemon (a real device does): killed with the CS06 kept but not yet
    sent, the restarted daemon forwards the kept command, the device activates and its
    response (code 0) is kept; killed once the device had acknowledged it (its response
    lost with the daemon), the command goes again, once, and the device refuses the
    replayed counter. Either way the command is one row in the store, noted re-forwarded,
    no message is kept twice, no counter is reused, and the hub's counter never goes back."""
    root = Path(tempfile.mkdtemp(prefix="hoer", dir="/tmp"))
    try:
        async with running_znp_emulator([parse_sim_device(HCALCS_SPEC)]) as (path, server):
            device = server.coordinator.han.devices[IEEE]
            (root / "device.pem").write_text(device.gbcs_certificate_pem)
            gbcs_config(root, HCALCS, "hcalcs", "tunnel", f'[radio]\nkind = "znp"\npath = "{path}"\n')
            command = cs06(5001)

            def first(client: Any) -> None:
                client.push(IMAGE, HCALCS)
                client.wait_job("1", ("held",), timeout=120)
                client.activate(command, HCALCS)

            await asyncio.to_thread(killed_at, root, point, first)
            [out] = forwards(root)
            assert out.data is not None and out.data.hex() == command and out.status == "recorded" and not out.details
            before = kept(root)
            assert not [m for m in before if m.direction.value == "in" and m.message_code == 0x0012]  # no response kept
            [ccs08] = [m for m in before if m.direction.value == "hub"]
            counter_at_kill = hub_counter(root)
            assert counter_at_kill == (ccs08.counter, ccs08.counter)
            if point == "tunnel.recorded":
                assert device.tunnel_messages == [] and device.current_file_version == OLD  # never sent
            else:  # the device had it (its acknowledgement was the kill point) and acted on it
                assert device.tunnel_messages == [bytes.fromhex(command)]
                await wait_until_async(lambda: device.current_file_version == NEW, 60, "the device's own activation")

            def second(expect_response: bool) -> None:
                cfg = load_config(root / "config.toml")
                daemon = start_daemon(root, "second.log")
                try:
                    client = wait_until(lambda: radio_up(cfg), 60, "the second daemon's radio", daemon)
                    wait_until(lambda: len(device.tunnel_messages) == (1 if expect_response else 2), 120, "the re-forward at the device", daemon)
                    wait_until(
                        lambda: [m for m in client.messages(device=HCALCS)["messages"] if m["direction"] == "out" and (m["details"] or {}).get(REFORWARDED)],
                        60, "the re-forward noted", daemon,
                    )
                    if expect_response:
                        response = wait_until(
                            lambda: next((m for m in client.messages(device=HCALCS)["messages"] if m["direction"] == "in" and m["code"] == 0x0012), None),
                            60, "the device's CS06 response", daemon,
                        )
                        assert (response["counter"], response["signature"]) == (5001, "valid")
                        assert bytes.fromhex(f"30090201000404{NEW:08X}") in bytes.fromhex(response["hex"])
                    # The device reporting the new version confirms the push, also when it activated while the daemon was dead.
                    job = wait_until(lambda: (j := client.job("1")) and j["state"] in ("confirmed", "failed") and j, 60, "the job's end", daemon)
                    assert job["state"] == "confirmed", job
                finally:
                    daemon.terminate()
                    daemon.wait(15)
                assert daemon.returncode == 0, (root / "second.log").read_text()[-3000:]

            await asyncio.to_thread(second, point == "tunnel.recorded")
            assert all(m == bytes.fromhex(command) for m in device.tunnel_messages)
            if point == "tunnel.recorded":
                assert device.tunnel_messages == [bytes.fromhex(command)] and device.current_file_version == NEW
                assert not device.events("gbcs_note")
            else:  # once more, refused by the device as a replay: no second activation, no response
                assert len(device.tunnel_messages) == 2
                assert [e for e in device.events("gbcs_note") if "counter 5001 is not above" in str(e)], device.events("gbcs_note")
                assert len(device.events("gbcs_activate")) == 1

        after = kept(root)
        fields = lambda m: (m.message_id, m.direction, m.data, m.counter, m.status, m.signature)  # noqa: E731
        assert [fields(m) for m in after[: len(before)]] == [fields(m) for m in before]  # nothing kept before was lost or changed
        [again] = forwards(root)  # the same row, not a second one
        assert (again.message_id, again.data) == (out.message_id, out.data) and REFORWARDED in (again.details or {})
        assert [m.counter for m in after if m.direction.value == "hub"] == [ccs08.counter]  # no second CCS08
        assert_each_once(after)
        last, committed = hub_counter(root) or (0, None)
        assert last == committed and last >= counter_at_kill[0]
        cfg = load_config(root / "config.toml")
        assert verify_log(cfg.state_dir / "audit.jsonl").ok
        audited = [json.loads(line) for line in (cfg.state_dir / "audit.jsonl").read_text().splitlines()]
        assert [r.get("message_id") for r in audited if r.get("event") == "gbcs.reforward"] == [out.message_id]
    finally:
        shutil.rmtree(root, ignore_errors=True)


async def wait_until_async(predicate: Any, timeout: float, what: str) -> None:
    async def poll() -> None:
        while not predicate():
            await asyncio.sleep(0.05)

    try:
        await asyncio.wait_for(poll(), timeout)
    except TimeoutError:
        raise AssertionError(f"timed out waiting for {what}") from None


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
