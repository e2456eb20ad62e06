"""What a simulated HAN device is: `SimDeviceSpec`, and its CLI/TOML forms.

One frozen dataclass describes a simulated PPMID or HCALCS. It comes from the CLI
option ``--sim-device KIND:IEEE[:key=value...]`` (`parse_sim_device`) or from a TOML
table (`SimDeviceSpec.from_dict`); `to_dict` gives the table back. Every value goes
through one validator table (`_KEYS`), so the three forms accept and refuse the same
things, and every refusal is a `SimSpecError` naming the key, the value and what is
allowed.

Kind defaults (checked against the GBCS sample images in tests/data/gbcs/):

- ``ppmid``: manufacturer 0x121D, image type 0x0084, hardware version 0x1111 (the
  sr11.4 PPMID image allows 0x1111..0x1211), file version 0x00000001 (below the
  sample's 0xACDCACDC, so the sample is an upgrade). A Prepayment Meter Interface
  Device is a display: a ZigBee *end device*, mains powered with battery backup.
  With ``sleepy_poll=0`` (the default) it keeps its receiver on; with
  ``sleepy_poll>0`` it is a sleepy end device that only hears its parent when it
  polls.
- ``hcalcs``: manufacturer 0x121D, image type 0x0000 (as the sr11.1 image), hardware
  0x1111, file version 0x00000001. A HAN Connected Auxiliary Load Control Switch is
  mains powered and a ZigBee *router*; ``sleepy_poll`` must stay 0.

``link`` (instant|realistic) picks the timing of the air when `SimHan` is built
without an explicit `LinkModel`: all devices share one channel, so if any device says
``realistic`` the whole han is `LinkModel.realistic()`; an explicit model wins.

Timers given here (``query_interval``, ``wait_interval``, ``response_timeout``, ...)
are the device's own, in seconds, and are *not* scaled by the link model's ``scale``:
a demo that wants a fast device says so in the spec.

Profile: GBCS HAN devices talk the Smart Energy profile (0x0109). zigpy 2.4 only
parses ZCL frames whose profile is Home Automation (0x0104) or ZLL
(zigpy/device.py, ``ZigbeeDevice._parse_packet_header``) and drops the rest, so with
0x0109 zigpy's own interview (Basic reads) and ``update_firmware`` cannot work. The
default is therefore ``profile=ha``; ``profile=se`` gives the faithful SE endpoint
for servers that read frames below zigpy's device layer.

Smart Energy security (issue 12): ``security=se`` with ``cbke_suite`` (1 or 2),
``cbke_cert``, ``cbke_key`` and ``cbke_ca`` (hex, or files of raw bytes or hex) gives
the device a key-establishment identity, checked here for lengths and subject
(se_identity.py; the key against the certificate is checked when the device builds
it); ``cbke_fail`` injects unknown-issuer, bad-certificate, bad-mac or silent. ``ke_server_wait``,
``ke_attempts``, ``ke_retry_delay`` and ``ke_timeout`` time the registration
(radios/sim/se_join.py says what the device does with all of these).

GBCS (issue 13): ``entity_id`` (default: the IEEE address), ``gbcs_key`` and
``gbcs_cert`` (PEM files: the device's own P-256 signing key and certificate; without
a key the device makes one at start and prints its certificate; a key alone gets a
self-signed certificate), ``supplier_id`` (the supplier whose ``supplier_key`` this
is, when that file names none; also where receipt alerts go) and ``acb_id`` (where a
PPMID's CS09 goes). ``supplier_key`` is the trust anchor for CS06 as well as for the
image signature; ``activation_fails`` makes an HCALCS answer CS06 with 3 (activation
failure) and a PPMID send its CS09 with activateImage 1. radios/sim/gbcs/from_spec.py
turns these into the device's `GbcsPeer`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
import dataclasses
from dataclasses import dataclass
import math
from pathlib import Path
import re
from typing import Any, Final

import zigpy.types as t

from eui64 import FORMS, Eui64, Eui64Error

__all__ = [
    "KINDS",
    "PROFILE_HA",
    "PROFILE_SE",
    "SimDeviceSpec",
    "SimSpecError",
    "parse_sim_device",
    "SimNetworkError",
    "sim_network",
]

KINDS: Final = ("ppmid", "hcalcs")
PROFILE_HA: Final = 0x0104
PROFILE_SE: Final = 0x0109


class SimSpecError(ValueError):
    """A simulated device description was refused: names key, value and what is allowed."""

    def __init__(self, key: str, value: object, allowed: str) -> None:
        self.key = key
        self.value = value
        self.allowed = allowed
        super().__init__(f"sim device: {key}={value!r} is not valid: {allowed}")


# --------------------------------------------------------------------------------------
# Value parsers: each takes the raw value (a CLI string or a TOML value) and returns the
# typed value or raises SimSpecError(key, raw, allowed).


def _int_text(text: str) -> int:
    s = text.strip().replace("_", "")
    if re.fullmatch(r"[+-]?0[xX][0-9a-fA-F]+", s):
        return int(s, 16)
    if re.fullmatch(r"[+-]?[0-9]+", s):
        return int(s, 10)
    raise ValueError(text)


def _int_range(lo: int, hi: int) -> Callable[[str, object], int]:
    allowed = f"an integer {lo}..{hi} (0x{lo:X}..0x{hi:X}); decimal or 0x hex"

    def parse(key: str, raw: object) -> int:
        if isinstance(raw, bool):
            raise SimSpecError(key, raw, allowed)
        try:
            value = raw if isinstance(raw, int) else _int_text(str(raw))
        except ValueError:
            raise SimSpecError(key, raw, allowed) from None
        if not lo <= value <= hi:
            raise SimSpecError(key, raw, allowed)
        return value

    parse.allowed = allowed  # type: ignore[attr-defined]
    return parse


def _opt_int_range(lo: int, hi: int) -> Callable[[str, object], int | None]:
    inner = _int_range(lo, hi)
    allowed = f"{inner.allowed}, or 'auto'"  # type: ignore[attr-defined]

    def parse(key: str, raw: object) -> int | None:
        if raw is None or (isinstance(raw, str) and raw.strip().lower() in ("", "auto", "none")):
            return None
        try:
            return inner(key, raw)
        except SimSpecError:
            raise SimSpecError(key, raw, allowed) from None

    parse.allowed = allowed  # type: ignore[attr-defined]
    return parse


def _float_range(lo: float, hi: float, *, lo_open: bool = False) -> Callable[[str, object], float]:
    lo_text = f"> {lo:g}" if lo_open else f">= {lo:g}"
    allowed = f"a number {lo_text} and <= {hi:g}" if math.isfinite(hi) else f"a number {lo_text}"

    def parse(key: str, raw: object) -> float:
        if isinstance(raw, bool):
            raise SimSpecError(key, raw, allowed)
        try:
            value = float(raw) if isinstance(raw, int | float) else float(str(raw).strip())
        except ValueError:
            raise SimSpecError(key, raw, allowed) from None
        if not math.isfinite(value) or value > hi or value < lo or (lo_open and value == lo):
            raise SimSpecError(key, raw, allowed)
        return value

    parse.allowed = allowed  # type: ignore[attr-defined]
    return parse


_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")


def _parse_bool(key: str, raw: object) -> bool:
    allowed = "0, 1, true or false"
    if isinstance(raw, bool):
        return raw
    if isinstance(raw, int) and raw in (0, 1):
        return bool(raw)
    text = str(raw).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise SimSpecError(key, raw, allowed)


_parse_bool.allowed = "0, 1, true or false"  # type: ignore[attr-defined]


def _choice(*choices: str) -> Callable[[str, object], str]:
    allowed = "one of " + ", ".join(choices)

    def parse(key: str, raw: object) -> str:
        text = str(raw).strip().lower()
        if text not in choices:
            raise SimSpecError(key, raw, allowed)
        return text

    parse.allowed = allowed  # type: ignore[attr-defined]
    return parse


def _policy(key: str, raw: object) -> int:
    allowed = "0 or 1"
    if isinstance(raw, bool):
        return int(raw)
    try:
        value = raw if isinstance(raw, int) else _int_text(str(raw))
    except ValueError:
        raise SimSpecError(key, raw, allowed) from None
    if value not in (0, 1):
        raise SimSpecError(key, raw, allowed)
    return value


_policy.allowed = "0 or 1"  # type: ignore[attr-defined]


def _parse_profile(key: str, raw: object) -> int:
    allowed = "ha (0x0104) or se (0x0109)"
    if isinstance(raw, str) and raw.strip().lower() in ("ha", "se"):
        return PROFILE_HA if raw.strip().lower() == "ha" else PROFILE_SE
    try:
        value = raw if isinstance(raw, int) and not isinstance(raw, bool) else _int_text(str(raw))
    except ValueError:
        raise SimSpecError(key, raw, allowed) from None
    if value not in (PROFILE_HA, PROFILE_SE):
        raise SimSpecError(key, raw, allowed)
    return value


_parse_profile.allowed = "ha (0x0104) or se (0x0109)"  # type: ignore[attr-defined]


def _parse_text(key: str, raw: object) -> str:
    allowed = "1..32 printable ASCII characters without ':'"
    text = str(raw)
    if not 1 <= len(text) <= 32 or ":" in text or not text.isascii() or not text.isprintable():
        raise SimSpecError(key, raw, allowed)
    return text


_parse_text.allowed = "1..32 printable ASCII characters without ':'"  # type: ignore[attr-defined]


def _opt_text(key: str, raw: object) -> str | None:
    if raw is None:
        return None
    return _parse_text(key, raw)


_opt_text.allowed = _parse_text.allowed  # type: ignore[attr-defined]

def _opt_key_file(key: str, raw: object) -> str | None:
    if raw is None:
        return None
    text = str(raw).strip()
    if not text:
        raise SimSpecError(key, raw, _opt_key_file.allowed)  # type: ignore[attr-defined]
    from .signature import load_supplier_key  # cryptography only when a key is given

    try:
        load_supplier_key(text)
    except (OSError, ValueError) as exc:
        raise SimSpecError(key, raw, f"{_opt_key_file.allowed} ({exc})") from None  # type: ignore[attr-defined]
    return text


_opt_key_file.allowed = "a PEM certificate or public key file (ECDSA P-256)"  # type: ignore[attr-defined]

def _opt_blob(key: str, raw: object) -> str | None:
    if raw is None:
        return None
    text = str(raw).strip()
    if re.fullmatch(r"(?:[0-9a-fA-F]{2})+", text) or (text and Path(text).is_file()):
        return text
    raise SimSpecError(key, raw, _opt_blob.allowed)  # type: ignore[attr-defined]


_opt_blob.allowed = "hex digits, or a file holding raw bytes or hex"  # type: ignore[attr-defined]

CBKE_FAULTS: Final = ("unknown-issuer", "bad-certificate", "bad-mac", "silent")


def _opt_fault(key: str, raw: object) -> str | None:
    if raw is None or (isinstance(raw, str) and raw.strip().lower() in ("", "none")):
        return None
    return _choice(*CBKE_FAULTS)(key, raw)


_opt_fault.allowed = "one of " + ", ".join(CBKE_FAULTS) + ", or none"  # type: ignore[attr-defined]


def _cbke_suite(key: str, raw: object) -> int:
    try:
        return _int_range(1, 2)(key, raw)
    except SimSpecError:
        raise SimSpecError(key, raw, _cbke_suite.allowed) from None  # type: ignore[attr-defined]


_cbke_suite.allowed = "1 (sect163k1) or 2 (sect283k1)"  # type: ignore[attr-defined]

def _opt_entity_id(key: str, raw: object) -> str | None:
    """An EUI-64 (entity id) as 16 upper-case hex digits, or None."""
    if raw is None:
        return None
    try:
        addr = Eui64.parse(str(raw).strip(), key)
    except Eui64Error as exc:
        raise SimSpecError(key, raw, f"{_opt_entity_id.allowed} ({exc.reason})") from None  # type: ignore[attr-defined]
    if addr.reserved:
        raise SimSpecError(key, raw, f"{_opt_entity_id.allowed}, not all zeros or all ones")  # type: ignore[attr-defined]
    return addr.hex()


_opt_entity_id.allowed = "an EUI-64 as 16 hex digits"  # type: ignore[attr-defined]


def _opt_pem_file(what: str, load: Callable[[bytes], object]) -> Callable[[str, object], str | None]:
    allowed = f"a PEM file holding {what}"

    def parse(key: str, raw: object) -> str | None:
        if raw is None:
            return None
        text = str(raw).strip()
        try:
            load(Path(text).read_bytes())
        except (OSError, ValueError, TypeError) as exc:
            raise SimSpecError(key, raw, f"{allowed} ({exc})") from None
        return text

    parse.allowed = allowed  # type: ignore[attr-defined]
    return parse


def _load_gbcs_key(pem: bytes) -> object:
    from cryptography.hazmat.primitives import serialization  # only when a key is given
    from cryptography.hazmat.primitives.asymmetric import ec

    key = serialization.load_pem_private_key(pem, password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey) or not isinstance(key.curve, ec.SECP256R1):
        raise ValueError("not an ECDSA P-256 private key")
    return key


def _load_gbcs_cert(pem: bytes) -> object:
    from cryptography import x509
    from cryptography.hazmat.primitives.asymmetric import ec

    cert = x509.load_pem_x509_certificate(pem)
    key = cert.public_key()
    if not isinstance(key, ec.EllipticCurvePublicKey) or not isinstance(key.curve, ec.SECP256R1):
        raise ValueError("its key is not ECDSA P-256")
    return cert
def _opt_tunnel_refuse(key: str, raw: object) -> str | None:
    if raw is None or (isinstance(raw, str) and raw.strip().lower() in ("", "none")):
        return None
    return _choice("protocol", "flow-control")(key, raw)


_opt_tunnel_refuse.allowed = "protocol, flow-control, or none"  # type: ignore[attr-defined]


def parse_ieee(raw: object) -> t.EUI64:
    """An IEEE address in a written form (``eui64``) or an EUI64; not all zeros or all ones."""
    if isinstance(raw, t.EUI64):
        return raw
    try:
        addr = Eui64.parse(str(raw), "ieee")
    except Eui64Error as exc:
        raise SimSpecError("ieee", raw, f"{exc.reason}; expected {FORMS}") from None
    if addr.reserved:
        raise SimSpecError("ieee", raw, FORMS + ", not all zeros or all ones")
    return t.EUI64(addr.air)


# --------------------------------------------------------------------------------------
# The spec itself.

_KIND_DEFAULTS: Final[Mapping[str, Mapping[str, Any]]] = {
    "ppmid": {
        "manufacturer_code": 0x121D,
        "image_type": 0x0084,
        "file_version": 0x00000001,
        "hardware_version": 0x1111,
        "max_data_size": 48,
        "model": "PPMID",
    },
    "hcalcs": {
        "manufacturer_code": 0x121D,
        "image_type": 0x0000,
        "file_version": 0x00000001,
        "hardware_version": 0x1111,
        "max_data_size": 64,
        "model": "HCALCS",
    },
}


@dataclass(frozen=True)
class SimDeviceSpec:
    """One simulated HAN device. Fields left ``None`` take the kind's default."""

    kind: str
    ieee: t.EUI64

    # Identity (kind defaults when None; see module docstring)
    manufacturer_code: int | None = None
    image_type: int | None = None
    file_version: int | None = None
    hardware_version: int | None = None
    model: str | None = None
    manufacturer_name: str = "GFI"
    profile: int = PROFILE_HA

    # OTA client download behaviour
    max_data_size: int | None = None
    page_requests: bool = False
    page_size: int = 256
    response_spacing_ms: int = 20
    min_block_period_ms: int = 0
    corrupt: bool = False
    # The supplier's trust anchor: with it the device verifies the GBCS signature of a
    # downloaded image and reports INVALID_IMAGE when it does not verify (or is absent).
    supplier_key: str | None = None

    # OTA client timers (seconds, device's own, unscaled)
    query_delay: float = 2.0
    query_interval: float = 300.0
    notify_delay: float = 0.5
    response_timeout: float = 5.0
    max_retries: int = 5
    wait_interval: float = 60.0
    reboot_time: float = 2.0

    # Activation behaviour
    self_activate_after: int = 0
    timeout_policy: int = 0
    activation_policy: int = 0
    activation_fails: bool = False

    # Smart Energy security (issue 12): "se" runs CBKE as initiator after joining and
    # insists on APS security for OTA afterwards; see se_identity.py for the cbke_* values.
    security: str = "install-code"
    cbke_suite: int = 1
    cbke_cert: str | None = None
    cbke_key: str | None = None
    cbke_ca: str | None = None
    cbke_fail: str | None = None
    # The SE registration's own timers (se_join.py): how long to wait for a Key
    # Establishment server to answer Match_Desc (per request, 3 requests), attempts and
    # the pause between them, and the bound on the whole registration (then: leave).
    ke_server_wait: float = 5.0
    ke_attempts: int = 3
    ke_retry_delay: float = 10.0
    ke_timeout: float = 120.0

    # GBCS (issue 13): the device's entity id, its own signing identity (PEM files, or
    # generated), and the parties it addresses (module docstring; gbcs/from_spec.py).
    entity_id: str | None = None
    gbcs_key: str | None = None
    gbcs_cert: str | None = None
    supplier_id: str | None = None
    acb_id: str | None = None
    # Tunneling server faults (issue 13, radios/sim/tunnel_server.py): answer BUSY or
    # NO_MORE_TUNNEL_IDS to that many RequestTunnels; forget the tunnel when the Nth
    # TransferData arrives (0: never); refuse every tunnel (protocol | flow-control).
    tunnel_busy: int = 0
    tunnel_no_ids: int = 0
    tunnel_drop: int = 0
    tunnel_refuse: str | None = None

    # Radio behaviour
    sleepy_poll: float = 0.0
    fast_poll: float = 0.25
    join_fast_poll: float = 30.0
    loss: float = 0.0
    # Radio hops between the coordinator and the device (1: its neighbour). Each frame
    # is sent once per hop on the one channel, and the coordinator learns the route's
    # relays (SimHan.relays_of, what the emulators report as source routes).
    hops: int = 1
    link: str = "instant"
    nwk: int | None = None
    seed: int | None = None

    def __post_init__(self) -> None:
        kind = _choice(*KINDS)("kind", self.kind)
        object.__setattr__(self, "kind", kind)
        object.__setattr__(self, "ieee", parse_ieee(self.ieee))
        for name, default in _KIND_DEFAULTS[kind].items():
            if getattr(self, name) is None:
                object.__setattr__(self, name, default)
        for f in dataclasses.fields(self):
            if f.name in ("kind", "ieee"):
                continue
            object.__setattr__(self, f.name, _KEYS[f.name](f.name, getattr(self, f.name)))
        if kind == "hcalcs" and self.sleepy_poll > 0:
            raise SimSpecError("sleepy_poll", self.sleepy_poll, "0 for hcalcs (a mains-powered router never sleeps)")
        self._check_security()
        self._check_gbcs()

    def _check_gbcs(self) -> None:
        """The GBCS files fit together: key and certificate, entity ids (gbcs/from_spec.py)."""
        if self.gbcs_key is None and self.gbcs_cert is not None:
            raise SimSpecError("gbcs_cert", self.gbcs_cert, "only with gbcs_key (the certificate's private key)")
        if self.gbcs_key is None and self.supplier_key is None:
            return
        from .gbcs.from_spec import identity_for_spec, suppliers_for_spec  # cryptography only when files are given

        try:
            if self.gbcs_key is not None:
                identity_for_spec(self)
        except (OSError, ValueError) as exc:
            raise SimSpecError("gbcs_key", self.gbcs_key, f"the GBCS identity of this device ({exc})") from None
        try:
            suppliers_for_spec(self)
        except (OSError, ValueError) as exc:
            raise SimSpecError("supplier_id", self.supplier_id, f"the supplier that supplier_key names ({exc})") from None

    def _check_security(self) -> None:
        names = ("cbke_cert", "cbke_key", "cbke_ca")
        if self.security != "se":
            for name in (*names, "cbke_fail"):
                if getattr(self, name) is not None:
                    raise SimSpecError(name, getattr(self, name), "only with security=se")
            return
        for name in names:
            if getattr(self, name) is None:
                raise SimSpecError(name, None, f"required with security=se: {_opt_blob.allowed}")  # type: ignore[attr-defined]
        from .se_identity import check_identity  # the SE crypto only for an SE device

        try:
            check_identity(self.cbke_suite, self.cbke_cert, self.cbke_key, self.cbke_ca, self.ieee, self.cbke_fail)  # type: ignore[arg-type]
        except (OSError, ValueError) as exc:
            raise SimSpecError("cbke_cert", self.cbke_cert, f"the suite {self.cbke_suite} identity of this device ({exc})") from None

    # -- derived facts ---------------------------------------------------------------

    @property
    def is_router(self) -> bool:
        return self.kind == "hcalcs"

    @property
    def is_sleepy(self) -> bool:
        return self.sleepy_poll > 0

    # -- TOML / dict form ------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """Plain values (str, int, float, bool) for a TOML table; omits None."""
        out: dict[str, Any] = {"kind": self.kind, "ieee": str(self.ieee)}
        for f in dataclasses.fields(self):
            if f.name in out:
                continue
            value = getattr(self, f.name)
            if value is not None:
                out[f.name] = value
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SimDeviceSpec:
        """The inverse of `to_dict`; values may also be strings as on the CLI."""
        if "kind" not in data:
            raise SimSpecError("kind", None, "required: one of " + ", ".join(KINDS))
        if "ieee" not in data:
            raise SimSpecError("ieee", None, "required: " + FORMS)
        kwargs: dict[str, Any] = {}
        for key, raw in data.items():
            if key in ("kind", "ieee"):
                continue
            if key not in _KEYS:
                raise SimSpecError(key, raw, "a known key: " + ", ".join(sorted(_KEYS)))
            kwargs[key] = _KEYS[key](key, raw)
        return cls(kind=data["kind"], ieee=parse_ieee(data["ieee"]), **kwargs)

    def replace(self, **changes: Any) -> SimDeviceSpec:
        return dataclasses.replace(self, **changes)


