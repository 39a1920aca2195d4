"""Faults of a search, against the study store as a parameter (journal here; the cluster issue adds PostgreSQL).

Workers SIGKILLed mid-trial, stale heartbeats, 8 workers starting at one instant, a master SIGKILLed
and resumed, a second master, a trial that raises, a kill flag, hopeless trials.
"""

from __future__ import annotations

import math
import multiprocessing
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

import babysit as bs
from babysit.search import Hopeless, run_study
from babysit.search.api import _open
from babysit.search.launchers import MasterLock
from babysit.search.samplers import propose
from babysit.search.space import check_space
from babysit.search.storage import StudyStore, TrialState
from babysit.search.worker import _ask, ensure_stage, work
from pg import pg_server, pg_url  # noqa: F401 (fixtures: a real PostgreSQL server)

SPACE = {"lr": bs.loguniform(1e-4, 1.0)}


@pytest.fixture(params=["journal"])
def storage(request):
    """The study store under test: None is the journal file in the study directory; a fresh PostgreSQL database.

    Tests opt into PostgreSQL with @BOTH (a real server, see tests/pg.py): a PostgreSQL store costs
    seconds per test on 2 cores, so the faults that differ between stores run on both. SQLite is not
    a value: it cannot pop a queued trial atomically between processes (no SELECT ... FOR UPDATE).
    """
    if request.param == "postgresql":
        return request.getfixturevalue("pg_url")
    return None


BOTH = pytest.mark.parametrize("storage", ["journal", "postgresql"], indirect=True)


def test_an_rdb_url_works_in_one_process(tmp_path):
    url = f"sqlite:///{tmp_path}/rdb.sqlite"
    study = run_study(_epochs, SPACE, stages=[bs.Stage(4, 1), bs.Stage(2, 1)], study_dir=tmp_path / "s",
                      storage=url, workers=0)
    assert study.done and sorted(t.id for t in bs.load_study(tmp_path / "s", storage=url).trials) == list(range(6))
    assert not (tmp_path / "s" / "study.journal").exists()


def _epochs(ctx, n=3, pause=0.02):
    for e in range(1, n + 1):
        time.sleep(pause)
        if ctx.check(e):
            break
    return -abs(math.log10(ctx.params["lr"]) + 2.0)


def _all_attempts(study_dir, storage, stage=0):
    return StudyStore(storage or study_dir).trials(stage)


@BOTH
def test_worker_killed_mid_trial_is_requeued_and_finished(tmp_path, storage):
    def objective(ctx):
        if ctx.id == 3 and ctx.attempt == 0:
            ctx.check(1)
            os.kill(os.getpid(), signal.SIGKILL)
        return _epochs(ctx)

    study = run_study(objective, SPACE, stages=[bs.Stage(8, 3)], study_dir=tmp_path / "s", storage=storage,
                      workers=2)
    trials = study.trials
    assert sorted(t.id for t in trials) == list(range(8)) and all(t.status == "completed" for t in trials)
    assert next(t for t in trials if t.id == 3).attempt == 1
    reaped = [t for t in _all_attempts(tmp_path / "s", storage) if t.state == TrialState.FAIL]
    assert len(reaped) == 1 and "worker is gone" in reaped[0].user_attrs["reaped"]


def test_requeues_are_bounded_then_failed(tmp_path, storage):
    def objective(ctx):
        if ctx.id == 2:
            os.kill(os.getpid(), signal.SIGKILL)
        return _epochs(ctx, 1)

    study = run_study(objective, SPACE, stages=[bs.Stage(5, 1)], study_dir=tmp_path / "s", storage=storage,
                      workers=1, max_attempts=2)
    by_id = {t.id: t for t in study.trials}
    assert sorted(by_id) == list(range(5))
    assert by_id[2].status == "failed" and "attempt 2 of 2" in by_id[2].reason
    assert all(by_id[i].status == "completed" for i in (0, 1, 3, 4))


