"""The control API's request handlers (``han_ota.control.ControlApi``).

``han_ota.control`` parses and routes the HTTP request and calls one of these; each
returns (status, JSON body) or raises ``HttpError`` with a message that says what to
do. Bodies and messages are documented in docs/control-api.md.

A push is acknowledged only once its job is on disk: the image is read (off the
event loop, bounded), checked (its supplier signature, a CS06 with it), copied into
the state directory, the job written to the store, and only then handed to the engine.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime as dt
import errno
import hashlib
import logging
import os
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import zigpy.types as zt

from eui64 import Eui64
from gateway import audit as audit_mod
from gateway.activation import check_image_signature
from gateway.audit import AuditError
from gateway.config import ConfigError, parse_eui64
from gateway.engine import EngineError, Job
from gateway.files import NotRegularFile, open_regular
from gateway.gbcs.command import decode_hex_text
from gateway.gbcs.errors import GbcsError
from gateway.gbcs.trust import TrustStore
from gateway.image import DEFAULT_MAX_SIZE, ImageError, parse_image
from gateway.ota.priority import Admission, priority_label
from gateway.store import ActivationRequest, DeviceBusy, JobKind, JobRecord, StoreError
from han_ota.control import HttpError
from han_ota.daemon.images import IMAGES_DIR, keep_image
from han_ota.daemon.journal import Journal, Track
from han_ota.daemon.runtime import Runtime
from han_ota.daemon.status import Views
from han_ota.tunnels import CommandRefused, DaemonTunnels

LOGGER = logging.getLogger("han_ota.daemon")

# A local image reads in milliseconds; past this the file is on a hung filesystem
# (NFS, FUSE), and the push says so rather than wait with the client.
FILE_READ_TIMEOUT_S = 30.0
# How long joining stays open when a push names a device the coordinator has not seen.
PERMIT_FOR_UNKNOWN_S = 180


class ControlHandlers:
    def __init__(self, runtime: Runtime, journal: Journal, views: Views, tunnels: DaemonTunnels, *, on_change: Callable[[], None]) -> None:
        self.runtime = runtime
        self.journal = journal
        self.views = views
        self.tunnels = tunnels
        self._on_change = on_change  # something status shows changed

    async def status(self) -> tuple[int, Any]:
        return 200, self.views.status()

    async def devices(self) -> tuple[int, Any]:
        return 200, self.views.devices()

    async def push(self, image: str, device: str, activation: str | None, activate_now: bool, stall_timeout: float | None, allow_downgrade: bool = False, priority: int | None = None, replace: bool = False) -> tuple[int, Any]:
        rt, journal = self.runtime, self.journal
        config = rt.config
        if rt.stopping:
            raise HttpError(503, "the daemon is stopping")
        ieee = _parse_device(device)
        source = Path(image)
        if not source.is_absolute():
            raise HttpError(400, f"image path {image!r} is relative; send an absolute path (the daemon does not share your working directory)")
        data = await _read_user_file(source, "image")
        try:
            firmware = parse_image(data)
        except ImageError as exc:
            raise HttpError(422, f"{source}: {exc}") from None
        signature = check_image_signature(firmware, ieee, config, rt.trust if rt.trust is not None else TrustStore())
        if signature.refused:
            journal.write("image.signature_refused", ieee, source=str(source), supplier=signature.supplier, message=signature.message)
            raise HttpError(422, f"{source}: image refused before any block was sent: {signature.message}")
        engine, app, service = rt.engine, rt.app, rt.activation
        if not rt.radio.up or engine is None or app is None or service is None:
            raise HttpError(503, f"the radio ({rt.radio.kind}) is not up{f': {rt.radio.last_error}' if rt.radio.last_error else ''}; try again when `{rt.cli('status')}` shows it up")
        priority = config.ota.default_priority(rt.kind_of(ieee, firmware)) if priority is None else priority
        self._admit(ieee, priority, replace)  # refused before the image is copied
        unknown = ieee not in app.devices
        if unknown and rt.radio.kind == "sim":
            known = ", ".join(str(d) for d in app.devices if d != app.state.node_info.ieee) or "none"
            raise HttpError(404, f"{ieee} is not on this network (known devices: {known}); check the address, or let it join first")
        command_hex: str | None = None
        if activation is not None:
            try:
                command_hex = decode_hex_text(activation).hex()
            except GbcsError as exc:
                raise HttpError(400, f"activation is not hex text: {exc}") from None
            check = service.precheck(command_hex, firmware, ieee)
            if not check.accepted:
                journal.write("gbcs.precheck_refused", ieee, reason=check.reason, message=check.message, response_code=check.response_code)
                raise HttpError(422, f"the activation command was refused before any block was sent: {check.message}")
        digest = hashlib.sha256(data).hexdigest()
        try:
            stored_path = await asyncio.to_thread(keep_image, config.state_dir, data, digest)
        except OSError as exc:
            where = config.state_dir / IMAGES_DIR
            if _out_of_space(exc):
                raise HttpError(507, f"cannot keep a copy of the image in {where}: {exc.strerror or exc}; free space on the state filesystem") from None
            raise HttpError(500, f"cannot keep a copy of the image in {where}: {exc.strerror or exc}; the directory must be writable by the service user") from None
        kind = rt.kind_of(ieee, firmware)
        if activate_now:
            request = ActivationRequest.now()
        elif command_hex is not None:
            request = ActivationRequest.command(command_hex)
        else:
            request = ActivationRequest.none()
        record = JobRecord(
            device=str(ieee),
            image_path=str(stored_path),
            image_sha256=digest,
            manufacturer_code=firmware.manufacturer_code,
            image_type=firmware.image_type,
            file_version=firmware.file_version,
            size=firmware.size,
            kind=JobKind(kind),
            activation=request,
            created_utc=dt.datetime.now(dt.timezone.utc),
            priority=priority,
        )
        store = journal.store
        assert store is not None
        if rt.stopping or not rt.radio.up:  # it went while we read and copied the image
            raise HttpError(503, "the daemon is stopping or the radio went away; push again shortly")
        admission, live = self._admit(ieee, priority, replace)  # again: jobs may have moved meanwhile
        superseded = int(live.id) if admission is Admission.SUPERSEDE and live is not None else None
        try:
            job_number = store.create_job(
                record,
                queued=admission is Admission.QUEUE,
                supersede=superseded,
                reason=f"superseded by a push of priority {priority_label(priority)}",
            )
        except DeviceBusy as exc:
            raise HttpError(409, str(exc)) from None
        except StoreError as exc:
            journal.store_failed(exc)
            status = 507 if _out_of_space(exc) else 500
            raise HttpError(status, f"the job was NOT accepted: {exc}") from None
        journal.write(
            "job.accepted",
            ieee,
            job=job_number,
            image=str(stored_path),
            source=str(source),
            sha256=digest,
            size=firmware.size,
            manufacturer_code=firmware.manufacturer_code,
            image_type=firmware.image_type,
            file_version=firmware.file_version,
            kind=kind,
            activation=request.mode.value,
            signature=signature.verdict,
            priority=priority,
            supersedes=superseded,
        )
        device_cfg = config.device(Eui64.from_air(ieee))
        stall = stall_timeout or (device_cfg.stall_timeout_s if device_cfg else None)
        journal.tracks[str(job_number)] = Track(kind=kind)
        try:
            job = engine.push(
                firmware,
                ieee,
                image_path=stored_path,
                stall_timeout_s=stall,
                activation=request.mode.value,
                job_id=str(job_number),
                allow_unknown=unknown,
                allow_downgrade=allow_downgrade,
                priority=priority,
                replace=replace,
            )
        except EngineError as exc:
            journal.fail_stored(job_number, str(ieee), f"not started: {exc}")
            raise HttpError(409, str(exc)) from None
        if signature.verdict == "not_checked":
            LOGGER.warning("%s job=%s %s", ieee, job.id, signature.message)
            job.warnings.append(signature.message)
        if command_hex is not None:
            service.arm(job, command_hex)
        if unknown:
            # A real network: the device may simply not have been heard since zigpy's
            # database was made. Open joining; the job waits, pending, for its query.
            journal.write("radio.permit_join", ieee, seconds=PERMIT_FOR_UNKNOWN_S, reason="push to a device the coordinator does not know yet")
            try:
                await app.permit(PERMIT_FOR_UNKNOWN_S)
            except Exception as exc:  # the job still waits for the device's own query
                LOGGER.warning("permit joining for %s failed: %s", ieee, exc)
        journal.persist(job)
        self._on_change()
        return 202, {"job": self.views.job_view(job)}

    def _admit(self, ieee: zt.EUI64, priority: int, replace: bool) -> tuple[Admission, Job | None]:
        """The engine's admission of a push, or 409 for a device busy at the same priority."""
        rt = self.runtime
        assert rt.engine is not None
        admission, live = rt.engine.admission(ieee, priority, replace=replace)
        if admission is Admission.REFUSE and live is not None:
            raise HttpError(
                409,
                f"{ieee} already has job {live.id} ({live.state.value}) at the same priority ({priority_label(priority)}); "
                f"cancel it first (`{rt.cli(f'cancel {live.id}')}`), follow it (`{rt.cli(f'wait {live.id}')}`), "
                "or push with --replace (or a higher --priority) to supersede it",
            )
        return admission, live

    async def activate(self, command: str, device: str | None) -> tuple[int, Any]:
        rt = self.runtime
        ieee = None if device is None else _parse_device(device)
        if rt.activation is None or not rt.radio.up:
            # Refuse before verifying: an accepted command advances its counter, and a
            # release that cannot reach the device would waste it.
            raise HttpError(503, f"the radio ({rt.radio.kind}) is not up; submit the command when `{rt.cli('status')}` shows it up")
        result = rt.activation.submit(command, device=ieee)
        self._on_change()
        return 200, result.to_dict()

    async def gbcs_send(self, command: str, device: str | None, timeout: float | None) -> tuple[int, Any]:
        rt = self.runtime
        ieee = None if device is None else _parse_device(device)
        if rt.activation is None or not rt.radio.up:
            raise HttpError(503, f"the radio ({rt.radio.kind}) is not up; send the command when `{rt.cli('status')}` shows it up")
        try:
            raw = decode_hex_text(command)
            result = await self.tunnels.send_command(rt.activation, raw, ieee, timeout or 60.0)
        except (CommandRefused, GbcsError) as exc:
            raise HttpError(422, f"not forwarded: {exc}") from None
        self._on_change()
        return 200, result

    async def job(self, job_id: str) -> tuple[int, Any]:
        number = _parse_job_id(job_id)
        engine = self.runtime.engine
        if engine is not None:
            with contextlib.suppress(EngineError):
                return 200, {"job": self.views.job_view(engine.job(str(number)))}
        store = self.journal.store
        assert store is not None
        try:
            rec = store.get_job(number)
        except StoreError as exc:
            raise HttpError(404, str(exc)) from None
        return 200, {"job": self.views.stored_view(rec)}

    async def cancel(self, job_id: str) -> tuple[int, Any]:
        rt = self.runtime
        number = _parse_job_id(job_id)
        engine = rt.engine
        if engine is None:
            raise HttpError(503, "the radio has not come up yet, so no job is running; try again shortly")
        try:
            job = engine.job(str(number))
        except EngineError:
            _status, body = await self.job(job_id)  # 404, or a job that ended in an earlier run
            raise HttpError(409, f"job {number} has already ended ({body['job']['state']})") from None
        if job.done:
            raise HttpError(409, f"job {number} has already ended ({job.state.value})")
        if engine.parked(job):
            raise HttpError(503, f"the radio ({rt.radio.kind}) is down and job {number} is parked; cancel it when `{rt.cli('status')}` shows the radio up")
        self.journal.write("job.cancel_requested", job.ieee, job=number)
        engine.cancel(job.id)
        return 200, {"job": self.views.job_view(job)}

    async def log(self, device: str | None, since: int | None, limit: int) -> tuple[int, Any]:
        audit = self.journal.audit
        assert audit is not None
        dev = None if device is None else str(_parse_device(device))
        path = audit.path

        def read() -> list[dict[str, Any]]:
            out = []
            for record in audit_mod.read_records(path, device=dev, since_seq=since):
                out.append(record.as_dict())
                if len(out) >= limit:
                    break
            return out

        try:
            records = await asyncio.to_thread(read)
        except AuditError as exc:
            raise HttpError(500, str(exc)) from None
        return 200, {"records": records, "head": audit.head()[0], "limit": limit}

    async def log_verify(self) -> tuple[int, Any]:
        audit = self.journal.audit
        assert audit is not None
        head = audit.head()
        result = await asyncio.to_thread(audit.verify, head)
        return 200, dataclasses.asdict(result) | {"path": str(audit.path)}

    async def messages(self, device: str | None, after: int | None, limit: int) -> tuple[int, Any]:
        """GET /v1/messages: the GBCS messages kept (han_ota.hub_alerts), oldest first."""
        dev = None if device is None else str(_parse_device(device))
        rows = self.journal.store_read(lambda s: s.list_messages(device=dev, after_id=after, limit=limit))
        return 200, {"messages": [m.to_dict() for m in rows], "limit": limit}


