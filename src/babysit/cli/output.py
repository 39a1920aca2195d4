"""What the command line shows: progress (a bar on a terminal, plain lines at a bounded rate in logs)
and summaries that never break a path or a number in the middle."""

from __future__ import annotations

import sys
import time
from typing import Any, Callable, Sequence, TextIO

__all__ = ["PlainProgress", "TerminalProgress", "key_values", "progress_for"]

PLAIN_INTERVAL = 10.0  # seconds between progress lines in a log (SLURM, CI)


class PlainProgress:
    """Epoch lines to a log at most every `interval` seconds (and always the last epoch)."""

    def __init__(self, epochs: int, stream: TextIO = sys.stderr, interval: float = PLAIN_INTERVAL,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.epochs, self.stream, self.interval, self._clock = epochs, stream, interval, clock
        self._last = -float("inf")
        self._started = clock()

    def on_step(self, record: Any) -> None:
        """Per-step progress is not for logs."""

    def on_end(self, run: Any) -> None:
        """The summary follows."""

    def on_epoch(self, record: Any) -> None:
        now = self._clock()
        if now - self._last < self.interval and record.epoch < self.epochs:
            return
        self._last = now
        print(f"epoch {record.epoch}/{self.epochs}  train_loss {record.train_loss:.4f}  "
              f"train_acc {record.train_acc:.4f}  val_acc {record.val_acc:.4f}  lr {record.lr:.3g}  "
              f"{now - self._started:.1f} s", file=self.stream, flush=True)


class TerminalProgress:
    """A rich progress bar over epochs, updated every step, gone when the run ends."""

    def __init__(self, console: Any, epochs: int) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        self.progress = Progress(TextColumn("epoch"), MofNCompleteColumn(), BarColumn(),
                                 TextColumn("{task.fields[info]}"), TimeRemainingColumn(), console=console,
                                 transient=True)
        self.task = self.progress.add_task("train", total=epochs, info="")

    def on_step(self, record: Any) -> None:
        self.progress.update(self.task, completed=record.epoch, info=f"loss {record.loss:.4f}")

    def on_epoch(self, record: Any) -> None:
        self.progress.update(self.task, completed=record.epoch,
                             info=f"train {record.train_acc:.3f}  val {record.val_acc:.3f}")

    def on_end(self, run: Any) -> None:
        """The bar is transient: it goes with the run."""


def progress_for(console: Any, epochs: int) -> TerminalProgress | PlainProgress:
    """Returns a progress bar on a terminal, plain bounded-rate lines otherwise."""
    return TerminalProgress(console, epochs) if console.is_terminal else PlainProgress(epochs)


def key_values(title: str, rows: Sequence[tuple[str, str]]) -> str:
    """Returns "title" then aligned "key  value" lines: values are never wrapped or cut (paths stay whole)."""
    width = max((len(k) for k, _ in rows), default=0)
    return "\n".join([title, *(f"  {k:<{width}}  {v}" for k, v in rows)])
