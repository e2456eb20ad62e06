"""Binary-field Koblitz curves y^2 + xy = x^3 + ax^2 + b over GF(2^m): sect163k1, sect283k1.

Parameters are SEC 2 v2 (2010) section 3; the tests check that G is on its curve and
that n*G is the point at infinity, so a mistyped constant cannot pass.

Points are affine ``(x, y)`` tuples of field elements, ``None`` for the point at
infinity. Scalar multiplication is the López-Dahab Montgomery ladder (1999): it carries
only X/Z of kP and (k+1)P, whose difference is always P, costs about five field
products per bit with no inversion, and recovers y once at the end. ``add`` is affine
(one inversion), used once or twice per operation, never in a loop.

Compressed points are SEC 1 section 2.3.3: 02 or 03, then x in ceil(m/8) bytes; the
prefix's low bit is the low bit of y/x (0 for x = 0). Decompression solves
z^2 + z = x + a + b/x^2 by the half-trace (m is odd for both curves) and y = x*z.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from .errors import PointError
from .field import BinaryField

Point = tuple[int, int] | None


@dataclass(frozen=True)
class BinaryCurve:
    name: str
    m: int
    poly: int
    a: int
    b: int
    gx: int
    gy: int
    n: int
    h: int
    field: BinaryField = dataclasses.field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "field", BinaryField(self.m, self.poly))

    @property
    def generator(self) -> tuple[int, int]:
        return (self.gx, self.gy)

    @property
    def element_length(self) -> int:
        """Bytes of a field element (an x coordinate, the shared secret Z)."""
        return (self.m + 7) // 8

    @property
    def point_length(self) -> int:
        """Bytes of a compressed point: 22 for sect163k1, 37 for sect283k1."""
        return 1 + self.element_length

    @property
    def scalar_length(self) -> int:
        """Bytes of a private key (an integer below n): 21 / 36."""
        return (self.n.bit_length() + 7) // 8

    # -- affine group law -------------------------------------------------------------

    def is_on_curve(self, p: Point) -> bool:
        if p is None:
            return True
        x, y = p
        f = self.field
        if x >> self.m or y >> self.m or x < 0 or y < 0:
            return False
        x2 = f.sqr(x)
        lhs = f.sqr(y) ^ f.mul(x, y)
        rhs = f.mul(x2, x) ^ f.mul(self.a, x2) ^ self.b
        return lhs == rhs

    def negate(self, p: Point) -> Point:
        if p is None:
            return None
        return (p[0], p[0] ^ p[1])

    def add(self, p: Point, q: Point) -> Point:
        if p is None:
            return q
        if q is None:
            return p
        f = self.field
        x1, y1 = p
        x2, y2 = q
        if x1 == x2:
            if y1 != y2 or x1 == 0:  # q == -p (x = 0 is the point of order 2)
                return None
            lam = x1 ^ f.mul(y1, f.inv(x1))
            x3 = f.sqr(lam) ^ lam ^ self.a
            return (x3, f.sqr(x1) ^ f.mul(lam ^ 1, x3))
        lam = f.mul(y1 ^ y2, f.inv(x1 ^ x2))
        x3 = f.sqr(lam) ^ lam ^ x1 ^ x2 ^ self.a
        return (x3, f.mul(lam, x1 ^ x3) ^ x3 ^ y1)

    # -- scalar multiplication -------------------------------------------------------

    def multiply(self, k: int, p: Point) -> Point:
        """k*p for any integer k and any point p of this curve (k is not reduced mod n:
        p may lie outside the order-n subgroup, as a peer's point may)."""
        if k < 0:
            return self.multiply(-k, self.negate(p))
        if k == 0 or p is None:
            return None
        x, y = p
        if x == 0:  # (0, sqrt(b)) has order 2
            return p if k & 1 else None
        f = self.field
        mul = f.mul
        sqr = f.sqr
        b = self.b
        # (x1 : z1) = jP, (x2 : z2) = (j+1)P, starting at j = 1.
        x1, z1 = x, 1
        z2 = sqr(x)
        x2 = sqr(z2) ^ b
        for i in range(k.bit_length() - 2, -1, -1):
            t1 = mul(x1, z2)
            t2 = mul(x2, z1)
            if k >> i & 1:
                # j -> 2j+1: (x1, z1) = jP + (j+1)P, (x2, z2) = 2(j+1)P
                z1 = sqr(t1 ^ t2)
                x1 = mul(x, z1) ^ mul(t1, t2)
                x2, z2 = self._double_xz(x2, z2)
            else:
                z2 = sqr(t1 ^ t2)
                x2 = mul(x, z2) ^ mul(t1, t2)
                x1, z1 = self._double_xz(x1, z1)
        if z1 == 0:
            return None
        if z2 == 0:  # (k+1)P = O, so kP = -P
            return (x, x ^ y)
        # y from x(kP), x((k+1)P) and P (López-Dahab's Mxy).
        z1z2 = mul(z1, z2)
        xk = mul(x1, f.inv(z1))
        s = mul(x1 ^ mul(x, z1), x2 ^ mul(x, z2)) ^ mul(sqr(x) ^ y, z1z2)
        yk = mul(mul(x ^ xk, s), f.inv(mul(x, z1z2))) ^ y
        return (xk, yk)

    def _double_xz(self, x: int, z: int) -> tuple[int, int]:
        """2(X : Z) = (X^4 + b Z^4 : X^2 Z^2)."""
        f = self.field
        if self.b == 1:  # X^4 + Z^4 = (X + Z)^4 in characteristic 2
            return f.sqr(f.sqr(x ^ z)), f.sqr(f.mul(x, z))
        x2 = f.sqr(x)
        z2 = f.sqr(z)
        return f.sqr(x2) ^ f.mul(self.b, f.sqr(z2)), f.mul(x2, z2)

    def multiply_base(self, k: int) -> Point:
        return self.multiply(k % self.n, self.generator)

    # -- SEC 1 compressed points -----------------------------------------------------

    def compress(self, p: Point) -> bytes:
        if p is None:
            raise PointError(f"{self.name}: the point at infinity has no compressed form")
        x, y = p
        ybit = 0 if x == 0 else self.field.mul(y, self.field.inv(x)) & 1
        return bytes([2 | ybit]) + x.to_bytes(self.element_length, "big")

    def decompress(self, data: bytes) -> tuple[int, int]:
        if len(data) != self.point_length:
            raise PointError(f"{self.name} compressed point: {len(data)} bytes, needs {self.point_length}")
        prefix = data[0]
        if prefix not in (2, 3):
            raise PointError(f"{self.name} compressed point: prefix 0x{prefix:02X}, must be 0x02 or 0x03")
        x = int.from_bytes(data[1:], "big")
        if x >> self.m:
            raise PointError(f"{self.name} compressed point: x has more than {self.m} bits")
        f = self.field
        if x == 0:
            if prefix != 2:
                raise PointError(f"{self.name} compressed point: x = 0 needs prefix 0x02")
            return (0, f.sqrt(self.b))
        beta = x ^ self.a ^ f.mul(self.b, f.inv(f.sqr(x)))
        z = f.half_trace(beta)
        if f.sqr(z) ^ z != beta:
            raise PointError(f"{self.name} compressed point: x = {data[1:].hex().upper()} is not on the curve")
        if z & 1 != prefix & 1:
            z ^= 1
        return (x, f.mul(x, z))


def _poly(*exponents: int) -> int:
    return sum(1 << e for e in exponents)


SECT163K1 = BinaryCurve(
    name="sect163k1",
    m=163,
    poly=_poly(163, 7, 6, 3, 0),
    a=1,
    b=1,
    gx=0x02_FE13C053_7BBC11AC_AA07D793_DE4E6D5E_5C94EEE8,
    gy=0x02_89070FB0_5D38FF58_321F2E80_0536D538_CCDAA3D9,
    n=0x04_00000000_00000000_00020108_A2E0CC0D_99F8A5EF,
    h=2,
)

SECT283K1 = BinaryCurve(
    name="sect283k1",
    m=283,
    poly=_poly(283, 12, 7, 5, 0),
    a=0,
    b=1,
    gx=0x0503213F_78CA4488_3F1A3B81_62F188E5_53CD265F_23C1567A_16876913_B0C2AC24_58492836,
    gy=0x01CCDA38_0F1C9E31_8D90F95D_07E5426F_E87E45C0_E8184698_E4596236_4E341161_77DD2259,
    n=0x01FFFFFF_FFFFFFFF_FFFFFFFF_FFFFFFFF_FFFFE9AE_2ED07577_265DFF7F_94451E06_1E163C61,
    h=4,
)
