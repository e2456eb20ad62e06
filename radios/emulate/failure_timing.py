"""The emulators' ``--failure-timing NAME=VALUE,...`` option, read once for both.

Each emulator has its own model of how long its firmware takes to report a unicast it
could not deliver (radios/emulate/ezsp/failure_timing.py: EmberZNet's APS retries and
route discoveries; radios/emulate/znp/timing.py: Z-Stack's MAC, NWK and APS retries):
the names are that model's dataclass fields, so each emulator keeps its own. This
module only reads the text: ``NAME=VALUE`` parts, comma-joined or repeated, ``-`` or
``_`` in names, an integer for an ``int`` field and a number of seconds otherwise.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Collection, Iterable
from typing import Any, TypeVar

__all__ = ["TimingSpecError", "parse_failure_timing"]

T = TypeVar("T")


class TimingSpecError(ValueError):
    """A ``--failure-timing`` option that cannot be read (names the part and why)."""


def parse_failure_timing(model: type[T], specs: str | Iterable[str] | None, *,
                         fixed: Collection[str] = ("scale",), **given: Any) -> T:
    """``model`` (a dataclass) built from ``specs`` and ``given`` (e.g. ``scale``).

    The settable names are ``model``'s fields less ``fixed`` (what the emulator sets
    itself); an error names the part, the key and the allowed names. A value the model
    itself refuses (its ``__post_init__``) comes back as a `TimingSpecError` too.
    """
    # The field types are strings here (``from __future__ import annotations``).
    fields = {f.name: f.type for f in dataclasses.fields(model) if f.name not in fixed}  # type: ignore[arg-type]
    texts: list[str] = [] if specs is None else [specs] if isinstance(specs, str) else list(specs)
    values: dict[str, float | int] = {}
    for text in texts:
        for part in filter(None, (p.strip() for p in text.split(","))):
            name, sep, raw = part.partition("=")
            name = name.strip().replace("-", "_")
            if not sep or name not in fields:
                what = f"unknown key {name!r}" if sep else "no '='"
                raise TimingSpecError(f"failure timing {part!r}: {what}; give NAME=VALUE with NAME one of {', '.join(fields)}")
            whole = fields[name] in (int, "int")
            try:
                number: float | int = int(raw, 0) if whole else float(raw)
            except ValueError:
                kind = " (a whole number)" if whole else ""
                raise TimingSpecError(f"failure timing {part!r}: {name}: {raw.strip()!r} is not a number{kind}") from None
            if number < 0 or not math.isfinite(number):
                raise TimingSpecError(f"failure timing {part!r}: {name} must not be negative (a finite number)")
            values[name] = number
    try:
        return model(**given, **values)
    except ValueError as exc:
        raise TimingSpecError(f"failure timing: {exc}") from None
