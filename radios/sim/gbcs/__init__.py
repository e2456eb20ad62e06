"""The simulated devices' own GBCS: reader, signer, contents, identity and the peer.

Written from the GBCS layouts (tests/data/gbcs/VECTORS.md) with `cryptography` only;
never from the gateway's gateway/gbcs (radios/ never imports gateway/). Sans-I/O:
bytes and POSIX UTC time in, bytes and decisions out (peer.py says how).
"""

from __future__ import annotations

from .cursor import GbcsReadError
from .from_spec import peer_for_spec
from .identity import GbcsIdentity, generate_identity, load_identity
from .image_hash import manufacturer_image_hash, receipt_hash
from .peer import GbcsPeer, PeerOutput
from .reader import SignedMessage, read_message, signature_verifies

__all__ = [
    "GbcsIdentity",
    "GbcsPeer",
    "GbcsReadError",
    "PeerOutput",
    "SignedMessage",
    "generate_identity",
    "load_identity",
    "manufacturer_image_hash",
    "peer_for_spec",
    "read_message",
    "receipt_hash",
    "signature_verifies",
]