# One validator per key. The dataclass re-validates through this table too.
_KEYS: Final[dict[str, Callable[[str, object], Any]]] = {
    "manufacturer_code": _int_range(0, 0xFFFF),
    "image_type": _int_range(0, 0xFFFF),
    "file_version": _int_range(0, 0xFFFFFFFF),
    "hardware_version": _int_range(0, 0xFFFF),
    "model": _parse_text,
    "manufacturer_name": _parse_text,
    "profile": _parse_profile,
    "max_data_size": _int_range(1, 255),
    "page_requests": _parse_bool,
    "page_size": _int_range(1, 0xFFFF),
    "response_spacing_ms": _int_range(0, 0xFFFF),
    "min_block_period_ms": _int_range(0, 0xFFFF),
    "corrupt": _parse_bool,
    "supplier_key": _opt_key_file,
    "query_delay": _float_range(0, math.inf),
    "query_interval": _float_range(0, math.inf, lo_open=True),
    "notify_delay": _float_range(0, math.inf),
    "response_timeout": _float_range(0, math.inf, lo_open=True),
    "max_retries": _int_range(0, 1000),
    "wait_interval": _float_range(0, math.inf, lo_open=True),
    "reboot_time": _float_range(0, math.inf),
    "self_activate_after": _int_range(0, 1000),
    "timeout_policy": _policy,
    "activation_policy": _policy,
    "activation_fails": _parse_bool,
    "security": _choice("install-code", "se"),
    "cbke_suite": _cbke_suite,
    "cbke_cert": _opt_blob,
    "cbke_key": _opt_blob,
    "cbke_ca": _opt_blob,
    "cbke_fail": _opt_fault,
    "ke_server_wait": _float_range(0, math.inf, lo_open=True),
    "ke_attempts": _int_range(1, 10),
    "ke_retry_delay": _float_range(0, math.inf),
    "ke_timeout": _float_range(0, math.inf, lo_open=True),
    "entity_id": _opt_entity_id,
    "gbcs_key": _opt_pem_file("an ECDSA P-256 private key", _load_gbcs_key),
    "gbcs_cert": _opt_pem_file("an X.509 certificate with an ECDSA P-256 key", _load_gbcs_cert),
    "supplier_id": _opt_entity_id,
    "acb_id": _opt_entity_id,
    "tunnel_busy": _int_range(0, 1000),
    "tunnel_no_ids": _int_range(0, 1000),
    "tunnel_drop": _int_range(0, 1000),
    "tunnel_refuse": _opt_tunnel_refuse,
    "sleepy_poll": _float_range(0, math.inf),
    "fast_poll": _float_range(0, math.inf, lo_open=True),
    "join_fast_poll": _float_range(0, math.inf),
    "loss": _float_range(0.0, 1.0),
    "hops": _int_range(1, 6),
    "link": _choice("instant", "realistic"),
    "nwk": _opt_int_range(0x0001, 0xFFF7),
    "seed": _opt_int_range(0, 2**63 - 1),
}

