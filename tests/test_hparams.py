"""The key registry: one place for defaults, bounds and hints; typos refused, unused keys warned and recorded."""

from __future__ import annotations

import json
import logging

import pytest
import torch

import babysit as bs
from babysit import hparams
from babysit.errors import ConfigError
from babysit.store import RunStore


def test_defaults_are_filled_in_one_place_for_what_applies():
    hp = hparams.resolve({"optimizer": "adam"}, model="mlp")
    assert hp["lr"] == hparams.DEFAULT_LR["adam"] and hp["beta1"] == 0.9 and hp["eps"] == 1e-8
    assert hp["width"] == 128 and hp["depth"] == 2 and "momentum" not in hp and "step_every" not in hp
    custom = hparams.resolve({"optimizer": "nesterov", "schedule": "step"}, model=None)
    assert custom["momentum"] == 0.9 and custom["step_every"] == 5 and "width" not in custom  # never invented
    # the update rules and the built-in models read their defaults from the registry, not their own copy
    opt = bs.optim.build_optimizer([torch.zeros(1, requires_grad=True)], {"optimizer": "nesterov"})
    assert opt.param_groups[0]["momentum"] == hparams.KEYS["momentum"].default
    assert bs.models.from_hp("mlp", {}, (4,), 3).fc1.out_features == hparams.KEYS["width"].default


@pytest.mark.parametrize("hp, match", [
    ({"width": 2**40}, r"hp\['width'\]=1099511627776: must be an integer >= 1 and <= 65536"),
    ({"lr": 0}, r"hp\['lr'\]=0: must be a number > 0"),
    ({"dropout": 1.0}, r"hp\['dropout'\]=1.0: must be a number in \[0, 1\)"),
    ({"batch_size": 2.5}, r"hp\['batch_size'\]=2.5: must be an integer"),
    ({"optimizer": "adamw"}, r"unknown update rule; valid: adagrad, adam"),
    ({"momentum": True}, r"hp\['momentum'\]=True"),
])
def test_bounds_both_ways_before_any_allocation(hp, match):
    with pytest.raises(ConfigError, match=match):
        hparams.resolve(hp, model="mlp")


@pytest.mark.parametrize("key, guess", [("lrr", "lr"), ("momentun", "momentum"), ("widht", "width"),
                                        ("learning_rate", "lr"), ("weight_decay", "reg"), ("bs", "batch_size"),
                                        ("batchsize", "batch_size"), ("epochs", "--epochs")])
def test_a_typo_is_refused_with_the_suggestion(key, guess):
    with pytest.raises(ConfigError, match=f"did you mean '?{guess}"):
        hparams.unused_keys([key], hparams.applied({"optimizer": "momentum"}, "mlp"))
    assert hparams.unused_keys([key], set(), allow_unknown=True) == [key]


def test_a_key_far_from_every_known_key_is_only_unused():
    assert hparams.unused_keys(["my_note", "temperature"], hparams.applied({}, None)) == ["my_note", "temperature"]


def test_recording_hp_sees_what_a_build_reads():
    hp = hparams.RecordingHP({"a": 1, "b": 2, "c": 3})
    assert hp["a"] == 1 and hp.get("b") == 2 and "z" not in hp
    assert hp.read == {"a", "b", "z"}
    dict(hp)  # copying reads everything
    assert hp.read >= {"a", "b", "c"}


def _net(hp):
    return torch.nn.Sequential(torch.nn.Linear(2, hp["hidden"]), torch.nn.ReLU(), torch.nn.Linear(hp["hidden"], 3))


def test_train_accepts_keys_its_build_reads_and_records_unused_ones(spiral, tmp_path, caplog):
    task = bs.Task(build=_net, data=spiral)
    with caplog.at_level(logging.WARNING):
        run = bs.train(task, {"hidden": 8, "my_note": "try 2", "lr": 0.1}, epochs=1, run_dir=tmp_path / "r")
    assert run.status == "completed"
    assert [r for r in caplog.records if "my_note" in r.getMessage()]  # one warning names it
    assert json.loads(RunStore(run.dir).meta()["unused_keys"]) == ["my_note"]
    cfg = bs.store.read_config(run.dir)["hp"]
    assert "width" not in cfg and cfg["hidden"] == 8  # nothing invented for a user's build


