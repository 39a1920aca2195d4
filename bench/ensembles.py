"""What each way of forming an ensemble buys on MNIST-1D, with the gain over one model and its interval.

For each repeat (a different base seed): one model (also keeping the running average of its weights,
which does not change its training), its last 5 checkpoints, 5 initialisations, a snapshot ensemble
(5 cosine cycles over the same epochs) and a student distilled from the 5 inits (with its transfer set, so it
takes more steps per epoch; the label-only student beside it takes the same steps). Every method's test
accuracy and its gain over the single model with a 95% paired-bootstrap interval over test examples, then
the share of the 5-init gain the distilled student keeps (over the single model, and over the label-only
student with its steps).
The anchor is a hand-written PyTorch loop (same model, Adam, batch order) for the single model and the
5-init ensemble, so babysit's figures can be compared with what a careful person gets by hand.

    .venv/bin/python bench/ensembles.py [--model mlp|cnn1d|cnn1d_paper] [--epochs 12] [--repeats 2] [--threads 1]
        [--workers 1] [--transfer mixup|munge|none] [--transfer-size 3] [--only-distill]

--only-distill trains only what the distillation rows need (the 5 inits and the two students): single, EMA,
last 5 checkpoints, 5 inits, distilled student, label-only student; no snapshot, search or hand loop.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

import babysit as bs
from babysit.ensemble import Ensemble, distill, paired_interval, train_many
from babysit.losses import l2_term, reg_params

HP = {"mlp": {"optimizer": "adam", "lr": 0.003, "width": 128, "depth": 2, "batch_size": 64},
      "cnn1d": {"optimizer": "adam", "lr": 0.003, "width": 32, "depth": 3, "batch_size": 64},
      # the paper's ConvBase at the rates babysit's recipe found for it (examples/mnist1d_cnn.toml), step decay
      "cnn1d_paper": {"optimizer": "adam", "lr": 0.0088, "reg": 2.6e-5, "channels": 101, "batch_size": 32,
                      "schedule": "step", "step_every": 10, "step_factor": 0.3}}
SCHEDULE_KEYS = ("schedule", "step_every", "step_factor")


def hand_probs(splits, hp, model_name, epochs, seed) -> torch.Tensor:
    """A plain PyTorch loop (Adam, shuffled batches, last epoch's weights); returns test probabilities."""
    torch.manual_seed(seed)
    model = bs.models.from_hp(model_name, hp, splits.input_shape, splits.num_classes)
    opt = torch.optim.Adam(model.parameters(), lr=hp["lr"])
    decay = torch.optim.lr_scheduler.StepLR(opt, hp["step_every"], hp["step_factor"]) \
        if hp.get("schedule") == "step" else None
    x, y = splits.train.tensors
    weights = reg_params(model)
    gen = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        model.train()
        for idx in torch.randperm(len(x), generator=gen).split(hp["batch_size"]):
            opt.zero_grad()
            loss = torch.nn.functional.cross_entropy(model(x[idx]), y[idx])
            if hp.get("reg"):  # the notes' L2 on the weights, as babysit's loss has it
                loss = loss + l2_term(weights, hp["reg"])
            loss.backward()
            opt.step()
        if decay is not None:
            decay.step()
    model.eval()
    with torch.no_grad():
        return torch.softmax(model(splits.test.tensors[0]), -1)


def probs_of(ens: Ensemble, data) -> torch.Tensor:
    return ens.combine(ens.member_log_probs(data))


def one_repeat(task, hp, model_name, epochs, base, root: Path, workers: int = 1, only_distill: bool = False,
               **transfer) -> dict[str, torch.Tensor]:
    """Returns {method: per-example test correctness} for one base seed."""
    y = task.splits.test.tensors[1]
    kw = dict(checkpoint_interval=0, threads=None)
    runs = train_many(task, {**hp, "ema": 0.999}, seeds=[base + i for i in range(5)], epochs=epochs,
                      run_dir=root / "inits", keep_last=5, workers=workers, **kw)
    inits = Ensemble.from_runs(runs)
    student = distill(inits, task, {**hp}, epochs=epochs, run_dir=root / "distill", seed=base, **transfer, **kw)
    print(f"  base {base}: transfer set {student.transfer}", flush=True)
    out = {
        "single": Ensemble.from_runs(runs[:1]),
        "EMA": Ensemble.from_runs(runs[:1], weights="ema"),
        "last 5 checkpoints": Ensemble.from_run(runs[0], last=5),
        "5 inits": inits,
        "distilled student": Ensemble.from_runs([student.student_dir]),
        "label-only student, same steps": Ensemble.from_runs([student.labels_dir]),
    }
    if not only_distill:
        out.update(other_methods(task, hp, epochs, base, root, workers, kw))
    correct = {k: (probs_of(e, task.splits.test).argmax(-1) == y).float() for k, e in out.items()}
    if not only_distill:
        hand = [hand_probs(task.splits, hp, model_name, epochs, base + i) for i in range(5)]
        correct["hand: single"] = (hand[0].argmax(-1) == y).float()
        correct["hand: 5 inits"] = (torch.stack(hand).mean(0).argmax(-1) == y).float()
    return correct


def other_methods(task, hp, epochs, base, root: Path, workers: int, kw) -> dict[str, Ensemble]:
    """Returns the snapshot ensemble and the top 5 of a search."""
    cyclic = {k: v for k, v in hp.items() if k not in SCHEDULE_KEYS}  # snapshots bring their own cosine cycles
    snap = bs.train(task, {**cyclic, "snapshots": 5}, epochs=epochs, run_dir=root / "snap", seed=base, **kw)
    # top-5 of a search: 8 trials of the same length around the rate and strength (different hyperparameters)
    space = {"lr": bs.loguniform(hp["lr"] / 3, hp["lr"] * 3), "reg": bs.loguniform(1e-6, 1e-3)}
    study = bs.search(task, space, stages=[bs.Stage(8, epochs)],
                      fixed={k: v for k, v in hp.items() if k not in space}, study_dir=root / "search",
                      workers=workers, seed=base)
    return {"top 5 of a search (8 trials)": Ensemble.from_study(study, 5),
            "snapshot ensemble (5 cycles)": Ensemble.from_run(snap, last=5)}


def kept_shares(results: list[dict[str, torch.Tensor]], baseline: str) -> list[float]:
    """Returns, per repeat, (student - baseline) / (5 inits - baseline) in accuracy (nan where no gain)."""
    out = []
    for c in results:
        base, ens, st = (float(c[k].mean()) for k in (baseline, "5 inits", "distilled student"))
        out.append((st - base) / (ens - base) if ens > base else float("nan"))
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", choices=tuple(HP), default="mlp")
    ap.add_argument("--epochs", type=int, default=12)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--workers", type=int, default=1, help="local processes for the 5 inits and the search")
    ap.add_argument("--transfer", default="mixup", choices=("mixup", "munge", "none"))
    ap.add_argument("--transfer-size", type=float, default=None, help="default: babysit's (3)")
    ap.add_argument("--only-distill", action="store_true", help="only the 5 inits and the two students")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    task = bs.Task(build=args.model, data=bs.data.load("mnist1d", seed=0))
    hp = HP[args.model]
    results: list[dict[str, torch.Tensor]] = []
    start = time.perf_counter()
    for r in range(args.repeats):
        with tempfile.TemporaryDirectory() as d:
            results.append(one_repeat(task, hp, args.model, args.epochs, 100 * r, Path(d), args.workers,
                                      args.only_distill, transfer=args.transfer, transfer_size=args.transfer_size))
        print(f"repeat {r + 1}/{args.repeats} done after {time.perf_counter() - start:.0f} s", flush=True)
    print(f"\nMNIST-1D {args.model} {hp}, {args.epochs} epochs, {args.repeats} repeat(s), "
          f"{len(results[0]['single'])} test examples")
    print(f"{'method':<30} {'median acc':>10} {'median gain':>12}  gain [95% paired bootstrap] per repeat")
    for name in results[0]:
        accs = [float(c[name].mean()) for c in results]
        gains = [paired_interval(c[name] - c["single" if not name.startswith("hand") else "hand: single"])
                 for c in results]
        per = "  ".join(str(g) for g in gains)
        print(f"{name:<30} {statistics.median(accs):>10.4f} {statistics.median(g.value for g in gains):>+12.4f}  "
              f"{per}")
    for baseline in ("single", "label-only student, same steps"):
        shares = kept_shares(results, baseline)
        print(f"\nshare of the 5-init gain the distilled student keeps over {baseline}: "
              f"{', '.join(f'{k:.0%}' for k in shares)} (median {statistics.median(shares):.0%})", end="")
    print(f"\n\ntotal {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
