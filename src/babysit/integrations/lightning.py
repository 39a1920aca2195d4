"""BabysitCallback: babysit's telemetry on a Lightning Trainer, a thin adapter over watch().

    trainer = lightning.Trainer(callbacks=[BabysitCallback("runs/lit", num_classes=10, probe=(xv, yv))])

Train and validation accuracy are read from the metrics the LightningModule logs ("train_acc",
"val_acc" by default); the loss from what training_step returns.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .._optional import require
from ..telemetry import Watch, watch

_pl = require("lightning.pytorch", extra="lightning")

__all__ = ["BabysitCallback"]


def _scalar(metrics: dict[str, Any], key: str) -> float | None:
    v = metrics.get(key)
    return None if v is None else float(v)


class BabysitCallback(_pl.Callback):  # type: ignore[misc, name-defined]
    """Returns nothing; records the notes' instruments of a Lightning run into run_dir (see babysit.watch)."""

    def __init__(self, run_dir: str | Path, num_classes: int | None = None, loss: Any = "softmax", probe: Any = None,
                 *, train_acc: str = "train_acc", val_acc: str = "val_acc", **options: Any) -> None:
        super().__init__()
        self.run_dir, self.num_classes, self.loss, self.probe, self.options = run_dir, num_classes, loss, probe, options
        self.keys = (train_acc, val_acc)
        self.watch: Watch | None = None

    def on_fit_start(self, trainer: Any, pl_module: Any) -> None:
        optimizer = trainer.optimizers[0]
        self.watch = watch(pl_module, optimizer, self.run_dir, self.num_classes, self.loss, self.probe,
                           **self.options)

    def on_train_batch_end(self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
        loss = outputs.get("loss") if isinstance(outputs, dict) else outputs
        if self.watch is not None:
            self.watch.step(loss)

    def on_train_epoch_end(self, trainer: Any, pl_module: Any) -> None:
        if self.watch is not None:
            m = dict(trainer.callback_metrics)
            self.watch.epoch(train_acc=_scalar(m, self.keys[0]), val_acc=_scalar(m, self.keys[1]),
                             val_loss=_scalar(m, "val_loss"))

    def on_fit_end(self, trainer: Any, pl_module: Any) -> None:
        if self.watch is not None:
            self.watch.close("completed")
            self.watch = None

    def on_exception(self, trainer: Any, pl_module: Any, exception: BaseException) -> None:
        if self.watch is not None:
            self.watch.close("interrupted" if isinstance(exception, KeyboardInterrupt) else "failed")
            self.watch = None
