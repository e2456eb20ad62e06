"""Wiring the hub's HAN security: the key-establishment service beside the OTA engine,
and how `devices` and `status` show a device's security.

The registry itself (gateway.se.security) is made once per run from the config
(gateway.engine.security_registry) and shared by the engine, its driver and the
key-establishment service, which writes it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from gateway.se.security import SecurityRegistry

LOGGER = logging.getLogger("han_ota.security")

OnEvent = Callable[..., object]


class KeyEstablishmentUnavailable(RuntimeError):
    """The configured key establishment cannot start; the message names the fix."""


async def start_key_establishment(app: Any, config: Any, registry: SecurityRegistry, on_event: OnEvent) -> Any | None:
    """Start the key-establishment service on ``app`` when the config has a
    [key_establishment] table; None (and no import of it) otherwise.

    ``on_event(name, device=ieee, **fields)`` gets its audit events (ke.started,
    ke.established, ke.terminated, ke.key_installed, ...). Raises what its start raises
    `KeyEstablishmentUnavailable` when the configured identity cannot serve (its
    certificate is for another coordinator, say).
    """
    ke = config.key_establishment
    if ke is None:
        return None
    # Imported here: a run without [key_establishment] needs none of it.
    from gateway.se.service import KeyEstablishmentService, KeyEstablishmentStartError

    # Config.key_establishment wraps the responder's KeConfig with the files it came from.
    service = KeyEstablishmentService(app, ke.ke_config, registry, on_event=on_event)
    try:
        await service.start()
    except KeyEstablishmentStartError as exc:
        await close_key_establishment(service)
        raise KeyEstablishmentUnavailable(str(exc)) from None
    return service


async def close_key_establishment(service: Any | None) -> None:
    if service is not None:
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