@BOTH
def test_stale_heartbeat_is_reaped_by_another_worker(tmp_path, storage):
    d = tmp_path / "s"
    d.mkdir()
    plan = {"space": {"lr": {"loguniform": [1e-4, 1.0]}},
            "stages": [bs.Stage(4, 2).to_dict()], "sampler": "random", "seed": 0, "fixed": {},
            "study_dir": str(d), "worst": 0.0}
    store = _open(storage or str(d), "babysit", plan, resume=False)
    ensure_stage(store, 0)
    lost, attrs = _ask(store, 0, plan, None)  # a worker on another machine took it, then went silent
    store.set_attr(lost, "worker", {"host": "elsewhere", "pid": 1})
    store.set_attr(lost, "heartbeat", time.time() - 60)
    ran = work(storage or str(d), "babysit", _epochs, stale_after=5.0)
    assert ran == 4
    study = bs.load_study(d, storage=storage)
    assert sorted(t.id for t in study.trials) == [0, 1, 2, 3] and all(t.status == "completed" for t in study.trials)
    assert next(t for t in study.trials if t.id == attrs["id"]).attempt == 1


def _barrier_worker(barrier, spec, w):
    barrier.wait()
    os._exit(0 if work(spec, "babysit", lambda ctx: _epochs(ctx, 1, 0.005), worker=w) >= 0 else 1)


