"""The records the sanity checks hand back (one Check each, one SanityReport in all) and their text."""

from __future__ import annotations

import math
import shutil
import textwrap
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["STATUSES", "Check", "SanityReport", "failed", "passed", "skipped"]

STATUSES = ("passed", "failed", "skipped")
Value = float | int | str


def _plain(v: Any) -> Any:
    """Returns v ready for JSON: non-finite floats become None (JSON has no nan)."""
    return None if isinstance(v, float) and not math.isfinite(v) else v


@dataclass(frozen=True)
class Check:
    """One sanity check's verdict: what was measured, what was expected and, on failure, what to do.

    ``values`` holds the raw numbers behind ``measured`` (for programs; ``measured`` is for people).
    """

    name: str
    status: str
    passed: bool
    measured: Value
    expected: Value
    advice: str
    reason: str | None = None
    seconds: float = field(default=0.0, compare=False)
    values: Mapping[str, float] = field(default_factory=dict, hash=False)
    error: str | None = None  # the user's code raised while the check ran: its one-line cause

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ValueError(f"Check.status={self.status!r}: must be one of {', '.join(STATUSES)}")
        if self.passed != (self.status == "passed"):
            raise ValueError(f"Check.passed={self.passed!r} contradicts status={self.status!r}")

    def to_dict(self) -> dict[str, Any]:
        """Returns the check as JSON-ready plain data."""
        return {
            "name": self.name, "status": self.status, "passed": self.passed,
            "measured": _plain(self.measured), "expected": _plain(self.expected), "advice": self.advice,
            "reason": self.reason, "seconds": self.seconds, "error": self.error,
            "values": {k: _plain(v) for k, v in self.values.items()},
        }


def passed(name: str, measured: Value, expected: Value, **values: float) -> Check:
    """Returns a passed Check (no advice)."""
    return Check(name, "passed", True, measured, expected, "", values=values)


def failed(name: str, measured: Value, expected: Value, advice: str, **values: float) -> Check:
    """Returns a failed Check with the advice saying what to do."""
    return Check(name, "failed", False, measured, expected, advice, values=values)


def skipped(name: str, reason: str, expected: Value = "", **values: float) -> Check:
    """Returns a skipped Check with the reason it could not run."""
    return Check(name, "skipped", False, "", expected, "", reason=reason, values=values)


@dataclass(frozen=True)
class SanityReport:
    """The sanity checks of one set-up: ok when no check failed (skipped ones do not count against it)."""

    ok: bool
    checks: tuple[Check, ...]

    @property
    def failed(self) -> tuple[Check, ...]:
        """Returns the checks that failed."""
        return tuple(c for c in self.checks if c.status == "failed")

    @property
    def seconds(self) -> float:
        """Returns the time all the checks took together."""
        return sum(c.seconds for c in self.checks)

    def __getitem__(self, name: str) -> Check:
        for c in self.checks:
            if c.name == name:
                return c
        raise KeyError(f"no check {name!r} in this report; it has: {', '.join(c.name for c in self.checks)}")

    def to_dict(self) -> dict[str, Any]:
        """Returns the report as JSON-ready plain data."""
        return {"ok": self.ok, "seconds": self.seconds, "checks": [c.to_dict() for c in self.checks]}

    def __str__(self) -> str:
        return render(self)


def _headline(r: SanityReport) -> str:
    """Returns the first line: the verdict, the counts and the time."""
    counts = {s: sum(c.status == s for c in r.checks) for s in STATUSES}
    tally = ", ".join(f"{counts[s]} {s}" for s in STATUSES)
    if r.ok:
        return f"sanity checks passed ({tally}) in {r.seconds:.2f} s"
    return f"sanity checks FAILED: {', '.join(c.name for c in r.failed)} ({tally}) in {r.seconds:.2f} s"


def _stacked(r: SanityReport, rows: list[tuple[str, ...]], width: int) -> str:
    """Returns the report one check per block (a narrow terminal): fields on their own wrapped lines."""
    lines = [_headline(r)]
    for name, status, measured, expected, advice in rows:
        lines.append(f"{name}  {status}")
        for label, text in (("measured", measured), ("expected", expected), ("advice", advice)):
            if text and text != "-":
                lines += textwrap.wrap(text, width, initial_indent=f"  {label}: ", subsequent_indent="    ",
                                       break_long_words=False, break_on_hyphens=False)
    return "\n".join(lines)


def render(r: SanityReport, width: int | None = None) -> str:
    """Returns the report as a table: check, status, measured, expected, then the advice (or skip reason).

    The advice column wraps at spaces to `width` (default: the terminal's), never inside a word or number.
    """
    width = width or shutil.get_terminal_size((120, 24)).columns
    head = ("check", "status", "measured", "expected", "advice")
    rows = [(c.name, c.status if c.status != "failed" else "FAILED", str(c.measured) or "-",
             str(c.expected) or "-", c.advice or (f"skipped: {c.reason}" if c.reason else ""))
            for c in r.checks]
    widths = [max(len(row[i]) for row in [head, *rows]) for i in range(4)]
    indent = sum(widths) + 2 * 4
    if indent + 30 > width:
        return _stacked(r, rows, width)
    room = width - indent
    lines = [_headline(r)]
    for row in [head, *rows]:
        cells = [cell.ljust(w) for cell, w in zip(row[:4], widths)]
        advice = textwrap.wrap(row[4], room, break_long_words=False, break_on_hyphens=False) or [""]
        lines.append("  ".join([*cells, advice[0]]).rstrip())
        lines += [" " * indent + more for more in advice[1:]]
    return "\n".join(lines)
