"""lr_find(task, hp): the learning-rate range test (Smith 2015), with the update:weight ratio alongside.

The learning rate rises exponentially over a few hundred steps; the loss first does nothing (too
low), then falls, then blows up (too high). The suggestion is a value and a log range that a
search's first stage can start from. The notes' ratio of update to weight magnitudes (~1e-3) is
recorded too: it says how far each learning rate moves the weights.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Mapping

import torch

from .. import data as data_mod
from ..errors import ConfigError
from ..losses import reg_params
from ..optim import build_optimizer
from ..step import train_step
from ..train import pick_device, resolve_hp

__all__ = ["LRFind", "lr_find"]


@dataclass(frozen=True)
class LRFind:
    """The range test's curve (lrs, smoothed losses, update:weight ratios) and its suggestion.

    suggestion: a tenth of the rate at the loss minimum (clipped into range); range: from where the
    loss starts falling to the minimum, at least a decade wide.
    """

    lrs: tuple[float, ...]
    losses: tuple[float, ...]
    ratios: tuple[float, ...]
    suggestion: float
    range: tuple[float, float]

    def to_dict(self) -> dict[str, Any]:
        """Returns the record as plain data."""
        return asdict(self)

    def plot(self, path: str | Path) -> Path:
        """Returns the path of a PNG with the loss and the update:weight ratio against the learning rate."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, (a, b) = plt.subplots(2, 1, sharex=True, figsize=(6, 5))
        a.plot(self.lrs, self.losses)
        a.set_ylabel("loss (smoothed)")
        b.plot(self.lrs, self.ratios)
        b.set_yscale("log")
        b.set_ylabel("update:weight")
        b.set_xlabel("learning rate")
        for ax in (a, b):
            ax.set_xscale("log")
            ax.axvline(self.suggestion, color="r", ls="--")
            ax.axvspan(*self.range, color="g", alpha=0.1)
        fig.tight_layout()
        fig.savefig(path)
        plt.close(fig)
        return Path(path)


def _batches(train: Any, batch_size: int, gen: torch.Generator) -> Any:
    while True:
        yield from data_mod.batches(train, batch_size, shuffle=True, generator=gen)


def _suggest(lrs: list[float], losses: list[float]) -> tuple[float, tuple[float, float]]:
    i_min = min(range(len(losses)), key=lambda i: losses[i])
    start = sum(losses[:5]) / min(5, len(losses))
    drop = start - losses[i_min]
    i_lo = next((i for i in range(i_min + 1) if losses[i] < start - 0.1 * drop), 0) if drop > 0 else 0
    lo, hi = lrs[i_lo], lrs[i_min]
    if hi / lo < 10:  # at least a decade, centred on the geometric middle
        mid = math.sqrt(lo * hi)
        lo, hi = mid / math.sqrt(10), mid * math.sqrt(10)
    value = min(max(lrs[i_min] / 10, lo), hi)
    return value, (lo, hi)


def _ramp(task: Any, hp: Mapping[str, Any], steps: int, lr_min: float, lr_max: float, seed: int, dev: Any,
          beta: float) -> tuple[list[float], list[float], list[float]]:
    """Returns (lrs, smoothed losses, update:weight ratios) of the exponential ramp, up to divergence."""
    torch.manual_seed(seed)
    model = task.build_model(hp).to(dev)
    opt = build_optimizer(model.parameters(), hp)
    weights, reg, clip = reg_params(model), float(hp["reg"]), hp.get("clip_norm")
    it = _batches(data_mod.to_device(task.splits.train, dev), int(hp["batch_size"]),
                  torch.Generator().manual_seed(seed))
    lrs: list[float] = []
    losses: list[float] = []
    ratios: list[float] = []
    avg, best = 0.0, math.inf
    for i in range(steps):
        lr = lr_min * (lr_max / lr_min) ** (i / (steps - 1))
        for g in opt.param_groups:
            g["lr"] = lr
        before = torch.cat([w.detach().flatten() for w in weights])
        x, y = next(it)
        loss = train_step(model, x, y, task.loss_fn, weights, reg, opt, clip)
        if not math.isfinite(loss):
            break
        with torch.no_grad():
            after = torch.cat([w.detach().flatten() for w in weights])
            ratios.append(float((after - before).norm()) / (float(before.norm()) or 1.0))
        avg = beta * avg + (1 - beta) * loss
        lrs.append(lr)
        losses.append(avg / (1 - beta ** (i + 1)))  # bias-corrected running mean
        best = min(best, losses[-1])
        if losses[-1] > 4 * best and i > 10:
            break
    return lrs, losses, ratios


def lr_find(task: Any, hp: Mapping[str, Any] | None = None, *, steps: int = 300, lr_min: float = 1e-7,
            lr_max: float = 10.0, seed: int = 0, device: str = "auto", beta: float = 0.98) -> LRFind:
    """Returns the learning-rate range test of task's model under hp: curve, suggested value and log range.

    The rate rises from lr_min to lr_max over `steps` steps; the test stops early once the smoothed
    loss exceeds 4x its minimum (diverging).
    """
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 20:
        raise ConfigError(f"steps={steps!r}: must be an integer >= 20 (a few hundred is usual)")
    if not 0 < lr_min < lr_max:
        raise ConfigError(f"lr_min={lr_min!r}, lr_max={lr_max!r}: need 0 < lr_min < lr_max")
    hp = resolve_hp(task, {**dict(hp or {}), "lr": lr_min})
    lrs, losses, ratios = _ramp(task, hp, steps, lr_min, lr_max, seed, pick_device(device), beta)
    if len(lrs) < 10:
        raise ConfigError(f"lr_find: the loss diverged within {len(lrs)} steps from lr_min={lr_min:g}; "
                          "lower lr_min or check the model (babysit check)")
    value, rng = _suggest(lrs, losses)
    return LRFind(tuple(lrs), tuple(losses), tuple(ratios), value, rng)
