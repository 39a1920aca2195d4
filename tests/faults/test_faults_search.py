"""Faults of a search master: SIGKILLed at 5 random points and resumed each time; a 1,000-trial soak.

Both masters are subprocesses: a SIGKILL must reach a real master (its forked workers die with it,
PR_SET_PDEATHSIG), and the soak's resident memory must be the master's own, not pytest's.
"""

from __future__ import annotations

import json
import math
import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from collections import Counter
from pathlib import Path

import pytest

import babysit as bs
from babysit.search.storage import StudyStore, final_trials

STAGES = [bs.Stage(10, 3), bs.Stage(4, 3)]
N_TRIALS = sum(s.trials for s in STAGES)
KILLS = 5

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
    # max_attempts above the number of kills: a trial running at every kill still gets its last try
    run_study(objective, {"lr": bs.loguniform(1e-4, 1.0)}, stages=[bs.Stage(10, 3), bs.Stage(4, 3)],
              study_dir=sys.argv[1], workers=2, seed=0, resume=sys.argv[3] == "1", max_attempts=7)
""")


def _value(params):
    """What the master's objective returns for a trial's params."""
    return -abs(math.log10(params["lr"]) + 2)


def _gone(pid):
    try:
        return Path(f"/proc/{pid}/status").read_text().split("State:")[1].split()[0] in ("Z", "X")
    except (FileNotFoundError, IndexError):
        return True


def _lines(log):
    return log.read_text().splitlines() if log.exists() else []


def _ends(lines):
    return [int(x.split()[1]) for x in lines if x.startswith("end ")]


def _kill_plan(rng):
    """Returns 5 (ends logged in all runs so far, seconds after that) kill points, in order.

    ends=None: kill once this run's first trial started (before any trial ever ended). Then two points
    in stage 0, one at the stage barrier (stage 0's 10 trials ended: stage 1 being created or starting)
    and one inside stage 1 (ids 10-13, with 2-3 of them left).
    """
    k1, k2 = sorted(rng.sample(range(1, 9), 2))
    return [(None, rng.uniform(0.0, 0.1)), (k1, rng.uniform(0.0, 0.15)), (k2, rng.uniform(0.0, 0.15)),
            (10, rng.uniform(0.0, 0.05)), (rng.choice([11, 12]), rng.uniform(0.0, 0.05))]


def _wait_for(master, log, ends_at, n_before, ends_before, err):
    """Returns once the run reached its kill point: ends_at trials ended in all runs (and one in this run at
    least), or, for ends_at=None, this run's first trial started."""
    deadline = time.time() + 60
    while True:
        assert master.poll() is None, f"the master ended before its kill: {err.read_text()}"
        assert time.time() < deadline, f"the master never reached its kill point {ends_at}"
        lines = _lines(log)
        if ends_at is None:
            if any(x.startswith("start ") for x in lines[n_before:]):
                return
        elif len(_ends(lines)) >= max(ends_at, ends_before + 1):
            return
        time.sleep(0.01)


@pytest.mark.slow
def test_master_sigkilled_at_five_random_points_resumes_to_every_trial_finished_once(tmp_path):
    script, log, d = tmp_path / "master.py", tmp_path / "log.txt", tmp_path / "s"
    script.write_text(_MASTER)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    plan = _kill_plan(random.Random(7))
    kills = []  # per kill: the log lines before it, and the store's completed / running ids after it
    t0 = time.perf_counter()
    for i, (ends_at, delay) in enumerate(plan):
        n_before, ends_before, started = len(_lines(log)), len(_ends(_lines(log))), time.perf_counter()
        with open(tmp_path / f"master{i}.err", "w") as err:
            master = subprocess.Popen([sys.executable, str(script), str(d), str(log), "0" if i == 0 else "1"],
                                      env=env, stderr=err)
            try:
                _wait_for(master, log, ends_at, n_before, ends_before, tmp_path / f"master{i}.err")
                time.sleep(delay)
            finally:
                master.send_signal(signal.SIGKILL)
                master.wait()
        lines = _lines(log)
        if ends_at is None:
            assert not _ends(lines), "the first kill came after a trial ended"
        workers = {int(x.split()[2]) for x in lines[n_before:] if x.startswith("start ")}
        assert workers
        t = time.time()
        while time.time() - t < 10 and not all(_gone(p) for p in workers):
            time.sleep(0.05)
        assert all(_gone(p) for p in workers), "workers outlived their master"  # PR_SET_PDEATHSIG
        assert _lines(log) == lines, "workers went on after their master's kill"
        trials = bs.load_study(d).trials  # the store as the kill left it: nothing writes to it now
        kills.append({"lines": len(lines), "ends": len(_ends(lines)), "seconds": time.perf_counter() - started,
                      "completed": {t.id for t in trials if t.status == "completed"},
                      "running": {t.id for t in trials if t.status == "running"}})
    assert kills[-1]["ends"] > STAGES[0].trials  # the last kill reached into stage 1
    assert all(len(k["running"]) <= 2 for k in kills)  # 2 workers hold 2 trials at most
    assert kills[0]["running"]  # the first kill caught a trial mid-run (it had started, none had ended)

    started = time.perf_counter()
    with open(tmp_path / "final.err", "w") as err:
        subprocess.run([sys.executable, str(script), str(d), str(log), "1"], env=env, stderr=err, check=True,
                       timeout=120)
    seconds, final = time.perf_counter() - t0, time.perf_counter() - started

    lines = _lines(log)
    study = bs.load_study(d)
    assert sorted(t.id for t in study.trials) == list(range(N_TRIALS)) and study.done
    assert all(t.status == "completed" for t in study.trials), [(t.id, t.status, t.reason) for t in study.trials]
    for t in study.trials:  # the stored result is the objective's value for the trial's own params
        assert t.metric == _value(t.params), (t.id, t.params, t.metric)
    told = {r.user_attrs["id"]: r.value for s in range(len(STAGES)) for r in final_trials(StudyStore(d).trials(s))}
    assert told == {t.id: t.metric for t in study.trials}  # and so is the value the samplers read
    for k in kills:
        # no finished result is lost or re-run: what was stored before a kill is never started after it
        started_after = {int(x.split()[1]) for x in lines[k["lines"]:] if x.startswith("start ")}
        assert not started_after & k["completed"], (k, started_after)
        # only a trial that logged its end but was killed before its result was stored may end again
        ended = set(_ends(lines[:k["lines"]]))
        assert ended - k["completed"] <= k["running"]
    # finished exactly once: one "end" per trial, plus one per kill that caught it between its end and its store
    extra = Counter(i for k in kills for i in set(_ends(lines[:k["lines"]])) - k["completed"])
    assert Counter(_ends(lines)) == Counter({i: 1 + extra[i] for i in range(N_TRIALS)})
    # each trial the store held as running at a kill was re-queued once for that kill, and only then
    assert {t.id: t.attempt for t in study.trials} == {i: sum(i in k["running"] for k in kills)
                                                       for i in range(N_TRIALS)}
    print(f"\nsearch kills: seconds={seconds:.1f} plan={[(e, round(s, 3)) for e, s in plan]} "
          f"ends_at_kill={[k['ends'] for k in kills]} running_at_kill={[sorted(k['running']) for k in kills]} "
          f"ended_not_stored={dict(extra)} run_seconds={[round(k['seconds'], 1) for k in kills] + [round(final, 1)]}")


_SOAK = textwrap.dedent("""
    import json, os, sys, threading, time
    import torch
    torch.set_num_threads(1)
    import babysit as bs
    from babysit.search import run_study
    study_dir, log, out, n = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    WIDTH = 8  # each trial appends one line of WIDTH bytes: trials done = the log's size / WIDTH

    def rss(pid="self"):
        try:
            with open(f"/proc/{pid}/status") as f:
                return next(int(x.split()[1]) * 1024 for x in f if x.startswith("VmRSS:"))
        except (OSError, StopIteration):
            return None

    def done():
        try:
            return os.path.getsize(log) // WIDTH
        except OSError:
            return 0

    def workers():
        try:
            with open(f"/proc/self/task/{os.getpid()}/children") as f:
                return [r for r in (rss(int(p)) for p in f.read().split()) if r is not None]
        except OSError:
            return []

    samples, stop, t0 = [], threading.Event(), time.monotonic()

    def sample():
        while not stop.is_set():
            samples.append({"t": time.monotonic() - t0, "done": done(), "rss": rss(), "workers": workers()})
            stop.wait(0.1)

    def objective(ctx):
        with open(log, "a") as f:
            f.write(f"{ctx.id:{WIDTH - 1}d}\\n")
        return -abs(ctx.params["x"] - 0.3) - 0.1 * (ctx.params["act"] == "tanh")

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    run_study(objective, {"x": bs.uniform(0.0, 1.0), "act": bs.choice(["relu", "tanh"])},
              stages=[bs.Stage(n, 1)], study_dir=study_dir, workers=2, sampler="random", seed=0)
    wall = time.monotonic() - t0
    stop.set()
    thread.join()
    samples.append({"t": wall, "done": done(), "rss": rss(), "workers": []})
    with open(out, "w") as f:
        json.dump({"wall": wall, "samples": samples}, f)
""")

SOAK_TRIALS = 1000
# Measured on 2 cores (optuna 5.1, journal store, 4 runs): the master's RSS moves +0.0-0.1 MB between
# trial ~200 and trial 1,000 (it waits for its workers), a worker's grows 1.9-2.7 MB, linearly (its journal
# replay holds every trial, ~2.5 KB each: the store's state, not a leak). The bounds leave room for
# allocator steps and fail on a leak of ~6 KB (master) or ~10 KB (worker) per trial.
MASTER_GROWTH, WORKER_GROWTH = 5 << 20, 8 << 20


@pytest.mark.slow
def test_soak_a_thousand_trivial_trials_with_local_workers_keeps_the_master_flat(tmp_path):
    script, log, out, d = tmp_path / "soak.py", tmp_path / "done.txt", tmp_path / "rss.json", tmp_path / "s"
    script.write_text(_SOAK)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    subprocess.run([sys.executable, str(script), str(d), str(log), str(out), str(SOAK_TRIALS)], env=env,
                   check=True, timeout=300)
    got = json.loads(out.read_text())
    wall, samples = got["wall"], got["samples"]

    study = bs.load_study(d)
    assert sorted(t.id for t in study.trials) == list(range(SOAK_TRIALS)) and study.done
    assert all(t.status == "completed" for t in study.trials)
    assert sorted(int(x) for x in log.read_text().split()) == list(range(SOAK_TRIALS))  # each trial ran once
    assert all(t.metric == -abs(t.params["x"] - 0.3) - 0.1 * (t.params["act"] == "tanh") for t in study.trials)

    # the last samples are taken once the workers are gone, as run_study loads the Study it returns (+4 MB:
    # the whole journal replayed in the master): the master's end is its first sample after the last trial
    running = samples[:-1]
    assert running[-1]["done"] == SOAK_TRIALS and len(running) >= 10, running
    at20 = next(s for s in running if s["done"] >= SOAK_TRIALS // 5)
    end = next(s for s in running if s["done"] == SOAK_TRIALS)
    assert end["done"] - at20["done"] >= SOAK_TRIALS // 2  # the growth is measured over most of the run
    peak = max(s["rss"] for s in samples)
    assert end["rss"] - at20["rss"] < MASTER_GROWTH, (at20, end)  # no per-trial leak in the master
    w20 = next(s for s in running if s["done"] >= at20["done"] and len(s["workers"]) == 2)
    wend = [s for s in running if len(s["workers"]) == 2][-1]
    assert wend["done"] - w20["done"] >= SOAK_TRIALS // 2
    assert max(wend["workers"]) - min(w20["workers"]) < WORKER_GROWTH, (w20, wend)
    mb = 1 / (1 << 20)
    print(f"\nsoak: trials={SOAK_TRIALS} peak_rss={peak * mb:.1f}MB rss_at_20%={at20['rss'] * mb:.1f}MB "
          f"(trial {at20['done']}) rss_at_end={end['rss'] * mb:.1f}MB (+{(end['rss'] - at20['rss']) * mb:.1f}) "
          f"rss_after_return={samples[-1]['rss'] * mb:.1f}MB workers_rss {min(w20['workers']) * mb:.1f}->"
          f"{max(wend['workers']) * mb:.1f}MB trials_per_s={SOAK_TRIALS / wall:.0f} wall={wall:.1f}s")
