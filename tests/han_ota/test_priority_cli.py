"""`han-ota push --priority/--replace` and `config check` (issue 15): the options as the issue names them."""

from __future__ import annotations

import json
from pathlib import Path

from typing import Any

from typer.testing import CliRunner

from han_ota import cli_daemon
from han_ota.cli import app
from radios.sim.testing import build_ota_image

HCALCS = "00:11:22:33:44:55:66:77"


def invoke(*args: str) -> Any:
    return CliRunner().invoke(cli_daemon.standalone if args[0] == "config" else app, list(args))


def test_in_process_push_takes_a_named_priority(tmp_path: Path) -> None:
    image = tmp_path / "fw.ota"
    image.write_bytes(build_ota_image(0x121D, 0, 2, bytes(2000), min_hw=0x1111, max_hw=0x1111))
    result = invoke("push", str(image), "--device", HCALCS, "--sim-device", f"hcalcs:{HCALCS}:query_delay=0.05", "--priority", "high", "--json", "--in-process")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output.splitlines()[-1])
    assert summary["state"] == "held" and summary["priority"] == 9


def test_a_bad_priority_is_refused_before_anything_runs(tmp_path: Path) -> None:
    image = tmp_path / "fw.ota"
    image.write_bytes(build_ota_image(0x121D, 0, 2, bytes(100)))
    result = invoke("push", str(image), "--device", HCALCS, "--priority", "urgent", "--json", "--in-process")
    assert result.exit_code == 1
    out = json.loads(result.output.splitlines()[0])  # then the error line (stderr, mixed in)
    assert out["state"] == "failed" and "give 0 to 9" in out["reason"]


def test_config_check_shows_windows_share_and_priorities(tmp_path: Path) -> None:
    (tmp_path / "state").mkdir()
    path = tmp_path / "config.toml"
    path.write_text(
        f'state_dir = "{tmp_path / "state"}"\n[ota]\nhan_share = 0.5\nwindows = ["01:00-05:00", "22:00-02:00Z"]\npriority_ppmid = "high"\npriority_hcalcs = 3\n'
    )
    result = invoke("config", "check", str(path))
    assert result.exit_code == 0, result.output
    assert "2700 B/s budget (0.5 of 5400 B/s)" in result.output
    assert "windows         01:00-05:00, 22:00-02:00Z" in result.output
    assert "priorities      ppmid high (9), hcalcs 3 by default" in result.output
    as_json = json.loads(invoke("config", "check", "--json", str(path)).output)
    assert as_json["ota"]["windows"] == ["01:00-05:00", "22:00-02:00Z"] and as_json["ota"]["han_share"] == 0.5


def test_config_check_refuses_a_bad_window_naming_it(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text('[ota]\nwindows = ["01:00-25:00"]\n')
    result = invoke("config", "check", str(path))
    assert result.exit_code != 0 and "ota.windows" in result.output and "windows[0]" in result.output, result.output
