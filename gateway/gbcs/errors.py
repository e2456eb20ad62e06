"""The GBCS domain's one error base and its refusals.

``GbcsError`` is the only exception the GBCS layer lets out. Its two branches say who
is at fault, as h11 splits Local and Remote protocol errors:

- ``MalformedCommand`` (remote): the bytes we were handed are not a well-formed GBCS
  message. It names the byte ``offset`` into the input (after hex decoding, counted
  from the first byte, the ``DD`` or ``DF``), the ``field`` and what was wrong.
  ``TruncatedCommand``, ``TrailingBytes`` and ``UnknownCode`` are the kinds callers
  and tests most often need to tell apart.
- ``GbcsUsageError`` (local): the caller asked for something impossible (a naive
  execution time, a 31-byte hash, a key that is not P-256, an unreadable anchor).
"""

from __future__ import annotations


class GbcsError(Exception):
    """Base of every error the GBCS layer raises."""


class MalformedCommand(GbcsError):
    """The input is not a well-formed GBCS message; names the offset and field."""

    def __init__(self, offset: int, field: str, detail: str) -> None:
        self.offset = offset
        self.field = field
        self.detail = detail
        super().__init__(f"offset {offset}: {field}: {detail}")


class TruncatedCommand(MalformedCommand):
    """The input ended before a field it announces."""


class TrailingBytes(MalformedCommand):
    """Bytes follow the end of the message (or of a length-delimited part of it)."""


class UnknownCode(MalformedCommand):
    """A CRA flag outside command, response and alert (message codes are carried)."""


class GbcsUsageError(GbcsError):
    """The caller's request cannot be carried out (a local bug or bad configuration)."""
