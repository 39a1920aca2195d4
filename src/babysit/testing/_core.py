"""The machinery every conformance suite shares: a table of named checks per kind, run into a Conformance."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Iterable

from ..errors import CheckFailed, ConfigError

__all__ = ["SUITES", "Conformance", "Result", "register", "run_suite", "bad_values", "refuses"]

# A check takes the subject under test and returns None (passed) or the reason it failed, in words.
Check = Callable[[Any], "str | None"]
# SUITES[kind][name]: "update_rule" and "schedule" here; samplers and diagnose rules register their own.
SUITES: dict[str, dict[str, Check]] = {"update_rule": {}, "schedule": {}}


def register(kind: str, name: str) -> Callable[[Check], Check]:
    """Returns a decorator adding a check to SUITES[kind] under name (a new kind starts a new suite)."""
    def add(fn: Check) -> Check:
        SUITES.setdefault(kind, {})[name] = fn
        return fn
    return add


@dataclass(frozen=True)
class Result:
    """One check's outcome: its name, whether it passed, and why not."""

    check: str
    passed: bool
    detail: str = ""


@dataclass(frozen=True)
class Conformance:
    """Every check of one suite on one subject; ok when all passed."""

    kind: str
    subject: str
    results: tuple[Result, ...]

    @property
    def ok(self) -> bool:
        """Returns True when every check passed."""
        return all(r.passed for r in self.results)

    @property
    def failures(self) -> tuple[Result, ...]:
        """Returns the checks that failed."""
        return tuple(r for r in self.results if not r.passed)

    def __str__(self) -> str:
        lines = [f"{self.kind} {self.subject}: {len(self.results) - len(self.failures)}/{len(self.results)} passed"]
        lines += [f"  FAILED {r.check}: {r.detail}" for r in self.failures]
        return "\n".join(lines)


def run_suite(kind: str, subject: Any, *, label: str, skip: Iterable[str] = (), strict: bool = True) -> Conformance:
    """Returns the Conformance of subject under SUITES[kind]; raises CheckFailed on a failure when strict.

    A check that raises counts as failed, with the exception in its detail.
    """
    if kind not in SUITES:
        raise ConfigError(f"kind={kind!r}: no such suite; known: {', '.join(sorted(SUITES))}")
    unknown = set(skip) - set(SUITES[kind])
    if unknown:
        raise ConfigError(f"skip={sorted(unknown)!r}: no such {kind} checks; known: {', '.join(SUITES[kind])}")
    results = []
    for name, check in SUITES[kind].items():
        if name in skip:
            continue
        try:
            why = check(subject)
        except Exception as exc:  # a crash inside a check is a failure of the subject, reported, not raised
            why = f"raised {type(exc).__name__}: {exc}"
        results.append(Result(name, why is None, why or ""))
    report = Conformance(kind, label, tuple(results))
    if strict and not report.ok:
        raise CheckFailed(str(report))
    return report


def bad_values(low: float | None, high: float | None, kind: type) -> list[Any]:
    """Returns values a number field must refuse: NaN, infinities, a string, and just past each bound."""
    out: list[Any] = [math.nan, math.inf, -math.inf, "abc", None if kind is str else [1]]
    if low is not None:
        out.append(low - 1)
    if high is not None and math.isfinite(high):
        out.append(high * 10 + 1)
    if kind is int:
        out.append(1.5)
    return [v for v in out if v is not None]


def refuses(build: Callable[[], Any], field: str) -> str | None:
    """Returns None when build() raises ConfigError naming field, else what happened instead."""
    try:
        build()
    except ConfigError as exc:
        return None if field in str(exc) else f"ConfigError does not name {field}: {exc}"
    except Exception as exc:
        return f"raised {type(exc).__name__} instead of ConfigError: {exc}"
    return "accepted"
