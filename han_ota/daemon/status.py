"""What ``han-ota status`` and ``devices`` show: the daemon, its radio, its jobs.

``Views`` builds the JSON bodies (fields as docs/control-api.md names them) from the
runtime and the journal; ``summary`` is also the line systemd shows (``STATUS=``).
A job the engine holds is shown live; before the radio's first start, or for a job
that ended in an earlier run, the store's row is shown instead.
"""

from __future__ import annotations

import contextlib
import os
import time
from typing import Any

from gateway.engine import EngineError, Job
from gateway.store import JobRecord
from han_ota.daemon.journal import Journal
from han_ota.daemon.runtime import Runtime, iso, store_id, version
from han_ota.tunnels import DaemonTunnels


class Views:
    def __init__(self, runtime: Runtime, journal: Journal, tunnels: DaemonTunnels) -> None:
        self.runtime = runtime
        self.journal = journal
        self.tunnels = tunnels
        self.started_wall = time.time()
        self.started = time.monotonic()

    def counts(self) -> dict[str, int]:
        counts = {"transferring": 0, "pending": 0, "held": 0, "scheduled": 0, "activated": 0, "queued": 0}
        engine = self.runtime.engine
        for job in list(engine.jobs()) if engine is not None else []:
            if job.state_name in counts:
                counts[job.state_name] += 1
        return counts

    def summary(self) -> str:
        c = self.counts()
        radio = self.runtime.radio
        text = f"radio {radio.kind} {'up' if radio.up else 'down'}; {c['transferring']} transferring, {c['pending']} pending, {c['held']} held, {c['scheduled']} scheduled"
        if c["activated"]:
            text += f", {c['activated']} activating"
        if c["queued"]:
            text += f", {c['queued']} queued"
        if self.journal.store_error:
            text += "; STORE WRITE FAILING"
        if self.journal.audit_error:
            text += "; AUDIT WRITE FAILING"
        if self.journal.chain_error:
            text += "; AUDIT CHAIN BROKEN"
        return text

    def job_view(self, job: Job) -> dict[str, Any]:
        rt = self.runtime
        view = job.to_dict()
        track = self.journal.tracks.get(job.id)
        view["kind"] = track.kind if track else rt.kind_of(job.ieee, job.image)
        if rt.activation is not None:
            at = rt.activation.scheduled_at(job.ieee)
            view["scheduled_at"] = None if at is None else at.isoformat()
        view["parked"] = rt.engine is not None and rt.engine.parked(job)
        view["security"] = rt.security.get(job.ieee).to_dict()
        hub = rt.hub
        view["messages"] = [] if hub is None else self.journal.store_read(lambda _: hub.job_messages(job, store_id(job)))
        return view

    def stored_view(self, rec: Any) -> dict[str, Any]:
        r: JobRecord = rec.record
        return {
            "job": str(rec.job_id),
            "device": r.device,
            "kind": r.kind.value,
            "state": "queued" if rec.queued else rec.state.value,
            "priority": r.priority,
            "reason": rec.reason,
            "manufacturer_code": r.manufacturer_code,
            "image_type": r.image_type,
            "file_version": r.file_version,
            "bytes": rec.offset,
            "size": r.size,
            "rate_bytes_per_s": None,
            "eta_seconds": None,
            "activation": r.activation.mode.value,
            "image": r.image_path,
            "image_sha256": r.image_sha256,
            "created": r.created_utc.isoformat(),
            "updated": rec.updated_utc.isoformat(),
            "messages": [m.to_dict() for m in self.journal.store_read(lambda s: s.list_messages(job_id=rec.job_id))],
        }

    def status(self) -> dict[str, Any]:
        """GET /v1/status."""
        rt, journal = self.runtime, self.journal
        engine = rt.engine
        if engine is not None:
            jobs = [self.job_view(j) for j in engine.jobs()]
        else:
            jobs = [self.stored_view(r) for r in journal.store_read(lambda s: s.list_jobs(active_only=True))]
        holds = [
            {
                "job": j["job"],
                "device": j["device"],
                "state": j["state"],
                "file_version": j["file_version"],
                "held_requests": j.get("held_requests"),
                "scheduled_at": j.get("scheduled_at"),
            }
            for j in jobs
            if j["state"] in ("held", "scheduled")
        ]
        schedules = []
        for s in journal.store_read(lambda st: st.list_schedules()):
            device = None
            if engine is not None:
                with contextlib.suppress(EngineError):
                    device = str(engine.job(str(s.job_id)).ieee)
            schedules.append({"job": str(s.job_id), "device": device, "at": s.at_utc.isoformat(), "created": s.created_utc.isoformat()})
        head = journal.audit.head() if journal.audit is not None else (0, "")
        config = rt.config
        return {
            "daemon": {
                "version": version(),
                "pid": os.getpid(),
                "config": str(config.source) if config.source else None,
                "uptime_s": round(time.monotonic() - self.started, 1),
                "started": iso(self.started_wall),
                "state_dir": str(config.state_dir),
                "control_socket": str(config.control_socket),
                "radio": rt.radio.to_dict(),
                "summary": self.summary(),
                "store": {"ok": journal.store_error is None, "error": journal.store_error},
                "audit": {
                    "ok": journal.audit_error is None and journal.chain_error is None,
                    "error": journal.audit_error or journal.chain_error,
                    "chain_error": journal.chain_error,
                    "head_seq": head[0],
                    "verified_at_start": journal.audit_verified,
                    "warning": journal.start_warning,
                },
            },
            "jobs": jobs,
            "holds": holds,
            "schedules": schedules,
        }

    def devices(self) -> dict[str, Any]:
        """GET /v1/devices: the devices zigpy knows, with their job, security and tunnel."""
        rt = self.runtime
        out = []
        app = rt.app
        if app is not None:
            own = app.state.node_info.ieee
            for ieee, device in app.devices.items():
                if ieee == own:
                    continue
                job = rt.engine.job_for_device(ieee) if rt.engine is not None else None
                out.append(
                    {
                        "ieee": str(ieee),
                        "nwk": f"0x{int(device.nwk):04X}",
                        # zigpy types the table as BaseDevice; its entries are Devices.
                        "model": getattr(device, "model", None),
                        "manufacturer": getattr(device, "manufacturer", None),
                        "kind": rt.kind_of(ieee),
                        "job": None if job is None else job.id,
                        "state": None if job is None else job.state.value,
                        "security": rt.security.get(ieee).to_dict(),
                        "tunnel": self.tunnels.state(ieee),
                    }
                )
        return {"radio": rt.radio.to_dict(), "devices": out}
