"""``han-ota demo``: a scripted bench session on the simulated radio.

One HCALCS and one PPMID on a simulated HAN with realistic link timing, compressed so
the whole session takes well under a minute. It walks both SECMP0007 flows and prints
what happened at each step:

1. HCALCS, two steps: distribute (the device verifies the image and is held), a CS06
   with the wrong hash is refused ("hash mismatch"), a replayed counter is refused,
   then a CS06 for the real hash releases it and the new version is confirmed.
2. PPMID, one step: a command naming another image is refused before any block is
   sent; then distribution and activation in one request, confirmed.
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from pathlib import Path
from typing import Any

import zigpy.types as zt

from eui64 import Eui64
from gateway.activation import ActivationService, MemoryCounters
from gateway.config import Config, DeviceConfig, OtaConfig, SupplierConfig, parse_eui64
from gateway.engine import Engine, Job
from gateway.gbcs.ids import EntityId
from gateway.gbcs.sign import generate_supplier_identity, load_signing_key, sign_activation
from gateway.image import parse_image
from gateway.image_build import build_image
from gateway.ota.events import SessionState
from radios.select import open_app
from radios.sim.link import LinkModel
from radios.sim.spec import parse_sim_device

SUPPLIER = "90B3D51F30010000"
HCALCS = "00:db:12:34:56:78:90:a0"
PPMID = "00:db:12:34:56:78:90:a1"
MANUFACTURER = 0x121D
# The compression factor for the realistic link: 1/20 of real air and UART time.
TIME_SCALE = 0.05


class Narrator:
    def __init__(self) -> None:
        self.t0 = time.monotonic()
        self.step = 0

    def head(self, text: str) -> None:
        self.step += 1
        print(f"\n[{time.monotonic() - self.t0:6.1f}s] Step {self.step}: {text}", flush=True)

    def say(self, text: str) -> None:
        print(f"          {text}", flush=True)


def _eui(text: str) -> zt.EUI64:
    return zt.EUI64(Eui64.parse(text).air)


async def run_demo() -> int:
    n = Narrator()
    with tempfile.TemporaryDirectory(prefix="han-ota-demo-") as tmp:
        work = Path(tmp)
        key_pem, cert_pem = generate_supplier_identity(EntityId.parse(SUPPLIER), common_name="DEMO LAB SUPPLIER")
        (work / "supplier.pem").write_bytes(cert_pem)
        key = load_signing_key(key_pem)
        hcalcs_image = build_image(bytes(range(256)) * 64, manufacturer_code=MANUFACTURER, image_type=0x0000, file_version=0x00000002, header_string="HCALCS demo image v2", min_hw=0x1111, max_hw=0x1211, gbcs_key=key)
        ppmid_image = build_image(bytes(reversed(range(256))) * 48, manufacturer_code=MANUFACTURER, image_type=0x0084, file_version=0x00000002, header_string="PPMID demo image v2", min_hw=0x1111, max_hw=0x1211)
        hcalcs_fw, ppmid_fw = parse_image(hcalcs_image), parse_image(ppmid_image)

        config = Config(
            state_dir=work,
            suppliers=(SupplierConfig(id=SUPPLIER, certificate=work / "supplier.pem"),),
            devices=(
                DeviceConfig(ieee=parse_eui64(HCALCS), kind="hcalcs", supplier=SUPPLIER),
                DeviceConfig(ieee=parse_eui64(PPMID), kind="ppmid", supplier=SUPPLIER),
            ),
            ota=OtaConfig(stall_timeout_s=60),
        )
        n.head("start the simulated HAN: an HCALCS (mains, awake) and a PPMID (sleepy: polls every 2 s, fast-polls while downloading)")
        specs = [
            parse_sim_device(f"hcalcs:{HCALCS}:manufacturer_code={MANUFACTURER}:image_type=0:file_version=1:hardware_version=0x1111:max_data_size=63"),
            parse_sim_device(f"ppmid:{PPMID}:manufacturer_code={MANUFACTURER}:image_type=0x84:file_version=1:hardware_version=0x1111:max_data_size=63:page_requests=1:sleepy_poll=2:fast_poll=0.02"),
        ]
        app = await open_app("sim", sim_devices=specs, link=LinkModel.realistic(scale=TIME_SCALE))
        engine = Engine(app, config.ota)
        outcomes: list[str] = []
        service = ActivationService(engine, config, MemoryCounters(), on_outcome=lambda job, step, msg, rc, alert: outcomes.append(_fmt_outcome(job, step, msg, rc, alert)))
        try:
            n.say(f"radio up; devices on the network: {', '.join(str(d) for d in app.devices if d != app.state.node_info.ieee)}")
            ok = await _hcalcs_flow(n, engine, service, hcalcs_fw, key, outcomes)
            ok = await _ppmid_flow(n, engine, service, ppmid_fw, key, outcomes) and ok
        finally:
            await engine.close()
            await app.shutdown()
        n.head("done: " + ("both devices run their new firmware, and nothing activated without a verified command" if ok else "something did not go as scripted (see above)"))
        return 0 if ok else 1


def _fmt_outcome(job: Job | None, step: str, msg: str, rc: int | None, alert: int | None) -> str:
    codes = []
    if rc is not None:
        codes.append(f"response {rc}")
    if alert is not None:
        codes.append(f"alert 0x{alert:04X}")
    return f"{step}: {msg}" + (f" [{', '.join(codes)}]" if codes else "")


def _drain(n: Narrator, outcomes: list[str]) -> None:
    for line in outcomes:
        n.say("GBCS " + line)
    outcomes.clear()


async def _wait(engine: Engine, job: Job, states: set[SessionState], n: Narrator, timeout: float = 45) -> None:
    last = -1

    async def report() -> None:
        nonlocal last
        while True:
            await asyncio.sleep(2)
            pct = int(100 * job.session.offset / job.image.size)
            if pct != last and job.state is SessionState.TRANSFERRING:
                rate, eta = job.rate_and_eta()
                n.say(f"... {job.state.value} {pct}% ({job.session.offset}/{job.image.size} bytes, ETA {eta or 0:.0f} s)")
                last = pct

    reporter = asyncio.create_task(report())
    try:
        await engine.wait(job, states, timeout=timeout)
    finally:
        reporter.cancel()


def _sign(key: Any, device: str, image_hash: bytes, counter: int, **kw: Any) -> bytes:
    return sign_activation(key, originator=EntityId.parse(SUPPLIER), device=EntityId.parse(device), image_hash=image_hash, counter=counter, **kw)


async def _hcalcs_flow(n: Narrator, engine: Engine, service: ActivationService, fw: Any, key: Any, outcomes: list[str]) -> bool:
    ieee = _eui(HCALCS)
    n.head(f"HCALCS {HCALCS}: distribute {fw.size} bytes (SR 11.1 Update Firmware), activation held")
    job = engine.push(fw, ieee, activation="command")
    await _wait(engine, job, {SessionState.HELD}, n)
    n.say(f"state {job.state.value}: the device verified the image; {job.session.held_requests} Upgrade End Request(s) answered with upgrade time 0xFFFFFFFF")
    _drain(n, outcomes)
    if job.state is not SessionState.HELD:
        return False

    n.head("submit a CS06 signed by the supplier but naming another image's hash")
    wrong = service.submit(_sign(key, HCALCS, bytes.fromhex("AA" * 32), 1000))
    n.say(wrong.message)
    _drain(n, outcomes)

    n.head("submit a CS06 (SR 11.3 Activate Firmware) for the distributed image's hash")
    good = service.submit(_sign(key, HCALCS, fw.manufacturer_image_hash, 1001))
    n.say(good.message)
    await _wait(engine, job, {SessionState.CONFIRMED}, n)
    n.say(f"state {job.state.value}: device reports version 0x{job.session.device_file_version or 0:08X} (image 0x{fw.file_version:08X})")
    _drain(n, outcomes)

    n.head("replay the same command: refused, its counter was already used")
    again = service.submit(_sign(key, HCALCS, fw.manufacturer_image_hash, 1001))
    n.say(again.message)
    _drain(n, outcomes)
    return job.state is SessionState.CONFIRMED and not wrong.accepted and good.accepted and not again.accepted


async def _ppmid_flow(n: Narrator, engine: Engine, service: ActivationService, fw: Any, key: Any, outcomes: list[str]) -> bool:
    ieee = _eui(PPMID)
    n.head(f"PPMID {PPMID}: one-step request whose command names another image")
    bad = service.precheck(_sign(key, PPMID, bytes(32), 2000), fw, ieee)
    n.say(f"{bad.message} (nothing was sent to the device)")

    n.head(f"PPMID: distribution and activation in one request ({fw.size} bytes, page requests, sleepy device)")
    command = _sign(key, PPMID, fw.manufacturer_image_hash, 2001)
    pre = service.precheck(command, fw, ieee)
    n.say(f"command verified before the transfer: {pre.message}")
    job = engine.push(fw, ieee, activation="command")
    service.arm(job, command)
    await _wait(engine, job, {SessionState.CONFIRMED}, n)
    n.say(f"state {job.state.value}: device reports version 0x{job.session.device_file_version or 0:08X}")
    _drain(n, outcomes)
    return pre.accepted and not bad.accepted and job.state is SessionState.CONFIRMED


__all__ = ["run_demo"]