@BOTH
def test_eight_workers_started_at_the_same_instant(tmp_path, storage):
    d = tmp_path / "s"
    d.mkdir()
    plan = {"space": {"lr": {"loguniform": [1e-4, 1.0]}}, "stages": [bs.Stage(48, 1).to_dict(), bs.Stage(8, 1)
                                                                      .to_dict()],
            "sampler": "qmc", "seed": 0, "fixed": {}, "study_dir": str(d), "worst": 0.0}
    spec = storage or str(d)
    ensure_stage(_open(spec, "babysit", plan, resume=False), 0)  # the store exists before any worker starts
    ctx = multiprocessing.get_context("fork")
    barrier = ctx.Barrier(8)
    procs = [ctx.Process(target=_barrier_worker, args=(barrier, spec, w)) for w in range(8)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    assert [p.exitcode for p in procs] == [0] * 8
    study = bs.load_study(d, storage=storage)
    ids = [t.id for t in study.trials]
    assert sorted(ids) == list(range(56)) and all(t.status == "completed" for t in study.trials)
    attempts = _all_attempts(d, storage, 0) + _all_attempts(d, storage, 1)
    assert len(attempts) == 56 and len({t.user_attrs["worker"]["pid"] for t in attempts}) > 1


@pytest.mark.parametrize("sampler", ["random", "qmc", "grid"])
def test_identical_proposals_with_one_and_two_workers(tmp_path, storage, sampler):
    space = {"lr": bs.loguniform(1e-4, 1.0), "reg": bs.loguniform(1e-6, 1e-1),
             "act": bs.choice(["relu", "tanh"])}
    got = []
    for workers in (1, 2):
        study = run_study(lambda ctx: _epochs(ctx, 1, 0.0), space, stages=[bs.Stage(12, 1), bs.Stage(6, 1)],
                          study_dir=tmp_path / f"w{workers}", storage=storage, workers=workers, sampler=sampler,
                          seed=5)
        got.append({t.id: dict(t.params) for t in study.trials})
    assert len(got[0]) == 18 and got[0] == got[1]


_MASTER = textwrap.dedent("""
    import math, os, sys, time
    import torch
    torch.set_num_threads(1)
    import babysit as bs
    from babysit.search import run_study
    log = open(sys.argv[2], "a")
    def objective(ctx):
        print("start", ctx.id, os.getpid(), file=log, flush=True)
        for e in range(1, 4):
            time.sleep(0.08)
            ctx.check(e)
        print("end", ctx.id, file=log, flush=True)
        return -abs(math.log10(ctx.params["lr"]) + 2)
    storage = sys.argv[4] if len(sys.argv) > 4 else None
    run_study(objective, {"lr": bs.loguniform(1e-4, 1.0)}, stages=[bs.Stage(10, 3), bs.Stage(4, 3)],
              study_dir=sys.argv[1], storage=storage, workers=2, seed=0, resume=sys.argv[3] == "1")
""")


def _gone(pid):
    try:
        return Path(f"/proc/{pid}/status").read_text().split("State:")[1].split()[0] in ("Z", "X")
    except (FileNotFoundError, IndexError):
        return True


def test_resume_after_the_master_is_sigkilled(tmp_path, storage):
    script, log, d = tmp_path / "master.py", tmp_path / "log.txt", tmp_path / "s"
    script.write_text(_MASTER)
    args = [sys.executable, str(script), str(d), str(log)]
    extra = [storage] if storage else []
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    master = subprocess.Popen(args + ["0"] + extra, env=env)
    deadline = time.time() + 60
    while time.time() < deadline and (not log.exists() or log.read_text().count("end") < 4):
        time.sleep(0.05)
    master.send_signal(signal.SIGKILL)
    master.wait()
    lines = log.read_text().split("\n")
    ended_before = {int(x.split()[1]) for x in lines if x.startswith("end")}
    workers = {int(x.split()[2]) for x in lines if x.startswith("start")}
    assert len(ended_before) >= 4
    t = time.time()
    while time.time() - t < 10 and not all(_gone(p) for p in workers):
        time.sleep(0.05)
    assert all(_gone(p) for p in workers)           # PR_SET_PDEATHSIG: the workers died with their master
    n_lines = len(lines)
    with pytest.raises(bs.StoreError, match="resume=True"):
        run_study(_epochs, {"lr": bs.loguniform(1e-4, 1.0)}, stages=[bs.Stage(10, 3), bs.Stage(4, 3)],
                  study_dir=d, storage=storage, workers=0)
    subprocess.run(args + ["1"] + extra, env=env, check=True, timeout=120)
    after = log.read_text().split("\n")[n_lines - 1:]
    restarted = {int(x.split()[1]) for x in after if x.startswith("start")}
    assert not restarted & ended_before            # finished trials are not re-run
    study = bs.load_study(d, storage=storage)
    assert sorted(t.id for t in study.trials) == list(range(14)) and study.done
    assert all(t.status == "completed" for t in study.trials)


def test_a_second_master_is_refused_naming_the_first(tmp_path, storage):
    with MasterLock(tmp_path / "s"):
        with pytest.raises(bs.StoreError, match=rf"pid {os.getpid()}"):
            run_study(_epochs, SPACE, stages=[bs.Stage(2, 1)], study_dir=tmp_path / "s", storage=storage, workers=0)


def test_a_trial_that_raises_is_failed_and_the_study_goes_on(tmp_path, storage):
    def objective(ctx):
        if ctx.id == 1:
            raise RuntimeError("the user's model broke")
        return _epochs(ctx, 1, 0.0)

    study = run_study(objective, SPACE, stages=[bs.Stage(4, 1)], study_dir=tmp_path / "s", storage=storage,
                      workers=0)
    by_id = {t.id: t for t in study.trials}
    assert by_id[1].status == "failed" and "RuntimeError: the user's model broke" in by_id[1].reason
    assert [by_id[i].status for i in (0, 2, 3)] == ["completed"] * 3 and study.done


@BOTH
def test_kill_flag_stops_a_trial_at_its_next_epoch(tmp_path, storage):
    epochs_run = {}

    def objective(ctx):
        for e in range(1, 6):
            if ctx.id == 1 and e == 2:
                bs.load_study(tmp_path / "s", storage=storage).kill(1)   # another process's view of the store
            epochs_run[ctx.id] = e
            if ctx.check(e):
                break
        return 0.5

    study = run_study(objective, SPACE, stages=[bs.Stage(3, 5)], study_dir=tmp_path / "s", storage=storage,
                      workers=0)
    by_id = {t.id: t for t in study.trials}
    assert epochs_run == {0: 5, 1: 2, 2: 5}
    assert by_id[1].status == "pruned" and by_id[1].reason == "killed from the study"


def _maybe_hopeless(ctx):
    lr = ctx.params["lr"]
    for e in range(1, 4):
        loss = float("nan") if lr > 0.1 else math.log(10) * (1 - 0.2 * e)
        if ctx.check(e, train_loss=loss, val_acc=0.5, first=e == 1):
            return 0.1
    return 1.0 - abs(math.log10(lr) + 2) / 4


HOPELESS = Hopeless(chance_loss=math.log(10), num_classes=10, n_val=1000)


def test_hopeless_trials_are_stopped_and_told_as_bad_results(tmp_path, storage):
    study = run_study(_maybe_hopeless, SPACE, stages=[bs.Stage(16, 3)], study_dir=tmp_path / "s",
                      storage=storage, workers=0, sampler="random", hopeless=HOPELESS)
    bad = [t for t in study.trials if t.params["lr"] > 0.1]
    assert bad and all(t.status == "pruned" and t.reason.startswith("hopeless: loss became nan") for t in bad)
    assert all(t.status == "completed" for t in study.trials if t.params["lr"] <= 0.1)
    raw = {t.user_attrs["id"]: t for t in _all_attempts(tmp_path / "s", storage)}
    assert all(raw[t.id].state == TrialState.COMPLETE and raw[t.id].value == pytest.approx(0.1) for t in bad)


def _edge_of_chaos(fail):
    def objective(ctx):  # better and better up to lr = 0.1, hopeless (NaN) beyond
        lr = ctx.params["lr"]
        if lr > 0.1:
            if fail:  # what Optuna does with a NaN: the trial is failed, and TPE never reads it
                raise FloatingPointError("loss is nan")
            ctx.check(1, train_loss=float("nan"), first=True)
            return 0.0
        return math.log10(lr) + 4
    return objective


def test_samplers_learn_from_hopeless_trials(tmp_path, storage):
    share = {}
    for fail in (False, True):
        study = run_study(_edge_of_chaos(fail), SPACE, stages=[bs.Stage(40, 1)], study_dir=tmp_path / str(fail),
                          storage=storage, workers=0, sampler="tpe", hopeless=HOPELESS, seed=0)
        late = [t for t in study.trials if t.id >= 15]
        share[fail] = sum(t.params["lr"] > 0.1 for t in late) / len(late)
    # measured: 0.36 told as bad results, against 1.0 when failed (every late trial wasted)
    assert share[False] < 0.6 and share[True] > 0.8, share


def test_hopeless_rule_verdicts():
    h = HOPELESS
    assert h.verdict(1, float("inf"), 0.5, True).startswith("loss became inf")
    assert "3x the chance loss" in h.verdict(2, 3.1 * math.log(10), 0.5, False)
    assert "not off chance" in h.verdict(1, math.log(10), 0.11, True)
    assert h.verdict(1, math.log(10), 0.11, False) is None             # only judged after the first epoch
    assert h.verdict(1, 0.5 * math.log(10), 0.6, True) is None


def test_a_stage_half_created_by_a_dead_process_is_completed_on_resume(tmp_path, storage):
    d = tmp_path / "s"
    stages = [bs.Stage(6, 1)]
    run_study(_epochs, SPACE, stages=stages, study_dir=d, storage=storage, workers=0)   # the reference
    ref = {t.id: t.params for t in bs.load_study(d, storage=storage).trials}
    d2 = tmp_path / "s2"
    d2.mkdir()
    plan = {"space": {"lr": {"loguniform": [1e-4, 1.0]}}, "stages": [s.to_dict() for s in stages],
            "sampler": "qmc", "seed": 0, "fixed": {}, "study_dir": str(d2.resolve()), "worst": 0.0, "version": 1}
    store = _open(storage or str(d2.resolve()), "babysit", plan, resume=False)
    dead = subprocess.Popen(["true"])
    dead.wait()
    store.claim_stage(0)                       # a creator that died after queuing 2 of the 6 trials
    store.set_stage_attr(0, "claimed", {"host": os.uname().nodename, "pid": dead.pid})
    for i in range(2):
        store.enqueue(0, propose("qmc", 0, 0, i, check_space(SPACE), 6),
                      {"stage": 0, "index": i, "id": i, "attempt": 0, "run_dir": str(d2 / "trials" / f"{i:05d}")})
    study = run_study(_epochs, SPACE, stages=stages, study_dir=d2, storage=storage, workers=0, resume=True)
    assert {t.id: t.params for t in study.trials} == ref and study.done


@pytest.mark.parametrize("sampler", ["tpe", "gp"])
def test_adaptive_samplers_with_two_workers(tmp_path, storage, sampler):
    study = run_study(lambda ctx: _epochs(ctx, 1, 0.0), {"lr": bs.loguniform(1e-4, 1.0), "act": bs.choice(["a", "b"])},
                      stages=[bs.Stage(14, 1), bs.Stage(4, 1)], study_dir=tmp_path / "s", storage=storage,
                      workers=2, sampler=sampler, seed=1)
    assert sorted(t.id for t in study.trials) == list(range(18)) and study.done
    assert len({t.params["lr"] for t in study.trials}) == 18          # each trial sampled its own point
    lo, hi = study.ranges(1)["lr"]["loguniform"]
    assert all(lo <= t.params["lr"] <= hi for t in study.trials if t.stage == 1)
