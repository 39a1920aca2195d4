"""The checks at initialisation: the loss at chance, and a regularisation strength that raises the loss.

The notes: "Look for correct loss at chance performance" (ln C for softmax, C - 1 for the SVM, reg = 0),
and "increasing the regularization strength should increase the loss".
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ..losses import chance_loss as chance_value
from ..losses import reg_params
from ..step import objective
from .context import Context, build, device_of, sample, train_no_dropout
from .report import Check, failed, passed, skipped

__all__ = ["BATCH", "REAL_TOL", "SCALED_TOL", "SHRINK", "chance_loss", "input_stats", "reg_raises_loss"]

BATCH = 512  # training examples for the loss at init: enough that one batch's luck does not matter
REAL_TOL = 0.25  # real init: within +-25% of chance
SCALED_TOL = 0.05  # last layer scaled down: within +-5% of chance
SHRINK = 1e-3  # factor on the last layer's weights and bias: scores ~0, so the loss must be chance
MEAN_LIMIT, STD_LOW, STD_HIGH = 3.0, 0.1, 10.0  # normalised inputs: |mean| <= 3, std in [0.1, 10] per feature
REG_SHARE = 0.1  # the L2 term is raised to at least 10% of the data loss, so the rise is unmistakable
RISE_SHARE, GRAD_TOL = 0.9, 1e-2  # measured rise >= 90% of reg*S; its gradient within 1% of reg*W


def _batch(ctx: Context) -> tuple[Tensor, Tensor]:
    """Returns up to BATCH training examples drawn with the run's seed."""
    idx = sample(len(ctx.x), BATCH, ctx.generator())
    return ctx.x[idx], ctx.y[idx]


def input_stats(x: Tensor) -> tuple[float, float]:
    """Returns (mean over features of |mean|, mean over features of std) of a batch of inputs."""
    flat = x.reshape(len(x), -1).double()
    std = flat.std(0) if len(x) > 1 else torch.zeros(flat.shape[1], dtype=flat.dtype)
    return float(flat.mean(0).abs().mean()), float(std.mean())


@torch.no_grad()
def _loss_and_last_layer(model: nn.Module, x: Tensor, y: Tensor, loss_fn: object) -> tuple[float, str | None]:
    """Returns the data loss and the name of the last module with parameters of its own to finish its forward.

    The model itself ("") counts only when no submodule has parameters: it finishes after all of them.
    """
    order: list[str] = []
    owners = [(n, m) for n, m in model.named_modules() if next(m.parameters(recurse=False), None) is not None]
    if len(owners) > 1:
        owners = [(n, m) for n, m in owners if n]
    hooks = [m.register_forward_hook(lambda *_, n=name: order.append(n)) for name, m in owners]
    try:
        dev = device_of(model)
        loss = float(loss_fn(model(x.to(dev)), y.to(dev)))  # type: ignore[operator]
    finally:
        for h in hooks:
            h.remove()
    return loss, (order[-1] if order else None)


def _describe(model: nn.Module, layer: str | None) -> str:
    """Returns how a person sees the layer: "fc3 (Linear)", or "the model's own parameters"."""
    if layer is None:
        return "no parameters"
    return f"{layer} ({type(model.get_submodule(layer)).__name__})" if layer else "the model's own parameters"


@torch.no_grad()
def _loss_scaled_down(model: nn.Module, layer: str, x: Tensor, y: Tensor, loss_fn: object) -> float:
    """Returns the data loss after multiplying the weights and bias of `layer` by SHRINK (in place)."""
    for p in model.get_submodule(layer).parameters(recurse=False):
        p.mul_(SHRINK)
    dev = device_of(model)
    return float(loss_fn(model(x.to(dev)), y.to(dev)))  # type: ignore[operator]


def _normalised(stats: tuple[float, float]) -> bool:
    """Returns True when the average feature has |mean| <= 3 and std in [0.1, 10]."""
    return stats[0] <= MEAN_LIMIT and STD_LOW <= stats[1] <= STD_HIGH


def _input_note(stats: tuple[float, float]) -> str:
    """Returns a note for the measured text when the inputs look un-normalised, else ""."""
    return "" if _normalised(stats) else f" (inputs not normalised: |mean| {stats[0]:.3g}, std {stats[1]:.3g})"


def _chance_advice(real: float, small: float, chance: float, layer: str, stats: tuple[float, float]) -> str:
    """Returns what to do when the loss at init is off: which of loss/labels, inputs or last layer is to blame."""
    if not abs(small - chance) <= SCALED_TOL * chance:
        return (f"even with the last layer ({layer}) scaled x{SHRINK:g}, so that every score is ~0, the loss is "
                f"{small:.3f} instead of {chance:.3f}: the loss or the labels are wrong, not the init (a softmax "
                "applied twice, labels out of range, a wrong loss formula such as a sum instead of a mean over "
                "examples, or something after the last layer that shifts the scores)")
    if real < chance:
        return (f"the loss at init is {1 - real / chance:.0%} below chance: a random model should not know the "
                "answers; look for labels leaking into the inputs, or a loss that is not a mean per example")
    mean, std = stats
    if not _normalised(stats):
        return (f"inputs are not normalised: per feature, |mean| is {mean:.3g} and std {std:.3g} on average "
                f"(expected |mean| <= {MEAN_LIMIT:g}, std in [{STD_LOW:g}, {STD_HIGH:g}]); standardise each feature "
                "with the training split's mean and std: (x - mean) / std")
    return (f"the last layer's init scale is too large: scores start far from 0 (loss {real:.3f} vs chance "
            f"{chance:.3f}) although the inputs look normalised; multiply the initial weights of {layer} by 0.01 "
            "and zero its bias (babysit's built-in models do)")


