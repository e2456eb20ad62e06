"""udev/99-han-ota.rules: syntax, coverage of the supported dongles, and what each dongle would get."""

from __future__ import annotations

import fnmatch
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

RULES = Path(__file__).resolve().parents[2] / "udev" / "99-han-ota.rules"

PAIR = re.compile(r'\s*([A-Z_]+)(?:\{([^}]+)\})?\s*(==|!=|\+=|-=|:=|=)\s*"((?:[^"\\]|\\.)*)"\s*')
MATCH_KEYS = {"SUBSYSTEM", "ACTION", "ATTRS", "ENV", "KERNEL", "SUBSYSTEMS", "DRIVERS"}
ASSIGN_KEYS = {"SYMLINK", "ENV", "GROUP", "MODE", "GOTO", "LABEL"}


@dataclass(frozen=True)
class Pair:
    key: str
    attr: str | None
    op: str
    value: str


def parse(text: str) -> list[tuple[int, list[Pair]]]:
    """Each rule line as (line number, pairs); fails on anything that is not KEY op "value", ..."""
    rules = []
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        assert not line.endswith("\\"), f"line {number}: keep each rule on one line"
        pairs, position = [], 0
        while True:
            m = PAIR.match(line, position)
            assert m, f"line {number}: expected KEY op \"value\" at column {position + 1}: {line[position:]!r}"
            key, attr, op, value = m.groups()
            pair = Pair(key, attr, op, value)
            if op in ("==", "!="):
                assert key in MATCH_KEYS, f"line {number}: {key} is not a match key we use"
            else:
                assert key in ASSIGN_KEYS, f"line {number}: {key} is not an assignment key we use"
            pairs.append(pair)
            position = m.end()
            if position == len(line):
                break
            assert line[position] == ",", f"line {number}: pairs must be separated by commas"
            position += 1
        rules.append((number, pairs))
    return rules


@pytest.fixture(scope="module")
def rules() -> list[tuple[int, list[Pair]]]:
    return parse(RULES.read_text())


def device_rules(rules: list[tuple[int, list[Pair]]]) -> list[tuple[int, list[Pair]]]:
    return [(n, p) for n, p in rules if any(x.key == "SYMLINK" for x in p)]


# --------------------------------------------------------------------------- a tiny udev, for this file's subset


def evaluate(rules: list[tuple[int, list[Pair]]], device: dict[str, str], env: dict[str, str] | None = None) -> dict:
    """Apply the rules to a device the way udev would for this file's keys (ATTRS all on one parent)."""
    env = dict(env or {})
    props = {"SUBSYSTEM": device.get("SUBSYSTEM", "tty"), "ACTION": device.get("ACTION", "add")}
    out: dict = {"symlinks": [], "env": {}, "group": None, "mode": None}
    skip_to = None
    for _, pairs in rules:
        if skip_to is not None:
            if any(p.key == "LABEL" and p.value == skip_to for p in pairs):
                skip_to = None
            continue

        def matches(p: Pair) -> bool:
            if p.key == "ATTRS":
                actual = device.get(p.attr or "")
            elif p.key == "ENV":
                actual = env.get(p.attr or "")
            else:
                actual = props.get(p.key)
            hit = actual is not None and any(fnmatch.fnmatchcase(actual, alt) for alt in p.value.split("|"))
            return hit if p.op == "==" else not hit

        if not all(matches(p) for p in pairs if p.op in ("==", "!=")):
            continue
        for p in pairs:
            if p.key == "SYMLINK":
                out["symlinks"].append(p.value)
            elif p.key == "ENV" and p.op == "=":
                out["env"][p.attr] = p.value
                env[p.attr or ""] = p.value
            elif p.key == "GROUP":
                out["group"] = p.value
            elif p.key == "MODE":
                out["mode"] = p.value
            elif p.key == "GOTO":
                skip_to = p.value
    return out


def usb(vid: str, pid: str, product: str = "", serial: str = "0001") -> dict[str, str]:
    return {"idVendor": vid, "idProduct": pid, "product": product, "serial": serial}


# --------------------------------------------------------------------------- structure


def test_every_line_is_a_comment_or_well_formed_pairs(rules: list[tuple[int, list[Pair]]]) -> None:
    assert len(device_rules(rules)) >= 9


SUPPORTED = [
    ("10c4", "ea60"),  # CP210x: ZBDongle-P, SkyConnect/ZBT-1, SLZB-07
    ("1a86", "55d4"),  # CH9102: ZBDongle-E
    ("303a", "4001"),  # ZBT-2
    ("303a", "831a"),  # ZBT-2 (second product id)
    ("0451", "bef3"),  # XDS110 LaunchPad
    ("0451", "16a8"),  # CC2531
]


@pytest.mark.parametrize(("vid", "pid"), SUPPORTED)
def test_each_supported_id_pair_has_a_rule(rules: list[tuple[int, list[Pair]]], vid: str, pid: str) -> None:
    found = [
        n
        for n, pairs in device_rules(rules)
        if Pair("ATTRS", "idVendor", "==", vid) in pairs and Pair("ATTRS", "idProduct", "==", pid) in pairs
    ]
    assert found, f"no rule for {vid}:{pid}"


