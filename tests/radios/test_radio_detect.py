"""radios/detect.py: which dongle a serial port is, the udev table agreeing with ours,
port checks that name the fix, and zigpy's probe against the emulated coordinators."""

from __future__ import annotations

import errno
import fcntl
import os
import re
from pathlib import Path
from types import SimpleNamespace

import pytest

from radios.detect import (
    KNOWN_DONGLES,
    answered,
    busy_message,
    check_port,
    classify,
    describe_open_error,
    detect_ports,
    holders,
    probe_port,
)

RULES = Path(__file__).resolve().parents[2] / "udev" / "99-han-ota.rules"


def port(device="/dev/ttyUSB0", vid=None, pid=None, product=None, location=None, serial_number=None):
    return SimpleNamespace(device=device, vid=vid, pid=pid, product=product, location=location, serial_number=serial_number, manufacturer=None)


@pytest.mark.parametrize(
    ("vid", "pid", "product", "name", "radio", "baud", "flow"),
    [
        (0x10C4, 0xEA60, "Sonoff Zigbee 3.0 USB Dongle Plus", "Sonoff ZBDongle-P", "znp", 115200, None),
        (0x1A86, 0x55D4, "SONOFF Zigbee 3.0 USB Dongle Plus V2", "Sonoff ZBDongle-E", "ezsp", 115200, "software"),
        (0x10C4, 0xEA60, "SkyConnect v1.0", "Home Assistant SkyConnect / Connect ZBT-1", "ezsp", 115200, "software"),
        (0x10C4, 0xEA60, "Home Assistant Connect ZBT-1", "Home Assistant SkyConnect / Connect ZBT-1", "ezsp", 115200, "software"),
        (0x303A, 0x4001, "ZBT-2", "Home Assistant Connect ZBT-2", "ezsp", 460800, "hardware"),
        (0x303A, 0x831A, None, "Home Assistant Connect ZBT-2", "ezsp", 460800, "hardware"),
        (0x10C4, 0xEA60, "SLZB-07", "SMLIGHT SLZB-07", "ezsp", 115200, "software"),
        (0x0451, 0x16A8, "TI CC2531 USB CDC", "TI CC2531", "znp", 115200, None),
    ],
)
def test_known_dongles_by_id_and_product(vid, pid, product, name, radio, baud, flow):
    found = classify(port(vid=vid, pid=pid, product=product))
    assert found.dongle is not None and found.dongle.name == name
    assert (found.radio, found.baudrate, found.flow_control) == (radio, baud, flow)
    assert found.match == ("product" if found.dongle.products else "id")
    assert found.usb_id == f"{vid:04x}:{pid:04x}"


def test_launchpad_only_its_application_uart_is_the_coordinator():
    uart = classify(port("/dev/ttyACM0", 0x0451, 0xBEF3, "XDS110 (03.00.00.25) Embed with CMSIS-DAP", location="1-1.3:1.0"))
    aux = classify(port("/dev/ttyACM1", 0x0451, 0xBEF3, "XDS110 (03.00.00.25) Embed with CMSIS-DAP", location="1-1.3:1.3"))
    assert (uart.radio, uart.match, uart.interface) == ("znp", "id", 0)
    assert aux.radio is None and aux.match is None and aux.interface == 3
    assert "interface 03" in aux.note and "interface 00" in aux.note


def test_generic_bridge_with_unknown_product_is_a_candidate_to_probe():
    cp210x = classify(port(vid=0x10C4, pid=0xEA60, product="CP2102N USB to UART Bridge Controller"))
    assert cp210x.match == "bridge" and cp210x.radio is None and cp210x.dongle is None
    assert "--probe" in cp210x.note and "znp or ezsp" in cp210x.note
    ch9102 = classify(port(vid=0x1A86, pid=0x55D4, product="USB Single Serial"))
    assert ch9102.match == "bridge" and ch9102.radio == "ezsp"  # only EZSP dongles use this chip here
    assert "--probe" in ch9102.note


def test_detect_lists_candidates_first_and_hides_other_ports(tmp_path):
    # by-id and /dev/han-ota links are found by resolving symlinks to the device node
    dev = tmp_path / "ttyUSB7"
    dev.write_text("")
    by_id, udev = tmp_path / "by-id", tmp_path / "han-ota"
    by_id.mkdir()
    udev.mkdir()
    (by_id / "usb-ITead_Sonoff_Zigbee_3.0_USB_Dongle_Plus_abc-if00-port0").symlink_to(dev)
    (udev / "zbdongle-p").symlink_to(dev)
    ports = [
        port("/dev/ttyS0"),
        port(str(dev), 0x10C4, 0xEA60, "Sonoff Zigbee 3.0 USB Dongle Plus"),
        port("/dev/ttyUSB3", 0x10C4, 0xEA60, "Some other CP2102 gadget"),
    ]
    found = detect_ports(ports, by_id_dir=by_id, udev_dir=udev)
    assert [p.device for p in found] == [str(dev), "/dev/ttyUSB3"]
    assert found[0].best_path == str(udev / "zbdongle-p")
    assert found[0].by_id == [str(by_id / "usb-ITead_Sonoff_Zigbee_3.0_USB_Dongle_Plus_abc-if00-port0")]
    everything = detect_ports(ports, all_ports=True, by_id_dir=by_id, udev_dir=udev)
    assert [p.device for p in everything][-1] == "/dev/ttyS0" and everything[-1].match is None
    assert found[0].to_dict()["dongle"] == "Sonoff ZBDongle-P"


