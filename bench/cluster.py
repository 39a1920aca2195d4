"""Store throughput with 8 workers: trivial trials per second, babysit's engine against plain Optuna.

    PYTHONPATH=src .venv/bin/python bench/cluster.py --trials 240 --workers 8 --reps 3

Both sides: `workers` processes forked at one instant (a barrier; each opens its store before it), one study, trivial trials (no
training, no run directory: those are the trial's own work). Plain Optuna: study.optimize with
one suggest_float and n_trials = trials / workers each. babysit: `work()` around the same store
(queued trials popped atomically, heartbeat per epoch, result attribute, reaper, stage checks).
Stores: the journal file, and a PostgreSQL 15 server of its own on 127.0.0.1 (durable: fsync on).
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "src"), str(ROOT / "tests")]

import optuna  # noqa: E402

import babysit as bs  # noqa: E402
from babysit.search.api import _open  # noqa: E402
from babysit.search.storage import StudyStore, open_storage  # noqa: E402
from babysit.search.worker import ensure_stage, work  # noqa: E402

optuna.logging.set_verbosity(optuna.logging.ERROR)


def _babysit_worker(barrier, spec, w):
    store = StudyStore(spec, "babysit")  # opened before the start, as the Optuna side loads its study
    barrier.wait()
    work(store, "babysit", lambda ctx: (ctx.check(1), ctx.params["lr"])[1], worker=w, poll=0.01)
    os._exit(0)


def _optuna_worker(barrier, spec, n):
    storage = open_storage(spec)
    study = optuna.load_study(study_name="plain", storage=storage, sampler=optuna.samplers.RandomSampler())
    barrier.wait()
    study.optimize(lambda t: t.suggest_float("lr", 1e-4, 1.0, log=True), n_trials=n)
    os._exit(0)


def _timed(target, args_of, workers):
    ctx = multiprocessing.get_context("fork")
    barrier = ctx.Barrier(workers + 1)
    procs = [ctx.Process(target=target, args=(barrier, *args_of(w))) for w in range(workers)]
    for p in procs:
        p.start()
    barrier.wait()
    t = time.perf_counter()
    for p in procs:
        p.join()
    assert all(p.exitcode == 0 for p in procs)
    return time.perf_counter() - t


def babysit_rate(spec: str, d: Path, trials: int, workers: int) -> float:
    plan = {"space": {"lr": {"loguniform": [1e-4, 1.0]}}, "stages": [bs.Stage(trials, 1).to_dict()],
            "sampler": "random", "seed": 0, "fixed": {}, "study_dir": str(d), "worst": 0.0}
    ensure_stage(_open(spec, "babysit", plan, resume=False), 0)
    return trials / _timed(_babysit_worker, lambda w: (spec, w), workers)


def optuna_rate(spec: str, trials: int, workers: int) -> float:
    optuna.create_study(study_name="plain", storage=open_storage(spec))
    return trials / _timed(_optuna_worker, lambda w: (spec, trials // workers), workers)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--trials", type=int, default=240)
    ap.add_argument("--workers", type=int, default=8)
    ap.add_argument("--reps", type=int, default=3)
    args = ap.parse_args()
    from pg import PostgresServer

    with PostgresServer(durable=True) as pg:
        for store in ("journal", "postgresql"):
            rates: dict[str, list[float]] = {"babysit": [], "optuna": []}
            for r in range(args.reps):
                for side in ("optuna", "babysit"):
                    d = Path(tempfile.mkdtemp(prefix="bench-cluster-"))
                    spec = pg.create_database() if store == "postgresql" else str(d)
                    rate = (babysit_rate(spec, d, args.trials, args.workers) if side == "babysit"
                            else optuna_rate(spec, args.trials, args.workers))
                    rates[side].append(rate)
            b, o = statistics.median(rates["babysit"]), statistics.median(rates["optuna"])
            print(f"{store:10s} {args.workers} workers: optuna {o:6.1f} trials/s, babysit {b:6.1f} trials/s, "
                  f"babysit/optuna {b / o:.2f}  (runs: optuna {[round(x) for x in rates['optuna']]}, "
                  f"babysit {[round(x) for x in rates['babysit']]})", flush=True)


if __name__ == "__main__":
    main()
