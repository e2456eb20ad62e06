"""A simulated SE device's own binary-field and Koblitz-curve arithmetic (SEC 2).

Written from SEC 1 (2.3, 3.4) and SEC 2 (3.1 sect163k1, 3.4 sect283k1), not from the
gateway: the point of the simulated device is to be an independent peer of the hub's
key establishment, so this is deliberately the textbook way and nothing faster:

* field elements of GF(2^m) are Python integers (bit i = coefficient of x^i), products
  by shift-and-add then reduction by the pentanomial, inverses by the extended
  Euclidean algorithm on polynomials;
* points are affine (x, y) tuples, ``None`` is the point at infinity; scalar
  multiplication is left-to-right double-and-add (not constant time: a lab peer only);
* point decompression solves z^2 + z = beta with the half-trace, which exists because
  m is odd for both curves.

A scalar multiplication costs about 0.05 s on sect163k1 and 0.25 s on sect283k1 here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

__all__ = [
    "Curve",
    "Point",
    "PointError",
    "SECT163K1",
    "SECT283K1",
]

Point = tuple[int, int] | None  # None: the point at infinity


class PointError(ValueError):
    """Bytes that are not a point of the curve (wrong length, prefix, or off the curve)."""


@dataclass(frozen=True, slots=True)
class Curve:
    """y^2 + xy = x^3 + a x^2 + b over GF(2^m) mod ``poly``; base point G of order n, cofactor h."""

    name: str
    m: int
    poly: int  # the reduction polynomial, including x^m
    a: int
    b: int
    gx: int
    gy: int
    n: int
    h: int

    # -- sizes on the wire ------------------------------------------------------------

    @property
    def field_bytes(self) -> int:
        return (self.m + 7) // 8

    @property
    def point_bytes(self) -> int:
        """A compressed point: 02/03 and x."""
        return 1 + self.field_bytes

    @property
    def scalar_bytes(self) -> int:
        return (self.n.bit_length() + 7) // 8

    @property
    def g(self) -> Point:
        return (self.gx, self.gy)

    # -- GF(2^m) ------------------------------------------------------------------------

    def reduce(self, c: int) -> int:
        m, f = self.m, self.poly
        while (top := c.bit_length() - 1) >= m:
            c ^= f << (top - m)
        return c

    def mul(self, x: int, y: int) -> int:
        acc = 0
        while y:
            if y & 1:
                acc ^= x
            x <<= 1
            y >>= 1
        return self.reduce(acc)

    def sqr(self, x: int) -> int:
        return self.mul(x, x)

    def inv(self, x: int) -> int:
        """x^-1 by the extended Euclidean algorithm: keeps g1*x = u and g2*x = v (mod f)."""
        if x == 0:
            raise ZeroDivisionError("0 has no inverse in GF(2^m)")
        u, v, g1, g2 = self.reduce(x), self.poly, 1, 0
        while u != 1:
            j = u.bit_length() - v.bit_length()
            if j < 0:
                u, v, g1, g2, j = v, u, g2, g1, -j
            u ^= v << j
            g1 ^= g2 << j
        return self.reduce(g1)

    def trace(self, c: int) -> int:
        t, s = 0, c
        for _ in range(self.m):
            t ^= s
            s = self.sqr(s)
        return t  # 0 or 1 (an element of GF(2))

    def half_trace(self, c: int) -> int:
        """H(c) = sum c^(2^2i), i = 0..(m-1)/2; a root of z^2 + z = c when Tr(c) = 0 and m odd."""
        h, s = 0, c
        for _ in range((self.m - 1) // 2 + 1):
            h ^= s
            s = self.sqr(self.sqr(s))
        return h

    # -- points -------------------------------------------------------------------------

    def on_curve(self, p: Point) -> bool:
        if p is None:
            return True
        x, y = p
        if x >> self.m or y >> self.m:
            return False
        left = self.sqr(y) ^ self.mul(x, y)
        right = self.mul(self.sqr(x), x) ^ self.mul(self.a, self.sqr(x)) ^ self.b
        return left == right

    def neg(self, p: Point) -> Point:
        return None if p is None else (p[0], p[0] ^ p[1])

    def add(self, p: Point, q: Point) -> Point:
        if p is None:
            return q
        if q is None:
            return p
        x1, y1 = p
        x2, y2 = q
        if x1 == x2:
            if y1 == y2:
                return self.double(p)
            return None  # q = -p
        lam = self.mul(y1 ^ y2, self.inv(x1 ^ x2))
        x3 = self.sqr(lam) ^ lam ^ x1 ^ x2 ^ self.a
        y3 = self.mul(lam, x1 ^ x3) ^ x3 ^ y1
        return (x3, y3)

    def double(self, p: Point) -> Point:
        if p is None or p[0] == 0:
            return None  # (0, y) is its own negative
        x1, y1 = p
        lam = x1 ^ self.mul(y1, self.inv(x1))
        x3 = self.sqr(lam) ^ lam ^ self.a
        y3 = self.sqr(x1) ^ self.mul(lam ^ 1, x3)
        return (x3, y3)

    def multiply(self, k: int, p: Point) -> Point:
        if k < 0:
            return self.multiply(-k, self.neg(p))
        acc: Point = None
        for bit in bin(k)[2:]:
            acc = self.double(acc)
            if bit == "1":
                acc = self.add(acc, p)
        return acc

    # -- SEC 1 2.3.3 / 2.3.4: compressed encoding ---------------------------------------

    def compress(self, p: Point) -> bytes:
        if p is None:
            raise PointError("the point at infinity has no compressed form here")
        x, y = p
        ybit = 0 if x == 0 else self.mul(y, self.inv(x)) & 1
        return bytes([2 | ybit]) + x.to_bytes(self.field_bytes, "big")

    def decompress(self, data: bytes) -> Point:
        if len(data) != self.point_bytes:
            raise PointError(f"{self.name} compressed point is {self.point_bytes} bytes, got {len(data)}")
        prefix = data[0]
        if prefix not in (2, 3):
            raise PointError(f"compressed point prefix 0x{prefix:02X} at offset 0, expected 0x02 or 0x03")
        x = int.from_bytes(data[1:], "big")
        if x >> self.m:
            raise PointError(f"x has bits above x^{self.m - 1}")
        if x == 0:
            y = self.b
            for _ in range(self.m - 1):  # sqrt(b) = b^(2^(m-1))
                y = self.sqr(y)
            p: Point = (0, y)
        else:
            beta = x ^ self.a ^ self.mul(self.b, self.inv(self.sqr(x)))
            if self.trace(beta):
                raise PointError(f"x = {data[1:].hex()} is not the x of a {self.name} point")
            z = self.half_trace(beta)
            if z & 1 != prefix & 1:
                z ^= 1
            p = (x, self.mul(x, z))
        if not self.on_curve(p):  # pragma: no cover - guaranteed by the algebra above
            raise PointError("decompressed point is not on the curve")
        return p


SECT163K1: Final = Curve(
    name="sect163k1",
    m=163,
    poly=(1 << 163) | (1 << 7) | (1 << 6) | (1 << 3) | 1,
    a=1,
    b=1,
    gx=0x02FE13C0537BBC11ACAA07D793DE4E6D5E5C94EEE8,
    gy=0x0289070FB05D38FF58321F2E800536D538CCDAA3D9,
    n=0x04000000000000000000020108A2E0CC0D99F8A5EF,
    h=2,
)

SECT283K1: Final = Curve(
    name="sect283k1",
    m=283,
    poly=(1 << 283) | (1 << 12) | (1 << 7) | (1 << 5) | 1,
    a=0,
    b=1,
    gx=0x0503213F78CA44883F1A3B8162F188E553CD265F23C1567A16876913B0C2AC2458492836,
    gy=0x01CCDA380F1C9E318D90F95D07E5426FE87E45C0E8184698E45962364E34116177DD2259,
    n=0x01FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFE9AE2ED07577265DFF7F94451E061E163C61,
    h=4,
)
