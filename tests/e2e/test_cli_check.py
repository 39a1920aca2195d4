"""`babysit check`: a table with verdicts and advice, exit 0 when all passes and 1 otherwise."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

BABYSIT = Path(sys.executable).parent / "babysit"
HERE = Path(__file__).resolve().parent


def babysit(*args):
    return subprocess.run([str(BABYSIT), *map(str, args)], capture_output=True, text=True, timeout=300,
                          env={"PYTHONPATH": str(HERE.parent), "PATH": "/usr/bin:/bin"})


def test_healthy_config_exits_0_with_a_table():
    r = babysit("check", "--data", "digits", "--model", "mlp", "--width", "64", "--threads", "2")
    assert r.returncode == 0, r.stdout + r.stderr
    for name in ("chance_loss", "reg_raises_loss", "overfit_tiny", "learnable_signal", "batch_independence",
                 "params_get_gradient", "fc1.weight", "preflight PASSED"):
        assert name in r.stdout


def test_broken_backward_exits_1_and_json_names_the_tensor(tmp_path):
    cfg = tmp_path / "broken.toml"
    cfg.write_text('[task]\ndata = "mnist1d"\nmodel = "test_preflight:broken_net"\n')
    r = babysit("check", cfg, "--json")
    assert r.returncode == 1, r.stdout + r.stderr
    rep = json.loads(r.stdout)
    assert rep["ok"] is False and rep["gradients"]["ok"] is False
    assert rep["gradients"]["by_tensor"]["hidden.bias"]["ok"] is False
    r = babysit("check", cfg, "--only", "chance_loss")
    assert r.returncode == 1 and "FAIL" in r.stdout and "hidden" in r.stdout


def test_unknown_check_name_exits_2():
    r = babysit("check", "--data", "spiral", "--only", "nonsense")
    assert r.returncode == 2 and "valid: chance_loss" in r.stderr
