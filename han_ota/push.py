"""One push, in process: open the radio, run one job to the state asked for, report.

``run_push`` is what ``han-ota push`` calls when no daemon is running; tests call it
directly. It returns the job's JSON-ready summary and whether the asked-for state
was reached.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import zigpy.types as zt

from gateway.activation import ActivationService, MemoryCounters, SignatureCheck, check_image_signature, load_trust
from gateway.config import Config, parse_eui64
from gateway.engine import Engine, EngineError, Job
from gateway.files import NotRegularFile
from gateway.gbcs.errors import GbcsError
from gateway.gbcs.trust import TrustStore
from gateway.image import FirmwareImage, ImageForm, load_image
from gateway.ota.events import SessionState
from gateway.se.security import SecurityRegistry
from han_ota.hub_alerts import start_hub_messages
from han_ota.progress import ProgressLine
from han_ota.security import KeyEstablishmentUnavailable, close_key_establishment, start_key_establishment
from han_ota.statedir import ensure_state_dir
from radios.han_services import setup_han_services
from radios.select import database_for, open_app
from radios.supervisor import RadioSupervisor
from radios.sim.spec import SimDeviceSpec, parse_sim_device, sim_network

LOGGER = logging.getLogger("han_ota.push")


@dataclass
class PushRequest:
    image: Path
    device: str
    radio: str = "sim"
    path: str | None = None
    baudrate: int | None = None
    flow_control: str | None = None
    sim_devices: Sequence[str] = ()
    activate_now: bool = False
    allow_downgrade: bool = False
    #: gateway.ota.priority (None: the config's default for the device's kind). One push
    #: per process has no job to supersede or queue behind; the priority is the job's all the same.
    priority: int | None = None
    #: A CS06 (raw bytes, as read_command decodes them) to verify before any block and act on at the hold.
    activation: bytes | None = None
    #: Where accepted counters are kept (a StateStore); None keeps them in memory.
    counters: Any = None
    stall_timeout_s: float | None = None
    timeout_s: float | None = None
    config: Config = field(default_factory=Config)
    link: Any = None
    progress: bool = True
    #: Real radios: how long to keep joining open for a device zigpy does not know yet.
    join_timeout_s: float = 60.0
    session_overrides: dict[str, Any] = field(default_factory=dict)


@dataclass
class PushOutcome:
    summary: dict[str, Any]
    reached: bool
    wanted: SessionState


def eui64(text: str) -> zt.EUI64:
    return zt.EUI64(parse_eui64(text, "--device").air)


def sim_specs_for(req: PushRequest, image: FirmwareImage, ieee: zt.EUI64, notes: Callable[[str], None]) -> list[SimDeviceSpec]:
    """The simulated network: --sim-device options, [[sim_device]] tables, and, when
    neither names the target, one device that the image fits (a convenience for
    quick trials, announced on stderr)."""
    specs = sim_network(req.sim_devices, req.config.sim_devices, str(req.config.source or "config"))
    if not any(s.ieee == ieee for s in specs):
        kind = image.device_kind
        configured = req.config.device(parse_eui64(req.device))
        if configured is not None:
            kind = configured.kind
        hw = image.min_hardware_version if image.min_hardware_version is not None else 1
        text = f"{kind}:{parse_eui64(req.device)}:manufacturer_code={image.manufacturer_code}:image_type={image.image_type}:file_version={max(image.file_version - 1, 0)}:hardware_version={hw}"
        specs.append(parse_sim_device(text))
        notes(f"simulated network: no --sim-device for {ieee}; added {text}")
    return specs


async def wait_for_device(app: Any, ieee: zt.EUI64, timeout: float, stream: Any) -> None:
    """A device zigpy has not seen (no database yet, or never joined) gets a join window.

    Smart-energy devices join with an install code; a bench device that is already
    commissioned simply rejoins or announces itself while joining is open.
    """
    device = app.devices.get(ieee)
    if device is not None and device.is_initialized:
        return
    print(f"{ieee} is not known to the coordinator yet: permitting joining for {timeout:g} s and waiting for it", file=stream)
    await app.permit(int(min(max(timeout, 1), 254)))
    try:
        async with asyncio.timeout(timeout):
            while True:
                device = app.devices.get(ieee)
                if device is not None and device.is_initialized:
                    print(f"{ieee} joined (nwk 0x{device.nwk:04X}) and was interviewed", file=stream)
                    return
                await asyncio.sleep(0.2)
    except TimeoutError:
        raise EngineError(f"{ieee} did not join within {timeout:g} s: power-cycle it or put it in joining mode (with its install code registered), then push again") from None


def wanted_state(req: PushRequest) -> SessionState:
    return SessionState.CONFIRMED if req.activate_now or req.activation is not None else SessionState.HELD


async def run_push(req: PushRequest, *, stream: Any = None) -> PushOutcome:
    stream = stream or sys.stderr
    try:
        image = load_image(req.image)
    except NotRegularFile as exc:
        raise ValueError(str(exc)) from None
    except OSError as exc:  # the caller's ValueError path: a clear error, not a traceback
        raise ValueError(f"cannot read image {req.image}: {exc.strerror or exc}") from None
    ieee = eui64(req.device)
    trust = _trust_for(req.config) if image.form is ImageForm.GBCS else None
    signature = check_image_signature(image, ieee, req.config, trust or TrustStore())
    if signature.refused:
        # Before the radio is even opened: a tampered image costs no airtime.
        return PushOutcome(image_refused_summary(req, image, signature), False, wanted_state(req))
    specs: list[SimDeviceSpec] = []
    if req.radio == "sim":
        specs = sim_specs_for(req, image, ieee, lambda m: print(m, file=stream))
    database = req.config.radio.database
    if database is None and req.radio != "sim":
        database = database_for(ensure_state_dir(req.config), req.radio, req.path)

    # With [key_establishment] the SE endpoint offers the Key Establishment server cluster.
    keyed = req.config.key_establishment is not None

    ke: dict[str, Any] = {}

    async def start_ke(app: Any) -> None:
        # Before the device is waited for: an SE device runs key establishment right
        # after joining.
        # Not a radio failure (the supervisor would retry it): kept, and raised below.
        try:
            ke["service"] = await start_key_establishment(app, req.config, registry, _log_ke_event)
        except KeyEstablishmentUnavailable as exc:
            ke["error"] = str(exc)

    async def factory() -> Any:
        app = await open_app(
            req.radio,
            path=req.path,
            baudrate=req.baudrate,
            flow_control=req.flow_control,
            database=database,
            sim_devices=specs,
            link=req.link,
            key_establishment=keyed,
            on_started=None if ke else start_ke,  # the first app only: the service stays there
        )
        if req.radio != "sim":
            await setup_han_services(app, key_establishment=keyed)
        return app

    # A real coordinator may reset or drop off the USB bus mid-transfer: the supervisor
    # reopens it with backoff and the engine follows it: the job is parked, then resumed
    # on the new app.
    supervisor = RadioSupervisor(factory, name=req.radio)
    registry = SecurityRegistry(req.config.security_modes())
    app = await supervisor.start()
    engine = Engine(app, req.config.ota, session_overrides=req.session_overrides, security=registry)
    # The hub's CCS08 alerts, kept with the anti-replay counters' store when there is one.
    # Unsigned is the default for a quick push: said at INFO (the daemon warns at start).
    hub = await start_hub_messages(req.config, req.counters, engine, trust=trust or TrustStore(), audit=_log_ke_event, unsigned_level=logging.INFO)
    if req.radio != "sim":
        engine.follow(supervisor)
    wanted = wanted_state(req)
    ke_service = None
    try:
        ke_service = ke.get("service")  # started as the radio came up (a reopened radio gets none)
        if "error" in ke:
            raise EngineError(ke["error"])
        if req.radio != "sim":
            await wait_for_device(app, ieee, req.join_timeout_s, stream)
        service = None
        if req.activation is not None:
            service = ActivationService(engine, req.config, req.counters if req.counters is not None else MemoryCounters(), trust=trust)
            pre = service.precheck(req.activation, image, ieee)
            print(f"activation command: {pre.message}", file=stream)
            if not pre.accepted:
                # Refused commands cost no airtime: nothing is sent to the device.
                return PushOutcome(refused_summary(req, image, pre.to_dict()), False, wanted)
        device_cfg = req.config.device(parse_eui64(req.device))
        stall = req.stall_timeout_s or (device_cfg.stall_timeout_s if device_cfg else None)
        mode = wanted_mode(req)
        kind = device_cfg.kind if device_cfg is not None else image.device_kind
        priority = req.config.ota.default_priority(kind) if req.priority is None else req.priority
        job = engine.push(image, ieee, image_path=req.image, stall_timeout_s=stall, activation=mode, allow_downgrade=req.allow_downgrade, priority=priority)
        if signature.verdict == "not_checked":
            LOGGER.warning("%s job=%s %s", ieee, job.id, signature.message)
            job.warnings.append(signature.message)
        if service is not None and req.activation is not None:
            service.arm(job, req.activation)
        bar = ProgressLine(str(ieee), image.size, stream) if req.progress else None
        try:
            await asyncio.wait_for(_drive(engine, job, req, bar), req.timeout_s)
        except asyncio.TimeoutError:
            # Waiting on the device's security (its key establishment failed, say): say so.
            why = f" ({job.waiting})" if job.waiting else ""
            engine.cancel(job.id, f"push timed out after {req.timeout_s:g} s{why}")
        finally:
            if bar is not None:
                bar.close()
        return PushOutcome({**job.to_dict(), "messages": hub.job_messages(job)}, job.state is wanted, wanted)
    finally:
        # Frames in flight out, then the radio off, then the sessions detached: detached
        # first, a held device's next Upgrade End would reach zigpy's own OTA handler,
        # whose answer (ABORT) makes it discard the image.
        await engine.drain()
        await close_key_establishment(ke_service)
        await supervisor.close()
        await engine.close()
        await hub.close()


def _log_ke_event(name: str, device: object = None, **fields: object) -> None:
    """The one-shot push keeps no audit log: key-establishment events (and the hub's
    messages) go to the log."""
    details = " ".join(f"{k}={v}" for k, v in fields.items())
    LOGGER.info("%s %s %s", device or "-", name, details)


async def _drive(engine: Engine, job: Job, req: PushRequest, bar: ProgressLine | None) -> None:
    async def show() -> None:
        while True:
            if bar is not None:
                rate, eta = job.rate_and_eta()
                bar.update(job.session.position, job.state.value, rate, eta)
            await asyncio.sleep(0.2)

    painter = asyncio.create_task(show())
    try:
        await engine.wait(job, {SessionState.HELD})
        if job.state is SessionState.HELD and req.activation is not None:
            await engine.wait(job, {SessionState.CONFIRMED})
        elif job.state is SessionState.HELD and req.activate_now:
            engine.activate(job.ieee, why="--activate-now: lab image, released without supplier authority", unauthorised=True)
            await engine.wait(job, {SessionState.CONFIRMED})
    finally:
        painter.cancel()
        if bar is not None:
            rate, eta = job.rate_and_eta()
            bar.update(job.session.offset, job.state.value, rate, eta, force=True)


def _trust_for(config: Config) -> TrustStore:
    try:
        return load_trust(config)
    except (GbcsError, OSError) as exc:
        raise EngineError(f"{config.source or 'config'}: [[supplier]] trust anchors cannot be loaded: {exc}") from None


def image_refused_summary(req: PushRequest, image: FirmwareImage, check: SignatureCheck) -> dict[str, Any]:
    """The summary of a push refused for its image's signature: no job, nothing sent."""
    summary = refused_summary(req, image, {"message": check.message})
    summary.pop("verdict")
    reason = f"image refused before transfer: {check.message}"
    summary.update(reason=reason, error=reason, activation=wanted_mode(req), signature=check.to_dict())
    return summary


