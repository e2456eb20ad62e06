"""Issue 13 end to end, through the daemon on the simulated radio: the simulated devices
speak GBCS over the tunnel and every message is in the store.

HCALCS: push sr11.1-firmware-image.bin -> the hub's CCS08 0x8F8A and the device's
0x8F72 receipt alert; a CS06 for the real hash (signed with the RTDS supplier key the
device trusts) -> forwarded over the tunnel -> the device activates by itself and its
signed response (code 0, the new version) is kept with signature "valid" (the device's
certificate given by `[[device]] gbcs_certificate`); the RTDS placeholder-hash command
is refused by the gate and never reaches the device; a future-dated command gives the
0x00CA 0x8F66 alert at its time. PPMID one-step: the CCS08, then its CS09 with
activateImage 0, or 1 with ``activation_fails``.

Contents are checked against DER written out here, not against the builders.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
from pathlib import Path
from typing import Any

import pytest
import zigpy.types as zt
from cryptography.hazmat.primitives.asymmetric import ec
from typer.testing import CliRunner

from gateway.config import Config, load_config
from gateway.gbcs.ids import EntityId
from gateway.gbcs.sign import generate_supplier_identity, load_signing_key, sign_activation
from gateway.image import load_image
from gateway.ota import events as ev
from han_ota.cli import _mount, app
from han_ota.daemon import Daemon, DaemonStartError
from han_ota.hub_alerts import device_keys_of
from radios.sim.gbcs import read_message
from tests.han_ota.test_daemon import Bench, short_dir, started, wait_for  # noqa: F401 (short_dir: a fixture)

DATA = Path(__file__).parents[1] / "data" / "gbcs"
SUPPLIER = "90B3D51F30010000"
HUB_ID = "00DB1234567890A2"
ACB_ID = "90B3D51F30000002"
HCALCS = "00:db:12:34:56:78:90:a0"  # the RTDS commands' recipient
PPMID = "00:db:12:34:56:78:90:a4"
OLD, NEW = 0xACDCACDB, 0xACDCACDC  # the sample images' file version, and the one before
COMMON = "manufacturer_code=0x121D:hardware_version=0x1111:query_delay=0.05:wait_interval=0.2:response_timeout=0.5"
HCALCS_SPEC = f"hcalcs:{HCALCS}:image_type=0:file_version={OLD:#x}:{COMMON}:supplier_key={DATA / 'supplier-90b3d51f30010000-ds.pem'}"
PPMID_SPEC = f"ppmid:{PPMID}:image_type=0x84:file_version={OLD:#x}:{COMMON}"


@pytest.fixture(scope="module")
def key() -> ec.EllipticCurvePrivateKey:
    return load_signing_key((DATA / "supplier-90b3d51f30010000-ds.key").read_bytes())


def cs06(key: ec.EllipticCurvePrivateKey, device: str, image: str, counter: int, **kw: Any) -> bytes:
    digest = load_image(DATA / image).manufacturer_image_hash
    return sign_activation(key, originator=EntityId.parse(SUPPLIER), device=EntityId.parse(device), image_hash=digest, counter=counter, **kw)


def write_config(root: Path, bench: Bench, ieee: str, kind: str, activation: str) -> Config:
    """The config file, the device's certificate as the simulated device prints it."""
    (root / "device.pem").write_text(bench.device(ieee).gbcs_certificate_pem)
    return load_config(gbcs_config(root, ieee, kind, activation))


