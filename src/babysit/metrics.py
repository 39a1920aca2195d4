"""The validation metric that decides "better": val_acc (default), val_loss, or the user's own function.

Checkpoint names, the best-checkpoint choice, early stopping, the plateau schedule and search all use it.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ._check import check_choice
from ._optional import import_ref
from .errors import ConfigError

__all__ = ["METRICS", "Metric", "resolve_metric"]

METRICS = ("val_acc", "val_loss")
MetricFn = Callable[[Any, Any], float]


@dataclass(frozen=True)
class Metric:
    """A validation metric: its name (as in checkpoint names), its direction and, if custom, fn(scores, y)."""

    name: str
    mode: str  # "max" | "min"
    fn: MetricFn | None = None
    ref: str | None = None

    def score(self, value: float) -> float:
        """Returns value on a higher-is-better scale (negated for a "min" metric)."""
        return value if self.mode == "max" else -value

    def better(self, a: float, b: float) -> bool:
        """Returns True when a is strictly better than b."""
        return self.score(a) > self.score(b)

    @property
    def worst(self) -> float:
        """Returns the value every real one beats."""
        return float("-inf") if self.mode == "max" else float("inf")

    def describe(self) -> str:
        """Returns e.g. "val_acc (higher is better)"."""
        return f"{self.name} ({'higher' if self.mode == 'max' else 'lower'} is better)"


def resolve_metric(metric: str | MetricFn | Metric = "val_acc", mode: str | None = None,
                   search: tuple[str, ...] = ()) -> Metric:
    """Returns the Metric for "val_acc", "val_loss", "package.module:function" or a callable fn(scores, y) -> float.

    A custom metric is maximised unless mode="min" (or the function has an attribute mode = "min").
    """
    if isinstance(metric, Metric):
        return metric
    if mode is not None:
        check_choice("metric_mode", mode, ("max", "min"))
    if metric == "val_acc":
        return Metric("val_acc", mode or "max")
    if metric == "val_loss":
        return Metric("val_loss", mode or "min")
    ref = None
    if isinstance(metric, str):
        if ":" not in metric:
            raise ConfigError(f"metric={metric!r}: unknown; valid: {', '.join(METRICS)} or 'package.module:function' "
                              "naming fn(scores, y) -> float")
        ref, metric = metric, import_ref(metric, what="metric", signature="fn(scores, y) -> float", search=search)
    if not callable(metric):
        raise ConfigError(f"metric={metric!r}: must be a name ({', '.join(METRICS)}) or a callable fn(scores, y)")
    name = re.sub(r"[^a-z0-9_]+", "_", getattr(metric, "__name__", "metric").lower()).strip("_") or "metric"
    if name in ("val", "lambda"):
        name = "metric"
    chosen = mode or getattr(metric, "mode", "max")
    return Metric(name, check_choice("metric mode", chosen, ("max", "min")), metric, ref)
