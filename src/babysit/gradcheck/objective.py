"""The objective being checked: a float64 copy of the model, the batch, the loss and an optional penalty.

The notes: "use double precision" (relative errors drop from 1e-2 to 1e-8), and turn off dropout or
"force a particular random seed before evaluating both f(x+h) and f(x-h), and the analytic gradient".
"""

from __future__ import annotations

import copy
import logging
import math
import numbers
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ..errors import ConfigError
from .graph import custom_nodes, function_classes, reached

__all__ = ["STOCHASTIC_MODES", "Objective", "build_objective", "burn_in_steps", "scalar", "validate_options"]

log = logging.getLogger(__name__)

STOCHASTIC_MODES = ("eval", "seeded")
_BURN_IN_LR = 0.1
_BURN_IN_FLOOR = 0.25  # the burn-in keeps the loss above this share of where it started


def int_at_least(name: str, value: Any, low: int, hint: str) -> None:
    """Raises ConfigError unless value is an int >= low."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or int(value) < low:
        raise ConfigError(f"{name}={value!r}: must be an int >= {low}; {hint}")


def positive_float(name: str, value: Any, hint: str) -> None:
    """Raises ConfigError unless value is a finite real number > 0."""
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value) \
        and float(value) > 0
    if not ok:
        raise ConfigError(f"{name}={value!r}: must be a number > 0; {hint}")


def validate_options(per_tensor: Any, h: Any, tol: Any, burn_in: Any, stochastic: Any, directions: Any,
                     seed: Any) -> None:
    """Raises ConfigError naming the first invalid option, its value and the fix."""
    int_at_least("per_tensor", per_tensor, 1, "coordinates checked per tensor, e.g. per_tensor=10")
    if h != "sweep":
        positive_float("h", h, "the notes use about 1e-5, or pass h='sweep' to try 1e-3 ... 1e-8")
    positive_float("tol", tol, "relative tolerance, e.g. tol=1e-5 (the notes: < 1e-7 is good)")
    int_at_least("burn_in", burn_in, 0, "SGD steps before the check, e.g. burn_in=20")
    int_at_least("directions", directions, 0, "random directions per tensor, e.g. directions=3")
    int_at_least("seed", seed, 0, "any fixed int, e.g. seed=0")
    if stochastic == "train":
        raise ConfigError("stochastic='train': refused: with dropout live and no fixed seed, f(x+h) and f(x-h) "
                          "draw different masks and the numerical gradient measures the noise; use 'seeded' "
                          "(train mode, same seed before every evaluation) or 'eval'")
    if stochastic not in STOCHASTIC_MODES:
        raise ConfigError(f"stochastic={stochastic!r}: must be one of {', '.join(map(repr, STOCHASTIC_MODES))}")


def scalar(value: Any, what: str) -> torch.Tensor:
    """Returns value as a 0-d tensor, or raises ConfigError when it is not a one-element tensor."""
    if not isinstance(value, torch.Tensor):
        raise ConfigError(f"{what} returned {type(value).__name__}: it must return a scalar torch tensor "
                          "(autograd needs one)")
    if value.numel() != 1:
        raise ConfigError(f"{what} returned a tensor of shape {tuple(value.shape)}: it must return a scalar; "
                          "reduce it with .mean() or .sum()")
    return value.reshape(())


def _float64(value: Any, dtype: torch.dtype = torch.float64) -> Any:
    """Returns a detached copy of a floating tensor in dtype (float64 by default); other values unchanged."""
    if isinstance(value, torch.Tensor):
        value = value.detach().clone()
        return value.to(dtype) if value.is_floating_point() else value
    return value


def _copy_model(model: nn.Module, dtype: torch.dtype = torch.float64) -> nn.Module:
    """Returns a deep copy of the model in dtype with no gradients: the caller's model is never touched."""
    if not isinstance(model, nn.Module):
        raise ConfigError(f"model={type(model).__name__}: must be a torch.nn.Module")
    try:
        twin = copy.deepcopy(model)
    except Exception as exc:  # deepcopy fails on non-leaf tensors kept as attributes, open files, ...
        raise ConfigError(f"model: cannot deep-copy {type(model).__name__} ({exc}); the check works on a copy "
                          "so that your model is never touched") from exc
    twin = twin.to(dtype)
    for p in twin.parameters():
        p.grad = None
    return twin


