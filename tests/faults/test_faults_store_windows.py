"""The study store's kill windows: a process SIGKILLed exactly between two writes that belong together.

Each test runs the real code path in a child that kills itself (SIGKILL, no cleanup) at the instant
between the two writes, then checks that the next process finishes the study instead of looping
forever, refusing it, or stalling: a re-queue between its FAIL and its copy, a stage between its
election and its creator's record, a study between its root and its plan, the journal's lock held.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
import textwrap
import time

import pytest

import babysit as bs
from babysit.errors import StoreError
from babysit.search.api import _open
from babysit.search.storage import StudyStore, TrialState
from babysit.search.worker import _ask, ensure_stage
from pg import pg_server, pg_url  # noqa: F401 (fixtures: a real PostgreSQL server)

SPACE = {"lr": bs.loguniform(1e-4, 1.0)}
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}

_PRELUDE = textwrap.dedent("""
    import math, os, signal, sys, time
    import torch
    torch.set_num_threads(1)
    import babysit as bs
    from babysit.search import run_study
    from babysit.search.storage import StudyStore
    from babysit.search.worker import work

    def die(*_a, **_k):
        os.kill(os.getpid(), signal.SIGKILL)

    def objective(ctx):
        for e in range(1, 3):
            time.sleep(0.01)
            if ctx.check(e):
                break
        return -abs(math.log10(ctx.params["lr"]) + 2)
