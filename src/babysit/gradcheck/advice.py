"""What to do about a gradient check: short advice lines from the entries (the notes' tips)."""

from __future__ import annotations

import math
from collections.abc import Sequence

from .probe import TINY_ABS, roundoff_floor
from .report import Entry

__all__ = ["advise", "failing"]


def failing(entries: Sequence[Entry]) -> list[Entry]:
    """Returns the entries that fail the criterion and were not excused by a kink."""
    return [e for e in entries if not e.passed and not e.kink_crossed]


def _pattern(name: str, bad: Sequence[Entry]) -> str:
    """Returns the likely kind of bug behind a tensor's failing entries (zero, sign, factor, other)."""
    if all(e.analytic == 0.0 for e in bad):
        return (f"{name}: analytic gradient is 0 where the numerical one is not: a cut path "
                "(.detach(), no_grad) or a zeroed row/column/index in its backward")
    ratios = [e.analytic / e.numeric for e in bad if e.numeric != 0.0 and math.isfinite(e.analytic)]
    if ratios and max(ratios) - min(ratios) <= 0.01 * max(abs(r) for r in ratios):
        r = sum(ratios) / len(ratios)
        if abs(r + 1) < 0.01:
            return f"{name}: analytic = -numeric: a wrong sign in its backward"
        return (f"{name}: analytic = {r:.3g} x numeric: a missing or extra constant factor "
                "(a 2 from a square? 1/N from a mean?)")
    kinds = {e.kind for e in bad}
    if kinds == {"direction"}:
        return (f"{name}: random directions fail while sampled coordinates pass: the bug sits in a few rows, "
                "columns or elements; raise per_tensor to pin it")
    return f"{name}: analytic and numerical gradients disagree: check the backward of what {name} feeds"


def _failure_advice(entries: Sequence[Entry], mismatch: Sequence[str]) -> list[str]:
    """Returns one line per failing tensor (worst first, at most two) and per stateful backward."""
    lines = [(f"{n}: two identical backward passes gave different gradients: its backward keeps state "
              "(a buffer that accumulates?)") for n in mismatch]
    bad = failing(entries)
    names = sorted({e.name for e in bad}, key=lambda n: -max(_rel(e) for e in bad if e.name == n))
    lines += [_pattern(n, [e for e in bad if e.name == n]) for n in names[:2] if n not in mismatch]
    return lines


def _rel(e: Entry) -> float:
    """Returns the relative error with NaN ranked worst."""
    return e.rel_error if math.isfinite(e.rel_error) else math.inf


def _kink_free_advice(entries: Sequence[Entry], loss: float, numpy_code: bool) -> list[str]:
    """Returns the notes' warning for kink-free objectives: passing errors above 1e-7 beyond round-off.

    "If there are no kinks (e.g. tanh and softmax), then 1e-4 is too high"; 1e-7 and less is good.
    """
    if numpy_code:
        return ["kinks inside numpy code are invisible to the detector: a crossed kink shows up as an error"]
    loose = [e for e in entries if e.passed and not e.tiny and e.rel_error >= 1e-7
             and abs(e.analytic - e.numeric) > 2 * roundoff_floor(loss, e.h or 1.0)]
    if not loose:
        return []
    worst = max(loose, key=lambda e: e.rel_error)
    return [(f"no kinked op ran, yet {worst.where} has rel error {worst.rel_error:.1e}: for a kink-free "
             "objective (tanh, softmax) expect < 1e-7; 1e-4 is too high")]


def advise(entries: Sequence[Entry], mismatch: Sequence[str], loss: float, floor: float,
           kink_ops: Sequence[str], has_dropout: bool, stochastic: str, numpy_code: bool = False) -> tuple[str, ...]:
    """Returns advice lines: failures first, then tiny gradients, kinks and precision notes."""
    lines = _failure_advice(entries, mismatch)
    tiny = sum(e.tiny for e in entries)
    if tiny:
        lines.append(f"{tiny} entries are tiny (below {max(floor, TINY_ABS):.0e}): scale the loss up (e.g. x1e6) "
                     "so gradients are near 1.0, where floats are dense")
    excused = sum(e.kink_crossed for e in entries)
    if excused:
        lines.append(f"{excused} entries crossed a kink at h, h/10 and a fresh coordinate: excused; "
                     "fewer data points mean fewer kinks")
    if not kink_ops:
        lines += _kink_free_advice(entries, loss, numpy_code)
    if has_dropout and stochastic == "eval":
        lines.append("dropout ran in eval mode (off): stochastic='seeded' checks it too")
    return tuple(lines)
