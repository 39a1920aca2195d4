"""Numerical derivatives of one objective, entry by entry, with kink retries and the pass criterion.

Centered difference (f(x+h) - f(x-h)) / 2h: error O(h^2), not O(h) as for the one-sided formula.
"""

from __future__ import annotations

import functools
import logging
import math
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field, replace
from typing import NamedTuple

import numpy as np
import torch

from .kinks import KinkRecorder, same_branches
from .report import Entry
from .sampling import Index, fresh_coordinate, random_directions

__all__ = ["EPS", "ROUNDOFF_C", "TINY_ABS", "Diff", "Prober", "Segment", "Target", "judge", "roundoff_floor"]

log = logging.getLogger(__name__)

EPS = float(np.finfo(np.float64).eps)
# Each evaluation of f carries a few ulps of rounding (sums over a batch, a softmax, a matmul); the
# centered difference turns k ulps into k*eps*|f|/h. c = 10 covers 10 ulps per evaluation with margin.
PARAM_SCALE = 0.1  # a model parameter's step is h * max(|p_i|, rms, 0.1): a bias near its zero init keeps a usable step
ROUNDOFF_C = 10.0
# The notes: gradients "roughly 1e-10 and smaller in absolute value" are worrying; scale the loss up.
TINY_ABS = 1e-10



@dataclass(frozen=True)
class Segment:
    """A unit direction that is zero outside flat[lo:hi] (bisection): only that slice is touched."""

    lo: int
    hi: int
    w: torch.Tensor  # the direction's values on the slice (a view, not a copy)
    factor: float = 1.0  # w * factor has unit norm


Spec = Index | torch.Tensor | Segment  # a coordinate, a unit direction shaped like the tensor, or a segment


def roundoff_floor(loss: float, h: float, eps: float = EPS) -> float:
    """Returns c*eps*|f|/h: the smallest gradient error a centered difference at step h can resolve."""
    return ROUNDOFF_C * eps * abs(loss) / h


def judge(analytic: float, numeric: float, loss: float, h: float, tol: float,
          eps: float = EPS) -> tuple[float, bool, bool]:
    """Returns (relative error, passed, tiny) for one pair of derivatives at absolute step h.

    rel = |a - n| / max(|a|, |n|) (both zero passes); pass when |a - n| <= c*eps*|f|/h + tol*max(|a|, |n|).
    tiny: max(|a|, |n|) is below that round-off floor or below 1e-10 (outside floats' comfortable range).
    A tiny analytic value where f did not change at all (n == 0: f(x+h) == f(x-h) bit for bit, e.g. a
    saturated softmax whose loss rounds to 0) is below what f resolves: it passes, as tiny.
    """
    diff, scale = abs(analytic - numeric), max(abs(analytic), abs(numeric))
    if scale == 0.0:
        return 0.0, True, False
    floor = roundoff_floor(loss, h, eps)
    rel = diff / scale if math.isfinite(scale) else math.nan
    unresolved = numeric == 0.0 and scale <= TINY_ABS
    return rel, bool(diff <= floor + tol * scale or unresolved), bool(scale <= max(floor, TINY_ABS))


class Diff(NamedTuple):
    """One centered difference: the derivative, whether a kink was crossed, the step, one-sided differences."""

    numeric: float
    crossed: bool
    step: float
    forward: float
    backward: float


@dataclass
class Target:
    """A tensor to perturb in place, its analytic gradient, and what to check of it."""

    name: str
    tensor: torch.Tensor
    grad: torch.Tensor
    coords: list[Index]
    directions: Iterable[torch.Tensor]  # each valid until the next is drawn (sampling.Directions)
    rng: np.random.Generator
    taken: set[Index] = field(default_factory=set)
    value: Callable[[], float] | None = None  # f for this tensor when cheaper than the prober's (a suffix)
    scale_floor: float = 0.0  # PARAM_SCALE for a model's parameters; 0 for arrays checked at their own scale

    def __post_init__(self) -> None:
        self.taken.update(self.coords)
        self._saved: torch.Tensor | None = None
        self._grad_np = self.grad.detach().cpu().numpy()
        data = self.tensor.detach()
        rms = float(torch.linalg.vector_norm(data, dtype=torch.float64)) / math.sqrt(data.numel()) \
            if data.numel() else 0.0
        # The step is relative to the tensor's scale: a fixed h is huge for inputs of scale 0.01. A model's
        # parameters never go below h * PARAM_SCALE: a bias just off its zero init has an rms
        # near 1e-4, and steps of 1e-9 drown a small loss's gradient in the round-off of its sums.
        scale = max(rms, self.scale_floor) if math.isfinite(rms) else 1.0
        self.scale = scale if scale > 0.0 else 1.0

    def original(self) -> torch.Tensor:
        """Returns a copy of the tensor's unperturbed values, taken once (directions restore from it)."""
        if self._saved is None:
            self._saved = self.tensor.detach().clone()
        return self._saved

    def release(self) -> None:
        """Drops the saved copy once the tensor's entries are measured."""
        self._saved = None

    def analytic(self, spec: Spec) -> float:
        """Returns the analytic derivative: a gradient element, or v . grad for a direction."""
        if isinstance(spec, tuple):
            return float(self._grad_np[spec])
        if isinstance(spec, Segment):
            part = self.grad.reshape(-1)[spec.lo:spec.hi]
            return spec.factor * float(torch.dot(spec.w.to(part.dtype), part))
        return float(torch.dot(spec.reshape(-1).to(self.grad.dtype), self.grad.reshape(-1)))


