"""Learning-rate schedules as pure functions of the epoch, the plateau decay, and the momentum schedule.

Time is measured in epochs, possibly fractional: the training loop passes epoch = step / steps_per_epoch,
so the rate changes every step. The notes prefer step decay: its "fraction and step timings in units
of epochs are more interpretable than the hyperparameter k".
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch

from .._check import check_number
from ..errors import ConfigError
from ..hparams import KEYS, SCHEDULES
from .rules import _get, _lr, check_rule, has_momentum, set_momentum

__all__ = ["SCHEDULES", "Plateau", "Schedule", "build_schedule", "lr_factor", "momentum_at"]

_MOMENTUM_KEYS = ("momentum_start", "momentum_end", "momentum_epochs")


@dataclass(frozen=True)
class _LrParams:
    schedule: str
    step_every: int
    step_factor: float
    exp_k: float
    inv_t_k: float
    plateau_factor: float
    plateau_patience: int


@dataclass(frozen=True)
class _MomentumParams:
    start: float
    end: float
    epochs: float


def _parse_lr(hp: Mapping[str, Any]) -> _LrParams:
    """Returns the validated learning-rate schedule keys of hp, with the registry's defaults filled in."""
    return _LrParams(schedule=_get(hp, "schedule"), step_every=_get(hp, "step_every"),
                     step_factor=_get(hp, "step_factor"), exp_k=_get(hp, "exp_k"), inv_t_k=_get(hp, "inv_t_k"),
                     plateau_factor=_get(hp, "plateau_factor"), plateau_patience=_get(hp, "plateau_patience"))


def _parse_momentum(hp: Mapping[str, Any]) -> _MomentumParams | None:
    """Returns the validated momentum schedule of hp, or None when none of its three keys is set."""
    given = [key for key in _MOMENTUM_KEYS if hp.get(key) is not None]
    if not given:
        return None
    missing = [key for key in _MOMENTUM_KEYS if key not in given]
    if missing:
        raise ConfigError(
            f"hp[{given[0]!r}]={hp[given[0]]!r}: the momentum schedule needs all of "
            f"{', '.join(_MOMENTUM_KEYS)}; missing {', '.join(missing)} (set all three or none)"
        )
    optimizer = check_rule(hp.get("optimizer", "sgd"))
    if not has_momentum(optimizer):
        raise ConfigError(
            f"{given[0]} is set but optimizer {optimizer!r} has no momentum; use 'momentum', 'nesterov' or 'adam'"
        )
    return _MomentumParams(start=_get(hp, "momentum_start"), end=_get(hp, "momentum_end"),
                           epochs=_get(hp, "momentum_epochs"))


def _check_epoch(epoch: float) -> float:
    """Returns epoch as a float; ConfigError when it is negative or not a finite number."""
    return float(check_number("epoch", epoch, low=0.0, hint="pass step / steps_per_epoch"))


def _factor(p: _LrParams, epoch: float) -> float:
    """Returns the schedule's multiplier of the base learning rate at epoch (plateau: 1)."""
    if p.schedule == "step":
        return p.step_factor ** math.floor(epoch / p.step_every)
    if p.schedule == "exp":
        return math.exp(-p.exp_k * epoch)
    if p.schedule == "inv_t":
        return 1.0 / (1.0 + p.inv_t_k * epoch)
    return 1.0


def _momentum(m: _MomentumParams, epoch: float) -> float:
    """Returns the momentum at epoch: linear from start to end over m.epochs, then end."""
    return m.start + (m.end - m.start) * min(epoch / m.epochs, 1.0)


def lr_factor(hp: Mapping[str, Any], epoch: float) -> float:
    """Returns the multiplier of the base rate at epoch: step, exp(-k t), 1/(1+k t); constant and plateau 1.

    step: step_factor ** floor(epoch / step_every), "a half every 5 epochs" by default.
    """
    return _factor(_parse_lr(hp), _check_epoch(epoch))


def momentum_at(hp: Mapping[str, Any], epoch: float) -> float | None:
    """Returns the scheduled momentum at epoch, or None when hp sets no momentum schedule.

    The notes: "start with momentum of about 0.5 and anneal it to 0.99 or so over multiple epochs".
    """
    m = _parse_momentum(hp)
    return None if m is None else _momentum(m, _check_epoch(epoch))