class Suffix:
    """f rerun from child k of an nn.Sequential, the outputs of the children before it computed once.

    For a plain nn.Linear child (`param` "weight" or "bias"), `at` moves one coordinate by a step without
    the matmul: W[i, j] + s changes output unit i by s * x[..., j] (b[i] + s by s), so the children after it
    rerun from the cached output with one column updated. A first-layer coordinate of a 10M-parameter MLP
    then costs the layers after it, and a middle-layer one only the last layer.
    """

    def __init__(self, obj: "Objective", children: list[nn.Module], inputs: list[Any], k: int, param: str) -> None:
        self.obj, self.children, self.inputs, self.k, self.param = obj, children, inputs, k, param

    def _rest(self, h: Any, start: int) -> float:
        with torch.no_grad():
            for child in self.children[start:]:
                h = child(h)
            return float(self.obj.finish(h))

    def __call__(self) -> float:
        """Returns f at the current parameters."""
        return self._rest(self.inputs[self.k], self.k)

    def at(self, index: tuple[int, ...], step: float) -> float | None:
        """Returns f with the coordinate `index` of the child's parameter already moved by `step` (None: rerun)."""
        if not self.param:
            return None
        h = self.inputs[self.k + 1].clone()
        i = index[0]
        with torch.no_grad():
            h[..., i] += step * self.inputs[self.k][..., index[1]] if self.param == "weight" else step
        return self._rest(h, self.k + 1)


@dataclass
class Objective:
    """f(params, x) = loss_fn(model(x), y) [+ penalty(model)], on float64 copies; reseeded when `seed` is set."""

    model: nn.Module
    x: torch.Tensor
    y: Any
    loss_fn: Callable[[Any, Any], torch.Tensor] | None
    penalty: Callable[[nn.Module], torch.Tensor] | None
    seed: int | None
    custom: tuple = ()  # the custom autograd Functions the loss depends on (found by the analytic pass)

    def loss_of(self, model: nn.Module, x: Any, y: Any) -> torch.Tensor:
        """Returns loss_fn(model(x), y) [+ penalty(model)]; with loss_fn=None the model returns its own loss."""
        if self.loss_fn is None:
            loss = scalar(model(x, y) if y is not None else model(x), "model (loss_fn=None)")
        else:
            loss = scalar(self.loss_fn(model(x), y), "loss_fn")
        if self.penalty is not None:
            loss = loss + scalar(self.penalty(model), "penalty")
        return loss

    def suffix_values(self, names: list[str]) -> dict[str, Callable[[], float]]:
        """Returns name -> f that reruns an nn.Sequential from the child holding that parameter.

        The children before it see no change when it is perturbed, so their outputs are computed once;
        only deterministic runs (eval mode, no reseeding) and a separate loss_fn qualify.
        """
        model = self.model
        if not isinstance(model, nn.Sequential) or self.seed is not None or model.training or self.loss_fn is None:
            return {}
        children = list(model)
        with torch.no_grad():
            inputs = [self.x]
            for child in children:
                inputs.append(child(inputs[-1]))
        out: dict[str, Callable[[], float]] = {}
        for n in names:
            head, _, rest = n.partition(".")
            k = int(head) if head.isdigit() else -1
            linear = rest in ("weight", "bias") and 0 <= k < len(children) and type(children[k]) is nn.Linear
            if 0 < k < len(children) or linear:
                out[n] = Suffix(self, children, inputs, k, rest if linear else "")
        return out

    def finish(self, out: Any) -> torch.Tensor:
        """Returns loss_fn(out, y) [+ penalty(model)] for the model's output."""
        assert self.loss_fn is not None
        loss = scalar(self.loss_fn(out, self.y), "loss_fn")
        if self.penalty is not None:
            loss = loss + scalar(self.penalty(self.model), "penalty")
        return loss

    def forward(self) -> torch.Tensor:
        """Returns the objective as a 0-d tensor (with a graph when grad mode is on)."""
        if self.seed is not None:
            torch.manual_seed(self.seed)
        return self.loss_of(self.model, self.x, self.y)

    def value(self) -> float:
        """Returns the objective as a float, without building a graph."""
        with torch.no_grad():
            return float(self.forward())

    def leaves(self, check_inputs: bool) -> dict[str, torch.Tensor]:
        """Returns name -> tensor for every parameter requiring grad (and "input" when asked)."""
        found: dict[str, torch.Tensor] = {n: p for n, p in self.model.named_parameters() if p.requires_grad}
        if check_inputs or self.x.requires_grad:
            found["input"] = self.x
        return found

    def gradients(self, leaves: dict[str, torch.Tensor]) -> tuple[float, dict[str, torch.Tensor],
                                                                   dict[str, torch.Tensor]]:
        """Returns (f, first backward, second backward): backward runs twice on one graph.

        A stateful backward (a buffer that accumulates) gives two different answers.
        """
        with torch.enable_grad():
            loss = self.forward()
            value = float(loss.detach())
            tensors = list(leaves.values())
            if not loss.requires_grad:
                zeros = {n: torch.zeros_like(t) for n, t in leaves.items()}
                return value, zeros, dict(zeros)
            nodes = custom_nodes(loss)
            with reached(nodes) as live:
                first = torch.autograd.grad(loss, tensors, retain_graph=True, allow_unused=True)
            self.custom = tuple(function_classes(nodes, live))
            second = torch.autograd.grad(loss, tensors, allow_unused=True)
        return value, _fill(leaves, first), _fill(leaves, second)


