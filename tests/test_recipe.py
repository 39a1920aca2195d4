"""The recipe end to end (issue 14): every stage ran, the test split was read once, and the summary's
numbers are the ones in the stores; the plan divides a budget; bad input is refused before anything runs."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest
import torch
from torch.utils.data import Dataset

import babysit as bs
from babysit.errors import ConfigError, StoreError
from babysit.recipe import Plan, plan_stages
from babysit.store import RunStore, read_config
from babysit.store.history import read_history

SPACE = {"lr": bs.loguniform(1e-3, 0.3), "reg": bs.loguniform(1e-6, 1e-2), "width": bs.intuniform(16, 128, log=True)}
FIXED = {"optimizer": "nesterov", "batch_size": 64}


class CountingTest(Dataset):
    """A test split that counts its passes (a read of example 0 outside the data module's integrity checks:
    its content hash and validation), in a file, so that forked workers count too."""

    def __init__(self, x, y, log: Path):
        self.x, self.y, self.log = x, y, log

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        if i == 0:
            frame, checks = sys._getframe(1), False
            while frame is not None:
                checks |= frame.f_code.co_name in ("digest", "validate_splits", "_example", "_check_example")
                frame = frame.f_back
            if not checks:
                with open(self.log, "a") as f:
                    f.write(f"{os.getpid()}\n")
        return self.x[i], self.y[i]


@pytest.fixture(scope="module")
def done(tmp_path_factory):
    root = tmp_path_factory.mktemp("recipe")
    s = bs.data.load("digits")
    xt, yt = s.test.tensors
    log = root / "test-reads.txt"
    splits = bs.Splits(s.train, s.val, CountingTest(xt, yt, log), s.num_classes, s.input_shape, None, s.image_shape)
    task = bs.Task(build="mlp", data=splits)
    lines: list[str] = []
    r = bs.recipe(task, SPACE, budget=bs.Budget(epochs=60), dir=root / "r", fixed=FIXED, workers=2, final_models=3,
                  progress=lines.append, progress_every=0.0)
    return r, log, lines, task


def test_every_stage_ran_within_the_budget(done):
    r, _, lines, _ = done
    assert r.ok and r.status == "completed"
    coarse, fine, final = r.plan.stages
    assert (coarse.epochs, final.trials, final.retrain_top) == (1, 3, 3) and coarse.epochs < fine.epochs < final.epochs
    assert sum(s.trials * s.epochs for s in r.plan.stages) <= 60
    study = bs.load_study(r.study_dir)
    for s, st in enumerate(r.plan.stages):
        ts = [t for t in study.trials if t.stage == s]
        assert len(ts) == st.trials and all(t.status not in ("running", "queued") for t in ts)
        assert r.stages[s].finished + r.stages[s].stopped == st.trials
        assert {t.epochs for t in ts if t.status == "completed"} == {st.epochs}
    fine = sorted((t for t in study.trials if t.stage == 1 and t.metric is not None), key=lambda t: (-t.metric, t.id))
    final_trials = sorted((t for t in study.trials if t.stage == 2), key=lambda t: t.id)
    assert [t.params for t in final_trials] == [t.params for t in fine[:3]]  # the fine stage's top, trained again
    assert any(line.startswith("preflight") for line in lines) and any("stage 3/3" in line for line in lines)


def test_the_test_split_is_read_once_at_the_end(done):
    _, log, _, _ = done
    reads = log.read_text().split()
    assert reads == [str(os.getpid())]  # one pass, by the master, none by a worker


def test_summary_numbers_are_the_ones_in_the_stores(done):
    r, _, _, task = done
    study = bs.load_study(r.study_dir)
    for s, row in enumerate(r.stages):
        scored = [t.metric for t in study.trials if t.stage == s and t.metric is not None]
        assert row.best_val == pytest.approx(max(scored))
    by = {c.name: c for c in r.candidates}
    best_final = max((t for t in study.trials if t.stage == 2), key=lambda t: t.metric)
    assert by["single"].val_acc == pytest.approx(best_final.metric)
    assert by["single"].runs == (str(best_final.run_dir),)
    x, y = bs.data.tensors(task.splits.test)
    model = bs.load(best_final.run_dir, task=task)
    assert by["single"].test_acc == pytest.approx(float((model(x).argmax(-1) == y).float().mean()))
    stored = RunStore(best_final.run_dir).history()
    assert max(h.val_acc for h in stored) == pytest.approx(by["single"].val_acc)
    assert set(by) >= {"single", "averaged", "ensemble", "ensemble (averaged)"}
    assert by[r.chosen].val_acc == pytest.approx(max(c.val_acc for c in by.values()), abs=1e-6)
    record = json.loads((r.dir / "recipe.json").read_text())
    assert record["chosen"] == r.chosen and record["candidates"][0]["test_acc"] == by["single"].test_acc
    assert Plan.from_dict(record["plan"]) == r.plan
    assert r.chance == pytest.approx(0.1) and by[r.chosen].test_acc > 0.85


def test_final_runs_decay_average_and_are_watched(done):
    r, _, _, _ = done
    for run in r.findings:
        cfg = read_config(run)
        assert cfg["hp"]["schedule"] == "step" and 0.9 <= cfg["hp"]["ema"] < 1.0
        assert read_history(run).has_telemetry  # update ratios and histograms, for the diagnoses
        assert Path(r.reports[run]).is_file()


def test_recipe_html_opens_with_the_summary_and_links_every_run(done):
    r, _, _, _ = done
    page = (r.dir / "recipe.html").read_text()
    assert page.index("summary") < page.index("diagnoses of the final runs") < page.index("what to try next")
    for name in ("single", "averaged", "ensemble", "chance level", "read once"):
        assert name in page
    assert (r.dir / "study" / "study.html").is_file() and 'href="study/study.html"' in page
    for run in r.findings:
        assert f'href="study/trials/{Path(run).name}/report.html"' in page


def test_a_finished_recipe_is_not_overwritten(done):
    r, _, _, task = done
    with pytest.raises(StoreError, match="resume"):
        bs.recipe(task, SPACE, budget=bs.Budget(epochs=60), dir=r.dir, fixed=FIXED)


def test_plan_divides_the_budget_coarse_to_fine():
    stages = plan_stages(1000, 5, final=lambda e: {"schedule": "step", "step_every": e // 3})
    coarse, fine, final = stages
    spent = [s.trials * s.epochs for s in stages]
    assert sum(spent) <= 1000 and sum(spent) > 900
    assert coarse.epochs == 1 and coarse.trials > fine.trials > final.trials == 5
    assert spent[2] > spent[1] > spent[0]
    assert final.fixed == {"schedule": "step", "step_every": final.epochs // 3} and final.monitor


@pytest.mark.parametrize("budget, match", [
    (bs.Budget(epochs=10), "too small .* at least"),
    ({"minutes": 1, "epochs": 3}, "exactly one"),
    ({"hours": 1}, "Budget"),
    (5, "Budget"),
])
def test_bad_budgets_are_refused_before_anything_is_written(tmp_path, budget, match):
    task = bs.Task(build="mlp", data="spiral")
    with pytest.raises(ConfigError, match=match):
        bs.recipe(task, SPACE, budget=budget, dir=tmp_path / "r")
    assert not (tmp_path / "r").exists()


def test_negative_minutes_are_refused():
    with pytest.raises(ConfigError, match="positive"):
        bs.Budget(minutes=-1)


def test_retrain_and_distill_are_reported_and_hostile_names_are_escaped(tmp_path):
    """--retrain: the chosen configuration trained again on train+val for the epochs validation chose;
    --distill: a student of the ensemble. The recipe's directory name holds markup: shown as text."""
    task = bs.Task(build="mlp", data="digits")
    root = tmp_path / "r<img src=x onerror=alert(1)>"
    r = bs.recipe(task, SPACE, budget=bs.Budget(epochs=40), dir=root, fixed=FIXED, workers=2, final_models=2,
                  distill=True, retrain=True)
    by = {c.name: c for c in r.candidates}
    assert {"distilled", "retrained"} <= set(by) and by["retrained"].val_acc is None  # it trained on val
    assert by["distilled"].val_acc is not None and by["distilled"].test_acc > 0.8
    cfg = read_config(root / "retrained")
    best = next(c for c in r.candidates if c.name == "single").runs[0]
    chosen_epoch = max(RunStore(best).history(), key=lambda h: (h.val_acc, -h.epoch)).epoch
    assert cfg["train"]["epochs"] == chosen_epoch
    assert cfg["fingerprint"]["data_train"].endswith(f"/n={len(task.splits.train) + len(task.splits.val)}")
    assert r.chosen == "retrained" or r.chosen in ("ensemble", "ensemble (averaged)", "distilled")
    page = (r.dir / "recipe.html").read_text()
    assert "<img" not in page and "&lt;img src=x onerror=alert(1)&gt;" in page
    assert "retrained on train+val" in page