def wanted_mode(req: PushRequest) -> str:
    return "command" if req.activation is not None else "now" if req.activate_now else "none"


def refused_summary(req: PushRequest, image: FirmwareImage, verdict: dict[str, Any]) -> dict[str, Any]:
    return {
        "job": None,
        "device": str(eui64(req.device)),
        "state": "failed",
        "reason": f"activation command refused before transfer: {verdict['message']}",
        "manufacturer_code": image.manufacturer_code,
        "image_type": image.image_type,
        "file_version": image.file_version,
        "device_file_version": None,
        "bytes": 0,
        "size": image.size,
        "seconds": 0.0,
        "activation": "command",
        "verdict": verdict,
        "messages": [],  # nothing reached the device: no transfer ended
    }


def final_line(summary: dict[str, Any]) -> str:
    state = summary["state"]
    dev = summary["device"]
    version = f"0x{summary['file_version']:08X}"
    if state == "held":
        return f"{dev}: held — image {version} verified by the device and waiting for activation ({summary['held_requests']} Upgrade End Request(s) answered with 0xFFFFFFFF)"
    if state == "confirmed":
        return f"{dev}: activated and confirmed — the device reports version 0x{summary['device_file_version']:08X}"
    if state == "failed":
        return f"{dev}: failed: {summary['reason']}"
    return f"{dev}: {state}" + (f" ({summary['reason']})" if summary.get("reason") else "")


__all__ = ["PushOutcome", "PushRequest", "EngineError", "final_line", "run_push"]
