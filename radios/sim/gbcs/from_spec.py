"""A device's `GbcsPeer` from its spec's GBCS options (spec.py's gbcs_* block).

Kept apart from spec.py, which only checks values: this reads the key files and makes
the identity. The spec is taken as a protocol (the attributes used), so this package
never imports spec.py.

- ``entity_id``: the device's GBCS entity id; default its IEEE address (written order).
- ``gbcs_key`` / ``gbcs_cert``: PEM files of its P-256 signing key and certificate; no
  key: a fresh one each time the device is built, with a self-signed certificate
  (``peer.certificate_pem`` prints it, for a hub or a test to trust); a key without
  certificate: a self-signed one for that key.
- ``supplier_key``: the supplier's PEM certificate or public key, the trust anchor for
  CS06 (and the image signature, ota_client.py); its entity id is the certificate's
  x500UniqueIdentifier, else ``supplier_id``, else the RTDS test supplier.
- ``acb_id``: where the PPMID's CS09 goes (default the RTDS Access Control Broker).
- ``file_version`` (the running one) is the GBCS firmware version, big-endian.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

from cryptography.hazmat.primitives.asymmetric import ec

from eui64 import Eui64

from .identity import generate_identity, load_anchor, load_identity
from .peer import DEFAULT_ACB_ID, DEFAULT_SUPPLIER_ID, GbcsPeer

__all__ = ["GbcsSpec", "peer_for_spec", "supplier_anchor"]


class GbcsSpec(Protocol):
    """What `peer_for_spec` reads from a `SimDeviceSpec`."""

    @property
    def kind(self) -> str: ...
    @property
    def ieee(self) -> bytes: ...  # zigpy's EUI64: over-the-air order
    @property
    def file_version(self) -> int | None: ...
    @property
    def activation_fails(self) -> bool: ...
    @property
    def supplier_key(self) -> str | None: ...
    @property
    def gbcs_key(self) -> str | None: ...
    @property
    def gbcs_cert(self) -> str | None: ...
    @property
    def entity_id(self) -> str | None: ...
    @property
    def supplier_id(self) -> str | None: ...
    @property
    def acb_id(self) -> str | None: ...


def _id(text: str | None, default: Eui64, field: str) -> Eui64:
    return default if text is None else Eui64.parse(text, field)


def supplier_anchor(path: str, supplier_id: str | None) -> tuple[Eui64, ec.EllipticCurvePublicKey]:
    """The supplier's entity id and key; a certificate naming another id than ``supplier_id`` is refused."""
    named, key = load_anchor(Path(path).read_bytes())
    given = None if supplier_id is None else Eui64.parse(supplier_id, "supplier_id")
    if named is not None and given is not None and named != given:
        raise ValueError(f"{path} names supplier {named.hex()}, not supplier_id {given.hex()}")
    return named or given or DEFAULT_SUPPLIER_ID, key


def peer_for_spec(spec: GbcsSpec) -> GbcsPeer:
    """The device's GBCS peer; reads its key files (ValueError / OSError if they do not do)."""
    entity = _id(spec.entity_id, Eui64.from_air(spec.ieee), "entity_id")
    name = f"simulated {spec.kind.upper()} {entity.hex()}"
    if spec.gbcs_key is None:
        identity = generate_identity(entity, name)
    else:
        cert = None if spec.gbcs_cert is None else Path(spec.gbcs_cert).read_bytes()
        identity = load_identity(entity, Path(spec.gbcs_key).read_bytes(), cert, name)
    suppliers: dict[Eui64, ec.EllipticCurvePublicKey] = {}
    if spec.supplier_key is not None:
        supplier, key = supplier_anchor(spec.supplier_key, spec.supplier_id)
        suppliers[supplier] = key
    return GbcsPeer(
        spec.kind,
        entity,
        identity.signing_key,
        identity.certificate,
        suppliers,
        (spec.file_version or 0).to_bytes(4, "big"),
        supplier_id=next(iter(suppliers)) if suppliers else _id(spec.supplier_id, DEFAULT_SUPPLIER_ID, "supplier_id"),
        acb_id=_id(spec.acb_id, DEFAULT_ACB_ID, "acb_id"),
        activation_fails=spec.activation_fails,
    )
