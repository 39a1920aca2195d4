"""Running averages of the weights (EMA with a warm-up) and the snapshot-ensemble learning rate.

The notes: a running average of the parameters "almost always" gains a percent or two. The average
is torch.optim.swa_utils.AveragedModel with an exponential update whose decay warms up as in timm,
decay_t = min(decay, (1 + t) / (10 + t)), so the first averages are not dominated by the random
initialisation. BatchNorm's running statistics are averaged with the weights (use_buffers=True),
so the averaged model carries statistics that belong to its own weights' neighbourhood; integer
buffers (num_batches_tracked) follow the model.

Snapshot ensembles (Huang et al. 2017): k cosine cycles over the run, restarting at integer epochs;
the model at the end of each cycle is kept.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel

from .errors import ConfigError

__all__ = [
    "SnapshotSchedule",
    "check_snapshots",
    "ema_avg_fn",
    "ema_decay",
    "ema_weights",
    "make_ema",
    "snapshot_epochs",
]


def ema_decay(decay: float, updates: int) -> float:
    """Returns the decay used after `updates` earlier updates: min(decay, (1 + t) / (10 + t)) (timm's warm-up)."""
    return min(decay, (1.0 + updates) / (10.0 + updates))


_MultiAvg = Callable[[Sequence[torch.Tensor], Sequence[torch.Tensor], "torch.Tensor | int"], None]


def ema_avg_fn(decay: float) -> _MultiAvg:
    """Returns a multi_avg_fn for AveragedModel: avg <- d_t * avg + (1 - d_t) * new (integers copied)."""

    def fn(averaged: Sequence[torch.Tensor], current: Sequence[torch.Tensor], num_averaged: torch.Tensor | int) -> None:
        if not averaged:
            return
        if not averaged[0].is_floating_point():  # one dtype per call: num_batches_tracked follows the model
            for a, c in zip(averaged, current):
                a.copy_(c)
            return
        d = ema_decay(decay, int(num_averaged))
        torch._foreach_lerp_(list(averaged), list(current), 1.0 - d)

    return fn


def make_ema(model: nn.Module, decay: float) -> AveragedModel:
    """Returns the AveragedModel that keeps the EMA of model's parameters and buffers (decay warmed up)."""
    return AveragedModel(model, multi_avg_fn=ema_avg_fn(decay), use_buffers=True)  # type: ignore[arg-type]


def ema_weights(ema_state: Mapping[str, Any]) -> dict[str, Any]:
    """Returns the model's state_dict inside an AveragedModel's state_dict (its "module." entries)."""
    return {k[len("module."):]: v for k, v in ema_state.items() if k.startswith("module.")}


def snapshot_epochs(epochs: int, k: int) -> tuple[int, ...]:
    """Returns the epochs at which the k cycles end: round(epochs * j / k) for j = 1..k."""
    return tuple(sorted({round(epochs * j / k) for j in range(1, k + 1)}))


def check_snapshots(hp: Mapping[str, Any], epochs: int) -> int | None:
    """Returns hp["snapshots"] (None when unset) after checking it fits the run; ConfigError otherwise."""
    k = hp.get("snapshots")
    if k is None:
        return None
    if hp.get("schedule", "constant") != "constant":
        raise ConfigError(f"hp['snapshots']={k!r} sets its own cyclic cosine learning rate; hp['schedule']="
                          f"{hp['schedule']!r} cannot run beside it: leave schedule at 'constant'")
    if int(k) > epochs:
        raise ConfigError(f"hp['snapshots']={k!r}: more cycles than epochs ({epochs}); use at most {epochs} "
                          "snapshots or more epochs")
    return int(k)


class SnapshotSchedule:
    """The base schedule's rate under k cosine cycles: lr0 * (1 + cos(pi * u)) / 2, u the place in the cycle."""

    def __init__(self, base: Any, epochs: int, k: int) -> None:
        self.base, self.ends = base, snapshot_epochs(epochs, k)
        self.starts = (0, *self.ends[:-1])
        self.per_epoch = False
        self.name = base.name

    def lr(self, epoch: float) -> float:
        """Returns the learning rate at (fractional) epoch."""
        for start, end in zip(self.starts, self.ends):
            if epoch < end:
                u = (epoch - start) / (end - start)
                return float(self.base.base_lr * 0.5 * (1.0 + math.cos(math.pi * u)))
        return float(self.base.base_lr)  # past the last cycle (a resume asked for more epochs): restart

    def apply(self, optimizer: torch.optim.Optimizer, epoch: float) -> float:
        """Returns the lr it wrote into every param group (the base schedule's momentum still applies)."""
        self.base.apply(optimizer, epoch)
        lr = self.lr(epoch)
        for group in optimizer.param_groups:
            group["lr"] = lr
        return lr

    def end_epoch(self, value: float) -> None:
        """Returns None (the base schedule is constant)."""
        self.base.end_epoch(value)

    def state_dict(self) -> dict[str, Any]:
        """Returns the base schedule's state."""
        return dict(self.base.state_dict())

    def load_state_dict(self, d: Mapping[str, Any]) -> None:
        """Returns None; restores the base schedule's state."""
        self.base.load_state_dict(d)
