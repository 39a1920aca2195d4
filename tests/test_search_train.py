"""The trial adapter: each trial a real `train` call (spiral), continued trials, bounded disk, lr_find on MNIST-1D."""

from __future__ import annotations

import math
import tempfile

import pytest

import babysit as bs
from babysit.search.storage import StudyStore, TrialState


def test_search_trains_real_runs_and_continues_the_top_ones(tmp_path, spiral_task):
    space = {"lr": bs.loguniform(1e-4, 3.0), "reg": bs.loguniform(1e-6, 1e-2)}
    study = bs.search(spiral_task, space, stages=[bs.Stage(6, 2), bs.Stage(3, 4, continue_top=2)],
                      study_dir=tmp_path / "s", workers=2, fixed={"optimizer": "adam", "width": 32},
                      keep_checkpoints=2)
    trials = {t.id: t for t in study.trials}
    assert sorted(trials) == list(range(9)) and study.done
    assert study.best.metric > 0.8                        # spiral really learned
    top0 = sorted((t for t in trials.values() if t.stage == 0), key=lambda t: -t.metric)[:2]
    for t, parent in zip((trials[6], trials[7]), top0):   # successive halving: the coarse run is not thrown away
        assert t.continues == parent.id and t.params == parent.params and t.epochs == 4
        hist = bs.store.RunStore(t.run_dir).history()
        assert [r.epoch for r in hist] == [1, 2, 3, 4]
        assert hist[1].val_acc == pytest.approx(bs.store.RunStore(parent.run_dir).history()[1].val_acc)
    # disk: the best checkpoint of the top 2 trials only, its name carrying the score
    kept = {t.id: sorted(p.name for p in (t.run_dir / "checkpoints").glob("*.pt")) for t in trials.values()}
    top = [t.id for t in study.top(2)]
    assert all(len(kept[i]) == 1 for i in top) and all(not v for i, v in kept.items() if i not in top)
    best = study.best
    assert kept[best.id][0].endswith(f"val_acc-{best.metric:.4f}.pt") or f"{best.metric:.4f}" in kept[best.id][0]
    model = bs.load(best.run_dir)
    assert bs.evaluate(model, spiral_task.splits.val, task=spiral_task).accuracy == pytest.approx(best.metric)


def test_hopeless_real_trainings_are_stopped_at_once(tmp_path, spiral_task):
    study = bs.search(spiral_task, {"lr": bs.loguniform(1e-9, 1e-8)}, stages=[bs.Stage(2, 6)],
                      study_dir=tmp_path / "low", workers=0, fixed={"optimizer": "sgd", "width": 16})
    assert all(t.status == "pruned" and t.epochs == 1 and "not off chance" in t.reason for t in study.trials)
    study = bs.search(spiral_task, {"lr": bs.loguniform(1e3, 1e5)}, stages=[bs.Stage(2, 6)],
                      study_dir=tmp_path / "high", workers=0, fixed={"optimizer": "sgd", "width": 16})
    assert all(t.status in ("diverged", "pruned") and (t.epochs or 0) <= 1 for t in study.trials)
    raw = StudyStore(tmp_path / "high").trials(0)
    assert all(t.state == TrialState.COMPLETE and t.value is not None for t in raw)  # told, for samplers to learn


def test_keys_nothing_reads_are_refused_before_any_trial(tmp_path, spiral_task):
    with pytest.raises(bs.ConfigError, match=r"'learning_rate'.*did you mean 'lr'"):
        bs.search(spiral_task, {"learning_rate": bs.loguniform(1e-4, 1.0)}, stages=[bs.Stage(2, 1)],
                  study_dir=tmp_path / "a", workers=0)
    with pytest.raises(bs.ConfigError, match=r"space\['momentum'\]: nothing reads this key"):
        bs.search(spiral_task, {"momentum": bs.uniform(0.5, 0.99)}, stages=[bs.Stage(2, 1)],
                  study_dir=tmp_path / "b", workers=0, fixed={"optimizer": "adam"})
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
    study = bs.search(spiral_task, {"optimizer": bs.choice(["sgd", "momentum"]),
                                    "momentum": bs.uniform(0.5, 0.99, when={"optimizer": ["momentum"]})},
                      stages=[bs.Stage(4, 1)], study_dir=tmp_path / "c", workers=0, fixed={"width": 8})
    assert all(("momentum" in t.params) == (t.params["optimizer"] == "momentum") for t in study.trials)


def test_lr_find_suggests_a_rate_where_a_short_training_learns_on_mnist1d():
    task = bs.Task(build="mlp", data="mnist1d")
    found = bs.lr_find(task, {"optimizer": "adam"})
    lo, hi = found.range
    assert lo < found.suggestion < hi and hi / lo >= 10
    assert len(found.lrs) == len(found.losses) == len(found.ratios) >= 100
    assert found.ratios[-1] > found.ratios[0]                 # bigger rates, bigger updates
    accs = {}
    with tempfile.TemporaryDirectory() as d:
        for e in range(-9, 1):
            lr = 10 ** (e / 2)                                   # half-decades from 3e-5 to 1
            run = bs.train(task, {"optimizer": "adam", "lr": lr}, epochs=3, run_dir=f"{d}/{e}",
                           checkpoint_interval=100)
            accs[lr] = run.best_val_acc or 0.0
        sugg = bs.train(task, {"optimizer": "adam", "lr": found.suggestion}, epochs=3, run_dir=f"{d}/s",
                        checkpoint_interval=100).best_val_acc
    chance, best = 0.1, max(accs.values())
    learns = [lr for lr, a in accs.items() if a - chance >= 0.5 * (best - chance)]
    assert min(learns) <= found.suggestion <= max(learns), (found.suggestion, accs)
    assert sugg - chance >= 0.5 * (best - chance)               # and training at it really learns
    assert lo <= max(learns) and hi >= min(learns)              # the range overlaps the rates that learn


