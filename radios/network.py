"""The coordinator's network: read it, form one, back it up, restore it.

Everything goes through zigpy's radio-independent API, so it works the same for
bellows (EZSP) and zigpy-znp (Z-Stack): ``app.connect()`` without starting the
network, ``app.load_network_info(load_devices=True)``, ``app.form_network()``,
``app.backups.from_network_state()`` / ``restore_backup()`` (which calls the driver's
``write_network_info``). Backups are zigpy's ``NetworkBackup`` JSON (``as_dict``); the
open coordinator backup format (zigpy-znp's and Zigbee2MQTT's ``coordinator_backup.json``)
is read too and can be written with ``fmt="open-coordinator"``.

Every function takes a ``RadioTarget`` and returns JSON-ready dicts; every failure
is a ``radios.select.RadioError`` naming the port and the fix.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import zigpy.config as zconf
import zigpy.exceptions
import zigpy.types as t
from zigpy.backups import NetworkBackup

from radios.detect import check_port, describe_open_error, driver_class
from radios.select import DEFAULTS, RadioError, zigpy_config

LOGGER = logging.getLogger(__name__)

CONNECT_TIMEOUT_S = 60.0
# zigpy's well-known Trust Center link key, "ZigBeeAlliance09".
DEFAULT_TC_LINK_KEY = t.KeyData(b"ZigBeeAlliance09")
BACKUP_FORMATS = ("zigpy", "open-coordinator")


@dataclass(frozen=True)
class RadioTarget:
    kind: str  # ezsp | znp
    path: str
    baudrate: int | None = None
    flow_control: str | None = None

    def config(self, *, database: Path | None = None, network: dict[str, Any] | None = None) -> dict[str, Any]:
        if self.kind not in DEFAULTS:
            raise RadioError(f"radio kind {self.kind!r}: these commands need a real driver, ezsp or znp (the sim radio has no dongle)")
        cfg = zigpy_config(self.kind, path=self.path, baudrate=self.baudrate, flow_control=self.flow_control, database=database)
        # A maintenance connection: no periodic backups, scans or OTA broadcasts.
        cfg[zconf.CONF_NWK_BACKUP_ENABLED] = False
        cfg[zconf.CONF_TOPO_SCAN_ENABLED] = False
        cfg[zconf.CONF_OTA] = {zconf.CONF_OTA_ENABLED: False}
        if network:
            cfg[zconf.CONF_NWK] = network
        return cfg


def _fingerprint(key: t.KeyData) -> str:
    """Enough of a key to tell two apart, without printing it."""
    return hashlib.sha256(bytes(key)).hexdigest()[:16]


@contextlib.asynccontextmanager
async def connected(target: RadioTarget, *, network: dict[str, Any] | None = None, timeout: float = CONNECT_TIMEOUT_S) -> AsyncIterator[Any]:
    """A driver connected to the coordinator, network not started (no devices join)."""
    config = target.config(network=network)  # refuses a kind that is not ezsp or znp
    problem = check_port(target.path)
    if problem is not None:
        raise RadioError(problem.message)
    app = driver_class(target.kind)(config)
    try:
        async with asyncio.timeout(timeout):
            await app.connect()
    except Exception as exc:
        with contextlib.suppress(Exception):
            await app.disconnect()
        if isinstance(exc, TimeoutError):
            raise RadioError(
                f"the {target.kind} radio at {target.path} did not answer within {timeout:g} s: is it a {target.kind} coordinator "
                f"(han-ota radio detect --probe tells), at the right --baudrate/--flow-control?"
            ) from None
        raise RadioError(f"could not connect to the {target.kind} radio at {target.path}: {describe_open_error(target.path, exc)}") from exc
    try:
        yield app
    finally:
        with contextlib.suppress(Exception):
            await app.disconnect()


async def _load(app: Any) -> bool:
    """Load the network from the radio; False when none is formed."""
    try:
        await app.load_network_info(load_devices=True)
    except zigpy.exceptions.NetworkNotFormed:
        return False
    return True


def describe(app: Any, target: RadioTarget, formed: bool) -> dict[str, Any]:
    node = app.state.node_info
    net = app.state.network_info
    report: dict[str, Any] = {
        "radio": target.kind,
        "path": target.path,
        "coordinator": {
            "ieee": None if node.ieee == t.EUI64.UNKNOWN else str(node.ieee),
            "nwk": None if int(node.nwk) == 0xFFFE else f"0x{int(node.nwk):04X}",
            "logical_type": node.logical_type.name.lower() if hasattr(node.logical_type, "name") else str(node.logical_type),
            "model": node.model,
            "manufacturer": node.manufacturer,
            "firmware": node.version,
        },
        "formed": formed,
    }
    if not formed:
        return report
    report["network"] = {
        "channel": net.channel,
        "pan_id": f"0x{int(net.pan_id):04X}",
        "extended_pan_id": str(net.extended_pan_id),
        "nwk_update_id": net.nwk_update_id,
        "security_level": net.security_level,
        "tx_power": net.tx_power,
        "network_key": {"seq": net.network_key.seq, "tx_counter": net.network_key.tx_counter, "fingerprint": _fingerprint(net.network_key.key)},
        "tc_link_key": "ZigBeeAlliance09 (the well-known default)" if net.tc_link_key.key == DEFAULT_TC_LINK_KEY else f"custom, fingerprint {_fingerprint(net.tc_link_key.key)}",
    }
    report["devices"] = {
        "children": sorted(str(c) for c in net.children),
        "addresses": {str(ieee): f"0x{int(nwk):04X}" for ieee, nwk in sorted(net.nwk_addresses.items(), key=lambda kv: str(kv[0]))},
        "link_keys": sorted(str(k.partner_ieee) for k in net.key_table),
    }
    return report


async def read_info(target: RadioTarget) -> dict[str, Any]:
    """The coordinator and its network, as the radio stores them."""
    async with connected(target) as app:
        formed = await _load(app)
        return describe(app, target, formed)


async def form(target: RadioTarget, *, channel: int | None = None, pan_id: int | None = None, force: bool = False) -> dict[str, Any]:
    """Form a new network (random keys and extended PAN id; channel by energy scan unless given).

    Refuses when the radio already has a network, unless ``force``: every device would
    have to join again.
    """
    if channel is not None and not 11 <= channel <= 26:
        raise RadioError(f"--channel {channel}: Zigbee 2.4 GHz channels are 11..26")
    if pan_id is not None and not 0x0001 <= pan_id <= 0xFFFE:
        raise RadioError(f"--pan-id 0x{pan_id:04X}: must be 0x0001..0xFFFE")
    network: dict[str, Any] = {}
    if channel is not None:
        network[zconf.CONF_NWK_CHANNEL] = channel
    if pan_id is not None:
        network[zconf.CONF_NWK_PAN_ID] = pan_id
    async with connected(target, network=network or None) as app:
        if await _load(app) and not force:
            old = describe(app, target, True)
            n = len(old["devices"]["addresses"]) or len(old["devices"]["children"])
            raise RadioError(
                f"the {target.kind} radio at {target.path} already has a network (extended PAN id {old['network']['extended_pan_id']}, "
                f"channel {old['network']['channel']}, {n} device(s) known): forming a new one makes every device join again. "
                f"Back it up first (han-ota radio backup -o FILE) and give --force to replace it"
            )
        try:
            await app.form_network()
        except Exception as exc:
            raise RadioError(f"forming a network on the {target.kind} radio at {target.path} failed: {type(exc).__name__}: {exc}") from exc
        formed = await _load(app)
        return describe(app, target, formed)


async def backup(target: RadioTarget) -> NetworkBackup:
    """The radio's network as a zigpy NetworkBackup (keys, counters, device tables)."""
    async with connected(target) as app:
        if not await _load(app):
            raise RadioError(f"the {target.kind} radio at {target.path} has no network to back up (form one: han-ota radio form)")
        backup = app.backups.from_network_state()
        if not backup.is_complete():
            raise RadioError(f"the {target.kind} radio at {target.path} returned an incomplete network (channel {backup.network_info.channel}, PAN id 0x{int(backup.network_info.pan_id):04X}); not writing a backup that cannot be restored")
        return backup