def _fill(leaves: dict[str, torch.Tensor], grads: Sequence[torch.Tensor | None]) -> dict[str, torch.Tensor]:
    """Returns name -> gradient, with zeros where autograd found no path (a detached branch)."""
    return {n: (g.detach() if g is not None else torch.zeros_like(t)) for (n, t), g in zip(leaves.items(), grads)}


def build_objective(model: nn.Module, loss_fn: Callable | None, batch: Any, stochastic: str, seed: int,
                    penalty: Callable | None, check_inputs: bool, dtype: torch.dtype = torch.float64) -> Objective:
    """Returns the Objective on float64 copies (or dtype); raises ConfigError for a malformed batch or model.

    A model without parameters has its inputs checked.
    """
    if not isinstance(batch, (tuple, list)) or len(batch) != 2:
        shown = f"{type(batch).__name__} of length {len(batch)}" if isinstance(batch, (tuple, list)) else \
            type(batch).__name__
        raise ConfigError(f"batch={shown}: must be a pair (x, y) of inputs and targets")
    if not isinstance(batch[0], torch.Tensor):
        raise ConfigError(f"batch[0]={type(batch[0]).__name__}: the inputs x must be a torch tensor")
    if loss_fn is not None and not callable(loss_fn):
        raise ConfigError(f"loss_fn={loss_fn!r}: must be callable as loss_fn(outputs, targets) -> scalar, or None "
                          "when the model returns its own loss")
    if penalty is not None and not callable(penalty):
        raise ConfigError(f"penalty={penalty!r}: must be None or callable as penalty(model) -> scalar")
    twin = _copy_model(model, dtype)
    if not any(True for _ in twin.parameters()):
        check_inputs = True
    elif not any(p.requires_grad for p in twin.parameters()):
        raise ConfigError(f"model: {type(model).__name__} has no parameters with requires_grad=True; "
                          "nothing to check")
    x = _float64(batch[0], dtype)
    if check_inputs:
        if not x.is_floating_point():
            raise ConfigError(f"check_inputs=True: the inputs have dtype {x.dtype}; only floating inputs have "
                              "a gradient (pass check_inputs=False)")
        x.requires_grad_(True)
    twin.train(stochastic == "seeded")
    return Objective(twin, x, _float64(batch[1], dtype), loss_fn, penalty, seed if stochastic == "seeded" else None)


def burn_in_steps(obj: Objective, steps: int) -> float:
    """Returns the loss after `steps` plain SGD steps on the batch (step halved until the loss falls).

    The notes: check in a "characteristic mode of operation", after the loss starts to go down.
    """
    params = [p for p in obj.model.parameters() if p.requires_grad]
    lr, loss = _BURN_IN_LR, obj.value()
    least = _BURN_IN_FLOOR * loss  # "starts to go down", not fitted: a 4-example batch fitted to a loss of 0
    for _ in range(steps):             # (a saturated softmax) leaves gradients that round to nothing
        with torch.enable_grad():
            grads = torch.autograd.grad(obj.forward(), params, allow_unused=True)
        saved = [p.detach().clone() for p in params]
        for _ in range(30):
            with torch.no_grad():
                for p, p0, g in zip(params, saved, grads):
                    p.copy_(p0 if g is None else p0 - lr * g)
            new = obj.value()
            if least <= new < loss:
                loss = new
                break
            lr /= 2
        else:
            with torch.no_grad():
                for p, p0 in zip(params, saved):
                    p.copy_(p0)
            break
    log.debug("burn-in: %d steps, loss %.6g, lr %.3g", steps, loss, lr)
    return loss
