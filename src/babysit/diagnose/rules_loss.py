"""Rules read from the loss curve, combined with the layers where one signal alone misfires.

Each rule: History and Context in, a Finding, a Skip (with the reason) or None out.
"""

from __future__ import annotations

import math
import statistics
from typing import Any

from ..store import History
from .facts import (Context, chance_loss, dead_units, fmt, initial_loss, last_window, loss_stuck, median, saturation,
                    units_died, weight_ratios)
from .findings import Finding, Skip

__all__ = ["diverged", "lr_too_high", "lr_too_low", "bad_init_loss", "noisy_loss", "learning_rate", "rebounded"]

Result = Finding | Skip | None
_NO_LOSS = "no per-step loss recorded: call w.step(loss) after optimizer.step()"


def learning_rate(h: History) -> float | None:
    """Returns the run's learning rate: the configured one, else the last epoch's."""
    for table in ("hp", "watch"):
        lr = h.config.get(table, {}).get("lr") if isinstance(h.config.get(table), dict) else None
        if isinstance(lr, (int, float)):
            return float(lr)
    return h.epochs[-1].lr if h.epochs and math.isfinite(h.epochs[-1].lr) else None


def _lr_advice(h: History, factor: float, verb: str) -> str:
    lr = learning_rate(h)
    new = f" (from {fmt(lr)} to {fmt(lr / factor if verb == 'divide' else lr * factor)})" if lr else ""
    return f"{verb} the learning rate by about {fmt(factor)}{new}"


def diverged(h: History, ctx: Context) -> Result:
    """Returns an error when the loss became NaN/inf (the notes: the rate is far too high; stop and lower it)."""
    if not len(h.loss) and h.meta.get("status") != "diverged":
        return Skip("diverged", _NO_LOSS)
    bad = [(s, e, v) for s, e, v in zip(h.loss.steps, h.loss.epochs, h.loss.values) if not math.isfinite(v)]
    if not bad and h.meta.get("status") != "diverged":
        return None
    step = bad[0][0] if bad else int(h.meta.get("diverged_at") or 0)
    finite = h.loss.finite()
    return Finding("diverged", "error", f"the loss became {bad[0][2] if bad else 'non-finite'} at step {step}",
                   {"step": step, "epoch": bad[0][1] if bad else None, "last_finite_loss": finite[-1] if finite
                    else None, "lr": learning_rate(h)},
                   _lr_advice(h, 10, "divide") + "; or clip gradients (clip_norm=1.0)")


def rebounded(h: History, t: Any) -> tuple[float, float] | None:
    """Returns (last, minimum) epoch train loss when it climbed back above rebound_factor x its minimum."""
    losses = [e.train_loss for e in h.epochs if math.isfinite(e.train_loss)]
    init = initial_loss(h)
    if len(losses) < 2 or init is None:
        return None
    last, low = losses[-1], min(losses)
    return (last, low) if last > t["rebound_factor"] * low and last > 0.3 * init[0] else None


