"""Facts the rules share, each a small pure function of a History: initial loss, windows, medians, layers."""

from __future__ import annotations

import json
import math
import statistics
from dataclasses import dataclass
from typing import Any

from ..store import EpochRecord, History, Series

__all__ = ["Context", "initial_loss", "chance_loss", "last_window", "weight_ratios", "dead_units", "saturation",
           "fit_epochs", "loss_stuck", "units_died", "meta_json", "median", "fmt"]


@dataclass(frozen=True)
class Context:
    """What a rule reads besides the History: the settings and, for underfitting, a reference run."""

    settings: Any
    reference: History | None = None


def fmt(x: float) -> str:
    """Returns a number the way findings print it (3 significant digits, scientific when small)."""
    if not math.isfinite(x):
        return str(x)
    return f"{x:.2e}" if x != 0 and (abs(x) < 1e-2 or abs(x) >= 1e4) else f"{x:.3g}"


def median(values: Any) -> float:
    """Returns the median of the finite values (NaN when none)."""
    finite = [v for v in values if math.isfinite(v)]
    return statistics.median(finite) if finite else float("nan")


def meta_json(h: History, key: str, default: Any) -> Any:
    """Returns a JSON-valued meta entry (default when absent or unreadable)."""
    try:
        return json.loads(h.meta[key])
    except (KeyError, TypeError, ValueError):
        return default


def initial_loss(h: History) -> tuple[float, str] | None:
    """Returns (loss at initialisation, where it was measured): the probe at step 0, else the first step."""
    probe = h.series("probe/loss")
    if probe.values and probe.steps[0] == 0 and math.isfinite(probe.values[0]):
        return probe.values[0], "data loss on the probe batch before the first step"
    first = h.loss.finite()
    return (first[0], "objective of the first training batch") if first else None


def chance_loss(h: History) -> tuple[float, int, str] | None:
    """Returns (chance-level loss, classes, loss kind) when the run knows its classes and loss kind."""
    task = h.config.get("task", {}) if isinstance(h.config.get("task"), dict) else {}
    classes = h.meta.get("num_classes") or task.get("num_classes")
    kind = h.meta.get("loss_kind") or task.get("loss_kind")
    if not classes or classes == "None":
        return None
    c = int(classes)
    if kind == "softmax":
        return math.log(c), c, kind
    if kind == "svm":
        return float(c - 1), c, kind
    return None


def last_window(h: History, s: Series) -> Series:
    """Returns the part of a series in the last epoch (the last fifth of it when no epoch has ended)."""
    if h.epochs and s.epochs:
        part = s.since_epoch(h.epochs[-1].epoch - 1 + 1e-9)
        if len(part):
            return part
    n = max(1, len(s) // 5)
    return Series(s.steps[-n:], s.epochs[-n:], s.values[-n:])


def weight_ratios(h: History) -> dict[str, float]:
    """Returns {weight tensor: median update:weight ratio over the last epoch} (biases left out, as the notes do)."""
    return {name: median(last_window(h, s).values) for name, s in h.group("update_ratio").items()
            if not name.endswith("bias") and len(s)}


def dead_units(h: History) -> dict[str, tuple[float, float]]:
    """Returns {layer: (dead fraction at initialisation or first probe, at the last probe)}."""
    return {name: (s.values[0], s.values[-1]) for name, s in h.group("act_dead").items() if len(s)}


def saturation(h: History) -> dict[str, float]:
    """Returns {layer: saturated fraction at the last probe}."""
    return {name: s.values[-1] for name, s in h.group("act_saturated").items() if len(s)}


def fit_epochs(h: History) -> list[EpochRecord]:
    """Returns the epochs that carry both a train and a validation accuracy."""
    return [e for e in h.epochs if math.isfinite(e.train_acc) and math.isfinite(e.val_acc)]


def loss_stuck(h: History, t: Any, min_epochs: int = 2) -> bool:
    """Returns True when, after min_epochs epochs, the last epoch's loss is above stuck_fraction of the initial loss.

    A first epoch whose loss has not fallen yet is common in healthy runs: one epoch alone proves nothing.
    """
    init = initial_loss(h)
    window = last_window(h, h.loss).finite()
    return (init is not None and bool(window) and len(h.epochs) >= min_epochs
            and statistics.fmean(window) > t["stuck_fraction"] * init[0])


def units_died(h: History, t: Any) -> dict[str, tuple[float, float]]:
    """Returns the layers alive at initialisation (< dead_info dead) whose units died in training (>= dead_warn)."""
    return {name: (s.values[0], s.values[-1]) for name, s in h.group("act_dead").items()
            if len(s) >= 2 and s.steps[0] == 0 and s.values[0] < t["dead_info"] and s.values[-1] >= t["dead_warn"]}