def test_every_device_rule_ignores_modemmanager_and_sets_group_and_mode(rules: list[tuple[int, list[Pair]]]) -> None:
    for number, pairs in device_rules(rules):
        assert Pair("ENV", "ID_MM_DEVICE_IGNORE", "=", "1") in pairs, f"line {number}"
        assert Pair("GROUP", None, "=", "dialout") in pairs, f"line {number}"
        assert Pair("MODE", None, "=", "0660") in pairs, f"line {number}"
        links = [p.value for p in pairs if p.key == "SYMLINK"]
        assert links and all(re.fullmatch(r"han-ota/[a-z0-9-]+", link) for link in links), f"line {number}"


def test_shared_cp210x_ids_are_told_apart_by_product(rules: list[tuple[int, list[Pair]]]) -> None:
    for number, pairs in device_rules(rules):
        if Pair("ATTRS", "idVendor", "==", "10c4") in pairs:
            assert any(p.key == "ATTRS" and p.attr == "product" for p in pairs), f"line {number} matches any CP210x"


def test_serial_pinning_template_is_present_and_commented() -> None:
    template = [line for line in RULES.read_text().splitlines() if 'ATTRS{serial}==' in line]
    assert template and all(line.startswith("#") for line in template)
    parse(template[0].lstrip("# "))  # the template is a valid rule once uncommented


# --------------------------------------------------------------------------- what each dongle gets

CASES = [
    (usb("10c4", "ea60", "Sonoff Zigbee 3.0 USB Dongle Plus"), {}, ["han-ota/zbdongle-p"]),
    (usb("1a86", "55d4", "SONOFF Zigbee 3.0 USB Dongle Plus V2"), {}, ["han-ota/zbdongle-e"]),
    (usb("10c4", "ea60", "SkyConnect v1.0"), {}, ["han-ota/zbt-1"]),
    (usb("10c4", "ea60", "Home Assistant Connect ZBT-1"), {}, ["han-ota/zbt-1"]),
    (usb("303a", "4001", "ZBT-2"), {}, ["han-ota/zbt-2"]),
    (usb("303a", "831a", "ZBT-2"), {}, ["han-ota/zbt-2"]),
    (usb("10c4", "ea60", "SLZB-07"), {}, ["han-ota/slzb-07"]),
    (usb("0451", "bef3", "XDS110 (03.00.00.25) Embed with CMSIS-DAP"), {"ID_USB_INTERFACE_NUM": "00"}, ["han-ota/launchpad"]),
    (usb("0451", "bef3", "XDS110 (03.00.00.25) Embed with CMSIS-DAP"), {"ID_USB_INTERFACE_NUM": "03"}, ["han-ota/launchpad-aux"]),
    (usb("0451", "16a8", "TI CC2531 USB CDC"), {}, ["han-ota/cc2531"]),
]


@pytest.mark.parametrize(("device", "env", "links"), CASES, ids=[c[2][0].split("/")[1] + "-" + c[1].get("ID_USB_INTERFACE_NUM", "") for c in CASES])
def test_each_dongle_gets_its_name_and_is_hidden_from_modemmanager(
    rules: list[tuple[int, list[Pair]]], device: dict[str, str], env: dict[str, str], links: list[str]
) -> None:
    result = evaluate(rules, device, env)
    assert result["symlinks"] == links
    assert result["env"] == {"ID_MM_DEVICE_IGNORE": "1"}
    assert (result["group"], result["mode"]) == ("dialout", "0660")


@pytest.mark.parametrize(
    "device",
    [
        usb("10c4", "ea60", "CP2102N USB to UART Bridge Controller"),  # some other CP210x gadget
        usb("1a86", "55d4", "USB Single Serial"),  # some other CH9102 gadget
        usb("0403", "6001", "FT232R USB UART"),
    ],
)
def test_other_serial_gadgets_are_left_alone(rules: list[tuple[int, list[Pair]]], device: dict[str, str]) -> None:
    assert evaluate(rules, device) == {"symlinks": [], "env": {}, "group": None, "mode": None}


def test_non_tty_and_remove_events_are_skipped(rules: list[tuple[int, list[Pair]]]) -> None:
    dongle = usb("0451", "16a8", "TI CC2531 USB CDC")
    assert evaluate(rules, {**dongle, "SUBSYSTEM": "usb"})["symlinks"] == []
    assert evaluate(rules, {**dongle, "ACTION": "remove"})["symlinks"] == []


# --------------------------------------------------------------------------- udev's own check


def test_udevadm_verify() -> None:
    udevadm = shutil.which("udevadm")
    if udevadm is None:
        pytest.skip("udevadm is not installed here; the rules were only parsed by this test, not by udev")
    probe = subprocess.run([udevadm, "verify", "--help"], capture_output=True, text=True, timeout=30)
    if probe.returncode != 0:
        version = subprocess.run([udevadm, "--version"], capture_output=True, text=True, timeout=30).stdout.strip()
        pytest.skip(f"udevadm {version} has no 'verify' (added in systemd 254); the rules were only parsed by this test")
    result = subprocess.run([udevadm, "verify", "--resolve-names=never", str(RULES)], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stdout + result.stderr