async def _read_user_file(path: Path, what: str) -> bytes:
    """A file a client named, read in a worker thread that can neither block on the
    open (a FIFO, a device) nor hold the request past FILE_READ_TIMEOUT_S."""
    try:
        return await asyncio.wait_for(asyncio.to_thread(_read_limited, path), FILE_READ_TIMEOUT_S)
    except TimeoutError:
        raise HttpError(503, f"reading {what} {path} took over {FILE_READ_TIMEOUT_S:g} s (a hung network or FUSE filesystem?); copy it to a local disk and push again") from None
    except NotRegularFile as exc:
        raise HttpError(400, f"{exc}; the daemon reads only regular files") from None
    except OSError as exc:
        raise HttpError(400, f"the daemon cannot read {what} {path}: {exc.strerror or exc}; it must be readable by the service user (under systemd, not in /home or /tmp)") from None


def _read_limited(path: Path) -> bytes:
    with open_regular(path) as f:
        size = os.fstat(f.fileno()).st_size
        if size > DEFAULT_MAX_SIZE:
            raise OSError(f"{path} is {size} bytes, over the {DEFAULT_MAX_SIZE}-byte image limit")
        return f.read(DEFAULT_MAX_SIZE + 1)


def _out_of_space(exc: BaseException) -> bool:
    """ENOSPC/EDQUOT (or SQLite's SQLITE_FULL) anywhere in the cause chain: only then
    is "free space" the fix."""
    seen: BaseException | None = exc
    for _ in range(8):  # a chain can loop; the cause is never far down
        if seen is None:
            break
        if isinstance(seen, OSError) and seen.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        if isinstance(seen, sqlite3.Error) and getattr(seen, "sqlite_errorcode", 0) & 0xFF == sqlite3.SQLITE_FULL:
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def _parse_device(text: str) -> zt.EUI64:
    try:
        return zt.EUI64(parse_eui64(text, "device").air)
    except ConfigError as exc:
        raise HttpError(400, str(exc)) from None


def _parse_job_id(text: str) -> int:
    if not text.isdigit() or len(text) > 18:
        raise HttpError(404, f"no job {text!r}: job ids are numbers, as `han-ota status` lists them")
    return int(text)
