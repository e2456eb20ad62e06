"""Find Zigbee coordinator dongles: USB ids and product strings, and optionally ask the drivers.

``detect_ports()`` lists serial ports with pyserial's ``serial.tools.list_ports`` and
matches each against ``KNOWN_DONGLES`` (the same table as ``udev/99-han-ota.rules``):

* a unique USB id (TI CC2531 0451:16a8, the LaunchPad's XDS110 0451:bef3, the ZBT-2's
  ESP32-S3 bridge 303a:4001/831a) names the dongle by itself;
* the generic bridge chips (Silicon Labs CP210x 10c4:ea60, WCH CH9102 1a86:55d4) carry
  several dongles, told apart by the USB product string their maker programmed. A
  CP210x with an unknown product string could be a ZNP or an EZSP dongle: its radio is
  left unknown and ``--probe`` settles it.

``probe_port(path, kinds)`` asks each driver in turn, with zigpy's
``ControllerApplication.probe(config)`` (bellows for EZSP, zigpy-znp for Z-Stack),
which one answers; it returns the serial settings that worked.

``check_port(path)`` is a pre-flight for opening a port: it names the problem and the
fix (missing device, permission denied -> dialout group / udev rules, busy -> which
process holds it, e.g. ModemManager or a running han-ota daemon).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import logging
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

LOGGER = logging.getLogger(__name__)

UDEV_RULES = "udev/99-han-ota.rules"
BY_ID_DIR = Path("/dev/serial/by-id")
HAN_OTA_DIR = Path("/dev/han-ota")
# How long one driver may take to answer a probe at one serial setting.
PROBE_TIMEOUT_S = 60.0  # bellows gives up on a non-EZSP port after ~41 s (3 baud rates)


@dataclass(frozen=True)
class KnownDongle:
    """One coordinator dongle model: how to recognise it and how to talk to it."""

    name: str
    vid: int
    pids: tuple[int, ...]
    radio: str  # "znp" or "ezsp"
    #: USB product strings (exact, as the maker programs them); empty: the id is unique.
    products: tuple[str, ...] = ()
    baudrate: int = 115200
    flow_control: str | None = None  # None | "software" | "hardware"
    #: the name udev/99-han-ota.rules gives it under /dev/han-ota/
    udev_name: str | None = None
    #: USB interface number of the coordinator's UART on multi-port bridges.
    interface: int | None = None
    note: str = ""

    def matches_id(self, vid: int | None, pid: int | None) -> bool:
        return vid == self.vid and pid in self.pids

    def matches_product(self, product: str | None) -> bool:
        return not self.products or (product or "").strip() in self.products


# Keep in step with udev/99-han-ota.rules (tests/radios/test_radio_detect.py checks both ways).
KNOWN_DONGLES: tuple[KnownDongle, ...] = (
    KnownDongle("Sonoff ZBDongle-P", 0x10C4, (0xEA60,), "znp", ("Sonoff Zigbee 3.0 USB Dongle Plus",), udev_name="zbdongle-p",
                note="TI CC2652P behind a CP2102N"),
    KnownDongle("Sonoff ZBDongle-E", 0x1A86, (0x55D4,), "ezsp", ("SONOFF Zigbee 3.0 USB Dongle Plus V2",), flow_control="software",
                udev_name="zbdongle-e", note="EFR32MG21 behind a CH9102F"),
    KnownDongle("Home Assistant SkyConnect / Connect ZBT-1", 0x10C4, (0xEA60,), "ezsp", ("SkyConnect v1.0", "Home Assistant Connect ZBT-1"),
                flow_control="software", udev_name="zbt-1", note="EFR32MG21 behind a CP2102N"),
    KnownDongle("Home Assistant Connect ZBT-2", 0x303A, (0x4001, 0x831A), "ezsp", (), baudrate=460800, flow_control="hardware",
                udev_name="zbt-2", note="EFR32MG24 behind an ESP32-S3 USB bridge; 460800 baud, RTS/CTS"),
    KnownDongle("SMLIGHT SLZB-07", 0x10C4, (0xEA60,), "ezsp", ("SLZB-07",), flow_control="software", udev_name="slzb-07",
                note="EFR32MG21 behind a CP2102N"),
    KnownDongle("TI LaunchPad (XDS110)", 0x0451, (0xBEF3,), "znp", (), udev_name="launchpad", interface=0,
                note="Z-Stack talks on the Application/User UART (interface 00); interface 03 is the XDS110's auxiliary port"),
    KnownDongle("TI CC2531", 0x0451, (0x16A8,), "znp", (), udev_name="cc2531", note="Z-Stack 1.2/3.0 over the stick's own USB CDC"),
)

# Bridge chips that several dongles (and other gadgets) share: an unknown product
# string on one of these is "maybe a coordinator", never a certainty.
GENERIC_BRIDGES = {
    (0x10C4, 0xEA60): "Silicon Labs CP210x USB-UART bridge",
    (0x1A86, 0x55D4): "WCH CH9102 USB-UART bridge",
}


@dataclass
class DetectedPort:
    """A serial port and what we make of it."""

    device: str
    vid: int | None = None
    pid: int | None = None
    product: str | None = None
    manufacturer: str | None = None
    serial_number: str | None = None
    interface: int | None = None
    by_id: list[str] = field(default_factory=list)
    udev_links: list[str] = field(default_factory=list)
    dongle: KnownDongle | None = None
    #: "product" (id and product string), "id" (unique id), "bridge" (generic chip,
    #: unknown product), or None (not a coordinator we know).
    match: str | None = None
    radio: str | None = None
    baudrate: int | None = None
    flow_control: str | None = None
    note: str = ""
    #: filled by probe_port: {"ezsp": {...settings...} | False, "znp": ...}
    probe: dict[str, Any] = field(default_factory=dict)

    @property
    def usb_id(self) -> str | None:
        if self.vid is None or self.pid is None:
            return None
        return f"{self.vid:04x}:{self.pid:04x}"

    @property
    def best_path(self) -> str:
        """The path to configure: /dev/han-ota/<name>, else /dev/serial/by-id/..., else the node."""
        if self.udev_links:
            return self.udev_links[0]
        if self.by_id:
            return self.by_id[0]
        return self.device

    @property
    def is_candidate(self) -> bool:
        return self.match is not None

    def to_dict(self) -> dict[str, Any]:
        return {
            "device": self.device,
            "path": self.best_path,
            "usb_id": self.usb_id,
            "product": self.product,
            "manufacturer": self.manufacturer,
            "serial_number": self.serial_number,
            "interface": self.interface,
            "by_id": self.by_id,
            "udev_links": self.udev_links,
            "dongle": self.dongle.name if self.dongle else None,
            "match": self.match,
            "radio": self.radio,
            "baudrate": self.baudrate,
            "flow_control": self.flow_control,
            "note": self.note,
            "probe": self.probe,
        }


def _interface_number(port: Any) -> int | None:
    """USB interface number from pyserial's location ("1-1.2:1.3" -> 3)."""
    location = getattr(port, "location", None)
    if not location or ":" not in str(location):
        return None
    tail = str(location).rsplit(":", 1)[1]
    try:
        return int(tail.rsplit(".", 1)[-1])
    except ValueError:
        return None


