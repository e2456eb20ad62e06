"""The Key Establishment cluster's crypto suites: which curve and which sizes.

``bit`` is the suite's bit in the KeyEstablishmentSuite attribute and the suite field
of Initiate Key Establishment. ``SUITES`` is in the hub's default order of preference.
"""

from __future__ import annotations

from dataclasses import dataclass

from .curves import SECT163K1, SECT283K1, BinaryCurve
from .errors import SeError


@dataclass(frozen=True)
class Suite:
    number: int
    bit: int
    curve: BinaryCurve
    certificate_length: int
    point_length: int
    private_key_length: int
    name: str

    def __post_init__(self) -> None:
        if self.point_length != self.curve.point_length or self.private_key_length != self.curve.scalar_length:
            raise ValueError(f"suite {self.number}: sizes disagree with {self.curve.name}")


SUITE_1 = Suite(
    number=1, bit=0x0001, curve=SECT163K1, certificate_length=48, point_length=22,
    private_key_length=21, name="crypto suite 1 (sect163k1, 48-byte certificates)",
)  # fmt: skip
SUITE_2 = Suite(
    number=2, bit=0x0002, curve=SECT283K1, certificate_length=74, point_length=37,
    private_key_length=36, name="crypto suite 2 (sect283k1, 74-byte certificates)",
)  # fmt: skip

SUITES = (SUITE_2, SUITE_1)


def suite(number: int) -> Suite:
    for s in SUITES:
        if s.number == number:
            return s
    raise SeError(f"unknown crypto suite {number}: known are 1 (sect163k1) and 2 (sect283k1)")
