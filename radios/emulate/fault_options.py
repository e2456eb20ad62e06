"""The emulators' fault option strings (``--fault`` of ``han-ota emulate``), read once for both.

Form: ``NAME=N`` or, where the emulator allows it, ``NAME=N:DETAIL`` (the ZNP
emulator's ``fail-deliveries=3:APS_NO_ACK``). Several options come as a list, or joined
with commas (``"fail-deliveries=3,reset-after-frames=200"``). N is an integer in any
Python base (``0x10``). Names are case-insensitive. What an option does is the
emulator's business (radios/emulate/ezsp/faults.py, radios/emulate/znp/faults.py):
each says which names it knows, the smallest N for each, and which take a DETAIL.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
import dataclasses

__all__ = ["FaultOption", "FaultSpecError", "parse_fault_options"]


class FaultSpecError(ValueError):
    """An option string could not be parsed; the message names the option."""


@dataclasses.dataclass(frozen=True, slots=True)
class FaultOption:
    name: str  # lower case, as listed by the emulator
    count: int
    detail: str | None  # the text after ':', if the option had one
    text: str  # the option as given, for messages


def parse_fault_options(
    options: str | Iterable[str] | None,
    *,
    known: Mapping[str, int],
    with_detail: frozenset[str] = frozenset(),
) -> list[FaultOption]:
    """Every option in ``options``, in order; `FaultSpecError` for the first bad one.

    ``known`` maps each option name to its smallest N; ``with_detail`` names the options
    that may carry ``:DETAIL``.
    """
    if options is None:
        return []
    chunks = [options] if isinstance(options, str) else list(options)
    parsed: list[FaultOption] = []
    for chunk in chunks:
        for item in chunk.split(","):
            item = item.strip()
            if item:
                parsed.append(_parse_one(item, known, with_detail))
    return parsed


def _parse_one(item: str, known: Mapping[str, int], with_detail: frozenset[str]) -> FaultOption:
    name, sep, value = item.partition("=")
    name = name.strip().lower()
    if not sep:
        raise FaultSpecError(f"fault option {item!r}: expected NAME=N")
    if name not in known:
        raise FaultSpecError(f"fault option {item!r}: unknown fault {name!r} (known: {', '.join(known)})")
    number, colon, detail = value.strip().partition(":")
    if colon and name not in with_detail:
        raise FaultSpecError(f"fault option {item!r}: {name} takes no ':' detail")
    try:
        count = int(number, 0)
    except ValueError:
        raise FaultSpecError(f"fault option {item!r}: {number!r} is not a number") from None
    if count < known[name]:
        raise FaultSpecError(f"fault option {item!r}: N must be >= {known[name]}, got {count}")
    return FaultOption(name=name, count=count, detail=detail.strip() if colon else None, text=item)
