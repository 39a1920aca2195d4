"""The one validator helper: numbers and names checked the same way everywhere, errors that say the fix.

In the spirit of scikit-learn's ``check_scalar``: ``check_number("hp['lr']", 0.1, low=0, low_open=True,
hint="search it on a log scale")`` returns the value or raises an error naming the field, the bad value,
the allowed range and the fix.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable
from typing import Any

from .errors import BabysitError, ConfigError

__all__ = ["check_choice", "check_number", "describe_range"]


def describe_range(kind: type, low: float | None, high: float | None, low_open: bool, high_open: bool) -> str:
    """Returns the allowed range in words, e.g. "a number in (0, 1)" or "an integer >= 1"."""
    what = "an integer" if kind is int else "a number"
    if low is not None and high is not None and high == 1:
        return f"{what} in {'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
    if low is not None and high is not None:
        return f"{what} {'>' if low_open else '>='} {low:g} and {'<' if high_open else '<='} {high:g}"
    if low is not None:
        return f"{what} {'>' if low_open else '>='} {low:g}"
    if high is not None:
        return f"{what} {'<' if high_open else '<='} {high:g}"
    return f"a finite {what[2:] if kind is not int else 'integer'}"


def check_number(name: str, value: Any, *, kind: type = float, low: float | None = None,
                 high: float | None = None, low_open: bool = False, high_open: bool = False, hint: str = "",
                 error: type[BabysitError] = ConfigError) -> Any:
    """Returns value as `kind` (int or float) when it is a finite number in range; raises `error` naming it.

    bools are refused; an integral float (128.0, as a search may hand over) is accepted as an int.
    """
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(float(value))
    if ok and kind is int:
        ok = isinstance(value, numbers.Integral) or float(value).is_integer()
    if ok:
        v = float(value)
        ok = (low is None or (v > low if low_open else v >= low)) and (high is None or (v < high if high_open else v <= high))
    if not ok:
        fix = f"; {hint}" if hint else ""
        raise error(f"{name}={value!r}: must be {describe_range(kind, low, high, low_open, high_open)}{fix}")
    return int(value) if kind is int else float(value)


def check_choice(name: str, value: Any, choices: Iterable[str], *, hint: str = "", noun: str = "",
                 error: type[BabysitError] = ConfigError) -> str:
    """Returns value when it is one of choices; raises `error` ("unknown <noun>") listing the valid names otherwise."""
    valid = list(choices)
    if not isinstance(value, str) or value not in valid:
        fix = f"; {hint}" if hint else ""
        raise error(f"{name}={value!r}: unknown{' ' + noun if noun else ''}; valid: {', '.join(sorted(valid))}{fix}")
    return value
