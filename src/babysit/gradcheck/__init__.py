"""Gradient checks: which parameter is wrong, by how much, and whether a kink fooled the check.

    report = check_gradients(model, loss_fn, (x, y))      # per tensor, coordinates + random directions
    assert_gradients(model, loss_fn, (x, y))              # one-line pytest test; raises CheckFailed
    report = check_function(f, x, grad=my_grad)           # a numpy or torch function of one array
"""

from __future__ import annotations

from .core import SWEEP_STEPS, assert_gradients, check_gradients
from .function import check_function
from .kinks import KINK_OPS, KinkRecorder
from .probe import ROUNDOFF_C
from .report import VERDICTS, Entry, GradientReport, TensorSummary, verdict

__all__ = [
    "KINK_OPS",
    "ROUNDOFF_C",
    "SWEEP_STEPS",
    "VERDICTS",
    "Entry",
    "GradientReport",
    "KinkRecorder",
    "TensorSummary",
    "assert_gradients",
    "check_function",
    "check_gradients",
    "verdict",
]
