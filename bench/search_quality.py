"""Search quality at equal total epochs: babysit's default against Optuna's samplers (MNIST-1D).

    PYTHONPATH=src .venv/bin/python bench/search_quality.py --seeds 10
    PYTHONPATH=src .venv/bin/python bench/search_quality.py --problem cnn --seeds 5 --methods babysit,gp

Problems: mlp (MLP depth 2, Nesterov momentum; searched: lr, reg, width) and cnn (cnn1d, 3 conv layers
of 32 channels, Nesterov; searched: lr, reg, dropout). Budget: 27 trials x 9 epochs = 243 epochs per
search; babysit's default stages are bs.search.coarse_to_fine(9, 243). Every trial of every method is a `bs.train` call (same loop,
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
TRIALS, EPOCHS = 27, 9
# problem -> (model, fixed hyperparameters, searched space); the Optuna anchors search the same ranges and scales
PROBLEMS = {
    "mlp": ("mlp", {"optimizer": "nesterov", "momentum": 0.9, "depth": 2},
            {"lr": bs.loguniform(1e-4, 1.0), "reg": bs.loguniform(1e-6, 1e-1), "width": bs.intuniform(16, 512, log=True)}),
    "cnn": ("cnn1d", {"optimizer": "nesterov", "momentum": 0.9, "depth": 3, "width": 32},
            {"lr": bs.loguniform(1e-4, 1.0), "reg": bs.loguniform(1e-6, 1e-1), "dropout": bs.uniform(0.0, 0.5)}),
}


def _hp(trial: optuna.Trial, fixed: dict, space: dict) -> dict:
    hp = dict(fixed)
    for key, p in space.items():
        if p.kind == "intuniform":
            hp[key] = trial.suggest_int(key, int(p.lo), int(p.hi), log=p.log)
        else:
            hp[key] = trial.suggest_float(key, p.lo, p.hi, log=p.log)
    return hp


class _Report:
    def __init__(self, trial: optuna.Trial) -> None:
        self.trial = trial

    def on_epoch(self, record) -> None:
        self.trial.report(record.val_acc, record.epoch)


def optuna_search(task, sampler: str, seed: int, root: Path, problem: str = "mlp") -> tuple[float, int]:
    """Returns (test accuracy of the selected trial, epochs spent)."""
    samplers = {"random": optuna.samplers.RandomSampler, "qmc": optuna.samplers.QMCSampler,
                "tpe": optuna.samplers.TPESampler, "gp": optuna.samplers.GPSampler, "tpe+hyperband": optuna.samplers.TPESampler}
    pruner = optuna.pruners.HyperbandPruner(min_resource=1, max_resource=EPOCHS, reduction_factor=3) \
        if sampler == "tpe+hyperband" else optuna.pruners.NopPruner()
    # a named study: Hyperband assigns brackets by crc32(study name, trial number), and an unnamed study gets a
    # random name, so tpe+hyperband gave other numbers on every run before 2026-12-08
    study = optuna.create_study(direction="maximize", sampler=samplers[sampler](seed=seed), pruner=pruner,
                                study_name=f"{sampler}-{seed}")
    spent, runs = 0, {}
    while spent < TRIALS * EPOCHS:
        trial = study.ask()
        hp = _hp(trial, *PROBLEMS[problem][1:])
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


DEFAULT_STAGES = "default"  # bs.search.coarse_to_fine(9, 243): 48x1k5,16x3k3,16x9 = 240 <= 243 epochs


def parse_stages(text: str) -> list:
    """"48x2k5,16x9c8:gp": stages of trials x epochs; "kN" keeps the top N to refit the next ranges, "cK" continues
    the previous stage's top K (successive halving), ":name" the stage's own sampler."""
    import re

    if text == "default":
        from babysit.search import coarse_to_fine

        return coarse_to_fine(EPOCHS, TRIALS * EPOCHS)
    out = []
    for part in text.split(","):
        m = re.fullmatch(r"(\d+)x(\d+)(?:k(\d+))?(?:c(\d+))?(?::(\w+))?", part.strip())
        if m is None:
            raise SystemExit(f"--stages: cannot read {part!r}; write e.g. 48x2k5,16x9")
        trials, epochs, keep, cont, sampler = m.groups()
        out.append(bs.Stage(int(trials), int(epochs), keep=int(keep) if keep else None, continue_top=int(cont or 0),
                            sampler=sampler))
    return out


def babysit_search(task, seed: int, root: Path, stages_text: str = DEFAULT_STAGES,
                   sampler: str | None = None, dump: Path | None = None, problem: str = "mlp") -> tuple[float, int]:
    _, fixed, space = PROBLEMS[problem]
    kw = {"sampler": sampler} if sampler else {}
    study = bs.search(task, space, stages=parse_stages(stages_text), fixed=fixed, study_dir=root / "babysit",
                      workers=0, seed=seed, keep_checkpoints=1000 if dump else 10, **kw)
    spent = sum(t.epochs or 0 for t in study.trials)
    if dump:
        _dump(study, seed, dump)
    return bs.evaluate(study.best.run_dir, "test").accuracy, spent


def _dump(study, seed: int, path: Path) -> None:
    """Appends one JSON line per trial: params, stage, metric, validation history and test accuracy."""
    import json

    from babysit.store import RunStore

    with open(path, "a") as f:
        for t in study.trials:
            hist = RunStore(t.run_dir).history() if (t.run_dir / "run.sqlite").exists() else []
            try:
                test = bs.evaluate(t.run_dir, "test").accuracy if t.metric is not None else None
            except Exception:
                test = None
            f.write(json.dumps({"seed": seed, "id": t.id, "stage": t.stage, "params": dict(t.params),
                                "status": t.status, "metric": t.metric, "epochs": t.epochs, "test": test,
                                "val": [r.val_acc for r in hist]}) + "\n")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, default=10)
    ap.add_argument("--methods", default="babysit,random,qmc,tpe,gp,tpe+hyperband")
    ap.add_argument("--stages", default=DEFAULT_STAGES, help="babysit's stages: 'default' (coarse_to_fine), or e.g. 48x2k3,16x9:tpe (k: keep top K, "
                    "c: continue top K, :name the stage's sampler)")
    ap.add_argument("--sampler", default=None, help="babysit's sampler (default: babysit's default)")
    ap.add_argument("--first-seed", type=int, default=0)
    ap.add_argument("--problem", choices=sorted(PROBLEMS), default="mlp",
                    help="mlp: lr, reg, width; cnn: the 1-D CNN (cnn1d, 3 x 32 channels), lr, reg, dropout")
    ap.add_argument("--dump", type=Path, default=None, help="append every babysit trial as a JSON line (analysis)")
    args = ap.parse_args()
    torch.set_num_threads(1)
    task = bs.Task(build=PROBLEMS[args.problem][0], data="mnist1d")
    methods = args.methods.split(",")
    acc: dict[str, list[float]] = {m: [] for m in methods}
    for seed in range(args.first_seed, args.first_seed + args.seeds):
        for m in methods:
            with tempfile.TemporaryDirectory() as d:
                t = time.perf_counter()
                a, spent = (babysit_search(task, seed, Path(d), args.stages, args.sampler, args.dump, args.problem) if m == "babysit"
                        else optuna_search(task, m, seed, Path(d), args.problem))
                acc[m].append(a)
                print(f"seed {seed} {m:14s} test acc {a:.4f}  epochs {spent}  {time.perf_counter() - t:.0f} s", flush=True)
    print(f"\n{args.problem}: median test accuracy of the selected configuration over {args.seeds} seeds "
          f"({TRIALS} x {EPOCHS} epochs); babysit - method paired per seed: median, wins, mean with its 95% t-interval")
    for m in methods:
        diffs = [x - y for x, y in zip(acc.get("babysit", acc[m]), acc[m])]
        lo, hi = _interval(diffs)
        print(f"  {m:14s} median {statistics.median(acc[m]):.4f}  mean {statistics.mean(acc[m]):.4f}   babysit - {m}: "
              f"median {statistics.median(diffs):+.4f}, better in {sum(d > 0 for d in diffs)}/{len(diffs)}, "
              f"mean {statistics.mean(diffs):+.4f} [{lo:+.4f}, {hi:+.4f}]")


def _interval(diffs: list[float]) -> tuple[float, float]:
    """Returns the 95% Student-t interval of the mean of paired differences ((nan, nan) for fewer than 2)."""
    if len(diffs) < 2:
        return float("nan"), float("nan")
    from scipy.stats import t

    half = t.ppf(0.975, len(diffs) - 1) * statistics.stdev(diffs) / len(diffs) ** 0.5
    return statistics.mean(diffs) - half, statistics.mean(diffs) + half

if __name__ == "__main__":
    main()