# Fields whose kind default is filled in __post_init__ must accept None before that.
for _name in ("manufacturer_code", "image_type", "file_version", "hardware_version", "max_data_size", "model"):
    _inner = _KEYS[_name]

    def _none_ok(key: str, raw: object, _inner: Callable[[str, object], Any] = _inner) -> Any:
        if raw is None:
            raise SimSpecError(key, raw, _inner.allowed)  # type: ignore[attr-defined]
        return _inner(key, raw)

    _none_ok.allowed = _inner.allowed  # type: ignore[attr-defined]
    _KEYS[_name] = _none_ok

if set(_KEYS) != {f.name for f in dataclasses.fields(SimDeviceSpec)} - {"kind", "ieee"}:  # pragma: no cover
    raise RuntimeError("spec.py: _KEYS and SimDeviceSpec fields disagree")


def allowed_keys() -> dict[str, str]:
    """Each key and what it allows, for ``--help`` texts."""
    return {key: parse.allowed for key, parse in _KEYS.items()}  # type: ignore[attr-defined]


def parse_sim_device(text: str) -> SimDeviceSpec:
    """Parse ``KIND:IEEE[:key=value...]`` (the CLI's ``--sim-device``).

    IEEE is 16 hex digits or 8 colon-separated hex pairs. The colon form collides with
    the separator, so it is read as the 8 tokens after KIND.
    """
    tokens = text.strip().split(":")
    kind = _choice(*KINDS)("kind", tokens[0])
    rest = tokens[1:]
    if not rest or rest == [""]:
        raise SimSpecError("ieee", "", "required after KIND: " + FORMS)
    if len(rest[0]) == 16:
        ieee = parse_ieee(rest[0])
        rest = rest[1:]
    else:
        ieee = parse_ieee(":".join(rest[:8]))
        rest = rest[8:]
    kwargs: dict[str, Any] = {}
    for token in rest:
        if not token.strip():
            continue  # tolerate "KIND:IEEE:" and "::"
        key, sep, raw = token.partition("=")
        key = key.strip().lower().replace("-", "_")
        if not sep:
            raise SimSpecError(token, None, "key=value with a known key: " + ", ".join(sorted(_KEYS)))
        if key in ("kind", "ieee") or key not in _KEYS:
            raise SimSpecError(key, raw, "a known key: " + ", ".join(sorted(_KEYS)))
        if key in kwargs:
            raise SimSpecError(key, raw, "given once")
        kwargs[key] = _KEYS[key](key, raw)
    return SimDeviceSpec(kind=kind, ieee=ieee, **kwargs)