def _links_to(directory: Path, device: str) -> list[str]:
    """Symlinks in ``directory`` that resolve to ``device``."""
    try:
        entries = sorted(directory.iterdir())
    except OSError:
        return []
    target = os.path.realpath(device)
    return [str(e) for e in entries if e.is_symlink() and os.path.realpath(e) == target]


def classify(port: Any, *, by_id_dir: Path = BY_ID_DIR, udev_dir: Path = HAN_OTA_DIR) -> DetectedPort:
    """What one pyserial ListPortInfo (or anything with its attributes) is."""
    found = DetectedPort(
        device=str(port.device),
        vid=getattr(port, "vid", None),
        pid=getattr(port, "pid", None),
        product=getattr(port, "product", None),
        manufacturer=getattr(port, "manufacturer", None),
        serial_number=getattr(port, "serial_number", None),
        interface=_interface_number(port),
    )
    found.by_id = _links_to(by_id_dir, found.device)
    found.udev_links = _links_to(udev_dir, found.device)
    same_id = [d for d in KNOWN_DONGLES if d.matches_id(found.vid, found.pid)]
    if not same_id:
        return found
    exact = [d for d in same_id if d.products and d.matches_product(found.product)]
    unique = [d for d in same_id if not d.products]
    if exact:
        dongle, found.match = exact[0], "product"
    elif unique:
        dongle, found.match = unique[0], "id"
    else:
        found.match = "bridge"
        kinds = sorted({d.radio for d in same_id})
        bridge = GENERIC_BRIDGES.get((found.vid or 0, found.pid or 0), "USB-UART bridge")
        names = ", ".join(d.name for d in same_id)
        if len(kinds) == 1:
            found.radio = kinds[0]
            found.note = f"{bridge} with product string {found.product!r}, not one we know; probably {names} ({kinds[0]}); --probe to be sure"
        else:
            found.note = f"{bridge} with product string {found.product!r}: could be {names} (znp or ezsp) or another gadget; run with --probe"
        return found
    found.dongle = dongle
    found.radio = dongle.radio
    found.baudrate = dongle.baudrate
    found.flow_control = dongle.flow_control
    found.note = dongle.note
    if dongle.interface is not None and found.interface is not None and found.interface != dongle.interface:
        found.match = None
        found.radio = None
        found.note = f"{dongle.name} interface {found.interface:02d}: not the coordinator's UART (that is interface {dongle.interface:02d})"
    return found


