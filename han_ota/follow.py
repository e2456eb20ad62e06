"""Following a daemon's job from the command line: the bar, Ctrl-C and the last line."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer

from han_ota.cli_app import hint
from han_ota.client import Client, DaemonError
from han_ota.progress import ProgressLine
from han_ota.push import final_line

EXIT_INTERRUPTED = 130


def follow_job(client: Client, job: dict[str, Any], wanted: str, *, timeout: float | None, json_out: bool, config: Path | None) -> int:
    """Wait for ``job`` to reach ``wanted`` (or an end state); returns the exit code."""
    bar = None if json_out else ProgressLine(job["device"], int(job.get("size") or 1))

    def update(j: dict[str, Any]) -> None:
        if bar is not None:
            bar.update(int(j.get("bytes") or 0), j["state"], j.get("rate_bytes_per_s"), j.get("eta_seconds"))

    try:
        job = client.wait_job(job["job"], until=(wanted,), timeout=timeout, on_update=update)
    except KeyboardInterrupt:
        if bar is not None:
            bar.close()
        # The daemon owns the job: stopping to watch must not look like stopping it.
        job_id = job["job"]
        message = f"stopped waiting; job {job_id} goes on in the daemon. Follow it with {hint(f'wait {job_id}', config)} or cancel it with {hint(f'cancel {job_id}', config)}"
        if json_out:
            typer.echo(json.dumps({"job": job["job"], "device": job["device"], "state": job.get("state"), "error": message}))
        typer.echo(message, err=True)
        return EXIT_INTERRUPTED
    except DaemonError as exc:
        if bar is not None:
            bar.close()
        if json_out:
            typer.echo(json.dumps({"job": job["job"], "device": job["device"], "error": str(exc)}))
        typer.echo(f"error: {exc}", err=True)
        return 1
    if bar is not None:
        bar.close()
    typer.echo(json.dumps(job) if json_out else final_line(job))
    return 0 if job["state"] == wanted else 1
