"""systemd/han-ota.service: the keys the daemon relies on, and systemd's own verdict on it."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

SYSTEMD_DIR = Path(__file__).resolve().parents[2] / "systemd"
UNIT = SYSTEMD_DIR / "han-ota.service"
SYSUSERS = SYSTEMD_DIR / "han-ota.sysusers"
MAX_EXPOSURE = 2.5


def parse_unit(path: Path) -> dict[str, dict[str, list[str]]]:
    """Sections -> key -> every value assigned, in order (systemd keys may repeat)."""
    sections: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] | None = None
    for number, raw in enumerate(path.read_text().splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        assert not line.endswith("\\"), f"line {number}: keep assignments on one line"
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], {})
            continue
        assert current is not None, f"line {number}: assignment before any [Section]"
        key, sep, value = line.partition("=")
        assert sep, f"line {number}: expected Key=value, got {raw!r}"
        current.setdefault(key.strip(), []).append(value.strip())
    return sections


@pytest.fixture(scope="module")
def service() -> dict[str, list[str]]:
    return parse_unit(UNIT)["Service"]


def last(service: dict[str, list[str]], key: str) -> str:
    assert key in service, f"{key}= missing from {UNIT.name}"
    return service[key][-1]


REQUIRED = {
    "Type": "notify",
    "NotifyAccess": "main",
    "ExecStart": "/usr/local/bin/han-ota run --config /etc/han-ota/config.toml",
    "Restart": "on-failure",
    "WatchdogSec": "30",
    "User": "han-ota",
    "Group": "han-ota",
    "SupplementaryGroups": "dialout",
    "StateDirectory": "han-ota",
    "StateDirectoryMode": "0750",
    "RuntimeDirectory": "han-ota",
    "RuntimeDirectoryMode": "0750",
    "RuntimeDirectoryPreserve": "no",
    "ConfigurationDirectory": "han-ota",
    "DevicePolicy": "closed",
    "ProtectSystem": "strict",
    "ProtectHome": "yes",
    "PrivateTmp": "yes",
    "NoNewPrivileges": "yes",
    "ProtectKernelTunables": "yes",
    "ProtectKernelModules": "yes",
    "ProtectKernelLogs": "yes",
    "ProtectControlGroups": "yes",
    "ProtectClock": "yes",
    "ProtectHostname": "yes",
    "ProtectProc": "invisible",
    "ProcSubset": "pid",
    "RestrictNamespaces": "yes",
    "RestrictRealtime": "yes",
    "RestrictSUIDSGID": "yes",
    "LockPersonality": "yes",
    "MemoryDenyWriteExecute": "yes",
    "SystemCallArchitectures": "native",
    "CapabilityBoundingSet": "",
    "AmbientCapabilities": "",
    "UMask": "0027",
}


@pytest.mark.parametrize(("key", "value"), sorted(REQUIRED.items()))
def test_required_setting(service: dict[str, list[str]], key: str, value: str) -> None:
    assert last(service, key) == value


def test_timeouts_are_set(service: dict[str, list[str]]) -> None:
    assert int(last(service, "RestartSec")) > 0
    assert int(last(service, "TimeoutStartSec")) > 0


def test_only_serial_devices_are_allowed(service: dict[str, list[str]]) -> None:
    assert sorted(service["DeviceAllow"]) == ["char-ttyACM rw", "char-ttyUSB rw"]


def test_address_families_are_unix_and_inet_only(service: dict[str, list[str]]) -> None:
    families = " ".join(service["RestrictAddressFamilies"]).split()
    assert sorted(families) == ["AF_INET", "AF_INET6", "AF_UNIX"]


def test_system_call_filter(service: dict[str, list[str]]) -> None:
    assert service["SystemCallFilter"] == ["@system-service", "~@privileged @resources"]


def test_no_private_network_and_no_private_users(service: dict[str, list[str]]) -> None:
    # socket:// radios need the host network; PrivateUsers would map dialout to nogroup.
    assert service.get("PrivateNetwork", ["no"])[-1] in ("no", "false", "0")
    assert service.get("PrivateUsers", ["no"])[-1] in ("no", "false", "0")


def test_installs_into_multi_user(service: dict[str, list[str]]) -> None:
    assert parse_unit(UNIT)["Install"]["WantedBy"] == ["multi-user.target"]


# --------------------------------------------------------------------------- systemd's own tools


def runnable_copy(tmp_path: Path) -> Path:
    """The unit with ExecStart pointed at /bin/true: verify insists the binary exists,
    and /usr/local/bin/han-ota is not installed where the tests run."""
    text = re.sub(r"(?m)^ExecStart=.*$", "ExecStart=/bin/true", UNIT.read_text())
    copy = tmp_path / UNIT.name
    copy.write_text(text)
    return copy


def need(tool: str, unchecked: str) -> str:
    path = shutil.which(tool)
    if path is None:
        pytest.skip(f"{tool} is not installed here (it comes with systemd); {unchecked} was not checked by systemd")
    return path


def test_systemd_analyze_verify(tmp_path: Path) -> None:
    analyze = need("systemd-analyze", "the unit (only parsed above)")
    copy = runnable_copy(tmp_path)
    result = subprocess.run([analyze, "verify", str(copy)], capture_output=True, text=True, timeout=60)
    about_us = [line for line in (result.stdout + result.stderr).splitlines() if copy.name in line]
    assert result.returncode == 0 and not about_us, result.stdout + result.stderr


def test_systemd_analyze_security_exposure(tmp_path: Path) -> None:
    analyze = need("systemd-analyze", "the security exposure of the unit")
    copy = runnable_copy(tmp_path)
    result = subprocess.run(
        [analyze, "security", "--offline=yes", "--no-pager", str(copy)], capture_output=True, text=True, timeout=60
    )
    if "--offline" in result.stderr and result.returncode != 0:
        pytest.skip(f"this systemd-analyze has no --offline (needs systemd >= 250): {result.stderr.strip()}")
    match = re.search(r"Overall exposure level for \S+: (\d+(?:\.\d+)?)", result.stdout)
    assert match, f"no exposure figure in:\n{result.stdout}\n{result.stderr}"
    exposure = float(match.group(1))
    assert exposure <= MAX_EXPOSURE, f"exposure {exposure} > {MAX_EXPOSURE}:\n{result.stdout}"


def test_sysusers_creates_the_user_in_dialout(tmp_path: Path) -> None:
    sysusers = need("systemd-sysusers", "systemd/han-ota.sysusers")
    etc = tmp_path / "etc"
    (etc / "sysusers.d").mkdir(parents=True)
    (etc / "passwd").write_text("root:x:0:0:root:/root:/bin/sh\n")
    (etc / "group").write_text("root:x:0:\ndialout:x:20:\n")
    (etc / "sysusers.d" / "han-ota.conf").write_text(SYSUSERS.read_text())
    result = subprocess.run([sysusers, f"--root={tmp_path}"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    passwd = {line.split(":")[0]: line.split(":") for line in (etc / "passwd").read_text().splitlines()}
    groups = {line.split(":")[0]: line.split(":") for line in (etc / "group").read_text().splitlines()}
    assert passwd["han-ota"][5:] == ["/var/lib/han-ota", "/usr/sbin/nologin"]
    assert "han-ota" in groups["dialout"][3].split(",")
    assert "han-ota" in groups
