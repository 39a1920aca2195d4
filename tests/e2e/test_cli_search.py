"""`babysit search`, `babysit study` and `babysit lr-find` as a user runs them: real processes, real files."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

BABYSIT = Path(sys.executable).parent / "babysit"
CONFIG = """
[task]
data = "spiral"
model = "mlp"

[hp]
optimizer = "adam"
width = 16

[search]
lr = {loguniform = [1e-4, 1.0]}
reg = {loguniform = [1e-6, 1e-2]}
stages = [{trials = 4, epochs = 2}, {trials = 2, epochs = 3, continue_top = 1}]
sampler = "qmc"
"""


def babysit(*args, cwd=None):
    return subprocess.run([str(BABYSIT), *map(str, args)], capture_output=True, text=True, cwd=cwd, timeout=300)


def test_search_then_study_then_kill_refused(tmp_path):
    cfg = tmp_path / "s.toml"
    cfg.write_text(CONFIG)
    r = babysit("search", cfg, "--workers", "2", "--study-dir", tmp_path / "study")
    assert r.returncode == 0, r.stderr
    assert "completed" in r.stdout and "trial" in r.stdout
    r = babysit("study", tmp_path / "study", "--json")
    assert r.returncode == 0, r.stderr
    got = json.loads(r.stdout)
    assert sorted(t["id"] for t in got["trials"]) == list(range(6))
    assert got["trials"][4]["continues"] is not None
    r = babysit("search", cfg, "--study-dir", tmp_path / "study")        # exists: refuse, exit 2
    assert r.returncode == 2 and "resume" in r.stderr
    r = babysit("study", tmp_path / "study", "--kill", "3")               # finished: nothing to kill
    assert r.returncode == 2 and "no running or queued trial" in r.stderr


def test_bad_search_table_exits_2_before_any_trial(tmp_path):
    cfg = tmp_path / "bad.toml"
    cfg.write_text(CONFIG.replace("loguniform = [1e-4, 1.0]", "loguniform = [0.0, 1.0]"))
    r = babysit("search", cfg, "--study-dir", tmp_path / "study")
    assert r.returncode == 2 and "space['lr']" in r.stderr and "lo > 0" in r.stderr
    assert not (tmp_path / "study").exists()


def test_lr_find_prints_a_value_and_a_range(tmp_path):
    cfg = tmp_path / "s.toml"
    cfg.write_text(CONFIG)
    r = babysit("lr-find", cfg, "--json", "--steps", "100", "--plot", tmp_path / "lr.png")
    assert r.returncode == 0, r.stderr
    got = json.loads(r.stdout)
    assert got["range"][0] < got["suggestion"] < got["range"][1]
    assert (tmp_path / "lr.png").stat().st_size > 1000


def test_one_worker_gets_both_cores_and_does_not_hang(tmp_path):
    # the master used to start OpenMP's pool (2 threads) before forking; the worker then hung in its first matmul
    cfg = tmp_path / "s.toml"
    cfg.write_text(CONFIG.replace("stages = [{trials = 4, epochs = 2}, {trials = 2, epochs = 3, continue_top = 1}]",
                                  "stages = [{trials = 2, epochs = 1}]"))
    r = subprocess.run([str(BABYSIT), "search", str(cfg), "--workers", "1", "--study-dir", str(tmp_path / "study")],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "cannot use again" not in r.stderr
