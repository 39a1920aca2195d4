"""check_gradients and assert_gradients: a model's analytic gradients against centered differences."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import nn

from ..errors import CheckFailed, ConfigError
from .advice import failing
from .custom import check_calls, recording
from .dtype import FALLBACK_H, FALLBACK_TOL, clash, compare, model_dtype, own_gradients
from .probe import PARAM_SCALE
from .measure import (
    SWEEP_STEPS,
    Step,
    assemble_report,
    few_threads,
    make_targets,
    measure_steps,
    merge,
    mismatched,
)
from .objective import Objective, build_objective, burn_in_steps, validate_options
from .report import DtypeCheck, GradientReport

__all__ = ["SWEEP_STEPS", "assert_gradients", "check_gradients", "few_threads"]

log = logging.getLogger(__name__)


def _run(obj: Objective, leaves: Mapping[str, torch.Tensor], h: Step, tol: float, per_tensor: int,
         directions: int, seed: int, eps: float) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """Returns (raw results of checking every leaf of the objective, the analytic gradients)."""
    loss, grads, again = obj.gradients(dict(leaves))
    if not math.isfinite(loss):
        raise ConfigError(f"loss_fn: the objective is {loss} at the check point; a gradient check needs a "
                          "finite loss (lower the init scale or check the loss)")
    params = {n for n, _ in obj.model.named_parameters()}
    # float64 checks keep parameter steps at or above the notes' absolute h; a float32 fallback (eps ~1e-7,
    # h 1e-2) stays purely relative, or its steps would be far too coarse
    floors = {n: PARAM_SCALE for n in leaves if n in params} if eps < 1e-12 else {}
    targets = make_targets(leaves, grads, per_tensor, directions, seed, obj.suffix_values(list(leaves)), floors)
    return measure_steps(obj.value, loss, targets, h, tol, mismatched(grads, again), eps=eps), grads


def _functions(obj: Objective, h: Step, tol: float, seed: int, eps: float, directions: int,
               named: bool) -> tuple[dict[str, Any] | None, list[str]]:
    """Returns the raw results and entry names of every custom autograd Function in the objective's graph.

    Failing directions are bisected to an index only when the model's own check named none (`named`).
    """
    classes = list(obj.custom)
    if not classes:
        return None, []
    with recording(classes) as calls, torch.enable_grad():
        obj.forward()
    return check_calls(calls, h, tol, seed, eps, directions=directions, bisect=not named)


def _own_dtype(model: nn.Module, obj: Objective, batch: Sequence[Any], grads: Mapping[str, torch.Tensor],
               fallback: str) -> DtypeCheck | None:
    """Returns the findings of one backward in the model's own dtype (None when that is float64)."""
    dtype = model_dtype(model, batch[0])
    if fallback:
        return DtypeCheck(str(dtype).removeprefix("torch."), compare(dtype, grads, {}).nonfinite, (), fallback)
    if dtype == torch.float64:
        return None
    try:
        own = own_gradients(model, obj.loss_of, batch, list(grads), obj.model.training, obj.seed)
    except Exception as exc:  # noqa: BLE001  (the user's model in its own dtype: the check goes on)
        log.warning("the backward in the model's own dtype %s raised %s; not compared", dtype, exc)
        return None
    return compare(dtype, own, grads)


def _check_in(dtype: torch.dtype, fallback: str, model: nn.Module, loss_fn: Callable | None,
              batch: Sequence[Any], h: Step, tol: float, per_tensor: int, seed: int, burn_in: int, stochastic: str,
              check_inputs: bool, directions: int,
              penalty: Callable | None) -> tuple[dict[str, Any], Objective, list[str], list[str], DtypeCheck | None]:
    """Returns (raw results, objective, tensor names, Function entry names, own-dtype findings) in dtype."""
    obj = build_objective(model, loss_fn, batch, stochastic, seed, penalty, check_inputs, dtype)
    eps = float(torch.finfo(dtype).eps)
    if fallback:
        h, tol = (h if h == "sweep" else max(float(h), FALLBACK_H)), max(tol, FALLBACK_TOL)
    leaves = obj.leaves(check_inputs)
    with few_threads(_work(obj.model, obj.x)):
        if burn_in:
            burn_in_steps(obj, burn_in)
        raw, grads = _run(obj, leaves, h, tol, per_tensor, directions, seed, eps)
        named = any(e.index is not None for e in failing(raw["entries"]))
        fn_raw, fn_names = _functions(obj, h, tol, seed, eps, directions, named)
        own = _own_dtype(model, obj, batch, grads, fallback) if not burn_in else None
    raw["tol"] = tol
    return (merge(raw, fn_raw) if fn_raw else raw), obj, list(leaves), fn_names, own