def list_serial_ports() -> list[Any]:
    from serial.tools import list_ports

    return list(list_ports.comports())


def detect_ports(ports: Iterable[Any] | None = None, *, all_ports: bool = False, by_id_dir: Path = BY_ID_DIR, udev_dir: Path = HAN_OTA_DIR) -> list[DetectedPort]:
    """Classify every serial port; only coordinator candidates unless ``all_ports``."""
    found = [classify(p, by_id_dir=by_id_dir, udev_dir=udev_dir) for p in (list_serial_ports() if ports is None else ports)]
    order = {"product": 0, "id": 1, "bridge": 2, None: 3}
    found.sort(key=lambda d: (order[d.match], d.device))
    return found if all_ports else [d for d in found if d.is_candidate]


# ---------------------------------------------------------------------------- probing


def driver_class(kind: str) -> Any:
    if kind == "ezsp":
        from bellows.zigbee.application import ControllerApplication

        return ControllerApplication
    if kind == "znp":
        from zigpy_znp.zigbee.application import ControllerApplication

        return ControllerApplication
    raise ValueError(f"radio kind {kind!r}: probe knows ezsp and znp")


async def probe_port(path: str, kinds: Sequence[str] = ("znp", "ezsp"), *, baudrate: int | None = None, flow_control: str | None = None, timeout: float = PROBE_TIMEOUT_S) -> dict[str, Any]:
    """Ask each driver whether it finds its firmware at ``path``.

    Returns ``{kind: settings | False | "error: ..."}`` in the order asked; settings are
    the serial settings zigpy's ``probe`` found to work (the driver tries its own list
    of baud rates after ours). Stops at the first driver that answers: a second
    driver's probe bytes are no use to a port that already answered.
    """
    from zigpy.config import CONF_DEVICE_BAUDRATE, CONF_DEVICE_FLOW_CONTROL, CONF_DEVICE_PATH

    results: dict[str, Any] = {}
    for kind in kinds:
        config: dict[str, Any] = {CONF_DEVICE_PATH: path}
        if baudrate is not None:
            config[CONF_DEVICE_BAUDRATE] = baudrate
        if flow_control is not None:
            config[CONF_DEVICE_FLOW_CONTROL] = None if flow_control == "none" else flow_control
        try:
            async with asyncio.timeout(timeout):
                answer = await driver_class(kind).probe(config)
        except TimeoutError:
            results[kind] = f"error: no answer within {timeout:g} s"
            continue
        except Exception as exc:  # a driver's probe should not raise; say what it did
            results[kind] = f"error: {type(exc).__name__}: {exc}"
            continue
        if answer:
            settings = dict(answer) if isinstance(answer, dict) else {}
            results[kind] = {k: settings.get(k) for k in (CONF_DEVICE_PATH, CONF_DEVICE_BAUDRATE, CONF_DEVICE_FLOW_CONTROL) if k in settings}
            break
        results[kind] = False
    return results


def answered(probe: dict[str, Any]) -> str | None:
    for kind, result in probe.items():
        if isinstance(result, dict):
            return kind
    return None


async def probe_detected(port: DetectedPort, *, timeout: float = PROBE_TIMEOUT_S) -> DetectedPort:
    """Probe one detected port (its known radio first) and record the answer on it."""
    # Unknown radio: ZNP first. zigpy-znp gives up on an EZSP port within seconds, bellows
    # on a ZNP port only after ~41 s (it tries three baud rates).
    kinds = ["znp", "ezsp"]
    if port.radio in kinds:
        kinds.remove(port.radio)
        kinds.insert(0, port.radio)
    problem = check_port(port.device)
    if problem is not None:
        port.probe = {"error": problem.message}
        return port
    port.probe = await probe_port(port.device, kinds, baudrate=port.baudrate, flow_control=port.flow_control, timeout=timeout)
    kind = answered(port.probe)
    if kind is not None:
        settings = port.probe[kind]
        port.radio = kind
        port.baudrate = settings.get("baudrate", port.baudrate)
        port.flow_control = settings.get("flow_control", port.flow_control)
        if port.match == "bridge":
            port.note += f"; {kind} answered the probe"
    return port


# ---------------------------------------------------------------------------- port checks


@dataclass(frozen=True)
class PortProblem:
    kind: str  # missing | permission | busy | error
    message: str


def is_local_path(path: str) -> bool:
    return "://" not in path