class SimNetworkError(ValueError):
    """The simulated network as given cannot be built; the message says which entry and why."""


def sim_network(options: Sequence[str | SimDeviceSpec], tables: Sequence[Mapping[str, Any]], source: str = "config") -> list[SimDeviceSpec]:
    """``--sim-device`` options and ``[[sim_device]]`` tables as one network, each IEEE once.

    Errors name where the entry came from (``--sim-device #2``, ``SOURCE: [[sim_device]] #1``).
    """
    specs: list[tuple[str, SimDeviceSpec]] = []
    for i, item in enumerate(options):
        where = f"--sim-device #{i + 1}" if len(options) > 1 else "--sim-device"
        try:
            specs.append((where, item if isinstance(item, SimDeviceSpec) else parse_sim_device(item)))
        except SimSpecError as exc:
            raise SimNetworkError(f"{where}: {exc}") from None
    for i, table in enumerate(tables):
        where = f"{source}: [[sim_device]] #{i + 1}"
        try:
            specs.append((where, SimDeviceSpec.from_dict(table)))
        except SimSpecError as exc:
            raise SimNetworkError(f"{where}: {exc}") from None
    first: dict[t.EUI64, str] = {}
    for where, spec in specs:
        if spec.ieee in first:
            raise SimNetworkError(f"simulated device {spec.ieee} is given twice, by {first[spec.ieee]} and by {where}: give it once")
        first[spec.ieee] = where
    return [spec for _, spec in specs]

