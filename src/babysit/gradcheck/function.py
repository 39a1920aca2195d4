"""check_function: gradient check of a function of one or several arrays, numpy or torch (layers in numpy)."""

from __future__ import annotations

import inspect
import logging
import math
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from ..errors import ConfigError
from .custom import check_calls, recording
from .graph import custom_nodes, function_classes, reached
from .measure import (
    Step,
    assemble_report,
    few_threads,
    measure_steps,
    merge,
    mismatched,
)
from .objective import int_at_least, positive_float
from .probe import Target
from .report import GradientReport
from .sampling import Directions, stratified_coordinates

__all__ = ["FULL_CHECK_MAX", "SAMPLE_SIZE", "check_arrays", "check_function", "default_names", "working_copy"]

log = logging.getLogger(__name__)

FULL_CHECK_MAX = 1000  # check every coordinate up to this size
SAMPLE_SIZE = 100      # coordinates sampled (plus 3 random directions) above it
_DIRECTIONS = 3
ArrayLike = np.ndarray | torch.Tensor | float | list


def to_float(value: Any, what: str) -> float:
    """Returns a scalar result as a float, or raises ConfigError naming its shape."""
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().numpy()
    arr = np.asarray(value, dtype=np.float64)
    if arr.size != 1:
        raise ConfigError(f"{what} returned an array of shape {arr.shape}: it must return a scalar")
    return float(arr.reshape(()))


def validate(h: Any, tol: Any, per_tensor: Any) -> None:
    """Raises ConfigError naming the first invalid option."""
    if h != "sweep":
        positive_float("h", h, "the notes use about 1e-5, or pass h='sweep'")
    positive_float("tol", tol, "relative tolerance, e.g. tol=1e-5")
    if per_tensor is not None:
        int_at_least("per_tensor", per_tensor, 1, f"or None: every coordinate up to {FULL_CHECK_MAX} elements")


def working_copy(x: ArrayLike, name: str) -> tuple[torch.Tensor, np.ndarray | None]:
    """Returns (float64 tensor, numpy view of the same memory or None for torch inputs)."""
    if isinstance(x, torch.Tensor):
        if not (x.is_floating_point() or x.dtype in (torch.int32, torch.int64)):
            raise ConfigError(f"{name}: dtype {x.dtype} cannot be differentiated; pass a floating tensor")
        return x.detach().to(torch.float64).clone(), None
    try:
        arr = np.array(x, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{name}={type(x).__name__}: must be a numpy array, a tensor or numbers ({exc})") from exc
    return torch.from_numpy(arr), arr


def default_names(f: Callable, count: int, names: Sequence[str] | None, skip: int = 0) -> list[str]:
    """Returns the names of the checked arrays: given, "x" for one, else f's parameter names, else x0, x1, ..."""
    if names is not None:
        names = list(names)
        if len(names) != count or len(set(names)) != count:
            raise ConfigError(f"names={names!r}: must be {count} distinct names, one per array")
        return names
    if count == 1 and not skip:
        return ["x"]
    try:
        params = [p.name for p in inspect.signature(f).parameters.values()
                  if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)][skip:]
    except (TypeError, ValueError):
        params = []
    return params[:count] if len(params) >= count else [f"x{i}" for i in range(count)]


def _shaped(got: Any, like: torch.Tensor, what: str) -> torch.Tensor:
    """Returns got as a float64 tensor; ConfigError naming both shapes when it is not shaped like its input."""
    got = got.detach().cpu() if isinstance(got, torch.Tensor) else torch.from_numpy(np.array(got, np.float64))
    got = got.to(torch.float64)
    if tuple(got.shape) != tuple(like.shape):
        raise ConfigError(f"{what} has shape {tuple(got.shape)} but its input has shape {tuple(like.shape)}: a "
                          "gradient must be shaped like what it differentiates (a (1, M) bias gradient for an "
                          "(M,) bias? sum over axis 0 without keepdims)")
    return got


def split_grads(got: Any, arrays: dict[str, torch.Tensor], what: str) -> dict[str, torch.Tensor]:
    """Returns name -> gradient from one array (one input) or a tuple of arrays (one per input)."""
    if len(arrays) == 1 and not isinstance(got, (tuple, list)):
        got = (got,)
    if not isinstance(got, (tuple, list)) or len(got) != len(arrays):
        count = len(got) if isinstance(got, (tuple, list)) else 1
        raise ConfigError(f"{what} returned {count} gradient(s) for {len(arrays)} array(s) "
                          f"({', '.join(arrays)}): return one per array, in order")
    return {n: _shaped(g, arrays[n], f"{what}: the gradient of {n}") for n, g in zip(arrays, got)}


