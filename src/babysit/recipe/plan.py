"""The recipe's plan: a budget (minutes or epochs) divided between a coarse, a fine and a final stage.

An epoch budget is divided by a pure function: the same config and seed give the same numbers. A time
budget is converted to epochs stage by stage: the coarse stage from a short calibration (three points
of the space), the fine stage from the coarse stage's top trials' measured epochs, the final stage
from the fine stage's (the best configurations are often the largest models: sized from the
calibration alone, a 2-minute budget ran 2.5-3.8 minutes and a 10-minute MLP recipe over 15); each
conversion is recorded in recipe.json, and a resumed recipe uses it.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Callable, Mapping

from ..errors import ConfigError
from ..search import Stage

__all__ = ["Budget", "Plan", "plan_stages", "final_stage", "USABLE", "SHARES", "final_fixed"]

USABLE = 0.75  # of a time budget for training; the rest: preflight, evaluation, reports, two busy processes
SHARES = (0.2, 0.3, 0.5)  # of the epochs: coarse (1-epoch trials), fine, final (few long trainings)
COARSE = (8, 200)  # trials of the coarse stage, at least and at most
FINE = (4, 40)
FINE_EPOCHS = (2, 30)


@dataclass(frozen=True)
class Budget:
    """What the recipe may spend: wall-clock `minutes` (converted to epochs once) or total `epochs`."""

    minutes: float | None = None
    epochs: int | None = None

    def __post_init__(self) -> None:
        if (self.minutes is None) == (self.epochs is None):
            raise ConfigError(f"budget={self!r}: give exactly one of minutes (wall clock, e.g. Budget(minutes=10)) "
                              "or epochs (total training epochs, e.g. Budget(epochs=400))")
        for name in ("minutes", "epochs"):
            v = getattr(self, name)
            if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v)
                                  or v <= 0 or (name == "epochs" and int(v) != v)):
                raise ConfigError(f"budget {name}={v!r}: must be a positive {'integer' if name == 'epochs' else 'number'}"
                                  f", e.g. {'400' if name == 'epochs' else '10'}")

    @classmethod
    def of(cls, value: Any) -> "Budget":
        """Returns a Budget from a Budget or {"minutes": M} / {"epochs": E}."""
        if isinstance(value, Budget):
            return value
        if isinstance(value, Mapping) and set(value) <= {"minutes", "epochs"}:
            return cls(**dict(value))
        raise ConfigError(f"budget={value!r}: use bs.Budget(minutes=10) or bs.Budget(epochs=400) "
                          "(or {'minutes': 10})")


@dataclass(frozen=True)
class Plan:
    """The recorded plan: total epochs, the stages, and the calibration that converted minutes (if any)."""

    epochs: int
    stages: tuple[Stage, ...]
    minutes: float | None = None
    seconds_per_epoch: float | None = None
    overhead_seconds: float = 0.0  # per trial: start-up, evaluation, checkpoint, the store's bookkeeping
    fine_measured: bool = False  # a time budget's fine stage was sized from the coarse stage's measured epochs
    fine_seconds_per_epoch: float | None = None
    final_measured: bool = False  # a time budget's final stage was sized from the fine stage's measured epochs
    final_seconds_per_epoch: float | None = None

    def to_dict(self) -> dict[str, Any]:
        """Returns the plan as plain data."""
        d = asdict(self)
        d["stages"] = [s.to_dict() for s in self.stages]
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "Plan":
        """Returns the plan recorded by to_dict."""
        return cls(int(d["epochs"]), tuple(Stage(**s) for s in d["stages"]), d.get("minutes"),
                   d.get("seconds_per_epoch"), float(d.get("overhead_seconds", 0.0)),
                   bool(d.get("fine_measured", False)), d.get("fine_seconds_per_epoch"),
                   bool(d.get("final_measured", False)), d.get("final_seconds_per_epoch"))


def final_fixed(epochs: int, fixed: Mapping[str, Any], space: Mapping[str, Any], steps_per_epoch: int) -> dict[str, Any]:
    """Returns the final stage's own hyperparameters: step decay of the rate and a running average of weights.

    The notes: decay the learning rate (step decay, x0.3 twice); "almost always" a percent or two from a
    running average of the parameters. A key the user fixed or searched is left as the user set it.
    """
    taken = set(fixed) | set(space)
    out: dict[str, Any] = {}
    if "schedule" not in taken:
        out.update(schedule="step", step_every=max(1, math.ceil(epochs / 3)), step_factor=0.3)
    if "ema" not in taken:
        steps = max(1, epochs * steps_per_epoch)
        out["ema"] = round(min(0.999, max(0.9, 1.0 - 20.0 / steps)), 6)  # the average spans <= 1/20 of the run
    return out


def _clamp(v: float, lo: int, hi: int) -> int:
    return int(min(hi, max(lo, math.floor(v))))


def minimum_epochs(final_models: int, overhead: float) -> int:
    """Returns the smallest budget in epochs the three stages fit in."""
    return math.ceil(COARSE[0] * (1 + overhead) + FINE[0] * (FINE_EPOCHS[0] + overhead)
                     + final_models * (2 * FINE_EPOCHS[0] + overhead))


def plan_stages(epochs: int, final_models: int, *, overhead: float = 0.0,
                final: Callable[[int], Mapping[str, Any]] | None = None) -> tuple[Stage, ...]:
    """Returns (coarse, fine, final) stages that spend about `epochs` epochs in all (SHARES of it each).

    overhead: each trial's fixed cost, in epochs. The final stage trains the fine stage's top
    `final_models` configurations again, longer, with its own hyperparameters (final(its epochs)), and
    telemetry.
    """
    need = minimum_epochs(final_models, overhead)
    if epochs < need:
        raise ConfigError(f"budget of {epochs} epochs is too small for the recipe's three stages with "
                          f"{final_models} final models: give at least {need} epochs (or more minutes), or fewer "
                          "final models")
    e2 = max(2 * FINE_EPOCHS[0], math.floor(SHARES[2] * epochs / final_models - overhead))
    e1 = _clamp(e2 / 6, *FINE_EPOCHS)
    n0 = _clamp(SHARES[0] * epochs / (1 + overhead), *COARSE)
    n1 = _clamp(SHARES[1] * epochs / (e1 + overhead), *FINE)
    rest = epochs - n0 * (1 + overhead) - n1 * (e1 + overhead)
    e2 = math.floor(rest / final_models - overhead)
    fine = Stage(trials=n1, epochs=e1)
    return Stage(trials=n0, epochs=1), fine, final_stage(e2, final_models, fine, final)


def final_stage(epochs: int, final_models: int, fine: Stage,
                final: Callable[[int], Mapping[str, Any]] | None = None) -> Stage:
    """Returns the final stage: the fine stage's top configurations trained again for `epochs` (at least
    twice the fine stage's), with the final hyperparameters final(epochs) and telemetry."""
    e2 = max(2 * FINE_EPOCHS[0], fine.epochs + 1, int(epochs))
    return Stage(trials=final_models, epochs=e2, retrain_top=min(final_models, fine.trials), keep=final_models,
                 fixed=dict(final(e2) if final is not None else {}), monitor=True)
