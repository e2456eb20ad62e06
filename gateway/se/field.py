"""GF(2^m) arithmetic in a polynomial basis, on plain Python integers.

An element is an ``int`` whose bit i is the coefficient of x^i. Addition is XOR. The
costly operation is the carry-less product; Python has none, so ``mul`` walks the hex
digits of one operand against a 16-entry table of the other's multiples (a 4-bit window:
about a tenth of the interpreter steps of bit-by-bit shift-and-add). Squaring in
characteristic 2 only spreads the bits apart (``(sum a_i x^i)^2 = sum a_i x^2i``), done
by interleaving zeros into the binary string. Reduction folds the bits above x^m back
with the low terms of the (trinomial or pentanomial) reduction polynomial.

Not constant-time: this serves a lab trust center in Python, where timing is hidden by
neither the interpreter nor the integers.
"""

from __future__ import annotations


class BinaryField:
    """GF(2^m) with reduction polynomial ``poly`` (an int with bit m set)."""

    __slots__ = ("m", "poly", "_mask", "_taps")

    def __init__(self, m: int, poly: int) -> None:
        if poly.bit_length() != m + 1:
            raise ValueError(f"reduction polynomial of degree {poly.bit_length() - 1}, field needs {m}")
        self.m = m
        self.poly = poly
        self._mask = (1 << m) - 1
        low = poly ^ (1 << m)
        self._taps = tuple(i for i in range(low.bit_length()) if low >> i & 1)
        if not self._taps or max(self._taps) * 2 >= m:
            # Two folds must finish a reduction of a 2m-bit product.
            raise ValueError("reduction polynomial's low terms too high for two folds")

    def reduce(self, c: int) -> int:
        m = self.m
        mask = self._mask
        taps = self._taps
        hi = c >> m
        while hi:
            c &= mask
            for t in taps:
                c ^= hi << t
            hi = c >> m
        return c

    def mul(self, a: int, b: int) -> int:
        a2 = a << 1
        a3 = a2 ^ a
        a4 = a << 2
        a5 = a4 ^ a
        a6 = a4 ^ a2
        a7 = a6 ^ a
        a8 = a << 3
        table = {
            "0": 0, "1": a, "2": a2, "3": a3, "4": a4, "5": a5, "6": a6, "7": a7,
            "8": a8, "9": a8 ^ a, "a": a8 ^ a2, "b": a8 ^ a3,
            "c": a8 ^ a4, "d": a8 ^ a5, "e": a8 ^ a6, "f": a8 ^ a7,
        }  # fmt: skip
        r = 0
        for digit in f"{b:x}":
            r = (r << 4) ^ table[digit]
        return self.reduce(r)

    def sqr(self, a: int) -> int:
        return self.reduce(int("0".join(f"{a:b}"), 2))

    def inv(self, a: int) -> int:
        """The inverse by the extended Euclidean algorithm on polynomials."""
        if a == 0:
            raise ZeroDivisionError("0 has no inverse in GF(2^m)")
        u, v = a, self.poly
        g1, g2 = 1, 0
        while u != 1:
            if u == 0:  # gcd(a, poly) != 1: a was not reduced, or poly is not irreducible
                raise ZeroDivisionError(f"{a:#x} has no inverse modulo {self.poly:#x}")
            j = u.bit_length() - v.bit_length()
            if j < 0:
                u, v = v, u
                g1, g2 = g2, g1
                j = -j
            u ^= v << j
            g1 ^= g2 << j
        return g1

    def trace(self, a: int) -> int:
        """Tr(a) = a + a^2 + a^4 + ... + a^(2^(m-1)), which is 0 or 1."""
        t = a
        s = a
        for _ in range(self.m - 1):
            s = self.sqr(s)
            t ^= s
        return t

    def half_trace(self, c: int) -> int:
        """H(c) = sum of c^(4^i), i = 0..(m-1)/2: for odd m, z = H(c) solves z^2 + z = c when Tr(c) = 0."""
        if self.m % 2 == 0:
            raise ValueError("the half-trace solves z^2 + z = c only for odd m")
        z = c
        s = c
        for _ in range((self.m - 1) // 2):
            s = self.sqr(self.sqr(s))
            z ^= s
        return z

    def sqrt(self, a: int) -> int:
        """The unique square root: a^(2^(m-1)) (squaring is a bijection in characteristic 2)."""
        for _ in range(self.m - 1):
            a = self.sqr(a)
        return a
