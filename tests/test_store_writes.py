"""The study store's bookkeeping: two writes per trial (plain Optuna makes three), pops that never hand one
trial to two workers, and the records those batched writes must still leave.

Workers tell a result and pop their next trial in one journal append (one transaction on PostgreSQL);
the hyperparameters go with the worker's record in the other. These tests count the appends and the
commits, and check the ownership race with workers forked at one instant.
"""

from __future__ import annotations

import multiprocessing
import os
import time
from pathlib import Path

import pytest

import babysit as bs
from optuna.storages.journal._storage import JournalOperation

from babysit.search.api import _open
from babysit.search.storage import StudyStore, TrialState, final_trials
from babysit.search.worker import ensure_stage, work
from pg import pg_server, pg_url  # noqa: F401 (fixtures: a real PostgreSQL server)


def _plan(d: Path, trials: int, sampler: str = "random") -> dict:
    return {"space": {"lr": {"loguniform": [1e-4, 1.0]}, "depth": {"choice": [1, 2, 3]}},
            "stages": [bs.Stage(trials, 2).to_dict()], "sampler": sampler, "seed": 0, "fixed": {},
            "study_dir": str(d), "worst": 0.0}


def _objective(ctx):
    for e in (1, 2):
        if ctx.check(e):
            break
    return ctx.params["lr"]


@pytest.fixture(params=["journal", "postgresql"])
def spec(request, tmp_path):
    return request.getfixturevalue("pg_url") if request.param == "postgresql" else str(tmp_path)


@pytest.mark.parametrize("sampler", ["random", "tpe"])
def test_a_journal_worker_makes_two_appends_per_trial(tmp_path, sampler):
    n = 30
    ensure_stage(_open(str(tmp_path), "babysit", _plan(tmp_path, n, sampler), resume=False), 0)
    store = StudyStore(str(tmp_path), "babysit")
    appends = []
    real = store.storage._backend.append_logs
    store.storage._backend.append_logs = lambda logs: (appends.append([g["op_code"] for g in logs]), real(logs))[1]
    assert work(store, "babysit", _objective, poll=0.01) == n
    # the first pop alone, then per trial: (worker + params), (result + state + next pop); TPE's own writes
    # (its constant liar shares relative params as system attributes) are the sampler's, as in plain Optuna
    ours = [a for a in appends if a != [JournalOperation.SET_TRIAL_SYSTEM_ATTR]]
    assert len(ours) <= 2 * n + 1, str(appends)
    trials = store.trials(0)
    assert len(trials) == n and all(t.state == TrialState.COMPLETE for t in trials)
    for t in trials:
        assert t.user_attrs["worker"]["pid"] == os.getpid()
        assert t.user_attrs["result"]["status"] == "completed" and t.user_attrs["result"]["epochs"] is None
        assert set(t.params) == {"lr", "depth"} and t.value == pytest.approx(t.params["lr"])
        assert t.datetime_start is not None and t.datetime_complete >= t.datetime_start


def test_a_postgresql_worker_makes_two_commits_per_trial(tmp_path, pg_url):  # noqa: F811
    n = 20
    ensure_stage(_open(pg_url, "babysit", _plan(tmp_path, n), resume=False), 0)
    store = StudyStore(pg_url, "babysit")
    import sqlalchemy

    wrote = []  # per commit: whether its transaction wrote (INSERT/UPDATE); reads end in a commit too

    def executed(conn, cursor, statement, *args):
        if statement.split()[0] in ("INSERT", "UPDATE"):
            conn.info["wrote"] = True

    sqlalchemy.event.listen(store.storage.engine, "before_cursor_execute", executed)
    sqlalchemy.event.listen(store.storage.engine, "commit", lambda conn: wrote.append(conn.info.pop("wrote", False)))
    assert work(store, "babysit", _objective, poll=0.01) == n
    trials = store.trials(0)
    assert all(t.state == TrialState.COMPLETE and t.user_attrs["worker"]["pid"] == os.getpid() for t in trials)
    assert all(set(t.params) == {"lr", "depth"} and t.user_attrs["result"]["status"] == "completed" for t in trials)
    # the first pop alone, then per trial: (params), (result + state + next pop with its worker record)
    assert sum(wrote) <= 2 * n + 1, sum(wrote)


def _race(spec, name, out, barrier):
    os.environ["OMP_NUM_THREADS"] = "1"
    store = StudyStore(spec, name)
    barrier.wait()
    ran = []

    def objective(ctx):
        ran.append(ctx.trial_id)
        ctx.check(1)
        return ctx.params["lr"]

    work(store, name, objective, poll=0.005)
    Path(out).write_text(" ".join(map(str, ran)))
    os._exit(0)


def test_eight_workers_at_one_instant_run_each_trial_once_and_record_who_ran_it(tmp_path, spec):
    n, w = 64, 8
    ensure_stage(_open(spec, "babysit", _plan(tmp_path, n), resume=False), 0)
    ctx = multiprocessing.get_context("fork")
    barrier = ctx.Barrier(w)
    procs = [ctx.Process(target=_race, args=(spec, "babysit", tmp_path / f"ran{i}", barrier)) for i in range(w)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    assert [p.exitcode for p in procs] == [0] * w
    by_worker = {p.pid: (tmp_path / f"ran{i}").read_text().split() for i, p in enumerate(procs)}
    ran = [int(t) for ts in by_worker.values() for t in ts]
    assert sorted(ran) == sorted(set(ran)) and len(ran) == n  # no trial run twice, none lost
    store = StudyStore(spec, "babysit")
    trials = {t._trial_id: t for t in store.trials(0)}
    assert len(trials) == n and all(t.state == TrialState.COMPLETE for t in trials.values())
    for pid, ts in by_worker.items():  # the record names the worker that really ran it, not a race's loser
        assert all(trials[int(t)].user_attrs["worker"]["pid"] == pid for t in ts)
    assert sorted(t.user_attrs["index"] for t in final_trials(list(trials.values()))) == list(range(n))


def test_a_trial_checked_often_writes_a_heartbeat_only_every_tenth_of_stale_after(tmp_path):
    ensure_stage(_open(str(tmp_path), "babysit", _plan(tmp_path, 1), resume=False), 0)
    beats = []

    def objective(ctx):
        real = ctx.store.heartbeat
        ctx.store.heartbeat = lambda tid: (beats.append(time.monotonic()), real(tid))[1]
        for e in range(60):  # 60 epochs of 20 ms: 1.2 s, stale_after 2 s -> a beat every 0.2 s
            time.sleep(0.02)
            assert ctx.check(e) is None
        return 0.5

    work(str(tmp_path), "babysit", objective, stale_after=2.0, poll=0.01)
    assert 3 <= len(beats) <= 8, len(beats)
    t = StudyStore(str(tmp_path), "babysit").trials(0)[0]
    assert t.state == TrialState.COMPLETE and "reaped" not in t.user_attrs  # never looked stale to a reaper
