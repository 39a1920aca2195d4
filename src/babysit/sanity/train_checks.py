"""The checks that train: overfit a tiny subset, then show that a short training beats chance on held-out data.

The notes: "Overfit a tiny subset of data ... make sure you can achieve zero cost", but a model can
overfit 20 examples "even if your datapoints' features are random"; hence the held-out check.
"""

from __future__ import annotations

import itertools
import math

import torch
from torch import Tensor
from torch.utils.data import TensorDataset

from ..step import evaluate
from .context import Context, accuracy, build, device_of, has_dropout, sample, trainer
from .report import Check, failed, passed

__all__ = ["BUDGET", "MIN_MARGIN", "STEPS", "SUBSET", "TINY", "learnable_signal", "overfit_tiny", "stratified"]

TINY, BUDGET, LOSS_SHARE = 20, 1000, 0.01  # ~20 examples, <= 1000 full-batch steps, loss < 1% of its start
SUBSET, HELD_OUT, STEPS, BATCH = 2000, 2000, 300, 128  # the learnable-signal training and its held-out set
BASE_STEPS, EVERY, CLEAR = 100, 50, 0.10  # zero inputs: only the class priors to learn; stop a clear pass early
MIN_MARGIN = 0.05  # beat chance and the zero-input baseline by 5 points (or 2 standard errors, if larger)


def stratified(y: Tensor, k: int, gen: torch.Generator) -> Tensor:
    """Returns k indices of y taking the classes in turn (1st of each class, then 2nd, ...), in seeded order."""
    order = torch.randperm(len(y), generator=gen)
    ys = y[order]
    pools = [order[ys == c].tolist() for c in torch.unique(ys)]
    picked = [pool[r] for r in range(k) for pool in pools if r < len(pool)][:k]
    return torch.tensor(picked, dtype=torch.long)


def _double_softmax_floor(num_classes: int) -> float:
    """Returns the cross-entropy floor of scores that are already probabilities: ln(e + C - 1) - 1 (1.46 for C=10)."""
    return math.log(math.e + num_classes - 1) - 1


def _overfit_advice(ctx: Context, start: float, last: float, has_drop: bool) -> str:
    """Returns why a tiny subset could not be memorised, most specific cause first."""
    if not math.isfinite(last):
        return ("the loss became NaN/inf: a numerically unstable loss (a log of a hand-made softmax) or an "
                f"exploding model; the checks train with {dict(ctx.optimizer)}")
    if not last < 0.9 * start:
        return ("the loss barely moved: the parameters do not learn (frozen with requires_grad=False, detached "
                "from the loss, or the output does not depend on them)")
    floor = _double_softmax_floor(ctx.task.num_classes)
    if ctx.task.loss_kind == "softmax" and abs(last - floor) < 0.05 * floor:
        return (f"the loss stalls at {last:.3f}, the floor {floor:.3f} of a softmax applied twice: the model "
                "ends in a Softmax and the cross-entropy applies its own; return raw scores (logits)")
    drop = " or dropout too high (it stays on here)" if has_drop else ""
    return (f"the model cannot memorise {TINY} examples with reg = 0: a bug in the model, the loss or the labels "
            f"(e.g. a softmax before the cross-entropy), or the model is too small{drop}")


def overfit_tiny(ctx: Context) -> Check:
    """Returns the overfit_tiny check: ~20 examples, reg = 0, full batch, until loss < 1% of its start and 100% accuracy.

    Unless a model passes this with a small data set, it is not worth proceeding to the full one (the notes).
    """
    name = "overfit_tiny"
    idx = stratified(ctx.y, TINY, ctx.generator(1))
    x, y = ctx.x[idx], ctx.y[idx]
    model = build(ctx).train()
    start = last = math.nan
    done, steps = False, 0
    for steps, loss in enumerate(itertools.islice(trainer(ctx, model, x, y, len(x), ctx.generator(2)), BUDGET), 1):
        start, last = (loss if steps == 1 else start), loss
        if not math.isfinite(loss):
            break
        done = (loss < LOSS_SHARE * start or start <= 0) and accuracy(model, x, y) == 1.0
        if done:
            break
    acc = accuracy(model, x, y)
    values = {"steps": steps, "start_loss": start, "final_loss": last, "train_accuracy": acc}
    expected = f"loss < {LOSS_SHARE:.0%} of start and 100% accuracy on {len(x)} examples within {BUDGET} steps"
    if done:
        return passed(name, f"loss {start:.3f} -> {last:.2g}, 100% accuracy in {steps} steps", expected, **values)
    measured = f"after {steps} steps: loss {start:.3f} -> {last:.3g}, train accuracy {acc:.0%}"
    return failed(name, measured, expected, _overfit_advice(ctx, start, last, has_dropout(model)), **values)


