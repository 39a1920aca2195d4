"""export_tensorboard(run_dir) -> the directory of TensorBoard event files holding the run's scalars and histograms.

People keep the viewer they know: `tensorboard --logdir RUN/tensorboard`. Needs the extra
`tensorboard` (pip install 'babysit[tensorboard]').
"""

from __future__ import annotations

import math
from pathlib import Path

from .._optional import require
from ..store import read_history

__all__ = ["export_tensorboard"]


def export_tensorboard(run_dir: str | Path, out: str | Path | None = None) -> Path:
    """Returns the directory (default run_dir/tensorboard) now holding the run's scalars and histograms as events."""
    require("tensorboard", extra="tensorboard")
    from torch.utils.tensorboard import SummaryWriter

    h = read_history(run_dir)
    target = Path(out) if out is not None else Path(run_dir) / "tensorboard"
    writer = SummaryWriter(log_dir=str(target))
    try:
        for key, s in sorted(h.scalars.items()):
            for step, value in zip(s.steps, s.values):
                if math.isfinite(value):
                    writer.add_scalar(key, value, global_step=step)
        for hist in h.histograms:
            counts = list(hist.counts)
            edges = list(hist.edges)
            total = sum(counts)
            if total <= 0:
                continue
            centres = [(a + b) / 2 for a, b in zip(edges[:-1], edges[1:])]
            writer.add_histogram_raw(f"{hist.kind}/{hist.layer}", min=edges[0], max=edges[-1], num=total,
                                     sum=sum(c * x for c, x in zip(counts, centres)),
                                     sum_squares=sum(c * x * x for c, x in zip(counts, centres)),
                                     bucket_limits=edges[1:], bucket_counts=counts, global_step=hist.step)
    finally:
        writer.close()
    return target
