"""babysit's lr_find against Lightning's Tuner.lr_find on the same model: which suggestion lands closer to the
learning rate that short trainings find best?

    PYTHONPATH=src .venv/bin/python bench/lr_find.py [--seeds 3] [--epochs 5] [--width 128]

Model: the MNIST-1D MLP of bench/search_quality.py (depth 2, Nesterov momentum 0.9, batch 64, reg 0).
Reference ("best"): a log grid of 13 learning rates from 1e-4 to 1 (a third of a decade apart), each
trained for --epochs epochs with bs.train; the best validation accuracy wins. Both range tests ramp from
1e-7 to 10 over 300 steps with the same init; Lightning's suggestion is its default (steepest descent of
the smoothed loss), babysit's is its own (a tenth of the rate at the loss minimum). Reported per seed:
|log10(suggestion / best)|, in decades, and whether the suggestion trains (its accuracy after the same
epochs, against the best one's).
"""

from __future__ import annotations

import argparse
import logging
import math
import statistics
import tempfile
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F

import babysit as bs

warnings.filterwarnings("ignore")
logging.getLogger("lightning").setLevel(logging.ERROR)
logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)


def _hp(width: int) -> dict:
    return {"optimizer": "nesterov", "momentum": 0.9, "width": width, "depth": 2, "batch_size": 64, "reg": 0.0}


def short_training(task: bs.Task, hp: dict, lr: float, epochs: int, seed: int) -> float:
    """Returns the best validation accuracy of a short training at this learning rate."""
    with tempfile.TemporaryDirectory() as d:
        run = bs.train(task, {**hp, "lr": lr}, epochs=epochs, run_dir=Path(d) / "r", seed=seed, device="cpu",
                       monitor=False, threads=None)
        return max((e.val_acc for e in run.history), default=0.0)


def lightning_suggestion(splits: bs.data.Splits, hp: dict, seed: int) -> float:
    """Returns Lightning's Tuner.lr_find suggestion on the same model, data, optimizer and ramp."""
    import lightning.pytorch as pl
    from lightning.pytorch.tuner import Tuner

    class Module(pl.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            torch.manual_seed(seed)
            self.net = bs.models.from_hp("mlp", hp, splits.input_shape, splits.num_classes)
            self.lr = 1e-3

        def training_step(self, batch, i):
            x, y = batch
            return F.cross_entropy(self.net(x), y)

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=self.lr, momentum=0.9, nesterov=True)

    loader = torch.utils.data.DataLoader(splits.train, batch_size=hp["batch_size"], shuffle=True,
                                         generator=torch.Generator().manual_seed(seed))
    with tempfile.TemporaryDirectory() as d:
        trainer = pl.Trainer(max_epochs=10, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                             enable_model_summary=False, accelerator="cpu", default_root_dir=d)
        found = Tuner(trainer).lr_find(Module(), train_dataloaders=loader, min_lr=1e-7, max_lr=10.0,
                                       num_training=300, update_attr=False)
        return float(found.suggestion())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--width", type=int, default=128)
    a = ap.parse_args()
    torch.set_num_threads(1)
    splits = bs.data.load("mnist1d")
    task = bs.Task(build="mlp", data=splits)
    hp = _hp(a.width)
    grid = [10 ** (-4 + k / 3) for k in range(13)]
    print(f"MNIST-1D MLP width {a.width} depth 2, Nesterov 0.9, batch 64; grid of {len(grid)} rates 1e-4..1, "
          f"{a.epochs} epochs each; range tests 1e-7..10 over 300 steps")
    print(f"  {'seed':<5} {'best lr':>9} {'acc':>6} | {'babysit':>9} {'off':>5} {'acc':>6} | "
          f"{'lightning':>9} {'off':>5} {'acc':>6}")
    offs: dict[str, list[float]] = {"babysit": [], "lightning": []}
    for seed in range(a.seeds):
        accs = [short_training(task, hp, lr, a.epochs, seed) for lr in grid]
        best = grid[max(range(len(grid)), key=accs.__getitem__)]
        ours = bs.lr_find(task, {k: v for k, v in hp.items() if k != "reg"}, steps=300, seed=seed,
                          device="cpu").suggestion
        theirs = lightning_suggestion(splits, hp, seed)
        row = []
        for name, lr in (("babysit", ours), ("lightning", theirs)):
            off = abs(math.log10(lr / best))
            offs[name].append(off)
            row.append(f"{lr:>9.2e} {off:>5.2f} {short_training(task, hp, lr, a.epochs, seed):>6.3f}")
        print(f"  {seed:<5} {best:>9.2e} {max(accs):>6.3f} | {row[0]} | {row[1]}")
    b, lt = statistics.median(offs["babysit"]), statistics.median(offs["lightning"])
    print(f"  median distance to the best rate, in decades: babysit {b:.2f}, lightning {lt:.2f}")


if __name__ == "__main__":
    main()