class Plateau:
    """Multiplies the rate by factor when validation accuracy has not improved for patience epochs.

    The notes' heuristic: "reduce the learning rate by a constant (e.g. 0.5) whenever the
    validation error stops improving".
    """

    def __init__(self, factor: float, patience: int, threshold: float = 0.0) -> None:
        self.factor = KEYS["plateau_factor"].check(factor)
        self.patience = KEYS["plateau_patience"].check(patience)
        self.threshold = check_number("threshold", threshold, low=0.0,
                                      hint="the least gain of the metric that counts as improvement")
        self.best = -math.inf
        self.bad_epochs = 0
        self.scale = 1.0

    def update(self, val_acc: float) -> bool:
        """Returns True when this epoch's val_acc triggered a decay; then the patience count restarts."""
        if val_acc > self.best + self.threshold:
            self.best = float(val_acc)
            self.bad_epochs = 0
            return False
        self.bad_epochs += 1
        if self.bad_epochs < self.patience:
            return False
        self.scale *= self.factor
        self.bad_epochs = 0
        return True

    def state_dict(self) -> dict[str, float | int]:
        """Returns the running state as plain floats and ints."""
        return {"best": self.best, "bad_epochs": self.bad_epochs, "scale": self.scale}

    def load_state_dict(self, d: Mapping[str, Any]) -> None:
        """Returns None; restores the state saved by state_dict."""
        self.best = float(d["best"])
        self.bad_epochs = int(d["bad_epochs"])
        self.scale = float(d["scale"])


class Schedule:
    """The learning rate and momentum of one run as functions of the (fractional) epoch."""

    def __init__(self, hp: Mapping[str, Any]) -> None:
        optimizer = check_rule(hp.get("optimizer", "sgd"))
        self.base_lr = _lr(hp, optimizer)
        self._lr = _parse_lr(hp)
        self._momentum = _parse_momentum(hp)
        self.name = self._lr.schedule
        self.plateau: Plateau | None = None
        if self.name == "plateau":
            self.plateau = Plateau(self._lr.plateau_factor, self._lr.plateau_patience)
        # True when the lr and momentum can only change between epochs (constant, plateau; no momentum schedule)
        self.per_epoch = self.name in ("constant", "plateau") and self._momentum is None

    def lr(self, epoch: float) -> float:
        """Returns the learning rate at epoch: base lr x schedule factor x plateau decays so far."""
        scale = 1.0 if self.plateau is None else self.plateau.scale
        return self.base_lr * _factor(self._lr, _check_epoch(epoch)) * scale

    def momentum(self, epoch: float) -> float | None:
        """Returns the scheduled momentum (SGD momentum or Adam beta1) at epoch, or None if unscheduled."""
        return None if self._momentum is None else _momentum(self._momentum, _check_epoch(epoch))

    def apply(self, optimizer: torch.optim.Optimizer, epoch: float) -> float:
        """Returns the lr it wrote into every param group (with the scheduled momentum, if any)."""
        lr = self.lr(epoch)
        for group in optimizer.param_groups:
            group["lr"] = lr
        mu = self.momentum(epoch)
        if mu is not None:
            set_momentum(optimizer, mu)
        return lr

    def end_epoch(self, val_acc: float) -> None:
        """Returns None; feeds the epoch's validation accuracy to the plateau decay, if scheduled."""
        if self.plateau is not None:
            self.plateau.update(val_acc)

    def state_dict(self) -> dict[str, Any]:
        """Returns the running state as plain data (safe for torch.load(weights_only=True))."""
        return {"schedule": self.name, "plateau": None if self.plateau is None else self.plateau.state_dict()}

    def load_state_dict(self, d: Mapping[str, Any]) -> None:
        """Returns None; restores state_dict output, refusing one saved under another schedule."""
        if d.get("schedule") != self.name:
            raise ConfigError(
                f"hp['schedule']={self.name!r}: the saved state is for schedule {d.get('schedule')!r}; "
                "resume with the hyperparameters the run was started with"
            )
        if self.plateau is not None:
            self.plateau.load_state_dict(d["plateau"])


def build_schedule(hp: Mapping[str, Any]) -> Schedule:
    """Returns the validated Schedule for hp (schedule [constant], its keys, and the momentum schedule)."""
    return Schedule(hp)