def _shortcut(at: Callable[[Index, float], float | None], full: Callable[[], float], spec: Index,
              step: float) -> float:
    """Returns at(spec, step), or the full evaluation where the shortcut does not apply."""
    got = at(spec, step)
    return full() if got is None else got


class Prober:
    """Measures entries of one objective; counts kink crossings; holds the recorder it evaluates under.

    onesided: the code is opaque to the recorder (numpy), so a failing entry is tested for a kink by its
    one-sided differences. eps: the machine epsilon of the dtype the objective runs in.
    """

    def __init__(self, value: Callable[[], float], loss: float, tol: float, recorder: KinkRecorder | None,
                 onesided: bool = False, eps: float = EPS) -> None:
        self.value, self.loss, self.tol, self.recorder = value, loss, tol, recorder
        self.onesided, self.eps = onesided, eps
        self.crossings = 0

    def _eval(self, t: Target, spec: Spec | None = None, step: float = 0.0) -> tuple[float, list]:
        """Returns f at the current point and the branch trace (empty without a recorder).

        spec, step: the coordinate just moved and by how much, for a target whose f can take the shortcut
        (objective.Suffix.at: a plain Linear layer's output updated in one column instead of a matmul).
        """
        value = t.value or self.value
        at = getattr(value, "at", None)
        if at is not None and isinstance(spec, tuple):
            value = functools.partial(_shortcut, at, value, spec, step)
        if self.recorder is None:
            return value(), []
        return self.recorder.record(value)

    def pair(self, t: Target, spec: Spec, h: float) -> Diff:
        """Returns the centered difference from f(p + s e) and f(p - s e); p restored.

        s = h * max(|p_i|, rms) for a coordinate, h * rms * sqrt(n) for a unit direction over n elements.

        The step floats really took, (p + s) - (p - s), is the divisor, not 2s.
        """
        data = t.tensor.detach()
        with torch.no_grad():
            if isinstance(spec, tuple):
                orig = data[spec].item()
                step = h * max(abs(orig), t.scale)
                data[spec] = orig + step
                plus = data[spec].item()
                fp, tp = self._eval(t, spec, plus - orig)
                data[spec] = orig - step
                minus = data[spec].item()
                fm, tm = self._eval(t, spec, minus - orig)
                data[spec] = orig
                up, down = plus - orig, orig - minus
            else:
                v = (spec.w if isinstance(spec, Segment) else spec).to(data.dtype)
                saved = t.original()
                if isinstance(spec, Segment):
                    data, saved = data.view(-1)[spec.lo:spec.hi], saved.view(-1)[spec.lo:spec.hi]
                # Relative to the norm of what moves: each element moves by about h * rms, as for a coordinate.
                up = down = h * t.scale * math.sqrt(v.numel())
                move = up * (spec.factor if isinstance(spec, Segment) else 1.0)
                torch.add(saved, v, alpha=move, out=data)
                fp, tp = self._eval(t)
                torch.add(saved, v, alpha=-move, out=data)
                fm, tm = self._eval(t)
                data.copy_(saved)
        return Diff((fp - fm) / (up + down), not same_branches(tp, tm), (up + down) / 2,
                    (fp - self.loss) / up, (self.loss - fm) / down)

    def _attempts(self, t: Target, spec: Spec, h: float) -> Iterator[tuple[Spec, float]]:
        """Yields (spec, h), (spec, h/10), then a fresh coordinate at h and h/10, or the direction at h/100.

        A direction through a wide ReLU layer crosses some of its units at any usable step, a fresh one as
        many as the first: what avoids them is a smaller step (about ten times fewer crossings per decade).
        """
        yield spec, h
        yield spec, h / 10
        if isinstance(spec, tuple):
            coordinate = fresh_coordinate(tuple(t.tensor.shape), t.taken, t.rng)
            t.taken.add(coordinate)
            yield coordinate, h
            yield coordinate, h / 10
        else:
            yield spec, h / 100

    def entry(self, t: Target, spec: Spec, h: float) -> Entry:
        """Returns the checked entry; kink_crossed only when every attempt crossed a kink and failed.

        A crossing that fails at h is retried at h/10, then at a fresh coordinate: a bug cannot hide behind a
        kink. A crossing that passes is kept: the kink moved the difference by less than the tolerance (a
        wide ReLU layer crosses a few of its thousands of units at any usable step).
        """
        first: tuple[Spec, Diff, float] | None = None
        for s, step in self._attempts(t, spec, h):
            d = self.pair(t, s, step)
            if not d.crossed:
                e = self.make(t, s, d, step, kink=False)
                return self._onesided(t, s, d, e) if self.onesided and not e.passed else e
            self.crossings += 1
            e = self.make(t, s, d, step, kink=False)
            if e.passed:  # the crossing moved the difference by less than the tolerance: nothing to retry
                return e
            first = first or (s, d, step)
        assert first is not None
        log.debug("%s: kink crossed on every attempt; excused", t.name)
        return self.make(t, first[0], first[1], first[2], kink=True)

    def _kinky(self, d: Diff, analytic: float) -> bool:
        """Returns True when the one-sided differences disagree and the analytic value lies between them."""
        slack = roundoff_floor(self.loss, d.step, self.eps) + self.tol * max(abs(analytic), abs(d.forward),
                                                                             abs(d.backward))
        lo, hi = sorted((d.forward, d.backward))
        return hi - lo > 2 * slack and lo - slack <= analytic <= hi + slack

    def _onesided(self, t: Target, spec: Spec, d: Diff, failed: Entry) -> Entry:
        """Returns the failing entry excused as a suspected kink, resolved at h/10, or unchanged.

        A kink: forward and backward differences disagree by a jump that does not shrink with h, and the
        analytic value lies between them (a smooth error shrinks ~10x at h/10; a bug has both agree).
        """
        if not self._kinky(d, failed.analytic):
            return failed
        d10 = self.pair(t, spec, failed.h / 10)
        retry = self.make(t, spec, d10, failed.h / 10, kink=False)
        if retry.passed:
            return retry
        same = self._kinky(d10, failed.analytic) and abs(d10.forward - d10.backward) >= 0.5 * abs(
            d.forward - d.backward)
        if same:
            log.debug("%s: one-sided differences disagree at h and h/10; kink suspected", failed.where)
            return replace(failed, kink_suspected=True)
        return failed

    def make(self, t: Target, spec: Spec, d: Diff, h: float, kink: bool) -> Entry:
        """Returns the Entry for a measured derivative."""
        analytic = t.analytic(spec)
        rel, passed, tiny = judge(analytic, d.numeric, self.loss, d.step, self.tol, self.eps)
        floor = roundoff_floor(self.loss, d.step, self.eps)
        by_floor = passed and abs(analytic - d.numeric) > self.tol * max(abs(analytic), abs(d.numeric))
        index = spec if isinstance(spec, tuple) else None
        kind = "coordinate" if index is not None else "direction"
        return Entry(t.name, kind, index, analytic, d.numeric, rel, kink, tiny, passed, h, step=d.step,
                     floor=floor, by_floor=by_floor)

    def _passes(self, t: Target, spec: Spec, h: float) -> bool | None:
        """Returns whether a derivative passes at h (or h/10, h/100 after a kink); None when all cross."""
        for step in (h, h / 10, h / 100):
            d = self.pair(t, spec, step)
            passed = judge(t.analytic(spec), d.numeric, self.loss, d.step, self.tol, self.eps)[1]
            if not d.crossed or passed:  # a crossing that still passes cannot hide the bug in this half
                return passed
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
            part = flat[lo:mid]
            w: Spec = Segment(lo, mid, part, 1.0 / float(part.norm()))
            if not t.tensor.is_contiguous():  # a view of the flat data would be a copy: perturb it whole
                full = torch.zeros_like(flat)
                full[lo:mid] = part / part.norm()
                w = full.reshape(shape)
            passed = self._passes(t, w, h)
            if passed is None:
                return None
            lo, hi = (lo, mid) if not passed else (mid, hi)
        idx = tuple(int(i) for i in np.unravel_index(lo, shape)) if shape else ()
        found = self.entry(t, idx, h)
        return None if found.passed or found.excused else found