def gbcs_config(root: Path, ieee: str, kind: str, activation: str, extra: str = "") -> Path:
    """A config file as a lab writes one: the hub's identity (written here), the RTDS
    supplier, the device with its `activation` and its certificate (device.pem)."""
    key_pem, cert_pem = generate_supplier_identity(EntityId.parse(HUB_ID), role="CHF")
    (root / "hub.key").write_bytes(key_pem)
    (root / "hub.pem").write_bytes(cert_pem)
    (root / "state").mkdir(exist_ok=True)
    path = root / "config.toml"
    path.write_text(
        f"""\
state_dir = "state"
control_socket = "run/control.sock"
[ota]
rate_bytes_per_s = 10000000
burst_bytes = 1000000
stall_timeout = 20
[hub]
entity_id = "{HUB_ID}"
signing_key = "hub.key"
certificate = "hub.pem"
acb_id = "{ACB_ID}"
[[supplier]]
id = "{SUPPLIER}"
certificate = "{DATA / 'supplier-90b3d51f30010000-ds.pem'}"
[[device]]
ieee = "{ieee}"
kind = "{kind}"
supplier = "{SUPPLIER}"
activation = "{activation}"
gbcs_certificate = "device.pem"
{extra}"""
    )
    return path


async def messages(daemon: Any, device: str) -> list[dict[str, Any]]:
    status, body = await daemon.api.messages(device, None, 500)
    assert status == 200
    return list(body["messages"])


async def wait_message(daemon: Any, device: str, match: Any, what: str, timeout: float = 30) -> dict[str, Any]:
    found: list[dict[str, Any]] = []

    async def poll() -> None:
        while True:
            found[:] = [m for m in await messages(daemon, device) if match(m)]
            if found:
                return
            await asyncio.sleep(0.05)

    try:
        await asyncio.wait_for(poll(), timeout)
    except TimeoutError:
        raise AssertionError(f"no {what} in the store: {[(m['direction'], m['code_hex']) for m in await messages(daemon, device)]}") from None
    return found[0]


def cli(*args: str) -> Any:
    _mount()
    return CliRunner().invoke(app, list(args))


def content(message: dict[str, Any]) -> bytes:
    """The message's content, read with the simulated devices' reader (not the hub's)."""
    return read_message(bytes.fromhex(message["hex"])).content


def is_code(direction: str, code: int, cra: str | None = None) -> Any:
    return lambda m: m["direction"] == direction and m["code"] == code and (cra is None or m["cra"] == cra)


async def hcalcs_held(root: Path, activation: str = "tunnel") -> tuple[Any, Bench, Any]:
    bench = Bench(HCALCS_SPEC)
    cfg = write_config(root, bench, HCALCS, "hcalcs", activation)
    daemon = await started(cfg, bench)
    status, _ = await daemon.api.push(str(DATA / "sr11.1-firmware-image.bin"), HCALCS, None, False, None)
    assert status == 202
    ieee = zt.EUI64.convert(HCALCS)
    await wait_for(lambda: (j := daemon.engine.job_for_device(ieee)) is not None and j.state is ev.SessionState.HELD, 30, "the hold")
    return daemon, bench, daemon.engine.job_for_device(ieee)


