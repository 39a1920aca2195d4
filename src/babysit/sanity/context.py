"""What every sanity check shares: the data as tensors, seeded model builds, modes and a short training.

The trainings use a fixed, robust update rule (Adam, lr 1e-3 unless overridden), so the checks test
the model, the loss and the data, not the user's learning rate.
"""

from __future__ import annotations

import copy
import itertools
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import TensorDataset

from ..data import batches, tensors
from ..errors import ConfigError
from ..optim import DEFAULT_LR, build_optimizer, is_full_batch
from ..step import closure_step, train_step
from ..task import Task, validate_hp

__all__ = [
    "DEFAULT_OPTIMIZER",
    "Context",
    "accuracy",
    "build",
    "device_of",
    "has_batchnorm",
    "has_dropout",
    "make_context",
    "sample",
    "train_no_dropout",
    "trainer",
]

DEFAULT_OPTIMIZER: dict[str, Any] = {"optimizer": "adam", "lr": 1e-3}


@dataclass(frozen=True, eq=False)
class Context:
    """The inputs of one sanity run: the task, validated hp, seed, the checks' optimizer and the data tensors."""

    task: Task
    hp: Mapping[str, Any]
    seed: int
    optimizer: Mapping[str, Any]
    x: Tensor
    y: Tensor
    x_val: Tensor
    y_val: Tensor

    @property
    def reg(self) -> float:
        """Returns the user's regularisation strength hp['reg'] (0 when absent)."""
        return float(self.hp.get("reg") or 0.0)

    def generator(self, offset: int = 0) -> torch.Generator:
        """Returns a CPU generator seeded from the run's seed (offset gives independent streams)."""
        return torch.Generator().manual_seed(self.seed + offset)


def _optimizer_hp(optimizer: Mapping[str, Any] | None) -> dict[str, Any]:
    """Returns the checks' update rule settings, validated by building it once on a dummy tensor."""
    if optimizer is None:
        spec = dict(DEFAULT_OPTIMIZER)
    elif isinstance(optimizer, Mapping):
        spec = {"optimizer": "adam", **optimizer}
    else:
        raise ConfigError(f"optimizer={optimizer!r}: must be a dict such as {DEFAULT_OPTIMIZER!r}")
    spec.setdefault("lr", DEFAULT_LR.get(spec["optimizer"], 1e-3))
    build_optimizer([torch.zeros(1, requires_grad=True)], spec)
    return spec


def make_context(task: Task, hp: Mapping[str, Any], seed: int, optimizer: Mapping[str, Any] | None) -> Context:
    """Returns the Context of one sanity run; raises ConfigError for a bad task, hp, seed or optimizer."""
    if not isinstance(task, Task):
        raise ConfigError(f"task must be a babysit Task, got {type(task).__name__}; build one with bs.Task(...)")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ConfigError(f"seed={seed!r}: must be an integer, e.g. 0")
    x, y = tensors(task.splits.train)
    x_val, y_val = tensors(task.splits.val)
    return Context(task, validate_hp(hp), seed, _optimizer_hp(optimizer), x, y, x_val, y_val)


def build(ctx: Context) -> nn.Module:
    """Returns a fresh model from the user's hp, seeded so every check starts from the same init.

    A copy: a build function that hands back the caller's own model object must not see it trained.
    """
    torch.manual_seed(ctx.seed)
    model = ctx.task.build_model(dict(ctx.hp))
    try:
        return copy.deepcopy(model)
    except Exception as exc:
        raise ConfigError(f"the model cannot be copied ({exc}); the sanity checks train a copy so that "
                          "the caller's model stays untouched: make it deep-copyable") from exc


def device_of(model: nn.Module) -> torch.device:
    """Returns the device of the model's first parameter (CPU for a model without parameters)."""
    return next((p.device for p in model.parameters()), torch.device("cpu"))


def sample(n: int, k: int, gen: torch.Generator, skip: int = 0) -> Tensor:
    """Returns k indices of range(n) in a seeded random order, after skipping the first `skip` of that order."""
    return torch.randperm(n, generator=gen)[skip : skip + k]


def has_batchnorm(model: nn.Module) -> bool:
    """Returns True when the model normalises over the batch (any _BatchNorm)."""
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())


def has_dropout(model: nn.Module) -> bool:
    """Returns True when the model has a dropout layer."""
    return any(isinstance(m, nn.modules.dropout._DropoutNd) for m in model.modules())


def train_no_dropout(model: nn.Module) -> nn.Module:
    """Returns the model in train mode with dropout off: the first step's forward, made deterministic.

    Batch normalisation keeps its train-mode batch statistics: that is what training starts from.
    """
    model.train()
    for m in model.modules():
        if isinstance(m, nn.modules.dropout._DropoutNd):
            m.eval()
    return model


def trainer(ctx: Context, model: nn.Module, x: Tensor, y: Tensor, batch_size: int,
            gen: torch.Generator) -> Iterator[float]:
    """Returns an endless stream of batch losses (before each step), reg = 0, with the checks' update rule.

    Full-batch rules (L-BFGS) take the whole of x each step.
    """
    params = [p for p in model.parameters() if p.requires_grad]
    opt = build_optimizer(params, ctx.optimizer) if params else None
    full = is_full_batch(ctx.optimizer["optimizer"])
    step = closure_step if full else train_step
    dev = device_of(model)
    data = TensorDataset(x.to(dev), y.to(dev))
    size = len(x) if full else min(batch_size, len(x))
    for _ in itertools.count():
        for xb, yb in batches(data, size, shuffle=True, generator=gen):
            if opt is None:  # nothing to train: the loss stays where it is
                with torch.no_grad():
                    yield float(ctx.task.loss_fn(model(xb), yb))
            else:
                yield step(model, xb, yb, ctx.task.loss_fn, [], 0.0, opt)


@torch.no_grad()
def accuracy(model: nn.Module, x: Tensor, y: Tensor) -> float:
    """Returns the accuracy of the model on (x, y) in eval mode, restoring its mode after."""
    was_training = model.training
    model.eval()
    try:
        dev = device_of(model)
        return float((model(x.to(dev)).argmax(1) == y.to(dev)).float().mean())
    finally:
        model.train(was_training)
