"""One rule for the state directory in every command (issue 11 item 8) and a lock per directory (item 3)."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from han_ota.client import resolve_config
from han_ota.statedir import LOCK_NAME, StateDirError, StateDirLock, ensure_state_dir

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "tests" / "data" / "gbcs"


def env_for(tmp_path: Path, **extra: str) -> dict[str, str]:
    return {"HOME": str(tmp_path / "home"), **extra}


def test_the_rule(tmp_path: Path) -> None:
    bare = tmp_path / "bare.toml"
    bare.write_text("[ota]\nblock_cap = 48\n")
    given = tmp_path / "given.toml"
    given.write_text('state_dir = "lab-state"\n')
    # no state_dir in the file, no systemd: the per-user directory (was /var/lib/han-ota)
    cfg = resolve_config(bare, env=env_for(tmp_path))
    assert (cfg.state_dir, cfg.state_dir_from) == (tmp_path / "home" / ".local" / "state" / "han-ota", "per-user")
    # the file's key, relative to the file
    cfg = resolve_config(given, env=env_for(tmp_path))
    assert (cfg.state_dir, cfg.state_dir_from) == (tmp_path / "lab-state", "config")
    # systemd's StateDirectory= wins over both
    for path in (bare, given):
        cfg = resolve_config(path, env=env_for(tmp_path, STATE_DIRECTORY="/var/lib/han-ota:/var/lib/other"))
        assert (cfg.state_dir, cfg.state_dir_from) == (Path("/var/lib/han-ota"), "STATE_DIRECTORY")
    # no config file at all
    cfg = resolve_config(None, default_path=tmp_path / "absent.toml", env=env_for(tmp_path, XDG_STATE_HOME=str(tmp_path / "xdg")))
    assert (cfg.state_dir, cfg.state_dir_from) == (tmp_path / "xdg" / "han-ota", "per-user")


def test_created_0700_when_missing_and_refused_with_its_name_when_it_cannot_be(tmp_path: Path) -> None:
    given = tmp_path / "given.toml"
    given.write_text('state_dir = "lab-state"\n')
    cfg = resolve_config(given, env=env_for(tmp_path))
    made = ensure_state_dir(cfg)
    assert made.is_dir() and stat.S_IMODE(made.stat().st_mode) == 0o700
    deep = tmp_path / "deep.toml"
    deep.write_text('state_dir = "a/b/state"\n')
    with pytest.raises(StateDirError) as err:
        ensure_state_dir(resolve_config(deep, env=env_for(tmp_path)))
    assert f"{tmp_path}/a/b/state (state_dir in {deep})" in str(err.value) and "install -d" in str(err.value)
    per_user = resolve_config(None, default_path=tmp_path / "absent.toml", env=env_for(tmp_path))
    assert ensure_state_dir(per_user).is_dir()  # the per-user default makes its parents


def test_in_process_push_with_activation_and_no_state_dir_uses_the_per_user_directory(tmp_path: Path) -> None:
    config = tmp_path / "lab.toml"
    config.write_text("[ota]\nblock_cap = 48\n")
    env = {**os.environ, "HOME": str(tmp_path / "home")}
    env.pop("XDG_STATE_HOME", None)
    env.pop("STATE_DIRECTORY", None)
    result = subprocess.run(
        [sys.executable, "-c", "from han_ota.cli import main; main()", "push", str(DATA / "sr11.4-ppmid-firmware-image.bin"),
         "--device", "00:11:22:33:44:55:66:77", "--activation", str(DATA / "cs06-immediate-success-command.hex"),
         "--config", str(config), "--json", "--timeout", "60"],
        capture_output=True, text=True, env=env, cwd=ROOT, timeout=300,
    )
    assert "/var/lib/han-ota" not in result.stdout + result.stderr
    assert (tmp_path / "home" / ".local" / "state" / "han-ota" / "state.sqlite3").exists(), result.stdout + result.stderr


def test_the_lock_is_exclusive_and_names_its_holder(tmp_path: Path) -> None:
    first = StateDirLock.acquire(tmp_path)
    first.record(Path("/run/han-ota/control.sock"))
    with pytest.raises(StateDirError) as err:
        StateDirLock.acquire(tmp_path)
    assert f"pid {os.getpid()}, control socket /run/han-ota/control.sock" in str(err.value)
    first.release()
    StateDirLock.acquire(tmp_path).release()  # free again
    # a holder killed with -9 leaves the file but not the lock
    child = subprocess.Popen([sys.executable, "-c", f"from pathlib import Path; from han_ota.statedir import StateDirLock; StateDirLock.acquire(Path({str(tmp_path)!r})); import time; print('locked', flush=True); time.sleep(60)"], stdout=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == "locked"
        with pytest.raises(StateDirError):
            StateDirLock.acquire(tmp_path)
    finally:
        child.kill()
        child.wait()
    assert (tmp_path / LOCK_NAME).exists()
    StateDirLock.acquire(tmp_path).release()
