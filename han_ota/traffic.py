"""The daemon's background traffic (issue 15 part 2): wiring only.

With [[sim_traffic]] tables and the sim radio, `DaemonTraffic.radio_up(app)` starts the
simulated HAN's generator (radios/sim/traffic.py) and the hub's measure
(gateway/traffic_service.py), and every sample becomes a ``traffic.sample`` audit record
(``device``, ``kind``, ``latency_ms`` or null for a lost message, ``sequence``). After a
reconnect the measure follows the new application; the generator keeps running while
the air is the same `SimHan` (devices outlive the hub's radio), and starts anew on a new one.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

import zigpy.types as zt

from gateway.config import SimTrafficConfig
from gateway.traffic import Sample
from gateway.traffic_service import TrafficService
from gateway.tunnel.service import TunnelSendError
from han_ota.tunnels import DaemonTunnels
from radios.sim.han import SimHan
from radios.sim.traffic import Flow, SimTraffic

__all__ = ["DaemonTraffic", "flows_for"]

LOGGER = logging.getLogger("han_ota.traffic")


def flows_for(tables: Sequence[SimTrafficConfig], han: SimHan) -> list[Flow]:
    """The tables' flows on this air: ``device = "all"`` is every simulated device."""
    flows: list[Flow] = []
    for table in tables:
        if table.device is None:
            targets = list(han.devices)
        else:
            ieee = zt.EUI64(table.device.air)
            if ieee not in han.devices:
                raise ValueError(f"[[sim_traffic]] device {table.device}: no such simulated device")
            targets = [ieee]
        flows.extend(Flow(ieee, table.kind, table.period_s, table.size) for ieee in targets)
    return flows


class DaemonTraffic:
    def __init__(self, tables: Sequence[SimTrafficConfig], audit: Callable[..., object], tunnels: DaemonTunnels | None = None) -> None:
        self.tables = tuple(tables)
        self._audit = audit
        self.tunnels = tunnels
        self.service: TrafficService | None = None
        self.generator: SimTraffic | None = None
        self.samples = 0

    async def radio_up(self, app: Any) -> None:
        if not self.tables:
            return
        han = getattr(app, "han", None)
        if not isinstance(han, SimHan):
            LOGGER.warning("[[sim_traffic]] needs the sim radio; no background traffic on %s", type(app).__name__)
            return
        if self.service is None:
            self.service = TrafficService(app, self._sample, tunnel_send=self._tunnel_send)
            self.service.start()
        else:
            self.service.rebind(app)
        if self.generator is None or self.generator.han is not han:
            if self.generator is not None:
                await self.generator.stop()
            self.generator = None
            try:
                flows = flows_for(self.tables, han)
            except ValueError as exc:
                LOGGER.error("%s; no background traffic", exc)
                self._audit("traffic.unavailable", error=str(exc))
                return
            self.generator = SimTraffic(han, flows, on_hub=self.service.send)
            self.generator.start()

    async def _tunnel_send(self, ieee: zt.EUI64, data: bytes) -> None:
        service = self.tunnels.service if self.tunnels is not None else None
        if service is None:
            raise TunnelSendError("the daemon's tunnel service is not running")
        await service.send(ieee, data)

    def _sample(self, sample: Sample) -> None:
        self.samples += 1
        self._audit("traffic.sample", sample.device, kind=sample.kind, latency_ms=None if sample.latency_ms is None else round(sample.latency_ms, 3), sequence=sample.seq)

    async def close(self) -> None:
        if self.generator is not None:
            await self.generator.stop()
            self.generator = None
        if self.service is not None:
            self.service.close()
            self.service = None