async def test_hcalcs_receipt_alerts_then_a_cs06_it_carries_out_itself(short_dir: Path, key: Any) -> None:
    daemon, bench, job = await hcalcs_held(short_dir)
    try:
        device = bench.device(HCALCS)
        # The hub's CCS08: 0x8F8A, response 0, signed by the hub, to the ACB.
        ccs08 = await wait_message(daemon, HCALCS, is_code("hub", 0x0128), "CCS08")
        assert (ccs08["signature"], ccs08["originator"], ccs08["recipient"]) == ("valid", HUB_ID, ACB_ID)
        assert ccs08["details"]["alert_code"] == "0x8F8A" and ccs08["details"]["response_code"] == 0
        # The device's own receipt alert: ZigBee form, 0x8F72, the Manufacturer Image Hash it computed.
        fdra = await wait_message(daemon, HCALCS, is_code("in", 0x00CF, "alert"), "the device's 0x8F72")
        assert (fdra["signature"], fdra["originator"], fdra["recipient"]) == ("valid", "00DB1234567890A0", SUPPLIER)
        body = content(fdra)
        image_hash = load_image(DATA / "sr11.1-firmware-image.bin").manufacturer_image_hash
        assert body[:5] == bytes.fromhex("0109018F72") and body[-34:] == b"\x09\x20" + image_hash

        command = cs06(key, HCALCS, "sr11.1-firmware-image.bin", 5001)
        status, result = await daemon.api.activate(command.hex(), HCALCS)
        assert status == 200 and result["accepted"], result
        # The device verified it, rebooted into the held image and answered: code 0, the new version.
        await wait_for(lambda: device.current_file_version == NEW, 30, "the device's own activation")
        response = await wait_message(daemon, HCALCS, is_code("in", 0x0012, "response"), "the CS06 response")
        assert (response["signature"], response["counter"], response["originator"]) == ("valid", 5001, "00DB1234567890A0")
        assert content(response) == bytes.fromhex(f"3009020100 0404{NEW:08X}".replace(" ", ""))
        # Forwarded once and unchanged; kept with the job, as status --json shows it.
        out = [m for m in await messages(daemon, HCALCS) if m["direction"] == "out"]
        assert [m["hex"] for m in out] == [command.hex().upper()]
        assert device.tunnel_messages == [command]
        kept = {m["hex"] for m in daemon.views.job_view(job)["messages"]}
        assert {ccs08["hex"], fdra["hex"], out[0]["hex"], response["hex"]} <= kept
        assert device.events("gbcs_activate") and not device.events("gbcs_note")
        # The hold stayed; the device's reporting the new version confirms the push (not "activated by itself").
        await wait_for(lambda: job.state is ev.SessionState.CONFIRMED, 30, f"the job confirmed (it is {job.state.value}: {job.session.reason})")
        # And as `han-ota messages` prints them.
        printed = await asyncio.to_thread(cli, "messages", "--config", str(daemon.config.source), "--device", HCALCS, "--json")
        assert printed.exit_code == 0, printed.output
        lines = [json.loads(line) for line in printed.output.splitlines()]
        assert (response["id"], "valid", response["hex"]) in [(m["id"], m["signature"], m["hex"]) for m in lines]
    finally:
        await daemon.stop()
        await bench.close()


async def test_the_rtds_placeholder_hash_command_is_refused_and_never_reaches_the_device(short_dir: Path, key: Any) -> None:
    daemon, bench, job = await hcalcs_held(short_dir)
    try:
        device = bench.device(HCALCS)
        await wait_for(lambda: daemon.tunnels.state(job.ieee)["state"] == "open", 15, "the tunnel")
        rtds = (DATA / "cs06-immediate-success-command.hex").read_text().strip()
        status, result = await daemon.api.activate(rtds, HCALCS)
        assert not result["accepted"] and result["response_code"] == 2, result  # hash mismatch
        assert [m for m in await messages(daemon, HCALCS) if m["direction"] == "out"] == []
        assert job.state is ev.SessionState.HELD and device.current_file_version == OLD
        # The tunnel carries messages in order: once a later command has reached the device,
        # a forward of the refused one would have reached it before.
        command = cs06(key, HCALCS, "sr11.1-firmware-image.bin", 5001)
        status, result = await daemon.api.activate(command.hex(), HCALCS)
        assert status == 200 and result["accepted"], result
        await wait_message(daemon, HCALCS, is_code("in", 0x0012, "response"), "the CS06 response")
        assert device.tunnel_messages == [command]
        assert [m["hex"] for m in await messages(daemon, HCALCS) if m["direction"] == "out"] == [command.hex().upper()]
    finally:
        await daemon.stop()
        await bench.close()


