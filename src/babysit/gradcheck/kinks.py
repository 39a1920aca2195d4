"""Kink detection: record which branch every non-differentiable op took, at torch's dispatcher.

The notes: "keep track of the identities of all winners in a function of form max(x, y); if the
identity of at least one winner changes when evaluating f(x+h) and then f(x-h), a kink was crossed".
A TorchDispatchMode sees every aten op whether it was called as a module, a function or a mask, so
relu, clamp, max-pool indices, where-conditions and comparisons are all seen the same way.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode

__all__ = ["KINK_OPS", "KinkRecorder", "Trace", "new_recorder", "same_branches"]

log = logging.getLogger(__name__)

aten = torch.ops.aten

# A trace is the list of (op, winners) of one evaluation, in call order; winners is a tensor or a tuple.
Trace = list[tuple[Any, Any]]
_Rule = Callable[[tuple, dict, Any], Any]


def _arg(args: tuple, kwargs: dict, i: int, name: str, default: Any) -> Any:
    """Returns positional argument i, else keyword `name`, else the default."""
    if len(args) > i:
        return args[i]
    return kwargs.get(name, default)


def _positive(args: tuple, kwargs: dict, out: Any) -> Any:
    """Returns the mask x > 0: the branch of relu, leaky_relu, elu, prelu, abs."""
    return args[0] > 0


def _sign(args: tuple, kwargs: dict, out: Any) -> Any:
    """Returns (x > 0, x < 0): abs and sign change branch when x changes sign."""
    x = args[0]
    return (x > 0, x < 0)


def _threshold(args: tuple, kwargs: dict, out: Any) -> Any:
    """Returns x > threshold (aten.threshold is what nn.Threshold and some relu paths call)."""
    return args[0] > _arg(args, kwargs, 1, "threshold", 0.0)


def _clamp(args: tuple, kwargs: dict, out: Any) -> Any:
    """Returns (x < min, x > max) with None bounds skipped: the three branches of clamp."""
    x, lo, hi = args[0], _arg(args, kwargs, 1, "min", None), _arg(args, kwargs, 2, "max", None)
    below = x < lo if lo is not None else None
    above = x > hi if hi is not None else None
    return tuple(m for m in (below, above) if m is not None)


def _clamp_min(args: tuple, kwargs: dict, out: Any) -> Any:
    """Returns x < min: the SVM hinge max(0, s) is a clamp_min."""
    return args[0] < _arg(args, kwargs, 1, "min", 0.0)


def _clamp_max(args: tuple, kwargs: dict, out: Any) -> Any:
    """Returns x > max."""
    return args[0] > _arg(args, kwargs, 1, "max", 0.0)


def _hardtanh(args: tuple, kwargs: dict, out: Any) -> Any:
    """Returns (x < min_val, x > max_val); relu6 is a hardtanh(0, 6)."""
    x = args[0]
    return (x < _arg(args, kwargs, 1, "min_val", -1.0), x > _arg(args, kwargs, 2, "max_val", 1.0))


def _hard3(args: tuple, kwargs: dict, out: Any) -> Any:
    """Returns (x < -3, x > 3): the kinks of hardswish and hardsigmoid."""
    x = args[0]
    return (x < -3.0, x > 3.0)


def _shrink(args: tuple, kwargs: dict, out: Any) -> Any:
    """Returns (x < -lambd, x > lambd): the kinks of soft/hard shrink."""
    x, lam = args[0], _arg(args, kwargs, 1, "lambd", 0.5)
    return (x < -lam, x > lam)


def _pairwise(args: tuple, kwargs: dict, out: Any) -> Any:
    """Returns a > b: which operand won an elementwise maximum/minimum."""
    return args[0] > args[1]


def _condition(args: tuple, kwargs: dict, out: Any) -> Any:
    """Returns the condition of where(cond, a, b)."""
    return args[0]


def _mask(args: tuple, kwargs: dict, out: Any) -> Any:
    """Returns the mask of masked_fill."""
    return args[1]


def _residual_band(args: tuple, kwargs: dict, out: Any) -> Any:
    """Returns |x - t| < beta: the switch between the quadratic and linear parts of smooth_l1/huber."""
    beta = _arg(args, kwargs, 3, "beta", _arg(args, kwargs, 3, "delta", 1.0))
    return (args[0] - args[1]).abs() < beta


def _multi_margin(args: tuple, kwargs: dict, out: Any) -> Any:
    """Returns the active margins of the multiclass SVM: margin - s_y + s_j > 0."""
    scores, target = args[0], args[1]
    margin = _arg(args, kwargs, 3, "margin", 1.0)
    if scores.dim() == 1:
        scores, target = scores.unsqueeze(0), target.reshape(1)
    correct = scores.gather(1, target.reshape(-1, 1))
    return (scores - correct + margin) > 0


def _output(args: tuple, kwargs: dict, out: Any) -> Any:
    """Returns the op's output: a comparison's mask, argmax's index, floor's step."""
    return out


def _indices(args: tuple, kwargs: dict, out: Any) -> Any:
    """Returns the indices of a (values, indices) op: max.dim, sort, topk, max-pool."""
    return out[1]


def _winners(args: tuple, kwargs: dict, out: Any) -> Any:
    """Returns x == result for full reductions (max(), amax(dim)): which elements won."""
    x = args[0]
    if out.dim() == x.dim() or out.dim() == 0:
        return x == out
    dims = _arg(args, kwargs, 1, "dim", ())
    dims = [dims] if isinstance(dims, int) else list(dims)
    for d in sorted(di % x.dim() for di in dims):
        out = out.unsqueeze(d)
    return x == out


def _pool_indices(with_indices: Any) -> _Rule:
    """Returns a rule that recomputes max-pool indices for the fast path that returns none."""

    def rule(args: tuple, kwargs: dict, out: Any) -> Any:
        return with_indices(*args, **kwargs)[1]

    return rule


def _ops(names: Sequence[str]) -> list[Any]:
    """Returns the aten overloads that exist in this torch build (names like "relu_.default")."""
    found = []
    for name in names:
        packet, overload = name.split(".")
        op = getattr(getattr(aten, packet, None), overload, None)
        if op is not None:
            found.append(op)
    return found


def _table(spec: dict[_Rule, Sequence[str]]) -> dict[Any, _Rule]:
    """Returns op -> rule from rule -> op names."""
    return {op: rule for rule, names in spec.items() for op in _ops(names)}


_CMP = [f"{c}{s}.{o}" for c in ("gt", "lt", "ge", "le", "eq", "ne") for s in ("", "_") for o in ("Tensor", "Scalar")]

# Rules read their inputs BEFORE the op runs (in-place variants overwrite them).
PRE: dict[Any, _Rule] = _table({
    _positive: ["relu.default", "relu_.default", "leaky_relu.default", "leaky_relu_.default", "elu.default",
                "elu_.default", "_prelu_kernel.default", "rrelu_with_noise.default", "heaviside.default"],
    _sign: ["abs.default", "abs_.default", "sign.default", "sgn.default", "sign_.default", "sgn_.default"],
    _threshold: ["threshold.default", "threshold_.default"],
    _clamp: ["clamp.default", "clamp.Tensor", "clamp_.default", "clamp_.Tensor"],
    _clamp_min: ["clamp_min.default", "clamp_min.Tensor", "clamp_min_.default", "clamp_min_.Tensor"],
    _clamp_max: ["clamp_max.default", "clamp_max.Tensor", "clamp_max_.default", "clamp_max_.Tensor"],
    _hardtanh: ["hardtanh.default", "hardtanh_.default"],
    _hard3: ["hardswish.default", "hardswish_.default", "hardsigmoid.default", "hardsigmoid_.default"],
    _shrink: ["softshrink.default", "hardshrink.default"],
    _pairwise: ["maximum.default", "minimum.default", "fmax.default", "fmin.default"],
    _condition: ["where.self", "where.ScalarSelf", "where.ScalarOther", "where.Scalar"],
    _mask: ["masked_fill.Scalar", "masked_fill.Tensor", "masked_fill_.Scalar", "masked_fill_.Tensor"],
    _residual_band: ["smooth_l1_loss.default", "huber_loss.default"],
    _multi_margin: ["multi_margin_loss.default"],
})

# Rules read the op's OUTPUT (indices, masks, steps).
POST: dict[Any, _Rule] = _table({
    _output: _CMP + ["argmax.default", "argmin.default", "floor.default", "ceil.default", "round.default",
                     "trunc.default", "searchsorted.Tensor", "bucketize.Tensor"],
    _indices: ["max.dim", "min.dim", "sort.default", "sort.stable", "topk.default", "kthvalue.default",
               "median.dim", "nanmedian.dim", "mode.default", "cummax.default", "cummin.default",
               "max_pool2d_with_indices.default", "max_pool3d_with_indices.default",
               "max_pool1d_with_indices.default", "adaptive_max_pool1d.default", "adaptive_max_pool2d.default",
               "adaptive_max_pool3d.default", "fractional_max_pool2d.default", "fractional_max_pool3d.default"],
    _winners: ["max.default", "min.default", "amax.default", "amin.default", "median.default"],
})
POST[aten.max_pool2d.default] = _pool_indices(aten.max_pool2d_with_indices.default)
POST[aten.max_pool3d.default] = _pool_indices(aten.max_pool3d_with_indices.default)

KINK_OPS: frozenset[str] = frozenset(str(op).removeprefix("aten.") for op in [*PRE, *POST])


class KinkRecorder(TorchDispatchMode):
    """A dispatch mode that, while `trace` is a list, appends (op, winners) for every kinked op.

    Installed only around the numerical evaluations (every op pays a Python call while it is on).
    """

    def __init__(self) -> None:
        super().__init__()
        self.trace: Trace | None = None
        self.seen: set[str] = set()

    @classmethod
    def _should_skip_dynamo(cls) -> bool:
        """Returns False: no torch._dynamo.disable wrapper, whose first call imports dynamo and sympy (1.3 s).

        The recorder only runs eager forwards of a check; where dynamo is loaded, new_recorder() picks the
        wrapped twin so that compiled user code never traces into this method.
        """
        return False

    def __torch_dispatch__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        kwargs = kwargs or {}
        trace = self.trace
        if trace is None:
            return func(*args, **kwargs)
        pre = PRE.get(func)
        if pre is not None:
            trace.append((func, pre(args, kwargs, None)))
        out = func(*args, **kwargs)
        post = POST.get(func)
        if post is not None:
            trace.append((func, post(args, kwargs, out)))
        return out

    def record(self, fn: Callable[[], float]) -> tuple[float, Trace]:
        """Returns fn() and the trace of winners recorded while it ran."""
        trace: Trace = []
        self.trace = trace
        try:
            value = fn()
        finally:
            self.trace = None
        for op, _ in trace:
            self.seen.add(op.__name__)
        return value, trace


class _DynamoSafeRecorder(KinkRecorder):
    """The recorder behind torch's dynamo-disable wrapper (for processes that already loaded dynamo)."""

    @classmethod
    def _should_skip_dynamo(cls) -> bool:
        """Returns True: torch wraps __torch_dispatch__ in torch._dynamo.disable (cheap once dynamo is loaded)."""
        return True

    def __torch_dispatch__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        return KinkRecorder.__torch_dispatch__(self, func, types, args, kwargs)


def new_recorder() -> KinkRecorder:
    """Returns a KinkRecorder: the dynamo-safe one when torch._dynamo is already imported, else the light one."""
    return _DynamoSafeRecorder() if "torch._dynamo" in sys.modules else KinkRecorder()


def _equal(a: Any, b: Any) -> bool:
    """Returns True when two winners records (a tensor or a tuple of tensors) are identical."""
    if isinstance(a, tuple):
        return isinstance(b, tuple) and len(a) == len(b) and all(_equal(x, y) for x, y in zip(a, b))
    if isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor):
        return a.shape == b.shape and bool(torch.equal(a, b))
    return bool(a == b)


def same_branches(plus: Trace, minus: Trace) -> bool:
    """Returns True when every kinked op picked the same winners in both evaluations (no kink crossed)."""
    if len(plus) != len(minus):
        return False
    return all(op_p is op_m and _equal(w_p, w_m) for (op_p, w_p), (op_m, w_m) in zip(plus, minus))
