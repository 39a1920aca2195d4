"""Custom autograd Functions: found in the graph of the checked loss and checked alone, with a random upstream gradient.

A backward that ignores grad_output passes a check through .sum() (the upstream gradient is all ones);
with a fixed random v it must satisfy <grad, v> = d<f(x), v>, the vector-Jacobian product.
"""

from __future__ import annotations

import contextlib
import inspect
import logging
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch.autograd import Function

from ..errors import ConfigError
from .measure import (
    Step,
    assemble_report,
    few_threads,
    make_targets,
    measure_steps,
    merge,
    mismatched,
)
from .objective import validate_options
from .probe import EPS
from .report import GradientReport

__all__ = ["IN_GRAPH_COORDS", "IN_GRAPH_DIRECTIONS", "Call", "check_autograd_function", "check_calls", "recording"]

log = logging.getLogger(__name__)

_DIRECTIONS = 3
# In the graph, a Function is checked alone by one random direction plus both corner coordinates: a
# misused grad_output touches every element, and one layer's evaluations stay a small part of the check
# (bisected only when the model's own check named no index).
IN_GRAPH_COORDS = 2
IN_GRAPH_DIRECTIONS = 1


@dataclass
class Call:
    """One call of a custom Function: its class, positional inputs, and which of them needed a gradient."""

    cls: Any  # a torch.autograd.Function subclass
    args: tuple
    needs: list[bool] = field(default_factory=list)


def _takes_ctx(cls: Any) -> bool:
    """Returns True for the classic forward(ctx, *inputs); False when setup_context is defined."""
    return cls.setup_context is Function.setup_context


