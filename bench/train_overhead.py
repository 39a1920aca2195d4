"""babysit.train against a hand-written PyTorch loop doing the same work; prints the median ratio.

Same model, data, batch size, steps and L2 term; both log the loss every iteration and measure
validation accuracy every epoch. babysit also writes config.toml, its SQLite database and a
checkpoint every epoch (the bs.train call is timed; making and deleting its temporary run
directory, which a hand loop has no counterpart of, are not). Two hand loops are timed: "same work" also measures train accuracy on a
fixed subset the size of the validation set (as babysit does, and as the notes ask); "minimal"
measures validation accuracy only. Runs are interleaved; the medians are printed.

    .venv/bin/python bench/train_overhead.py [--reps 7] [--epochs 10] [--width 512] [--threads 2]
        [--checkpoint-interval 5] [--monitor]

babysit runs with monitor=False (no telemetry: the loop's own fixed cost) unless --monitor is given.
"""

from __future__ import annotations

import argparse
import math
import shutil
import statistics
import tempfile
import time

import torch

import babysit as bs
from babysit.losses import l2_term, reg_params, softmax_loss


def hand_loop(splits, hp, epochs, seed, train_acc: bool) -> float:
    """The loop a careful practitioner writes by hand; returns the final validation accuracy."""
    torch.manual_seed(seed)
    model = bs.models.from_hp("mlp", hp, splits.input_shape, splits.num_classes)
    opt = torch.optim.SGD(model.parameters(), lr=hp["lr"], momentum=0.9, nesterov=True)
    x, y = splits.train.tensors
    xv, yv = splits.val.tensors
    sub = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))[: len(xv)]
    xs, ys = x[sub], y[sub]
    weights, gen, losses, bs_ = reg_params(model), torch.Generator().manual_seed(seed), [], hp["batch_size"]
    for _ in range(epochs):
        model.train()
        perm = torch.randperm(len(x), generator=gen)
        for i in range(0, len(x), bs_):
            idx = perm[i:i + bs_]
            opt.zero_grad(set_to_none=True)
            loss = softmax_loss(model(x[idx]), y[idx]) + l2_term(weights, hp["reg"])
            loss.backward()
            opt.step()
            losses.append(loss.item())
            if not math.isfinite(losses[-1]):
                raise RuntimeError("diverged")
        model.eval()
        with torch.no_grad():
            val_acc = (model(xv).argmax(1) == yv).float().mean().item()
            if train_acc:
                (model(xs).argmax(1) == ys).float().mean().item()
    return val_acc


def timed(fn) -> tuple[float, float]:
    """Returns (wall, cpu) seconds of one call."""
    t, c = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - t, time.process_time() - c


def babysit_run(task, hp, epochs, seed, checkpoint_interval: float = 5.0, monitor: bool = False) -> tuple[float, float]:
    """Returns (wall, cpu) seconds of the bs.train call; making and deleting its run directory are not timed."""
    d = tempfile.mkdtemp(prefix="bench-babysit-")
    try:
        return timed(lambda: bs.train(task, hp, epochs=epochs, run_dir=d, seed=seed, device="cpu",
                                      checkpoint_interval=checkpoint_interval, monitor=monitor))
    finally:
        shutil.rmtree(d)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=7)
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--width", type=int, default=512)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--checkpoint-interval", type=float, default=5.0,
                    help="babysit's checkpoint_interval in seconds (0: a checkpoint every epoch)")
    ap.add_argument("--monitor", action="store_true", help="train(monitor=True): telemetry at its defaults")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    splits = bs.data.load("mnist1d")
    task = bs.Task(build="mlp", data=splits)
    hp = {"optimizer": "nesterov", "lr": 0.05, "reg": 1e-4, "width": a.width, "depth": 2, "batch_size": a.batch_size}
    runners = {"babysit": lambda: babysit_run(task, hp, a.epochs, 0, a.checkpoint_interval, a.monitor),
               "hand (same work)": lambda: timed(lambda: hand_loop(splits, hp, a.epochs, 0, True)),
               "hand (minimal)": lambda: timed(lambda: hand_loop(splits, hp, a.epochs, 0, False))}
    for fn in runners.values():  # warm-up
        fn()
    times: dict[str, list[float]] = {k: [] for k in runners}
    cpu: dict[str, list[float]] = {k: [] for k in runners}
    order = list(runners)
    for rep in range(a.reps):
        for k in order[rep % 3:] + order[:rep % 3]:  # rotate who goes first: drift hits all alike
            wall, c = runners[k]()
            times[k].append(wall)
            cpu[k].append(c)
    steps = a.epochs * math.ceil(len(splits.train) / a.batch_size)
    print(f"MNIST-1D MLP width {a.width} depth 2, batch {a.batch_size}, {a.epochs} epochs ({steps} steps), "
          f"{a.threads} threads, checkpoint_interval {a.checkpoint_interval:g} s, monitor={a.monitor}, "
          f"{a.reps} interleaved repetitions")
    for k, v in times.items():
        print(f"  {k:18s} wall median {statistics.median(v):.3f} s (min {min(v):.3f}, max {max(v):.3f})"
              f"   cpu median {statistics.median(cpu[k]):.3f} s")
    for hand in ("hand (same work)", "hand (minimal)"):
        for label, m in (("wall", times), ("cpu", cpu)):
            r = [b / h for b, h in zip(m["babysit"], m[hand])]
            print(f"  ratio babysit / {hand} [{label}]: median {statistics.median(r):.3f}  "
                  f"(per repetition: {', '.join(f'{x:.3f}' for x in r)})")


if __name__ == "__main__":
    main()
