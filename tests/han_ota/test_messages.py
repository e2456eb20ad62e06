"""Every GBCS message kept and shown: the daemon's CCS08 alerts in the store, the audit
log, GET /v1/messages, status --json and `han-ota messages` (through the daemon and
offline with --state-dir); the tunnel's messages through HubMessages.record."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import zigpy.types as zt
from typer.testing import CliRunner

from gateway.audit import read_records
from gateway.config import load_config
from gateway.gbcs.alerts import decode_transfer_alert
from gateway.gbcs.apdu import decode_general_signing
from gateway.gbcs.ids import EntityId
from gateway.gbcs.sign import generate_supplier_identity
from han_ota.cli import app, _mount
from han_ota.client import Client
from han_ota.daemon import Daemon
from radios.sim.testing import build_ota_image
from tests.han_ota.test_daemon import call, wait_for

HCALCS = "00:11:22:33:44:55:66:77"
FAST = "query_delay=0.05:wait_interval=0.2:reboot_time=0.05:response_timeout=0.5"
HUB_ID = "00DB1234567890A2"
DATA = Path(__file__).parents[1] / "data" / "gbcs"


@pytest.fixture
def short_dir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="homsg", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def write_config(root: Path) -> Path:
    key_pem, cert_pem = generate_supplier_identity(EntityId.parse(HUB_ID), role="CHF")
    (root / "hub.key").write_bytes(key_pem)
    (root / "hub.pem").write_bytes(cert_pem)
    (root / "state").mkdir()
    path = root / "config.toml"
    path.write_text(
        'state_dir = "state"\ncontrol_socket = "control.sock"\n[ota]\nrate_bytes_per_s = 1000000\nburst_bytes = 100000\n'
        '[hub]\nsigning_key = "hub.key"\ncertificate = "hub.pem"\n'
    )
    return path


def alert_of(message: dict[str, Any]) -> Any:
    apdu, _ = decode_general_signing(bytes.fromhex(message["hex"]))
    return decode_transfer_alert(apdu.content)[0]


#: The simulated HCALCS's own receipt alert (0x00CF, radios/sim/gbcs) comes over the
#: tunnel whenever it opens after the download: not what these tests count.
RECEIPT = 0x00CF


def counted(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [m for m in messages if m["code"] != RECEIPT]


def cli(*args: str) -> Any:
    _mount()
    return CliRunner().invoke(app, list(args))


async def test_daemon_keeps_and_shows_the_hubs_alerts(short_dir: Path) -> None:
    path = write_config(short_dir)
    cfg = load_config(path)
    fw = short_dir / "fw.ota"
    fw.write_bytes(build_ota_image(0x121D, 0x0000, 2, bytes(i % 251 for i in range(3000)), min_hw=0x1111, max_hw=0x1111))
    daemon = Daemon(cfg, [f"hcalcs:{HCALCS}:{FAST}"])
    await daemon.start()
    client = Client(cfg.control_socket, timeout=10)
    try:
        await daemon.wait_radio(30)
        await call(client.push, fw, HCALCS)
        await call(client.wait_job, "1", ("held",), timeout=60)
        [held] = counted((await call(client.messages))["messages"])
        assert (held["direction"], held["code"], held["signature"], held["job"], held["device"]) == ("hub", 0x0128, "valid", "1", HCALCS)
        assert (alert_of(held).alert_code, alert_of(held).response_code, alert_of(held).firmware_version) == (0x8F8A, 0, 2)
        status = await call(client.status)
        assert [m["hex"] for m in counted(status["jobs"][0]["messages"])] == [held["hex"]]

        # A message from the tunnel (H-tunnel's on_message): kept with the device's job.
        cs09 = bytes.fromhex((DATA / "cs09-8f8b-alert.hex").read_text())
        assert daemon.hub is not None
        daemon.hub.record("in", zt.EUI64.convert(HCALCS), cs09)

        await call(client.cancel, "1")
        await wait_for(lambda: len(counted([m.to_dict() for m in daemon.store.list_messages()])) == 3, what="the discard alert")  # type: ignore[union-attr]
        listed = counted((await call(client.messages, device=HCALCS))["messages"])
        assert [(m["direction"], m["code_hex"], m["job"]) for m in listed] == [("hub", "0x0128", "1"), ("in", "0x012B", "1"), ("hub", "0x0128", "1")]
        assert listed[1]["signature"] == "unknown signer" and listed[1]["originator"] == "00DB1234567890A4"
        assert alert_of(listed[2]).response_code == 1 and listed[2]["counter"] > listed[0]["counter"]
        assert counted((await call(client.messages, after=listed[1]["id"]))["messages"]) == [listed[2]]
        assert (await call(client.messages, device="00:11:22:33:44:55:66:00"))["messages"] == []

        out = await asyncio.to_thread(cli, "messages", "--config", str(path), "--json")
        assert out.exit_code == 0, out.output
        assert [m["id"] for m in counted([json.loads(line) for line in out.output.splitlines()])] == [m["id"] for m in listed]
    finally:
        await daemon.stop("test")
    audited = [r for r in read_records(cfg.state_dir / "audit.jsonl") if r.event == "gbcs.message" and r.fields["code_hex"] != f"0x{RECEIPT:04X}"]
    assert [r.fields["hex"] for r in audited] == [m["hex"] for m in listed]
    assert all(str(r.device) == HCALCS and r.job == 1 for r in audited)

    # Offline, from the state directory.
    out = cli("messages", "--state-dir", str(cfg.state_dir), "--device", HCALCS)
    assert out.exit_code == 0, out.output
    lines = [line for line in out.output.splitlines() if f"0x{RECEIPT:04X}" not in line]
    assert len(lines) == 3 and "0x0128 alert 00DB1234567890A2->90B3D51F30000002" in lines[0] and "signature=valid" in lines[0]
    assert lines[0].endswith(listed[0]["hex"])


async def test_a_restarted_daemon_does_not_alert_twice(short_dir: Path) -> None:
    path = write_config(short_dir)
    cfg = load_config(path)
    fw = short_dir / "fw.ota"
    fw.write_bytes(build_ota_image(0x121D, 0x0000, 2, bytes(3000), min_hw=0x1111, max_hw=0x1111))
    daemon = Daemon(cfg, [f"hcalcs:{HCALCS}:{FAST}"])
    await daemon.start()
    try:
        await daemon.wait_radio(30)
        client = Client(cfg.control_socket, timeout=10)
        await call(client.push, fw, HCALCS)
        await call(client.wait_job, "1", ("held",), timeout=60)
    finally:
        await daemon.stop("test")
    again = Daemon(dataclasses.replace(cfg), [f"hcalcs:{HCALCS}:{FAST}"])
    await again.start()
    try:
        await again.wait_radio(30)
        client = Client(cfg.control_socket, timeout=10)
        await call(client.wait_job, "1", ("held",), timeout=60)  # resumed, held as it was: no transfer ended
        assert [m["job"] for m in counted([m.to_dict() for m in again.store.list_messages()])] == ["1"]  # type: ignore[union-attr]
    finally:
        await again.stop("test")


def test_messages_offline_without_a_store_says_so(tmp_path: Path) -> None:
    out = cli("messages", "--state-dir", str(tmp_path))
    assert out.exit_code == 1 and "no state store in" in out.output
    assert cli("messages", "--state-dir", str(tmp_path), "--device", "nope").exit_code == 2


def test_messages_follow_prints_each_new_message_once(tmp_path: Path) -> None:
    import queue
    import subprocess
    import sys
    import threading

    from gateway.store import StateStore

    cs09 = bytes.fromhex((DATA / "cs09-8f8b-alert.hex").read_text())
    fdra = bytes.fromhex((DATA / "fdra-zigbee-8f72-alert.hex").read_text())
    with StateStore.in_state_dir(tmp_path) as store:
        store.record_message("in", HCALCS, cs09)
    proc = subprocess.Popen(
        [sys.executable, "-m", "han_ota.cli", "messages", "--state-dir", str(tmp_path), "--follow", "--json"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in proc.stdout or ()], daemon=True).start()
    try:
        first = json.loads(lines.get(timeout=60))
        assert (first["id"], first["hex"]) == (1, cs09.hex().upper())
        with StateStore.in_state_dir(tmp_path) as store:
            store.record_message("in", HCALCS, fdra)
        second = json.loads(lines.get(timeout=60))
        assert (second["id"], second["code_hex"], second["signature"]) == (2, "0x00CF", "unknown signer")
        with pytest.raises(queue.Empty):
            lines.get(timeout=1.5)  # three polls later: nothing printed twice
    finally:
        proc.terminate()
        proc.wait(15)


async def test_control_messages_route_and_its_query() -> None:
    from han_ota.control import HttpError, Request, dispatch

    seen: list[tuple[Any, ...]] = []

    class Api:
        async def messages(self, device: str | None, after: int | None, limit: int) -> tuple[int, Any]:
            seen.append((device, after, limit))
            return 200, {"messages": []}

    def request(query: dict[str, str]) -> Any:
        return Request(method="GET", target="/v1/messages", path="/v1/messages", query=query, headers={})

    assert await dispatch(Api(), request({})) == (200, {"messages": []})  # type: ignore[arg-type]
    await dispatch(Api(), request({"device": HCALCS, "after": "5", "limit": "7"}))  # type: ignore[arg-type]
    assert seen == [(None, None, 1000), (HCALCS, 5, 7)]
    with pytest.raises(HttpError, match="unknown query parameter"):
        await dispatch(Api(), request({"since": "1"}))  # type: ignore[arg-type]
    with pytest.raises(HttpError, match="limit=0 must be between 1 and 10000"):
        await dispatch(Api(), request({"limit": "0"}))  # type: ignore[arg-type]
