"""The report's figures, drawn with matplotlib's object API (no pyplot: safe off the main thread) into PNG bytes."""

from __future__ import annotations

import io
import math
from typing import Sequence

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from ..store import ArraySnapshot, History, Histogram

__all__ = ["png", "loss_figure", "accuracy_figure", "ratio_figure", "heatmap_figure", "units_figure",
           "first_layer_figure"]

_COLOURS = ("C0", "C1", "C2", "C3", "C4", "C5", "C6", "C7", "C8", "C9")


def png(fig: Figure) -> bytes:
    """Returns the figure rendered as PNG bytes."""
    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=80)
    return buf.getvalue()


def _label(h: History) -> str:
    return h.dir.name if h.dir is not None else "run"


def _finite(xs: Sequence[float], ys: Sequence[float]) -> tuple[list[float], list[float]]:
    pairs = [(x, y) for x, y in zip(xs, ys) if math.isfinite(x) and math.isfinite(y)]
    return [p[0] for p in pairs], [p[1] for p in pairs]


def loss_figure(runs: Sequence[History]) -> Figure:
    """Returns the per-step loss against epochs, on a linear and a log axis, one colour per run."""
    fig = Figure(figsize=(11, 3.6))
    for ax, log in zip(fig.subplots(1, 2), (False, True)):
        for h, c in zip(runs, _COLOURS):
            x, y = _finite(h.loss.epochs, h.loss.values)
            if log:
                x, y = [a for a, b in zip(x, y) if b > 0], [b for b in y if b > 0]
            ax.plot(x, y, color=c, lw=0.7, alpha=0.8, label=f"{_label(h)} (per step)")
            ex, ey = _finite([e.epoch for e in h.epochs], [e.val_loss for e in h.epochs])
            if ey and (not log or min(ey) > 0):
                ax.plot(ex, ey, "o--", color=c, ms=3, label=f"{_label(h)} (validation)")
        if log:
            ax.set_yscale("log")
        ax.set(xlabel="epoch", ylabel="loss", title="loss (log axis)" if log else "loss")
        ax.legend(fontsize=7)
    return fig


def accuracy_figure(runs: Sequence[History]) -> Figure:
    """Returns train (solid) and validation (dashed) accuracy per epoch, one colour per run."""
    fig = Figure(figsize=(6, 3.6))
    ax = fig.subplots()
    for h, c in zip(runs, _COLOURS):
        for field, style in (("train_acc", "-"), ("val_acc", "--")):
            x, y = _finite([e.epoch for e in h.epochs], [getattr(e, field) for e in h.epochs])
            if y:
                ax.plot(x, y, style, marker="o", ms=3, color=c, label=f"{_label(h)} {field.split('_')[0]}")
    ax.set(xlabel="epoch", ylabel="accuracy", title="train (solid) and validation (dashed) accuracy", ylim=(0, 1.02))
    ax.legend(fontsize=7)
    return fig


def ratio_figure(h: History) -> Figure:
    """Returns each weight tensor's update:weight ratio over epochs (log axis) with the notes' ~1e-3 band."""
    fig = Figure(figsize=(11, 3.6))
    ax = fig.subplots()
    ax.axhspan(1e-4, 1e-2, color="green", alpha=0.08, label="1e-4 .. 1e-2")
    ax.axhline(1e-3, color="green", lw=1.5, label="1e-3 (the notes)")
    for (name, s), c in zip(h.group("update_ratio").items(), _COLOURS * 4):
        x, y = _finite(s.epochs, s.values)
        x, y = [a for a, b in zip(x, y) if b > 0], [b for b in y if b > 0]
        if y and not name.endswith("bias"):
            ax.plot(x, y, lw=0.8, color=c, label=name)
    ax.set_yscale("log")
    ax.set(xlabel="epoch", ylabel="||dW|| / ||W||", title="update:weight ratio per weight tensor")
    ax.legend(fontsize=7, ncol=2)
    return fig


def _rebinned(snaps: Sequence[Histogram], bins: int = 48) -> tuple[np.ndarray, np.ndarray]:
    """Returns (density matrix bins x snapshots, common edges): each histogram's counts moved onto shared bins."""
    lo = min(s.edges[0] for s in snaps)
    hi = max(s.edges[-1] for s in snaps)
    if not hi > lo:
        hi = lo + 1.0
    edges = np.linspace(lo, hi, bins + 1)
    grid = np.zeros((bins, len(snaps)))
    for j, s in enumerate(snaps):
        e = np.asarray(s.edges)
        centres = (e[:-1] + e[1:]) / 2
        counts, _ = np.histogram(centres, bins=edges, weights=np.asarray(s.counts))
        total = counts.sum()
        grid[:, j] = counts / total if total > 0 else 0
    return grid, edges


