"""Push priorities (issue 15): what a number or a name means, and who gives way.

A priority is a whole number from 0 to 9, higher is more important; ``low``, ``normal``
and ``high`` name 1, 5 and 9. A new push to a device that already has a job:

* higher than the job's priority, or equal with ``replace``: the job is superseded
  (it ends SUPERSEDED, the device is made to discard its image) and the new push is
  served (``Admission.SUPERSEDE``);
* lower: the new push waits, queued, until the device is free (``Admission.QUEUE``);
* equal without ``replace``: refused, as a second push to a busy device always was
  (``Admission.REFUSE``): the caller says which one it wants.

A job whose activation was already sent cannot be superseded (the device is applying
its image): any new push queues behind it. Pure: no I/O, no clock.
"""

from __future__ import annotations

import enum

MIN_PRIORITY = 0
MAX_PRIORITY = 9
PRIORITY_NAMES = {"low": 1, "normal": 5, "high": 9}
DEFAULT_PRIORITY = PRIORITY_NAMES["normal"]


class PriorityError(ValueError):
    """A priority that is neither a name nor a whole number in range; the message says which are."""


def parse_priority(value: object, what: str = "priority") -> int:
    """A priority from a name (any case), a number or a number's text; raises ``PriorityError``."""
    if isinstance(value, str):
        text = value.strip().lower()
        if text in PRIORITY_NAMES:
            return PRIORITY_NAMES[text]
        if text.lstrip("-").isdigit():
            value = int(text)
    if isinstance(value, int) and not isinstance(value, bool) and MIN_PRIORITY <= value <= MAX_PRIORITY:
        return value
    names = ", ".join(f"{k} ({v})" for k, v in PRIORITY_NAMES.items())
    raise PriorityError(f"{what} {value!r} is not a priority: give {MIN_PRIORITY} to {MAX_PRIORITY} (higher is more important) or one of {names}")


def priority_label(priority: int) -> str:
    """``high (9)``, or the number alone when it has no name."""
    for name, number in PRIORITY_NAMES.items():
        if number == priority:
            return f"{name} ({number})"
    return str(priority)


class Admission(enum.Enum):
    START = "start"  # the device is free
    SUPERSEDE = "supersede"
    QUEUE = "queue"
    REFUSE = "refuse"


def admit(new: int, current: int | None, *, replace: bool = False, current_can_yield: bool = True) -> Admission:
    """What a push of priority ``new`` does to a device whose live job has ``current``
    (None: no live job). ``current_can_yield`` is False once that job's activation was sent."""
    if current is None:
        return Admission.START
    if not current_can_yield:
        return Admission.QUEUE
    if new > current or (new == current and replace):
        return Admission.SUPERSEDE
    if new < current:
        return Admission.QUEUE
    return Admission.REFUSE