def _arg_names(cls: Any, count: int) -> list[str]:
    """Returns names for the forward's positional inputs: its parameter names, else input0, input1, ..."""
    try:
        params = list(inspect.signature(cls.forward).parameters.values())
    except (TypeError, ValueError):
        params = []
    plain = [p.name for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    plain = plain[1:] if _takes_ctx(cls) else plain
    return [plain[i] if i < len(plain) else f"input{i}" for i in range(count)]


@contextlib.contextmanager
def recording(classes: Sequence[Any]) -> Iterator[list[Call]]:
    """Yields the list that receives the first call of each class while the block runs; forwards restored.

    The class's own forward is wrapped (the autograd engine looks it up on the class at every apply), so
    aliases like `isrlu = ISRLU.apply` are seen too.
    """
    calls: list[Call] = []
    own = {cls: cls.__dict__.get("forward") for cls in classes}
    originals = {cls: cls.forward for cls in classes}
    for cls in classes:
        def wrapper(*args: Any, _cls: type = cls, **kwargs: Any) -> Any:
            inputs = args[1:] if _takes_ctx(_cls) else args
            if not kwargs and not any(c.cls is _cls for c in calls):
                calls.append(Call(_cls, inputs, [isinstance(a, torch.Tensor) and a.requires_grad for a in inputs]))
            return originals[_cls](*args, **kwargs)
        cls.forward = staticmethod(wrapper)
    try:
        yield calls
    finally:
        for cls, f in own.items():
            if f is None:
                delattr(cls, "forward")
            else:
                cls.forward = f


def _call_names(call: Call, given: Sequence[str] | None) -> list[str]:
    """Returns "Fn.name" for every positional input: forward's parameter names, or `given` for the tensors."""
    arg_names = _arg_names(call.cls, len(call.args))
    if given is not None:
        tensors = [i for i, a in enumerate(call.args) if isinstance(a, torch.Tensor) and a.is_floating_point()]
        if len(given) != len(tensors):
            raise ConfigError(f"names={list(given)!r}: {call.cls.__name__} has {len(tensors)} floating tensor "
                              "input(s); give one name each")
        for i, n in zip(tensors, given):
            arg_names[i] = n
    return [f"{call.cls.__name__}.{n}" for n in arg_names]


def _outputs(out: Any) -> list[torch.Tensor]:
    """Returns the floating tensor outputs of a Function call."""
    outs = out if isinstance(out, (tuple, list)) else (out,)
    return [o for o in outs if isinstance(o, torch.Tensor) and o.is_floating_point()]


def _measure_call(call: Call, h: Step, tol: float, seed: int, per_tensor: int, eps: float,
                  dtype: torch.dtype | None, directions: int = _DIRECTIONS, bisect: bool = True,
                  given: Sequence[str] | None = None) -> tuple[dict[str, Any], list[str]]:
    """Returns (raw results, entry names) of one Function call checked against <f(x), v>."""
    cls = call.cls
    names = _call_names(call, given)
    args = [a.detach().clone().to(dtype or a.dtype) if isinstance(a, torch.Tensor) and a.is_floating_point()
            else (a.detach().clone() if isinstance(a, torch.Tensor) else a) for a in call.args]
    checked = {names[i]: args[i].requires_grad_(True) for i, a in enumerate(call.args)
               if isinstance(a, torch.Tensor) and a.is_floating_point() and (not call.needs or call.needs[i])}
    if not checked:
        raise ConfigError(f"{cls.__name__}: no floating tensor input to check; pass tensors as inputs")

    cuda = sorted({a.device.index or 0 for a in args if isinstance(a, torch.Tensor) and a.is_cuda})

    def run() -> Any:
        # a Function that draws (dropout) draws the same mask every time; only the generators its inputs
        # use are reseeded (torch.manual_seed walks every device backend, 2 ms a call inside the recorder)
        torch.default_generator.manual_seed(seed)
        for index in cuda:
            torch.cuda.default_generators[index].manual_seed(seed)
        return cls.apply(*args)

    with torch.enable_grad():
        outs = _outputs(run())
        gen = torch.Generator().manual_seed(seed + 1)
        vs = [torch.randn(o.shape, generator=gen, dtype=torch.float64).to(o) for o in outs]
        leaves = list(checked.values())
        # <f(x), v> as a scalar: passing v as grad_outputs would import sympy (torch's shape checks)
        inner = sum((o * v).sum() for o, v in zip(outs, vs))
        assert isinstance(inner, torch.Tensor)
        first = torch.autograd.grad(inner, leaves, retain_graph=True, allow_unused=True)
        second = torch.autograd.grad(inner, leaves, allow_unused=True)

    def value() -> float:
        with torch.no_grad():
            return float(sum(float((o * v).sum()) for o, v in zip(_outputs(run()), vs)))

    grads, again = ({n: (g.detach() if g is not None else torch.zeros_like(t))
                     for (n, t), g in zip(checked.items(), gs)} for gs in (first, second))
    targets = make_targets(checked, grads, per_tensor, directions, seed)
    return (measure_steps(value, value(), targets, h, tol, mismatched(grads, again), eps=eps, bisect=bisect),
            list(checked))


def check_calls(calls: Sequence[Call], h: Step, tol: float, seed: int, eps: float = EPS,
                dtype: torch.dtype | None = None, directions: int = _DIRECTIONS,
                bisect: bool = False) -> tuple[dict[str, Any] | None, list[str]]:
    """Returns (merged raw results or None, entry names) for the recorded calls; a call that cannot run is skipped."""
    raw: dict[str, Any] | None = None
    names: list[str] = []
    for call in calls:
        try:
            got, got_names = _measure_call(call, h, tol, seed, IN_GRAPH_COORDS, eps, dtype,
                                           min(directions, IN_GRAPH_DIRECTIONS), bisect)
        except Exception as exc:  # noqa: BLE001  (the Function alone may need context the model gives it)
            log.warning("custom autograd.Function %s could not be checked alone: %s", call.cls.__name__, exc)
            continue
        raw = got if raw is None else merge(raw, got)
        names += got_names
    return raw, names


def check_autograd_function(fn: type, *inputs: Any, names: Sequence[str] | None = None, h: Step = 1e-5,
                            tol: float = 1e-5, seed: int = 0, per_tensor: int = 10) -> GradientReport:
    """Returns a GradientReport for every floating tensor input of fn, entries named "Fn.name".

    Names: forward's parameter names, else input0, input1, ... by position, or `names` (one per tensor).

    Float64 copies of the inputs; a fixed random upstream gradient; non-tensor arguments pass through.
    """
    if not (isinstance(fn, type) and issubclass(fn, Function)):
        raise ConfigError(f"fn={fn!r}: must be a torch.autograd.Function subclass (the class, not fn.apply)")
    validate_options(per_tensor, h, tol, 0, "eval", _DIRECTIONS, seed)
    start = time.perf_counter()
    call = Call(fn, tuple(inputs))
    with torch.random.fork_rng(devices=[]), few_threads(sum(a.numel() for a in inputs
                                                            if isinstance(a, torch.Tensor))):
        raw, labels = _measure_call(call, h, tol, seed, per_tensor, EPS, torch.float64, given=names)
    report = assemble_report(raw, labels, tol, time.perf_counter() - start, False, "eval")
    log.info("check_autograd_function(%s) %s", fn.__name__, "passed" if report.ok else "FAILED")
    return report
