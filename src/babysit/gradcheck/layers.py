"""Layers and losses in the CS231n convention: forward(*inputs, *params) -> (out, cache), backward(dout, cache).

Every array input is checked in one call against <forward(x), dout> with a random dout; non-array
arguments (conv_param, bn_param, labels) pass through untouched.
"""

from __future__ import annotations

import inspect
import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from ..errors import ConfigError
from .function import (
    check_arrays,
    check_function,
    default_names,
    split_grads,
    validate,
    working_copy,
)
from .measure import Step, few_threads
from .report import GradientReport

__all__ = ["check_layer", "check_loss"]

log = logging.getLogger(__name__)


def _is_array(a: Any) -> bool:
    """Returns True for a floating numpy array or torch tensor: the inputs that get a gradient."""
    if isinstance(a, torch.Tensor):
        return a.is_floating_point()
    return isinstance(a, np.ndarray) and np.issubdtype(a.dtype, np.floating)


def _pair(result: Any, what: str, second: str) -> tuple[Any, Any]:
    """Returns the two parts of a (value, cache) or (loss, dx) result, or ConfigError saying what came back."""
    if not isinstance(result, (tuple, list)) or len(result) != 2:
        raise ConfigError(f"{what} returned {type(result).__name__}: in the CS231n convention it returns a pair "
                          f"(out, {second})")
    return result[0], result[1]


def _numpy(a: Any) -> np.ndarray:
    """Returns a float64 numpy copy of an array or tensor."""
    return a.detach().cpu().numpy().astype(np.float64) if isinstance(a, torch.Tensor) else np.asarray(a, np.float64)


def _names(forward: Callable, positions: list[int], names: Sequence[str] | None) -> list[str]:
    """Returns the checked inputs' names: given, else forward's parameter names at those positions."""
    if names is not None:
        return default_names(forward, len(positions), names)
    try:
        params = [p.name for p in inspect.signature(forward).parameters.values()
                  if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    except (TypeError, ValueError):
        params = []
    fallback = ["x", "w", "b"] + [f"x{i}" for i in range(3, len(positions))]
    got = [params[i] if i < len(params) else fallback[k] for k, i in enumerate(positions)]
    return got if len(set(got)) == len(got) else fallback[:len(positions)]


def check_layer(forward: Callable[..., Any], backward: Callable[[Any, Any], Any], inputs: Any, dout: Any = None,
                params: Any = None, *, names: Sequence[str] | None = None, h: Step = 1e-5, tol: float = 1e-5,
                seed: int = 0, per_tensor: int | None = None) -> GradientReport:
    """Returns a GradientReport for every array input of a layer, each named (x, w, b or names).

    forward(*inputs, *params) -> (out, cache); backward(dout, cache) -> dx or (dx, dw, db, ...), one per array.
    """
    validate(h, tol, per_tensor)
    start = time.perf_counter()
    inputs = list(inputs) if isinstance(inputs, (tuple, list)) else [inputs]
    extra = tuple(params) if isinstance(params, (tuple, list)) else (() if params is None else (params,))
    positions = [i for i, a in enumerate(inputs) if _is_array(a)]
    if not positions:
        raise ConfigError("inputs: no floating array among them; pass the layer's arrays, e.g. inputs=(x, w, b)")
    labels = _names(forward, positions, names)
    natives = list(inputs)
    tensors = {}
    for n, i in zip(labels, positions):
        w, arr = working_copy(inputs[i], n)
        tensors[n], natives[i] = w, (arr if arr is not None else w)

    def run() -> tuple[Any, Any]:
        return _pair(forward(*natives, *extra), "forward", "cache")

    with torch.no_grad(), few_threads(sum(w.numel() for w in tensors.values())):
        out, cache = run()
        d = _numpy(dout) if dout is not None else np.random.default_rng(seed).standard_normal(np.shape(out))
        if d.shape != np.shape(out):
            raise ConfigError(f"dout has shape {d.shape} but forward's output has shape {np.shape(out)}")
        native_dout = (lambda: torch.from_numpy(d.copy()).to(out)) if isinstance(out, torch.Tensor) else d.copy

        def value() -> float:
            return float(np.sum(_numpy(run()[0]) * d))

        g = split_grads(backward(native_dout(), cache), tensors, "backward")
        again = split_grads(backward(native_dout(), run()[1]), tensors, "backward")
        numpy_code = any(isinstance(natives[i], np.ndarray) for i in positions)
        report = check_arrays(value, tensors, g, again, h, tol, per_tensor, numpy_code, start)
    log.info("check_layer %s (worst %s)", "passed" if report.ok else "FAILED",
             report.worst.where if report.worst else None)
    return report


def check_loss(loss_fn: Callable[[Any, Any], Any], x: Any, y: Any, *, h: Step = 1e-5, tol: float = 1e-5,
               per_tensor: int | None = None) -> GradientReport:
    """Returns a GradientReport for a loss in the CS231n convention, loss_fn(x, y) -> (loss, dx), entries "x"."""
    return check_function(lambda a: _pair(loss_fn(a, y), "loss_fn", "dx")[0], x,
                          grad=lambda a: _pair(loss_fn(a, y), "loss_fn", "dx")[1], h=h, tol=tol,
                          per_tensor=per_tensor)