async def restore(target: RadioTarget, saved: NetworkBackup, *, force: bool = False, counter_increment: int = 10000) -> dict[str, Any]:
    """Write a backup to the radio (frame counters moved ahead by ``counter_increment``
    so devices accept the restored coordinator). Refuses to replace a *different*
    network unless ``force``.
    """
    if not saved.is_complete():
        raise RadioError("the backup is incomplete (no channel, PAN id, extended PAN id or network key): it cannot be restored")
    async with connected(target) as app:
        if await _load(app) and not force:
            current = app.backups.from_network_state()
            if not current.is_compatible_with(saved):
                raise RadioError(
                    f"the {target.kind} radio at {target.path} has another network (extended PAN id {current.network_info.extended_pan_id}, "
                    f"channel {current.network_info.channel}) than the backup ({saved.network_info.extended_pan_id}, channel "
                    f"{saved.network_info.channel}): back it up first if it matters and give --force to overwrite it"
                )
        try:
            await app.can_write_network_settings(network_info=saved.network_info, node_info=saved.node_info)
        except zigpy.exceptions.DestructiveWriteNetworkSettings as exc:
            if not force:
                raise RadioError(f"restoring on the {target.kind} radio at {target.path} would write once-only settings: {exc}; give --force to do it anyway") from None
        except zigpy.exceptions.CannotWriteNetworkSettings as exc:
            raise RadioError(f"the {target.kind} radio at {target.path} cannot take this backup: {exc}") from None
        try:
            await app.backups.restore_backup(saved, counter_increment=counter_increment, create_new=False)
        except Exception as exc:
            raise RadioError(f"restoring the backup on the {target.kind} radio at {target.path} failed: {type(exc).__name__}: {exc}") from exc
        formed = await _load(app)
        return describe(app, target, formed)


def backup_to_json(saved: NetworkBackup, fmt: str = "zigpy") -> str:
    if fmt == "zigpy":
        obj = saved.as_dict()
    elif fmt == "open-coordinator":
        obj = saved.as_open_coordinator_json()
    else:
        raise ValueError(f"backup format {fmt!r} is not one of {', '.join(BACKUP_FORMATS)}")
    return json.dumps(obj, indent=2, sort_keys=True) + "\n"


def backup_from_json(text: str, source: str = "backup") -> NetworkBackup:
    """zigpy's NetworkBackup JSON, or an open coordinator backup."""
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as exc:
        raise RadioError(f"{source}: not JSON ({exc.msg} at line {exc.lineno})") from None
    if not isinstance(obj, dict):
        raise RadioError(f"{source}: a backup is a JSON object, not {type(obj).__name__}")
    try:
        return NetworkBackup.from_dict(obj)
    except (KeyError, ValueError, TypeError) as exc:
        raise RadioError(f"{source}: not a zigpy network backup or open coordinator backup ({type(exc).__name__}: {exc})") from None


__all__ = [
    "BACKUP_FORMATS",
    "RadioTarget",
    "backup",
    "backup_from_json",
    "backup_to_json",
    "connected",
    "describe",
    "form",
    "read_info",
    "restore",
]
