"""What the daemon's parts share: the config, and what comes and goes with the radio.

The lifecycle (``lifecycle.Daemon``) fills it in as the radio comes up and goes away;
the journal, recovery, the status views and the control API's handlers read it.
"""

from __future__ import annotations

import datetime as dt
import importlib.metadata
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import zigpy.types as zt
from zigpy.application import ControllerApplication

from eui64 import Eui64
from gateway.activation import ActivationService
from gateway.config import Config
from gateway.engine import Engine, Job
from gateway.gbcs.trust import TrustStore
from gateway.image import FirmwareImage
from gateway.se.security import SecurityRegistry
from han_ota.hub_alerts import HubMessages
from radios.sim.spec import SimDeviceSpec, SimNetworkError, sim_network


class DaemonStartError(RuntimeError):
    """The daemon cannot start; the message names the path or key and the fix."""


def version() -> str:
    try:
        return importlib.metadata.version("han-ota-gateway")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def sim_specs(config: Config, sim_devices: Sequence[str | SimDeviceSpec] = ()) -> list[SimDeviceSpec]:
    """--sim-device texts (or specs) and the config's [[sim_device]] tables; raises DaemonStartError."""
    try:
        return sim_network(sim_devices, config.sim_devices, str(config.source or "config"))
    except SimNetworkError as exc:
        raise DaemonStartError(str(exc)) from None


def iso(wall: float) -> str:
    return dt.datetime.fromtimestamp(wall, dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def store_id(job: Job) -> int:
    """The store's number of a daemon job (the engine's id is its text)."""
    return int(job.id)


@dataclass
class RadioState:
    kind: str
    up: bool = False
    since: float | None = None  # wall time of the last up/down
    reconnects: int = 0
    last_error: str | None = None
    next_attempt_s: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "up": self.up,
            "since": None if self.since is None else iso(self.since),
            "reconnects": self.reconnects,
            "last_error": self.last_error,
        }


@dataclass
class Runtime:
    config: Config
    specs: list[SimDeviceSpec]
    #: Every device's HAN security (gateway.se.security): the engine reads it, the
    #: key-establishment service (with [key_establishment]) writes it.
    security: SecurityRegistry
    radio: RadioState
    #: The [[supplier]] trust anchors, loaded at start.
    trust: TrustStore | None = None
    #: The hub's GBCS messages (its CCS08 alerts, every message kept): han_ota.hub_alerts.
    hub: HubMessages | None = None
    #: From the first radio start on (the engine and the activation service outlive
    #: reconnects; the application is the current one, None while the radio is away).
    app: ControllerApplication | None = None
    engine: Engine | None = None
    activation: ActivationService | None = None
    stopping: bool = False

    def cli(self, words: str) -> str:
        """A command for a hint, with this daemon's --config (else it reaches another daemon)."""
        source = self.config.source
        return f"han-ota {words}" + (f" --config {source}" if source is not None else "")

    def kind_of(self, ieee: zt.EUI64, image: FirmwareImage | None = None) -> str:
        configured = self.config.device(Eui64.from_air(ieee))
        if configured is not None:
            return configured.kind
        for spec in self.specs:
            if spec.ieee == ieee:
                return spec.kind
        return "hcalcs" if image is None else image.device_kind
