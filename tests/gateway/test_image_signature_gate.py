"""A GBCS image whose supplier signature fails is not distributed (issue 11 item 7).

The gateway checks the signature against the device's responsible supplier before any
block is sent (in-process push, CLI and daemon); the simulated HCALCS, given its
supplier's key, checks it too after the download and reports INVALID_IMAGE.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import zigpy.types as zt

from gateway.activation import ActivationService, MemoryCounters, check_image_signature, load_trust
from gateway.config import Config, DeviceConfig, OtaConfig, SupplierConfig, parse_eui64
from gateway.engine import Engine
from gateway.gbcs.sign import generate_supplier_identity, load_signing_key
from gateway.gbcs.ids import EntityId
from gateway.gbcs.trust import TrustStore
from gateway.image import load_image, parse_image
from gateway.image_build import build_image
from gateway.ota import events as ev
from han_ota.cli import _mount, app
from han_ota.cli_app import run
from han_ota.client import Client, DaemonError
from han_ota.push import PushRequest, run_push
from radios.select import open_app
from radios.sim.spec import SimSpecError, parse_sim_device

DATA = Path(__file__).parents[1] / "data" / "gbcs"
SR11_1 = DATA / "sr11.1-firmware-image.bin"
CERT = DATA / "supplier-90b3d51f30010000-ds.pem"
SUPPLIER = "90B3D51F30010000"
HCALCS = "00:db:12:34:56:78:90:a0"  # the sample image's destination
IEEE = zt.EUI64.convert(HCALCS)
FAST = OtaConfig(rate_bytes_per_s=10_000_000, burst_bytes=1_000_000, max_inflight=8, stall_timeout_s=20)
# Below the sample's 0xACDCACDC, with the hardware version it allows.
DEVICE = f"hcalcs:{HCALCS}:manufacturer_code=0x121D:image_type=0:file_version=0xACDCACDB:hardware_version=0x1111"


@pytest.fixture
def short_dir() -> Iterator[Path]:
    # Unix socket paths are limited to 108 bytes; pytest's tmp_path can be longer.
    path = Path(tempfile.mkdtemp(prefix="hosig", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def tampered(root: Path, offset: int = 100) -> Path:
    """The sample with one byte of its Manufacturer Image flipped (the signature kept)."""
    data = bytearray(SR11_1.read_bytes())
    data[offset] ^= 0x01
    path = root / "tampered.bin"
    path.write_bytes(bytes(data))
    return path


def config(root: Path, *, supplier: bool = True) -> Config:
    return Config(
        state_dir=root,
        suppliers=(SupplierConfig(id=SUPPLIER, certificate=CERT),),
        devices=(DeviceConfig(ieee=parse_eui64(HCALCS), kind="hcalcs", supplier=SUPPLIER if supplier else None),),
        ota=FAST,
    )


def push_request(image: Path, cfg: Config, *specs: str) -> PushRequest:
    return PushRequest(
        image=image,
        device=HCALCS,
        sim_devices=specs or (DEVICE,),
        config=cfg,
        progress=False,
        timeout_s=60,
        session_overrides=dict(confirm_read_after_s=0.2, confirm_timeout_s=20),
    )


# --------------------------------------------------------------------------- the check itself


def test_the_check_names_each_verdict(tmp_path: Path) -> None:
    cfg = config(tmp_path)
    trust = load_trust(cfg)
    good, bad = load_image(SR11_1), load_image(tampered(tmp_path))
    assert check_image_signature(good, IEEE, cfg, trust).verdict == "verified"

    refused = check_image_signature(bad, IEEE, cfg, trust)
    assert refused.refused and refused.supplier == SUPPLIER
    assert "does not verify" in refused.message and SUPPLIER in refused.message and str(CERT) in refused.message

    # Another supplier's signature is refused just as a tampered image is.
    key_pem, _ = generate_supplier_identity(EntityId.parse("1122334455667788"))
    other = load_signing_key(key_pem)
    strangers = parse_image(build_image(good.manufacturer_image, manufacturer_code=0x121D, image_type=0, file_version=2, gbcs_key=other))
    assert check_image_signature(strangers, IEEE, cfg, trust).refused

    unchecked = check_image_signature(bad, IEEE, config(tmp_path, supplier=False), trust)
    assert unchecked.verdict == "not_checked" and "no responsible supplier" in unchecked.message
    assert check_image_signature(bad, zt.EUI64.convert("00:db:12:34:56:78:90:ff"), cfg, trust).verdict == "not_checked"
    assert check_image_signature(bad, IEEE, cfg, TrustStore()).verdict == "not_checked"

    zigbee = parse_image(build_image(b"\x55" * 300, manufacturer_code=0x121D, image_type=0, file_version=2, zigbee_subelement=True))
    assert check_image_signature(zigbee, IEEE, cfg, trust).verdict == "unsigned"


# --------------------------------------------------------------------------- in-process push and CLI


async def test_in_process_push_of_a_tampered_image_is_refused_before_any_block(tmp_path: Path) -> None:
    outcome = await run_push(push_request(tampered(tmp_path), config(tmp_path)))
    assert not outcome.reached
    s = outcome.summary
    assert (s["state"], s["job"], s["bytes"]) == ("failed", None, 0)
    assert s["reason"].startswith("image refused before transfer:") and "does not verify" in s["reason"]
    assert s["error"] == s["reason"] and s["signature"]["verdict"] == "refused"


async def test_in_process_push_of_the_signed_image_is_held_without_a_warning(tmp_path: Path) -> None:
    outcome = await run_push(push_request(SR11_1, config(tmp_path)))
    assert outcome.reached and outcome.summary["state"] == "held"
    assert not any("signature" in w for w in outcome.summary["warnings"])


def test_cli_push_of_a_tampered_image_exits_1_with_the_reason(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _mount()
    cfg = tmp_path / "config.toml"
    cfg.write_text(
        f'state_dir = "{tmp_path}"\n'
        f'[[supplier]]\nid = "{SUPPLIER}"\ncertificate = "{CERT}"\n'
        f'[[device]]\nieee = "{HCALCS}"\nkind = "hcalcs"\nsupplier = "{SUPPLIER}"\n'
    )
    argv = ["push", str(tampered(tmp_path)), "--device", HCALCS, "--config", str(cfg), "--in-process", "--sim-device", DEVICE]
    assert run(app, argv + ["--json"]) == 1
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert report["state"] == "failed" and "does not verify" in report["error"] and report["bytes"] == 0

    with pytest.raises(SystemExit) as exit_:
        run(app, argv)
    assert exit_.value.code == 1
    out = capsys.readouterr().out
    assert "failed: image refused before transfer" in out and "does not verify" in out


# --------------------------------------------------------------------------- the daemon


async def test_daemon_refuses_a_tampered_image_with_422_and_sends_nothing(short_dir: Path) -> None:
    from han_ota.daemon import Daemon
    from radios.sim.app import SimControllerApplication
    from radios.sim.han import SimHan

    han = SimHan([parse_sim_device(f"{DEVICE}:query_delay=0.05:wait_interval=0.2:response_timeout=0.5")])

    async def open_radio() -> SimControllerApplication:
        sim = SimControllerApplication.new_sim([], han=han)
        await sim._load_db()
        await sim.startup(auto_form=True)
        await sim.wait_initialized(timeout=10)
        return sim

    (short_dir / "state").mkdir()
    cfg = dataclasses.replace(config(short_dir / "state"), source=short_dir / "config.toml", control_socket=short_dir / "control.sock")
    daemon = Daemon(cfg, open_radio=open_radio)
    await daemon.start()
    try:
        await daemon.wait_radio(10)
        client = Client(cfg.control_socket, timeout=5)
        bad = tampered(short_dir)
        with pytest.raises(DaemonError, match="image refused before any block was sent") as err:
            await asyncio.to_thread(client.push, bad, HCALCS)
        assert err.value.status == 422 and "does not verify" in str(err.value)
        assert daemon.store is not None and daemon.store.list_jobs() == []
        assert han.devices[IEEE].counters.blocks_received == 0

        job = await asyncio.to_thread(client.push, SR11_1, HCALCS)
        done = await asyncio.to_thread(client.wait_job, job["job"], ("held",), timeout=30)
        assert done["state"] == "held"
    finally:
        await daemon.stop("test")
        await han.stop()
    from gateway.audit import read_records

    records = list(read_records(cfg.state_dir / "audit.jsonl"))
    refused = [r for r in records if r.event == "image.signature_refused"]
    assert len(refused) == 1 and refused[0].fields["supplier"] == SUPPLIER
    accepted = [r for r in records if r.event == "job.accepted"]
    assert [r.fields["signature"] for r in accepted] == ["verified"]


# --------------------------------------------------------------------------- the simulated HCALCS


def test_sim_spec_takes_a_supplier_key_and_refuses_a_file_that_is_none(tmp_path: Path) -> None:
    assert parse_sim_device(f"{DEVICE}:supplier_key={CERT}").supplier_key == str(CERT)
    (tmp_path / "junk.pem").write_text("not a key")
    for bad in (tmp_path / "junk.pem", tmp_path / "missing.pem"):
        with pytest.raises(SimSpecError, match="supplier_key") as err:
            parse_sim_device(f"{DEVICE}:supplier_key={bad}")
        assert "PEM certificate or public key" in str(err.value)


async def test_sim_hcalcs_with_its_supplier_key_reports_invalid_image_for_a_tampered_one(tmp_path: Path) -> None:
    # The engine's own push has no signature gate: what the device does is what is tested.
    app = await open_app("sim", sim_devices=[parse_sim_device(f"{DEVICE}:supplier_key={CERT}")])
    engine = Engine(app, FAST, session_overrides=dict(confirm_read_after_s=0.2, confirm_timeout_s=20))
    outcomes: list[tuple[str, str, int | None]] = []
    ActivationService(engine, config(tmp_path), MemoryCounters(), on_outcome=lambda job, step, msg, rc, alert: outcomes.append((step, msg, alert)))
    try:
        job = engine.push(load_image(tampered(tmp_path)), IEEE)
        assert await engine.wait(job, set(), timeout=30) is ev.SessionState.FAILED
        assert "INVALID_IMAGE" in (job.session.reason or "")
        dev = app.han.devices[IEEE]
        assert dev.counters.invalid_images == 1 and dev.current_file_version == 0xACDCACDB
        assert "signature does not verify" in dev.events("verify_failed")[0].detail["reason"]
        assert any(step == "device_verification" and alert == 0x8F1C for step, _, alert in outcomes)

        # The untouched sample verifies on the device and is held.
        job = engine.push(load_image(SR11_1), IEEE)
        assert await engine.wait(job, {ev.SessionState.HELD}, timeout=30) is ev.SessionState.HELD
    finally:
        await engine.close()
        await app.shutdown()


async def test_push_without_a_responsible_supplier_warns_and_the_device_refuses(tmp_path: Path) -> None:
    outcome = await run_push(push_request(tampered(tmp_path), config(tmp_path, supplier=False), f"{DEVICE}:supplier_key={CERT}"))
    s = outcome.summary
    assert not outcome.reached and s["state"] == "failed" and "INVALID_IMAGE" in s["reason"]
    assert any("signature was not checked" in w for w in s["warnings"])


async def test_sim_hcalcs_with_a_supplier_key_refuses_an_unsigned_image() -> None:
    app = await open_app("sim", sim_devices=[parse_sim_device(f"{DEVICE}:supplier_key={CERT}")])
    engine = Engine(app, FAST)
    try:
        plain = parse_image(build_image(b"\x5a" * 700, manufacturer_code=0x121D, image_type=0, file_version=0xACDCACDC))
        job = engine.push(plain, IEEE)
        assert await engine.wait(job, set(), timeout=30) is ev.SessionState.FAILED
        assert "INVALID_IMAGE" in (job.session.reason or "")
        assert "no supplier signature" in app.han.devices[IEEE].events("verify_failed")[0].detail["reason"]
    finally:
        await engine.close()
        await app.shutdown()
