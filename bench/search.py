"""Search overheads against Optuna: sampler time per trial at trial N, store time per trial, cold start.

    PYTHONPATH=src .venv/bin/python bench/search.py --at 1000 --reps 5

Sampler overhead: the time to produce proposal N (N-1 trials finished). babysit's non-adaptive
samplers are pure functions of (seed, stage, index); Optuna's samplers are asked through an
in-memory study holding N-1 finished trials (its TPE and GP fit a model to them on every ask).
Store overhead: one trial's ask + heartbeat + tell through babysit's engine on the journal file,
against plain Optuna ask/tell on the same journal storage. Cold start: search() to the first trial.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import optuna

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import babysit as bs  # noqa: E402
from babysit.search import propose, run_study  # noqa: E402
from babysit.search.space import check_space  # noqa: E402

optuna.logging.set_verbosity(optuna.logging.ERROR)
warnings.filterwarnings("ignore")
SPACE = {"lr": bs.loguniform(1e-6, 1.0), "reg": bs.loguniform(1e-6, 1e-1), "width": bs.intuniform(16, 512, log=True),
         "dropout": bs.uniform(0.0, 0.5)}


def _objective_value(p: dict) -> float:
    return -abs(np.log10(p["lr"]) + 2) - 0.1 * abs(np.log10(p["reg"]) + 4) + 0.01 * p["dropout"]


def babysit_sampler(name: str, at: int, reps: int) -> float:
    space = check_space(SPACE)
    propose(name, 0, 0, at - 1, space, at)  # warm: the Sobol engine is built once per stage
    times = []
    for r in range(reps):
        t = time.perf_counter()
        propose(name, 0, 0, at + r, space, at)
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def _optuna_suggest(trial: optuna.Trial) -> dict:
    return {"lr": trial.suggest_float("lr", 1e-6, 1.0, log=True), "reg": trial.suggest_float("reg", 1e-6, 1e-1, log=True),
            "width": trial.suggest_int("width", 16, 512, log=True), "dropout": trial.suggest_float("dropout", 0, 0.5)}


def optuna_sampler(name: str, at: int, reps: int) -> float:
    samplers = {"random": lambda: optuna.samplers.RandomSampler(seed=0),
                "qmc": lambda: optuna.samplers.QMCSampler(seed=0),
                "tpe": lambda: optuna.samplers.TPESampler(seed=0),
                "gp": lambda: optuna.samplers.GPSampler(seed=0)}
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.RandomSampler(seed=1))
    dists = {"lr": optuna.distributions.FloatDistribution(1e-6, 1.0, log=True),
             "reg": optuna.distributions.FloatDistribution(1e-6, 1e-1, log=True),
             "width": optuna.distributions.IntDistribution(16, 512, log=True),
             "dropout": optuna.distributions.FloatDistribution(0, 0.5)}
    rng = np.random.default_rng(0)
    for _ in range(at - 1):  # N-1 finished trials, added without sampling
        p = {"lr": 10 ** rng.uniform(-6, 0), "reg": 10 ** rng.uniform(-6, -1), "width": int(rng.integers(16, 513)),
             "dropout": rng.uniform(0, 0.5)}
        study.add_trial(optuna.trial.create_trial(params=p, distributions=dists, value=_objective_value(p)))
    study.sampler = samplers[name]()
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        trial = study.ask()
        _optuna_suggest(trial)
        times.append(time.perf_counter() - t)
        study.tell(trial, state=optuna.trial.TrialState.FAIL)  # keep N-1 finished trials
    return statistics.median(times)


def store_overhead(trials: int) -> tuple[float, float]:
    """Returns (babysit engine, plain Optuna) seconds per trial of a trivial 1-epoch objective on a journal file."""
    def objective(ctx):
        ctx.check(1)
        return _objective_value({**ctx.params, "dropout": 0.0, "width": 16})

    with tempfile.TemporaryDirectory() as d:
        t = time.perf_counter()
        run_study(objective, {"lr": SPACE["lr"], "reg": SPACE["reg"]}, stages=[bs.Stage(trials, 1)],
                  study_dir=Path(d) / "s", workers=0, sampler="random")
        ours = (time.perf_counter() - t) / trials
    with tempfile.TemporaryDirectory() as d:
        from optuna.storages.journal import JournalFileBackend

        storage = optuna.storages.JournalStorage(JournalFileBackend(str(Path(d) / "j.log")))
        study = optuna.create_study(storage=storage, direction="maximize", sampler=optuna.samplers.RandomSampler(0))
        t = time.perf_counter()
        for _ in range(trials):
            trial = study.ask()
            p = {"lr": trial.suggest_float("lr", 1e-6, 1.0, log=True),
                 "reg": trial.suggest_float("reg", 1e-6, 1e-1, log=True)}
            trial.report(0.0, 1)
            study.tell(trial, _objective_value({**p, "dropout": 0.0, "width": 16}))
        theirs = (time.perf_counter() - t) / trials
    return ours, theirs


def cold_start(workers: int) -> float:
    """Returns seconds from search() to the first trial's start, with forked workers (torch already imported)."""
    with tempfile.TemporaryDirectory() as d:
        stamp = Path(d) / "first"

        def objective(ctx):
            if not stamp.exists():
                stamp.write_text(repr(time.time()))
            return 0.0

        t = time.time()
        run_study(objective, {"lr": SPACE["lr"]}, stages=[bs.Stage(workers, 1)], study_dir=Path(d) / "s",
                  workers=workers)
        return float(stamp.read_text()) - t


