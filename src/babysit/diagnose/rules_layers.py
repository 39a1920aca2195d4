"""Rules read from the layers: update:weight ratios, dead and saturated units, frozen parameters,
gradients across layers, and the inputs' scale."""

from __future__ import annotations

import math

from ..store import History
from .facts import (Context, dead_units, fmt, last_window, loss_stuck, median, meta_json, saturation, units_died,
                    weight_ratios)
from .findings import Finding, Skip
from .rules_loss import learning_rate, rebounded

__all__ = ["update_ratio_high", "update_ratio_low", "dead_units_rule", "saturated_units", "frozen_params",
           "vanishing_gradients", "exploding_gradients", "inputs_not_normalised"]

Result = Finding | Skip | None
_NO_RATIOS = "needs update:weight ratios (a watched run: train(monitor=True) or watch())"
_NO_PROBE = "needs probe statistics of the layers (a watched run with Linear/Conv/activation modules and a probe)"


def _decades(r: float) -> float:
    return 10.0 ** max(1, round(abs(math.log10(r / 1e-3)))) if r > 0 else 1000.0


def update_ratio_high(h: History, ctx: Context) -> Result:
    """Returns a warning when a weight's update:weight ratio is far above ~1e-3 while the loss does not improve.

    Alone it misfires (the best run of an MLP sweep sat at 1e-2), so a healthy loss makes it info.
    """
    t, ratios = ctx.settings, weight_ratios(h)
    if not ratios:
        return Skip("update_ratio_high", _NO_RATIOS)
    layer = max(ratios, key=lambda k: ratios[k])
    r = ratios[layer]
    if not r > t["ratio_high"]:
        return None
    bad = loss_stuck(h, t) or rebounded(h, t) is not None
    return Finding("update_ratio_high", "warning" if bad else "info",
                   f"the update:weight ratio of {layer} is {fmt(r)}, {fmt(r / 1e-3)}x the notes' ~1e-3"
                   + ("" if bad else " (the loss is improving: watch it)"),
                   {"layer": layer, "update_ratio": r, "ratios": ratios, "lr": learning_rate(h)},
                   f"divide the learning rate by about {fmt(_decades(r))}")


def update_ratio_low(h: History, ctx: Context) -> Result:
    """Returns a warning when updates are far below ~1e-3 and the loss is stuck, with no dead or saturated layer."""
    t, ratios = ctx.settings, weight_ratios(h)
    if not ratios:
        return Skip("update_ratio_low", _NO_RATIOS)
    low = {k: v for k, v in ratios.items() if v < t["ratio_low"]}
    if not low:
        return None
    blamed = any(v[1] >= t["dead_warn"] for v in dead_units(h).values()) or \
        any(v >= t["saturated_warn"] for v in saturation(h).values())
    typical = median(ratios.values())
    severe = typical < t["ratio_low"] and loss_stuck(h, t, 1) and not blamed
    layer = min(low, key=lambda k: low[k])
    factor = f"multiply the learning rate by about {fmt(_decades(typical if typical > 0 else low[layer]))}"
    advice = (factor if severe else "fix the dead or saturated layers first: they stop the updates" if blamed
              else f"nothing while the loss keeps falling; if it stalls, {factor}")
    why = "" if severe else " (dead/saturated units explain it)" if blamed else " (the loss is still falling)"
    return Finding("update_ratio_low", "warning" if severe else "info",
                   f"the update:weight ratio of {layer} is {fmt(low[layer])}, far below the notes' ~1e-3" + why,
                   {"layer": layer, "update_ratio": low[layer], "ratios": ratios, "lr": learning_rate(h)}, advice)


def dead_units_rule(h: History, ctx: Context) -> Result:
    """Returns a warning when most units of a ReLU layer are <= 0 for every probe example (info above 10%)."""
    t, dead = ctx.settings, dead_units(h)
    if not dead:
        return Skip("dead_units", _NO_PROBE + " and ReLU layers")
    layer = max(dead, key=lambda k: dead[k][1])
    start, end = dead[layer]
    if end < t["dead_info"]:
        return None
    died = layer in units_died(h, t)
    at_init = h.group("act_dead")[layer].steps[0] == 0 and start >= t["dead_warn"]
    cause = ("dead from initialisation: check the layer's bias init (zero it) and use kaiming init"
             if at_init else "lower the learning rate (divide by about 10), or use leaky_relu" if died or end >= 0.5
             else "watch it; leaky_relu keeps units alive")
    return Finding("dead_units", "warning" if end >= t["dead_warn"] else "info",
                   f"{fmt(100 * end)}% of {layer}'s units are dead (<= 0 for every probe example)"
                   + (" since initialisation" if at_init else f"; {fmt(100 * start)}% at the first probe"),
                   {"layer": layer, "dead_fraction": end, "first_probe": start,
                    "layers": {k: v[1] for k, v in dead.items()}}, cause)