def test_auto_lr_range_comes_from_lr_find(tmp_path, spiral_task):
    fixed = {"optimizer": "adam", "width": 16}
    found = bs.lr_find(spiral_task, fixed)
    study = bs.search(spiral_task, {"lr": "auto"}, stages=[bs.Stage(2, 1)], study_dir=tmp_path / "s",
                      workers=0, fixed=fixed)
    lo, hi = study.ranges(0)["lr"]["loguniform"]
    assert (lo, hi) == pytest.approx(found.range)
    assert all(lo <= t.params["lr"] <= hi for t in study.trials)


def test_train_and_search_stay_functions_after_their_modules_are_imported():
    import importlib
    import subprocess
    import sys

    importlib.import_module("babysit.train")
    importlib.import_module("babysit.search.space")
    assert callable(bs.train) and bs.train.__name__ == "train" and bs.search.__name__ == "search"
    code = "import babysit.search.space, babysit.train, babysit as bs; print(bs.train.__name__, bs.search.__name__)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["train", "search"]


def test_a_loss_metric_is_minimised(tmp_path, spiral):
    task = bs.Task(build="mlp", data=spiral, metric="val_loss")
    study = bs.search(task, {"lr": bs.loguniform(1e-3, 1e-1)}, stages=[bs.Stage(3, 2)], study_dir=tmp_path / "s",
                      workers=0, fixed={"optimizer": "adam", "width": 16})
    losses = {t.id: min(r.val_loss for r in bs.store.RunStore(t.run_dir).history()) for t in study.trials}
    assert study.best.id == min(losses, key=losses.get)
    assert study.best.metric == pytest.approx(-losses[study.best.id])


def test_a_stage_retrains_the_top_configurations_with_its_own_hyperparameters(tmp_path, spiral_task):
    """Stage(retrain_top=n, fixed=..., monitor=True): the recipe's final stage, trained from a new init."""
    space = {"lr": bs.loguniform(3e-3, 0.05)}
    final = bs.Stage(2, 4, retrain_top=2, fixed={"schedule": "step", "step_every": 2, "ema": 0.9}, monitor=True)
    study = bs.search(spiral_task, space, stages=[bs.Stage(5, 1)], study_dir=tmp_path / "s", workers=0,
                      fixed={"optimizer": "adam", "width": 16})
    with pytest.raises(bs.StoreError, match="different stages"):  # a changed stage is refused on resume
        bs.search(spiral_task, space, stages=[bs.Stage(4, 1), final], study_dir=tmp_path / "s", workers=0,
                  fixed={"optimizer": "adam", "width": 16}, resume=True)
    study = bs.search(spiral_task, space, stages=[bs.Stage(5, 1), final], study_dir=tmp_path / "s", workers=0,
                      fixed={"optimizer": "adam", "width": 16}, resume=True)  # a stage added at the end
    coarse = sorted((t for t in study.trials if t.stage == 0), key=lambda t: (-t.metric, t.id))
    again = [t for t in study.trials if t.stage == 1]
    assert len(coarse) == 5 and [t.params for t in again] == [t.params for t in coarse[:2]]
    for t in again:
        hp = bs.store.read_config(t.run_dir)["hp"]
        assert (hp["schedule"], hp["ema"], t.epochs) == ("step", 0.9, 4)
        assert bs.store.RunStore(t.run_dir).history()[0].val_acc != \
            bs.store.RunStore(coarse[0].run_dir).history()[0].val_acc or t.params != coarse[0].params
        from babysit.store.history import read_history
        assert read_history(t.run_dir).has_telemetry
    assert all(not read_history(t.run_dir).has_telemetry for t in coarse[2:] if t.run_dir.exists())


@pytest.mark.parametrize("stages, match", [
    ([bs.Stage(3, 1, retrain_top=1)], "needs a previous stage"),
    ([bs.Stage(3, 1), bs.Stage(2, 2, retrain_top=3)], "<= the stage's trials"),
    ([bs.Stage(3, 1), bs.Stage(2, 2, fixed={"lr": -1.0})], "lr"),
    ([bs.Stage(3, 1), bs.Stage(2, 2, fixed={"ema": object()})], "plain data"),
    ([bs.Stage(3, 1, monitor="yes")], "true or false"),
])
def test_bad_stage_settings_are_refused(tmp_path, spiral_task, stages, match):
    with pytest.raises(bs.ConfigError, match=match):
        bs.search(spiral_task, {"lr": bs.loguniform(1e-3, 1.0)}, stages=stages, study_dir=tmp_path / "s", workers=0)


def test_a_stage_without_the_new_settings_keeps_its_old_plain_data():
    assert bs.Stage(3, 1).to_dict() == {"trials": 3, "epochs": 1, "keep": None, "continue_top": 0}
