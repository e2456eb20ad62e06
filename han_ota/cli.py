"""The ``han-ota`` command line. Commands are thin wrappers over async functions."""

from __future__ import annotations

import asyncio
import json
import logging
import sys
from pathlib import Path
from typing import Optional

import typer

from gateway.config import Config, ConfigError, load_config
from gateway.image import ImageError

app = typer.Typer(
    name="han-ota",
    help="Communications Hub stand-in for GB smart-metering labs: Zigbee OTA firmware for PPMID and HCALCS devices, released only by supplier-signed GBCS commands.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


def _mount() -> None:
    from han_ota import cli_gbcs, cli_image

    app.add_typer(cli_image.app, name="image", help="Inspect and build firmware images.")
    app.add_typer(cli_gbcs.app, name="gbcs", help="Verify, sign and make keys for GBCS activation commands.")


SIM_DEVICE_HELP = (
    "A simulated device KIND:IEEE[:key=value...] (repeatable). KIND ppmid or hcalcs; keys: manufacturer_code, "
    "image_type, file_version, hardware_version, max_data_size, page_requests, page_size, sleepy_poll (s), loss (0-1), "
    "link (instant|realistic), self_activate_after, min_block_period_ms, timeout_policy, activation_policy, "
    "activation_fails, corrupt."
)


def fail(message: str, code: int = 2) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(code)


def read_config(path: Optional[Path]) -> Config:
    if path is None:
        return Config()
    try:
        return load_config(path)
    except ConfigError as exc:
        raise fail(str(exc)) from None


def setup_logging(verbose: int, json_mode: bool = False, quiet: bool = False) -> None:
    if verbose == 0 and (json_mode or quiet):
        level = logging.WARNING
    else:
        level = [logging.INFO, logging.INFO, logging.DEBUG][min(verbose, 2)]
    logging.basicConfig(level=level, stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # The radio libraries are chatty at INFO; keep our own lines readable.
    for noisy in ("zigpy", "bellows", "zigpy_znp", "aiosqlite"):
        logging.getLogger(noisy).setLevel(logging.DEBUG if verbose > 1 else logging.WARNING)


@app.command()
def push(
    image: Path = typer.Argument(..., help="Firmware image file (Zigbee OTA or GBCS form).", exists=False),
    device: str = typer.Option(..., "--device", help="Target device IEEE address (16 hex digits or 8 colon-separated pairs)."),
    radio: Optional[str] = typer.Option(None, "--radio", help="Radio kind: sim (default), ezsp or znp."),
    path: Optional[str] = typer.Option(None, "--path", help="Radio path: serial device, /dev/serial/by-id/... or socket://host:port."),
    baudrate: Optional[int] = typer.Option(None, "--baudrate", help="Serial speed (default: the dongle family's)."),
    flow_control: Optional[str] = typer.Option(None, "--flow-control", help="none, software or hardware."),
    sim_device: list[str] = typer.Option([], "--sim-device", help=SIM_DEVICE_HELP),
    activate_now: bool = typer.Option(False, "--activate-now", help="Release the hold at once, without supplier authority (lab images only; logged as such)."),
    stall_timeout: Optional[float] = typer.Option(None, "--stall-timeout", help="Seconds without a request from the device before the transfer fails (sleepy devices are slow)."),
    timeout: Optional[float] = typer.Option(None, "--timeout", help="Give up (cancel) after this many seconds."),
    config: Optional[Path] = typer.Option(None, "--config", help="TOML configuration file."),
    json_out: bool = typer.Option(False, "--json", help="Print one JSON object as the last line."),
    verbose: int = typer.Option(0, "--verbose", "-v", count=True, help="More log output (-vv includes the radio libraries)."),
) -> None:
    """Push IMAGE to one device and leave it held (or activated with --activate-now)."""
    from han_ota.push import PushRequest, final_line, run_push
    from gateway.engine import EngineError
    from radios.select import RadioError

    setup_logging(verbose, json_out)
    cfg = read_config(config)
    req = PushRequest(
        image=image,
        device=device,
        radio=radio or cfg.radio.kind,
        path=path or cfg.radio.path,
        baudrate=baudrate or cfg.radio.baudrate,
        flow_control=flow_control or cfg.radio.flow_control,
        sim_devices=sim_device,
        activate_now=activate_now,
        stall_timeout_s=stall_timeout,
        timeout_s=timeout,
        config=cfg,
        progress=not json_out,
    )
    try:
        outcome = asyncio.run(run_push(req))
    except (ImageError, ConfigError, EngineError, RadioError, ValueError) as exc:
        if json_out:
            typer.echo(json.dumps({"device": device, "state": "failed", "reason": str(exc)}))
        raise fail(str(exc), 1) from None
    except KeyboardInterrupt:
        raise fail("interrupted; the job was not completed", 130) from None
    if json_out:
        typer.echo(json.dumps(outcome.summary))
    else:
        typer.echo(final_line(outcome.summary))
        for warning in outcome.summary.get("warnings", []):
            typer.echo(f"warning: {warning}", err=True)
    raise typer.Exit(0 if outcome.reached else 1)


@app.command()
def demo(
    verbose: int = typer.Option(0, "--verbose", "-v", count=True, help="Add the OTA step log (-vv: also the radio libraries)."),
) -> None:
    """A scripted bench session on the simulated radio: a PPMID and an HCALCS."""
    from han_ota.demo import run_demo

    # The narration is the output; -v adds the step-by-step OTA log.
    setup_logging(verbose, quiet=True)
    raise typer.Exit(asyncio.run(run_demo()))


def main() -> None:
    _mount()
    app()


__all__ = ["app", "main"]
