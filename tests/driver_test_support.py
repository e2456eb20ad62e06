"""What tests/test_drivers_ezsp.py and tests/test_drivers_znp.py share: the simulated
HCALCS behind the emulated coordinator, a lab supplier, images, and waits."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import zigpy.types as zt
from cryptography.hazmat.primitives.serialization import load_pem_private_key

from gateway.config import Config, DeviceConfig, OtaConfig, SupplierConfig, parse_eui64
from gateway.engine import Job
from gateway.gbcs.ids import EntityId
from gateway.gbcs.sign import generate_supplier_identity
from gateway.image import FirmwareImage, parse_image
from gateway.image_build import build_image
from radios.sim.spec import parse_sim_device

SUPPLIER = "90B3D51F30010000"
MANUFACTURER = 0x121D
# The device's own timers, shortened so that a lost frame costs half a second, not five.
FAST_DEVICE = "response_timeout=0.5:max_retries=20:wait_interval=0.5:query_delay=3600"


def hcalcs_spec(ieee: str, extra: str = "") -> Any:
    return parse_sim_device(
        f"hcalcs:{ieee}:manufacturer_code={MANUFACTURER}:image_type=0:file_version=1:hardware_version=0x1111"
        + (f":{extra}" if extra else "")
    )


async def wait_known(app: Any, ieee: zt.EUI64, timeout: float = 15.0) -> Any:
    """The device joined and zigpy finished interviewing it."""
    async with asyncio.timeout(timeout):
        while True:
            device = app.devices.get(ieee)
            if device is not None and device.is_initialized:
                return device
            await asyncio.sleep(0.05)


async def wait_until(predicate: Any, timeout: float = 10.0) -> None:
    """``predicate()`` became true (polled; a generous bound, not a timing assertion)."""
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.01)


async def wait_offset(job: Job, at_least: int, timeout: float = 15.0) -> None:
    async with asyncio.timeout(timeout):
        while job.session.offset < at_least and not job.done:
            await asyncio.sleep(0.01)


def lab_supplier(work: Path, hcalcs: str) -> tuple[Any, Config]:
    """A lab supplier (P-256 key, self-signed certificate) and a config naming it as the
    HCALCS's responsible supplier."""
    key_pem, cert_pem = generate_supplier_identity(EntityId.parse(SUPPLIER), common_name="TEST LAB SUPPLIER")
    (work / "supplier.pem").write_bytes(cert_pem)
    config = Config(
        state_dir=work,
        suppliers=(SupplierConfig(id=SUPPLIER, certificate=work / "supplier.pem"),),
        devices=(DeviceConfig(ieee=parse_eui64(hcalcs), kind="hcalcs", supplier=SUPPLIER),),
        # a generous radio budget: these tests are about the drivers, not WAIT_FOR_DATA pacing
        ota=OtaConfig(stall_timeout_s=30, rate_bytes_per_s=1_000_000, burst_bytes=1 << 20),
    )
    return load_pem_private_key(key_pem, password=None), config


def make_image(key: Any = None, size: int = 8192, version: int = 2, *, step: int = 7) -> FirmwareImage:
    payload = bytes((i * step) & 0xFF for i in range(size))
    return parse_image(build_image(payload, manufacturer_code=MANUFACTURER, image_type=0x0000, file_version=version,
                                   header_string="HCALCS test image", min_hw=0x1111, max_hw=0x1211, gbcs_key=key))
