"""A study with many trials, fast: a real two-stage search of a trivial objective, then finished trials added
straight to its stages' Optuna studies with babysit's records (as a worker writes them), for the page at scale."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import optuna

import babysit as bs
from babysit.search import Study, run_study
from babysit.search.storage import StudyStore

SPACE = {"lr": bs.loguniform(1e-5, 1.0), "reg": bs.loguniform(1e-6, 1e-1), "width": bs.intuniform(16, 512, log=True),
         "act": bs.choice(["relu", "tanh"])}


def _metric(p: dict) -> float:
    return -abs(math.log10(p["lr"]) + 2) - 0.1 * abs(math.log10(p["reg"]) + 4) + 0.01 * math.log2(p["width"])


def farm(study_dir: Path, trials: int, seed: int = 0) -> Study:
    """Returns a Study in study_dir holding about `trials` finished trials over two stages."""
    study = run_study(lambda ctx: _metric(ctx.params), SPACE, stages=[bs.Stage(4, 1), bs.Stage(4, 1)],
                      study_dir=study_dir, workers=0, sampler="random", seed=seed)
    store = StudyStore(study.store.spec)
    rng = np.random.default_rng(seed)
    next_id = 1 + max(t.id for t in study.trials)
    for stage in (0, 1):
        lo, hi = (math.log10(v) for v in store.stage_attrs(stage)["space"]["lr"]["loguniform"])
        n = (trials - 8) // 2
        made = []
        for i in range(n):
            tid = next_id + stage * n + i
            p = {"lr": float(10 ** rng.uniform(lo, hi)), "reg": float(10 ** rng.uniform(-6, -1)),
                 "width": int(2 ** rng.uniform(4, 9)), "act": str(rng.choice(["relu", "tanh"]))}
            m = _metric(p)
            made.append(optuna.trial.create_trial(
                value=m, user_attrs={"id": tid, "stage": stage, "index": 4 + i, "params": p,
                                     "run_dir": str(study_dir / "trials" / f"{tid:05d}"),
                                     "result": {"status": "completed", "metric": m, "epochs": 1}}))
        store.study(stage).add_trials(made)
    return bs.load_study(study_dir)