def holders(path: str, *, proc: Path = Path("/proc")) -> list[tuple[int, str]]:
    """Processes that have ``path`` open: [(pid, command name)], best effort (other
    users' processes are visible to root only)."""
    target = os.path.realpath(path)
    found: list[tuple[int, str]] = []
    try:
        pids = [int(p.name) for p in proc.iterdir() if p.name.isdigit()]
    except OSError:
        return found
    for pid in pids:
        fd_dir = proc / str(pid) / "fd"
        try:
            fds = list(fd_dir.iterdir())
        except OSError:
            continue
        for fd in fds:
            try:
                if os.readlink(fd) == target:
                    break
            except OSError:
                continue
        else:
            continue
        try:
            name = (proc / str(pid) / "comm").read_text().strip()
        except OSError:
            name = "?"
        try:
            cmdline = (proc / str(pid) / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
        except OSError:
            cmdline = ""
        if "han-ota" in cmdline or "han_ota" in cmdline:
            name = f"{name} ({cmdline[:80]})"
        found.append((pid, name))
    return found


def permission_message(path: str) -> str:
    return (
        f"permission denied on {path}: the user running han-ota must be in the dialout group "
        f"(sudo usermod -aG dialout $USER, then log in again) and the port must be group dialout mode 0660, "
        f"which {UDEV_RULES} sets for the supported dongles (install it as udev/README.md says)"
    )


def busy_message(path: str, who: Sequence[tuple[int, str]] = ()) -> str:
    named = ", ".join(f"{name} (pid {pid})" for pid, name in who)
    held = f"held by {named}" if named else "locked by another process"
    hint = []
    if any("ModemManager" in name for _, name in who) or not named:
        hint.append(f"ModemManager probes new serial ports: install {UDEV_RULES} (it sets ID_MM_DEVICE_IGNORE) or stop ModemManager")
    if any("han-ota" in name or "han_ota" in name for _, name in who) or not named:
        hint.append("a running han-ota daemon owns the radio: push through it (han-ota push without --radio/--path) or stop it (systemctl stop han-ota)")
    return f"{path} is busy: {held}; " + "; ".join(hint or ["close the other program"])


def describe_open_error(path: str, exc: BaseException) -> str:
    """A message naming the port and the fix for an error raised while opening it."""
    chain: list[BaseException] = []
    cur: BaseException | None = exc
    while cur is not None and cur not in chain:
        chain.append(cur)
        cur = cur.__cause__ or cur.__context__
    for e in chain:
        no = getattr(e, "errno", None)
        text = str(e)
        if no == errno.EBUSY or "locked by another" in text:
            return busy_message(path, holders(path) if is_local_path(path) else ())
        if no in (errno.EACCES, errno.EPERM):
            return permission_message(path)
        if no == errno.ENOENT and is_local_path(path):
            return f"no such device {path}: is the dongle plugged in? han-ota radio detect lists the coordinators it can see"
        if no == errno.ECONNREFUSED:
            return f"nothing listens at {path} (connection refused): start the serial bridge or emulator (han-ota emulate ...) first"
    return f"{type(exc).__name__}: {exc}"


def check_port(path: str, *, check_holders: bool = True) -> PortProblem | None:
    """Can this process open ``path`` for a coordinator? None when it looks fine.

    Network paths (socket://...) are not checked here: the driver says what it finds.
    """
    if not is_local_path(path):
        return None
    if not os.path.exists(path):
        return PortProblem("missing", f"no such device {path}: is the dongle plugged in? han-ota radio detect lists the coordinators it can see")
    try:
        fd = os.open(path, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
    except OSError as exc:
        if exc.errno in (errno.EACCES, errno.EPERM):
            return PortProblem("permission", permission_message(path))
        if exc.errno == errno.EBUSY:
            return PortProblem("busy", busy_message(path, holders(path)))
        return PortProblem("error", f"cannot open {path}: {exc.strerror or exc}")
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return PortProblem("busy", busy_message(path, [h for h in holders(path) if h[0] != os.getpid()] or holders(path)))
        except OSError:
            pass  # not lockable (some pseudo-devices): nothing to learn
        else:
            with contextlib.suppress(OSError):
                fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
    if check_holders and not os.path.realpath(path).startswith("/dev/pts/"):
        # (a pty's other end is whoever made it, e.g. han-ota emulate: not a conflict)
        others = [h for h in holders(path) if h[0] != os.getpid()]
        if others:
            return PortProblem("busy", busy_message(path, others))
    return None


__all__ = [
    "DetectedPort",
    "GENERIC_BRIDGES",
    "KNOWN_DONGLES",
    "KnownDongle",
    "PortProblem",
    "answered",
    "busy_message",
    "check_port",
    "classify",
    "describe_open_error",
    "detect_ports",
    "driver_class",
    "holders",
    "is_local_path",
    "list_serial_ports",
    "permission_message",
    "probe_detected",
    "probe_port",
]