""")


def _child(tmp_path, body, *args, timeout=60):
    """Runs the prelude + body in a fresh interpreter; returns the CompletedProcess (a timeout fails the test)."""
    script = tmp_path / f"child{len(list(tmp_path.glob('child*.py')))}.py"
    script.write_text(_PRELUDE + textwrap.dedent(body))
    return subprocess.run([sys.executable, str(script), *map(str, args)], env=ENV, capture_output=True, text=True,
                          timeout=timeout)


def _plan(d, stages):
    return {"space": {"lr": {"loguniform": [1e-4, 1.0]}}, "stages": [s.to_dict() for s in stages],
            "sampler": "random", "seed": 0, "fixed": {}, "study_dir": str(d), "worst": 0.0, "version": 1}


def _value(params):
    return -abs(math.log10(params["lr"]) + 2)


@pytest.mark.parametrize("kind", ["journal", "postgresql"])
def test_a_requeuer_killed_between_the_fail_and_the_copy_leaves_no_index_without_a_trial(tmp_path, request, kind):
    d = (tmp_path / "s").resolve()
    d.mkdir()
    spec = request.getfixturevalue("pg_url") if kind == "postgresql" else str(d)
    store = _open(spec, "babysit", _plan(d, [bs.Stage(4, 2)]), resume=False)
    ensure_stage(store, 0)
    lost, attrs = _ask(store, 0, _plan(d, [bs.Stage(4, 2)]), None)  # its worker went silent on another machine
    store.set_attr(lost, "worker", {"host": "elsewhere", "pid": 1})
    store.set_attr(lost, "heartbeat", time.time() - 60)

    # a worker reaps it and is SIGKILLed right after the FAIL, before it queues the copy
    got = _child(tmp_path, """
        StudyStore._enqueue_copy = die
        work(sys.argv[1], "babysit", objective, stale_after=2.0)
    """, spec)
    assert got.returncode == -9, got.stderr
    mine = [t for t in StudyStore(spec).trials(0) if t.user_attrs["index"] == attrs["index"]]
    assert [(t.state, t.user_attrs.get("requeued")) for t in mine] == [(TrialState.FAIL, True)]  # the orphan

    got = _child(tmp_path, "print(work(sys.argv[1], 'babysit', objective, stale_after=2.0))", spec)
    assert got.returncode == 0, got.stderr
    study = bs.load_study(d, storage=None if kind == "journal" else spec)
    assert study.done and sorted(t.id for t in study.trials) == [0, 1, 2, 3]
    assert all(t.status == "completed" and t.metric == _value(t.params) for t in study.trials)
    again = next(t for t in study.trials if t.id == attrs["id"])
    assert again.attempt == 1 and again.params == attrs["params"]  # the copy ran the orphan's hyperparameters
    copies = [t for t in StudyStore(spec).trials(0) if t.user_attrs["index"] == attrs["index"]]
    assert len(copies) == 2  # the orphan and one copy: nothing queued twice


def test_a_stage_creator_killed_between_its_election_and_its_record_is_finished_by_the_resumed_master(tmp_path):
    d = tmp_path / "s"
    body = """
        stages = [bs.Stage(4, 1), bs.Stage(3, 1)]
        if sys.argv[2] == "kill":  # the master (workers=0: it creates stage 1 itself) dies after the election
            real = StudyStore.set_stage_attr
            def set_stage_attr(self, stage, key, value):
                if stage == 1 and key == "claimed":
                    die()
                return real(self, stage, key, value)
            StudyStore.set_stage_attr = set_stage_attr
        run_study(objective, {"lr": bs.loguniform(1e-4, 1.0)}, stages=stages, study_dir=sys.argv[1], workers=0,
                  resume=sys.argv[2] == "resume")
    """
    assert _child(tmp_path, body, d, "kill").returncode == -9
    store = StudyStore(str(d))
    assert store.stage_id(1) is not None and store.stage_attrs(1) == {}  # elected, nothing recorded, nothing queued
    got = _child(tmp_path, body, d, "resume")
    assert got.returncode == 0, got.stderr
    study = bs.load_study(d)
    assert study.done and sorted(t.id for t in study.trials) == list(range(7))
    assert all(t.status == "completed" for t in study.trials)
    assert "stage 1: its creator died" in got.stderr  # the resumed master repaired it (repair_stages)


def test_a_stage_whose_creator_died_on_another_host_is_taken_over_by_a_waiting_worker(tmp_path):
    d = (tmp_path / "s").resolve()
    d.mkdir()
    plan = _plan(d, [bs.Stage(2, 1), bs.Stage(2, 1)])
    store = _open(str(d), "babysit", plan, resume=False)
    ensure_stage(store, 0)
    for _ in range(2):
        t, a = _ask(store, 0, plan, None)
        store.finish(t, _value(a["params"]), {"status": "completed", "metric": _value(a["params"])})
    store.claim_stage(1)  # the creator, on a host this one cannot see, died before queuing anything
    store.set_stage_attr(1, "claimed", {"host": "elsewhere", "pid": 1, "started": 1})
    started = time.perf_counter()
    got = _child(tmp_path, "print(work(sys.argv[1], 'babysit', objective, stale_after=1.0))", d)
    assert got.returncode == 0, got.stderr
    assert got.stdout.split()[-1] == "2" and "finished it" in got.stderr
    assert time.perf_counter() - started < 30  # its patience: min(stale_after, 60 s) + up to 5 s of jitter
    assert bs.load_study(d).done


def test_a_study_killed_between_its_root_and_its_plan_can_be_started_again(tmp_path):
    body = """
        if sys.argv[2] == "kill":  # killed between creating the root study and writing its plan
            import optuna.storages
            real = optuna.storages.JournalStorage.set_study_user_attr
            def set_study_user_attr(self, sid, key, value):
                if key == "plan":
                    die()
                return real(self, sid, key, value)
            optuna.storages.JournalStorage.set_study_user_attr = set_study_user_attr
        run_study(objective, {"lr": bs.loguniform(1e-4, 1.0)}, stages=[bs.Stage(3, 1)], study_dir=sys.argv[1],
                  workers=0, resume=sys.argv[2] == "resume")
    """
    for again in ("fresh", "resume"):
        d = tmp_path / again
        assert _child(tmp_path, body, d, "kill").returncode == -9
        store = StudyStore(str(d))
        assert not store.exists() and store.root_attrs() == {}  # the root study, without its plan
        with pytest.raises(StoreError, match="holds no plan"):  # not a KeyError
            bs.load_study(d)
        got = _child(tmp_path, body, d, again)  # neither "already exists" nor KeyError: the study is finished
        assert got.returncode == 0, got.stderr
        study = bs.load_study(d)
        assert study.done and sorted(t.id for t in study.trials) == [0, 1, 2]


def test_a_process_killed_holding_the_journal_lock_stalls_nobody(tmp_path):
    d = (tmp_path / "s").resolve()
    d.mkdir()
    _open(str(d), "babysit", _plan(d, [bs.Stage(2, 1)]), resume=False)
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent("""
        import sys, time
        from babysit.search.storage import StudyStore
        store = StudyStore(sys.argv[1])
        store.storage._backend._lock.acquire()  # the lock every append takes
        print("held", flush=True)
        time.sleep(600)
    """), str(d)], env=ENV, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        store = StudyStore(str(d))
        writer = subprocess.Popen([sys.executable, "-c", "import sys\nfrom babysit.search.storage import StudyStore\n"
                                   "StudyStore(sys.argv[1]).kill(0, 'x')", str(d)], env=ENV)
        with pytest.raises(subprocess.TimeoutExpired):  # the lock excludes: a writer waits while it is held
            writer.wait(timeout=3)
        holder.kill()  # SIGKILL while holding it
        holder.wait()
        started = time.perf_counter()
        ensure_stage(store, 0)  # writes: the space, 2 queued trials, ready
        waited = time.perf_counter() - started
        assert writer.wait(timeout=10) == 0  # the waiting writer got the lock too
    finally:
        holder.kill()
        holder.wait()
    assert waited < 2.0, f"{waited:.1f} s to write after the lock holder died"  # Optuna's symlink lock: 30 s
    assert store.stage_attrs(0).get("ready") and len(store.trials(0)) == 2


def test_two_final_trials_of_one_index_count_once_the_completed_one_first(tmp_path):
    from babysit.search.storage import final_trials
    from babysit.search.worker import stage_done, stage_results

    d = (tmp_path / "s").resolve()
    d.mkdir()
    plan = _plan(d, [bs.Stage(2, 1)])
    store = _open(str(d), "babysit", plan, resume=False)
    ensure_stage(store, 0)
    store.enqueue(0, {}, {"stage": 0, "index": 0, "id": 0, "attempt": 1, "run_dir": str(d / "x")})  # a duplicate
    results = {}
    for value in (None, 0.5, 0.25):  # index 0 fails, index 1 completes, index 0's duplicate completes
        t, a = _ask(store, 0, plan, None)
        store.finish(t, value, {"status": "completed" if value is not None else "failed"})
        results[t] = (a["index"], value)
    final = list(final_trials(store.trials(0)))
    assert sorted((t.user_attrs["index"], t.value) for t in final) == sorted(
        (i, v) for i, v in results.values() if v is not None)
    assert stage_done(store, 0, 2) and [r[1] for r in stage_results(store, 0)] == [
        v for i, v in sorted(results.values(), key=lambda x: x[0]) if v is not None]
