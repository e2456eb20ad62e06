"""The simulated HAN: a zigpy ControllerApplication and simulated PPMID/HCALCS devices.

Public API (see each module's docstring):

- spec.py: `SimDeviceSpec`, `parse_sim_device`, `SimSpecError`
- link.py: `LinkModel` (instant / realistic timing, one place for every parameter)
- han.py: `SimHan`, `DeliveryResult` (the air and the devices; shared with the
  EZSP and ZNP emulators)
- device.py: `SimDevice`, `SimEvent`; ota_client.py: the devices' OTA client
- app.py: `SimControllerApplication`, `start_sim_app`, `SimStartError`, `SimNvram`

The names are imported lazily so ``import radios.sim.spec`` stays light.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "SimDeviceSpec": "spec",
    "SimSpecError": "spec",
    "parse_sim_device": "spec",
    "LinkModel": "link",
    "SimHan": "han",
    "DeliveryResult": "han",
    "SimDevice": "device",
    "SimEvent": "device",
    "SimControllerApplication": "app",
    "SimNvram": "app",
    "SimStartError": "app",
    "start_sim_app": "app",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