def _fit_and_score(ctx: Context, x: Tensor, y: Tensor, x_val: Tensor, y_val: Tensor, steps: int = STEPS,
                   target: float | None = None) -> tuple[float, float]:
    """Returns (held-out accuracy, training accuracy) after `steps` minibatch steps from the seeded init.

    With a target, held-out accuracy is measured every EVERY steps and training stops once it is reached.
    """
    model = build(ctx).train()
    held = TensorDataset(x_val, y_val)
    acc = math.nan
    for step, _ in enumerate(itertools.islice(trainer(ctx, model, x, y, BATCH, ctx.generator(4)), steps), 1):
        if target is not None and step % EVERY == 0 and step < steps:
            acc = evaluate(model, held, ctx.task.loss_fn, device=device_of(model)).accuracy
            if acc >= target:
                return acc, accuracy(model, x, y)
    acc = evaluate(model, held, ctx.task.loss_fn, device=device_of(model)).accuracy
    return acc, accuracy(model, x, y)


def _signal_advice(acc: float, train_acc: float, chance: float, base: float, margin: float) -> str:
    """Returns what to suspect when a short training does not beat chance or the input-independent baseline."""
    if acc <= chance + margin:
        fits = f" although it fits its training data ({train_acc:.0%})" if train_acc > chance + margin else ""
        return (f"held-out accuracy {acc:.1%} is not above chance ({chance:.1%}){fits}: the features may be "
                "garbage (random, or broken by a data pipeline bug), the labels misaligned with the inputs "
                "(shuffled in one array only), or held-out data preprocessed unlike the training data")
    return (f"no better than the same training with the inputs zeroed ({base:.1%}): the model learns the class "
            "frequencies only; check that the features reach the model and that the labels belong to them")


def learnable_signal(ctx: Context) -> Check:
    """Returns the learnable_signal check: a short training beats chance and the zero-input baseline on held-out data.

    The margin is 5 points or two standard errors of a proportion at chance, 2*sqrt(p(1-p)/n), if larger.
    """
    name, gen = "learnable_signal", ctx.generator(3)
    idx, vidx = sample(len(ctx.x), SUBSET, gen), sample(len(ctx.x_val), HELD_OUT, gen)
    x, y, x_val, y_val = ctx.x[idx], ctx.y[idx], ctx.x_val[vidx], ctx.y_val[vidx]
    majority = int(torch.bincount(y).argmax())
    chance = float((y_val == majority).double().mean())
    margin = max(MIN_MARGIN, 2 * math.sqrt(chance * (1 - chance) / len(y_val)))
    acc, train_acc = _fit_and_score(ctx, x, y, x_val, y_val, target=chance + margin + CLEAR)
    base, _ = _fit_and_score(ctx, torch.zeros_like(x), y, torch.zeros_like(x_val), y_val, steps=BASE_STEPS)
    values = {"accuracy": acc, "train_accuracy": train_acc, "chance": chance, "baseline": base, "margin": margin}
    measured = f"held-out {acc:.1%} (train {train_acc:.0%}), chance {chance:.1%}, zero-input baseline {base:.1%}"
    expected = f"> chance + {margin:.1%} and > baseline + {margin:.1%} ({len(y_val)} held-out examples)"
    if acc > chance + margin and acc > base + margin:
        return passed(name, measured, expected, **values)
    return failed(name, measured, expected, _signal_advice(acc, train_acc, chance, base, margin), **values)
