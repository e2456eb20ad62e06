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

from collections.abc import Iterable
from pathlib import Path
from typing import Protocol

from cryptography.hazmat.primitives.asymmetric import ec

from eui64 import Eui64

from .identity import GbcsIdentity, generate_identity, load_anchor, load_identity
from .peer import DEFAULT_ACB_ID, DEFAULT_SUPPLIER_ID, GbcsPeer

__all__ = ["GbcsSpec", "entity_for_spec", "identity_for_spec", "peer_for_spec", "suppliers_for_spec"]


class GbcsSpec(Protocol):
    """What `peer_for_spec` reads from a `SimDeviceSpec`."""

    @property
    def kind(self) -> str: ...
    @property
    def ieee(self) -> Iterable[int]: ...  # zigpy's EUI64: over-the-air order
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


def entity_for_spec(spec: GbcsSpec) -> Eui64:
    return _id(spec.entity_id, Eui64.from_air(spec.ieee), "entity_id")


def identity_for_spec(spec: GbcsSpec) -> GbcsIdentity:
    """The configured identity, or (no ``gbcs_key``) a fresh one; ValueError / OSError if the files do not fit."""
    entity = entity_for_spec(spec)
    name = f"simulated {spec.kind.upper()} {entity.hex()}"
    if spec.gbcs_key is None:
        return generate_identity(entity, name)
    cert = None if spec.gbcs_cert is None else Path(spec.gbcs_cert).read_bytes()
    return load_identity(entity, Path(spec.gbcs_key).read_bytes(), cert, name)


def suppliers_for_spec(spec: GbcsSpec) -> dict[Eui64, ec.EllipticCurvePublicKey]:
    """The supplier the device trusts, by entity id: the certificate's, else ``supplier_id``, else the RTDS one.

    A certificate naming another id than ``supplier_id`` is refused (ValueError).
    """
    if spec.supplier_key is None:
        return {}
    named, key = load_anchor(Path(spec.supplier_key).read_bytes())
    given = None if spec.supplier_id is None else Eui64.parse(spec.supplier_id, "supplier_id")
    if named is not None and given is not None and named != given:
        raise ValueError(f"{spec.supplier_key} names supplier {named.hex()}, not supplier_id {given.hex()}")
    return {named or given or DEFAULT_SUPPLIER_ID: key}


def peer_for_spec(spec: GbcsSpec) -> GbcsPeer:
    """The device's GBCS peer; build it once per device (it keeps counters and the held image)."""
    identity = identity_for_spec(spec)
    suppliers = suppliers_for_spec(spec)
    return GbcsPeer(
        spec.kind,
        identity.entity_id,
        identity.signing_key,
        identity.certificate,
        suppliers,
        (spec.file_version or 0).to_bytes(4, "big"),
        supplier_id=next(iter(suppliers)) if suppliers else _id(spec.supplier_id, DEFAULT_SUPPLIER_ID, "supplier_id"),
        acb_id=_id(spec.acb_id, DEFAULT_ACB_ID, "acb_id"),
        activation_fails=spec.activation_fails,
    )
