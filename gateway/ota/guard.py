"""zigpy's own OTA frames obey each device's HAN security too.

zigpy sends OTA frames of its own: its interview reads a new device's OTA client
attributes and then notifies it (zigpy/device.py, ``Device._discover``), and its Ota
cluster answers what our driver leaves to it. An SE device drops every OTA frame
before its key is established (and a real one may take an unsecured one as a hub
that ignores SE security). Our driver withholds its own frames (gateway/ota/driver.py);
this guard, a send filter on the application (radios/tap.py), makes zigpy's wait for
the key, bounded, and then go with the device's security (APS-encrypted once its key is
in force); a failed key establishment refuses them with a DeliveryError naming why.

Installed as soon as the radio is up, before devices are waited for: the simulated
network's devices join during start-up, and zigpy interviews them at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

import zigpy.exceptions
import zigpy.types as zt
from zigpy.application import ControllerApplication

from gateway.ota import codec
from gateway.se.security import DeviceSecurity, KeyState, SecurityRegistry
from radios.tap import install_send_filter

__all__ = ["HOLD_FOR_KEY_S", "OtaSecurityGuard"]

LOGGER = logging.getLogger(__name__)

#: How long one of zigpy's OTA frames to a device still keying waits for its key:
#: three attempts of key establishment with their waits take about a minute.
HOLD_FOR_KEY_S = 120.0


class OtaSecurityGuard:
    def __init__(self, app: ControllerApplication, registry: SecurityRegistry, *, hold_s: float = HOLD_FOR_KEY_S) -> None:
        self._app = app
        self._registry = registry
        self._hold_s = hold_s
        self._changed: dict[zt.EUI64, asyncio.Event] = {}
        # Devices whose OTA frames this guard changes or holds (not yet allowed, or
        # APS-secured): with none, every frame passes without a device lookup, which
        # matters on the per-block path (zigpy's get_device(nwk=) walks every device).
        self._guarded: set[zt.EUI64] = {ieee for ieee, sec in registry.known().items() if _guarded(sec)}
        #: zigpy's OTA frames that waited for a key, and those refused.
        self.held = 0
        self.refused = 0
        self._unlisten: Callable[[], None] | None = registry.listen(self._on_change)
        self._remove: Callable[[], None] | None = install_send_filter(app, self.admit)

    def close(self) -> None:
        if self._remove is not None:
            self._remove()
            self._remove = None
        if self._unlisten is not None:
            self._unlisten()
            self._unlisten = None

    def _on_change(self, ieee: zt.EUI64, security: DeviceSecurity) -> None:
        if _guarded(security):
            self._guarded.add(ieee)
        else:
            self._guarded.discard(ieee)
        changed = self._changed.get(ieee)
        if changed is not None:
            changed.set()

    def _ieee(self, packet: zt.ZigbeePacket) -> zt.EUI64 | None:
        dst = packet.dst
        if dst is None:
            return None
        if dst.addr_mode == zt.AddrMode.IEEE:
            return zt.EUI64(dst.address)
        if dst.addr_mode == zt.AddrMode.NWK:
            try:
                return self._app.get_device(nwk=dst.address).ieee
            except KeyError:
                return None
        return None  # broadcasts and groups carry no unicast OTA

    async def admit(self, packet: zt.ZigbeePacket) -> zt.ZigbeePacket:
        if not self._guarded or packet.cluster_id != codec.OTA_CLUSTER_ID or packet.dst_ep == 0:
            return packet
        ieee = self._ieee(packet)
        if ieee is None:
            return packet
        security = self._registry.get(ieee)
        if not security.ota_allowed and security.state is not KeyState.FAILED:
            self.held += 1
            LOGGER.info("%s: zigpy's OTA frame held until its key is established (%s)", ieee, security.waiting_reason)
            changed = self._changed.setdefault(ieee, asyncio.Event())
            loop = asyncio.get_running_loop()
            deadline = loop.time() + self._hold_s
            while not security.ota_allowed and security.state is not KeyState.FAILED and loop.time() < deadline:
                changed.clear()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout_at(deadline):
                        await changed.wait()
                security = self._registry.get(ieee)
        if not security.ota_allowed:
            self.refused += 1
            LOGGER.info("%s: zigpy's OTA frame not sent: %s", ieee, security.waiting_reason)
            raise zigpy.exceptions.DeliveryError(f"not sent: {security.waiting_reason}")
        if security.aps and zt.TransmitOptions.APS_Encryption not in packet.tx_options:
            packet = packet.replace(tx_options=packet.tx_options | zt.TransmitOptions.APS_Encryption)
        return packet


def _guarded(security: DeviceSecurity) -> bool:
    return security.aps or not security.ota_allowed
