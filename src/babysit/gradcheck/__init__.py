"""Gradient checks: which parameter is wrong, by how much, and whether a kink fooled the check.

    report = check_gradients(model, loss_fn, (x, y))      # per tensor, coordinates + random directions
    assert_gradients(model, loss_fn, (x, y))              # one-line pytest test; raises CheckFailed
    report = check_function(f, x, w, grad=my_grad)        # a numpy or torch function of arrays
    report = check_layer(affine_forward, affine_backward, (x, w, b))   # CS231n (out, cache) layers
    report = check_loss(svm_loss, scores, y)              # CS231n losses: loss_fn(x, y) -> (loss, dx)
    report = check_autograd_function(MyFn, x, w)          # a custom autograd.Function, random upstream
"""

from __future__ import annotations

from .core import assert_gradients, check_gradients
from .custom import check_autograd_function
from .function import check_function
from .kinks import KINK_OPS, KinkRecorder
from .layers import check_layer, check_loss
from .measure import SWEEP_STEPS
from .probe import ROUNDOFF_C
from .report import VERDICTS, DtypeCheck, Entry, GradientReport, TensorSummary, verdict

__all__ = [
    "KINK_OPS",
    "ROUNDOFF_C",
    "SWEEP_STEPS",
    "VERDICTS",
    "DtypeCheck",
    "Entry",
    "GradientReport",
    "KinkRecorder",
    "TensorSummary",
    "assert_gradients",
    "check_autograd_function",
    "check_function",
    "check_gradients",
    "check_layer",
    "check_loss",
    "verdict",
]
