"""Numerical derivatives of one objective, entry by entry, with kink retries and the pass criterion.

Centered difference (f(x+h) - f(x-h)) / 2h: error O(h^2), not O(h) as for the one-sided formula.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import numpy as np
import torch

from .kinks import KinkRecorder, same_branches
from .report import Entry
from .sampling import Index, fresh_coordinate, random_directions

__all__ = ["EPS", "ROUNDOFF_C", "TINY_ABS", "Prober", "Target", "judge", "roundoff_floor"]

log = logging.getLogger(__name__)

EPS = float(np.finfo(np.float64).eps)
# Each evaluation of f carries a few ulps of rounding (sums over a batch, a softmax, a matmul); the
# centered difference turns k ulps into k*eps*|f|/h. c = 10 covers 10 ulps per evaluation with margin.
ROUNDOFF_C = 10.0
# The notes: gradients "roughly 1e-10 and smaller in absolute value" are worrying; scale the loss up.
TINY_ABS = 1e-10

Spec = Index | torch.Tensor  # a coordinate, or a unit direction shaped like the tensor


def roundoff_floor(loss: float, h: float) -> float:
    """Returns c*eps*|f|/h: the smallest gradient error a centered difference at step h can resolve."""
    return ROUNDOFF_C * EPS * abs(loss) / h


def judge(analytic: float, numeric: float, loss: float, h: float, tol: float) -> tuple[float, bool, bool]:
    """Returns (relative error, passed, tiny) for one pair of derivatives.

    rel = |a - n| / max(|a|, |n|) (both zero passes); pass when |a - n| <= c*eps*|f|/h + tol*max(|a|, |n|).
    tiny: max(|a|, |n|) is below that round-off floor or below 1e-10 (outside floats' comfortable range).
    """
    diff, scale = abs(analytic - numeric), max(abs(analytic), abs(numeric))
    if scale == 0.0:
        return 0.0, True, False
    floor = roundoff_floor(loss, h)
    rel = diff / scale if math.isfinite(scale) else math.nan
    return rel, bool(diff <= floor + tol * scale), bool(scale <= max(floor, TINY_ABS))


@dataclass
class Target:
    """A tensor to perturb in place, its analytic gradient, and what to check of it."""

    name: str
    tensor: torch.Tensor
    grad: torch.Tensor
    coords: list[Index]
    directions: list[torch.Tensor]
    rng: np.random.Generator
    taken: set[Index] = field(default_factory=set)

    def __post_init__(self) -> None:
        self.taken.update(self.coords)
        self._grad_np = self.grad.detach().cpu().numpy()

    def analytic(self, spec: Spec) -> float:
        """Returns the analytic derivative: a gradient element, or v . grad for a direction."""
        if isinstance(spec, tuple):
            return float(self._grad_np[spec])
        return float(torch.dot(spec.reshape(-1), self.grad.reshape(-1)))


class Prober:
    """Measures entries of one objective; counts kink crossings; holds the recorder it evaluates under."""

    def __init__(self, value: Callable[[], float], loss: float, tol: float, recorder: KinkRecorder | None) -> None:
        self.value, self.loss, self.tol, self.recorder = value, loss, tol, recorder
        self.crossings = 0

    def _eval(self) -> tuple[float, list]:
        """Returns f at the current point and the branch trace (empty without a recorder)."""
        if self.recorder is None:
            return self.value(), []
        return self.recorder.record(self.value)

    def pair(self, tensor: torch.Tensor, spec: Spec, h: float) -> tuple[float, bool]:
        """Returns (numerical derivative, kink crossed) from f(p + h s) and f(p - h s); p restored exactly."""
        data = tensor.detach()
        with torch.no_grad():
            if isinstance(spec, tuple):
                orig = data[spec].item()
                plus, minus = orig + h, orig - h
                data[spec] = plus
                fp, tp = self._eval()
                data[spec] = minus
                fm, tm = self._eval()
                data[spec] = orig
                step = plus - minus  # the step floats really took, not 2h
            else:
                saved = data.clone()
                data.add_(spec, alpha=h)
                fp, tp = self._eval()
                torch.add(saved, spec, alpha=-h, out=data)
                fm, tm = self._eval()
                data.copy_(saved)
                step = 2 * h
        return (fp - fm) / step, not same_branches(tp, tm)

    def _attempts(self, t: Target, spec: Spec, h: float) -> Iterator[tuple[Spec, float]]:
        """Yields (spec, h), (spec, h/10), then a fresh coordinate or direction at h and h/10."""
        yield spec, h
        yield spec, h / 10
        fresh: Spec
        if isinstance(spec, tuple):
            coordinate = fresh_coordinate(tuple(t.tensor.shape), t.taken, t.rng)
            t.taken.add(coordinate)
            fresh = coordinate
        else:
            fresh = random_directions(t.tensor, 1, int(t.rng.integers(2**31)))[0]
        yield fresh, h
        yield fresh, h / 10

    def entry(self, t: Target, spec: Spec, h: float) -> Entry:
        """Returns the checked entry; kink_crossed only when every attempt crossed a kink.

        A crossing at h is retried at h/10, then at a fresh coordinate: a bug cannot hide behind a kink.
        """
        first: tuple[Spec, float, float] | None = None
        for s, step in self._attempts(t, spec, h):
            numeric, crossed = self.pair(t.tensor, s, step)
            if not crossed:
                return self.make(t, s, numeric, step, kink=False)
            self.crossings += 1
            first = first or (s, numeric, step)
        assert first is not None
        log.debug("%s: kink crossed on every attempt; excused", t.name)
        return self.make(t, first[0], first[1], first[2], kink=True)

    def make(self, t: Target, spec: Spec, numeric: float, h: float, kink: bool) -> Entry:
        """Returns the Entry for a measured derivative."""
        analytic = t.analytic(spec)
        rel, passed, tiny = judge(analytic, numeric, self.loss, h, self.tol)
        index = spec if isinstance(spec, tuple) else None
        kind = "coordinate" if index is not None else "direction"
        return Entry(t.name, kind, index, analytic, numeric, rel, kink, tiny, passed, h)

    def _passes(self, t: Target, spec: Spec, h: float) -> bool | None:
        """Returns whether a derivative passes at h (or h/10 after a kink); None when both cross."""
        for step in (h, h / 10):
            numeric, crossed = self.pair(t.tensor, spec, step)
            if not crossed:
                return judge(t.analytic(spec), numeric, self.loss, step, self.tol)[1]
            self.crossings += 1
        return None

    def localise(self, t: Target, v: torch.Tensor, h: float) -> Entry | None:
        """Returns a failing coordinate found by bisecting a failing direction, or None.

        The directional error is a sum over elements, so the half that keeps failing holds the bug.
        """
        flat, shape = v.reshape(-1), tuple(t.tensor.shape)
        lo, hi = 0, flat.numel()
        while hi - lo > 1:
            mid = (lo + hi) // 2
            w = torch.zeros_like(flat)
            w[lo:mid] = flat[lo:mid]
            w = (w / w.norm()).reshape(shape)
            passed = self._passes(t, w, h)
            if passed is None:
                return None
            lo, hi = (lo, mid) if not passed else (mid, hi)
        idx = tuple(int(i) for i in np.unravel_index(lo, shape)) if shape else ()
        found = self.entry(t, idx, h)
        return None if found.passed else found
