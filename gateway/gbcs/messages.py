"""Any GBCS message the hub sees, read once into a typed ``MessageInfo``.

The hub keeps every message it emits, forwards or receives (commands, responses,
alerts). ``read_message`` parses with the one parser (``command.decode_command``,
over ``apdu`` and ``cursor``) and checks the signature against the keys the hub knows:
its suppliers' anchors, its own certificate, the devices' certificates. A message that
does not parse is still kept: ``read_message`` then returns ``MessageInfo`` with the
parse refusal and no header fields, since the bytes are the record.
"""

from __future__ import annotations

import datetime as dt
import enum
from collections.abc import Mapping
from dataclasses import dataclass, field

from .codes import CraFlag, MessageCode
from .command import decode_command
from .errors import MalformedCommand, TrailingBytes
from .ids import EntityId
from .trust import TrustStore
from .verify import signature_valid


class SignatureVerdict(enum.Enum):
    """What the hub can say of a message's signature (values are the JSON strings)."""

    VALID = "valid"  # verifies with the originator's known key
    INVALID = "invalid"  # the originator's key is known and the signature does not verify
    UNKNOWN_SIGNER = "unknown signer"  # signed, but no key is known for the originator
    UNSIGNED = "unsigned"  # signature length 00 (e.g. the hub's own without a [hub] key)
    MALFORMED = "malformed"  # the bytes are not a GBCS message


@dataclass(frozen=True)
class MessageInfo:
    """The header fields of one message, its content and the signature verdict."""

    data: bytes = field(repr=False)
    verdict: SignatureVerdict
    message_code: MessageCode | int | None = None
    cra_flag: CraFlag | None = None
    originator: EntityId | None = None
    recipient: EntityId | None = None
    counter: int | None = None
    date_time: dt.datetime | None = None  # the header's COSEM date-time, when readable
    content: bytes | None = field(default=None, repr=False)
    signature: bytes | None = field(default=None, repr=False)
    ciphered: bool = False
    error: str | None = None  # the parse refusal, for MALFORMED

    def to_dict(self) -> Mapping[str, object]:
        """Plain JSON values (hex for bytes, written hex for entity ids)."""
        return {
            "code": None if self.message_code is None else int(self.message_code),
            "cra": None if self.cra_flag is None else self.cra_flag.name.lower(),
            "originator": None if self.originator is None else str(self.originator),
            "recipient": None if self.recipient is None else str(self.recipient),
            "counter": self.counter,
            "date_time": None if self.date_time is None else self.date_time.isoformat(),
            "signature": self.verdict.value,
            "ciphered": self.ciphered,
            "error": self.error,
            "hex": self.data.hex().upper(),
        }


def read_message(data: bytes, known: TrustStore | None = None) -> MessageInfo:
    """Parse ``data`` (one whole message, raw bytes) and judge its signature with ``known``."""
    data = bytes(data)
    try:
        command, rest = decode_command(data)
        if rest:
            raise TrailingBytes(len(data) - len(rest), "end of message", f"{len(rest)} trailing bytes")
    except MalformedCommand as exc:
        return MessageInfo(data, SignatureVerdict.MALFORMED, error=str(exc))
    apdu = command.apdu
    return MessageInfo(
        data=data,
        verdict=judge_signature(apdu.originator, apdu.signed_data, apdu.signature, known),
        message_code=apdu.message_code,
        cra_flag=apdu.cra_flag,
        originator=apdu.originator,
        recipient=apdu.recipient,
        counter=apdu.counter,
        date_time=None if apdu.date_time is None else apdu.date_time.as_datetime(),
        content=apdu.content,
        signature=apdu.signature,
        ciphered=command.ciphered,
    )


def judge_signature(
    originator: EntityId, signed_data: bytes, signature: bytes | None, known: TrustStore | None
) -> SignatureVerdict:
    if signature is None:
        return SignatureVerdict.UNSIGNED
    key = None if known is None else known.get(originator)
    if key is None:
        return SignatureVerdict.UNKNOWN_SIGNER
    return SignatureVerdict.VALID if signature_valid(key, signed_data, signature) else SignatureVerdict.INVALID