def test_train_refuses_a_typo_before_writing_anything(spiral_task, tmp_path):
    with pytest.raises(ConfigError, match="did you mean 'momentum'"):
        bs.train(spiral_task, {"optimizer": "momentum", "momentun": 0.5}, epochs=1, run_dir=tmp_path / "r")
    assert not (tmp_path / "r").exists()
    run = bs.train(spiral_task, {"optimizer": "momentum", "momentun": 0.5, "width": 8}, epochs=1,
                   run_dir=tmp_path / "r", allow_unknown=True)
    assert run.status == "completed"


def test_declared_hp_keys_count_as_used(spiral, tmp_path):
    task = bs.Task(build="mlp", data=spiral, hp_keys=["temperatur"])  # declared: used, even if odd-looking
    assert bs.train(task, {"temperatur": 2.0, "width": 8}, epochs=1, run_dir=tmp_path / "r").status == "completed"


def test_a_known_key_that_does_not_apply_is_warned_not_refused(spiral_task, tmp_path, caplog):
    with caplog.at_level(logging.WARNING):
        bs.train(spiral_task, {"optimizer": "sgd", "momentum": 0.5, "width": 8}, epochs=1, run_dir=tmp_path / "r")
    assert any("momentum" in r.getMessage() and "momentum, nesterov" in r.getMessage() for r in caplog.records)


def test_config_toml_is_fully_resolved(spiral_task, tmp_path):
    run = bs.train(spiral_task, {"optimizer": "nesterov", "schedule": "step", "width": 8}, epochs=1,
                   run_dir=tmp_path / "r")
    hp = bs.store.read_config(run.dir)["hp"]
    for key in ("lr", "momentum", "reg", "batch_size", "step_every", "step_factor", "depth", "dropout", "activation",
                "init"):
        assert key in hp, key
    assert "beta1" not in hp and "plateau_factor" not in hp and "kernel_size" not in hp


def test_an_old_config_is_filled_the_same_way_before_a_resume(spiral_task, tmp_path):
    d = tmp_path / "r"
    bs.train(spiral_task, {"width": 8}, epochs=1, run_dir=d)
    cfg = bs.store.read_config(d)
    for key in ("depth", "dropout", "activation", "init"):  # as an older babysit wrote it
        del cfg["hp"][key]
    bs.store.write_config(d, cfg)
    assert bs.train(spiral_task, {"width": 8}, epochs=2, run_dir=d, resume=True).status == "completed"


def test_the_validation_metric_can_be_the_loss(spiral, tmp_path):
    task = bs.Task(build="mlp", data=spiral, metric="val_loss")
    run = bs.train(task, {"optimizer": "adam", "lr": 0.01, "width": 16}, epochs=3, run_dir=tmp_path / "r",
                   checkpoint_interval=0)
    assert run.metric == "val_loss" and run.best_metric == min(r.val_loss for r in run.history)
    assert run.best_checkpoint.name.startswith("epoch-") and "_val_loss-" in run.best_checkpoint.name
    best = min(run.history, key=lambda r: r.val_loss)
    assert run.best_checkpoint.name == f"epoch-{best.epoch:03d}_val_loss-{best.val_loss:.4f}.pt"


def top2(scores, y):
    """A user's metric: top-2 accuracy."""
    return float((scores.topk(2, dim=1).indices == y[:, None]).any(1).float().mean())


def test_a_custom_metric_chooses_the_best_checkpoint(spiral, tmp_path):
    task = bs.Task(build="mlp", data=spiral, metric=top2)
    run = bs.train(task, {"optimizer": "adam", "lr": 0.01, "width": 16}, epochs=2, run_dir=tmp_path / "r")
    assert run.metric == "top2" and all(0 <= r.metric <= 1 for r in run.history)
    assert "_top2-" in run.best_checkpoint.name
    with pytest.raises(ConfigError, match="metric='top5'"):
        bs.Task(build="mlp", data=spiral, metric="top5")