def chance_loss(ctx: Context) -> Check:
    """Returns the chance_loss check: the data loss at the real init and with the last layer scaled down.

    A small-init check alone hides un-normalised inputs (0-255 digit pixels, default-init MLP: 15.9 vs ln 10 = 2.30).
    """
    name, kind, c = "chance_loss", ctx.task.loss_kind, ctx.task.num_classes
    if kind == "custom":
        return skipped(name, "custom loss: its chance-level value is unknown (known for softmax: ln C, svm: C - 1)")
    chance = chance_value(kind, c)
    formula = f"ln {c}" if kind == "softmax" else f"C-1 = {c - 1}"
    x, y = _batch(ctx)
    model = train_no_dropout(build(ctx))
    real, layer = _loss_and_last_layer(model, x, y, ctx.task.loss_fn)
    small = real if layer is None else _loss_scaled_down(model, layer, x, y, ctx.task.loss_fn)
    stats = input_stats(x)
    values = {"loss_init": real, "loss_scaled_down": small, "chance": chance,
              "input_abs_mean": stats[0], "input_std": stats[1]}
    where = _describe(model, layer)
    measured = f"{real:.3f} at init, {small:.3f} with last layer {where} x{SHRINK:g}" + _input_note(stats)
    expected = f"{chance:.3f} ({formula}) +-{REAL_TOL:.0%} at init, +-{SCALED_TOL:.0%} scaled down"
    if abs(real - chance) <= REAL_TOL * chance and abs(small - chance) <= SCALED_TOL * chance:
        return passed(name, measured, expected, **values)
    advice = _chance_advice(real, small, chance, where, stats)
    return failed(name, measured, expected, advice, **values)


def _rise_gradient_error(rise: Tensor, weights: list[nn.Parameter], reg: float) -> float:
    """Returns ||d rise / dW - reg*W|| / ||reg*W||: 0 when the L2 term trains the weights as it should."""
    if not rise.requires_grad:
        return 1.0
    grads = torch.autograd.grad(rise, weights, allow_unused=True)
    diff = sum(float(((torch.zeros_like(w) if g is None else g) - reg * w.detach()).double().square().sum())
               for g, w in zip(grads, weights))
    norm = sum(float((reg * w.detach()).double().square().sum()) for w in weights)
    return (diff / norm) ** 0.5 if norm > 0 else 0.0


def _coverage(model: nn.Module, weights: list[nn.Parameter]) -> str:
    """Returns "k weight tensors, n of m parameters" so a person can see what the L2 term covers."""
    total = sum(p.numel() for p in model.parameters())
    return f"{len(weights)} weight tensors, {sum(w.numel() for w in weights):,} of {total:,} parameters"


def reg_raises_loss(ctx: Context) -> Check:
    """Returns the reg_raises_loss check: at a reg where L2 is >= 10% of the data loss, the objective rises by reg*S.

    A tiny reg shifts the loss by 0.2% and proves nothing; the rise is compared with 0.5*reg*sum(W**2).
    """
    name = "reg_raises_loss"
    model = train_no_dropout(build(ctx))
    weights = reg_params(model)
    if not weights:
        return skipped(name, "no weight tensors to regularise (no parameter with ndim >= 2 outside normalisation)")
    trainable = [w for w in weights if w.requires_grad]
    if not trainable:
        return skipped(name, "every weight tensor is frozen (requires_grad=False): L2 has nothing to train")
    x, y = (t.to(device_of(model)) for t in _batch(ctx))
    with torch.no_grad():
        data = float(ctx.task.loss_fn(model(x), y))
        s = 0.5 * sum(float(w.double().square().sum()) for w in weights)
    if s == 0:
        return skipped(name, "every weight is 0 at init, so the L2 term is 0 at any strength")
    reg = max(ctx.reg, REG_SHARE * max(abs(data), 1e-2) / s)
    rise_t = (objective(model, x, y, ctx.task.loss_fn, weights, reg)
              - objective(model, x, y, ctx.task.loss_fn, weights, 0.0))
    rise, expected = float(rise_t.detach()), reg * s
    grad_err = _rise_gradient_error(rise_t, trainable, reg)
    values = {"reg": reg, "rise": rise, "expected_rise": expected, "data_loss": data, "gradient_error": grad_err}
    measured = f"{rise:+.4g} at reg={reg:.3g}, gradient off by {grad_err:.2%} ({_coverage(model, weights)})"
    expected_text = f">= +{RISE_SHARE * expected:.4g} ({RISE_SHARE:g} x 0.5*reg*sum(W**2)); gradient reg*W"
    if rise >= RISE_SHARE * expected and grad_err <= GRAD_TOL:
        return passed(name, measured, expected_text, **values)
    if rise < RISE_SHARE * expected:
        advice = (f"raising reg from 0 to {reg:.3g} moved the objective by {rise:+.4g} instead of +{expected:.4g}: "
                  "the L2 term is not wired into the training objective (missing, negated or mis-scaled in "
                  "step.objective / losses.l2_term)")
    else:
        advice = (f"the L2 term raises the loss but its gradient is off by {grad_err:.0%} from reg*W: it is "
                  "computed from detached weights (.detach(), .data), so training never feels it")
    return failed(name, measured, expected_text, advice, **values)
