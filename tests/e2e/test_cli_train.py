"""`babysit train` driven as a user would: a real process, real files, exit codes and messages."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BABYSIT = Path(sys.executable).parent / "babysit"


def babysit(*args, cwd=None):
    return subprocess.run([str(BABYSIT), *map(str, args)], capture_output=True, text=True, cwd=cwd, timeout=300)


def test_train_from_flags_prints_a_summary(tmp_path):
    r = babysit("train", "--data", "spiral", "--model", "mlp", "--optimizer", "nesterov", "--lr", "0.05",
                "--width", "32", "--epochs", "3", "--run-dir", tmp_path / "r", "--threads", "1", "--test")
    assert r.returncode == 0, r.stderr
    assert "completed" in r.stdout and "test accuracy" in r.stdout
    assert (tmp_path / "r" / "config.toml").is_file()
    assert "\x1b[" not in r.stdout or "epoch" not in r.stdout  # no progress bar when not a TTY


def test_train_from_config_with_overrides_and_json(tmp_path):
    r = babysit("train", ROOT / "examples" / "spiral.toml", "--epochs", "2", "--set", "width=16",
                "--run-dir", tmp_path / "r", "--json", "--test")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["status"] == "completed" and len(out["history"]) == 2 and 0 <= out["test_acc"] <= 1
    cfg = (tmp_path / "r" / "config.toml").read_text()
    assert 'loss = "svm"' in cfg and "width = 16" in cfg and "momentum_start = 0.5" in cfg


def test_custom_model_from_package_module_function(tmp_path):
    r = babysit("train", ROOT / "examples" / "custom_model.toml", "--epochs", "1", "--set", "width=16",
                "--run-dir", tmp_path / "r", "--json")
    assert r.returncode == 0, r.stderr
    assert 'model = "my_models:residual_mlp"' in (tmp_path / "r" / "config.toml").read_text()


@pytest.mark.parametrize("args, message", [
    (["--optimizer", "adamw"], "valid: adagrad, adam, lbfgs, momentum, nesterov, rmsprop, sgd"),
    (["--lr", "-1"], "hp['lr']=-1"),
    (["--reg", "-0.5"], "hp['reg']=-0.5"),
    (["--batch-size", "0"], "hp['batch_size']=0"),
    (["--epochs", "0"], "train.epochs=0"),
    (["--data", "cifar"], "valid: digits, mnist1d, spiral"),
    (["--model", "resnet"], "valid: cnn1d, cnn1d_paper, mlp"),
    (["--schedule", "cosine"], "constant"),
    (["--set", "width"], "key=value"),
])
def test_bad_input_exits_2_with_a_message(tmp_path, args, message):
    r = babysit("train", "--data", "spiral", "--run-dir", tmp_path / "r", *args)
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert message in " ".join(r.stderr.split()), r.stderr
    assert "Traceback" not in r.stderr
    assert not (tmp_path / "r" / "checkpoints").exists()


def test_missing_and_malformed_config(tmp_path):
    r = babysit("train", tmp_path / "nope.toml")
    assert r.returncode == 2 and "does not exist" in r.stderr
    bad = tmp_path / "bad.toml"
    bad.write_text("[hp\nlr = 1")
    r = babysit("train", bad)
    assert r.returncode == 2 and "not valid TOML" in r.stderr
    bad.write_text("[trian]\nepochs = 1\n")
    r = babysit("train", bad)
    assert r.returncode == 2 and "unknown section" in r.stderr


def test_existing_run_dir_needs_resume_or_force(tmp_path):
    base = ["train", "--data", "spiral", "--width", "8", "--epochs", "1", "--run-dir", tmp_path / "r"]
    assert babysit(*base).returncode == 0
    r = babysit(*base)
    assert r.returncode == 2 and "--resume" in r.stderr and "--force" in r.stderr
    r = babysit(*base[:-3], "2", "--run-dir", tmp_path / "r", "--resume", "--json")
    assert r.returncode == 0 and len(json.loads(r.stdout)["history"]) == 2
    assert babysit(*base, "--force").returncode == 0


def test_divergence_exits_1(tmp_path):
    r = babysit("train", "--data", "spiral", "--lr", "1e12", "--epochs", "2", "--run-dir", tmp_path / "r", "--json")
    assert r.returncode == 1
    assert json.loads(r.stdout)["status"] == "diverged"