async def test_a_future_dated_cs06_gives_the_8f66_alert_at_its_time(short_dir: Path, key: Any) -> None:
    daemon, bench, job = await hcalcs_held(short_dir)
    try:
        device = bench.device(HCALCS)
        at = dt.datetime.now(dt.timezone.utc).replace(microsecond=0) + dt.timedelta(seconds=4)
        command = cs06(key, HCALCS, "sr11.1-firmware-image.bin", 6001, execution_time=at)
        status, result = await daemon.api.activate(command.hex(), HCALCS)
        assert status == 200 and result["accepted"], result
        # First the response "accepted" (NULL), the image still held.
        accepted = await wait_message(daemon, HCALCS, is_code("in", 0x0012, "response"), "the CS06 response")
        assert content(accepted) == b"\x05\x00" and accepted["signature"] == "valid"
        assert device.current_file_version == OLD
        # At its time: 0x00CA, 0x8F66 actioned, the command's counter, code 0 and the new version.
        alert = await wait_message(daemon, HCALCS, is_code("in", 0x00CA, "alert"), "the 0x00CA alert", timeout=30)
        assert dt.datetime.now(dt.timezone.utc) >= at
        stamp = at.strftime("%Y%m%d%H%M%SZ").encode()
        expected = bytes.fromhex("3025 0203008F66 180F".replace(" ", "")) + stamp + bytes.fromhex(f"02021771 3009020100 0404{NEW:08X}".replace(" ", ""))
        assert content(alert) == expected and alert["signature"] == "valid" and alert["recipient"] == SUPPLIER
        await wait_for(lambda: device.current_file_version == NEW, 30, "the activation at its time")
        await wait_for(lambda: job.state is ev.SessionState.CONFIRMED, 30, f"the job confirmed (it is {job.state.value}: {job.session.reason})")
    finally:
        await daemon.stop()
        await bench.close()


@pytest.mark.parametrize("fails", [False, True])
async def test_ppmid_one_step_ccs08_then_its_cs09(short_dir: Path, key: Any, fails: bool) -> None:
    bench = Bench(PPMID_SPEC + (":activation_fails=true" if fails else ""))
    cfg = write_config(short_dir, bench, PPMID, "ppmid", "upgrade-end")
    daemon = await started(cfg, bench)
    try:
        command = cs06(key, PPMID, "sr11.4-ppmid-firmware-image.bin", 7001)
        status, body = await daemon.api.push(str(DATA / "sr11.4-ppmid-firmware-image.bin"), PPMID, command.hex(), False, None)
        assert status == 202, body
        ccs08 = await wait_message(daemon, PPMID, is_code("hub", 0x0128), "CCS08")
        assert ccs08["details"]["alert_code"] == "0x8F8A" and ccs08["signature"] == "valid"
        cs09 = await wait_message(daemon, PPMID, is_code("in", 0x012B, "alert"), "the PPMID's CS09")
        assert cs09["id"] > ccs08["id"] and cs09["signature"] == "valid"
        assert (cs09["originator"], cs09["recipient"]) == ("00DB1234567890A4", ACB_ID)
        version = OLD if fails else NEW
        body09 = content(cs09)
        # SEQUENCE { 0x8F8B, date-time, firmwareVersion, activateImage }
        assert body09[:7] == bytes.fromhex("301F 0203008F8B".replace(" ", ""))
        assert body09[-9:] == bytes.fromhex(f"0404{version:08X}0201{int(fails):02X}")
        assert bench.device(PPMID).current_file_version == version
    finally:
        await daemon.stop()
        await bench.close()


def test_the_gbcs_certificate_key_is_a_path_beside_the_config(tmp_path: Path) -> None:
    bench = Bench(HCALCS_SPEC)
    cfg = write_config(tmp_path, bench, HCALCS, "hcalcs", "tunnel")
    [device] = cfg.devices
    assert device.gbcs_certificate == tmp_path / "device.pem"
    [(entity, public)] = device_keys_of(cfg).items()
    assert str(entity) == "00DB1234567890A0"
    assert public.public_numbers() == bench.device(HCALCS).gbcs.certificate.public_key().public_numbers()


async def test_a_gbcs_certificate_that_cannot_be_read_stops_the_start_naming_it(short_dir: Path) -> None:
    cfg = write_config(short_dir, Bench(HCALCS_SPEC), HCALCS, "hcalcs", "tunnel")
    (short_dir / "device.pem").write_text("not a certificate\n")
    with pytest.raises(DaemonStartError, match="gbcs_certificate") as caught:
        await Daemon(cfg).start()
    assert "device.pem" in str(caught.value)