def saturated_units(h: History, ctx: Context) -> Result:
    """Returns a warning when a tanh/sigmoid layer's outputs sit at its bounds (no gradient flows there)."""
    t, sat = ctx.settings, saturation(h)
    if not sat:
        return Skip("saturated_units", _NO_PROBE + " and tanh/sigmoid layers")
    layer = max(sat, key=lambda k: sat[k])
    if sat[layer] < t["saturated_warn"]:
        return None
    return Finding("saturated_units", "warning",
                   f"{fmt(100 * sat[layer])}% of {layer}'s outputs are saturated (|tanh| > 0.97, or sigmoid within "
                   "3% of 0 or 1)", {"layer": layer, "saturated_fraction": sat[layer], "layers": sat},
                   "scale the initial weights down (Xavier: std 1/sqrt(fan_in)), normalise the inputs, "
                   "or add BatchNorm before the activation")


def frozen_params(h: History, ctx: Context) -> Result:
    """Returns a warning for trainable parameters that never change (not in the optimizer, or cut from the loss)."""
    if "params" not in h.meta:
        return Skip("frozen_params", _NO_RATIOS)
    missing = meta_json(h, "not_in_optimizer", [])
    dead_layer = any(v[1] >= ctx.settings["dead_warn"] for v in dead_units(h).values())
    stuck = []
    for name, s in h.group("update_ratio").items():
        grads = h.series(f"grad_norm/{name}").values
        if s.values and all(v == 0 for v in s.values):
            if any(g > 0 for g in grads) or not dead_layer:
                stuck.append(name)
    frozen = meta_json(h, "frozen", [])
    if missing or stuck:
        names = missing + [n for n in stuck if n not in missing]
        return Finding("frozen_params", "warning",
                       f"{len(names)} trainable parameter tensor(s) never change: {', '.join(names[:5])}",
                       {"never_changed": stuck, "not_in_optimizer": missing, "requires_grad_false": frozen},
                       "give the optimizer model.parameters() (built after .to(device)); check for .detach() or "
                       "torch.no_grad() on the path from these parameters to the loss")
    if frozen:
        return Finding("frozen_params", "info", f"{len(frozen)} parameter tensor(s) have requires_grad=False: "
                       f"{', '.join(frozen[:5])} (frozen on purpose?)", {"requires_grad_false": frozen},
                       "nothing to do if they are frozen on purpose (fine-tuning)")
    return None


def _rms_grads(h: History) -> list[tuple[str, float]]:
    sizes = meta_json(h, "params", {})
    out = []
    for name in sizes if isinstance(sizes, dict) else []:
        s = h.series(f"grad_norm/{name}")
        if not name.endswith("bias") and len(s):
            out.append((name, median(last_window(h, s).values) / math.sqrt(max(1, int(sizes[name])))))
    return out


def _gradient_spread(h: History, ctx: Context, code: str) -> Result:
    grads = [(n, g) for n, g in _rms_grads(h) if math.isfinite(g)]
    if len(grads) < 2:
        return Skip(code, "needs gradient norms of at least two weight tensors (a watched run)")
    (first, g1), (last, g2) = grads[0], grads[-1]
    if g1 <= 0 or g2 <= 0:
        return None
    ratio, limit = g2 / g1, ctx.settings["grad_ratio"]
    if (code == "vanishing_gradients" and ratio > limit) or (code == "exploding_gradients" and ratio < 1 / limit):
        word = "smaller" if code == "vanishing_gradients" else "larger"
        return Finding(code, "warning", f"the RMS gradient of {first} is {fmt(ratio if ratio > 1 else 1 / ratio)}x "
                       f"{word} than that of {last}", {"first": first, "last": last, "rms_first": g1, "rms_last": g2,
                                                       "ratio_last_to_first": ratio},
                       "use kaiming/xavier init, add normalisation (BatchNorm) or residual connections"
                       + ("; clip gradients (clip_norm=1.0)" if code == "exploding_gradients" else ""))
    return None


def vanishing_gradients(h: History, ctx: Context) -> Result:
    """Returns a warning when the first weight layer's RMS gradient is > 1e3x smaller than the last one's."""
    return _gradient_spread(h, ctx, "vanishing_gradients")


def exploding_gradients(h: History, ctx: Context) -> Result:
    """Returns a warning when the first weight layer's RMS gradient is > 1e3x larger than the last one's."""
    return _gradient_spread(h, ctx, "exploding_gradients")


def inputs_not_normalised(h: History, ctx: Context) -> Result:
    """Returns a warning when the inputs are far from zero mean and unit scale (overall or per feature)."""
    t = ctx.settings
    mean, std = h.series("input/mean").last, h.series("input/std").last
    if not math.isfinite(mean) or not math.isfinite(std):
        return Skip("inputs_not_normalised", "no input statistics (needs a probe batch or training inputs)")
    z = h.series("input/feature_z_max").last
    why = []
    if not t["input_std_low"] <= std <= t["input_std_high"]:
        why.append(f"their std is {fmt(std)}")
    if std > 0 and abs(mean) > t["input_z"] * std:
        why.append(f"their mean {fmt(mean)} is {fmt(abs(mean) / std)} std from zero")
    if math.isfinite(z) and z > t["input_z"]:
        why.append(f"one feature's mean is {fmt(z)} of its std from zero")
    if not why:
        return None
    return Finding("inputs_not_normalised", "warning", "the inputs are not normalised: " + "; ".join(why),
                   {"mean": mean, "std": std, "feature_z_max": z},
                   "standardise each feature with the training set's statistics: x = (x - mean) / std")
