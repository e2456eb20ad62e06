"""A byte cursor for the GBCS decoders.

Every short read raises the one private ``ShortRead``; ``refusing_short_reads`` is the
single place that turns it into a ``TruncatedCommand`` naming the offset and field
(aioquic's ``BufferReadError`` pattern). Offsets are absolute: a cursor over a part of
the input is created with that part's ``base`` offset, so errors point into the bytes
the caller actually passed.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from .errors import TruncatedCommand


class ShortRead(Exception):
    """A field needs more bytes than are left (internal; never leaves this package)."""

    def __init__(self, offset: int, field: str, needed: int, available: int) -> None:
        super().__init__(offset, field, needed, available)
        self.offset = offset
        self.field = field
        self.needed = needed
        self.available = available


@contextmanager
def refusing_short_reads() -> Iterator[None]:
    """Translate a cursor's ``ShortRead`` into the public ``TruncatedCommand``."""
    try:
        yield
    except ShortRead as exc:
        unit = "byte" if exc.needed == 1 else "bytes"
        raise TruncatedCommand(
            exc.offset, exc.field, f"truncated: needs {exc.needed} {unit}, {exc.available} left"
        ) from None


class Cursor:
    """Reads fields front to back from ``data``; ``base`` is ``data[0]``'s input offset."""

    def __init__(self, data: bytes, base: int = 0) -> None:
        self._data = bytes(data)
        self._pos = 0
        self._base = base

    @property
    def offset(self) -> int:
        """The input offset of the next unread byte."""
        return self._base + self._pos

    @property
    def remaining(self) -> int:
        return len(self._data) - self._pos

    def take(self, n: int, field: str) -> bytes:
        if n > self.remaining:
            raise ShortRead(self.offset, field, n, self.remaining)
        out = self._data[self._pos : self._pos + n]
        self._pos += n
        return out

    def u8(self, field: str) -> int:
        return self.take(1, field)[0]

    def uint(self, n: int, field: str) -> int:
        """An ``n``-byte big-endian unsigned integer."""
        return int.from_bytes(self.take(n, field), "big")

    def sub(self, n: int, field: str) -> Cursor:
        """The next ``n`` bytes as their own cursor, keeping absolute offsets."""
        start = self.offset
        return Cursor(self.take(n, field), base=start)

    def span(self, start: int, end: int) -> bytes:
        """Bytes between two input offsets inside this cursor (read or not)."""
        return self._data[start - self._base : end - self._base]

    def rest(self) -> bytes:
        """Everything unread (consumes it)."""
        out = self._data[self._pos :]
        self._pos = len(self._data)
        return out
