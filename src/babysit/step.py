"""One batch in, one number out: the train and evaluate primitives that sanity, train and distill share."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Callable, Sequence

import torch
from torch import nn

from .data import batches
from .losses import l2_term

__all__ = ["StepRecord", "Objective", "objective", "task_objective", "train_step", "closure_step", "evaluate",
           "Evaluation"]

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
# objective(model, x, y) -> the loss tensor one step minimises (DESIGN.md §6.5). y is the batch's labels, or
# (labels, *carried) when train(..., carry=...) hands tensors aligned with the training set beside them.
Objective = Callable[[nn.Module, torch.Tensor, Any], torch.Tensor]


@dataclass(frozen=True)
class StepRecord:
    """One optimisation step: the objective (data loss + L2) of its batch, at epoch (fractional) and lr."""

    step: int
    epoch: float
    loss: float
    lr: float

    def to_dict(self) -> dict[str, Any]:
        """Returns the record as a plain dict."""
        return asdict(self)


@dataclass(frozen=True)
class Evaluation:
    """Accuracy and mean data loss (no L2) of a model on a split."""

    accuracy: float
    loss: float
    examples: int
    metric: float | None = None  # the user's own metric fn(scores, y), when one was given

    def to_dict(self) -> dict[str, Any]:
        """Returns the record as a plain dict."""
        return asdict(self)


def objective(model: nn.Module, x: torch.Tensor, y: torch.Tensor, loss_fn: LossFn,
              reg_params: Sequence[torch.Tensor], reg: float) -> torch.Tensor:
    """Returns data loss + 0.5 * reg * sum(W**2): the notes' objective, L2 kept as its own term."""
    loss = loss_fn(model(x), y)
    if reg:
        loss = loss + l2_term(reg_params, reg)
    return loss


def task_objective(loss_fn: LossFn, reg_params: Sequence[torch.Tensor], reg: float) -> Objective:
    """Returns the default objective(model, x, y): the task's data loss + 0.5 * reg * sum(W**2)."""

    def fn(model: nn.Module, x: torch.Tensor, y: Any) -> torch.Tensor:
        return objective(model, x, y, loss_fn, reg_params, reg)

    return fn


def train_step(model: nn.Module, x: torch.Tensor, y: Any, loss_fn: LossFn,
               reg_params: Sequence[torch.Tensor], reg: float, optimizer: torch.optim.Optimizer,
               clip_norm: float | None = None, objective_fn: Objective | None = None) -> float:
    """Returns the batch objective after one gradient step (NaN/inf is returned, not raised).

    objective_fn(model, x, y), when given, replaces data loss + L2 (loss_fn, reg_params and reg are then unused).
    """
    optimizer.zero_grad(set_to_none=True)
    loss = objective_fn(model, x, y) if objective_fn is not None else \
        objective(model, x, y, loss_fn, reg_params, reg)
    loss.backward()
    if clip_norm is not None:
        torch.nn.utils.clip_grad_norm_(model.parameters(), clip_norm)
    optimizer.step()
    return loss.item()


def closure_step(model: nn.Module, x: torch.Tensor, y: Any, loss_fn: LossFn,
                 reg_params: Sequence[torch.Tensor], reg: float, optimizer: torch.optim.Optimizer,
                 clip_norm: float | None = None, objective_fn: Objective | None = None) -> float:
    """Returns the objective before one full-batch step of a closure optimizer (L-BFGS); objective_fn as train_step."""

    def closure() -> torch.Tensor:
        optimizer.zero_grad(set_to_none=True)
        loss = objective_fn(model, x, y) if objective_fn is not None else \
            objective(model, x, y, loss_fn, reg_params, reg)
        loss.backward()
        if clip_norm is not None:
            torch.nn.utils.clip_grad_norm_(model.parameters(), clip_norm)
        return loss

    return float(optimizer.step(closure).detach())  # type: ignore[arg-type, attr-defined]


@torch.no_grad()
def evaluate(model: nn.Module, dataset: Any, loss_fn: LossFn, *, batch_size: int = 1024,
             device: torch.device | str | None = None,
             metric_fn: Callable[[torch.Tensor, torch.Tensor], float] | None = None) -> Evaluation:
    """Returns accuracy and mean data loss on a dataset, in eval mode (dropout off), restoring the mode after.

    metric_fn(scores, y) -> float, when given, runs once on the scores of the whole dataset.
    """
    was_training = model.training
    if was_training:  # a model already in eval mode (two evaluations in a row) is not walked twice
        model.eval()
    correct, total_loss, n = 0, 0.0, 0
    kept: list[tuple[torch.Tensor, torch.Tensor]] = []
    try:
        for x, y in batches(dataset, batch_size, shuffle=False):
            if device is not None:
                x, y = x.to(device), y.to(device)
            scores = model(x)
            total_loss += float(loss_fn(scores, y)) * len(y)
            correct += int((scores.argmax(1) == y).sum())
            n += len(y)
            if metric_fn is not None:
                kept.append((scores, y))
    finally:
        if was_training:
            model.train()
    if n == 0:
        return Evaluation(float("nan"), float("nan"), 0)
    metric = None
    if metric_fn is not None:
        metric = float(metric_fn(torch.cat([s for s, _ in kept]), torch.cat([t for _, t in kept])))
    return Evaluation(correct / n, total_loss / n, n, metric)
