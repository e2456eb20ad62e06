"""HCALCS activation as a real hub does it (issue 13 part 2), through the daemon on the
simulated radio: a verified CS06 forwarded unchanged over the tunnel, the hold kept or
released as the device's `activation` says, a refused command never forwarded, and
`gbcs send` (the control API's POST /v1/gbcs/send) printing the device's response."""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
from pathlib import Path
from typing import Any

import pytest
import zigpy.types as zt
from cryptography.hazmat.primitives.asymmetric import ec

from gateway.config import DeviceConfig, OtaConfig, SupplierConfig, load_config, parse_eui64
from gateway.gbcs.ids import EntityId
from gateway.gbcs.sign import load_signing_key, sign_activation
from gateway.image import load_image
from gateway.ota import events as ev
from han_ota.control import HttpError
from tests.han_ota.test_daemon import Bench, events, make_config, short_dir, started, wait_for  # noqa: F401 (short_dir: a fixture)

DATA = Path(__file__).parents[1] / "data" / "gbcs"
SUPPLIER = EntityId.parse("90B3D51F30010000")
HCALCS = "00:db:12:34:56:78:90:a0"
IEEE = zt.EUI64.convert(HCALCS)
SPEC = f"hcalcs:{HCALCS}:manufacturer_code=0x121D:image_type=0:file_version=0xACDCACDB:hardware_version=0x1111:query_delay=0.05:wait_interval=0.2:response_timeout=0.5"


@pytest.fixture(scope="module")
def key() -> ec.EllipticCurvePrivateKey:
    return load_signing_key((DATA / "supplier-90b3d51f30010000-ds.key").read_bytes())


def cs06(key: ec.EllipticCurvePrivateKey, counter: int) -> bytes:
    image = load_image(DATA / "sr11.1-firmware-image.bin")
    return sign_activation(key, originator=SUPPLIER, device=EntityId.parse(HCALCS), image_hash=image.manufacturer_image_hash, counter=counter)


async def held_daemon(root: Path, activation: str) -> tuple[Any, Bench, Any]:
    cfg = make_config(
        root,
        suppliers=(SupplierConfig(id=str(SUPPLIER), certificate=DATA / "supplier-90b3d51f30010000-ds.pem"),),
        devices=(DeviceConfig(ieee=parse_eui64(HCALCS), kind="hcalcs", supplier=str(SUPPLIER), activation=activation),),
        ota=OtaConfig(rate_bytes_per_s=10_000_000, burst_bytes=1_000_000, stall_timeout_s=20),
    )
    bench = Bench(SPEC)
    daemon = await started(cfg, bench, session_overrides=dict(confirm_read_after_s=0.2, confirm_timeout_s=20))
    status, _ = await daemon.api.push(str(DATA / "sr11.1-firmware-image.bin"), HCALCS, None, False, None)
    assert status == 202
    await wait_for(lambda: (j := daemon.engine.job_for_device(IEEE)) is not None and j.state is ev.SessionState.HELD, 30, "the hold")
    await wait_for(lambda: daemon.tunnels.state(IEEE)["state"] == "open", 15, "the tunnel")
    return daemon, bench, cfg


def answering(device: Any) -> list[bytes]:
    """The device answers each message with a stand-in response (H-simgbcs gives the
    real CS06 response); returns what it received."""
    got: list[bytes] = []

    def handler(data: bytes) -> list[bytes]:
        got.append(data)
        return [b"\xdf\x09" + data[2:12]]

    device.tunnel_handler = handler
    return got


@pytest.mark.parametrize("activation", ["tunnel", "both"])
async def test_a_verified_cs06_is_forwarded_unchanged_and_its_response_printed(short_dir: Path, key: Any, activation: str) -> None:
    daemon, bench, cfg = await held_daemon(short_dir, activation)
    try:
        device = bench.device(HCALCS)
        got = answering(device)
        command = cs06(key, 1001)
        status, result = await daemon.api.gbcs_send(command.hex(), HCALCS, 20)
        assert status == 200 and result["forwarded"], result
        assert result["verdict"]["accepted"] and result["message_code"] == "0x0012"
        assert got == [command]  # unchanged, once
        assert result["response"] == (b"\xdf\x09" + command[2:12]).hex().upper()
        job = daemon.engine.job_for_device(IEEE)
        if activation == "tunnel":
            # The hold stays: the device's own release (its CS06 handling) is H-simgbcs's.
            await asyncio.sleep(1.0)
            assert job.state is ev.SessionState.HELD and device.current_file_version == 0xACDCACDB
        else:
            await wait_for(lambda: job.state is ev.SessionState.CONFIRMED, 30, "the release by Upgrade End Response")
        # Out and in, audited; the device's receipt alert (0x8F72) after its download is in too.
        carried = [(r.fields["direction"], r.fields["sha256"]) for r in events(cfg) if r.event == "gbcs.tunnel"]
        assert carried.count(("out", hashlib.sha256(command).hexdigest())) == 1
        assert ("in", hashlib.sha256(b"\xdf\x09" + command[2:12]).hexdigest()) in carried
    finally:
        await daemon.stop()
        await bench.close()


async def test_activation_tunnel_forwards_what_activate_submits_and_keeps_the_hold(short_dir: Path, key: Any) -> None:
    daemon, bench, _ = await held_daemon(short_dir, "tunnel")
    try:
        got = answering(bench.device(HCALCS))
        command = cs06(key, 1002)
        status, result = await daemon.api.activate(command.hex(), HCALCS)
        assert result["accepted"], result
        await wait_for(lambda: got == [command], 15, "the forwarded CS06")
        assert daemon.engine.job_for_device(IEEE).state is ev.SessionState.HELD
    finally:
        await daemon.stop()
        await bench.close()


