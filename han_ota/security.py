"""Wiring the hub's HAN security: the key-establishment service beside the OTA engine,
and how `devices` and `status` show a device's security.

The registry itself (gateway.se.security) is made once per run from the config
(``SecurityRegistry(config.security_modes())``) and shared by the engine, its driver and the
key-establishment service, which writes it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from gateway.ota.guard import OtaSecurityGuard
from gateway.se.security import SecurityRegistry

LOGGER = logging.getLogger("han_ota.security")

OnEvent = Callable[..., object]


class KeyEstablishmentUnavailable(RuntimeError):
    """The configured key establishment cannot start; the message names the fix."""


@dataclass
class HanSecurity:
    """What guards one application's HAN security: the key-establishment service and
    the guard on zigpy's own OTA frames (gateway/ota/guard.py)."""

    app: Any
    service: Any
    guard: OtaSecurityGuard


async def start_key_establishment(app: Any, config: Any, registry: SecurityRegistry, on_event: OnEvent) -> HanSecurity:
    """Start the key-establishment service on ``app``, and the guard that holds zigpy's
    own OTA frames to a device until its key is established. Without a
    [key_establishment] table the service only refuses (a device that initiates gets
    Terminate, and the start-up log says how to configure it).

    ``on_event(name, device=ieee, **fields)`` gets its audit events (ke.started,
    ke.established, ke.terminated, ke.key_installed, ...). Raises
    `KeyEstablishmentUnavailable` when the configured identity cannot serve (its
    certificate is for another coordinator, say).
    """
    from gateway.se.service import KeyEstablishmentService, KeyEstablishmentStartError

    ke = config.key_establishment
    # Config.key_establishment wraps the responder's KeConfig with the files it came from.
    service = KeyEstablishmentService(app, None if ke is None else ke.ke_config, registry, on_event=on_event)
    try:
        await service.start()
    except KeyEstablishmentStartError as exc:
        await _close_service(service)
        raise KeyEstablishmentUnavailable(str(exc)) from None
    return HanSecurity(app, service, OtaSecurityGuard(app, registry))


async def close_key_establishment(security: HanSecurity | None) -> None:
    if security is None:
        return
    security.guard.close()
    await _close_service(security.service)


async def _close_service(service: Any) -> None:
    try:
        await service.close()
    except Exception:  # shutting down: nothing of it is needed any more
        LOGGER.debug("closing the key-establishment service failed", exc_info=True)


def security_cell(security: dict[str, Any] | None) -> str:
    """The short SECURITY column of `han-ota devices` / the status line, from
    ``DeviceSecurity.to_dict()``: mode, then how far key establishment got."""
    if not security:
        return "-"
    mode = security.get("mode") or "auto"
    state = security.get("key_establishment") or "none"
    if state == "established":
        suite = security.get("suite")
        return f"{mode} aps" + (f" s{suite}" if suite else "")
    if state == "failed":
        return f"{mode} failed:{security.get('status') or '?'}"
    if state == "establishing":
        return f"{mode} keying"
    return mode
