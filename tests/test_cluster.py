"""Search on a cluster: `babysit worker` against a real PostgreSQL store, the SLURM script and the
Kubernetes manifest's worker commands really run, `babysit study --storage URL --kill`.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

import babysit as bs
from babysit.search import run_study
from babysit.search.cluster import join
from babysit.search.storage import StudyStore
from pg import pg_server, pg_url  # noqa: F401 (fixtures: a real PostgreSQL server)

ROOT = Path(__file__).resolve().parents[1]
CLUSTER = ROOT / "examples" / "cluster"
BIN = Path(sys.executable).parent


def _env(url: str) -> dict[str, str]:
    return {**os.environ, "BABYSIT_STORAGE": url, "BABYSIT_STUDY": "babysit",
            "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}",
            "PYTHONPATH": os.pathsep.join([str(ROOT / "examples"), *sys.path])}


def slurm_command() -> str:
    """Returns the worker command line of the SLURM script (srun dropped: no scheduler here)."""
    line = next(x for x in (CLUSTER / "slurm.sh").read_text().splitlines() if "babysit worker" in x
                and not x.startswith("#"))
    return line.removeprefix("srun ").strip()


def k8s_command(env: dict[str, str]) -> list[str]:
    """Returns the worker command of the Kubernetes Job, $(VAR) expanded as Kubernetes does."""
    line = next(x for x in (CLUSTER / "job.yaml").read_text().splitlines() if x.strip().startswith("command:"))
    cmd = json.loads(line.split("command:", 1)[1])
    return [re.sub(r"\$\((\w+)\)", lambda m: env[m.group(1)], c) for c in cmd]


def test_slurm_and_kubernetes_workers_run_a_study_on_postgresql(tmp_path, pg_url):
    env = _env(pg_url)
    # the workers are queued first, as a scheduler may start them before the master creates the study
    workers = [subprocess.Popen(["bash", "-euo", "pipefail", "-c", slurm_command()], env=env, cwd=tmp_path,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True),
               subprocess.Popen(k8s_command(env), env=env, cwd=tmp_path, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True)]
    time.sleep(1.0)
    master = subprocess.run([str(BIN / "babysit"), "search", str(CLUSTER / "search.toml"), "--storage", pg_url,
                             "--workers", "0", "--study-dir", str(tmp_path / "s"), "--json"],
                            env=env, cwd=tmp_path, capture_output=True, text=True, timeout=240)
    assert master.returncode == 0, master.stderr[-2000:]
    outs = [w.communicate(timeout=120)[0] for w in workers]
    assert [w.returncode for w in workers] == [0, 0], outs
    ran = [int(re.search(r"this worker ran (\d+) trials", o).group(1)) for o in outs]
    study = bs.load_study(tmp_path / "s", storage=pg_url)
    assert study.done and sorted(t.id for t in study.trials) == list(range(8))
    assert all(t.status in ("completed", "early_stopped", "pruned") for t in study.trials), [t.status for t in study.trials]
    store = StudyStore(pg_url)
    attempts = store.trials(0) + store.trials(1)
    assert len(attempts) == 8                                   # no trial run twice
    pids = {t.user_attrs["worker"]["pid"] for t in attempts}
    assert sum(ran) >= 1 and len(pids) >= 2, (ran, pids)         # the scheduler's workers did take trials
    assert all((Path(t.user_attrs["run_dir"]) / "config.toml").is_file() for t in attempts)


def test_worker_refuses_a_study_whose_task_it_cannot_rebuild(tmp_path, pg_url):
    run_study(lambda ctx: 0.5, {"lr": bs.loguniform(1e-4, 1.0)}, stages=[bs.Stage(1, 1)], study_dir=tmp_path / "s",
              storage=pg_url, workers=0)
    with pytest.raises(bs.ConfigError, match="records no task"):
        join(pg_url, "babysit")
    t = time.monotonic()
    with pytest.raises(bs.StoreError, match="no study 'nope'"):
        join(pg_url, "nope", wait=0.5, poll=0.1)
    assert time.monotonic() - t >= 0.5                          # it waited for a master that never came


def test_kill_from_anywhere_by_storage_url(tmp_path, pg_url):
    epochs_run: dict[int, int] = {}

    def objective(ctx):
        for e in range(1, 5):
            if ctx.id == 1 and e == 2:  # another machine: only the URL and the study's name
                out = subprocess.run([str(BIN / "babysit"), "study", "--storage", pg_url, "--study", "cl",
                                      "--kill", "1"], env=_env(pg_url), capture_output=True, text=True, timeout=60)
                assert out.returncode == 0, out.stderr
            epochs_run[ctx.id] = e
            if ctx.check(e):
                break
        return 0.5

    study = run_study(objective, {"lr": bs.loguniform(1e-4, 1.0)}, stages=[bs.Stage(3, 4)],
                      study_dir=tmp_path / "s", storage=pg_url, name="cl", workers=0)
    by_id = {t.id: t for t in study.trials}
    assert epochs_run == {0: 4, 1: 2, 2: 4}
    assert by_id[1].status == "pruned" and by_id[1].reason == "killed from the study"
    out = subprocess.run([str(BIN / "babysit"), "study", "--storage", pg_url, "--study", "cl", "--json"],
                         env=_env(pg_url), capture_output=True, text=True, timeout=60)
    listed = {t["id"]: t["status"] for t in json.loads(out.stdout)["trials"]}
    assert out.returncode == 0 and listed == {0: "completed", 1: "pruned", 2: "completed"}


def test_launcher_is_checked(tmp_path):
    with pytest.raises(bs.ConfigError, match="launcher='nowhere'"):
        run_study(lambda ctx: 0.5, {"lr": bs.loguniform(1e-4, 1.0)}, stages=[bs.Stage(1, 1)],
                  study_dir=tmp_path / "s", workers=0, launcher="nowhere")
