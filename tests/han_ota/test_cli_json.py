"""``--json``: one JSON object on the last line, even for a usage error (issue 11 item 12)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from han_ota.cli import _mount, app
from han_ota.cli_app import run

DATA = Path(__file__).parents[1] / "data" / "gbcs"


@pytest.fixture(autouse=True)
def mounted() -> None:
    _mount()


def last_json(out: str) -> dict:
    lines = out.strip().splitlines()
    assert lines, "no output"
    return json.loads(lines[-1])


@pytest.mark.parametrize(
    "argv,names",
    [
        (["status", "--json", "--bogus"], "--bogus"),
        (["push", "--json"], "image"),
        (["config", "check", "--json"], "PATH"),
        (["push", str(DATA / "sr11.1-firmware-image.bin"), "--json", "--device"], "--device"),
    ],
)
def test_usage_error_is_a_json_object(argv: list[str], names: str, capsys: pytest.CaptureFixture[str]) -> None:
    code = run(app, argv)
    out = capsys.readouterr()
    assert code == 2
    assert names in last_json(out.out)["error"]
    assert "Error:" in out.err  # people still get click's text on stderr


def test_inspect_and_config_check_print_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = run(app, ["image", "inspect", str(DATA / "sr11.1-firmware-image.bin"), "--json"])
    out = capsys.readouterr().out
    assert code == 0
    assert len(out.strip().splitlines()) == 1
    assert "manufacturer_code" in json.dumps(last_json(out))

    config = tmp_path / "config.toml"
    config.write_text(f'state_dir = "{tmp_path / "state"}"\n')
    code = run(app, ["config", "check", str(config), "--json"])
    out = capsys.readouterr().out
    assert code == 0
    assert len(out.strip().splitlines()) == 1
    assert last_json(out)["valid"] is True


def test_without_json_usage_errors_stay_clicks(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        run(app, ["status", "--bogus"])
    assert exc.value.code == 2
    assert "No such option" in capsys.readouterr().err
