"""The type checker runs with the suite: strict on the sans-I/O cores (issue 17).

The cores take events and return actions; their types are their contract with the
asyncio layers above, so they are checked strictly. Run by hand with:
    mypy --strict --follow-imports=silent <the files below>
"""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

# Sans-I/O: no sockets, clocks or radios inside (gateway/ota/driver.py is the asyncio side).
STRICT = [
    "eui64",
    "gateway/gate.py",
    "gateway/report",  # the trial figures, computed from typed records
    "gateway/gbcs",  # with keys.py, the one ECDSA P-256 stack images and commands share
    "gateway/ota/codec.py",
    "gateway/ota/config.py",
    "gateway/ota/events.py",
    "gateway/ota/limits.py",  # block size from the radio's limit (issue 14)
    "gateway/ota/pacing.py",
    "gateway/ota/session.py",
    "gateway/ota/priority.py",
    "gateway/ota/windows.py",
    "gateway/ota/state.py",
    "gateway/se",  # the crypto and the Key Establishment cluster (ke_frames, ke_server)
    "gateway/tunnel/frames.py",
    "gateway/tunnel/client.py",
    "gateway/traffic.py",  # the background-traffic meter and its frames
    "radios/coordinator_zdo.py",
    "radios/sim/aps_fragments.py",
    "radios/sim/tunnel_server.py",
    "radios/emulate/fault_options.py",
    "radios/emulate/ezsp/status.py",
    "radios/emulate/ezsp/layouts.py",
    "radios/ezsp_guard.py",
    "radios/limits.py",  # each radio family's payload limit (issue 14)
    "radios/emulate/znp/firmware.py",
    "radios/emulate/znp/timing.py",
    "radios/emulate/failure_timing.py",
    "radios/emulate/ezsp/failure_timing.py",
    "radios/sim/gbcs",  # the simulated devices' own GBCS reader, signer and peer
]


def test_the_sans_io_cores_pass_strict_type_checking() -> None:
    api = pytest.importorskip("mypy.api", reason="mypy is in the [test] extra: pip install -e '.[test]'")
    out, err, status = api.run(["--strict", "--follow-imports=silent", "--no-incremental", "--config-file", str(ROOT / "pyproject.toml"), *(str(ROOT / p) for p in STRICT)])
    assert status == 0, out + err
