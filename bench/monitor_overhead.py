"""Telemetry's cost per training step, in lock-step: a plain loop and an instrumented copy take alternate steps.

Both loops train the same model (same init, same batches) and read loss.item() every step; the
instrumented one also runs its instruments. Per repetition the ratio of summed step times is taken;
the median over repetitions is printed. Instruments compared (the same loop and frequency):

  babysit defaults      bs.watch(...) as train(monitor=True) uses it
  babysit full set      every step: loss, update:weight per tensor, gradient norms, activation
                        mean/std/dead/saturated per layer (act_every=1), no histograms
  babysit hist/50       defaults plus a probe pass with histograms of all layers every 50 steps
  tensorboard hist/1    torch.utils.tensorboard add_histogram of every parameter and gradient, every step
  tensorboard hist/50   the same every 50 steps
  wandb watch/1, /100   wandb.watch(model, log="all", log_freq=...) in offline mode (when wandb is installed)

    .venv/bin/python bench/monitor_overhead.py [--reps 7] [--steps 150] [--model mlp784|mnist1d-mlp|mnist1d-cnn]
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import tempfile
import time
from typing import Any, Callable

import torch
import torch.nn.functional as F

import babysit as bs

Hook = Callable[[int, torch.Tensor], None]


def workload(name: str) -> tuple[torch.nn.Module, torch.Tensor, torch.Tensor, int]:
    """Returns (model, x, y, batch size) of a named workload."""
    g = torch.Generator().manual_seed(0)
    if name == "mlp784":  # where the anchors were measured: MLP 784-256-256-10, batch 128, synthetic data
        x, y = torch.randn(128 * 20, 784, generator=g), torch.randint(0, 10, (128 * 20,), generator=g)
        return bs.models.mlp((784,), 10, hidden=(256, 256)), x, y, 128
    splits = bs.data.load("mnist1d")
    x, y = bs.data.tensors(splits.train)
    if name == "mnist1d-mlp":
        return bs.models.mlp((40,), 10, hidden=(100, 100)), x, y, 64
    return bs.models.cnn1d((40,), 10, channels=(32, 32)), x, y, 64


def _step(model: torch.nn.Module, opt: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    loss = F.cross_entropy(model(x), y)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    loss.item()
    return loss


def instrument(kind: str, model: torch.nn.Module, opt: torch.optim.Optimizer, probe: Any, d: str) -> tuple[Hook, Any]:
    """Returns (after-step hook, closer) of one instrument attached to model and opt."""
    if kind.startswith("babysit"):
        opts = {"defaults": {}, "full set": {"act_every": 1, "hist_every": 0},
                "hist/50": {"hist_every": 50}}[kind.split(" ", 1)[1]]
        w = bs.watch(model, opt, os.path.join(d, kind.replace(" ", "_").replace("/", "_")), num_classes=10,
                     probe=probe, **opts)
        return (lambda i, loss: w.step(loss)), w.close
    if kind.startswith("tensorboard"):
        from torch.utils.tensorboard import SummaryWriter

        every = int(kind.split("/")[1])
        tb = SummaryWriter(os.path.join(d, kind.replace("/", "_")))

        def hook(i: int, loss: torch.Tensor) -> None:
            tb.add_scalar("loss", loss.item(), i)
            if i % every == 0:
                for n, p in model.named_parameters():
                    tb.add_histogram(n, p, i)
                    if p.grad is not None:
                        tb.add_histogram(f"{n}.grad", p.grad, i)
        return hook, tb.close
    import wandb

    every = int(kind.split("/")[1])
    run = wandb.init(mode="offline", dir=d, project="bench", reinit="finish_previous")  # the global run watch uses
    wandb.watch(model, log="all", log_freq=every)
    return (lambda i, loss: run.log({"loss": loss.item()})), run.finish


def lockstep(kind: str, name: str, reps: int, steps: int) -> list[float]:
    """Returns the per-repetition ratio instrumented/plain of summed step times."""
    torch.manual_seed(0)
    plain, x, y, batch = workload(name)
    watched = copy.deepcopy(plain)
    opt_p = torch.optim.SGD(plain.parameters(), lr=0.01, momentum=0.9)
    opt_w = torch.optim.SGD(watched.parameters(), lr=0.01, momentum=0.9)
    probe = (x[:1024], y[:1024])
    ratios = []
    with tempfile.TemporaryDirectory() as d:
        hook, close = instrument(kind, watched, opt_w, probe, d)
        nb = len(x) // batch
        for i in range(20):  # warm-up both
            xb, yb = x[(i % nb) * batch:(i % nb + 1) * batch], y[(i % nb) * batch:(i % nb + 1) * batch]
            _step(plain, opt_p, xb, yb)
            hook(i, _step(watched, opt_w, xb, yb))
        k = 20
        for _ in range(reps):
            tp = tw = 0.0
            for i in range(steps):
                k += 1
                j = k % nb
                xb, yb = x[j * batch:(j + 1) * batch], y[j * batch:(j + 1) * batch]
                for who in ((0, 1) if i % 2 else (1, 0)):  # alternate who goes first
                    t = time.perf_counter()
                    if who == 0:
                        _step(plain, opt_p, xb, yb)
                        tp += time.perf_counter() - t
                    else:
                        hook(k, _step(watched, opt_w, xb, yb))
                        tw += time.perf_counter() - t
            ratios.append(tw / tp)
        close()
    return ratios


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=7)
    ap.add_argument("--steps", type=int, default=150)
    ap.add_argument("--model", default="mlp784", choices=["mlp784", "mnist1d-mlp", "mnist1d-cnn"])
    ap.add_argument("--only", action="append", help="run only these instruments (repeatable)")
    a = ap.parse_args()
    torch.set_num_threads(1)
    kinds = ["babysit defaults", "babysit full set", "babysit hist/50", "tensorboard hist/1", "tensorboard hist/50",
             "wandb watch/1", "wandb watch/100"]
    try:
        import wandb  # noqa: F401
    except ImportError:
        kinds = [k for k in kinds if not k.startswith("wandb")]
        print("wandb is not installed: its rows are skipped")
    print(f"{a.model}, 1 thread, lock-step, {a.reps} repetitions of {a.steps} steps; ratio = instrumented / plain")
    for kind in kinds:
        if a.only and kind not in a.only:
            continue
        r = lockstep(kind, a.model, a.reps, a.steps)
        print(f"  {kind:22s} median {statistics.median(r):6.3f}   (min {min(r):.3f}, max {max(r):.3f})", flush=True)


if __name__ == "__main__":
    main()