def heatmap_figure(h: History, kind: str) -> Figure | None:
    """Returns a heat-map per layer of the activation ("act") or gradient ("grad") distribution over epochs."""
    layers = h.hist(kind)
    if not layers:
        return None
    names = list(layers)[:12]
    cols = min(4, len(names))
    rows = math.ceil(len(names) / cols)
    fig = Figure(figsize=(3.2 * cols, 2.6 * rows))
    axes = np.atleast_1d(fig.subplots(rows, cols, squeeze=False)).ravel()
    for ax, name in zip(axes, names):
        snaps = layers[name]
        grid, edges = _rebinned(snaps)
        x = [s.epoch if math.isfinite(s.epoch) else i for i, s in enumerate(snaps)]
        xe = x + [x[-1] + (x[-1] - x[0]) / max(1, len(x) - 1) if len(x) > 1 else x[-1] + 1]
        ax.pcolormesh(xe, edges, np.log10(grid + 1e-4), cmap="viridis", shading="flat")
        ax.set_title(name, fontsize=8)
        ax.tick_params(labelsize=7)
        ax.set_xlabel("epoch", fontsize=7)
    for ax in axes[len(names):]:
        ax.set_visible(False)
    what = "activations (probe batch)" if kind == "act" else "gradients of layer outputs (training batch)"
    fig.suptitle(f"distribution of {what} over epochs (colour: log10 fraction)", fontsize=9)
    return fig


def units_figure(h: History) -> Figure | None:
    """Returns dead (ReLU) and saturated (tanh/sigmoid) unit fractions per layer over epochs."""
    dead, sat = h.group("act_dead"), h.group("act_saturated")
    if not dead and not sat:
        return None
    fig = Figure(figsize=(6, 3.2))
    ax = fig.subplots()
    for (name, s), c in zip(list(dead.items()) + list(sat.items()), _COLOURS * 4):
        x, y = _finite(s.epochs, s.values)
        ax.plot(x, y, "o-", ms=3, color=c, label=f"{name} ({'dead' if name in dead else 'saturated'})")
    ax.axhline(0.5, color="red", lw=0.8, ls=":")
    ax.set(xlabel="epoch", ylabel="fraction of units", ylim=(-0.02, 1.02), title="dead and saturated units")
    ax.legend(fontsize=7)
    return fig


def first_layer_figure(snap: ArraySnapshot, first: ArraySnapshot | None = None) -> Figure:
    """Returns the first layer's filters: 8x8-style images when each is a square image, else curves."""
    w = np.asarray(snap.values, dtype=np.float32).reshape(snap.shape)
    k = min(32, w.shape[0])
    flat = w[:k].reshape(k, -1)
    side = int(round(math.sqrt(flat.shape[1])))
    if w.ndim == 2 and side * side == flat.shape[1] and side >= 4:
        cols = 8
        rows = math.ceil(k / cols)
        mosaic = np.full((rows * (side + 1), cols * (side + 1)), np.nan, dtype=np.float32)
        for i in range(k):  # one image of tiles, each filter scaled to its own range: one imshow, not 32 axes
            r, c = divmod(i, cols)
            lim = float(np.abs(flat[i]).max()) or 1.0
            mosaic[r * (side + 1):r * (side + 1) + side, c * (side + 1):c * (side + 1) + side] = \
                flat[i].reshape(side, side) / lim
        fig = Figure(figsize=(cols * 0.9, rows * 0.9 + 0.4))
        ax = fig.subplots()
        ax.imshow(mosaic, cmap="RdBu_r", vmin=-1, vmax=1, interpolation="nearest")
        ax.axis("off")
    else:
        cols = 8
        rows = math.ceil(min(k, 16) / cols)
        fig = Figure(figsize=(cols * 1.4, rows * 1.1 + 0.4))
        axes = np.atleast_1d(fig.subplots(rows, cols, squeeze=False)).ravel()
        base = None if first is None else np.asarray(first.values, dtype=np.float32).reshape(first.shape)
        for i, ax in enumerate(axes):
            ax.set_xticks([])
            ax.set_yticks([])
            if i < min(k, 16):
                if base is not None and base.shape == w.shape:
                    ax.plot(base[i].reshape(-1), color="0.7", lw=0.7)
                ax.plot(w[i].reshape(-1), color="C0", lw=0.9)
    fig.suptitle(f"{snap.name.split('/', 1)[-1]} at epoch {snap.epoch:g} (step {snap.step})", fontsize=9)
    return fig
