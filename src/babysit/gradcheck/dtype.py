"""The model's own dtype: one backward there beside the float64 check, and the fallback when float64 breaks it.

The notes: check in double precision. A bug of float32 only (an exp that overflows at 88, not at 709)
then hides, so one extra backward in the model's dtype on the same batch must be finite and close.
"""

from __future__ import annotations

import copy
import logging
import math
import re
from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import nn

from .probe import TINY_ABS
from .report import DtypeCheck

__all__ = ["DIFFERS", "FALLBACK_H", "FALLBACK_TOL", "clash", "compare", "model_dtype", "own_gradients"]

log = logging.getLogger(__name__)

DIFFERS = 1e-2        # relative distance to the float64 gradient beyond float32 round-off (~1e-6 here)
FALLBACK_H = 1e-2     # relative step in float32: truncation ~h^2 against round-off ~eps32/h
FALLBACK_TOL = 1e-2
_CLASH = re.compile(r"dtype|Double|Float|Half|BFloat16|scalar type", re.IGNORECASE)


def model_dtype(model: nn.Module, x: Any) -> torch.dtype:
    """Returns the dtype of the model's first floating parameter, else of the inputs, else float32."""
    for p in model.parameters():
        if p.is_floating_point():
            return p.dtype
    return x.dtype if isinstance(x, torch.Tensor) and x.is_floating_point() else torch.float32


def clash(exc: BaseException, dtype: torch.dtype) -> bool:
    """Returns True when the float64 copy itself broke the model (a dtype error from a model not in float64)."""
    return dtype != torch.float64 and isinstance(exc, (RuntimeError, TypeError)) and bool(_CLASH.search(str(exc)))


def own_gradients(model: nn.Module, forward: Callable[[nn.Module, Any, Any], torch.Tensor], batch: Any,
                  names: list[str], train: bool, seed: int | None) -> dict[str, torch.Tensor]:
    """Returns name -> gradient of one backward on a copy in the model's own dtype (None where unused)."""
    twin = copy.deepcopy(model).train(train)
    x, y = (t.detach().clone() if isinstance(t, torch.Tensor) else t for t in batch)
    leaves: dict[str, torch.Tensor] = dict(twin.named_parameters())
    if "input" in names:
        leaves["input"] = x.requires_grad_(True)
    chosen = {n: leaves[n] for n in names if n in leaves}
    if seed is not None:
        torch.manual_seed(seed)
    with torch.enable_grad():
        loss = forward(twin, x, y)
        grads = torch.autograd.grad(loss, list(chosen.values()), allow_unused=True) if loss.requires_grad else \
            [None] * len(chosen)
    return {n: (g.detach() if g is not None else torch.zeros_like(t)) for (n, t), g in zip(chosen.items(), grads)}


def compare(dtype: torch.dtype, own: Mapping[str, torch.Tensor], ref: Mapping[str, torch.Tensor]) -> DtypeCheck:
    """Returns the findings: tensors whose own-dtype gradient is not finite, or far from the float64 one."""
    nonfinite = tuple(n for n, g in own.items() if not bool(torch.isfinite(g).all()))
    differs = []
    for n, g in own.items():
        if n in nonfinite or n not in ref:
            continue
        r = ref[n].to(torch.float64)
        scale = float(r.norm())
        dist = float((g.to(torch.float64) - r).norm()) / scale if scale > 0 else 0.0
        if scale > TINY_ABS and math.isfinite(dist) and dist > DIFFERS:  # tiny gradients are flagged already
            differs.append((n, dist))
    log.debug("own dtype %s: nonfinite %s, differs %s", dtype, nonfinite, differs)
    return DtypeCheck(str(dtype).removeprefix("torch."), nonfinite, tuple(differs))
