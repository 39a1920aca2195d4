"""`babysit recipe CONFIG` (issue 14): the summary table and recipe.html on a small budget; a sick model stops
at preflight with the advice and exit code 1 before any training; bad input exits 2 before anything runs."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

BABYSIT = Path(sys.executable).parent / "babysit"
SPACE = """
[search]
lr = {loguniform = [1e-3, 0.3]}
reg = {loguniform = [1e-6, 1e-2]}
"""


def babysit(*args, cwd=None):
    return subprocess.run([str(BABYSIT), *map(str, args)], capture_output=True, text=True, timeout=400, cwd=cwd)


def write(tmp_path: Path, body: str) -> Path:
    cfg = tmp_path / "recipe.toml"
    cfg.write_text(body)
    return cfg


def test_recipe_prints_the_summary_and_writes_recipe_html(tmp_path):
    cfg = write(tmp_path, '[task]\ndata = "digits"\nmodel = "mlp"\n[hp]\noptimizer = "nesterov"\nwidth = 64\n'
                + SPACE + "[recipe]\nepochs = 40\nfinal_models = 2\n")
    r = babysit("recipe", cfg, "--dir", tmp_path / "out", "--json")
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    result = json.loads(r.stdout)
    assert result["status"] == "completed" and [s["name"] for s in result["stages"]] == ["coarse", "fine", "final"]
    assert result["chosen"] in {c["name"] for c in result["candidates"]}
    assert (tmp_path / "out" / "recipe.html").is_file() and (tmp_path / "out" / "study" / "study.html").is_file()
    again = babysit("recipe", cfg, "--dir", tmp_path / "out")  # a finished recipe is not overwritten
    assert again.returncode == 2 and "--resume" in again.stderr


SICK = '''
import torch
import babysit as bs

def build(hp, input_shape, num_classes):
    model = bs.models.mlp(input_shape, num_classes, hidden=(32,))
    with torch.no_grad():
        last = [m for m in model if isinstance(m, torch.nn.Linear)][-1]
        last.weight.mul_(100 / 0.01)  # the notes' bad init: scores far from zero, loss far above ln(10)
    return model
'''


def test_a_sick_model_stops_at_preflight_with_the_advice(tmp_path):
    (tmp_path / "sick.py").write_text(SICK)
    cfg = write(tmp_path, '[task]\ndata = "digits"\nmodel = "sick:build"\n[hp]\noptimizer = "adam"\n' + SPACE
                + "[recipe]\nepochs = 60\n")
    r = babysit("recipe", cfg, "--dir", tmp_path / "out", cwd=tmp_path)
    out = r.stdout + r.stderr
    assert r.returncode == 1, out[-3000:]
    assert "recipe stopped at preflight" in out and "chance_loss" in out
    assert "init" in out.split("recipe stopped at preflight")[1]  # the advice names the initialisation
    assert not (tmp_path / "out" / "study").exists()  # nothing was trained
    page = (tmp_path / "out" / "recipe.html").read_text()
    assert "stopped at preflight" in page and "chance_loss" in page


@pytest.mark.parametrize("body, match", [
    ('[task]\ndata = "spiral"\n' + SPACE + "[recipe]\nminuts = 3\n", "did you mean 'minutes'"),
    ('[task]\ndata = "spiral"\n' + SPACE, "give the recipe a budget"),
    ('[task]\ndata = "spiral"\n' + SPACE + "stages = [{trials = 3, epochs = 1}]\n[recipe]\nepochs = 100\n",
     "plans its stages"),
    ('[task]\ndata = "spiral"\n[recipe]\nepochs = 100\n', "no \\[search\\] table"),
    ('[task]\ndata = "spiral"\n' + SPACE + "[recipe]\nepochs = 5\n", "too small"),
])
def test_bad_recipe_input_exits_2_before_anything_runs(tmp_path, body, match):
    import re

    r = babysit("recipe", write(tmp_path, body), "--dir", tmp_path / "out")
    assert r.returncode == 2 and re.search(match, r.stderr), r.stderr
    assert not (tmp_path / "out").exists()
