"""Rules read from train and validation accuracy per epoch: overfitting, underfitting, a validation plateau."""

from __future__ import annotations

import math

from ..store import History
from .facts import Context, fit_epochs, fmt, median, weight_ratios
from .findings import Finding, Skip

__all__ = ["overfitting", "underfitting", "val_plateau"]

Result = Finding | Skip | None
_NO_ACC = "needs train and validation accuracy per epoch: w.epoch(train_acc=..., val_acc=...)"


def _reg(h: History) -> float:
    hp = h.config.get("hp", {})
    return float(hp.get("reg", 0.0)) if isinstance(hp, dict) else 0.0


def overfitting(h: History, ctx: Context) -> Result:
    """Returns a warning when train accuracy runs ahead of a stalled validation accuracy (info while val improves).

    The notes: a wide train/val gap means overfitting; add regularisation or data. A gap while
    validation still improves is not yet a diagnosis.
    """
    t = ctx.settings
    epochs = fit_epochs(h)
    if len(epochs) < 2:
        return Skip("overfitting", _NO_ACC)
    last = epochs[-1]
    gap = last.train_acc - last.val_acc
    if gap <= t["overfit_gap"]:
        return None
    best = max(epochs, key=lambda e: (e.val_acc, -e.epoch))
    since_best = last.epoch - best.epoch
    val_losses = [e.val_loss for e in epochs if math.isfinite(e.val_loss)]
    low = min(val_losses) if val_losses else math.nan
    stalled = since_best >= t["stall_epochs"] and last.train_acc >= best.train_acc
    severity = "warning" if stalled else "info"
    state = (f"validation has not improved for {since_best} epochs (best {fmt(best.val_acc)} at epoch {best.epoch})"
             if stalled else "validation accuracy is still improving")
    reg = _reg(h)
    return Finding("overfitting", severity,
                   f"train accuracy {fmt(last.train_acc)} vs validation {fmt(last.val_acc)}: a gap of "
                   f"{fmt(100 * gap)} points; {state}",
                   {"epoch": last.epoch, "train_acc": last.train_acc, "val_acc": last.val_acc, "gap": gap,
                    "best_val_epoch": best.epoch, "best_val_acc": best.val_acc, "val_loss_min": low,
                    "val_loss_last": last.val_loss},
                   f"regularise: raise reg to about {fmt(reg * 10 if reg else 1e-3)}, or dropout 0.5; get more data; "
                   f"or keep the checkpoint of epoch {best.epoch} (early stopping)")


def underfitting(h: History, ctx: Context) -> Result:
    """Returns a warning when train ~ val and both fall far below a reference run's training accuracy.

    The notes: train about equal to val but both low means the model is too small. Only a reference
    (a bigger model on the same data, same epochs) can say "low"; without one this is info.
    """
    t = ctx.settings
    epochs = fit_epochs(h)
    if len(epochs) < 2:
        return Skip("underfitting", _NO_ACC)
    last = epochs[-1]
    gap = abs(last.train_acc - last.val_acc)
    if gap > t["underfit_gap"]:
        return None
    ratios = weight_ratios(h)
    if ratios and median(ratios.values()) < t["ratio_low"]:
        return None  # barely moving: a learning-rate problem, not capacity
    evidence = {"epoch": last.epoch, "train_acc": last.train_acc, "val_acc": last.val_acc, "gap": gap}
    if ctx.reference is None:
        recent = [e.train_acc for e in epochs[-3:]]
        if last.train_acc >= 0.9 or max(recent) - recent[0] >= 0.02:
            return None
        return Finding("underfitting", "info",
                       f"train accuracy {fmt(last.train_acc)} has plateaued at validation's {fmt(last.val_acc)}; "
                       "compare with a bigger model to tell whether it underfits",
                       evidence, "run diagnose(run, reference=<a run of a bigger model>); try width x4")
    ref = [e for e in fit_epochs(ctx.reference) if e.epoch <= last.epoch] or fit_epochs(ctx.reference)
    if not ref:
        return Skip("underfitting", "the reference run has no train/validation accuracy per epoch")
    ref_train = max(e.train_acc for e in ref)
    if last.train_acc > ref_train - t["underfit_margin"]:
        return None
    return Finding("underfitting", "warning",
                   f"train accuracy {fmt(last.train_acc)} ~ validation {fmt(last.val_acc)}, far below the "
                   f"reference's {fmt(ref_train)} in the same {last.epoch} epochs: the model is too small",
                   {**evidence, "reference_train_acc": ref_train, "reference": str(ctx.reference.dir)},
                   "grow the model (width x4, or one more layer), or train longer; lower reg if any")


def val_plateau(h: History, ctx: Context) -> Result:
    """Returns info when validation accuracy has not improved for stall_epochs at a constant rate (decay it)."""
    epochs = [e for e in h.epochs if math.isfinite(e.val_acc)]
    stall = int(ctx.settings["stall_epochs"])
    if len(epochs) <= stall:
        return Skip("val_plateau", f"needs validation accuracy for more than {stall} epochs")
    best = max(epochs, key=lambda e: (e.val_acc, -e.epoch))
    since = epochs[-1].epoch - best.epoch
    recent_lr = {e.lr for e in epochs if e.epoch >= best.epoch}
    if since < stall or len(recent_lr) > 1:
        return None
    return Finding("val_plateau", "info",
                   f"validation accuracy has not improved for {since} epochs (best {fmt(best.val_acc)} at epoch "
                   f"{best.epoch}) at a constant learning rate",
                   {"best_epoch": best.epoch, "best_val_acc": best.val_acc, "epochs_since": since},
                   "halve the learning rate when validation tops off (schedule='plateau', plateau_factor=0.5), "
                   "or stop early")