def _targets(arrays: dict[str, torch.Tensor], grads: dict[str, torch.Tensor], per_tensor: int | None,
             seed: int) -> list[Target]:
    """Returns a Target per array: every coordinate when small, else a stratified sample plus directions."""
    out = []
    for k, (name, w) in enumerate(arrays.items()):
        rng = np.random.default_rng([seed, k])
        n = per_tensor if per_tensor is not None else (w.numel() if w.numel() <= FULL_CHECK_MAX else SAMPLE_SIZE)
        coords = stratified_coordinates(tuple(w.shape), n, rng)
        dirs = Directions(tuple(w.shape), w.device, _DIRECTIONS if len(coords) < w.numel() else 0, seed * 7919 + k)
        out.append(Target(name, w, grads[name], coords, dirs, rng))
    return out


def check_arrays(value: Callable[[], float], arrays: dict[str, torch.Tensor], grads: dict[str, torch.Tensor],
                 again: dict[str, torch.Tensor], h: Step, tol: float, per_tensor: int | None, numpy_code: bool,
                 start: float, extra: tuple[dict[str, Any] | None, list[str]] = (None, [])) -> GradientReport:
    """Returns the report for arrays perturbed in place under value(); one-sided kink tests for numpy code."""
    loss = value()
    if not math.isfinite(loss):
        raise ConfigError(f"f = {loss} at the check point: a gradient check needs a finite value")
    raw = measure_steps(value, loss, _targets(arrays, grads, per_tensor, 0), h, tol, mismatched(grads, again),
                        onesided=numpy_code)
    fn_raw, fn_names = extra
    raw = merge(raw, fn_raw) if fn_raw else raw
    return assemble_report(raw, list(arrays), tol, time.perf_counter() - start, False, "eval", numpy_code, fn_names)


def _autograd(f: Callable, arrays: dict[str, torch.Tensor], h: Step, tol: float,
              per_tensor: int | None) -> tuple[dict, dict, tuple[dict[str, Any] | None, list[str]]]:
    """Returns (gradient, gradient again, Function checks) by autograd; ConfigError when f is not differentiable."""
    leaves = [w.detach().clone().requires_grad_(True) for w in arrays.values()]
    try:
        out = f(*leaves)
    except Exception as exc:  # a numpy-only f raises on a tensor requiring grad
        raise ConfigError(f"grad=None: f could not run on a torch tensor ({type(exc).__name__}: {exc}); "
                          "for a numpy function pass grad=your_gradient") from exc
    if not isinstance(out, torch.Tensor) or not out.requires_grad:
        raise ConfigError(f"grad=None: f returned {type(out).__name__} without an autograd graph; for a numpy "
                          "function pass grad=your_gradient")
    if out.numel() != 1:
        raise ConfigError(f"f returned an array of shape {tuple(out.shape)}: it must return a scalar")
    nodes = custom_nodes(out)
    with reached(nodes) as live:
        first = torch.autograd.grad(out.reshape(()), leaves, retain_graph=True, allow_unused=True)
    second = torch.autograd.grad(out.reshape(()), leaves, allow_unused=True)
    fill = [{n: (g.detach() if g is not None else torch.zeros_like(w)) for (n, w), g in zip(arrays.items(), gs)}
            for gs in (first, second)]
    extra: tuple[dict[str, Any] | None, list[str]] = (None, [])
    classes = function_classes(nodes, live)
    if classes:
        with recording(classes) as calls, torch.enable_grad():
            f(*leaves)
        extra = check_calls(calls, h, tol, 0)
    return fill[0], fill[1], extra


def check_function(f: Callable[..., Any], *arrays: ArrayLike, grad: Callable[..., Any] | None = None,
                   names: Sequence[str] | None = None, h: Step = 1e-5, tol: float = 1e-5,
                   per_tensor: int | None = None) -> GradientReport:
    """Returns a GradientReport for the scalar function f(*arrays), entries named "x" (one array) or by names.

    Analytic gradient from grad(*arrays) (one array, or a tuple with one per array), or torch autograd when
    grad is None, which also checks every custom autograd Function on f's graph with a random upstream gradient.
    """
    validate(h, tol, per_tensor)
    if not arrays:
        raise ConfigError("check_function(f): no array given; call check_function(f, x) or f, x, w, ...")
    start = time.perf_counter()
    labels = default_names(f, len(arrays), names)
    copies = [working_copy(x, n) for x, n in zip(arrays, labels)]
    tensors = {n: w for n, (w, _) in zip(labels, copies)}
    natives = [arr if arr is not None else w for w, arr in copies]
    numpy_code = any(arr is not None for _, arr in copies)

    def value() -> float:
        with torch.no_grad():
            return to_float(f(*natives), "f")

    with few_threads(sum(w.numel() for w in tensors.values())):
        if grad is None:
            g, again, extra = _autograd(f, tensors, h, tol, per_tensor)
        else:
            args = lambda: [arr.copy() if arr is not None else w.clone() for w, arr in copies]
            g, again = (split_grads(grad(*args()), tensors, "grad") for _ in range(2))
            extra = (None, [])
        report = check_arrays(value, tensors, g, again, h, tol, per_tensor, numpy_code,
                              start, extra)
    log.info("check_function %s (worst %s)", "passed" if report.ok else "FAILED",
             report.worst.where if report.worst else None)
    return report