def _smoothed(values: tuple[float, ...]) -> list[float]:
    """Returns running means over windows of about 5% of the run (<= 50 steps): one unlucky batch is no explosion."""
    w = max(1, min(50, len(values) // 20))
    sums = [0.0]
    for v in values:
        sums.append(sums[-1] + v)
    return [(sums[i + w] - sums[i]) / w for i in range(len(values) - w + 1)]


def lr_too_high(h: History, ctx: Context) -> Result:
    """Returns a warning when the loss explodes, or stays high while units die or updates are too big.

    The notes' loss cartoon; an MLP sweep showed a dead net's update ratios look healthy, so dead
    units plus a stuck loss count as evidence too (ANCHORS rows 8, 10, 12).
    """
    t = ctx.settings
    init = initial_loss(h)
    if init is None:
        return Skip("lr_too_high", _NO_LOSS)
    signals: dict[str, Any] = {}
    peak = max(_smoothed(h.loss.finite()), default=init[0])
    if peak > t["explode_factor"] * init[0] or any(not math.isfinite(v) for v in h.loss.values):
        signals["loss_peak"] = peak
    died = units_died(h, t)
    if died and loss_stuck(h, t):
        layer, (start, end) = max(died.items(), key=lambda kv: kv[1][1])
        signals.update(dead_layer=layer, dead_at_init=start, dead_now=end)
    ratios = weight_ratios(h)
    if ratios and max(ratios.values()) > t["ratio_high"] and (loss_stuck(h, t) or rebounded(h, t)):
        layer = max(ratios, key=lambda k: ratios[k])
        signals.update(ratio_layer=layer, update_ratio=ratios[layer])
    if rebounded(h, t):
        signals["train_loss_last_vs_min"] = rebounded(h, t)
    if not signals:
        return None
    why = []
    if "loss_peak" in signals:
        why.append(f"the loss rose to {fmt(signals['loss_peak'])} from {fmt(init[0])} at initialisation")
    if "dead_layer" in signals:
        why.append(f"{fmt(100 * signals['dead_now'])}% of {signals['dead_layer']}'s units died (alive at init) "
                   "while the loss stayed high")
    if "ratio_layer" in signals:
        why.append(f"the update:weight ratio of {signals['ratio_layer']} is {fmt(signals['update_ratio'])}")
    if "train_loss_last_vs_min" in signals:
        last, low = signals["train_loss_last_vs_min"]
        why.append(f"the train loss climbed back to {fmt(last)} from a minimum of {fmt(low)}")
    return Finding("lr_too_high", "warning", "the learning rate is too high: " + "; ".join(why),
                   {**signals, "initial_loss": init[0], "lr": learning_rate(h)}, _lr_advice(h, 10, "divide"))


def lr_too_low(h: History, ctx: Context) -> Result:
    """Returns a warning when the loss barely moves and the updates are tiny, with no dead or saturated layer to blame.

    The notes: a slow, nearly linear decrease means the rate is too low; update:weight far below ~1e-3.
    """
    t = ctx.settings
    ratios = weight_ratios(h)
    init = initial_loss(h)
    if not ratios:
        return Skip("lr_too_low", "needs update:weight ratios (a watched run: train(monitor=True) or watch())")
    if init is None or not h.epochs:
        return Skip("lr_too_low", "needs the loss and at least one finished epoch")
    first = h.epochs[0].train_loss if math.isfinite(h.epochs[0].train_loss) else \
        statistics.fmean(last_window(h, h.loss).finite() or [init[0]])
    typical = median(ratios.values())
    blamed = any(v[1] >= t["dead_warn"] for v in dead_units(h).values()) or \
        any(v >= t["saturated_warn"] for v in saturation(h).values())
    if not (first > t["flat_fraction"] * init[0] and loss_stuck(h, t, 1) and typical < t["ratio_low"]) or blamed:
        return None
    decades = max(1, round(math.log10(1e-3 / typical))) if typical > 0 else 3
    return Finding("lr_too_low", "warning",
                   f"the learning rate is too low: the loss went from {fmt(init[0])} to {fmt(first)} in the first "
                   f"epoch, and the median update:weight ratio is {fmt(typical)} (the notes' target ~1e-3)",
                   {"initial_loss": init[0], "first_epoch_loss": first, "median_update_ratio": typical,
                    "ratios": ratios, "lr": learning_rate(h)}, _lr_advice(h, 10.0 ** decades, "multiply"))


def bad_init_loss(h: History, ctx: Context) -> Result:
    """Returns a warning when the loss at initialisation is far from chance (softmax ln C, SVM C - 1).

    The notes' first sanity check: with small weights every class is equally likely.
    """
    chance, init = chance_loss(h), initial_loss(h)
    if chance is None:
        return Skip("bad_init_loss", "the number of classes or the loss kind is unknown: "
                                     "pass watch(num_classes=..., loss='softmax' or 'svm')")
    if init is None:
        return Skip("bad_init_loss", _NO_LOSS)
    expected, classes, kind = chance
    off = abs(init[0] - expected) / expected
    if off <= ctx.settings["init_loss_tol"]:
        return None
    name = "ln C" if kind == "softmax" else "C - 1"
    return Finding("bad_init_loss", "warning",
                   f"the loss at initialisation is {fmt(init[0])}, {fmt(100 * off)}% away from chance "
                   f"({name} = {fmt(expected)} for {classes} classes)",
                   {"initial_loss": init[0], "expected": expected, "relative_error": off, "measured_on": init[1]},
                   "start the last layer small (scale its weights by about 0.01, zero its bias) so the scores start "
                   f"near zero and the loss near {fmt(expected)}")


def noisy_loss(h: History, ctx: Context) -> Result:
    """Returns a warning when the per-step loss wiggles far more than it falls (the notes: wiggle ~ batch size)."""
    window = last_window(h, h.loss).finite()
    init = initial_loss(h)
    if len(window) < 30 or init is None:
        return Skip("noisy_loss", "needs at least 30 per-step losses in the last epoch")
    mean = statistics.fmean(window)
    cv = statistics.pstdev(window) / mean if mean > 0 else 0.0
    if cv <= ctx.settings["noisy_cv"] or mean > 0.5 * init[0]:
        return None
    batch = h.config.get("hp", {}).get("batch_size") if isinstance(h.config.get("hp"), dict) else None
    bigger = f"from {batch} to {max(32, 8 * int(batch))}" if isinstance(batch, int) else "e.g. to 32 or more"
    return Finding("noisy_loss", "warning",
                   f"the per-step loss is very noisy: its std is {fmt(cv)}x its mean over the last epoch",
                   {"cv": cv, "steps": len(window), "mean_loss": mean, "batch_size": batch},
                   f"raise the batch size ({bigger}), or lower the learning rate by about 3")
