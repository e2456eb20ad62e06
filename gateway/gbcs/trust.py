"""Trust anchors: which public key speaks for which GBCS entity.

A device holds its suppliers' digital-signing keys as trust anchors and checks
signatures against them; it never looks at a certificate's validity dates (the
reference supplier certificate expired in 2025 and must still verify). So a
certificate is only a carrier for a P-256 public key and, in GB smart-metering
organisation certificates, the entity id in the subject's x500UniqueIdentifier
(a BIT STRING ``00 || EUI-64``).
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from .errors import GbcsUsageError
from .ids import EntityId
from .keys import load_verifying_pem, p256_public_key as p256_public_key, read_pem


@dataclass(frozen=True)
class TrustAnchor:
    """A P-256 public key, with the entity id its certificate names (if any)."""

    public_key: ec.EllipticCurvePublicKey
    entity_id: EntityId | None = None
    subject: str | None = None  # the certificate subject, for display
    role: str | None = None  # the certificate's GBCS role (subject OU), e.g. "02" Supplier
    source: str | None = None  # the file it was read from, for messages


def entity_id_of(cert: x509.Certificate) -> EntityId | None:
    """The entity id in a GB organisation certificate's x500UniqueIdentifier, if any."""
    for attr in cert.subject.get_attributes_for_oid(NameOID.X500_UNIQUE_IDENTIFIER):
        value = attr.value
        # BIT STRING contents: one "unused bits" byte (0) then the 8-byte EUI-64.
        if isinstance(value, bytes) and len(value) == 9 and value[0] == 0:
            return EntityId(value[1:])
    return None


# GBCS organisation certificates carry the remote party role in the subject's OU.
SUPPLIER_ROLE = "02"
ROLE_NAMES = {SUPPLIER_ROLE: "Supplier", "04": "Access Control Broker"}


def role_of(cert: x509.Certificate) -> str | None:
    """The GBCS role in a certificate's subject OU (``"02"`` for a supplier), if any."""
    for attr in cert.subject.get_attributes_for_oid(NameOID.ORGANIZATIONAL_UNIT_NAME):
        if isinstance(attr.value, str):
            return attr.value.strip()
    return None


def describe_role(role: str | None) -> str:
    if role is None:
        return "no role (no subject OU)"
    name = ROLE_NAMES.get(role)
    return f"role OU={role}" + (f" ({name})" if name else "")


def load_anchor(pem: bytes, *, source: str | None = None) -> TrustAnchor:
    """A trust anchor from a PEM certificate or PEM public key (dates are ignored).

    ``source`` names where the PEM came from in refusals (``read_anchor`` passes the path).
    """
    key, cert = load_verifying_pem(pem, source=source)
    if cert is None:
        return TrustAnchor(key, source=source)
    return TrustAnchor(key, entity_id_of(cert), cert.subject.rfc4514_string(), role_of(cert), source)


def read_anchor_file(path: str | Path) -> bytes:
    """A trust anchor file's PEM bytes, or a GbcsUsageError naming the file."""
    return read_pem(path, "trust anchor")


def read_anchor(path: str | Path) -> TrustAnchor:
    """``load_anchor`` on a file's contents; every refusal names the file."""
    return load_anchor(read_anchor_file(path), source=os.fspath(path))


class TrustStore(Mapping[EntityId, ec.EllipticCurvePublicKey]):
    """Entity id -> the public key its commands must verify against. Immutable."""

    __slots__ = ("_anchors",)

    def __init__(self, anchors: Mapping[EntityId, ec.EllipticCurvePublicKey] | None = None) -> None:
        checked: dict[EntityId, ec.EllipticCurvePublicKey] = {}
        for entity, key in (anchors or {}).items():
            if not isinstance(entity, EntityId):
                raise GbcsUsageError(f"trust store keys are EntityId, got {entity!r}")
            checked[entity] = p256_public_key(key, f"anchor for {entity}")
        self._anchors: Mapping[EntityId, ec.EllipticCurvePublicKey] = MappingProxyType(checked)

    def __repr__(self) -> str:
        return f"TrustStore({', '.join(str(e) for e in self._anchors)})"

    def __getitem__(self, entity: EntityId) -> ec.EllipticCurvePublicKey:
        return self._anchors[entity]

    def __iter__(self) -> Iterator[EntityId]:
        return iter(self._anchors)

    def __len__(self) -> int:
        return len(self._anchors)

    def with_anchor(self, entity: EntityId, key: ec.EllipticCurvePublicKey) -> TrustStore:
        return TrustStore({**self._anchors, entity: key})

    @classmethod
    def from_anchors(cls, anchors: Mapping[EntityId, TrustAnchor]) -> TrustStore:
        """From anchors already read, keyed by the entity each is configured for.

        A certificate naming a different entity id than its key here is refused: that
        is a configuration mistake that would hand one supplier another's authority.
        """
        keys: dict[EntityId, ec.EllipticCurvePublicKey] = {}
        for entity, anchor in anchors.items():
            if anchor.entity_id is not None and anchor.entity_id != entity:
                where = "" if anchor.source is None else f"{anchor.source}: "
                raise GbcsUsageError(f"{where}anchor configured for {entity} names entity {anchor.entity_id}")
            keys[entity] = anchor.public_key
        return cls(keys)

    @classmethod
    def from_pem(cls, anchors: Mapping[EntityId, bytes]) -> TrustStore:
        """From PEM certificates or public keys keyed by entity id (as ``from_anchors``)."""
        return cls.from_anchors({entity: load_anchor(pem) for entity, pem in anchors.items()})

    @classmethod
    def from_files(cls, anchors: Mapping[EntityId, str | Path]) -> TrustStore:
        """As ``from_pem``, reading each file; refusals name the file."""
        return cls.from_anchors({entity: read_anchor(path) for entity, path in anchors.items()})

    @classmethod
    def from_certificates(cls, pems: list[bytes]) -> TrustStore:
        """From certificates that each name their entity id (x500UniqueIdentifier)."""
        keys: dict[EntityId, ec.EllipticCurvePublicKey] = {}
        for pem in pems:
            anchor = load_anchor(pem)
            if anchor.entity_id is None:
                raise GbcsUsageError(f"certificate {anchor.subject or '(public key)'} names no entity id")
            keys[anchor.entity_id] = anchor.public_key
        return cls(keys)
