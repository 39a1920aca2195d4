"""`babysit ensemble` and `babysit distill`: the gain table from run directories; `babysit train --keep-last`."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

import babysit as bs
from babysit.store import list_checkpoints

BABYSIT = Path(sys.executable).parent / "babysit"
HP = {"optimizer": "adam", "lr": 0.01, "width": 32, "depth": 2, "batch_size": 32}


def babysit(*args):
    return subprocess.run([str(BABYSIT), *map(str, args)], capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli-ens")
    r = babysit("train", "--data", "spiral", "--model", "mlp", "--optimizer", "adam", "--lr", "0.01", "--width", "32",
                "--epochs", "5", "--seed", "1", "--checkpoint-interval", "0", "--keep-last", "4",
                "--run-dir", root / "a", "--threads", "1")
    assert r.returncode == 0, r.stdout + r.stderr
    task = bs.Task(build="mlp", data=bs.data.load("spiral", seed=0), loss="softmax")
    bs.train(task, HP, epochs=5, run_dir=root / "b", seed=2, checkpoint_interval=0, threads=1)
    return root / "a", root / "b"


def test_train_keeps_as_many_checkpoints_as_asked(two_runs):
    assert {2, 3, 4, 5} <= {c.epoch for c in list_checkpoints(two_runs[0])}


def test_ensemble_prints_the_gain_table(two_runs):
    r = babysit("ensemble", "--from-runs", *two_runs)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "gain in accuracy over the best member" in r.stdout and "members  accuracy" in r.stdout
    r = babysit("ensemble", "--from-run", two_runs[0], "--last", "3", "--json")
    assert r.returncode == 0, r.stdout + r.stderr
    rep = json.loads(r.stdout)
    assert len(rep["members"]) == 3 and [s[0] for s in rep["sizes"]] == [1, 2, 3]
    assert set(rep["gain_acc"]) == {"value", "low", "high"}


def test_ensemble_needs_exactly_one_source(two_runs):
    r = babysit("ensemble", "--from-runs", two_runs[0], "--from-run", two_runs[1])
    assert r.returncode == 2 and "exactly one of --from-runs" in r.stderr and "--from-study" in r.stderr


def test_distill_trains_both_students_and_compares(two_runs, tmp_path):
    r = babysit("distill", "--from-runs", *two_runs, "--epochs", "3", "--run-dir", tmp_path / "d", "--json")
    assert r.returncode == 0, r.stdout + r.stderr
    rep = json.loads(r.stdout)
    assert {"student_acc", "labels_acc", "ensemble_acc", "student_kl", "labels_kl"} <= set(rep)
    assert (tmp_path / "d" / "student" / "config.toml").is_file() and (tmp_path / "d" / "labels").is_dir()
    assert rep["transfer"].endswith("mixup inputs (3x the training split)")  # the default


def test_distill_takes_the_transfer_set_from_the_command_line(two_runs, tmp_path):
    r = babysit("distill", "--from-runs", *two_runs, "--epochs", "1", "--run-dir", tmp_path / "d",
                "--transfer", "munge", "--transfer-size", "0.5")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "munge inputs (0.5x the training split)" in r.stdout


@pytest.mark.parametrize("flags, message", [
    (("--transfer", "mixupp"), "invalid choice: 'mixupp'"),
    (("--transfer-size", "-1"), "transfer_size=-1.0: must be a number > 0"),
    (("--transfer", "none", "--transfer-size", "2"), "transfer_size=2.0: applies to a generated transfer set"),
])
def test_distill_refuses_bad_transfer_flags_before_training(two_runs, tmp_path, flags, message):
    r = babysit("distill", "--from-runs", *two_runs, "--epochs", "1", "--run-dir", tmp_path / "d", *flags)
    assert r.returncode == 2 and message in r.stderr, r.stdout + r.stderr
    assert not (tmp_path / "d").exists()


def test_ensemble_of_a_study_top_k(tmp_path):
    cfg = tmp_path / "s.toml"
    cfg.write_text('[task]\ndata = "spiral"\nmodel = "mlp"\n[hp]\noptimizer = "adam"\nwidth = 16\n'
                   '[search]\nlr = {loguniform = [3e-3, 3e-2]}\nstages = [{trials = 3, epochs = 2}]\n')
    r = babysit("search", cfg, "--workers", "0", "--study-dir", tmp_path / "st")
    assert r.returncode == 0, r.stdout + r.stderr
    r = babysit("ensemble", "--from-study", tmp_path / "st", "--top", "2", "--json")
    assert r.returncode == 0, r.stdout + r.stderr
    assert len(json.loads(r.stdout)["members"]) == 2
