"""What the driver tests (tests/radios/emulate/test_drivers.py, test_drivers_ezsp.py, test_keys.py) share: the simulated
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


# ------------------------------------------------------------------ one body, three radios
#
# tests/radios/emulate/test_drivers.py runs the same driver tests through bellows on EZSP 13 and 14 and
# through zigpy-znp; `Radio` is everything that differs between the two emulators
# (start, fault injection names, what each reports), so that the tests say it once.

HCALCS = "00:db:12:34:56:78:90:b0"
HCALCS_IEEE = zt.EUI64.convert(HCALCS)


class Radio:
    """One radio the driver tests run on: ``ezsp13``, ``ezsp14`` or ``znp``."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.family = "znp" if name == "znp" else "ezsp"
        self.ezsp_version = None if self.family == "znp" else int(name.removeprefix("ezsp"))
        #: How radios/limits.py names the family in the block-size log line.
        self.limit_name = "Z-Stack" if self.family == "znp" else "EZSP"

    def __repr__(self) -> str:
        return self.name

    def emulator(self, specs: list[Any], *, reboot_delay: float = 0.1, refuse_too_long: bool = False) -> Any:
        """A fresh emulator with ``specs`` behind it: (path, server). The EZSP NCP starts
        with a formed network (bellows would spend ~8 s forming one per test) and reboots
        in ``reboot_delay`` (the firmware's 1 s where the reset's timing matters).
        ``refuse_too_long``: a Z-Stack build without APS fragmentation, which refuses a
        payload longer than one frame (INVALID_PARAMETER) as EmberZNet's NCP always does
        (its fragmentation is the host's), instead of fragmenting it."""
        if self.family == "znp":
            from radios.emulate.znp import running_znp_emulator

            return running_znp_emulator(specs, **({"aps_fragmentation": False} if refuse_too_long else {}))
        from radios.emulate.ezsp import AshConfig, NetworkSettings, running_ezsp_emulator

        return running_ezsp_emulator(specs, network=NetworkSettings(channel=20, pan_id=0x4D2B),
                                     protocol_version=self.ezsp_version, ash_config=AshConfig(reboot_delay=reboot_delay))

    async def open(self, path: str, **kwargs: Any) -> Any:
        from radios.select import open_app

        return await open_app(self.family, path=path, **kwargs)

    async def open_and_join(self, path: str, ieee: zt.EUI64 = HCALCS_IEEE, **kwargs: Any) -> Any:
        """Open the radio like the gateway and wait for zigpy's interview of ``ieee``. The
        EZSP HCALCS joins when the gateway permits joining (as on a bench); the Z-Stack
        emulator's devices join when zigpy-znp's start-up is done."""
        app = await self.open(path, **kwargs)
        if self.family == "ezsp":
            await app.permit(60)
        await wait_known(app, ieee)
        return app

    def han(self, server: Any) -> Any:
        return server.coordinator.han if self.family == "znp" else server.han

    def fail_deliveries(self, server: Any, count: int, nwk: int) -> None:
        """The next ``count`` OTA unicasts fail in the stack (nothing reaches the air):
        messageSentHandler DELIVERY_FAILED, AF.DataConfirm MAC_NO_ACK."""
        if self.family == "znp":
            server.faults.fail_next_deliveries(count, "MAC_NO_ACK")
        else:
            server.faults.fail_next_deliveries(count, nwk=nwk, cluster=0x0019)

    def deliveries_failed(self, server: Any) -> int:
        if self.family == "znp":
            return int(server.faults.deliveries_failed)
        return int(server.faults.history.count("delivery-failed"))

    def inject(self, server: Any, fault: str) -> None:
        """``reset``: the radio's watchdog (EZSP: Cancel + ERROR(0x03) after its reboot,
        silence until RST; Z-Stack: SYS.ResetInd); ``drop``: the link goes away."""
        if fault == "reset":
            server.inject_reset() if self.family == "znp" else server.faults.reset_now()
        else:
            server.drop_connection() if self.family == "znp" else server.faults.drop_now()

    def refused_too_long(self, server: Any) -> int:
        """Unicasts the stack refused as longer than one frame to the destination carries."""
        return int(server.coordinator.payloads_refused if self.family == "znp" else len(server.ncp.refused_too_long))

    def connections(self, server: Any) -> int:
        return int(server.connections_made if self.family == "znp" else server.connections)

    def unhandled(self, server: Any) -> list[Any]:
        """Commands the emulator received and does not implement (none expected)."""
        return list(server.coordinator.unimplemented if self.family == "znp" else server.ncp.unhandled)

    def assert_identity(self, app: Any) -> None:
        """The driver saw the firmware the emulator stands for."""
        if self.family == "znp":
            assert app.state.node_info.model == "CC2652"  # a Z-Stack 3.30 coordinator
        else:
            assert app._ezsp.ezsp_version == self.ezsp_version
            assert app.state.network_info.channel == 20 and app.state.network_info.pan_id == 0x4D2B

    def assert_reset_signalled(self, server: Any, supervisor: Any, fault: str) -> None:
        """The loss was signalled as the firmware signals it."""
        lost = next(e for e in supervisor.events if e.kind == "lost")
        if self.family == "znp":
            assert ("SYS.ResetInd" in lost.detail) if fault == "reset" else ("connection lost" in lost.detail)
            return
        from radios.emulate.ezsp import RESET_SOFTWARE, RESET_WATCHDOG

        assert fault in server.faults.history
        if fault == "reset":  # ERROR(watchdog), then an RSTACK only for the host's RST
            signals = server.ash_signals
            after = signals[signals.index(("ERROR", RESET_WATCHDOG)) + 1:]
            assert after[:1] == [("RSTACK", RESET_SOFTWARE)] and ("RSTACK", RESET_WATCHDOG) not in signals


RADIOS = ("ezsp13", "ezsp14", "znp")
