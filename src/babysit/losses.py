"""Classification losses of the notes (softmax cross-entropy, multiclass SVM) and the L2 term.

The data loss and the L2 term stay separate: gradient checks test each alone, so the
regularisation cannot mask a wrong data-loss gradient.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ._optional import import_ref
from .errors import ConfigError

__all__ = ["LOSSES", "chance_loss", "l2_term", "reg_params", "resolve", "softmax_loss", "svm_loss"]

LOSSES = ("softmax", "svm")

LossFn = Callable[[Tensor, Tensor], Tensor]

# Normalisation layers rescale activations; their weights are not decayed (some are >= 2-D).
_NORM_LAYERS = (
    nn.modules.batchnorm._BatchNorm,
    nn.modules.instancenorm._InstanceNorm,
    nn.LayerNorm,
    nn.GroupNorm,
    nn.LocalResponseNorm,
    nn.RMSNorm,
)


def softmax_loss(scores: Tensor, y: Tensor) -> Tensor:
    """Return the mean softmax cross-entropy, -log p(y_i), of scores (N, C) and labels (N,)."""
    return F.cross_entropy(scores, y)


def svm_loss(scores: Tensor, y: Tensor, margin: float = 1.0) -> Tensor:
    """Return the mean Weston-Watkins SVM loss: sum over j != y_i of max(0, s_j - s_{y_i} + margin).

    A kink at every margin: gradient checks should use few examples (the notes).
    """
    correct = scores.gather(1, y.unsqueeze(1))
    margins = (scores - correct + margin).clamp(min=0)
    margins = margins.scatter(1, y.unsqueeze(1), 0.0)  # j == y_i does not count
    return margins.sum(dim=1).mean()


def chance_loss(kind: str, num_classes: int) -> float:
    """Return the loss expected at initialisation with small parameters: ln C (softmax), C - 1 (svm).

    Softmax: diffuse p = 1/C gives -ln(1/C); SVM: every margin of 1 violated, C - 1 times.
    """
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
        raise ConfigError(f"num_classes={num_classes!r}: must be an integer >= 2")
    if kind == "softmax":
        return math.log(num_classes)
    if kind == "svm":
        return float(num_classes - 1)
    raise ConfigError(
        f"loss kind {kind!r}: the chance-level loss is unknown for custom losses; "
        f"it is known for {', '.join(LOSSES)}"
    )


def reg_params(model: nn.Module) -> list[nn.Parameter]:
    """Return the weight tensors L2 applies to: parameters with ndim >= 2 (Linear, Conv weights).

    Biases and normalisation layers are never regularised.
    """
    seen: set[int] = set()
    params: list[nn.Parameter] = []
    for module in model.modules():
        if isinstance(module, _NORM_LAYERS):
            seen.update(id(p) for p in module.parameters(recurse=False))
            continue
        for p in module.parameters(recurse=False):
            if p.ndim >= 2 and id(p) not in seen:
                seen.add(id(p))
                params.append(p)
    return params


def l2_term(params: Iterable[Tensor] | nn.Module, reg: float) -> Tensor:
    """Return 0.5 * reg * sum(W**2) over the weights (a list from reg_params, or a module's).

    The 0.5 makes the gradient reg * W.
    """
    if reg < 0:
        raise ConfigError(f"reg={reg!r}: must be >= 0; search it on a log scale, e.g. loguniform(1e-6, 1e-1)")
    if isinstance(params, nn.Module):
        params = reg_params(params)
    params = params if isinstance(params, (list, tuple)) else list(params)
    if not params:
        return torch.zeros(())
    if reg == 0:
        return torch.zeros((), dtype=params[0].dtype, device=params[0].device)
    total = torch.stack([p.square().sum() for p in params]).sum()
    return (0.5 * reg) * total


def resolve(loss: str | LossFn) -> tuple[LossFn, str]:
    """Return (loss function, kind) with kind "softmax", "svm" or "custom"."""
    if loss == "softmax" or loss is softmax_loss:
        return softmax_loss, "softmax"
    if loss == "svm" or loss is svm_loss:
        return svm_loss, "svm"
    if isinstance(loss, str) and ":" in loss:
        return import_ref(loss, what="loss", signature="fn(scores, y) -> scalar tensor"), "custom"
    if callable(loss) and not isinstance(loss, str):
        return loss, "custom"
    raise ConfigError(
        f"loss={loss!r}: unknown; valid: {', '.join(LOSSES)}, a callable fn(scores, y) -> scalar, "
        "or 'package.module:function'"
    )