def test_table_agrees_with_the_udev_rules():
    """Every rule in udev/99-han-ota.rules has a row here with its ids, product and name, and back."""
    rules = []
    for line in RULES.read_text().splitlines():
        if line.startswith("#") or "SYMLINK" not in line:
            continue
        attrs = dict(re.findall(r'ATTRS\{(\w+)\}=="([^"]*)"', line))
        name = re.search(r'SYMLINK\+="han-ota/([^"]+)"', line).group(1)
        rules.append((int(attrs["idVendor"], 16), int(attrs["idProduct"], 16), attrs.get("product"), name))
    assert rules, "no rules parsed"
    for vid, pid, product, name in rules:
        if name == "launchpad-aux":
            continue  # named only so that it is not mistaken for the coordinator
        dongle = next((d for d in KNOWN_DONGLES if d.udev_name == name), None)
        assert dongle is not None, f"udev names han-ota/{name}; radios/detect.py has no dongle for it"
        assert dongle.matches_id(vid, pid), f"{name}: udev {vid:04x}:{pid:04x}, table {dongle.vid:04x}:{dongle.pids}"
        if product is not None:
            assert product in dongle.products or not dongle.products, f"{name}: product {product!r} not in {dongle.products}"
    for dongle in KNOWN_DONGLES:
        assert any(name == dongle.udev_name for *_, name in rules), f"{dongle.name} has no udev rule"
        for product in dongle.products:
            assert any(p == product and name == dongle.udev_name for _, _, p, name in rules), f"{dongle.name}: udev lacks product {product!r}"


# ----------------------------------------------------------------------------- port checks


def test_missing_port_says_plug_in_and_detect():
    problem = check_port("/dev/han-ota/no-such-dongle")
    assert problem is not None and problem.kind == "missing"
    assert "/dev/han-ota/no-such-dongle" in problem.message and "han-ota radio detect" in problem.message


def test_network_paths_are_left_to_the_driver():
    assert check_port("socket://127.0.0.1:1") is None


def test_open_errors_name_the_port_and_the_fix():
    denied = describe_open_error("/dev/ttyUSB0", PermissionError(errno.EACCES, "Permission denied"))
    assert "/dev/ttyUSB0" in denied and "dialout" in denied and "udev/99-han-ota.rules" in denied
    # zigpy turns serialx's EBUSY (flock held) into this PermissionError
    locked = PermissionError("The serial port is locked by another application")
    locked.__cause__ = OSError(errno.EBUSY, "Serial port '/dev/ttyUSB0' is already locked by another process")
    busy = describe_open_error("/dev/ttyUSB0", locked)
    assert busy.startswith("/dev/ttyUSB0 is busy") and "ModemManager" in busy and "daemon" in busy
    refused = describe_open_error("socket://127.0.0.1:9", ConnectionRefusedError(errno.ECONNREFUSED, "Connection refused"))
    assert "nothing listens at socket://127.0.0.1:9" in refused and "han-ota emulate" in refused


def test_busy_port_names_the_process_holding_it(tmp_path):
    """A flock held elsewhere (as serialx holds it for the daemon) makes the port busy."""
    master, slave = os.openpty()
    try:
        path = os.ttyname(slave)
        fcntl.flock(slave, fcntl.LOCK_EX | fcntl.LOCK_NB)
        problem = check_port(path)
        assert problem is not None and problem.kind == "busy"
        assert f"{path} is busy" in problem.message and f"pid {os.getpid()}" in problem.message
        fcntl.flock(slave, fcntl.LOCK_UN)
        assert check_port(path) is None  # a pty's holder is whoever made it: not a conflict
    finally:
        os.close(master)
        os.close(slave)


def test_holders_found_through_proc(tmp_path):
    """ModemManager holding a dongle (no lock: it just opens it) is named, with the udev fix."""
    device = tmp_path / "ttyUSB0"
    device.write_text("")
    proc = tmp_path / "proc"
    (proc / "812" / "fd").mkdir(parents=True)
    (proc / "812" / "comm").write_text("ModemManager\n")
    (proc / "812" / "cmdline").write_bytes(b"/usr/sbin/ModemManager\0")
    (proc / "812" / "fd" / "9").symlink_to(device)
    (proc / "900" / "fd").mkdir(parents=True)
    (proc / "900" / "comm").write_text("bash\n")
    assert holders(str(device), proc=proc) == [(812, "ModemManager")]
    message = busy_message(str(device), holders(str(device), proc=proc))
    assert "held by ModemManager (pid 812)" in message and "ID_MM_DEVICE_IGNORE" in message


# ----------------------------------------------------------------------------- probing


async def test_probe_finds_the_znp_emulator():
    from radios.emulate.znp import serve_znp

    server = await serve_znp("127.0.0.1", 0, None)
    try:
        result = await probe_port(server.url, ("znp",), timeout=20)
        assert answered(result) == "znp"
        assert result["znp"]["path"] == server.url and result["znp"]["baudrate"] == 115200
    finally:
        await server.close()


async def test_probe_finds_the_ezsp_emulator():
    from radios.emulate.ezsp import serve_ezsp

    server = await serve_ezsp("127.0.0.1", 0, None)
    try:
        result = await probe_port(server.path, ("ezsp",), timeout=30)
        assert answered(result) == "ezsp" and result["ezsp"]["path"] == server.path
    finally:
        await server.close()