async def test_activation_upgrade_end_forwards_nothing(short_dir: Path, key: Any) -> None:
    daemon, bench, _ = await held_daemon(short_dir, "upgrade-end")
    try:
        got = answering(bench.device(HCALCS))
        job = daemon.engine.job_for_device(IEEE)
        status, result = await daemon.api.activate(cs06(key, 1003).hex(), HCALCS)
        assert result["accepted"], result
        await wait_for(lambda: job.state is ev.SessionState.CONFIRMED, 30, "the release")
        assert got == []
    finally:
        await daemon.stop()
        await bench.close()


async def test_a_refused_command_never_reaches_the_device(short_dir: Path) -> None:
    daemon, bench, _ = await held_daemon(short_dir, "both")
    try:
        got = answering(bench.device(HCALCS))
        vector = (DATA / "cs06-immediate-success-command.hex").read_text()  # the RTDS placeholder hash
        status, result = await daemon.api.gbcs_send(vector, HCALCS, 5)
        assert (status, result["forwarded"], result["verdict"]["reason"]) == (200, False, "hash mismatch")
        await asyncio.sleep(0.5)
        assert got == [] and daemon.engine.job_for_device(IEEE).state is ev.SessionState.HELD
        with pytest.raises(HttpError, match="not forwarded: the command is addressed to"):
            await daemon.api.gbcs_send(vector, "00:db:12:34:56:78:90:a9", 5)
        response = (DATA / "cs06-immediate-success-response.hex").read_text()
        with pytest.raises(HttpError, match="a response, not a command"):
            await daemon.api.gbcs_send(response, None, 5)
    finally:
        await daemon.stop()
        await bench.close()


async def test_stopping_the_daemon_closes_the_tunnel(short_dir: Path) -> None:
    daemon, bench, _ = await held_daemon(short_dir, "both")
    device = bench.device(HCALCS)
    try:
        await daemon.stop()
        await wait_for(lambda: device.tunnel.tunnel is None, 10, "CloseTunnel")
    finally:
        await bench.close()


def test_the_activation_key_and_its_defaults(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text(
        '[[device]]\nieee = "00:db:12:34:56:78:90:a0"\nkind = "hcalcs"\n'
        '[[device]]\nieee = "00:db:12:34:56:78:90:a1"\nkind = "ppmid"\n'
        '[[device]]\nieee = "00:db:12:34:56:78:90:a2"\nkind = "hcalcs"\nactivation = "tunnel"\n'
    )
    cfg = load_config(path)
    assert [d.activation for d in cfg.devices] == ["both", "upgrade-end", "tunnel"]
    path.write_text('[[device]]\nieee = "00:db:12:34:56:78:90:a0"\nkind = "hcalcs"\nactivation = "later"\n')
    with pytest.raises(ValueError, match=r"device\[0\]\.activation"):
        load_config(path)


async def test_a_restarted_daemon_opens_the_tunnel_again(short_dir: Path, key: Any) -> None:
    daemon, bench, cfg = await held_daemon(short_dir, "tunnel")
    device = bench.device(HCALCS)
    try:
        await daemon.stop()
        await wait_for(lambda: device.tunnel.tunnel is None, 10, "CloseTunnel")
        daemon = await started(cfg, bench, session_overrides=dict(confirm_read_after_s=0.2, confirm_timeout_s=20))
        await wait_for(lambda: daemon.tunnels.state(IEEE)["state"] == "open", 30, "the tunnel after the restart")
        await wait_for(lambda: (j := daemon.engine.job_for_device(IEEE)) is not None and j.state is ev.SessionState.HELD, 30, "the resumed hold")
        got = answering(device)
        command = cs06(key, 1004)  # ECDSA: each signing differs
        status, result = await daemon.api.gbcs_send(command.hex(), HCALCS, 20)
        assert result["forwarded"] and got == [command], result
    finally:
        await daemon.stop()
        await bench.close()


async def test_gbcs_send_on_the_command_line_prints_the_response(short_dir: Path, key: Any) -> None:
    import json

    from typer.testing import CliRunner

    from han_ota import cli_gbcs

    daemon, bench, _ = await held_daemon(short_dir, "tunnel")
    try:
        answering(bench.device(HCALCS))
        config = short_dir / "cli.toml"
        config.write_text('state_dir = "state"\ncontrol_socket = "run/control.sock"\n')
        command = short_dir / "cs06.hex"
        raw = cs06(key, 1005)
        command.write_text(raw.hex().upper())
        runner = CliRunner()
        out = await asyncio.to_thread(runner.invoke, cli_gbcs.app, ["send", str(command), "--device", HCALCS, "--config", str(config), "--json"])
        assert out.exit_code == 0, out.output
        result = json.loads(out.output.splitlines()[-1])
        assert result["forwarded"] and result["response"] == (b"\xdf\x09" + raw[2:12]).hex().upper()
        text = await asyncio.to_thread(runner.invoke, cli_gbcs.app, ["send", str(command), "--device", HCALCS, "--config", str(config)])
        assert text.exit_code == 1 and "not forwarded" in text.output and "counter" in text.output  # a replay
    finally:
        await daemon.stop()
        await bench.close()