def test_integer_sizes_keep_their_range_as_limits_and_rates_still_extend():
    from babysit.recipe.core import _sizes_bounded

    space = _sizes_bounded({"width": bs.intuniform(64, 1024, log=True), "lr": bs.loguniform(1e-4, 1e-1),
                            "depth": bs.intuniform(1, 3, limits=[1, 8]), "lr_auto": "auto"})
    assert space["width"].limits == (64, 1024) and space["depth"].limits == (1, 8)  # the user's own limits win
    assert space["lr"].limits == (None, None) and space["lr_auto"] == "auto"


def test_repeating_a_recorded_plan_gives_the_same_numbers(done, tmp_path):
    """repeat=recipe.json runs the recorded stages again: same config and seed, same numbers (DESIGN 5.9)."""
    r = done[0]
    again = bs.recipe(bs.Task(build="mlp", data="digits"), SPACE, repeat=r.dir / "recipe.json", dir=tmp_path / "again",
                      fixed=FIXED, workers=2)
    assert again.plan.stages == r.plan.stages
    assert [(c.name, c.val_acc, c.test_acc) for c in again.candidates] == \
        [(c.name, c.val_acc, c.test_acc) for c in r.candidates]


def test_bad_repeats_and_unread_keys_are_refused_and_leave_nothing_behind(done, tmp_path):
    task = bs.Task(build="mlp", data="spiral")
    with pytest.raises(ConfigError, match="one of the two"):
        bs.recipe(task, SPACE, budget=bs.Budget(epochs=60), repeat=done[0].dir, dir=tmp_path / "a")
    (tmp_path / "junk.json").write_text("{}")
    with pytest.raises(ConfigError, match="not a recipe.json"):
        bs.recipe(task, SPACE, repeat=tmp_path / "junk.json", dir=tmp_path / "b")
    with pytest.raises(ConfigError, match="did you mean 'lr'"):
        bs.recipe(task, {"lrr": bs.loguniform(1e-3, 0.3)}, budget=bs.Budget(epochs=60), dir=tmp_path / "c")
    assert not any((tmp_path / d).exists() for d in "abc")
