"""What to do about a gradient check: short advice lines from the entries (the notes' tips)."""

from __future__ import annotations

import math
from collections.abc import Sequence

from .probe import TINY_ABS, roundoff_floor
from .report import DtypeCheck, Entry

__all__ = ["advise", "failing"]


def failing(entries: Sequence[Entry]) -> list[Entry]:
    """Returns the entries that fail the criterion and were not excused by a kink."""
    return [e for e in entries if not e.passed and not e.excused]


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
        if abs(r - 1) < 0.05:
            return (f"{name}: analytic = {r:.4g} x numeric, close to 1: the differences look like truncation or "
                    "round-off of the step, not a bug in the formula; try h='sweep'")
        return (f"{name}: analytic = {r:.3g} x numeric: a missing or extra constant factor "
                "(a 2 from a square? 1/N from a mean?)")
    kinds = {e.kind for e in bad}
    if kinds == {"direction"}:
        return (f"{name}: random directions fail while sampled coordinates pass: the bug sits in a few rows, "
                "columns or elements; raise per_tensor to pin it")
    return f"{name}: analytic and numerical gradients disagree: check the backward of what {name} feeds"


def _failure_advice(entries: Sequence[Entry], mismatch: Sequence[str], functions: Sequence[str]) -> list[str]:
    """Returns one line per failing tensor (worst first, at most two) and per stateful backward."""
    lines = [(f"{n}: two identical backward passes gave different gradients: its backward keeps state "
              "(a buffer that accumulates?)") for n in mismatch]
    bad = failing(entries)
    names = sorted({e.name for e in bad}, key=lambda n: -max(_rel(e) for e in bad if e.name == n))
    lines += [_function_pattern(n) if n in functions else _pattern(n, [e for e in bad if e.name == n])
              for n in names[:2] if n not in mismatch]
    return lines


def _function_pattern(name: str) -> str:
    """Returns the advice for a custom autograd Function input that fails with a random upstream gradient."""
    fn, _, arg = name.partition(".")
    return (f"{name}: the backward of the custom autograd.Function {fn} is wrong for its input {arg!r} with a "
            "random upstream gradient v (<grad, v> != d<f(x), v>): does backward multiply by grad_output? "
            "(checked through .sum() the upstream gradient is all ones and hides it)")


def _dtype_advice(own: DtypeCheck | None) -> list[str]:
    """Returns the findings of the backward in the model's own dtype, and the fallback's cause and fix."""
    if own is None:
        return []
    lines = []
    if own.fallback:
        lines.append(f"the float64 copy broke your model; checked in {own.dtype} with {own.dtype} tolerances. "
                     "Fix: make tensors created in forward follow the input's dtype, e.g. (x > 0).to(x.dtype) "
                     "instead of (x > 0).float()")
    if own.nonfinite:
        lines.append(f"{', '.join(own.nonfinite[:3])}: the gradient is NaN/inf in {own.dtype} (your model's dtype) "
                     "though finite in float64: an overflow in the backward (exp of a large input? divide "
                     "inf by inf?); rewrite it in a stable form (e.g. sigmoid(x) * (1 - sigmoid(x)))")
    for n, r in own.differs[:2]:
        lines.append(f"{n}: the {own.dtype} gradient differs from the float64 one by {r:.1e} (relative), far "
                     f"beyond {own.dtype} round-off: a cancellation or overflow your training will see")
    return lines


def _rel(e: Entry) -> float:
    """Returns the relative error with NaN ranked worst."""
    return e.rel_error if math.isfinite(e.rel_error) else math.inf


def _kink_free_advice(entries: Sequence[Entry], loss: float, numpy_code: bool) -> list[str]:
    """Returns the notes' warning for kink-free objectives: passing errors above 1e-7 beyond round-off.

    "If there are no kinks (e.g. tanh and softmax), then 1e-4 is too high"; 1e-7 and less is good.
    """
    loose = [e for e in entries if e.passed and not e.tiny and e.rel_error >= 1e-7
             and abs(e.analytic - e.numeric) > 2 * roundoff_floor(loss, e.h or 1.0)]
    if not loose:
        return []
    worst = max(loose, key=lambda e: e.rel_error)
    return [(f"no kinked op ran, yet {worst.where} has rel error {worst.rel_error:.1e}: for a kink-free "
             "objective (tanh, softmax) expect < 1e-7; 1e-4 is too high")]


def advise(entries: Sequence[Entry], mismatch: Sequence[str], loss: float, floor: float,
           kink_ops: Sequence[str], has_dropout: bool, stochastic: str, numpy_code: bool = False,
           functions: Sequence[str] = (), own: DtypeCheck | None = None) -> tuple[str, ...]:
    """Returns advice lines: failures first, then the own-dtype findings, tiny gradients, kinks, precision."""
    lines = _failure_advice(entries, mismatch, functions) + _dtype_advice(own)
    tiny = sum(e.tiny for e in entries)
    if tiny and loss == 0.0:
        lines.append(f"{tiny} entries are tiny and the loss is 0 at the check point: the model fits this "
                     "batch with saturated scores, so its gradients round to nothing and cannot be checked; "
                     "check before training (burn_in=0) or with a smaller init scale of the last layer")
    elif tiny:
        lines.append(f"{tiny} entries are tiny (below {max(floor, TINY_ABS):.0e}): scale the loss up (e.g. x1e6) "
                     "so gradients are near 1.0, where floats are dense")
    excused = sum(e.kink_crossed for e in entries)
    if excused:
        lines.append(f"{excused} entries crossed a kink at every retry (h/10, then a fresh coordinate or h/100): excused; "
                     "fewer data points mean fewer kinks")
    suspected = sum(e.kink_suspected for e in entries)
    if suspected:
        lines.append(f"{suspected} entries: kink suspected (one-sided differences disagree at h and h/10, the "
                     "analytic value between them): excused")
    if not kink_ops and not numpy_code:
        lines += _kink_free_advice(entries, loss, numpy_code)
    if has_dropout and stochastic == "eval":
        lines.append("dropout ran in eval mode (off): stochastic='seeded' checks it too")
    return tuple(lines)
