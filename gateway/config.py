"""The one TOML configuration file, parsed once into typed values.

Every refusal names the key, the value and what is allowed. Paths in the file are
relative to the file. Simulated-device tables are kept as plain mappings here and
turned into radio specs by the CLI (gateway/ knows no radio types).
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import zigpy.types as zt

from eui64 import FORMS, Eui64, Eui64Error
from gateway.gbcs.errors import GbcsError
from gateway.gbcs.ids import EntityId
from gateway.gbcs.sign import load_signing_key
from gateway.gbcs.trust import TrustAnchor, load_anchor
from gateway.se.errors import SeError
from gateway.se.material import decode_material
from gateway.se.ke_server import HubIdentity, KeConfig, TrustedCa
from gateway.se.security import SecurityMode
from gateway.se.suites import suite as se_suite
from gateway.ota.priority import PriorityError, parse_priority
from gateway.ota.windows import TrafficWindows, WindowError
from gateway.traffic import KINDS as TRAFFIC_KINDS, MAX_SIZE as TRAFFIC_MAX_SIZE, MIN_SIZE as TRAFFIC_MIN_SIZE

DEFAULT_CONFIG_PATH = Path("/etc/han-ota/config.toml")
RADIO_KINDS = ("sim", "ezsp", "znp")
DEVICE_KINDS = ("ppmid", "hcalcs")
FLOW_CONTROLS = ("none", "software", "hardware")


class ConfigError(ValueError):
    """A configuration value that cannot be used; the message says how to fix it."""

    def __init__(self, key: str, value: object, allowed: str, source: str | None = None) -> None:
        where = f"{source}: " if source else ""
        super().__init__(f"{where}{key} = {value!r}: {allowed}")
        self.key = key
        self.value = value


def parse_eui64(text: str, key: str = "ieee") -> Eui64:
    """An IEEE address in a written form (see ``eui64``), refused as a ``ConfigError`` naming ``key``."""
    try:
        return Eui64.parse(text, key)
    except Eui64Error as exc:
        raise ConfigError(key, text, f"{exc.reason}; expected {FORMS}") from None


@dataclass(frozen=True)
class RadioConfig:
    kind: str = "sim"
    path: str | None = None
    baudrate: int | None = None
    flow_control: str | None = None
    channel: int | None = None
    pan_id: int | None = None
    extended_pan_id: str | None = None
    network_key: str | None = None
    database: Path | None = None


@dataclass(frozen=True)
class OtaConfig:
    block_cap: int = 63
    aps_encryption: bool = False
    stall_timeout_s: float = 120.0
    # The coordinator-wide budget that WAIT_FOR_DATA enforces: one 802.15.4 channel's
    # best-case rate of back-to-back 63-byte block exchanges (bench/model.py, from the
    # link model in radios/sim/link.py). bench/ota.py measured the earlier defaults
    # (16 kB/s, 4 frames in flight) leaving all 50 of 50 devices unfinished on a
    # realistic link, and these finishing all 50 at 80 % of capacity. max_inflight is
    # only a backstop: zigpy's own request limiter queues below it.
    rate_bytes_per_s: float = 5400.0
    burst_bytes: int = 4096
    max_inflight: int = 64
    # Issue 15. The most of the channel (rate_bytes_per_s) OTA may take: the pacer's
    # budget is rate_bytes_per_s * han_share, leaving the rest to other HAN traffic.
    han_share: float = 1.0
    # Traffic windows (gateway/ota/windows.py), checked when read; empty: always open.
    windows: tuple[str, ...] = ()
    # Each device kind's default push priority (gateway/ota/priority.py), 0..9.
    priority_ppmid: int = 5
    priority_hcalcs: int = 5

    @property
    def budget_bytes_per_s(self) -> float:
        return self.rate_bytes_per_s * self.han_share

    def default_priority(self, kind: str) -> int:
        return self.priority_ppmid if kind == "ppmid" else self.priority_hcalcs


@dataclass(frozen=True)
class SupplierConfig:
    id: str  # entity id, 16 uppercase hex digits as in the GBCS originator field
    certificate: Path | None = None
    public_key: Path | None = None
    # Lab override: accept a certificate whose GBCS role is not Supplier (OU=02).
    allow_any_role: bool = False

    @property
    def anchor(self) -> Path:
        path = self.certificate or self.public_key
        assert path is not None  # parse guarantees one of them
        return path


@dataclass(frozen=True)
class DeviceConfig:
    ieee: Eui64
    kind: str
    supplier: str | None = None
    stall_timeout_s: float | None = None
    #: The `security` key; unset is AUTO (chosen from what the device does).
    security: SecurityMode = SecurityMode.AUTO
    #: The `activation` key (issue 13): how a verified CS06 reaches the device. "tunnel":
    #: forwarded over the GBCS tunnel, the hold stays (the device releases itself);
    #: "upgrade-end": the hub's Upgrade End Response releases it (nothing forwarded);
    #: "both". Unset: "both" for an HCALCS, "upgrade-end" for a PPMID (the hub manages
    #: a PPMID's activation itself, SECMP0007).
    activation: str = "both"
    #: The `gbcs_certificate` key (issue 13): the device's GBCS digital-signing
    #: certificate (PEM), so its responses and alerts are judged "valid", not "unknown signer".
    gbcs_certificate: Path | None = None

    @property
    def forwards(self) -> bool:
        return self.activation in ("tunnel", "both")

    @property
    def releases(self) -> bool:
        return self.activation in ("upgrade-end", "both")


@dataclass(frozen=True)
class SimTrafficConfig:
    """One [[sim_traffic]] table (issue 15): background messages on the simulated HAN."""

    #: None: every simulated device.
    device: Eui64 | None
    kind: str  # "metering" (device -> hub report), "price" (hub -> device PublishPrice), "tunnel" (hub -> device over the GBCS tunnel)
    period_s: float
    size: int  # APS payload bytes


#: A background message's size when the table gives none.
DEFAULT_TRAFFIC_SIZE = {"metering": 40, "price": 40, "tunnel": 200}


#: The suites a hub may offer and the suffix of their keys in [key_establishment].
KE_SUITE_CURVES = {2: "283k1", 1: "163k1"}


@dataclass(frozen=True)
class KeyEstablishmentConfig:
    """The [key_establishment] table, read and checked: the hub's certificates, keys
    and trusted CAs per suite, already the ``KeConfig`` the responder takes."""

    ke_config: KeConfig
    #: The files each suite's identity came from, for messages (never their content).
    files: Mapping[int, tuple[Path, Path]] = field(default_factory=dict)

    @property
    def suites(self) -> tuple[int, ...]:
        return self.ke_config.suites


#: The RTDS Access Control Broker (gbcs-vectors/README.md): the recipient of the hub's
#: alerts when [hub] names none, as the reference tools expect on a bench.
DEFAULT_ACB_ID = "90B3D51F30000002"


@dataclass(frozen=True)
class HubConfig:
    """The [hub] table: the hub's own GBCS identity, for the alerts it signs (issue 13).

    ``entity_id`` None: the coordinator's IEEE address (a CHF's entity id is its EUI-64).
    Without ``signing_key`` the hub's alerts are recorded unsigned.
    """

    entity_id: str | None = None
    signing_key: Path | None = None
    certificate: Path | None = None
    acb_id: str = DEFAULT_ACB_ID
    gfi_feed: str | None = None  # "HOST:PORT" of the GFI text feed; None: off
    key: Any = field(default=None, repr=False, compare=False)  # the loaded P-256 private key
    anchor: TrustAnchor | None = field(default=None, repr=False, compare=False)  # the certificate's key

    @property
    def signed(self) -> bool:
        return self.key is not None


@dataclass(frozen=True)
class Config:
    source: Path | None = None
    state_dir: Path = Path("/var/lib/han-ota")
    #: Where state_dir came from: "config" (the file's key), "default" (not given; the
    #: command line resolves it), "STATE_DIRECTORY" (systemd) or "per-user".
    state_dir_from: str = "default"
    control_socket: Path = Path("/run/han-ota/control.sock")
    control_tcp: str | None = None
    radio: RadioConfig = RadioConfig()
    ota: OtaConfig = OtaConfig()
    suppliers: tuple[SupplierConfig, ...] = ()
    devices: tuple[DeviceConfig, ...] = ()
    sim_devices: tuple[Mapping[str, Any], ...] = field(default_factory=tuple)
    #: None: no [key_establishment] table (the hub runs no key establishment).
    key_establishment: KeyEstablishmentConfig | None = None
    #: The [hub] table; its defaults when the file has none (unsigned alerts).
    hub: HubConfig = HubConfig()
    #: [[sim_traffic]]: background traffic on the simulated HAN (sim radio only).
    sim_traffic: tuple[SimTrafficConfig, ...] = ()

    def security_modes(self) -> dict[zt.EUI64, SecurityMode]:
        """The devices whose `security` is set, keyed as ``SecurityRegistry`` keys them."""
        return {zt.EUI64(d.ieee.air): d.security for d in self.devices if d.security is not SecurityMode.AUTO}

    def device(self, ieee: Eui64) -> DeviceConfig | None:
        """The [[device]] table for ``ieee`` (from zigpy's EUI64: ``Eui64.from_air(ieee)``)."""
        return next((d for d in self.devices if d.ieee == ieee), None)

    def supplier(self, entity_id: str) -> SupplierConfig | None:
        return next((s for s in self.suppliers if s.id == entity_id.upper()), None)


def load_config(path: Path | str) -> Config:
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError("--config", str(path), "no such file; write one (see README, 'Configuration') or pass another path") from None
    except OSError as exc:
        raise ConfigError("--config", str(path), f"cannot be read: {exc.strerror}") from None
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError("--config", str(path), f"is not valid TOML: {exc}") from None
    # Absolute, so paths in the file stay right whatever the daemon's working directory.
    path = path.resolve()
    return parse_config(data, base=path.parent, source=path)


_TOP_KEYS = {"state_dir", "control_socket", "control_tcp", "radio", "ota", "supplier", "device", "sim_device", "key_establishment", "hub", "sim_traffic"}
_SECURITY_MODES = {m.value: m for m in (SecurityMode.SE, SecurityMode.INSTALL_CODE)}
ACTIVATION_MODES = ("tunnel", "upgrade-end", "both")
DEFAULT_ACTIVATION = {"hcalcs": "both", "ppmid": "upgrade-end"}


def parse_config(data: Mapping[str, Any], *, base: Path = Path("."), source: Path | None = None) -> Config:
    src = str(source) if source else None
    _no_unknown(data, _TOP_KEYS, "", src)

    def rel(key: str, value: object) -> Path:
        if not isinstance(value, str) or not value:
            raise ConfigError(key, value, "expected a path string", src)
        p = Path(value)
        return p if p.is_absolute() else base / p

    state_dir = rel("state_dir", data["state_dir"]) if "state_dir" in data else Config.state_dir
    control_socket = rel("control_socket", data["control_socket"]) if "control_socket" in data else Config.control_socket
    control_tcp = data.get("control_tcp")
    if control_tcp is not None and (not isinstance(control_tcp, str) or ":" not in control_tcp):
        raise ConfigError("control_tcp", control_tcp, "expected HOST:PORT, e.g. 127.0.0.1:8765 (omit to listen on the Unix socket only)", src)

    radio = _parse_radio(_table(data, "radio", src), rel, src)
    ota = _parse_ota(_table(data, "ota", src), src)

    suppliers = []
    for i, entry in enumerate(_array(data, "supplier", src)):
        key = f"supplier[{i}]"
        _no_unknown(entry, {"id", "certificate", "public_key", "allow_any_role"}, key + ".", src)
        sid = _entity_id(entry.get("id"), f"{key}.id", src)
        cert, pub = entry.get("certificate"), entry.get("public_key")
        if (cert is None) == (pub is None):
            raise ConfigError(f"{key}.certificate", cert, "give exactly one of certificate or public_key (a PEM file)", src)
        any_role = entry.get("allow_any_role", False)
        if not isinstance(any_role, bool):
            raise ConfigError(f"{key}.allow_any_role", any_role, "must be true or false", src)
        suppliers.append(
            SupplierConfig(
                id=sid,
                certificate=rel(f"{key}.certificate", cert) if cert is not None else None,
                public_key=rel(f"{key}.public_key", pub) if pub is not None else None,
                allow_any_role=any_role,
            )
        )
    ids = [s.id for s in suppliers]
    if len(set(ids)) != len(ids):
        raise ConfigError("supplier.id", sorted(i for i in ids if ids.count(i) > 1)[0], "each supplier may be listed once", src)

    devices = []
    for i, entry in enumerate(_array(data, "device", src)):
        key = f"device[{i}]"
        _no_unknown(entry, {"ieee", "kind", "supplier", "stall_timeout", "security", "activation", "gbcs_certificate"}, key + ".", src)
        if not isinstance(entry.get("ieee"), str):
            raise ConfigError(f"{key}.ieee", entry.get("ieee"), "expected a string such as \"00:db:12:34:56:78:90:a0\"", src)
        try:
            ieee = parse_eui64(entry["ieee"], f"{key}.ieee")
        except ConfigError as exc:
            raise ConfigError(exc.key, exc.value, str(exc).split(": ", 1)[-1], src) from None
        kind = entry.get("kind")
        if kind not in DEVICE_KINDS:
            raise ConfigError(f"{key}.kind", kind, f"expected one of {', '.join(DEVICE_KINDS)}", src)
        supplier = entry.get("supplier")
        if supplier is not None:
            supplier = _entity_id(supplier, f"{key}.supplier", src)
            if supplier not in ids:
                raise ConfigError(f"{key}.supplier", supplier, f"no [[supplier]] with this id; known: {', '.join(ids) or 'none'}", src)
        stall = entry.get("stall_timeout")
        if stall is not None:
            stall = _positive_number(stall, f"{key}.stall_timeout", src)
        security = entry.get("security")
        if security is not None and security not in _SECURITY_MODES:
            raise ConfigError(
                f"{key}.security", security,
                "expected \"se\" (key establishment before any OTA) or \"install-code\" (no key establishment); omit it to decide from what the device does",
                src,
            )
        activation = entry.get("activation", DEFAULT_ACTIVATION.get(kind, "both"))
        if activation not in ACTIVATION_MODES:
            raise ConfigError(
                f"{key}.activation", activation,
                "expected \"tunnel\" (the CS06 forwarded, the device releases itself), \"upgrade-end\" "
                "(the hub's Upgrade End Response releases it) or \"both\"",
                src,
            )
        gbcs_cert = entry.get("gbcs_certificate")
        devices.append(
            DeviceConfig(
                ieee=ieee, kind=kind, supplier=supplier, stall_timeout_s=stall,
                security=_SECURITY_MODES[security] if security is not None else SecurityMode.AUTO,
                activation=activation,
                gbcs_certificate=None if gbcs_cert is None else rel(f"{key}.gbcs_certificate", gbcs_cert),
            )
        )
    seen = [d.ieee for d in devices]
    if len(set(seen)) != len(seen):
        dup = next(d for d in seen if seen.count(d) > 1)
        raise ConfigError("device.ieee", str(dup), "each device may be listed once", src)

    sim_devices = tuple(dict(entry) for entry in _array(data, "sim_device", src))
    key_establishment = _parse_key_establishment(data["key_establishment"], rel, src) if "key_establishment" in data else None
    hub = _parse_hub(_table(data, "hub", src), rel, src)
    sim_traffic = tuple(_parse_sim_traffic(f"sim_traffic[{i}]", entry, src) for i, entry in enumerate(_array(data, "sim_traffic", src)))
    return Config(
        source=source,
        state_dir=state_dir,
        state_dir_from="config" if "state_dir" in data else "default",
        control_socket=control_socket,
        control_tcp=control_tcp,
        radio=radio,
        ota=ota,
        suppliers=tuple(suppliers),
        devices=tuple(devices),
        sim_devices=sim_devices,
        key_establishment=key_establishment,
        hub=hub,
        sim_traffic=sim_traffic,
    )


def _parse_radio(t: Mapping[str, Any], rel: Any, src: str | None) -> RadioConfig:
    _no_unknown(t, {"kind", "path", "baudrate", "flow_control", "channel", "pan_id", "extended_pan_id", "network_key", "database"}, "radio.", src)
    kind = t.get("kind", "sim")
    if kind not in RADIO_KINDS:
        raise ConfigError("radio.kind", kind, f"expected one of {', '.join(RADIO_KINDS)}", src)
    path = t.get("path")
    if path is not None and not isinstance(path, str):
        raise ConfigError("radio.path", path, "expected a serial device, /dev/serial/by-id/... link or socket://host:port", src)
    if kind != "sim" and not path:
        raise ConfigError("radio.path", path, f"radio kind {kind!r} needs a path: a serial device, /dev/serial/by-id/... link or socket://host:port", src)
    baud = t.get("baudrate")
    if baud is not None and (not isinstance(baud, int) or baud not in (9600, 19200, 38400, 57600, 115200, 230400, 460800, 921600)):
        raise ConfigError("radio.baudrate", baud, "expected a standard rate such as 115200 or 460800", src)
    flow = t.get("flow_control")
    if flow is not None and flow not in FLOW_CONTROLS:
        raise ConfigError("radio.flow_control", flow, f"expected one of {', '.join(FLOW_CONTROLS)}", src)
    channel = t.get("channel")
    if channel is not None and (not isinstance(channel, int) or not 11 <= channel <= 26):
        raise ConfigError("radio.channel", channel, "expected an 802.15.4 channel from 11 to 26", src)
    pan = t.get("pan_id")
    if pan is not None and (not isinstance(pan, int) or not 0 <= pan <= 0xFFFE):
        raise ConfigError("radio.pan_id", pan, "expected 0x0000 to 0xFFFE", src)
    database = rel("radio.database", t["database"]) if "database" in t else None
    return RadioConfig(
        kind=kind,
        path=path,
        baudrate=baud,
        flow_control=flow,
        channel=channel,
        pan_id=pan,
        extended_pan_id=t.get("extended_pan_id"),
        network_key=t.get("network_key"),
        database=database,
    )


def _parse_ota(t: Mapping[str, Any], src: str | None) -> OtaConfig:
    known = {"block_cap", "aps_encryption", "stall_timeout", "rate_bytes_per_s", "burst_bytes", "max_inflight"}
    _no_unknown(t, known | {"han_share", "windows", "priority_ppmid", "priority_hcalcs"}, "ota.", src)
    d = OtaConfig()
    cap = t.get("block_cap", d.block_cap)
    if not isinstance(cap, int) or not 1 <= cap <= 63:
        raise ConfigError("ota.block_cap", cap, "expected 1 to 63 bytes (63 is the largest unfragmented Image Block Response)", src)
    aps = t.get("aps_encryption", d.aps_encryption)
    if not isinstance(aps, bool):
        raise ConfigError("ota.aps_encryption", aps, "expected true or false", src)
    burst = t.get("burst_bytes", d.burst_bytes)
    if not isinstance(burst, int) or burst < 63:
        raise ConfigError("ota.burst_bytes", burst, "expected an integer of at least 63", src)
    inflight = t.get("max_inflight", d.max_inflight)
    if not isinstance(inflight, int) or inflight < 1:
        raise ConfigError("ota.max_inflight", inflight, "expected an integer of at least 1", src)
    return OtaConfig(
        block_cap=cap,
        aps_encryption=aps,
        stall_timeout_s=_positive_number(t.get("stall_timeout", d.stall_timeout_s), "ota.stall_timeout", src),
        rate_bytes_per_s=_positive_number(t.get("rate_bytes_per_s", d.rate_bytes_per_s), "ota.rate_bytes_per_s", src),
        burst_bytes=burst,
        max_inflight=inflight,
        **_parse_ota_trials(t, d, src),
    )


def _parse_ota_trials(t: Mapping[str, Any], d: OtaConfig, src: str | None) -> dict[str, Any]:
    """[ota] han_share, windows, priority_ppmid, priority_hcalcs (issue 15)."""
    share = t.get("han_share", d.han_share)
    if isinstance(share, bool) or not isinstance(share, (int, float)) or not 0 < share <= 1:
        raise ConfigError("ota.han_share", share, "expected a share of the channel above 0 and at most 1, e.g. 0.5", src)
    windows = t.get("windows", list(d.windows))
    if not isinstance(windows, list):
        raise ConfigError("ota.windows", windows, 'expected a list such as ["01:00-05:00", "22:00-02:00Z"]', src)
    try:
        TrafficWindows.parse(windows)
    except WindowError as exc:
        raise ConfigError("ota.windows", windows, str(exc), src) from None
    out: dict[str, Any] = {"han_share": float(share), "windows": tuple(w.strip() for w in windows)}
    for key in ("priority_ppmid", "priority_hcalcs"):
        value = t.get(key, getattr(d, key))
        try:
            out[key] = parse_priority(value, f"ota.{key}")
        except PriorityError as exc:
            raise ConfigError(f"ota.{key}", value, str(exc), src) from None
    return out


def _parse_key_establishment(t: object, rel: Any, src: str | None) -> KeyEstablishmentConfig:
    """[key_establishment]: ``suites`` in order of preference and, per suite N with
    curve C (2: 283k1, 1: 163k1), ``certificate_C``, ``private_key_C`` (files, raw
    bytes or hex text) and ``ca_public_keys_C`` (hex compressed points, or
    "ISSUER:POINT" to name the issuer a CA signs as). Everything is read and checked
    here, once; nothing of a key is put in a message."""
    if not isinstance(t, dict):
        raise ConfigError("key_establishment", t, "expected a [key_establishment] table", src)
    allowed = {"suites"} | {f"{k}_{c}" for c in KE_SUITE_CURVES.values() for k in ("certificate", "private_key", "ca_public_keys")}
    _no_unknown(t, allowed, "key_establishment.", src)
    given = [n for n, c in KE_SUITE_CURVES.items() if any(f"{k}_{c}" in t for k in ("certificate", "private_key", "ca_public_keys"))]
    suites = t.get("suites", given)
    if (
        not isinstance(suites, list)
        or not suites
        or not all(isinstance(n, int) and not isinstance(n, bool) and n in KE_SUITE_CURVES for n in suites)
        or len(set(suites)) != len(suites)
    ):
        raise ConfigError(
            "key_establishment.suites", suites,
            "expected a list of crypto suites in order of preference, each once: 2 (sect283k1), 1 (sect163k1), e.g. [2, 1]",
            src,
        )
    identities: list[HubIdentity] = []
    files: dict[int, tuple[Path, Path]] = {}
    for number in sorted(set(suites) | set(given)):
        curve = KE_SUITE_CURVES[number]
        keys = {k: f"key_establishment.{k}_{curve}" for k in ("certificate", "private_key", "ca_public_keys")}
        for k, full in keys.items():
            if f"{k}_{curve}" not in t:
                why = f"suite {number} is offered in suites" if number in suites else f"the other suite-{number} keys are given"
                raise ConfigError(full, None, f"missing: {why}; give {', '.join(keys.values())}", src)
        s = se_suite(number)
        cert_path = rel(keys["certificate"], t[f"certificate_{curve}"])
        key_path = rel(keys["private_key"], t[f"private_key_{curve}"])
        cert = _key_file(keys["certificate"], cert_path, s.certificate_length, f"the hub's suite-{number} implicit certificate", src)
        private = _key_file(keys["private_key"], key_path, s.private_key_length, f"the hub's suite-{number} private key", src)
        cas = _ca_public_keys(keys["ca_public_keys"], t[f"ca_public_keys_{curve}"], s.point_length, src)
        try:
            identities.append(HubIdentity.load(number, cert, private, cas))
        except SeError as err:
            raise ConfigError(keys["certificate"], str(cert_path), f"{err}", src) from None
        files[number] = (cert_path, key_path)
    try:
        ke_config = KeConfig.build(identities, suites)
    except SeError as err:  # pragma: no cover - every case is refused above with its key
        raise ConfigError("key_establishment", suites, str(err), src) from None
    return KeyEstablishmentConfig(ke_config, files)


def _parse_hub(t: Mapping[str, Any], rel: Any, src: str | None) -> HubConfig:
    """[hub]: the key and certificate are read and checked here, once: a P-256 key, the
    certificate's key its public half, and the entity id the certificate names (if any)
    the configured one."""
    _no_unknown(t, {"entity_id", "signing_key", "certificate", "acb_id", "gfi_feed"}, "hub.", src)
    entity = _entity_id(t["entity_id"], "hub.entity_id", src) if "entity_id" in t else None
    acb = _entity_id(t.get("acb_id", DEFAULT_ACB_ID), "hub.acb_id", src)
    feed = t.get("gfi_feed")
    port = feed.rpartition(":")[2] if isinstance(feed, str) and ":" in feed else ""
    if feed is not None and (not port.isdigit() or int(port) > 65535):
        raise ConfigError("hub.gfi_feed", feed, 'expected HOST:PORT, e.g. "127.0.0.1:23456" (port 0: any free one; omit it to keep the feed off)', src)
    key_path = rel("hub.signing_key", t["signing_key"]) if "signing_key" in t else None
    cert_path = rel("hub.certificate", t["certificate"]) if "certificate" in t else None
    if cert_path is not None and key_path is None:
        raise ConfigError("hub.certificate", str(cert_path), "a certificate needs its signing_key (`han-ota gbcs keygen -o PREFIX` makes both)", src)
    key = anchor = None
    if key_path is not None:
        try:
            key = load_signing_key(_read_file("hub.signing_key", key_path, src))
        except GbcsError as exc:
            raise ConfigError("hub.signing_key", str(key_path), str(exc), src) from None
    if cert_path is not None:
        try:
            anchor = load_anchor(_read_file("hub.certificate", cert_path, src))
        except GbcsError as exc:
            raise ConfigError("hub.certificate", str(cert_path), str(exc), src) from None
        if key is None or anchor.public_key.public_numbers() != key.public_key().public_numbers():
            raise ConfigError("hub.certificate", str(cert_path), f"its key is not the public half of hub.signing_key {key_path}", src)
        named = anchor.entity_id
        if named is not None and entity is not None and named != EntityId.parse(entity):
            raise ConfigError("hub.certificate", str(cert_path), f"names entity {named}, not hub.entity_id {entity}", src)
        if entity is None and named is not None:
            entity = str(named)
    return HubConfig(entity, key_path, cert_path, acb, feed, key, anchor)


def _read_file(key: str, path: Path, src: str | None) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(key, str(path), "no such file (`han-ota gbcs keygen -o PREFIX` writes PREFIX.key and PREFIX.pem)", src) from None
    except OSError as exc:
        raise ConfigError(key, str(path), f"cannot be read: {exc.strerror}", src) from None


def _key_file(key: str, path: Path, length: int, what: str, src: str | None) -> bytes:
    """A file of ``length`` raw bytes, or of their hex text (gateway.se.material)."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(key, str(path), f"no such file: {what} ({length} bytes, raw or hex; `han-ota cbke issue` writes one)", src) from None
    except OSError as exc:
        raise ConfigError(key, str(path), f"cannot be read: {exc.strerror}", src) from None
    try:
        return decode_material(raw, {length}, what)
    except SeError as exc:
        raise ConfigError(key, str(path), str(exc), src) from None


def _ca_public_keys(key: str, value: object, point_length: int, src: str | None) -> list[bytes | TrustedCa]:
    form = f"hex compressed points of {point_length} bytes (02... or 03..., {2 * point_length} digits), or \"ISSUER:POINT\" with the issuer's 16 hex digits"
    if not isinstance(value, list) or not value:
        raise ConfigError(key, value, f"expected a non-empty list of {form}", src)
    out: list[bytes | TrustedCa] = []
    for i, entry in enumerate(value):
        where = f"{key}[{i}]"
        if not isinstance(entry, str):
            raise ConfigError(where, entry, f"expected a string: {form}", src)
        issuer_text, _, point_text = entry.strip().rpartition(":")
        issuer: bytes | None = None
        if issuer_text:
            try:
                issuer = Eui64.parse(issuer_text, where).written
            except Eui64Error as exc:
                raise ConfigError(where, entry, f"issuer: {exc.reason}; expected {form}", src) from None
        try:
            point = bytes.fromhex(point_text)
        except ValueError:
            raise ConfigError(where, entry, f"the point is not hex; expected {form}", src) from None
        if len(point) != point_length or point[:1] not in (b"\x02", b"\x03"):
            raise ConfigError(where, entry, f"{len(point)} bytes starting {point[:1].hex() or 'nothing'}; expected {form}", src)
        out.append(TrustedCa(issuer, point) if issuer is not None else point)
    return out


def _table(data: Mapping[str, Any], key: str, src: str | None) -> Mapping[str, Any]:
    value = data.get(key, {})
    if not isinstance(value, dict):
        raise ConfigError(key, value, f"expected a [{key}] table", src)
    return value


def _array(data: Mapping[str, Any], key: str, src: str | None) -> list[Mapping[str, Any]]:
    value = data.get(key, [])
    if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
        raise ConfigError(key, value, f"expected [[{key}]] tables", src)
    return value


def _no_unknown(t: Mapping[str, Any], allowed: set[str], prefix: str, src: str | None) -> None:
    for key in t:
        if key not in allowed:
            raise ConfigError(prefix + key, t[key], f"unknown key; allowed here: {', '.join(sorted(allowed))}", src)


def _entity_id(value: object, key: str, src: str | None) -> str:
    if not isinstance(value, str):
        raise ConfigError(key, value, "expected 16 hex digits, e.g. \"90B3D51F30010000\"", src)
    try:
        return Eui64.parse(value, key).hex()
    except Eui64Error as exc:
        raise ConfigError(key, value, f"{exc.reason}; expected 16 hex digits, e.g. \"90B3D51F30010000\"", src) from None


def _positive_number(value: object, key: str, src: str | None) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
        raise ConfigError(key, value, "expected a positive number of seconds", src)
    return float(value)


def parse_sim_traffic(text: str) -> SimTrafficConfig:
    """``--sim-traffic KIND:PERIOD[:size=N][:device=IEEE|all]``, read as the table it stands for."""
    kind, _, rest = text.partition(":")
    period_text, _, options = rest.partition(":")
    try:
        period: object = float(period_text)
    except ValueError:
        period = period_text
    entry: dict[str, Any] = {"kind": kind, "period": period}
    key = None
    for part in options.split(":") if options else []:
        if "=" in part:
            key, value = part.split("=", 1)
            entry[key] = value
        elif key is not None:
            entry[key] += ":" + part  # an IEEE address in colon pairs
        else:
            raise ConfigError("--sim-traffic", text, "expected KIND:PERIOD[:size=N][:device=IEEE|all], e.g. metering:10:size=40")
    if "size" in entry:
        entry["size"] = int(entry["size"]) if str(entry["size"]).isdigit() else entry["size"]
    return _parse_sim_traffic("--sim-traffic", entry, None)


def _parse_sim_traffic(key: str, entry: Mapping[str, Any], src: str | None) -> SimTrafficConfig:
    _no_unknown(entry, {"device", "kind", "period", "size"}, key + ".", src)
    kind = entry.get("kind")
    if kind not in TRAFFIC_KINDS:
        raise ConfigError(
            f"{key}.kind", kind,
            "expected \"metering\" (the device's Metering 0x0702 report), \"price\" (the hub's Price 0x0700 PublishPrice) "
            "or \"tunnel\" (a GBCS-sized message over the device's GBCS tunnel)",
            src,
        )
    device = entry.get("device", "all")
    ieee = None
    if device != "all":
        if not isinstance(device, str):
            raise ConfigError(f"{key}.device", device, "expected \"all\" or a simulated device's IEEE address", src)
        ieee = parse_eui64(device, f"{key}.device")
    if "period" not in entry:
        raise ConfigError(f"{key}.period", None, "required: seconds between two messages of each device", src)
    period = _positive_number(entry["period"], f"{key}.period", src)
    size = entry.get("size", DEFAULT_TRAFFIC_SIZE[kind])
    low, high = TRAFFIC_MIN_SIZE[kind], TRAFFIC_MAX_SIZE[kind]
    if isinstance(size, bool) or not isinstance(size, int) or not low <= size <= high:
        what = "the GBCS message's length" if kind == "tunnel" else "the message's APS payload"
        raise ConfigError(f"{key}.size", size, f"expected {what} in bytes, {low}..{high} for {kind}", src)
    return SimTrafficConfig(device=ieee, kind=kind, period_s=period, size=size)
