"""Search quality at equal total epochs: babysit's default against Optuna's samplers (MNIST-1D MLP).

    PYTHONPATH=src .venv/bin/python bench/search_quality.py --seeds 10

Problem: MNIST-1D, MLP (depth 2), Nesterov momentum; searched: lr, reg, width. Budget: 27 trials
x 9 epochs = 243 epochs per search. Every trial of every method is a `bs.train` call (same loop,
same data), so only the search differs. The selected configuration is the trial with the best
validation accuracy; its best checkpoint is scored on the test split. Printed: the median test
accuracy of the selected configuration over seeds, per method, and the paired difference to babysit.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

import optuna
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import babysit as bs  # noqa: E402
from babysit.status import Stop  # noqa: E402

optuna.logging.set_verbosity(optuna.logging.ERROR)
warnings.filterwarnings("ignore")
FIXED = {"optimizer": "nesterov", "momentum": 0.9, "depth": 2}
TRIALS, EPOCHS = 27, 9


def _hp(trial: optuna.Trial) -> dict:
    return {**FIXED, "lr": trial.suggest_float("lr", 1e-4, 1.0, log=True),
            "reg": trial.suggest_float("reg", 1e-6, 1e-1, log=True),
            "width": trial.suggest_int("width", 16, 512, log=True)}


class _Report:
    def __init__(self, trial: optuna.Trial) -> None:
        self.trial = trial

    def on_epoch(self, record) -> None:
        self.trial.report(record.val_acc, record.epoch)


def optuna_search(task, sampler: str, seed: int, root: Path) -> tuple[float, int]:
    """Returns (test accuracy of the selected trial, epochs spent)."""
    samplers = {"random": optuna.samplers.RandomSampler, "qmc": optuna.samplers.QMCSampler,
                "tpe": optuna.samplers.TPESampler, "gp": optuna.samplers.GPSampler, "tpe+hyperband": optuna.samplers.TPESampler}
    pruner = optuna.pruners.HyperbandPruner(min_resource=1, max_resource=EPOCHS, reduction_factor=3) \
        if sampler == "tpe+hyperband" else optuna.pruners.NopPruner()
    study = optuna.create_study(direction="maximize", sampler=samplers[sampler](seed=seed), pruner=pruner)
    spent, runs = 0, {}
    while spent < TRIALS * EPOCHS:
        trial = study.ask()
        hp = _hp(trial)
        stop = Stop(lambda r, t=trial: ("pruned", "hyperband") if hasattr(r, "val_acc") and t.should_prune() else None)
        run = bs.train(task, hp, epochs=min(EPOCHS, TRIALS * EPOCHS - spent), run_dir=root / f"{sampler}-{trial.number}",
                       seed=trial.number, observers=[_Report(trial)], stop=stop, checkpoint_interval=100)
        spent += len(run.history)
        best = run.best_val_acc
        runs[trial.number] = run.dir
        if run.status == "pruned":
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
        else:
            study.tell(trial, best if best is not None else float("nan"))
    done = [t for t in study.trials if t.value is not None and t.value == t.value]
    if sampler == "tpe+hyperband":  # pruned trials count too: their best reported value
        done = [t for t in study.trials if t.intermediate_values]
    best = max(done, key=lambda t: t.value if t.value is not None else max(t.intermediate_values.values()))
    return bs.evaluate(runs[best.number], "test").accuracy, spent


DEFAULT_STAGES = "48x2,16x9"  # 96 + 144 = 240 <= 243 epochs (hopeless trials stop earlier)


def parse_stages(text: str) -> list:
    """"48x2,16x9c8": stages of trials x epochs, "cK" continuing the previous stage's top K (successive halving)."""
    out = []
    for part in text.split(","):
        te, _, cont = part.partition("c")
        trials, epochs = (int(v) for v in te.split("x"))
        out.append(bs.Stage(trials, epochs, continue_top=int(cont or 0)))
    return out


def babysit_search(task, seed: int, root: Path, stages_text: str = DEFAULT_STAGES,
                   sampler: str | None = None) -> tuple[float, int]:
    space = {"lr": bs.loguniform(1e-4, 1.0), "reg": bs.loguniform(1e-6, 1e-1), "width": bs.intuniform(16, 512, log=True)}
    kw = {"sampler": sampler} if sampler else {}
    study = bs.search(task, space, stages=parse_stages(stages_text), fixed=FIXED, study_dir=root / "babysit",
                      workers=0, seed=seed, **kw)
    spent = sum(t.epochs or 0 for t in study.trials)
    return bs.evaluate(study.best.run_dir, "test").accuracy, spent


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, default=10)
    ap.add_argument("--methods", default="babysit,random,qmc,tpe,gp,tpe+hyperband")
    ap.add_argument("--stages", default=DEFAULT_STAGES, help="babysit's stages, e.g. 56x2,16x9c8 (c: continue top K)")
    ap.add_argument("--sampler", default=None, help="babysit's sampler (default: babysit's default)")
    ap.add_argument("--first-seed", type=int, default=0)
    args = ap.parse_args()
    torch.set_num_threads(1)
    task = bs.Task(build="mlp", data="mnist1d")
    methods = args.methods.split(",")
    acc: dict[str, list[float]] = {m: [] for m in methods}
    for seed in range(args.first_seed, args.first_seed + args.seeds):
        for m in methods:
            with tempfile.TemporaryDirectory() as d:
                t = time.perf_counter()
                a, spent = babysit_search(task, seed, Path(d), args.stages, args.sampler) if m == "babysit" else optuna_search(task, m, seed, Path(d))
                acc[m].append(a)
                print(f"seed {seed} {m:14s} test acc {a:.4f}  epochs {spent}  {time.perf_counter() - t:.0f} s", flush=True)
    print(f"\nmedian test accuracy of the selected configuration over {args.seeds} seeds ({TRIALS} x {EPOCHS} epochs):")
    for m in methods:
        diffs = [x - y for x, y in zip(acc.get("babysit", acc[m]), acc[m])]
        print(f"  {m:14s} {statistics.median(acc[m]):.4f}   babysit - {m}: median paired difference "
              f"{statistics.median(diffs):+.4f}")


if __name__ == "__main__":
    main()