def _seconds(cmd: list[str]) -> float:
    import subprocess

    t = time.perf_counter()
    subprocess.run(cmd, check=True, capture_output=True)
    return time.perf_counter() - t


def cli_cold_start(workers: int) -> float:
    """Returns seconds from launching `babysit search CONFIG` to its first trial's start (the store's clock)."""
    import subprocess

    from babysit.search.storage import StudyStore

    with tempfile.TemporaryDirectory() as d:
        cfg = Path(d) / "s.toml"
        cfg.write_text('[task]\ndata = "spiral"\nmodel = "mlp"\n[hp]\noptimizer = "adam"\n'
                       '[search]\nlr = {loguniform = [1e-4, 1e-1]}\nstages = [{trials = 2, epochs = 1}]\n')
        exe = Path(sys.executable).parent / "babysit"
        t = time.time()
        subprocess.run([str(exe), "search", str(cfg), "--study-dir", str(Path(d) / "s"), "--workers", str(workers)],
                       check=True, capture_output=True, cwd=d)
        store = StudyStore(Path(d) / "s")
        starts = [tr.datetime_start.timestamp() for tr in store.trials(0) if tr.datetime_start]
        return min(starts) - t


def study_html(trials: int) -> tuple[float, float, float, int]:
    """Returns (build s, load s, write study.html s, page bytes) for a study of `trials` finished trials."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    import studyfarm

    with tempfile.TemporaryDirectory() as d:
        t = time.perf_counter()
        studyfarm.farm(Path(d) / "s", trials)
        built = time.perf_counter() - t
        t = time.perf_counter()
        study = bs.load_study(Path(d) / "s")
        assert len(study.trials) == trials
        loaded = time.perf_counter() - t
        t = time.perf_counter()
        page = study.html()
        return built, loaded, time.perf_counter() - t, page.stat().st_size


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--at", type=int, default=1000)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--gp-at", type=int, default=300, help="GP at trial 1,000 takes minutes per ask; measured here")
    ap.add_argument("--only", choices=["cli", "html"], help="run only the CLI cold start or the study.html figures")
    ap.add_argument("--html-trials", type=int, default=50_000)
    ap.add_argument("--cli-reps", type=int, default=5)
    args = ap.parse_args()
    if args.only in ("cli", None):
        got = sorted(cli_cold_start(1) for _ in range(args.cli_reps))
        imp = sorted(_seconds([sys.executable, "-c", "import torch"]) for _ in range(args.cli_reps))
        print(f"cold start `babysit search CONFIG` -> first trial, 1 worker: median {statistics.median(got):.2f} s "
              f"(runs {', '.join(f'{g:.2f}' for g in got)}); `python -c 'import torch'` alone: "
              f"median {statistics.median(imp):.2f} s")
    if args.only in ("html", None):
        built, loaded, wrote, size = study_html(args.html_trials)
        print(f"study.html at {args.html_trials} trials: load_study + trials {loaded:.2f} s, write the page "
              f"{wrote:.2f} s, {size / 1e3:.0f} kB (building the synthetic study took {built:.1f} s)")
    if args.only is not None:
        return
    print(f"sampler overhead per trial at trial {args.at} (median of {args.reps}), 4 parameters")
    for name in ("random", "qmc"):
        ours, theirs = babysit_sampler(name, args.at, args.reps), optuna_sampler(name, args.at, args.reps)
        print(f"  {name:7s} babysit {ours * 1e3:8.3f} ms   optuna {theirs * 1e3:8.2f} ms   ratio {ours / theirs:.3f}")
    print(f"  tpe     optuna {optuna_sampler('tpe', args.at, args.reps) * 1e3:8.2f} ms (babysit's tpe is this sampler)")
    print(f"  gp      optuna {optuna_sampler('gp', args.gp_at, 3) * 1e3:8.2f} ms at trial {args.gp_at}")
    ours, theirs = store_overhead(200)
    print(f"store overhead per trial (200 trials, journal file, in-process): babysit {ours * 1e3:.2f} ms, "
          f"optuna ask/tell {theirs * 1e3:.2f} ms, ratio {ours / theirs:.2f}")
    for w in (1, 2):
        print(f"cold start search() -> first trial, {w} forked worker(s): {cold_start(w):.3f} s")


if __name__ == "__main__":
    main()