def _check(model: nn.Module, loss_fn: Callable | None, batch: Sequence[Any], *args: Any) -> tuple:
    """Returns _check_in's results in float64, or in the model's own dtype when the float64 copy breaks it."""
    try:
        return _check_in(torch.float64, "", model, loss_fn, batch, *args)
    except (RuntimeError, TypeError) as exc:
        own = model_dtype(model, batch[0] if isinstance(batch, (tuple, list)) and batch else None)
        if not clash(exc, own):
            raise
        log.info("the float64 copy broke the model (%s); checking in %s", exc, own)
        reason = (f"the float64 copy failed ({str(exc).splitlines()[0][:120]}); h={FALLBACK_H:g} and "
                  f"tol={FALLBACK_TOL:g} for {str(own).removeprefix('torch.')}")
        return _check_in(own, reason, model, loss_fn, batch, *args)


def _work(model: nn.Module, x: torch.Tensor) -> int:
    """Returns parameters x batch size: a rough size of one forward pass."""
    batch = x.shape[0] if x.dim() > 0 else 1
    return max(sum(p.numel() for p in model.parameters()), x.numel()) * batch


def _devices(model: nn.Module) -> list[int]:
    """Returns the CUDA devices the model lives on (their RNG state is saved and restored too)."""
    return sorted({p.device.index or 0 for p in model.parameters() if p.device.type == "cuda"})


def check_gradients(model: nn.Module, loss_fn: Callable[[Any, Any], torch.Tensor] | None, batch: Sequence[Any], *,
                    per_tensor: int = 10, h: Step = 1e-5, tol: float = 1e-5, seed: int = 0, burn_in: int = 0,
                    stochastic: str = "eval", check_inputs: bool = False, directions: int = 3,
                    penalty: Callable[[nn.Module], torch.Tensor] | None = None) -> GradientReport:
    """Returns a GradientReport: per tensor, sampled coordinates and random directions, analytic vs numeric.

    Centered differences in float64 on a deep copy; "check a few dimensions for every separate parameter".
    """
    validate_options(per_tensor, h, tol, burn_in, stochastic, directions, seed)
    start = time.perf_counter()
    with torch.random.fork_rng(devices=_devices(model) if isinstance(model, nn.Module) else []):
        raw, obj, names, fn_names, own = _check(model, loss_fn, batch, h, tol, per_tensor, seed, burn_in,
                                                stochastic, check_inputs, directions, penalty)
    has_dropout = any(isinstance(m, nn.modules.dropout._DropoutNd) for m in obj.model.modules())
    report = assemble_report(raw, names, raw["tol"], time.perf_counter() - start, has_dropout, stochastic,
                             functions=fn_names, own=own)
    log.info("gradient check %s in %.3f s (worst %s)", "passed" if report.ok else "FAILED", report.seconds,
             report.worst.where if report.worst else None)
    return report


def assert_gradients(model: nn.Module, loss_fn: Callable[[Any, Any], torch.Tensor] | None, batch: Sequence[Any],
                     **kw: Any) -> None:
    """Returns None when check_gradients passes; raises CheckFailed (an AssertionError) with the short report.

    One line in a pytest test: assert_gradients(model, loss_fn, (x, y)).
    """
    __tracebackhide__ = True  # pytest shows the caller's line, not babysit's frames
    report = check_gradients(model, loss_fn, batch, **kw)
    if not report.ok:
        raise CheckFailed(str(report))
