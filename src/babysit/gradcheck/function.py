"""check_function: gradient check of a function of one array, numpy or torch (people write layers in numpy)."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from ..errors import ConfigError
from .core import Step, assemble_report, few_threads, measure_steps, mismatched
from .objective import int_at_least, positive_float
from .probe import Target
from .report import GradientReport
from .sampling import random_directions, stratified_coordinates

__all__ = ["FULL_CHECK_MAX", "SAMPLE_SIZE", "check_function"]

log = logging.getLogger(__name__)

FULL_CHECK_MAX = 1000  # check every coordinate up to this size
SAMPLE_SIZE = 100      # coordinates sampled (plus 3 random directions) above it
_DIRECTIONS = 3
ArrayLike = np.ndarray | torch.Tensor | float | list


def _to_float(value: Any, what: str) -> float:
    """Returns a scalar result as a float, or raises ConfigError naming its shape."""
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().numpy()
    arr = np.asarray(value, dtype=np.float64)
    if arr.size != 1:
        raise ConfigError(f"{what} returned an array of shape {arr.shape}: it must return a scalar")
    return float(arr.reshape(()))


def _validate(h: Any, tol: Any, per_tensor: Any) -> None:
    """Raises ConfigError naming the first invalid option."""
    if h != "sweep":
        positive_float("h", h, "the notes use about 1e-5, or pass h='sweep'")
    positive_float("tol", tol, "relative tolerance, e.g. tol=1e-5")
    if per_tensor is not None:
        int_at_least("per_tensor", per_tensor, 1, f"or None: every coordinate up to {FULL_CHECK_MAX} elements")


def _working_copy(x: ArrayLike) -> tuple[torch.Tensor, np.ndarray | None]:
    """Returns (float64 tensor, numpy view of the same memory or None for torch inputs)."""
    if isinstance(x, torch.Tensor):
        if not (x.is_floating_point() or x.dtype in (torch.int32, torch.int64)):
            raise ConfigError(f"x: dtype {x.dtype} cannot be differentiated; pass a floating tensor")
        return x.detach().to(torch.float64).clone(), None
    try:
        arr = np.array(x, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"x={type(x).__name__}: must be a numpy array, a tensor or numbers ({exc})") from exc
    return torch.from_numpy(arr), arr


def _autograd(f: Callable, w: torch.Tensor) -> tuple[float, torch.Tensor, torch.Tensor]:
    """Returns (f(x), gradient, gradient again) by autograd; ConfigError when f is not torch-differentiable."""
    leaf = w.detach().clone().requires_grad_(True)
    try:
        out = f(leaf)
    except Exception as exc:  # a numpy-only f raises on a tensor requiring grad
        raise ConfigError(f"grad=None: f could not run on a torch tensor ({type(exc).__name__}: {exc}); "
                          "for a numpy function pass grad=your_gradient") from exc
    if not isinstance(out, torch.Tensor) or not out.requires_grad:
        raise ConfigError(f"grad=None: f returned {type(out).__name__} without an autograd graph; for a numpy "
                          "function pass grad=your_gradient")
    if out.numel() != 1:
        raise ConfigError(f"f returned an array of shape {tuple(out.shape)}: it must return a scalar")
    first = torch.autograd.grad(out.reshape(()), leaf, retain_graph=True)[0]
    second = torch.autograd.grad(out.reshape(()), leaf)[0]
    return float(out.detach()), first.detach(), second.detach()


def _given(grad: Callable, w: torch.Tensor, arr: np.ndarray | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Returns grad(x) twice as float64 tensors shaped like x; ConfigError on a shape mismatch."""
    out = []
    for _ in range(2):
        got = grad(arr.copy() if arr is not None else w.clone())
        got = got.detach().cpu() if isinstance(got, torch.Tensor) else torch.from_numpy(np.array(got, np.float64))
        got = got.to(torch.float64)
        if tuple(got.shape) != tuple(w.shape):
            raise ConfigError(f"grad returned shape {tuple(got.shape)}: it must match x's shape {tuple(w.shape)}")
        out.append(got)
    return out[0], out[1]


def _target(w: torch.Tensor, g: torch.Tensor, per_tensor: int | None) -> Target:
    """Returns the Target for x: every coordinate when small, else a stratified sample plus directions."""
    rng = np.random.default_rng(0)
    n = per_tensor if per_tensor is not None else (w.numel() if w.numel() <= FULL_CHECK_MAX else SAMPLE_SIZE)
    coords = stratified_coordinates(tuple(w.shape), n, rng)
    dirs = random_directions(w, _DIRECTIONS, 0) if len(coords) < w.numel() else []
    return Target("x", w, g, coords, dirs, rng)


def check_function(f: Callable[[Any], Any], x: ArrayLike, *, grad: Callable[[Any], Any] | None = None,
                   h: Step = 1e-5, tol: float = 1e-5, per_tensor: int | None = None) -> GradientReport:
    """Returns a GradientReport for the scalar function f at x, entries named "x".

    Analytic gradient from grad(x), or from torch autograd when grad is None; numeric by centered differences.
    """
    _validate(h, tol, per_tensor)
    start = time.perf_counter()
    w, arr = _working_copy(x)
    native = arr if arr is not None else w

    def value() -> float:
        with torch.no_grad():
            return _to_float(f(native), "f")

    with few_threads(w.numel()):
        if grad is None:
            loss, g, again = _autograd(f, w)
        else:
            loss = value()
            g, again = _given(grad, w, arr)
        if not math.isfinite(loss):
            raise ConfigError(f"f(x) = {loss}: a gradient check needs a finite value at x")
        target = _target(w, g, per_tensor)
        raw = measure_steps(value, loss, [target], h, tol, mismatched({"x": g}, {"x": again}))
    report = assemble_report(raw, ["x"], tol, time.perf_counter() - start, False, "eval", arr is not None)
    log.info("check_function %s (worst %s)", "passed" if report.ok else "FAILED",
             report.worst.where if report.worst else None)
    return report
