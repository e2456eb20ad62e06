"""Key establishment through the daemon (`han-ota run`, in process as tests/han_ota/test_daemon.py
starts it) on the simulated radio: a simulated SE PPMID joins, keys with the hub, takes
the push APS-encrypted, is held, and is released by a verified CS06 submitted through
the control socket; the audit log shows every step, in order.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import zigpy.types as t
from cryptography.hazmat.primitives.serialization import load_pem_private_key

from gateway.audit import read_records, verify_log
from gateway.config import load_config
from gateway.gbcs.ids import EntityId
from gateway.gbcs.sign import generate_supplier_identity, sign_activation
from gateway.image import parse_image
from han_ota.client import Client
from han_ota.daemon import Daemon
from se_lab import PPMID, assert_the_whole_push_went_under_the_derived_key, image, lab
from tests.han_ota.test_daemon import call, short_dir  # noqa: F401  short_dir: the fixture (Unix socket paths are short)

SUPPLIER = "90B3D51F30010000"


def the_steps(records: list[Any]) -> list[str]:
    """The audit records of the PPMID's life, as step names (repeats folded)."""
    steps: list[str] = []
    for r in records:
        if r.device != PPMID:
            continue
        if r.event == "job.state":
            name = f"job.{r.fields['new']}"
        elif r.event.startswith(("ke.", "gbcs.")):
            name = r.event
        else:
            continue
        if not steps or steps[-1] != name:
            steps.append(name)
    return steps


async def test_an_se_ppmid_keys_takes_the_push_aps_encrypted_and_a_verified_cs06_releases_it(short_dir: Path) -> None:
    key_pem, cert_pem = generate_supplier_identity(EntityId.parse(SUPPLIER))
    (short_dir / "supplier.pem").write_bytes(cert_pem)
    config_path, spec = lab(
        short_dir, 1, device_lines=f'supplier = "{SUPPLIER}"\n',
        tables=f'[[supplier]]\nid = "{SUPPLIER}"\ncertificate = "supplier.pem"\n',
    )
    cfg = load_config(config_path)
    fw = image(short_dir)
    command = sign_activation(
        load_pem_private_key(key_pem, None),  # type: ignore[arg-type]
        originator=EntityId.parse(SUPPLIER), device=EntityId.parse(PPMID),
        image_hash=parse_image(fw.read_bytes()).manufacturer_image_hash, counter=1,
    ).hex()

    daemon = Daemon(cfg, [spec + ":wait_interval=0.2:reboot_time=0.05"])
    await daemon.start()
    client = Client(cfg.control_socket, timeout=5)
    try:
        await daemon.wait_radio(30)
        job = await call(client.push, fw, PPMID)
        held = await call(client.wait_job, job["job"], ("held",), timeout=90)
        assert held["state"] == "held" and held["bytes"] == held["size"], held
        assert held["security"]["key_establishment"] == "established" and held["security"]["aps_security"] is True
        devices = {d["ieee"]: d for d in await call(client.devices)}
        assert devices[PPMID]["security"]["suite"] == 1

        device = daemon.app.han.devices[t.EUI64.convert(PPMID)]  # the air behind the sim radio
        assert device.current_file_version == 1  # held: not before the command
        assert_the_whole_push_went_under_the_derived_key(daemon.app.han)

        result = await call(client.activate, command, PPMID)
        assert result["accepted"] is True, result
        done = await call(client.wait_job, job["job"], ("confirmed",), timeout=60)
        assert done["state"] == "confirmed" and device.current_file_version == 2
    finally:
        await daemon.stop("test")

    assert verify_log(cfg.state_dir / "audit.jsonl").ok
    steps = the_steps(list(read_records(cfg.state_dir / "audit.jsonl")))
    expected = ["ke.started", "ke.established", "ke.key_installed", "job.transferring", "job.held", "gbcs.verdict", "gbcs.activation"]
    assert [s for s in steps if s in expected] == expected, steps
