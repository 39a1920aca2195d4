"""The watch train() attaches: the task's validation split as the probe, train's own store and step count."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..store import RunStore
from ..task import Task
from .watch import Watch

__all__ = ["watch_training"]


def watch_training(task: Task, model: nn.Module, optimizer: torch.optim.Optimizer, store: RunStore, *,
                   start_step: int = 0, start_epoch: int = 0, **options: Any) -> Watch:
    """Returns a Watch on train()'s model that writes into train's store, probing the validation split."""
    val = task.splits.val
    probe = val if val is not None and len(val) > 0 else None  # type: ignore[arg-type]
    return Watch(model, optimizer, None, task.num_classes, task.loss_fn, probe, store=store,
                 start_step=start_step, start_epoch=start_epoch, **options)
