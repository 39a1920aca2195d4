"""The checks on the computation graph: examples stay independent, and every parameter hears the data loss.

A gradient check cannot see either bug: the gradient is right for what the model computes.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .context import Context, build, device_of, has_batchnorm, has_dropout
from .report import Check, failed, passed, skipped

__all__ = ["GRAD_BATCH", "PAIR_BATCH", "batch_independence", "cross_gradients", "params_get_gradient"]

PAIR_BATCH = 4  # examples whose outputs must not depend on each other
LEAK_TOL = 1e-12  # a cross-example gradient above 1e-12 of an example's own gradient is a leak
GRAD_BATCH = 256  # examples for the gradient of the data loss; a second batch before blaming a parameter


def cross_gradients(out: Tensor, x: Tensor, gen: torch.Generator) -> Tensor | None:
    """Returns M (n, n): M[i, j] = max |d(w . out[i]) / d x[j]| for random weights w; None without a gradient.

    Random weights, not a plain sum: the sum of a softmax's outputs is 1, with zero gradient.
    """
    if not out.requires_grad or out.dim() == 0 or out.shape[0] != len(x):
        return None
    w = torch.randn(out.shape[1:], generator=gen, dtype=torch.float64).to(out)
    rows = []
    for i in range(len(x)):
        (g,) = torch.autograd.grad((out[i] * w).sum(), x, retain_graph=True, allow_unused=True)
        if g is None:
            return None
        rows.append(g.reshape(len(x), -1).abs().amax(1))
    return torch.stack(rows)


def _leak(m: Tensor) -> tuple[float, float]:
    """Returns (largest cross-example gradient, largest own gradient) of a cross-gradient matrix."""
    eye = torch.eye(len(m), dtype=torch.bool, device=m.device)
    return float(m[~eye].max()), float(m[eye].max())


def _first_mixer(model: nn.Module, x: Tensor, gen: torch.Generator) -> str | None:
    """Returns "name (Type)" of the first leaf module whose output mixes the examples, or None."""
    captured: list[tuple[str, nn.Module, object]] = []
    hooks = [m.register_forward_hook(lambda mod, _i, o, n=name: captured.append((n, mod, o)))
             for name, m in model.named_modules() if name and next(m.children(), None) is None]
    try:
        model(x)
    finally:
        for h in hooks:
            h.remove()
    for name, mod, out in captured:
        m = cross_gradients(out, x, gen) if isinstance(out, Tensor) else None
        if m is not None and _leak(m)[0] > LEAK_TOL * max(_leak(m)[1], 1e-30):
            return f"{name} ({type(mod).__name__})"
    return None


def _mode(model: nn.Module) -> str:
    """Returns how the model is checked: eval mode when batch norm or dropout would mix or randomise."""
    why = [w for w, has in (("BatchNorm", has_batchnorm(model)), ("Dropout", has_dropout(model))) if has]
    if why:
        model.eval()
        return f"checked in eval mode ({', '.join(why)})"
    model.train()
    return "checked in train mode"


def _mix_failure(model: nn.Module, x: Tensor, m: Tensor, mode: str, gen: torch.Generator) -> Check:
    """Returns the failed batch_independence check, naming the dependent pairs and the first mixing module."""
    leak, own = _leak(m)
    pairs = [(i, j) for i in range(len(m)) for j in range(len(m)) if i != j and m[i, j] > LEAK_TOL * own]
    where = _first_mixer(model, x, gen)
    at = f"; examples first mix in the output of {where}" if where else ""
    measured = (f"cross-example gradient {leak:.3g} ({leak / max(own, 1e-30):.3g} of own); output {pairs[0][0]} "
                f"depends on input {pairs[0][1]} ({len(pairs)} of {len(m) * (len(m) - 1)} pairs); {mode}{at}")
    advice = (f"the model mixes the examples of a batch{at}: a reshape/view where a transpose/permute was meant "
              "(x.view(n, -1) of a (features, batch) tensor), a mean/sum/softmax over dim 0, or a normalisation "
              "across the batch; a gradient check cannot see this")
    return failed("batch_independence", measured, f"0 (< {LEAK_TOL:g} of an example's own gradient)", advice,
                  cross_gradient=leak, own_gradient=own, pairs=len(pairs))


def batch_independence(ctx: Context) -> Check:
    """Returns the batch_independence check: d(output i)/d(input j) is exactly 0 for j != i, on a batch of 4.

    Batch norm mixes by design in train mode, so such models (and those with dropout) are checked in eval mode.
    """
    name, gen = "batch_independence", ctx.generator(5)
    model = build(ctx)
    mode = _mode(model)
    x = ctx.x[torch.randperm(len(ctx.x), generator=gen)[:PAIR_BATCH]]
    if len(x) < 2:
        return skipped(name, "needs at least 2 training examples")
    if not x.is_floating_point():
        return skipped(name, f"inputs are {x.dtype} (e.g. token ids): the model takes no gradient with respect to them")
    x = x.to(device_of(model)).clone().requires_grad_(True)
    m = cross_gradients(model(x), x, gen)
    if m is None:
        return skipped(name, "the model's output has no gradient with respect to its inputs (e.g. an embedding "
                             "lookup or a detached input path)")
    leak, own = _leak(m)
    if own == 0 and leak == 0:
        return skipped(name, "every input gradient is 0 at init: the outputs do not depend on the inputs yet")
    if leak <= LEAK_TOL * own:
        return passed(name, f"cross-example gradient {leak:.3g} (batch of {len(x)}); {mode}",
                      f"0 (< {LEAK_TOL:g} of an example's own gradient)", cross_gradient=leak, own_gradient=own)
    return _mix_failure(model, x, m, mode, gen)


def _without_gradient(ctx: Context, model: nn.Module, named: list[tuple[str, nn.Parameter]],
                      idx: Tensor) -> list[str]:
    """Returns the names of the parameters whose gradient of the data loss on the batch is None or all zero."""
    dev = device_of(model)
    model.zero_grad(set_to_none=True)
    loss = ctx.task.loss_fn(model(ctx.x[idx].to(dev)), ctx.y[idx].to(dev))
    if loss.requires_grad:
        loss.backward()
    return [n for n, p in named if p.grad is None or not bool(p.grad.any())]


def params_get_gradient(ctx: Context) -> Check:
    """Returns the params_get_gradient check: every trainable parameter gets a non-zero data-loss gradient (reg = 0).

    In eval mode for determinism; a parameter is blamed only if a second batch also leaves it at zero.
    """
    name = "params_get_gradient"
    model = build(ctx).eval()
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    frozen = sum(1 for p in model.parameters() if not p.requires_grad)
    if not named:
        return skipped(name, "the model has no trainable parameters")
    perm = torch.randperm(len(ctx.x), generator=ctx.generator(6))
    dead = _without_gradient(ctx, model, named, perm[:GRAD_BATCH])
    if dead and len(perm) > GRAD_BATCH:  # a dead ReLU can zero a bias on one batch
        still = set(_without_gradient(ctx, model, named, perm[GRAD_BATCH : 2 * GRAD_BATCH]))
        dead = [n for n in dead if n in still]
    note = f" ({frozen} frozen, not checked)" if frozen else ""
    expected = "every trainable parameter: a non-zero gradient from the data loss (reg = 0)"
    values = {"trainable": len(named), "without_gradient": len(dead), "frozen": frozen}
    if not dead:
        return passed(name, f"{len(named)} of {len(named)} trainable tensors get a gradient{note}", expected, **values)
    shown = ", ".join(dead[:8]) + (f", ... ({len(dead) - 8} more)" if len(dead) > 8 else "")
    advice = ("these parameters get no gradient from the data loss, so they learn from the regulariser alone, if "
              "at all: look for .detach(), .data, .item() or a numpy round-trip on their path, or a layer built "
              "but not used in forward; to freeze them on purpose, use requires_grad_(False)")
    return failed(name, f"{len(dead)} of {len(named)} without gradient: {shown}{note}", expected, advice, **values)
