"""Statistics of activations: cheap ones on a training batch, the full set on a fixed probe batch.

Cheap means means and squared means (microseconds) and one amax per unit; boolean reductions
are kept to saturating layers. A unit is dead when it is <= 0 for every probe example: counting
zero elements cannot tell a dead unit from the ~50% sparsity of a healthy ReLU layer.
"""

from __future__ import annotations

import math
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

import torch
from torch import nn

from .layers import Layer

__all__ = ["ProbeResult", "probe_pass", "batch_stats", "BATCH_STATS", "histogram", "input_stats", "SATURATION"]

SATURATION = 0.97  # |tanh| > 0.97, or sigmoid within 3% of 0 or 1
NAN = float("nan")


def _unit_dims(t: torch.Tensor) -> tuple[int, ...]:
    """Returns the dims to reduce so one value per unit remains (features of (N, F), channels of (N, C, ...))."""
    return (0,) + tuple(range(2, t.dim())) if t.dim() > 1 else (0,)


def dead_fraction(t: torch.Tensor) -> torch.Tensor:
    """Returns the fraction of units that are <= 0 for every example of the batch."""
    if t.dim() < 2:
        return (t.amax() <= 0).float()
    return (t.amax(dim=_unit_dims(t)) <= 0).float().mean()


def saturated_fraction(t: torch.Tensor, kind: str) -> torch.Tensor:
    """Returns the fraction of elements within 3% of a saturating activation's bounds."""
    if kind == "sigmoid":
        return ((t < 1 - SATURATION) | (t > SATURATION)).float().mean()
    return (t.abs() > SATURATION).float().mean()


BATCH_STATS = {"relu": ("batch_act_mean", "batch_act_msq", "batch_act_dead"),
               "tanh": ("batch_act_mean", "batch_act_msq", "batch_act_saturated"),
               "sigmoid": ("batch_act_mean", "batch_act_msq", "batch_act_saturated")}


def batch_stats(t: torch.Tensor, kind: str) -> list[torch.Tensor]:
    """Returns 0-d tensors [mean, mean of squares, dead or saturated fraction] (names: BATCH_STATS[kind]).

    Nothing is read to the host here: the caller stacks many steps' values in one go.
    """
    t = t.detach().float()
    out = [t.mean(), torch.linalg.vector_norm(t).square() / t.numel()]
    if kind == "relu":
        out.append(dead_fraction(t))
    elif kind in ("tanh", "sigmoid"):
        out.append(saturated_fraction(t, kind))
    return out


def histogram(t: torch.Tensor, bins: int, max_elements: int = 1 << 16) -> tuple[list[float], list[float]]:
    """Returns (counts, edges) of a tensor's finite values over its own range (an even subsample of large ones).

    The shape of a distribution needs no more than 65,536 values; the boolean mask of non-finite
    values is only built when the range says there are some.
    """
    t = t.detach().flatten()
    if t.numel() > max_elements:
        t = t[:: t.numel() // max_elements + 1]
    t = t.float()
    if t.numel() == 0:
        return [0.0] * bins, [0.0] * (bins + 1)
    lo_t, hi_t = torch.aminmax(t)
    lo, hi = float(lo_t), float(hi_t)
    if not (math.isfinite(lo) and math.isfinite(hi)):
        t = t[torch.isfinite(t)]
        if t.numel() == 0:
            return [0.0] * bins, [0.0] * (bins + 1)
        lo, hi = float(t.min()), float(t.max())
    if hi <= lo:
        lo, hi = lo - 0.5, hi + 0.5
    counts = torch.histc(t, bins=bins, min=lo, max=hi)
    step = (hi - lo) / bins
    return counts.tolist(), [lo + i * step for i in range(bins + 1)]


def input_stats(x: torch.Tensor) -> dict[str, float]:
    """Returns the inputs' global mean and std, and the worst per-feature |mean|/std (constant features aside)."""
    f = x.detach().float().reshape(len(x), -1)
    std = f.std(dim=0) if len(f) > 1 else torch.zeros(f.shape[1])
    mean = f.mean(dim=0)
    varying = std > 1e-8
    out = {"mean": float(f.mean()), "std": float(f.std()) if f.numel() > 1 else NAN}
    if bool(varying.any()):
        out.update(feature_z_max=float((mean[varying].abs() / std[varying]).max()),
                   feature_std_min=float(std[varying].min()), feature_std_max=float(std[varying].max()))
    return out


@dataclass
class ProbeResult:
    """What one probe pass measured: scalars keyed "group/layer", histograms, and the probe's loss."""

    scalars: dict[str, float] = field(default_factory=dict)
    histograms: list[tuple[str, list[float], list[float]]] = field(default_factory=list)
    first_layer: str | None = None


def _storage(t: torch.Tensor) -> int:
    return t.untyped_storage().data_ptr()


@contextmanager
def _eval(model: nn.Module) -> Iterator[None]:
    was = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was)


def _record(res: ProbeResult, name: str, t: torch.Tensor, kind: str, bins: int, units: bool) -> None:
    t = t.detach().float()
    res.scalars[f"act_mean/{name}"] = float(t.mean())
    res.scalars[f"act_std/{name}"] = float(t.std()) if t.numel() > 1 else NAN
    if not units:
        pass
    elif kind == "relu":
        res.scalars[f"act_dead/{name}"] = float(dead_fraction(t))
    elif kind in ("tanh", "sigmoid"):
        res.scalars[f"act_saturated/{name}"] = float(saturated_fraction(t, kind))
    if bins:
        counts, edges = histogram(t, bins)
        res.histograms.append((name, counts, edges))


@torch.no_grad()
def probe_pass(model: nn.Module, layers: list[Layer], x: torch.Tensor, y: torch.Tensor | None,
               loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None, bins: int = 32,
               units: bool = True) -> ProbeResult:
    """Returns the probe statistics of every watched layer on x (eval mode, no gradients), and the probe loss.

    units=False leaves out dead and saturated fractions (a pass on part of the probe cannot judge them).
    """
    res, seen, calls = ProbeResult(), {_storage(x)}, {}  # type: ignore[var-annotated]

    def hook(layer: Layer) -> Callable[..., None]:
        def fn(module: nn.Module, inputs: tuple[Any, ...], output: Any) -> None:
            calls[layer.name] = calls.get(layer.name, 0) + 1
            name = layer.name if calls[layer.name] == 1 else f"{layer.name}#{calls[layer.name]}"
            inp = inputs[0] if inputs and isinstance(inputs[0], torch.Tensor) else None
            if inp is not None and layer.has_weight:
                if _storage(inp) == _storage(x) and res.first_layer is None:
                    res.first_layer = name
                elif _storage(inp) not in seen and float(inp.min()) >= 0:  # an invisible F.relu before this layer
                    _record(res, f"{name}:input", inp, "relu", bins, units)
            if isinstance(output, torch.Tensor):
                seen.add(_storage(output))
                _record(res, name, output, layer.kind, bins, units)
        return fn

    handles = [layer.module.register_forward_hook(hook(layer)) for layer in layers]
    try:
        with _eval(model):
            scores = model(x)
    finally:
        for h in handles:
            h.remove()
    if units and y is not None and loss_fn is not None and isinstance(scores, torch.Tensor):
        loss = float(loss_fn(scores.float(), y))
        res.scalars["probe/loss"] = loss if math.isfinite(loss) else NAN
        if scores.dim() == 2:
            res.scalars["probe/acc"] = float((scores.argmax(1) == y).float().mean())
    return res
