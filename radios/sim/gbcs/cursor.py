"""Reading GBCS bytes: one cursor, one error naming field and offset.

Every reader in this package takes bytes through `Cursor`; a short read, a wrong
fixed byte or a value out of range raises `GbcsReadError(field, offset, detail)`, so a
refusal always says which field and where (offsets count from the start of the
message the caller handed in).
"""

from __future__ import annotations

__all__ = ["Cursor", "GbcsReadError"]


class GbcsReadError(ValueError):
    """Bytes that are not the GBCS message a simulated device expects."""

    def __init__(self, field: str, offset: int, detail: str) -> None:
        self.field = field
        self.offset = offset
        self.detail = detail
        super().__init__(f"GBCS: {field} at offset {offset}: {detail}")


class Cursor:
    """A read position in ``data``; ``base`` is where ``data`` sits in the whole message."""

    __slots__ = ("_data", "_pos", "_base")

    def __init__(self, data: bytes, base: int = 0) -> None:
        self._data = data
        self._pos = 0
        self._base = base

    @property
    def offset(self) -> int:
        """The current position, counted in the whole message."""
        return self._base + self._pos

    @property
    def remaining(self) -> int:
        return len(self._data) - self._pos

    def take(self, n: int, field: str) -> bytes:
        if n > self.remaining:
            raise GbcsReadError(field, self.offset, f"needs {n} byte{'s' if n != 1 else ''}, {self.remaining} left")
        out = self._data[self._pos : self._pos + n]
        self._pos += n
        return out

    def byte(self, field: str) -> int:
        return self.take(1, field)[0]

    def expect(self, value: int, field: str) -> None:
        at = self.offset
        got = self.byte(field)
        if got != value:
            raise GbcsReadError(field, at, f"expected 0x{value:02X}, got 0x{got:02X}")

    def sub(self, n: int, field: str) -> Cursor:
        """The next ``n`` bytes as their own cursor (offsets still in the whole message)."""
        at = self.offset
        return Cursor(self.take(n, field), at)

    def span(self, start: int, end: int) -> bytes:
        """The bytes between two offsets (in the whole message) that this cursor covers."""
        return self._data[start - self._base : end - self._base]

    def end(self, what: str) -> None:
        """Refuse bytes left over after ``what``."""
        if self.remaining:
            raise GbcsReadError(what, self.offset, f"{self.remaining} trailing byte{'s' if self.remaining != 1 else ''}")
