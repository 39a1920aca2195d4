"""Plain frozen records of a run: EpochRecord, Run, and the History read-model diagnose and report use."""

from __future__ import annotations

import bisect
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Mapping

__all__ = ["EPOCH_KEYS", "EpochRecord", "Run", "Series", "Histogram", "ArraySnapshot", "History"]

EPOCH_KEYS = ("train_loss", "train_acc", "val_loss", "val_acc", "lr", "seconds")
_NAN = float("nan")


@dataclass(frozen=True)
class EpochRecord:
    """One epoch's numbers: losses are data losses (no L2) on a fixed train subset and on validation."""

    epoch: int
    train_loss: float
    train_acc: float
    val_loss: float
    val_acc: float
    lr: float
    seconds: float
    metric: float = math.nan  # the task's validation metric (val_acc, val_loss or the user's own)

    def to_dict(self) -> dict[str, Any]:
        """Returns the record as a plain dict."""
        return asdict(self)


@dataclass(frozen=True)
class Run:
    """What train() hands back: where the run lives, how it ended and its per-epoch history."""

    dir: Path
    status: str
    diverged_at: int | None
    history: tuple[EpochRecord, ...]
    best_checkpoint: Path | None
    metric: str = "val_acc"
    metric_mode: str = "max"
    error: str | None = None  # the one-line cause when status is "failed"

    @property
    def best_val_acc(self) -> float | None:
        """Returns the best validation accuracy of the run, or None before the first epoch."""
        return max((r.val_acc for r in self.history), default=None)

    @property
    def best_metric(self) -> float | None:
        """Returns the best value of the run's validation metric, or None before the first epoch."""
        values = [r.metric for r in self.history if math.isfinite(r.metric)]
        if not values:
            return None
        return max(values) if self.metric_mode == "max" else min(values)

    def to_dict(self) -> dict[str, Any]:
        """Returns the run as plain data."""
        return {"dir": str(self.dir), "status": self.status, "diverged_at": self.diverged_at,
                "history": [r.to_dict() for r in self.history], "metric": self.metric,
                "metric_mode": self.metric_mode, "best_metric": self.best_metric, "error": self.error,
                "best_checkpoint": str(self.best_checkpoint) if self.best_checkpoint else None}


@dataclass(frozen=True)
class Series:
    """One scalar over time: parallel tuples of steps, (fractional) epochs and values."""

    steps: tuple[int, ...] = ()
    epochs: tuple[float, ...] = ()
    values: tuple[float, ...] = ()

    def __len__(self) -> int:
        return len(self.values)

    @property
    def last(self) -> float:
        """Returns the last value (NaN when empty)."""
        return self.values[-1] if self.values else _NAN

    def since_epoch(self, epoch: float) -> "Series":
        """Returns the part of the series logged after `epoch` (exclusive)."""
        i = bisect.bisect_right(self.epochs, epoch)
        return Series(self.steps[i:], self.epochs[i:], self.values[i:])

    def finite(self) -> tuple[float, ...]:
        """Returns the finite values."""
        return tuple(v for v in self.values if math.isfinite(v))


@dataclass(frozen=True)
class Histogram:
    """A histogram snapshot of one layer's activations ("act") or output gradients ("grad") at a step."""

    step: int
    epoch: float
    layer: str
    kind: str
    counts: tuple[float, ...]
    edges: tuple[float, ...]


@dataclass(frozen=True)
class ArraySnapshot:
    """A stored array (the first layer's weights) at a step: name, shape and flat values."""

    step: int
    epoch: float
    name: str
    shape: tuple[int, ...]
    values: tuple[float, ...]


@dataclass(frozen=True)
class History:
    """Everything recorded about a run, read-only: meta, config, epochs, scalars, histograms, arrays.

    Scalars are keyed "group/name" on disk ("update_ratio/fc1.weight"); group() splits them so
    rules never parse key strings. An epoch stays visible when a field is missing (it reads NaN).
    """

    meta: Mapping[str, str] = field(default_factory=dict)
    config: Mapping[str, Any] = field(default_factory=dict)
    epochs: tuple[EpochRecord, ...] = ()
    scalars: Mapping[str, Series] = field(default_factory=dict)
    histograms: tuple[Histogram, ...] = ()
    arrays: tuple[ArraySnapshot, ...] = ()
    dir: Path | None = None

    def series(self, key: str) -> Series:
        """Returns the series of a scalar key (empty when never logged)."""
        return self.scalars.get(key, Series())

    def group(self, prefix: str) -> dict[str, Series]:
        """Returns {name: series} of every key "prefix/name", in name order."""
        p = prefix + "/"
        return {k[len(p):]: v for k, v in sorted(self.scalars.items()) if k.startswith(p)}

    @property
    def loss(self) -> Series:
        """Returns the per-step training objective."""
        return self.series("loss")

    @property
    def has_telemetry(self) -> bool:
        """Returns True when the run was watched (update ratios or probe statistics were recorded)."""
        return bool(self.group("update_ratio") or self.group("act_mean") or self.meta.get("telemetry") == "on")

    def hist(self, kind: str) -> dict[str, tuple[Histogram, ...]]:
        """Returns {layer: snapshots in step order} of one histogram kind."""
        out: dict[str, list[Histogram]] = {}
        for h in self.histograms:
            if h.kind == kind:
                out.setdefault(h.layer, []).append(h)
        return {k: tuple(sorted(v, key=lambda h: h.step)) for k, v in out.items()}

    def to_dict(self) -> dict[str, Any]:
        """Returns a plain-data summary (meta, config, epochs and the scalar keys)."""
        return {"meta": dict(self.meta), "config": dict(self.config), "epochs": [e.to_dict() for e in self.epochs],
                "scalar_keys": sorted(self.scalars), "histograms": len(self.histograms), "arrays": len(self.arrays)}


def epoch_records(rows: Mapping[int, Mapping[str, float]]) -> tuple[EpochRecord, ...]:
    """Returns EpochRecords from {epoch: {field: value}}; a missing field reads NaN (the epoch stays)."""
    return tuple(EpochRecord(epoch=e, **{k: float(d[k]) if d.get(k) is not None else _NAN
                                         for k in (*EPOCH_KEYS, "metric")})
                 for e, d in sorted(rows.items()))
