"""Smart DCC's own parser (SmartDCCInnovation/gbcs-parser) reads the hub's CCS08 and
finds its signature valid with the hub's certificate.

The parser is TypeScript and not part of this project: the test runs when a built copy
is on this machine and is skipped otherwise. To build one (Node 20 or later)::

    git clone https://github.com/SmartDCCInnovation/gbcs-parser && cd gbcs-parser
    mv package.json package.json.orig && echo '{"private": true}' > package.json
    npm install typescript@5 @types/node@24 @tsconfig/node20   # only the compiler
    npx tsc -p .    # writes dist/ (one type error in src/tariff.ts, a dev dependency's types; harmless)
    GBCS_PARSER=$PWD pytest tests/han_ota/test_hub_alerts_parser.py

(Its full ``npm install`` failed on 2026-12-04: a dev dependency asks for a version of
@smartdcc/duis-parser the registry does not have.) Checked here with gbcs-parser 0.5.0
(commit 3d104aa).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from gateway.gbcs.alerts import FirmwareTransferAlert, TransferResponse, build_transfer_alert
from gateway.gbcs.ids import EntityId
from gateway.gbcs.sign import generate_supplier_identity, load_signing_key

HUB = EntityId.parse("00DB1234567890A2")
ACB = EntityId.parse("90B3D51F30000002")
DEVICE = EntityId.parse("00DB1234567890A4")
CHECK = (Path(__file__).parents[1] / "gbcs_parser_check.js")
ENV = "GBCS_PARSER"


def parser_entry() -> str:
    node = shutil.which("node")
    root = os.environ.get(ENV)
    entry = Path(root) / "dist" / "index.js" if root else None
    if node is None or entry is None or not entry.is_file():
        pytest.skip(
            f"Smart DCC's gbcs-parser is not available here: set {ENV} to a built checkout "
            "(dist/index.js) and have node on PATH (see this module's docstring)"
        )
    return str(entry)


def parse(entry: str, message: bytes, keys: dict[str, bytes]) -> dict[str, Any]:
    request = {"hex": message.hex(), "keys": {k: v.decode() for k, v in keys.items()}}
    done = subprocess.run(["node", str(CHECK), entry], input=json.dumps(request), capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return dict(json.loads(done.stdout))


@pytest.fixture(scope="module")
def hub() -> tuple[Any, bytes]:
    key_pem, cert_pem = generate_supplier_identity(HUB, role="CHF")
    return load_signing_key(key_pem), cert_pem


@pytest.mark.parametrize("response", list(TransferResponse))
def test_the_parser_reads_our_ccs08_and_its_signature_is_valid(hub: tuple[Any, bytes], response: TransferResponse) -> None:
    entry = parser_entry()
    key, cert = hub
    alert = FirmwareTransferAlert.ended(response, device=DEVICE, firmware_version=0x0123ABCD, at=dt.datetime(2026, 12, 4, 2, 0, tzinfo=dt.timezone.utc))
    message = build_transfer_alert(key, originator=HUB, recipient=ACB, counter=4000 + int(response), alert=alert)
    parsed = parse(entry, message, {str(HUB): cert})
    header, payload, signature = parsed["Grouping Header"], parsed["Payload"]["Firmware Transfer Alert"]["children"], parsed["Signature"]
    assert header["CRA Flag"]["notes"] == "Alert"
    assert header["Other Information Length"]["children"]["Message Code"]["notes"] == "CCS08 Firmware Transfer Alert"
    assert header["Originator Counter"]["notes"] == str(4000 + int(response))
    assert payload["Execution Date Time"]["notes"] == "2026-12-04 02:00:00 Z"
    assert payload["Entity Id"]["hex"] == "04 08 00 DB 12 34 56 78 90 A4"
    assert payload["Firmware Version"]["hex"] == "04 04 01 23 AB CD"
    assert payload["Alert Code"]["hex"] == ("02 03 00 8F 8A" if response is TransferResponse.SUCCESS else "02 03 00 8F 89")
    assert payload["Response Code"]["hex"] == f"02 01 {int(response):02X}"
    assert signature["Valid"]["notes"] == "true"


def test_the_parser_finds_a_changed_alert_invalid(hub: tuple[Any, bytes]) -> None:
    entry = parser_entry()
    key, cert = hub
    alert = FirmwareTransferAlert.ended(TransferResponse.SUCCESS, device=DEVICE, firmware_version=1, at=dt.datetime(2026, 12, 4, tzinfo=dt.timezone.utc))
    message = bytearray(build_transfer_alert(key, originator=HUB, recipient=ACB, counter=1, alert=alert))
    message[-66] ^= 0x01  # the response code, under the signature
    parsed = parse(entry, bytes(message), {str(HUB): cert})
    assert parsed["Signature"]["Valid"]["notes"] == "false"
